//! The one way to run the proxy: `serve(listeners, state, shutdown)`. It assembles the Pingora
//! server (the proxy service on the public listener and the TLS one if any, the admin
//! service, the health checker, the reloader and the certificate watcher) on listeners the
//! caller bound, and runs it until `shutdown` resolves, then drains. `main` passes the SIGINT/SIGTERM future; a test passes its own.
//! `serve_upgradable` also answers successors on `proxy.upgrade_socket` (and, for a process
//! started with `--upgrade`, tells its predecessor once it serves): see `upgrade`.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::ProxyConfig;
use crate::head_deadline::HeadDeadline;
use crate::health::HealthChecker;
use crate::prebound::Prebound;
use crate::reload::Reloader;
use crate::rollout::runner::RolloutService;
use crate::service::CanaryProxy;
use crate::shadow::state::ShadowState;
use crate::state::ProxyState;
use crate::upgrade::{
    AnnounceReady, ControlSocket, Predecessor, Role, UpgradeError, UpgradeService,
};
use common::config::ConfigError;

/// When set, the cookie-signing secret; else `proxy.cookie_secret_file`.
pub const COOKIE_SECRET_ENV: &str = "CANARY_COOKIE_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cookie secret: {0}")]
    Secret(#[from] common::secret::SecretError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve on a listener: {0}")]
    Listener(std::io::Error),
    #[error("cannot register for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error("{key}: {error}")]
    Tls {
        key: &'static str,
        error: crate::tls::TlsError,
    },
    #[error("cannot serve TLS: {0}")]
    TlsSettings(pingora::BError),
    #[error("a TLS listener needs [proxy.tls], and [proxy.tls] a TLS listener")]
    TlsListener,
    #[error("shadow.secret_file: {0}")]
    ShadowSecret(common::secret::SecretError),
    #[error("cannot make the shadow traffic's HTTP client: {0}")]
    ShadowClient(reqwest::Error),
    #[error(transparent)]
    AdminAuth(#[from] crate::admin_auth::AdminAuthError),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// The proxy's listening sockets.
pub struct Listeners {
    /// Where clients connect (`proxy.listen`).
    pub public: TcpListener,
    /// Metrics, status and the dashboard (`proxy.admin_listen`).
    pub admin: TcpListener,
    /// HTTPS (`proxy.tls.listen`), when `[proxy.tls]` is set.
    pub tls: Option<TcpListener>,
}

impl Listeners {
    pub fn bind(public: SocketAddr, admin: SocketAddr) -> Result<Self, StartupError> {
        let bind = |address| {
            TcpListener::bind(address).map_err(|source| StartupError::Bind { address, source })
        };
        Ok(Self {
            public: bind(public)?,
            admin: bind(admin)?,
            tls: None,
        })
    }

    /// Also binds the TLS listener at `address` (`proxy.tls.listen`), if there is one.
    pub fn with_tls(mut self, address: Option<SocketAddr>) -> Result<Self, StartupError> {
        if let Some(address) = address {
            let listener = TcpListener::bind(address)
                .map_err(|source| StartupError::Bind { address, source })?;
            self.tls = Some(listener);
        }
        Ok(self)
    }
}

/// The state the services share, from a loaded config: the rollout role is read
/// (`CANARY_ROLLOUT_CONTROLLER`, else `rollout.controller`), the cookie secret read (or
/// created, by a proxy on its own) here, and the admin token read (`CANARY_ADMIN_TOKEN`,
/// else `proxy.admin_token_file`).
pub fn state(config_path: PathBuf, config: ProxyConfig) -> Result<Arc<ProxyState>, StartupError> {
    let role = crate::fleet::Role::from_env(&config)?;
    state_as(config_path, config, role)
}

/// As `state`, in the rollout `role` given (several proxies in one test process share one
/// file and environment).
pub fn state_as(
    config_path: PathBuf,
    config: ProxyConfig,
    role: crate::fleet::Role,
) -> Result<Arc<ProxyState>, StartupError> {
    let secret = crate::fleet::cookie_secret(&config, role)?;
    let token = crate::admin_auth::read_token_from_env(config.proxy.admin_token_file.as_deref())?;
    let admin_auth = crate::admin_auth::AdminAuth::new(token.as_ref());
    let shadow_key = common::shadow::ShadowSecretSection {
        secret_file: config.shadow.secret_file.clone(),
    }
    .load_key()
    .map_err(StartupError::ShadowSecret)?;
    let shadow = ShadowState::new(shadow_key).map_err(StartupError::ShadowClient)?;
    let state = ProxyState::new(config_path, config, &secret, admin_auth, shadow);
    state.rollout.set_role(role);
    Ok(state)
}

/// Serves on `listeners` until `shutdown` resolves, then finishes what is in flight within
/// `proxy.shutdown_grace_seconds`; blocks the calling thread (Pingora runs its own runtimes).
pub fn serve(
    listeners: Listeners,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    run(listeners, state, shutdown, None)
}

/// The upgrade's side of `serve`: `control` is `proxy.upgrade_socket`.
pub struct Upgrades {
    pub control: ControlSocket,
    /// The process this one took over from (`--upgrade`), told once this one serves.
    pub predecessor: Option<Predecessor>,
}

/// As `serve`, and hands its sockets over to a successor that asks on `upgrades.control`, then
/// stops as on `shutdown`.
pub fn serve_upgradable(
    listeners: Listeners,
    upgrades: Upgrades,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    run(listeners, state, shutdown, Some(upgrades))
}

fn run(
    listeners: Listeners,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    upgrades: Option<Upgrades>,
) -> Result<(), StartupError> {
    // Where the admin listener really is (port 0 and a hand-bound socket included), before
    // anything is started: an admin listener anyone could use is never served.
    let admin_address = listeners
        .admin
        .local_addr()
        .map_err(StartupError::Listener)?;
    state.admin_auth.check_listener(admin_address)?;
    let startup = &state.startup;
    let conf = ServerConf {
        threads: startup.threads.get(),
        work_stealing: startup.work_stealing,
        grace_period_seconds: Some(startup.shutdown_grace_seconds.as_secs()),
        graceful_shutdown_timeout_seconds: Some(startup.shutdown_grace_seconds.as_secs()),
        ..ServerConf::default()
    };
    // Without Pingora's `Opt` its bootstrap never waits for sockets of Pingora's own upgrade,
    // which `upgrade` replaces.
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // Notified to stop this process from inside: handed over to a successor, or refused by
    // the predecessor it was taking over from.
    let stop = Arc::new(tokio::sync::Notify::new());
    let sockets = match &upgrades {
        Some(_) => socket_copies(&listeners).map_err(StartupError::Listener)?,
        None => Vec::new(),
    };

    let mut http_proxy = pingora::proxy::HttpProxy::new(
        CanaryProxy {
            state: Arc::clone(&state),
        },
        Arc::clone(&server.configuration),
    );
    http_proxy.handle_init_modules();
    let proxy = Service::new(
        "canary proxy".to_owned(),
        HeadDeadline {
            inner: Arc::new(http_proxy),
            state: Arc::clone(&state),
        },
    );
    let admin = Service::new(
        "admin".to_owned(),
        AdminApp {
            state: Arc::clone(&state),
        },
    );
    let public_address = listeners
        .public
        .local_addr()
        .map_err(StartupError::Listener)?;
    let mut proxy = Prebound::new(proxy, listeners.public).map_err(StartupError::Listener)?;
    let tls_section = state.live.load().settings.proxy.tls.clone();
    let tls_address = match (listeners.tls, tls_section) {
        (Some(listener), Some(section)) => {
            let address = listener.local_addr().map_err(StartupError::Listener)?;
            let first =
                crate::tls::load(&section.cert_file, &section.key_file).map_err(|error| {
                    StartupError::Tls {
                        key: error.key(),
                        error,
                    }
                })?;
            let certificates = Arc::new(crate::tls::Certificates::new(first));
            let settings = crate::tls::settings(Arc::clone(&certificates))
                .map_err(StartupError::TlsSettings)?;
            proxy = proxy
                .with_tls(listener, settings)
                .map_err(StartupError::Listener)?;
            server.add_service(background_service(
                "tls certificate reload",
                crate::tls::CertWatcher {
                    state: Arc::clone(&state),
                    certificates,
                },
            ));
            Some(address)
        }
        (None, None) => None,
        _ => return Err(StartupError::TlsListener),
    };
    let proxy = server.add_service(proxy);
    let admin =
        server.add_service(Prebound::new(admin, listeners.admin).map_err(StartupError::Listener)?);
    server.add_service(background_service(
        "health checks",
        HealthChecker {
            state: Arc::clone(&state),
        },
    ));
    let reloader = Reloader::new(Arc::clone(&state)).map_err(StartupError::Signal)?;
    server.add_service(background_service("config reload", reloader));
    server.add_service(background_service(
        "rollout controller",
        RolloutService {
            state: Arc::clone(&state),
        },
    ));

    if let Some(upgrades) = upgrades {
        server.add_service(background_service(
            "upgrade socket",
            UpgradeService::new(
                Arc::clone(&state),
                upgrades.control,
                sockets,
                Arc::clone(&stop),
            ),
        ));
        if let Some(predecessor) = upgrades.predecessor {
            predecessor.carry_over(&state);
            let announce = server.add_service(background_service(
                "upgrade ready",
                AnnounceReady::new(predecessor, Arc::clone(&stop)),
            ));
            announce.add_dependencies([&proxy, &admin]);
        }
    }

    let pid = std::process::id();
    match tls_address {
        Some(tls) => {
            tracing::info!(listen = %public_address, admin = %admin_address, %tls, pid, "proxy listening")
        }
        None => {
            tracing::info!(listen = %public_address, admin = %admin_address, pid, "proxy listening")
        }
    }
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = stop.notified() => {}
        }
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(OnFuture::new(shutdown)),
    });
    Ok(())
}

/// Copies of the listening sockets (the same sockets, other descriptors) for a hand-over; the
/// services own the originals.
fn socket_copies(listeners: &Listeners) -> std::io::Result<Vec<(Role, OwnedFd)>> {
    let mut copies = vec![
        (Role::Public, OwnedFd::from(listeners.public.try_clone()?)),
        (Role::Admin, OwnedFd::from(listeners.admin.try_clone()?)),
    ];
    if let Some(tls) = &listeners.tls {
        copies.push((Role::Tls, OwnedFd::from(tls.try_clone()?)));
    }
    Ok(copies)
}

/// Pingora's shutdown trigger, from a future: when it resolves, stop accepting and finish
/// in-flight requests within the grace period.
struct OnFuture {
    future: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

impl OnFuture {
    fn new(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            future: Mutex::new(Some(Box::pin(future))),
        }
    }
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for OnFuture {
    async fn recv(&self) -> ShutdownSignal {
        let future = self
            .future
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match future {
            Some(future) => future.await,
            // Pingora asks once; a second ask has nothing left to wait for but the end.
            None => std::future::pending().await,
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs `register` (which installs signal handlers, such as
/// `common::shutdown::signal_future`) in a runtime context of its own, for a caller outside
/// any runtime: tokio registers handlers process-wide, so what it returns is then woken by
/// whichever runtime polls it (here, Pingora's).
pub fn register_signals<T>(register: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let registrar = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let _entered = registrar.enter();
    register()
}
