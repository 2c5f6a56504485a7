//! What every binary of the gateway needs and nothing of the API's behaviour: config-file
//! errors, the error envelope, secrets, the shadow-request key, logging, the shutdown signal
//! and the route names.
//!
//! The proxy depends on this crate and not on `shared`, so it compiles no SQLite, argon2,
//! JWT or OpenAPI code.

pub mod config;
pub mod envelope;
pub mod request_id;
pub mod routes;
pub mod secret;
pub mod shadow;
pub mod shutdown;
pub mod telemetry;

pub use config::ConfigError;
pub use envelope::{ErrorBody, ErrorEnvelope, FieldError};
