//! Integration tests of the new backend: the shared contract suite, and differential runs
//! against the legacy backend.

mod differential;

use shared::testing::{TestEnv, TestServer};
use shared::{BackendName, Service};

/// Starts the new backend in-process on a port the OS picks; bound before it returns, so ready.
pub async fn start(env: &TestEnv) -> TestServer {
    let service = Service::new(env.config.clone(), BackendName::New).expect("service starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(new_backend::serve(listener, service, async {
        let _ = stopped.await;
    }));
    TestServer::new(addr, move || {
        let _ = stop.send(());
    })
}

mod contract {
    shared::contract_tests!(crate::start);
}
