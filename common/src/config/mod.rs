//! What every binary shares about `config.toml`: its errors, which name the file and the key,
//! and the backends' addresses, which the backends listen on (the proxy reads its own view of
//! `[backends]`, with the replicas it sends to).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod value;

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
        key: String,
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

    pub fn invalid(path: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            key: key.into(),
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

/// `text` (the file at `path`) deserialised as `T`. The typed fields do the checking (ranges,
/// addresses, header names), and a refusal names the dotted key and the line.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let syntax = |error: toml::de::Error| ConfigError::Parse {
        path: path.to_owned(),
        message: error.to_string().trim_end().to_owned(),
    };
    let document = toml::Deserializer::parse(text).map_err(syntax)?;
    serde_path_to_error::deserialize(document).map_err(|error| {
        let key = error.path().to_string();
        let inner = error.into_inner();
        let line = inner
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => {
                ConfigError::invalid(path, key, format!("{} (line {line})", inner.message()))
            }
            None => ConfigError::invalid(path, key, inner.message()),
        }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub listen: SocketAddr,
    /// The proxy's key (the side's replicas, which it checks): accepted here, never read, so
    /// the proxy's list never breaks a backend.
    #[serde(default, skip_serializing)]
    upstreams: Unread,
}

impl BackendConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            upstreams: Unread,
        }
    }

    fn legacy_default() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 3000)))
    }

    fn new_default() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 3001)))
    }
}

/// A key another binary owns: any value is accepted and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Unread;

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        backends: BackendsConfig,
    }

    #[test]
    fn the_proxys_upstreams_are_accepted_unread_whatever_they_hold() {
        for upstreams in [
            "[\"127.0.0.1:3000\", \"127.0.0.1:3010\"]",
            "[]",
            "[\"nowhere\", 5]",
        ] {
            let text = format!(
                "[backends.legacy]\nlisten = \"127.0.0.1:4000\"\nupstreams = {upstreams}\n"
            );
            let file: File = parse(&text, Path::new("/etc/x.toml")).unwrap();
            assert_eq!(
                file.backends.legacy,
                BackendConfig::new(SocketAddr::from(([127, 0, 0, 1], 4000)))
            );
        }
        let typo = "[backends.legacy]\nlisten = \"127.0.0.1:4000\"\nupstream = []\n";
        let error = parse::<File>(typo, Path::new("/etc/x.toml")).unwrap_err();
        assert!(error.to_string().contains("upstream"), "{error}");
    }
}
