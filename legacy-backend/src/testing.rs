//! Starts this backend in-process for tests, on a port the OS picks.

use shared::BackendName;
use shared::testing::server::Spawned;
use shared::testing::{TestEnv, TestServer};

/// Serving before it returns; stopped when the `TestServer` drops.
pub async fn start(env: &TestEnv) -> TestServer {
    Spawned::start(env, BackendName::Legacy, crate::serve).into_test_server()
}
