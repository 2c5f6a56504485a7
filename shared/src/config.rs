//! `config.toml`: typed, validated, with every key defaulted so the binaries run on embedded defaults.
//!
//! The backends read the sections they own and ignore the rest (`[proxy]`, `[routing]`,
//! `[health_check]` belong to the proxy), while a typo inside a section they own is refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use common::config::resolve;
pub use common::config::{BackendConfig, BackendsConfig, ConfigError};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    /// The file this was loaded from; relative paths inside it are resolved against its folder.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub backends: BackendsConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub generate: GenerateConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Request bodies over this many bytes are answered 413.
    pub body_limit_bytes: usize,
    /// How long a shutdown waits for in-flight requests before it gives up on them.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            shutdown_grace_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The SQLite file both backends share (users, rate-limit buckets, login throttling).
    pub path: PathBuf,
    /// Create `demo@example.com` / `demo-password` on start if it does not exist. Development only.
    pub seed_demo_user: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/gateway.db"),
            seed_demo_user: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub token_ttl_seconds: u64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_seconds: u64,
    /// Read when `JWT_SECRET` is unset; created with 32 random bytes (mode 0600) if absent.
    pub secret_file: PathBuf,
    /// Password hashes computed at once, on low-priority threads; the rest wait, so a login
    /// flood cannot take every core. 0 means one less than the number of cores (at least one).
    pub max_concurrent_hashes: usize,
    pub login_throttle: LoginThrottleConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "canary-gateway".into(),
            audience: "canary-frontend".into(),
            token_ttl_seconds: 3600,
            leeway_seconds: 5,
            secret_file: PathBuf::from("data/jwt.secret"),
            max_concurrent_hashes: 0,
            login_throttle: LoginThrottleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginThrottleConfig {
    /// Failed logins for one email within the window before further attempts get 429.
    pub max_failures: u32,
    pub window_seconds: u64,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Local,
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    pub provider: ProviderKind,
    pub local: LocalProviderConfig,
    pub anthropic: AnthropicProviderConfig,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Local,
            local: LocalProviderConfig::default(),
            anthropic: AnthropicProviderConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalProviderConfig {
    pub model: String,
    /// Pause between streamed words, to behave like a real model in benchmarks.
    pub token_delay_ms: u64,
}

impl Default for LocalProviderConfig {
    fn default() -> Self {
        Self {
            model: "local-canary-1".into(),
            token_delay_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicProviderConfig {
    pub base_url: String,
    pub model: String,
    pub timeout_seconds: u64,
    /// Sent as `anthropic-version`.
    pub api_version: String,
}

impl Default for AnthropicProviderConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.anthropic.com".into(),
            model: "claude-sonnet-4-5".into(),
            timeout_seconds: 60,
            api_version: "2023-06-01".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub generate: TokenBucketConfig,
}

/// A token bucket: `capacity` requests at once, refilled at `refill_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenBucketConfig {
    pub capacity: u32,
    pub refill_per_minute: u32,
}

impl Default for TokenBucketConfig {
    fn default() -> Self {
        Self {
            capacity: 60,
            refill_per_minute: 60,
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&common::config::read(path)?, path)
    }

    /// Parses `text` as if it were the file at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = common::config::parse(text, path)?;
        config.source = Some(path.to_owned());
        config.validate(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.database.path = resolve(base, &config.database.path);
        config.auth.secret_file = resolve(base, &config.auth.secret_file);
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::invalid(path, key, reason);
        let checks: [(bool, &'static str, &str); 12] = [
            (
                self.server.body_limit_bytes >= 1024,
                "server.body_limit_bytes",
                "must be at least 1024",
            ),
            (
                !self.database.path.as_os_str().is_empty(),
                "database.path",
                "must not be empty",
            ),
            (
                !self.auth.issuer.is_empty(),
                "auth.issuer",
                "must not be empty",
            ),
            (
                !self.auth.audience.is_empty(),
                "auth.audience",
                "must not be empty",
            ),
            (
                (60..=7 * 24 * 3600).contains(&self.auth.token_ttl_seconds),
                "auth.token_ttl_seconds",
                "must be between 60 and 604800",
            ),
            (
                self.auth.leeway_seconds <= 60,
                "auth.leeway_seconds",
                "must be at most 60",
            ),
            (
                self.auth.login_throttle.max_failures >= 1,
                "auth.login_throttle.max_failures",
                "must be at least 1",
            ),
            (
                self.auth.login_throttle.window_seconds >= 1,
                "auth.login_throttle.window_seconds",
                "must be at least 1",
            ),
            (
                self.rate_limit.generate.capacity >= 1,
                "rate_limit.generate.capacity",
                "must be at least 1",
            ),
            (
                self.rate_limit.generate.refill_per_minute >= 1,
                "rate_limit.generate.refill_per_minute",
                "must be at least 1",
            ),
            (
                self.generate.anthropic.base_url.starts_with("http://")
                    || self.generate.anthropic.base_url.starts_with("https://"),
                "generate.anthropic.base_url",
                "must start with http:// or https://",
            ),
            (
                self.generate.anthropic.timeout_seconds >= 1,
                "generate.anthropic.timeout_seconds",
                "must be at least 1",
            ),
        ];
        match checks.into_iter().find(|(ok, _, _)| !ok) {
            Some((_, key, reason)) => Err(invalid(key, reason)),
            None => Ok(()),
        }
    }

    /// The number of password hashes allowed to run at once.
    pub fn hash_concurrency(&self) -> usize {
        match self.auth.max_concurrent_hashes {
            0 => std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1))
                .unwrap_or(1)
                .max(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/gateway/config.toml"))
    }

    #[test]
    fn empty_file_gives_defaults_with_paths_resolved_against_the_file() {
        let config = parse("").expect("defaults are valid");
        assert_eq!(
            config.database.path,
            PathBuf::from("/etc/gateway/data/gateway.db")
        );
        assert_eq!(
            config.auth.secret_file,
            PathBuf::from("/etc/gateway/data/jwt.secret")
        );
        assert_eq!(config.backends.legacy.listen.port(), 3000);
        assert_eq!(config.backends.new.listen.port(), 3001);
        assert!(!config.database.seed_demo_user);
    }

    #[test]
    fn sections_of_the_proxy_are_ignored() {
        let config = parse("[routing]\nnew_percent = 12.5\n[proxy]\nlisten = \"x\"\n");
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn typo_in_an_owned_section_names_the_key() {
        let error = parse("[auth]\nisuer = \"x\"\n").unwrap_err().to_string();
        assert!(error.contains("isuer"), "{error}");
        assert!(error.contains("/etc/gateway/config.toml"), "{error}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (text, key) in [
            (
                "[rate_limit.generate]\ncapacity = 0\n",
                "rate_limit.generate.capacity",
            ),
            ("[auth]\ntoken_ttl_seconds = 5\n", "auth.token_ttl_seconds"),
            (
                "[server]\nbody_limit_bytes = 10\n",
                "server.body_limit_bytes",
            ),
            (
                "[generate.anthropic]\nbase_url = \"ftp://x\"\n",
                "generate.anthropic.base_url",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn a_bad_listen_address_is_refused() {
        let error = parse("[backends.legacy]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("listen"), "{error}");
    }
}
