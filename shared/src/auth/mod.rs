//! Users, passwords, tokens and login throttling.

pub mod passwords;
pub mod throttle;
pub mod tokens;
pub mod users;

pub use common::secret;
