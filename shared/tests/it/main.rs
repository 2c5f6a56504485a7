//! Integration tests of the shared crate.

mod anthropic;
