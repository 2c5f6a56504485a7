//! The edge proxy: weighted, sticky canary routing between the legacy and new backends, on
//! Pingora, with hot-reloaded config, health checks, failover and comparative metrics.

pub mod admin;
pub mod admin_auth;
pub mod answer;
pub mod bucket;
pub mod compression;
pub mod config;
pub mod cors;
pub mod edge;
pub mod fleet;
pub mod forwarding;
pub mod head_deadline;
pub mod health;
pub mod internal;
pub mod metrics;
pub mod prebound;
pub mod reload;
pub mod replicas;
pub mod rollout;
pub mod rollout_cli;
pub mod routing;
pub mod security_headers;
pub mod server;
pub mod service;
pub mod shadow;
pub mod state;
pub mod sticky;
pub mod tls;
pub mod upgrade;
pub mod window;

#[cfg(test)]
mod test_support;
