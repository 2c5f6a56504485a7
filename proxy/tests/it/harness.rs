//! Starts the whole stack in-process: both backends on port 0 over one `TestEnv`, and the
//! proxy on two listeners the test binds on port 0 and hands to `proxy::server::serve`, so
//! no port is ever picked, released and hoped to be still free. Also: the real proxy binary
//! as a child process, for what only a process can show (signals), and a loopback address
//! that refuses connections.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config::value::{Bounded, Millis, Seconds};
use proxy::config::{Percent, ProxyConfig};
use proxy::fleet::Role;
use proxy::server::Listeners;
use proxy::state::ProxyState;
use shared::testing::client::client;
use shared::testing::{TestEnv, TestServer, eventually};

pub use legacy_backend::testing::start as start_legacy;
pub use new_backend::testing::start as start_new;

const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The proxy's public and admin listeners, bound on free loopback ports.
pub fn bind_listeners() -> Listeners {
    Listeners::bind(LOOPBACK_ANY_PORT, LOOPBACK_ANY_PORT).expect("bind the proxy's listeners")
}

pub fn addr_of(server: &TestServer) -> SocketAddr {
    server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("a socket address")
}

/// A loopback address where a socket is bound but nothing listens, so every connect is
/// refused; held (so no one else can take the port) until dropped.
pub struct Refusing {
    socket: tokio::net::TcpSocket,
}

impl Refusing {
    pub fn bind() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(LOOPBACK_ANY_PORT)
            .expect("bind a loopback port");
        Self { socket }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a bound address")
    }
}

pub struct RunningProxy {
    pub base_url: String,
    pub admin_url: String,
    pub state: Arc<ProxyState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningProxy {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops serving and waits until the proxy's thread has ended.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.stop();
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

/// The proxy's config for these backends and listeners at `new_percent`, with health checks
/// quick enough for tests; tests edit the struct, never the text.
pub fn proxy_config(
    backends: (SocketAddr, SocketAddr),
    listeners: &Listeners,
    new_percent: f64,
) -> ProxyConfig {
    let address = |listener: &std::net::TcpListener| listener.local_addr().expect("an address");
    let mut config = ProxyConfig::default();
    config.backends.legacy.listen = backends.0;
    config.backends.new.listen = backends.1;
    config.routing.new_percent = percent(new_percent);
    config.health_check.interval_ms = Millis::of(100);
    config.health_check.timeout_ms = Millis::of(200);
    config.health_check.unhealthy_threshold = NonZeroU32::new(2).expect("non-zero");
    config.health_check.healthy_threshold = NonZeroU32::MIN;
    config.proxy.listen = address(&listeners.public);
    config.proxy.admin_listen = address(&listeners.admin);
    config.proxy.threads = NonZeroUsize::new(2).expect("non-zero");
    config.proxy.shutdown_grace_seconds = Seconds::of(0);
    config.proxy.connect_timeout_ms = Millis::of(300);
    config
}

pub fn percent(value: f64) -> Percent {
    Percent::from_percent(value).expect("a valid percentage")
}

/// Writes `config` to `path` atomically (write, then rename), as an editor that saves well does.
pub fn write_config(path: &Path, config: &ProxyConfig) {
    write_config_text(path, &toml::to_string(config).expect("a config serialises"));
}

pub fn write_config_text(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Serves the proxy of `config_path` on `listeners` in its own thread (`serve` blocks) until
/// dropped, and waits until it answers.
pub async fn start_proxy(config_path: &Path, listeners: Listeners) -> RunningProxy {
    let config = ProxyConfig::load(config_path).expect("valid proxy config");
    let state = proxy::server::state(config_path.to_owned(), config).expect("the proxy's state");
    serve_state(state, listeners).await
}

/// As `start_proxy`, in the rollout `role` given whatever the file says: one of several
/// proxies of a test sharing one config file, as `CANARY_ROLLOUT_CONTROLLER` makes one.
pub async fn start_proxy_as(config_path: &Path, listeners: Listeners, role: Role) -> RunningProxy {
    let config = ProxyConfig::load(config_path).expect("valid proxy config");
    let state =
        proxy::server::state_as(config_path.to_owned(), config, role).expect("the proxy's state");
    serve_state(state, listeners).await
}

/// Serves a proxy whose state the test built, on `listeners`, and waits until it answers.
pub async fn serve_state(state: Arc<ProxyState>, listeners: Listeners) -> RunningProxy {
    let url = |listener: &std::net::TcpListener| {
        format!(
            "http://{}",
            loopback_of(listener.local_addr().expect("an address"))
        )
    };
    let (base_url, admin_url) = (url(&listeners.public), url(&listeners.admin));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let serving = Arc::clone(&state);
    let thread = std::thread::spawn(move || {
        proxy::server::serve(listeners, serving, shutdown).expect("the proxy serves");
    });
    let running = RunningProxy {
        base_url,
        admin_url,
        state,
        stop: Some(stop),
        thread: Some(thread),
    };
    wait_until_answers(&format!("{}/admin/status", running.admin_url)).await;
    wait_until_answers(&running.url("/health")).await;
    running
}

/// Where a test connects to a listener bound at `address`: a wildcard bind on this host's
/// loopback, so a test never sends traffic to any other address.
fn loopback_of(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), address.port())
        }
        _ => address,
    }
}

/// Serves `app` on a free loopback port until the handle is dropped or aborted: a stand-in
/// for a backend that misbehaves in a way the test chooses.
pub async fn serve_stand_in(app: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(LOOPBACK_ANY_PORT)
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (address, server)
}

/// The admin listener's `/metrics`, as text.
pub async fn metrics_text(admin_url: &str) -> String {
    client()
        .get(format!("{admin_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics")
}

/// Polls `url` until it answers at all (bounded), so tests never guess a start-up time.
pub async fn wait_until_answers(url: &str) {
    let client = client();
    eventually(
        &format!("{url} answers"),
        Duration::from_secs(20),
        async || client.get(url).send().await.ok().map(drop),
    )
    .await;
}

impl Stack {
    pub async fn start(new_percent: f64) -> Self {
        Self::start_with(TestEnv::new(), new_percent, |_| {}).await
    }

    /// A stack whose proxy config is `edit`ed before the proxy starts.
    pub async fn start_with(
        env: TestEnv,
        new_percent: f64,
        edit: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        Self::start_on(env, bind_listeners(), new_percent, edit).await
    }

    /// As `start_with`, on listeners the test bound (a TLS one, say).
    pub async fn start_on(
        env: TestEnv,
        listeners: Listeners,
        new_percent: f64,
        edit: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        let legacy = start_legacy(&env).await;
        let new = start_new(&env).await;
        let (legacy_addr, new_addr) = (addr_of(&legacy), addr_of(&new));
        let config_path = env.dir().join("proxy.toml");
        let mut config = proxy_config((legacy_addr, new_addr), &listeners, new_percent);
        // The backends' shadow key, so the shadows this proxy signs are theirs.
        config.shadow.secret_file = env.dir().join("shadow.secret");
        edit(&mut config);
        write_config(&config_path, &config);
        let proxy = start_proxy(&config_path, listeners).await;
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

    /// The config in the proxy's file now.
    pub fn config(&self) -> ProxyConfig {
        ProxyConfig::load(&self.config_path).expect("the stack's config is valid")
    }

    pub fn write_config(&self, config: &ProxyConfig) {
        write_config(&self.config_path, config);
    }

    /// For what the structs cannot hold: invalid or half-written files.
    pub fn write_config_text(&self, text: &str) {
        write_config_text(&self.config_path, text);
    }

    /// Edits the config in the file and waits (bounded) until the proxy runs the edit;
    /// returns how long that took.
    pub async fn apply(&self, edit: impl FnOnce(&mut ProxyConfig)) -> Duration {
        let mut config = self.config();
        edit(&mut config);
        let before = self.generation();
        let started = Instant::now();
        self.write_config(&config);
        eventually("the edit applies", Duration::from_secs(5), async || {
            (self.generation() != before).then_some(())
        })
        .await;
        started.elapsed()
    }

    pub fn generation(&self) -> u64 {
        self.proxy.state.live.load().number
    }

    /// Writes a new percentage and waits (bounded) until the proxy runs it.
    pub async fn set_percent(&self, new_percent: f64) -> Duration {
        self.apply(|config| config.routing.new_percent = percent(new_percent))
            .await
    }

    pub fn url(&self, path: &str) -> String {
        self.proxy.url(path)
    }
}

/// A `TestServer` that is the proxy in front of both backends at `new_percent`, for the
/// contract suite. Headers up to 160 KiB pass, so the suite's 100 KB token reaches a backend,
/// and no path is internal, so the suite reaches each backend's `/metrics` as its own.
pub async fn contract_stack(env: &TestEnv, new_percent: f64) -> TestServer {
    let legacy = start_legacy(env).await;
    let new = start_new(env).await;
    let config_path = env.dir().join("proxy.toml");
    let listeners = bind_listeners();
    let addr = listeners.public.local_addr().expect("an address");
    let mut config = proxy_config((addr_of(&legacy), addr_of(&new)), &listeners, new_percent);
    config.proxy.max_header_bytes = Bounded::of(160 * 1024);
    config.proxy.internal_paths = Vec::new();
    config.shadow.secret_file = env.dir().join("shadow.secret");
    write_config(&config_path, &config);
    let proxy = start_proxy(&config_path, listeners).await;
    TestServer::new(addr, move || {
        drop(proxy);
        drop(legacy);
        drop(new);
    })
}

/// Reads `output` line by line on a thread of its own, which drains it to the end (so the
/// child never blocks on a full pipe), and returns the first value `find` takes from a line;
/// fails, showing what was printed, if none comes within `limit`.
pub async fn first_printed<T: Send + 'static>(
    output: impl Read + Send + 'static,
    what: &str,
    limit: Duration,
    find: impl Fn(&str) -> Option<T> + Send + 'static,
) -> T {
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            // Once the caller has what it wanted nobody receives; keep draining anyway.
            let _ = lines.send(line);
        }
    });
    let found = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match printed.recv_timeout(left) {
                Ok(line) => match find(&line) {
                    Some(value) => return Ok(value),
                    None => seen.push(line),
                },
                Err(_) => return Err(seen),
            }
        }
    })
    .await
    .expect("the output reader");
    found.unwrap_or_else(|seen| {
        panic!(
            "never printed {what} within {limit:?}; printed:\n{}",
            seen.join("\n")
        )
    })
}

/// The proxy binary as a child process, on its own config with loopback ports chosen by the
/// system (it prints them when listening); killed and reaped when dropped, panics included.
pub struct ChildProxy {
    child: Child,
    pub base_url: String,
    pub admin_url: String,
    /// `https://…` of the TLS listener, when `[proxy.tls]` is set.
    pub https_url: Option<String>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    /// Held while the child runs, so its health checks reach nothing else.
    _backends: Vec<Refusing>,
}

impl ChildProxy {
    /// Starts the binary with backends that refuse every connection (what is tested here
    /// needs none) and waits until its admin listener answers.
    pub async fn start() -> Self {
        let (legacy, new) = (Refusing::bind(), Refusing::bind());
        let mut config = ProxyConfig::default();
        config.backends.legacy.listen = legacy.addr();
        config.backends.new.listen = new.addr();
        Self::start_with(config, |text| text, vec![legacy, new]).await
    }

    /// Starts the binary on `config` (its listeners and threads replaced: loopback port 0,
    /// one thread), written as TOML and passed through `text` (to add what the structs
    /// cannot hold, comments say); `held` lives as long as the child.
    pub async fn start_with(
        config: ProxyConfig,
        text: impl FnOnce(String) -> String,
        held: Vec<Refusing>,
    ) -> Self {
        Self::start_in(config, text, held, &[]).await
    }

    /// As `start_with`, with these variables in the child's environment.
    pub async fn start_in(
        mut config: ProxyConfig,
        text: impl FnOnce(String) -> String,
        held: Vec<Refusing>,
        environment: &[(&str, &str)],
    ) -> Self {
        config.proxy.shutdown_grace_seconds = Seconds::of(0);
        Self::launch(config, text, held, environment).await
    }

    /// As `start_with`, with the config's own `proxy.shutdown_grace_seconds`.
    pub async fn start_graceful(
        config: ProxyConfig,
        text: impl FnOnce(String) -> String,
        held: Vec<Refusing>,
    ) -> Self {
        Self::launch(config, text, held, &[]).await
    }

    async fn launch(
        mut config: ProxyConfig,
        text: impl FnOnce(String) -> String,
        held: Vec<Refusing>,
        environment: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config_path = dir.path().join("proxy.toml");
        // Port 0: the binary binds where the system says and logs the addresses it got.
        config.proxy.listen = LOOPBACK_ANY_PORT;
        config.proxy.admin_listen = LOOPBACK_ANY_PORT;
        config.proxy.threads = NonZeroUsize::MIN;
        let toml = toml::to_string(&config).expect("a config serialises");
        write_config_text(&config_path, &text(toml));
        let (child, listening) = Self::spawn(&config_path, &[], environment).await;
        let running = Self {
            child,
            base_url: format!("http://{}", listening.public),
            admin_url: format!("http://{}", listening.admin),
            https_url: listening.tls.map(|tls| format!("https://{tls}")),
            config_path,
            _dir: dir,
            _backends: held,
        };
        wait_until_answers(&format!("{}/admin/status", running.admin_url)).await;
        running
    }

    /// Runs the binary on `config_path` with `args` and waits until it logs where it listens.
    async fn spawn(
        config_path: &Path,
        args: &[&str],
        environment: &[(&str, &str)],
    ) -> (Child, Listening) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .arg("--config")
            .arg(config_path)
            .args(["--log-format", "json"])
            .args(args)
            .envs(environment.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the proxy binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        // Killed (and reaped) if it never says so, as `ChildProxy` would on drop.
        let mut guard = ChildGuard(Some(child));
        let listening = first_printed(
            stdout,
            "its listening addresses",
            Duration::from_secs(20),
            |line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                if event["message"] != "proxy listening" {
                    return None;
                }
                let field = |name: &str| event[name].as_str().map(str::to_owned);
                Some(Listening {
                    public: field("listen")?,
                    admin: field("admin")?,
                    tls: field("tls"),
                })
            },
        )
        .await;
        let child = guard.0.take().expect("the child is held");
        (child, listening)
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Edits the config file, then starts `proxy --upgrade` on it and waits until it logs
    /// where it listens: from then on this is the successor; the predecessor is returned.
    pub async fn upgrade(&mut self, edit: impl FnOnce(&mut ProxyConfig)) -> Predecessor {
        let mut config = ProxyConfig::load(&self.config_path).expect("the child's config");
        edit(&mut config);
        write_config(&self.config_path, &config);
        let (successor, listening) = Self::spawn(&self.config_path, &["--upgrade"], &[]).await;
        assert_eq!(
            (
                format!("http://{}", listening.public),
                format!("http://{}", listening.admin)
            ),
            (self.base_url.clone(), self.admin_url.clone()),
            "the successor listens where its predecessor did"
        );
        Predecessor(ChildGuard(Some(std::mem::replace(
            &mut self.child,
            successor,
        ))))
    }

    /// Sends `signal` (`HUP`, `TERM`, ...) to this child only.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits (bounded) until the child has exited, and returns how.
    pub async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("the proxy binary exits", limit, async || {
            child.try_wait().expect("the child's status")
        })
        .await
    }

    /// Edits the config file, then runs `proxy --upgrade` on it, expecting it to fail: waits
    /// (bounded) until it has exited and returns how, with what it wrote on stderr.
    pub async fn failed_upgrade(
        &mut self,
        edit: impl FnOnce(&mut ProxyConfig),
    ) -> (ExitStatus, String) {
        let mut config = ProxyConfig::load(&self.config_path).expect("the child's config");
        edit(&mut config);
        write_config(&self.config_path, &config);
        upgrade_exit(&self.config_path).await
    }
}

/// Runs `proxy --upgrade` on `config_path` and waits (bounded) until it has exited; returns
/// how, with what it wrote on stderr.
pub async fn upgrade_exit(config_path: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("--config")
        .arg(config_path)
        .arg("--upgrade")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the proxy binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let written = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().expect("the child is held");
    let status = eventually(
        "proxy --upgrade exits",
        Duration::from_secs(40),
        async || child.try_wait().expect("the child's status"),
    )
    .await;
    (status, written.join().expect("the stderr reader"))
}

/// Where a child logged it listens.
struct Listening {
    public: String,
    admin: String,
    tls: Option<String>,
}

/// A child killed and reaped when dropped, unless taken.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The process a `ChildProxy` upgraded from; killed and reaped when dropped.
pub struct Predecessor(ChildGuard);

impl Predecessor {
    pub fn pid(&self) -> u32 {
        self.0.0.as_ref().map_or(0, Child::id)
    }

    /// Waits (bounded) until it has exited, and returns how.
    pub async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let child = self.0.0.as_mut().expect("the predecessor is held");
        eventually("the predecessor exits", limit, async || {
            child.try_wait().expect("the child's status")
        })
        .await
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
