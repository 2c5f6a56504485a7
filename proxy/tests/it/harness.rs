//! Starts the whole stack in-process: both backends on port 0 over one `TestEnv`, and the
//! proxy (which cannot report its port) on free ports found first, waited on until it answers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use proxy::state::ProxyState;
use shared::testing::{TestEnv, TestServer};
use tokio::sync::Notify;

pub use legacy_backend::testing::start as start_legacy;
pub use new_backend::testing::start as start_new;

/// A port nobody listens on right now (Pingora binds by address, so the test picks one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn addr_of(server: &TestServer) -> SocketAddr {
    server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("a socket address")
}

/// Shuts the proxy down when notified.
struct TestShutdown(Arc<Notify>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for TestShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

pub struct RunningProxy {
    pub base_url: String,
    pub admin_url: String,
    pub state: Arc<ProxyState>,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningProxy {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Everything a proxy test needs: the environment, both backends, the proxy, its config file.
pub struct Stack {
    pub env: TestEnv,
    pub legacy: Option<TestServer>,
    pub new: Option<TestServer>,
    pub legacy_addr: SocketAddr,
    pub new_addr: SocketAddr,
    pub config_path: PathBuf,
    pub proxy: RunningProxy,
}

/// The proxy's config for these backends; `extra` is appended inside `[proxy]`.
pub fn config_text(
    stack_addrs: (SocketAddr, SocketAddr),
    ports: (u16, u16),
    new_percent: f64,
    extra: &str,
) -> String {
    let (legacy, new) = stack_addrs;
    let (listen, admin) = ports;
    format!(
        "[backends.legacy]\nlisten = \"{legacy}\"\n[backends.new]\nlisten = \"{new}\"\n\
         [routing]\nnew_percent = {new_percent}\n\
         [health_check]\ninterval_ms = 100\ntimeout_ms = 200\nunhealthy_threshold = 2\nhealthy_threshold = 1\n\
         [proxy]\nlisten = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         threads = 2\nshutdown_grace_seconds = 0\nconnect_timeout_ms = 300\n{extra}\n"
    )
}

/// Starts a proxy on `config_path` in its own thread and waits until it answers.
pub async fn start_proxy(config_path: &std::path::Path) -> RunningProxy {
    let config = proxy::config::ProxyConfig::load(config_path).expect("valid proxy config");
    let built = proxy::server::build(config_path).expect("proxy builds");
    let state = Arc::clone(&built.state);
    let stop = Arc::new(Notify::new());
    let watch = TestShutdown(Arc::clone(&stop));
    let thread = std::thread::spawn(move || built.run(Box::new(watch)));
    let running = RunningProxy {
        base_url: format!("http://{}", config.proxy.listen),
        admin_url: format!("http://{}", config.proxy.admin_listen),
        state,
        stop,
        thread: Some(thread),
    };
    wait_until_answers(&format!("{}/admin/status", running.admin_url)).await;
    wait_until_answers(&running.url("/health")).await;
    running
}

/// Polls `url` until it answers at all (bounded), so tests never guess a start-up time.
pub async fn wait_until_answers(url: &str) {
    let client = shared::testing::client::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(url).send().await.is_err() {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Stack {
    pub async fn start(new_percent: f64) -> Self {
        Self::start_with(TestEnv::new(), new_percent, "").await
    }

    pub async fn start_with(env: TestEnv, new_percent: f64, proxy_extra: &str) -> Self {
        let legacy = start_legacy(&env).await;
        let new = start_new(&env).await;
        let (legacy_addr, new_addr) = (addr_of(&legacy), addr_of(&new));
        let config_path = env.dir().join("proxy.toml");
        let ports = (free_port(), free_port());
        std::fs::write(
            &config_path,
            config_text((legacy_addr, new_addr), ports, new_percent, proxy_extra),
        )
        .expect("write the proxy config");
        let proxy = start_proxy(&config_path).await;
        Self {
            env,
            legacy: Some(legacy),
            new: Some(new),
            legacy_addr,
            new_addr,
            config_path,
            proxy,
        }
    }

    /// Rewrites the config with another percentage, atomically (write, then rename).
    pub fn write_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    pub fn config_for(&self, new_percent: f64) -> String {
        let current = std::fs::read_to_string(&self.config_path).expect("read config");
        current
            .lines()
            .map(|line| {
                if line.starts_with("new_percent") {
                    format!("new_percent = {new_percent}")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn generation(&self) -> u64 {
        self.proxy.state.live.load().number
    }

    /// Writes a new percentage and waits (bounded) until the proxy runs it.
    pub async fn set_percent(&self, new_percent: f64) -> Duration {
        let before = self.generation();
        let started = Instant::now();
        self.write_config(&self.config_for(new_percent));
        let deadline = started + Duration::from_secs(5);
        while self.generation() == before {
            assert!(
                Instant::now() < deadline,
                "the edit to {new_percent} % was never applied"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    pub fn url(&self, path: &str) -> String {
        self.proxy.url(path)
    }
}

/// A `TestServer` that is the proxy in front of both backends at `new_percent`, for the
/// contract suite. Headers up to 160 KiB pass, so the suite's 100 KB token reaches a backend.
pub async fn contract_stack(env: &TestEnv, new_percent: f64) -> TestServer {
    let legacy = start_legacy(env).await;
    let new = start_new(env).await;
    let config_path = env.dir().join("proxy.toml");
    let ports = (free_port(), free_port());
    let text = config_text(
        (addr_of(&legacy), addr_of(&new)),
        ports,
        new_percent,
        "max_header_bytes = 163840",
    );
    std::fs::write(&config_path, text).expect("write the proxy config");
    let proxy = start_proxy(&config_path).await;
    let addr = proxy
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    TestServer::new(addr, move || {
        drop(proxy);
        drop(legacy);
        drop(new);
    })
}
