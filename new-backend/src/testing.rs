//! Starts this backend in-process for tests, on a port the OS picks.

use shared::testing::{TestEnv, TestServer};
use shared::{BackendName, Service};

/// Bound before it returns, so it is ready; stopped when the `TestServer` drops.
pub async fn start(env: &TestEnv) -> TestServer {
    let service = Service::new(env.config.clone(), BackendName::New).expect("service starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::serve(listener, service, async {
        let _ = stopped.await;
    }));
    TestServer::new(addr, move || {
        let _ = stop.send(());
    })
}
