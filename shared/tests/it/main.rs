//! Integration tests of the shared crate.

mod anthropic;
mod postgres_users;
mod users_cli;
