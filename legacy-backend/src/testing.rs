//! Starts this backend in-process for tests, on a port the OS picks.

use shared::testing::{TestEnv, TestServer};
use shared::{BackendName, Service};

/// Bound before it returns, so it is ready; stopped when the `TestServer` drops.
pub async fn start(env: &TestEnv) -> TestServer {
    let service = Service::new(env.config.clone(), BackendName::Legacy).expect("service starts");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = crate::spawn(listener, service, false).expect("server starts");
    let handle = server.handle();
    tokio::spawn(server);
    // Stopping is asynchronous; the command is sent at once, which is all a test needs.
    TestServer::new(addr, move || drop(handle.stop(false)))
}
