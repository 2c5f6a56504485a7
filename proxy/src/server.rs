//! Assembles the Pingora server: the proxy service on the public listener, the admin service,
//! and the background health checker and reloader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::ProxyConfig;
use crate::head_deadline::HeadDeadline;
use crate::health::HealthChecker;
use crate::reload::Reloader;
use crate::service::CanaryProxy;
use crate::state::ProxyState;
use common::config::ConfigError;

/// When set, the cookie-signing secret; else `proxy.cookie_secret_file`.
pub const COOKIE_SECRET_ENV: &str = "CANARY_COOKIE_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cookie secret: {0}")]
    Secret(#[from] common::secret::SecretError),
}

/// A server ready to `run`, and the state its services share (for tests and the admin).
pub struct Proxy {
    pub server: Server,
    pub state: Arc<ProxyState>,
}

pub fn build(config_path: &Path) -> Result<Proxy, StartupError> {
    let config = ProxyConfig::load(config_path)?;
    let secret =
        common::secret::load_or_create(COOKIE_SECRET_ENV, &config.proxy.cookie_secret_file)?;
    let startup = config.startup();
    let state = ProxyState::new(PathBuf::from(config_path), config, &secret);

    let conf = ServerConf {
        threads: startup.threads.get(),
        grace_period_seconds: Some(startup.shutdown_grace_seconds.as_secs()),
        graceful_shutdown_timeout_seconds: Some(startup.shutdown_grace_seconds.as_secs()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut http_proxy = pingora::proxy::HttpProxy::new(
        CanaryProxy {
            state: Arc::clone(&state),
        },
        Arc::clone(&server.configuration),
    );
    http_proxy.handle_init_modules();
    let mut proxy = Service::new(
        "canary proxy".to_owned(),
        HeadDeadline {
            inner: Arc::new(http_proxy),
            state: Arc::clone(&state),
        },
    );
    proxy.add_tcp(&startup.listen.to_string());
    let mut admin = Service::new(
        "admin".to_owned(),
        AdminApp {
            state: Arc::clone(&state),
        },
    );
    admin.add_tcp(&startup.admin_listen.to_string());
    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service(
        "health checks",
        HealthChecker {
            state: Arc::clone(&state),
        },
    ));
    server.add_service(background_service(
        "config reload",
        Reloader {
            state: Arc::clone(&state),
        },
    ));
    tracing::info!(listen = %startup.listen, admin = %startup.admin_listen, "proxy configured");
    Ok(Proxy { server, state })
}

/// SIGTERM and SIGINT both finish in-flight requests (within `proxy.shutdown_grace_seconds`).
pub struct TermOrInt;

#[async_trait::async_trait]
impl ShutdownSignalWatch for TermOrInt {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => std::future::pending::<()>().await,
        }
        tracing::info!("shutting down; finishing in-flight requests");
        ShutdownSignal::GracefulTerminate
    }
}

impl Proxy {
    /// Serves until `shutdown` says stop, then drains; blocks the calling thread.
    pub fn run(self, shutdown: Box<dyn ShutdownSignalWatch>) {
        self.server.run(RunArgs {
            shutdown_signal: shutdown,
        });
    }
}
