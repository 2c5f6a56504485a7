//! Graceful shutdown, through `serve` with the test's own future and through the real binary
//! on SIGINT and SIGTERM.

use shared::BackendName;

shared::shutdown_tests!(
    BackendName::New,
    new_backend::serve,
    env!("CARGO_BIN_EXE_new-backend")
);
