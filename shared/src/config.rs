//! `config.toml`: the backends' sections as serde structs whose field types do the checking
//! (see `common::config::value`), with every key defaulted so the binaries run on embedded
//! defaults. Adding a key is one field with its type, its default and a doc comment.
//!
//! The backends read the sections they own and ignore every other section, whatever its name
//! (`[proxy]`, `[routing]`, a future `[rollout]` belong to the proxy), while a typo inside a
//! section they own is refused, naming the key. `[shadow]` is the one section the proxy and
//! the backends share: the backends read only its `secret_file` and ignore the proxy's keys.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use common::config::resolve;
pub use common::config::value::{Bounded, Millis, NonEmptyString, Seconds};
pub use common::config::{BackendConfig, BackendsConfig, ConfigError};
pub use common::shadow::ShadowSecretSection;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use sqlx::postgres::PgConnectOptions;

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
    /// The key of the proxy's shadow requests (`crate::shadow`).
    #[serde(default)]
    pub shadow: ShadowSecretSection,
    #[serde(default)]
    pub store: StoreConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Request bodies over this many bytes are answered 413.
    pub body_limit_bytes: Bounded<1024>,
    /// How long a shutdown waits for in-flight requests before it gives up on them.
    pub shutdown_grace_seconds: Seconds,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: Bounded::of(64 * 1024),
            shutdown_grace_seconds: Seconds::of(30),
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The SQLite file both backends share (rate-limit buckets, login throttling, and the users
    /// unless `url` is set).
    pub path: PathBuf,
    /// The PostgreSQL that holds the users instead of `path`, for backends on several hosts.
    pub url: Option<PostgresUrl>,
    /// Create `demo@example.com` / `demo-password` on start if it does not exist. Development only.
    pub seed_demo_user: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/gateway.db"),
            url: None,
            seed_demo_user: false,
        }
    }
}

/// A `postgres://` URL, parsed when the config loads. It shows (`Display`, `Debug`) without
/// its password, so neither a log line nor an error message can leak it.
#[derive(Clone)]
pub struct PostgresUrl {
    options: PgConnectOptions,
}

impl PostgresUrl {
    pub fn new(url: &str) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        // sqlx's parse errors name the part that is wrong, never the URL itself.
        let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        Ok(Self { options })
    }

    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options = &self.options;
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        )
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

impl<'de> Deserialize<'de> for PostgresUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(&String::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub issuer: NonEmptyString,
    pub audience: NonEmptyString,
    pub token_ttl_seconds: Bounded<60, 604_800>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_seconds: Bounded<0, 60>,
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
            issuer: NonEmptyString::of("canary-gateway"),
            audience: NonEmptyString::of("canary-frontend"),
            token_ttl_seconds: Bounded::of(3600),
            leeway_seconds: Bounded::of(5),
            secret_file: PathBuf::from("data/jwt.secret"),
            max_concurrent_hashes: 0,
            login_throttle: LoginThrottleConfig::default(),
        }
    }
}

/// `[auth.login_throttle]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginThrottleConfig {
    /// Failed logins for one email within the window before further attempts get 429.
    pub max_failures: NonZeroU32,
    pub window_seconds: Seconds<1>,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            window_seconds: Seconds::of(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Local,
    Anthropic,
}

/// `[generate]`.
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

/// `[generate.local]`: the offline provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalProviderConfig {
    pub model: String,
    /// Pause between streamed words, to behave like a real model in benchmarks.
    pub token_delay_ms: Millis,
}

impl Default for LocalProviderConfig {
    fn default() -> Self {
        Self {
            model: "local-canary-1".into(),
            token_delay_ms: Millis::of(0),
        }
    }
}

/// `[generate.anthropic]`: the Messages API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicProviderConfig {
    pub base_url: HttpBaseUrl,
    pub model: String,
    pub timeout_seconds: Seconds<1>,
    /// Sent as `anthropic-version`.
    pub api_version: String,
}

impl Default for AnthropicProviderConfig {
    fn default() -> Self {
        Self {
            base_url: HttpBaseUrl("https://api.anthropic.com".into()),
            model: "claude-sonnet-4-5".into(),
            timeout_seconds: Seconds::of(60),
            api_version: "2023-06-01".into(),
        }
    }
}

/// An `http://` or `https://` URL that paths are appended to; kept without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBaseUrl(String);

impl HttpBaseUrl {
    pub fn new(url: &str) -> Result<Self, &'static str> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(Self(url.trim_end_matches('/').to_owned()))
        } else {
            Err("must start with http:// or https://")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for HttpBaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(&String::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

/// `[rate_limit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub generate: TokenBucketConfig,
}

/// A token bucket: `capacity` requests at once, refilled at `refill_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenBucketConfig {
    pub capacity: NonZeroU32,
    pub refill_per_minute: NonZeroU32,
}

impl Default for TokenBucketConfig {
    fn default() -> Self {
        let sixty = NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN);
        Self {
            capacity: sixty,
            refill_per_minute: sixty,
        }
    }
}

/// Where the generate budget and the login throttle live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In `database.path`: enough for the backends of one host.
    #[default]
    Sqlite,
    /// In the Redis at `store.url`, shared by every backend of every host.
    Redis,
}

/// What the generate budget does while Redis does not answer. Login never fails open: its
/// throttle answers 503 whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Each process keeps its own budget in memory until Redis answers again.
    #[default]
    Local,
    /// Generate answers 503 until Redis answers again.
    Deny,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// `redis://host:port/db` (or `rediss://`, `redis+unix://`); required when `kind` is redis.
    pub url: Option<RedisUrl>,
    /// How long one decision may wait for Redis before it counts as unreachable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub on_store_error: OnStoreError,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            url: None,
            timeout: Duration::from_millis(50),
            on_store_error: OnStoreError::Local,
        }
    }
}

/// A Redis connection URL the `redis` crate accepts, checked when the config is loaded.
#[derive(Debug, Clone)]
pub struct RedisUrl {
    url: String,
    client: redis::Client,
}

impl RedisUrl {
    pub fn new(url: &str) -> Result<Self, String> {
        redis::Client::open(url)
            .map(|client| Self {
                url: url.to_owned(),
                client,
            })
            .map_err(|error| format!("not a Redis URL: {error}"))
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// A client for this URL; it connects to nothing until asked.
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(&String::deserialize(deserializer)?).map_err(D::Error::custom)
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
        if config.database.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                path,
                "database.path",
                "must not be empty",
            ));
        }
        if config.store.kind == StoreKind::Redis && config.store.url.is_none() {
            return Err(ConfigError::invalid(
                path,
                "store.url",
                "is required when store.kind is \"redis\"",
            ));
        }
        if config.store.timeout.is_zero() {
            return Err(ConfigError::invalid(
                path,
                "store.timeout",
                "must be longer than 0",
            ));
        }
        config.source = Some(path.to_owned());
        let base = path.parent().unwrap_or(Path::new("."));
        config.database.path = resolve(base, &config.database.path);
        config.auth.secret_file = resolve(base, &config.auth.secret_file);
        config.shadow = config.shadow.resolved(base);
        Ok(config)
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
        assert_eq!(
            config.shadow.secret_file,
            PathBuf::from("/etc/gateway/data/shadow.secret")
        );
        assert_eq!(config.backends.legacy.listen.port(), 3000);
        assert_eq!(config.backends.new.listen.port(), 3001);
        assert!(!config.database.seed_demo_user);
    }

    #[test]
    fn sections_of_other_binaries_are_ignored_whatever_their_names() {
        for text in [
            "[routing]\nnew_percent = 12.5\n[proxy]\nlisten = \"x\"\n",
            "[proxy.tls]\ncert = 1\n[proxy.cors]\norigins = []\n",
            "[rollout]\nenabled = true\nsteps = [{ percent = 1, hold = \"10m\" }]\n[rollout.analysis]\ninterval = \"10s\"\n",
            "[shadow]\npercent = 5\n[some_future_section.nested]\nx = [1, 2]\n",
        ] {
            let config = parse(text);
            assert!(config.is_ok(), "{text}: {config:?}");
        }
    }

    #[test]
    fn the_shared_shadow_section_gives_its_secret_file_and_ignores_the_proxys_keys() {
        let text = "[shadow]\npercent = 5\nroutes = [\"/api/ai/generate\"]\n\
                    secret_file = \"keys/shadow\"\nsome_future_key = { a = 1 }\n";
        let config = parse(text).expect("the proxy's keys are not the backends' business");
        assert_eq!(
            config.shadow.secret_file,
            PathBuf::from("/etc/gateway/keys/shadow")
        );
        let error = parse("[shadow]\nsecret_file = 1\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("shadow.secret_file"), "{error}");
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
            (
                "[rate_limit.generate]\nrefill_per_minute = 0\n",
                "rate_limit.generate.refill_per_minute",
            ),
            ("[auth]\ntoken_ttl_seconds = 5\n", "auth.token_ttl_seconds"),
            ("[auth]\nleeway_seconds = 61\n", "auth.leeway_seconds"),
            ("[auth]\nissuer = \"\"\n", "auth.issuer"),
            ("[auth]\naudience = \"\"\n", "auth.audience"),
            (
                "[auth.login_throttle]\nmax_failures = 0\n",
                "auth.login_throttle.max_failures",
            ),
            (
                "[auth.login_throttle]\nwindow_seconds = 0\n",
                "auth.login_throttle.window_seconds",
            ),
            (
                "[server]\nbody_limit_bytes = 10\n",
                "server.body_limit_bytes",
            ),
            ("[database]\npath = \"\"\n", "database.path"),
            (
                "[generate.anthropic]\nbase_url = \"ftp://x\"\n",
                "generate.anthropic.base_url",
            ),
            (
                "[generate.anthropic]\ntimeout_seconds = 0\n",
                "generate.anthropic.timeout_seconds",
            ),
            ("[generate]\nprovider = \"openai\"\n", "generate.provider"),
            ("[store]\nkind = \"memcached\"\n", "store.kind"),
            ("[store]\nkind = \"redis\"\n", "store.url"),
            ("[store]\nurl = \"http://x\"\n", "store.url"),
            ("[store]\ntimeout = \"soon\"\n", "store.timeout"),
            ("[store]\ntimeout = \"0s\"\n", "store.timeout"),
            (
                "[store]\non_store_error = \"allow\"\n",
                "store.on_store_error",
            ),
            ("[store]\nkinds = \"redis\"\n", "kinds"),
            ("[database]\nurl = \"mysql://db/users\"\n", "database.url"),
            (
                "[database]\nurl = \"postgres://db:port/users\"\n",
                "database.url",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn the_store_is_sqlite_unless_redis_is_configured() {
        let config = parse("").expect("defaults are valid");
        assert_eq!(config.store.kind, StoreKind::Sqlite);
        let text = "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n\
                    timeout = \"200ms\"\non_store_error = \"deny\"\n";
        let store = parse(text).expect("a redis store").store;
        assert_eq!(store.kind, StoreKind::Redis);
        assert_eq!(
            store.url.as_ref().map(RedisUrl::as_str),
            Some("redis://127.0.0.1:6379/0")
        );
        assert_eq!(store.timeout, Duration::from_millis(200));
        assert_eq!(store.on_store_error, OnStoreError::Deny);
    }

    #[test]
    fn a_postgres_url_is_parsed_and_never_shows_its_password() {
        let config = parse(
            "[database]\nurl = \"postgres://gateway:s3cret@db.internal:6432/users?sslmode=require\"\n",
        )
        .expect("a valid URL");
        let url = config.database.url.as_ref().expect("the url is set");
        assert_eq!(url.to_string(), "postgres://gateway@db.internal:6432/users");
        assert_eq!(url.options().get_port(), 6432);
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(
            parse("").unwrap().database.url.is_none(),
            "SQLite by default"
        );
    }

    #[test]
    fn a_bad_listen_address_is_refused() {
        let error = parse("[backends.legacy]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("backends.legacy.listen"), "{error}");
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
        let config = Config::load(&path).unwrap();
        assert!(config.database.seed_demo_user);
    }
}
