//! Backends under test, run the way their binaries run them: in-process through the backend's
//! own `serve`, with a shutdown future the test holds.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::service::{BackendName, Service};
use crate::testing::{TestEnv, TestServer};

/// The shutdown future a test hands to `serve`. It resolves when the test stops the server,
/// and also when the test drops its end, so a forgotten server stops with its test.
pub struct TestShutdown(oneshot::Receiver<()>);

impl Future for TestShutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A backend serving in-process, through its own `serve`, on a port the OS picked.
pub struct Spawned {
    addr: SocketAddr,
    server: TestServer,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<io::Result<()>>,
}

impl Spawned {
    /// Builds `backend`'s `Service` on `env` and runs `serve` on a listener bound to
    /// 127.0.0.1:0. The listener is bound before this returns, so the server is ready.
    pub fn start<S, F>(env: &TestEnv, backend: BackendName, serve: S) -> Self
    where
        S: FnOnce(std::net::TcpListener, Service, TestShutdown) -> F,
        F: Future<Output = io::Result<()>> + Send + 'static,
    {
        let service = Service::new(env.config.clone(), backend).expect("the service starts");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let addr = listener.local_addr().expect("the bound address");
        let (stop, stopped) = oneshot::channel();
        let serving = tokio::spawn(serve(listener, service, TestShutdown(stopped)));
        Self {
            addr,
            server: TestServer::new(addr, || {}),
            stop,
            serving,
        }
    }

    pub fn server(&self) -> &TestServer {
        &self.server
    }

    /// Resolves the shutdown future and waits for `serve` to return.
    pub async fn shut_down(self) -> io::Result<()> {
        let _ = self.stop.send(());
        self.serving.await.expect("serve does not panic")
    }

    /// A `TestServer` that stops this server when it drops.
    pub fn into_test_server(self) -> TestServer {
        let stop = self.stop;
        TestServer::new(self.addr, move || drop(stop))
    }
}
