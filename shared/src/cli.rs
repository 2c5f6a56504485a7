//! The command line both backend binaries share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::service::BackendName;
use crate::telemetry::LogFormat;

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
