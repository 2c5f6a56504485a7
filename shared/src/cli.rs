//! The command line both backend binaries share, and everything they do before serving.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::config::{Config, ConfigError};
use crate::service::{BackendName, Service, StartupError};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, clap::Parser)]
pub struct ServeArgs {
    /// The config file; a missing `config.toml` (the default) means the embedded defaults.
    #[arg(long, default_value = "config.toml")]
    pub config: PathBuf,
    /// Listen here instead of the config's `backends.<name>.listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// Why a backend binary could not start serving; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the {backend} backend: {source}", backend = .backend.as_str())]
    Service {
        backend: BackendName,
        source: StartupError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What a backend binary does before it serves: parse the flags, start logging, load the
/// config, build the `Service` (with its secrets: the JWT one and the shadow key), bind the
/// listener. Blocking (the config file, the secret files, the database, a password hash), so
/// a binary calls it before it starts its async runtime.
pub fn start(backend: BackendName) -> Result<(TcpListener, Service), LaunchError> {
    let args = ServeArgs::parse();
    telemetry::init(args.log_format);
    let config = args.load_config()?;
    let addr = args.listen_addr(&config, backend);
    let service =
        Service::new(config, backend).map_err(|source| LaunchError::Service { backend, source })?;
    let listener =
        TcpListener::bind(addr).map_err(|source| LaunchError::Listen { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "{} backend listening", backend.as_str());
    Ok((listener, service))
}

impl ServeArgs {
    /// The config named by `--config`. Only the default path may be absent.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        if self.config == Path::new("config.toml") && !self.config.exists() {
            tracing::warn!("no config.toml here; running on the embedded defaults");
            return Ok(Config::default());
        }
        Config::load(&self.config)
    }

    /// `--listen` if given, else this backend's address from the config.
    pub fn listen_addr(&self, config: &Config, backend: BackendName) -> SocketAddr {
        self.listen.unwrap_or(match backend {
            BackendName::Legacy => config.backends.legacy.listen,
            BackendName::New => config.backends.new.listen,
        })
    }
}
