//! The proxy's part of `config.toml`: `[proxy]`, `[routing]`, `[health_check]` and the
//! backends' addresses. Raw serde structs are validated into `ProxyConfig`; every refusal
//! names the key. Sections that belong to the backends are ignored.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{BackendsConfig, ConfigError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    #[serde(default)]
    backends: BackendsConfig,
    #[serde(default)]
    proxy: ProxySection,
    #[serde(default)]
    routing: RoutingSection,
    #[serde(default)]
    health_check: HealthCheckConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProxySection {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    threads: usize,
    cookie_name: String,
    cookie_max_age_seconds: u64,
    cookie_secure: bool,
    cookie_secret_file: PathBuf,
    /// Empty switches the override header off.
    override_header: String,
    served_by_header: bool,
    /// Peers whose `x-forwarded-for` / `x-forwarded-proto` are kept (appended to).
    trusted_proxies: Vec<IpAddr>,
    max_header_bytes: usize,
    max_body_bytes: usize,
    max_requests_per_client: u32,
    request_head_timeout_ms: u64,
    connect_timeout_ms: u64,
    read_timeout_ms: u64,
    total_timeout_ms: u64,
    shutdown_grace_seconds: u64,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            threads: 2,
            cookie_name: "canary_bucket".into(),
            cookie_max_age_seconds: 30 * 24 * 3600,
            cookie_secure: false,
            cookie_secret_file: PathBuf::from("data/cookie.secret"),
            override_header: "x-canary".into(),
            served_by_header: true,
            trusted_proxies: Vec::new(),
            max_header_bytes: 32 * 1024,
            max_body_bytes: 1024 * 1024,
            max_requests_per_client: 512,
            request_head_timeout_ms: 10_000,
            connect_timeout_ms: 1_000,
            read_timeout_ms: 60_000,
            total_timeout_ms: 300_000,
            shutdown_grace_seconds: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RoutingSection {
    /// Share of users sent to the new backend, 0 to 100.
    new_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failures before a backend is marked down.
    pub unhealthy_threshold: u32,
    /// Consecutive successes before a down backend is marked up again.
    pub healthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            interval_ms: 1_000,
            timeout_ms: 500,
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        }
    }
}

/// Settings read once at start; a change needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct StartupSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    pub cookie_secret_file: PathBuf,
    pub shutdown_grace_seconds: u64,
}

/// Settings a reload swaps in.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    /// `routing.new_percent` in hundredths of a percent, 0 to 10,000.
    pub new_basis_points: u32,
    pub legacy: SocketAddr,
    pub new: SocketAddr,
    pub cookie_name: String,
    pub cookie_max_age_seconds: u64,
    pub cookie_secure: bool,
    /// Lowercased; `None` when switched off.
    pub override_header: Option<String>,
    pub served_by_header: bool,
    pub trusted_proxies: Vec<IpAddr>,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_requests_per_client: u32,
    pub request_head_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub total_timeout: Duration,
    pub health_check: HealthCheckConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub startup: StartupSettings,
    pub live: LiveSettings,
}

impl ProxyConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason: reason.to_owned(),
        };
        let p = &raw.proxy;
        let percent = raw.routing.new_percent;
        if !(0.0..=100.0).contains(&percent) {
            return Err(invalid("routing.new_percent", "must be between 0 and 100"));
        }
        let basis_points = percent * 100.0;
        if (basis_points - basis_points.round()).abs() > 1e-6 {
            return Err(invalid(
                "routing.new_percent",
                "must have at most two decimals (0.01 % resolution)",
            ));
        }
        let checks: [(bool, &'static str, &str); 14] = [
            (p.threads >= 1, "proxy.threads", "must be at least 1"),
            (
                is_cookie_name(&p.cookie_name),
                "proxy.cookie_name",
                "must be a non-empty cookie token",
            ),
            (
                p.override_header.is_empty() || is_header_name(&p.override_header),
                "proxy.override_header",
                "must be a header name, or empty to switch it off",
            ),
            (
                p.max_header_bytes >= 1024,
                "proxy.max_header_bytes",
                "must be at least 1024",
            ),
            (
                p.max_body_bytes >= 1024,
                "proxy.max_body_bytes",
                "must be at least 1024",
            ),
            (
                p.max_requests_per_client >= 1,
                "proxy.max_requests_per_client",
                "must be at least 1",
            ),
            (
                p.request_head_timeout_ms >= 100,
                "proxy.request_head_timeout_ms",
                "must be at least 100",
            ),
            (
                p.connect_timeout_ms >= 10,
                "proxy.connect_timeout_ms",
                "must be at least 10",
            ),
            (
                p.read_timeout_ms >= 10,
                "proxy.read_timeout_ms",
                "must be at least 10",
            ),
            (
                p.total_timeout_ms >= p.connect_timeout_ms,
                "proxy.total_timeout_ms",
                "must be at least proxy.connect_timeout_ms",
            ),
            (
                raw.health_check.path.starts_with('/'),
                "health_check.path",
                "must start with /",
            ),
            (
                raw.health_check.interval_ms >= 50,
                "health_check.interval_ms",
                "must be at least 50",
            ),
            (
                raw.health_check.timeout_ms >= 10,
                "health_check.timeout_ms",
                "must be at least 10",
            ),
            (
                raw.health_check.unhealthy_threshold >= 1
                    && raw.health_check.healthy_threshold >= 1,
                "health_check.unhealthy_threshold",
                "thresholds must be at least 1",
            ),
        ];
        if let Some((_, key, reason)) = checks.into_iter().find(|(ok, _, _)| !ok) {
            return Err(invalid(key, reason));
        }
        if raw.backends.legacy.listen == raw.backends.new.listen {
            return Err(invalid(
                "backends.new.listen",
                "must differ from backends.legacy.listen",
            ));
        }
        if raw.backends.legacy.listen.port() == 0 || raw.backends.new.listen.port() == 0 {
            return Err(invalid("backends.*.listen", "needs a port"));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let cookie_secret_file = if p.cookie_secret_file.is_absolute() {
            p.cookie_secret_file.clone()
        } else {
            base.join(&p.cookie_secret_file)
        };
        let ms = Duration::from_millis;
        Ok(Self {
            startup: StartupSettings {
                listen: p.listen,
                admin_listen: p.admin_listen,
                threads: p.threads,
                cookie_secret_file,
                shutdown_grace_seconds: p.shutdown_grace_seconds,
            },
            live: LiveSettings {
                new_basis_points: basis_points.round() as u32,
                legacy: raw.backends.legacy.listen,
                new: raw.backends.new.listen,
                cookie_name: p.cookie_name.clone(),
                cookie_max_age_seconds: p.cookie_max_age_seconds,
                cookie_secure: p.cookie_secure,
                override_header: (!p.override_header.is_empty())
                    .then(|| p.override_header.to_ascii_lowercase()),
                served_by_header: p.served_by_header,
                trusted_proxies: p.trusted_proxies.clone(),
                max_header_bytes: p.max_header_bytes,
                max_body_bytes: p.max_body_bytes,
                max_requests_per_client: p.max_requests_per_client,
                request_head_timeout: ms(p.request_head_timeout_ms),
                connect_timeout: ms(p.connect_timeout_ms),
                read_timeout: ms(p.read_timeout_ms),
                total_timeout: ms(p.total_timeout_ms),
                health_check: raw.health_check.clone(),
            },
        })
    }
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Header names and cookie names share RFC 9110's `token` grammar.
fn is_header_name(name: &str) -> bool {
    is_cookie_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
        ProxyConfig::parse(text, Path::new("/srv/config.toml"))
    }

    #[test]
    fn defaults_are_valid_and_backend_sections_are_ignored() {
        let config = parse("[auth]\nissuer = \"x\"\n[database]\npath = \"y\"\n").unwrap();
        assert_eq!(config.live.new_basis_points, 0);
        assert_eq!(config.live.override_header.as_deref(), Some("x-canary"));
        assert_eq!(
            config.startup.cookie_secret_file,
            PathBuf::from("/srv/data/cookie.secret")
        );
    }

    #[test]
    fn percentages_keep_hundredths() {
        let config = parse("[routing]\nnew_percent = 12.34\n").unwrap();
        assert_eq!(config.live.new_basis_points, 1234);
        assert_eq!(
            parse("[routing]\nnew_percent = 100\n")
                .unwrap()
                .live
                .new_basis_points,
            10_000
        );
    }

    #[test]
    fn invalid_edits_name_the_key() {
        for (text, key) in [
            ("[routing]\nnew_percent = 150\n", "routing.new_percent"),
            ("[routing]\nnew_percent = -1\n", "routing.new_percent"),
            ("[routing]\nnew_percent = 0.001\n", "routing.new_percent"),
            ("[routing]\nnew_percent = \"ten\"\n", "new_percent"),
            ("[backends.canary]\nlisten = \"127.0.0.1:1\"\n", "canary"),
            ("[backends.new]\nlisten = \"not an address\"\n", "listen"),
            ("[proxy]\ncookie_name = \"a b\"\n", "proxy.cookie_name"),
            (
                "[health_check]\ninterval_ms = 1\n",
                "health_check.interval_ms",
            ),
            ("[routing\nnew_percent = 5", "TOML parse error"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn the_override_header_can_be_switched_off() {
        let config = parse("[proxy]\noverride_header = \"\"\n").unwrap();
        assert_eq!(config.live.override_header, None);
    }
}
