//! Integration tests of the shared crate.

mod anthropic;
mod users_cli;
