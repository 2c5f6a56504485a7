//! What every binary shares about `config.toml`: its errors, which name the file and the key,
//! and the backends' addresses, which the backends listen on and the proxy sends to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// What went wrong loading the config; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

impl ConfigError {
    /// The key at fault, for log fields (`(syntax)` or `(file)` when it is not one key).
    pub fn key(&self) -> &str {
        match self {
            Self::Invalid { key, .. } => key,
            Self::Parse { .. } => "(syntax)",
            Self::Read { .. } => "(file)",
        }
    }

    pub fn invalid(path: &Path, key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            key,
            reason: reason.into(),
        }
    }
}

/// The whole text of the config file at `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `text` (the file at `path`) deserialised as `T`; a syntax or type error names the key
/// and the line.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| ConfigError::Parse {
        path: path.to_owned(),
        message: error.to_string().trim_end().to_owned(),
    })
}

/// `path` as written if absolute, else relative to the config file's folder `base`.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// `[backends.legacy]` and `[backends.new]`: where each backend listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsConfig {
    #[serde(default = "BackendConfig::legacy_default")]
    pub legacy: BackendConfig,
    #[serde(default = "BackendConfig::new_default")]
    pub new: BackendConfig,
}

impl Default for BackendsConfig {
    fn default() -> Self {
        Self {
            legacy: BackendConfig::legacy_default(),
            new: BackendConfig::new_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub listen: SocketAddr,
}

impl BackendConfig {
    fn legacy_default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        }
    }
    fn new_default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
        }
    }
}
