//! The framework-free service both backends adapt: config, auth, generation, rate limits,
//! errors and metrics. It knows no HTTP framework.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod endpoint;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod observation;
pub mod openapi;
pub mod ratelimit;
pub mod reply;
pub mod request;
pub mod service;
pub mod shadow;
pub mod store;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use common::{routes, telemetry};
pub use config::Config;
pub use error::ApiError;
pub use reply::{Reply, ReplyBody};
pub use request::Incoming;
pub use service::{BackendName, Service};
