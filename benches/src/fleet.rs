//! The fleet under test: both backends, the proxy at 0, 50 and 100 % and with a rollout,
//! Pingora alone (`pingora-floor`, no filters) in front of the legacy backend, and nginx and
//! haproxy in front of it too when they are installed. All on loopback ports
//! picked here, with configs written to a temporary folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::{ProcError, Server, free_addr, installed};

pub struct Fleet {
    pub legacy: Server,
    pub new: Server,
    pub proxy_0: Server,
    pub proxy_50: Server,
    pub proxy_100: Server,
    /// At 50 % with a rollout holding there and judging every second: what the controller
    /// costs the request path (cohorts recorded on every request, one evaluation a second).
    pub proxy_rollout: Server,
    /// Pingora 0.9's proxy with nothing of ours, in front of the legacy backend: the engine's
    /// own cost per request, below which no change to our filters can take the proxy.
    pub pingora_floor: Server,
    pub nginx: Option<Server>,
    pub haproxy: Option<Server>,
    pub dir: tempfile::TempDir,
    bin_dir: PathBuf,
    backend_toml: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    New,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::New => "new",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy-backend",
            Backend::New => "new-backend",
        }
    }
}

fn backend_config(dir: &Path, legacy: SocketAddr, new: SocketAddr) -> String {
    format!(
        "[backends.legacy]\nlisten = \"{legacy}\"\n[backends.new]\nlisten = \"{new}\"\n\
         [database]\npath = \"{db}\"\nseed_demo_user = true\n\
         [auth]\nsecret_file = \"{secret}\"\n\
         [rate_limit.generate]\ncapacity = 1000000000\nrefill_per_minute = 1000000000\n\
         [auth.login_throttle]\nmax_failures = 1000000\nwindow_seconds = 1\n",
        db = dir.join("bench.db").display(),
        secret = dir.join("jwt.secret").display(),
    )
}

/// A rollout that holds at 50 % and judges every second. `on_failure = "pause"`: were new
/// judged worse under the benchmark's load, the weight must stay at 50 % all the same, or
/// the comparison would be with another split.
const ROLLOUT_AT_50: &str = "[rollout]\nenabled = true\non_failure = \"pause\"\n\
    steps = [{ percent = 50, hold = \"1000h\" }, { percent = 100 }]\n\
    [rollout.analysis]\ninterval = \"1s\"\n";

/// The shipped defaults (every feature on: cookies, metrics, the dashboard's window, the edge
/// checks, the head deadline; `threads` and the per-client limit as shipped) but for the
/// addresses, the cookie key's file and a short shutdown grace, which no request sees.
fn proxy_config(
    dir: &Path,
    backends: (SocketAddr, SocketAddr),
    listen: SocketAddr,
    admin: SocketAddr,
    percent: u32,
) -> String {
    format!(
        "[backends.legacy]\nlisten = \"{}\"\n[backends.new]\nlisten = \"{}\"\n\
         [routing]\nnew_percent = {percent}\n\
         [proxy]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n\
         cookie_secret_file = \"{}\"\nshutdown_grace_seconds = 1\n\
         upgrade_socket = \"{}\"\n",
        backends.0,
        backends.1,
        dir.join("cookie.secret").display(),
        // The proxies share this folder; each needs a control socket of its own.
        dir.join(format!("proxy-{}.sock", listen.port())).display(),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// nginx as a reverse proxy tuned the way its documentation advises for this job:
/// upstream keepalive, HTTP/1.1 upstream, no access log, no response buffering (SSE), and
/// client connections kept as long as the others keep them (its default closes them every
/// 1,000 requests).
fn nginx_config(dir: &Path, listen: SocketAddr, backend: SocketAddr) -> String {
    let d = dir.display();
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        "{user}worker_processes 2;\nerror_log {d}/nginx-error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
           fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
           upstream backend {{ server {backend}; keepalive 64; }}\n\
           server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://backend;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
    )
}

/// haproxy in HTTP mode with connection reuse to the backend, two threads like the others.
fn haproxy_config(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "global\n  nbthread 2\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n\
         frontend fe\n  bind {listen}\n  default_backend be\n\
         backend be\n  http-reuse always\n  server legacy {backend}\n"
    )
}

fn ours(bin_dir: &Path, name: &str, config: &Path) -> Command {
    let mut command = Command::new(bin_dir.join(name));
    command.arg("--config").arg(config).env("RUST_LOG", "warn");
    command
}

impl Fleet {
    /// Starts everything and waits until each answers `/health`.
    pub async fn start(bin_dir: &Path) -> Result<Self, ProcError> {
        let dir = tempfile::tempdir().map_err(|source| ProcError::Spawn {
            name: "temporary folder".into(),
            source,
        })?;
        let path = dir.path();
        let write = |name: &str, text: String| -> Result<PathBuf, ProcError> {
            let file = path.join(name);
            std::fs::write(&file, text).map_err(|source| ProcError::Spawn {
                name: name.into(),
                source,
            })?;
            Ok(file)
        };
        let (legacy_addr, new_addr) = (free_addr(), free_addr());
        let backend_toml = write("backends.toml", backend_config(path, legacy_addr, new_addr))?;
        let mut legacy = Server::spawn(
            "legacy",
            ours(bin_dir, "legacy-backend", &backend_toml),
            legacy_addr,
            path,
        )?;
        legacy.wait_ready("/health").await?;
        let mut new = Server::spawn(
            "new",
            ours(bin_dir, "new-backend", &backend_toml),
            new_addr,
            path,
        )?;
        new.wait_ready("/health").await?;

        let mut proxies = Vec::new();
        for (name, percent, rollout) in [
            ("proxy-0", 0, ""),
            ("proxy-50", 50, ""),
            ("proxy-100", 100, ""),
            ("proxy-rollout", 50, ROLLOUT_AT_50),
        ] {
            let listen = free_addr();
            let mut text =
                proxy_config(path, (legacy_addr, new_addr), listen, free_addr(), percent);
            text.push_str(rollout);
            let toml = write(&format!("{name}.toml"), text)?;
            let mut proxy = Server::spawn(name, ours(bin_dir, "proxy", &toml), listen, path)?;
            proxy.wait_ready("/health").await?;
            proxies.push(proxy);
        }
        let mut proxies = proxies.into_iter();
        let (Some(proxy_0), Some(proxy_50), Some(proxy_100), Some(proxy_rollout)) = (
            proxies.next(),
            proxies.next(),
            proxies.next(),
            proxies.next(),
        ) else {
            unreachable!("four proxies were started")
        };

        let floor_listen = free_addr();
        let mut floor = Command::new(bin_dir.join("pingora-floor"));
        floor
            .arg("--listen")
            .arg(floor_listen.to_string())
            .arg("--upstream")
            .arg(legacy_addr.to_string());
        let mut pingora_floor = Server::spawn("pingora-floor", floor, floor_listen, path)?;
        pingora_floor.wait_ready("/health").await?;

        let nginx = match installed("nginx") {
            Some(program) => {
                let listen = free_addr();
                let conf = write("nginx.conf", nginx_config(path, listen, legacy_addr))?;
                let mut command = Command::new(program);
                command
                    .arg("-p")
                    .arg(path)
                    .arg("-c")
                    .arg(&conf)
                    .args(["-g", "daemon off;"]);
                let mut server = Server::spawn("nginx", command, listen, path)?;
                server.wait_ready("/health").await?;
                Some(server)
            }
            None => None,
        };
        let haproxy = match installed("haproxy") {
            Some(program) => {
                let listen = free_addr();
                let conf = write("haproxy.cfg", haproxy_config(listen, legacy_addr))?;
                let mut command = Command::new(program);
                command.arg("-f").arg(&conf).arg("-db");
                let mut server = Server::spawn("haproxy", command, listen, path)?;
                server.wait_ready("/health").await?;
                Some(server)
            }
            None => None,
        };
        Ok(Self {
            legacy,
            new,
            proxy_0,
            proxy_50,
            proxy_100,
            proxy_rollout,
            pingora_floor,
            nginx,
            haproxy,
            dir,
            bin_dir: bin_dir.to_owned(),
            backend_toml,
        })
    }

    /// One more `backend` process beside the fleet's (same config and database, its own
    /// port), pinned to `cpu` with `taskset` when given: the pinned scenarios get servers of
    /// their own, so the unpinned comparisons never run on a process whose affinity was
    /// changed. Stopped when dropped.
    pub async fn start_extra(
        &self,
        backend: Backend,
        pin: Option<(&Path, usize)>,
    ) -> Result<Server, ProcError> {
        let addr = free_addr();
        let program = self.bin_dir.join(backend.binary());
        let mut command = match pin {
            Some((taskset, cpu)) => {
                let mut command = Command::new(taskset);
                command.arg("-c").arg(cpu.to_string()).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .arg("--config")
            .arg(&self.backend_toml)
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", "warn");
        let name = format!("{}-pinned", backend.name());
        let mut server = Server::spawn(&name, command, addr, self.dir.path())?;
        server.wait_ready("/health").await?;
        Ok(server)
    }

    /// Every configuration to measure: (name, the process in front if any, the backend).
    pub fn configurations(&self) -> Vec<Configuration<'_>> {
        let mut all = vec![
            Configuration::new("legacy direct", None, &self.legacy, vec![&self.legacy]),
            Configuration::new("new direct", None, &self.new, vec![&self.new]),
            Configuration::new(
                "proxy → legacy (0 %)",
                Some(&self.proxy_0),
                &self.proxy_0,
                vec![&self.legacy],
            ),
            Configuration::new(
                "proxy → new (100 %)",
                Some(&self.proxy_100),
                &self.proxy_100,
                vec![&self.new],
            ),
            Configuration::new(
                "proxy at 50 %",
                Some(&self.proxy_50),
                &self.proxy_50,
                vec![&self.legacy, &self.new],
            ),
            Configuration::new(
                "proxy at 50 %, rollout judging",
                Some(&self.proxy_rollout),
                &self.proxy_rollout,
                vec![&self.legacy, &self.new],
            ),
            Configuration::new(
                PINGORA_FLOOR,
                Some(&self.pingora_floor),
                &self.pingora_floor,
                vec![&self.legacy],
            ),
        ];
        if let Some(nginx) = &self.nginx {
            all.push(Configuration::new(
                "nginx → legacy",
                Some(nginx),
                nginx,
                vec![&self.legacy],
            ));
        }
        if let Some(haproxy) = &self.haproxy {
            all.push(Configuration::new(
                "haproxy → legacy",
                Some(haproxy),
                haproxy,
                vec![&self.legacy],
            ));
        }
        all
    }
}

/// The configuration name of Pingora alone.
pub const PINGORA_FLOOR: &str = "Pingora alone, no filters → legacy";

pub struct Configuration<'a> {
    pub name: &'static str,
    /// The reverse proxy in front, if any (its CPU is reported apart).
    pub front: Option<&'a Server>,
    /// Where the load goes.
    pub entry: &'a Server,
    /// The backends that serve it (both at 50 %).
    pub backends: Vec<&'a Server>,
}

impl<'a> Configuration<'a> {
    fn new(
        name: &'static str,
        front: Option<&'a Server>,
        entry: &'a Server,
        backends: Vec<&'a Server>,
    ) -> Self {
        Self {
            name,
            front,
            entry,
            backends,
        }
    }
}
