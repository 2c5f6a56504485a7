//! Integration tests of the legacy backend: the shared contract suite.

use shared::testing::{TestEnv, TestServer};
use shared::{BackendName, Service};

/// Starts the legacy backend in-process on a port the OS picks; bound before it returns, so ready.
pub async fn start(env: &TestEnv) -> TestServer {
    let service = Service::new(env.config.clone(), BackendName::Legacy).expect("service starts");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = legacy_backend::spawn(listener, service, false).expect("server starts");
    let handle = server.handle();
    tokio::spawn(server);
    TestServer::new(addr, move || {
        // Stopping is asynchronous; the test's runtime ends right after, which is fine.
        drop(handle.stop(false));
    })
}

mod contract {
    shared::contract_tests!(crate::start);
}
