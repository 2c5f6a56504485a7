//! Backends under test, run the way their binaries run them: in-process through the backend's
//! own `serve` with a shutdown future the test holds, or as the real binary in a child process.
//! And the shutdown checks both backends run, written once (`shutdown_tests!`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Millis;
use crate::routes;
use crate::service::{BackendName, JWT_SECRET_ENV, Service};
use crate::testing::client::{client, demo_token};
use crate::testing::{TestEnv, TestServer, eventually};

/// How long a binary may take to answer `/health` after it was started.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long a binary with nothing in flight may take to exit after SIGINT or SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

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

/// A graceful shutdown lets a request in flight finish, here a stream mid-generation, and
/// then `serve` returns.
pub async fn shutdown_finishes_the_stream_in_flight<S, F>(backend: BackendName, serve: S)
where
    S: FnOnce(std::net::TcpListener, Service, TestShutdown) -> F,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let env = TestEnv::with(|c| c.generate.local.token_delay_ms = Millis::of(50));
    let spawned = Spawned::start(&env, backend, serve);
    let token = demo_token(spawned.server()).await;
    let response = client()
        .post(spawned.server().url(routes::GENERATE))
        .bearer_auth(&token)
        .json(&json!({"prompt": "in flight", "maxTokens": 10, "stream": true}))
        .send()
        .await
        .expect("the stream starts");
    assert_eq!(response.status(), 200);
    let stopping = tokio::spawn(spawned.shut_down());
    let body = response
        .text()
        .await
        .expect("the stream is read to its end");
    assert!(body.contains("event: done"), "{body}");
    stopping
        .await
        .expect("the stop completes")
        .expect("serve returns cleanly");
}

/// The signals a backend binary stops on.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Self::Interrupt => libc::SIGINT,
            Self::Terminate => libc::SIGTERM,
        }
    }
}

/// SIGINT and SIGTERM each make the backend binary at `binary` stop as promised: a stream
/// in flight when the signal arrives still ends with its `done` event, then the process exits
/// 0 promptly. (actix-web's own handling made SIGINT a forced stop that cut streams.)
pub async fn signals_stop_the_binary(binary: &Path) {
    for signal in [Signal::Interrupt, Signal::Terminate] {
        let mut process = BackendProcess::start(binary).await;
        let server = TestServer::new(process.addr, || {});
        let token = demo_token(&server).await;
        let mut response = client()
            .post(server.url(routes::GENERATE))
            .bearer_auth(&token)
            .json(&json!({"prompt": "in flight at the signal", "maxTokens": 12, "stream": true}))
            .send()
            .await
            .expect("the stream starts");
        assert_eq!(response.status(), 200);
        // The first event has arrived, so the stream is certainly in flight at the signal.
        let first = response
            .chunk()
            .await
            .expect("a first event")
            .expect("a first event");
        let pid = process.signal(signal);
        let mut body = String::from_utf8_lossy(&first).into_owned();
        while let Some(chunk) = response.chunk().await.unwrap_or_else(|e| {
            panic!(
                "{signal:?} cut the stream in flight ({e}) after:\n{body}\nlog:\n{}",
                process.log()
            )
        }) {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(
            body.contains("event: done"),
            "{signal:?} to {pid} ended the stream without its done event:\n{body}"
        );
        let status = process.wait_for_exit(signal).await;
        assert!(
            status.success(),
            "{signal:?} ended {} with {status}; its log:\n{}",
            binary.display(),
            process.log()
        );
    }
}

/// A backend's real binary, run as a child process on a loopback port with its config,
/// database and secrets in a temporary folder. Killed and reaped when dropped.
pub struct BackendProcess {
    child: Child,
    addr: SocketAddr,
    base_url: String,
    folder: tempfile::TempDir,
}

/// The keys the binary needs; every path is relative to the config file's folder. Words are
/// streamed slowly, so a generation is still in flight when a test sends a signal.
const CONFIG: &str = r#"[database]
path = "gateway.db"
seed_demo_user = true

[auth]
secret_file = "jwt.secret"

[shadow]
secret_file = "shadow.secret"

[generate.local]
token_delay_ms = 100
"#;

impl BackendProcess {
    /// Starts `binary` and waits, polling `/health`, until it answers. The port is picked
    /// free and released before the child binds it, so another process may take it in
    /// between; the child then exits saying it cannot listen, and the start is retried on
    /// another port (a few times at most).
    pub async fn start(binary: &Path) -> Self {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let mut process = Self::spawn(binary);
            let outcome = eventually(
                "the binary answers /health or exits",
                START_LIMIT,
                async || process.health_or_exit().await,
            )
            .await;
            match outcome {
                Ok(()) => return process,
                Err(_) if process.log().contains("cannot listen on") => continue,
                Err(status) => panic!(
                    "{} exited with {status} before it answered; its log:\n{}",
                    binary.display(),
                    process.log()
                ),
            }
        }
        panic!(
            "{} found no free port in {ATTEMPTS} attempts",
            binary.display()
        );
    }

    fn spawn(binary: &Path) -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let config = folder.path().join("config.toml");
        std::fs::write(&config, CONFIG).expect("write the config");
        let log = std::fs::File::create(log_path(folder.path())).expect("create the log file");
        let addr = free_loopback_addr();
        let child = Command::new(binary)
            // Any path the config leaves relative lands in the temporary folder too.
            .current_dir(folder.path())
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(addr.to_string())
            .env_remove(JWT_SECRET_ENV)
            .env_remove(common::shadow::SECRET_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        Self {
            child,
            addr,
            base_url: format!("http://{addr}"),
            folder,
        }
    }

    /// `Some(Ok)` once `/health` answers, `Some(Err)` if the process has exited.
    async fn health_or_exit(&mut self) -> Option<Result<(), ExitStatus>> {
        if let Some(status) = self.child.try_wait().expect("the child's state") {
            return Some(Err(status));
        }
        let health = client()
            .get(format!("{}{}", self.base_url, routes::HEALTH))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        health
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| Ok(()))
    }

    /// Sends `signal` to the process; returns its pid.
    pub fn signal(&self, signal: Signal) -> libc::pid_t {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill takes two integers and touches no memory of ours. The child has not
        // been waited for, so its pid cannot have been reused by another process.
        let sent = unsafe { libc::kill(pid, signal.number()) };
        assert_eq!(
            sent,
            0,
            "cannot send {signal:?}: {}",
            io::Error::last_os_error()
        );
        pid
    }

    /// How the process exited after `signal`; fails the test unless within `EXIT_LIMIT`.
    pub async fn wait_for_exit(&mut self, signal: Signal) -> ExitStatus {
        let what = format!("the binary exits after {signal:?}");
        eventually(&what, EXIT_LIMIT, async || {
            self.child.try_wait().expect("the child's state")
        })
        .await
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(self.folder.path())).unwrap_or_default()
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        // Already exited, or killed here: SIGKILL cannot be caught, so the wait is short.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_path(folder: &Path) -> PathBuf {
    folder.join("output.log")
}

/// A loopback address no one listens on now. The child binds it a moment later; should
/// another process take it first, the child exits and `start` tries again.
fn free_loopback_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

/// The shutdown tests both backends run: `shutdown_tests!(BackendName::Legacy,
/// legacy_backend::serve, env!("CARGO_BIN_EXE_legacy-backend"))`.
#[macro_export]
macro_rules! shutdown_tests {
    ($backend:expr, $serve:path, $binary:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn shutdown_finishes_the_stream_in_flight() {
            $crate::testing::server::shutdown_finishes_the_stream_in_flight($backend, $serve).await;
        }

        #[tokio::test]
        async fn sigint_and_sigterm_each_let_the_stream_in_flight_finish_then_exit_0() {
            $crate::testing::server::signals_stop_the_binary(::std::path::Path::new($binary)).await;
        }
    };
}
