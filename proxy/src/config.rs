//! The proxy's part of `config.toml`: `[proxy]`, `[routing]`, `[health_check]`, `[rollout]` and the
//! backends' addresses and replicas, as serde structs whose field types do the checking (see
//! `common::config::value`); every refusal names the key. Sections the proxy does not own
//! are ignored, whatever their names, so a backend's new section never breaks the proxy.
//!
//! Adding a key is one field with its type, its default and a doc comment; adding a section
//! is one field of `ProxyConfig`.

use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::ConfigError;
use common::config::value::{Bounded, Millis, OptionalHeaderName, OptionalHeaderValue, Seconds};
use http::HeaderValue;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::internal::InternalPath;
use crate::replicas::MAX_REPLICAS;
use crate::routing::Side;

/// Everything the proxy reads from `config.toml`. A reload swaps a whole new one in; the
/// few keys that need a restart are gathered by `startup`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProxyConfig {
    #[serde(default)]
    pub backends: BackendsSection,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub health_check: HealthCheckSection,
    /// `[rollout]`: the step schedule the controller moves `routing.new_percent` through.
    #[serde(default)]
    pub rollout: RolloutSection,
    /// `[shadow]`: copies of eligible requests sent to the other side and compared.
    #[serde(default)]
    pub shadow: crate::shadow::settings::ShadowSection,
    /// The backends' `generate.provider`, read (not owned) so that a generation that costs
    /// money is never shadowed.
    #[serde(default, skip_serializing_if = "GenerateView::is_default")]
    pub generate: GenerateView,
}

/// The one key of the backends' `[generate]` the proxy reads; every other key there is
/// theirs, so unknown fields are allowed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateView {
    pub provider: Option<String>,
}

impl GenerateView {
    /// Whether generations cost money (and differ by nature): the Anthropic provider.
    pub fn is_paid(&self) -> bool {
        self.provider.as_deref() == Some("anthropic")
    }

    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// `[backends.legacy]` and `[backends.new]` as the proxy reads them: where it sends each side.
/// The backends read the same tables for `listen` alone and accept `upstreams` unread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsSection {
    #[serde(default = "BackendSection::legacy_default")]
    pub legacy: BackendSection,
    #[serde(default = "BackendSection::new_default")]
    pub new: BackendSection,
}

impl Default for BackendsSection {
    fn default() -> Self {
        Self {
            legacy: BackendSection::legacy_default(),
            new: BackendSection::new_default(),
        }
    }
}

impl BackendsSection {
    pub fn side(&self, side: Side) -> &BackendSection {
        match side {
            Side::Legacy => &self.legacy,
            Side::New => &self.new,
        }
    }

    pub fn side_mut(&mut self, side: Side) -> &mut BackendSection {
        match side {
            Side::Legacy => &mut self.legacy,
            Side::New => &mut self.new,
        }
    }
}

/// One side: the address its backend binds, and the replicas the proxy balances over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Where this side's backend listens; the one upstream when `upstreams` is absent.
    pub listen: SocketAddr,
    /// The side's replicas (`ip:port`, no names), each health-checked on its own; requests
    /// go to the one with the fewest in flight. Absent: `[listen]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<Upstreams>,
}

impl BackendSection {
    fn legacy_default() -> Self {
        Self::at(common::config::BackendsConfig::default().legacy.listen)
    }

    fn new_default() -> Self {
        Self::at(common::config::BackendsConfig::default().new.listen)
    }

    /// A side whose one upstream is where its backend listens.
    pub fn at(listen: SocketAddr) -> Self {
        Self {
            listen,
            upstreams: None,
        }
    }

    /// The addresses the proxy sends this side's requests to, in the file's order.
    pub fn upstreams(&self) -> &[SocketAddr] {
        match &self.upstreams {
            Some(upstreams) => upstreams.as_slice(),
            None => std::slice::from_ref(&self.listen),
        }
    }

    /// The key an operator edits to change `upstreams()`, for refusals.
    fn upstreams_key(&self, side: Side) -> String {
        let key = if self.upstreams.is_some() {
            "upstreams"
        } else {
            "listen"
        };
        format!("backends.{}.{key}", side.as_str())
    }
}

/// `upstreams`: at least one and at most `MAX_REPLICAS` socket addresses to connect to, none
/// twice, none with port 0 or an unspecified IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams(Vec<SocketAddr>);

impl Upstreams {
    pub fn new(addresses: Vec<SocketAddr>) -> Result<Self, String> {
        if addresses.is_empty() {
            return Err("must list at least one address (or be left out: [listen])".into());
        }
        if addresses.len() > MAX_REPLICAS {
            return Err(format!("lists more than {MAX_REPLICAS} addresses"));
        }
        for (index, address) in addresses.iter().enumerate() {
            if address.port() == 0 {
                return Err(format!("{address} needs a port"));
            }
            if address.ip().is_unspecified() {
                return Err(format!("{address} is not an address to connect to"));
            }
            if addresses[..index].contains(address) {
                return Err(format!("lists {address} twice"));
            }
        }
        Ok(Self(addresses))
    }

    pub fn as_slice(&self) -> &[SocketAddr] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Upstreams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(Vec::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl Serialize for Upstreams {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// Share of users sent to the new backend, 0 to 100 in steps of 0.01.
    pub new_percent: Percent,
}

/// `[proxy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// The public endpoint. Restart to change.
    pub listen: SocketAddr,
    /// `/metrics`, `/admin/status`, the dashboard. Restart to change.
    pub admin_listen: SocketAddr,
    /// Worker threads. Restart to change.
    pub threads: NonZeroUsize,
    /// Whether idle worker threads take tasks queued on busy ones (Tokio's multi-threaded
    /// scheduler); off, each connection stays on the thread that accepted it (one
    /// single-threaded runtime per thread, as nginx's workers). Restart to change.
    pub work_stealing: bool,
    pub cookie_name: CookieName,
    pub cookie_max_age_seconds: u64,
    /// Set behind a TLS terminator; over `[proxy.tls]` the cookie is `Secure` anyway.
    pub cookie_secure: bool,
    /// Read when `CANARY_COOKIE_SECRET` is unset; created on first start, except on a proxy
    /// of a fleet (`ProxyConfig::fleet_reason`), which refuses to start without one. Restart to change.
    pub cookie_secret_file: PathBuf,
    /// This proxy is one of several behind a load balancer, sharing this file and the cookie
    /// secret: it never generates a secret of its own (see `fleet`). Also implied by
    /// `rollout.controller = false` and `rollout.analysis.source = "prometheus"`.
    pub fleet: bool,
    /// The admin listener's bearer token, read when `CANARY_ADMIN_TOKEN` is unset; needed
    /// when `admin_listen` is off loopback (see `admin_auth`). No default. Restart to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// `new` or `legacy` in this header forces a side for one request; `""` switches it off.
    pub override_header: OptionalHeaderName,
    /// `x-served-by: legacy|new` on every proxied answer.
    pub served_by_header: bool,
    /// Peers whose `x-forwarded-for` / `forwarded` / `x-forwarded-proto` are kept (appended to).
    pub trusted_proxies: Vec<IpAddr>,
    /// Larger request heads get 431; a longer request target alone, 414.
    pub max_header_bytes: Bounded<1024>,
    /// Larger request bodies get 413 at the edge.
    pub max_body_bytes: Bounded<1024>,
    /// Requests one client address may have in flight at once; more get 429.
    pub max_requests_per_client: NonZeroU32,
    /// The whole request head must arrive within this.
    pub request_head_timeout_ms: Millis<100>,
    pub connect_timeout_ms: Millis<10>,
    /// Between two reads from a backend.
    pub read_timeout_ms: Millis<10>,
    /// A whole exchange, streams included; at least `connect_timeout_ms`.
    pub total_timeout_ms: Millis,
    /// How long SIGTERM/SIGINT wait for in-flight requests. Restart to change.
    pub shutdown_grace_seconds: Seconds,
    /// The Unix socket (owner-only) on which a proxy started with `--upgrade` takes over
    /// this one's listening sockets (see `upgrade`). Restart to change.
    pub upgrade_socket: PathBuf,
    /// Paths the public listener answers 404 `NOT_FOUND` itself, never routed: a backend's
    /// endpoints for operators. Matched exactly, however a request spells them (case,
    /// percent-encoding, `//`, dot segments, a trailing slash); see `internal`.
    pub internal_paths: Vec<InternalPath>,
    /// `[proxy.tls]`: HTTPS on a listener of its own. Absent: plain HTTP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// `[proxy.cors]`: which other origins' pages may call the API from a browser.
    pub cors: CorsSection,
    /// `[proxy.security_headers]`: set on every answer, the proxy's own included.
    pub security_headers: SecurityHeadersSection,
    /// `[proxy.compression]`: of JSON and HTML answers, never of event streams.
    pub compression: CompressionSection,
}

/// `[proxy.tls]`: HTTPS (HTTP/2 by ALPN, HTTP/1.1 still served) with rustls. Over it the
/// bucket cookie is `Secure`, backends see `x-forwarded-proto: https` and every answer
/// carries `strict-transport-security`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The HTTPS endpoint. Restart to add, remove or move it.
    pub listen: SocketAddr,
    /// PEM: the server certificate first, then its chain. Checked at load; served anew when
    /// the file changes (with `key_file`), no restart needed.
    pub cert_file: PathBuf,
    /// PEM: the private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `strict-transport-security: max-age=…` on every answer over TLS; 0 sends none.
    #[serde(default = "TlsSection::default_hsts_max_age_seconds")]
    pub hsts_max_age_seconds: u64,
}

impl TlsSection {
    fn default_hsts_max_age_seconds() -> u64 {
        365 * 24 * 3600
    }

    /// A section for these files, the other keys at their defaults.
    pub fn new(listen: SocketAddr, cert_file: PathBuf, key_file: PathBuf) -> Self {
        Self {
            listen,
            cert_file,
            key_file,
            hsts_max_age_seconds: Self::default_hsts_max_age_seconds(),
        }
    }
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            threads: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            work_stealing: true,
            cookie_name: CookieName::of("canary_bucket"),
            cookie_max_age_seconds: 30 * 24 * 3600,
            cookie_secure: false,
            cookie_secret_file: PathBuf::from("data/cookie.secret"),
            fleet: false,
            admin_token_file: None,
            override_header: OptionalHeaderName::of("x-canary"),
            served_by_header: true,
            trusted_proxies: Vec::new(),
            max_header_bytes: Bounded::of(32 * 1024),
            max_body_bytes: Bounded::of(1024 * 1024),
            max_requests_per_client: NonZeroU32::new(512).unwrap_or(NonZeroU32::MIN),
            request_head_timeout_ms: Millis::of(10_000),
            connect_timeout_ms: Millis::of(1_000),
            read_timeout_ms: Millis::of(60_000),
            total_timeout_ms: Millis::of(300_000),
            shutdown_grace_seconds: Seconds::of(10),
            upgrade_socket: PathBuf::from("data/proxy-upgrade.sock"),
            internal_paths: vec![InternalPath::of("/metrics")],
            tls: None,
            cors: CorsSection::default(),
            security_headers: SecurityHeadersSection::default(),
            compression: CompressionSection::default(),
        }
    }
}

/// `[proxy.cors]`, in the spirit of @fastify/cors: exact origins only, preflights answered by
/// the proxy itself (see `cors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSection {
    /// Exact origins (`scheme://host[:port]`, as a browser sends them) whose pages may call
    /// the API; empty switches CORS off (preflights then go to the backends, which refuse).
    pub allowed_origins: Vec<Origin>,
    /// `access-control-allow-credentials: true`, so those pages may send cookies.
    pub allow_credentials: bool,
    /// How long a browser may reuse a preflight's answer (browsers cap it: Chromium at 7200).
    pub max_age_seconds: Bounded<0, 86_400>,
}

impl Default for CorsSection {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            max_age_seconds: Bounded::of(600),
        }
    }
}

/// `[proxy.security_headers]`, in the spirit of helmet's defaults: each is set on every
/// answer (replacing a backend's), and `""` switches one off (a backend's then passes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersSection {
    pub x_content_type_options: OptionalHeaderValue,
    /// Or `""`, leaving it to a page's `content-security-policy: frame-ancestors`.
    pub x_frame_options: OptionalHeaderValue,
    pub referrer_policy: OptionalHeaderValue,
    pub cross_origin_opener_policy: OptionalHeaderValue,
    pub cross_origin_resource_policy: OptionalHeaderValue,
    pub x_dns_prefetch_control: OptionalHeaderValue,
}

impl Default for SecurityHeadersSection {
    fn default() -> Self {
        Self {
            x_content_type_options: OptionalHeaderValue::of("nosniff"),
            x_frame_options: OptionalHeaderValue::of("SAMEORIGIN"),
            referrer_policy: OptionalHeaderValue::of("no-referrer"),
            cross_origin_opener_policy: OptionalHeaderValue::of("same-origin"),
            cross_origin_resource_policy: OptionalHeaderValue::of("same-origin"),
            x_dns_prefetch_control: OptionalHeaderValue::of("off"),
        }
    }
}

/// `[proxy.compression]`: JSON and HTML answers with a `content-length` of at least
/// `min_bytes` are compressed by Pingora's response compression module with the client's
/// first listed coding among gzip, br and zstd; event streams and answers without a length
/// never are (see `compression`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionSection {
    pub enabled: bool,
    /// Smaller answers go as they are.
    pub min_bytes: u64,
    /// 1 (fastest) to 9, for each algorithm.
    pub level: Bounded<1, 9>,
}

impl Default for CompressionSection {
    fn default() -> Self {
        Self {
            enabled: true,
            min_bytes: 1024,
            level: Bounded::of(5),
        }
    }
}

/// `[health_check]`: active probes of each backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckSection {
    /// Probed with GET; must start with `/`.
    pub path: String,
    pub interval_ms: Millis<50>,
    pub timeout_ms: Millis<10>,
    /// Consecutive failures before a backend is marked down.
    pub unhealthy_threshold: NonZeroU32,
    /// Consecutive successes before a down backend is marked up again.
    pub healthy_threshold: NonZeroU32,
}

impl Default for HealthCheckSection {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            interval_ms: Millis::of(1_000),
            timeout_ms: Millis::of(500),
            unhealthy_threshold: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            healthy_threshold: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// `[rollout]`: progressive delivery. With `enabled = false` (the default) nothing reads the
/// rest, and the proxy routes by `routing.new_percent` alone, as an operator sets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    pub enabled: bool,
    /// The weights `routing.new_percent` is moved through, strictly increasing, each above 0.
    pub steps: Vec<RolloutStep>,
    /// What enough failing evaluations do: `rollback` to 0, or `pause` (freeze the weight,
    /// for migrations that cannot go back).
    pub on_failure: OnFailure,
    /// `[rollout.analysis]`: how new is judged against legacy at each step.
    pub analysis: AnalysisSection,
    /// The controller's progress (step, phase, when the step started, the last verdicts),
    /// beside the database by default, so a restart resumes the same step.
    pub state_file: PathBuf,
    /// Whether this proxy runs the controller (judges, writes `routing.new_percent`). Of
    /// several proxies exactly one does; the others only follow this file. Read at start;
    /// `CANARY_ROLLOUT_CONTROLLER=true|false` overrides it, so one shared file serves all.
    pub controller: bool,
}

impl Default for RolloutSection {
    fn default() -> Self {
        let step = |percent: f64, hold_minutes: u64| RolloutStep {
            percent: Percent::from_percent(percent).unwrap_or_default(),
            hold: Duration::from_secs(hold_minutes * 60),
            approval: false,
            shadow: false,
        };
        Self {
            enabled: false,
            steps: vec![
                step(1.0, 10),
                step(5.0, 30),
                step(25.0, 60),
                step(50.0, 60),
                step(100.0, 0),
            ],
            on_failure: OnFailure::Rollback,
            analysis: AnalysisSection::default(),
            state_file: PathBuf::from("data/rollout-state.json"),
            controller: true,
        }
    }
}

/// One entry of `rollout.steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStep {
    /// The weight of this step, above 0, up to 100, in steps of 0.01.
    pub percent: Percent,
    /// At least this long at this weight before promoting ("10m", "1h"); default none.
    #[serde(default, with = "humantime_serde")]
    pub hold: Duration,
    /// Wait for an operator's approval before entering this step.
    #[serde(default)]
    pub approval: bool,
    /// A dark launch: the first step, at `percent = 0`, judged on shadow traffic alone (sent
    /// to new at `shadow.percent`, or every eligible request if that is 0).
    #[serde(default)]
    pub shadow: bool,
}

/// `rollout.on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// `routing.new_percent = 0`.
    #[default]
    Rollback,
    /// Keep the weight where it is and wait for an operator.
    Pause,
}

/// `[rollout.analysis]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSection {
    /// One evaluation per interval ("10s").
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Requests per cohort per evaluation; fewer make it inconclusive.
    pub min_requests: NonZeroU32,
    /// After this long without enough data, pause (never roll back, never promote).
    #[serde(with = "humantime_serde")]
    pub max_inconclusive: Duration,
    /// How far new's 5xx share may exceed the baseline's (absolute, 0 to 1), and only
    /// significantly, before it fails.
    pub error_rate_tolerance: f64,
    /// New's latency may be at most this ratio of the baseline's (by median and p99), at
    /// least 1.
    pub latency_tolerance: f64,
    /// Of the statistical tests, strictly between 0.5 and 1.
    pub confidence: f64,
    /// New's 5xx share at or above this (over at least 20 requests) rolls back at once;
    /// above 0, at most 1.
    pub critical_error_rate: f64,
    /// Consecutive passing evaluations (plus the hold) before the next step.
    pub passes_to_promote: NonZeroU32,
    /// Consecutive failing evaluations before `on_failure`.
    pub failures_to_rollback: NonZeroU32,
    /// While shadow traffic runs, new fails an evaluation if its real mismatch rate against
    /// legacy (`GET /admin/shadow`) is above this, 0 to 1; the one metric of a shadow step.
    pub max_shadow_mismatch_rate: f64,
    /// Where the cohorts' counts come from: `local` (this proxy's own traffic) or
    /// `prometheus` (every proxy's, through PromQL at `prometheus_url`).
    pub source: AnalysisSource,
    /// The Prometheus that scrapes every proxy's admin `/metrics`, e.g.
    /// `http://127.0.0.1:9090`; needed with `source = "prometheus"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<PrometheusUrl>,
    /// Label matchers added to every query, e.g. `job="canary-proxy"`, so that a Prometheus
    /// scraping other fleets too counts only this one's proxies; empty: every series.
    pub prometheus_selector: String,
    /// Each query to Prometheus must answer within this, else the evaluation is inconclusive.
    #[serde(with = "humantime_serde")]
    pub prometheus_timeout: Duration,
}

/// `rollout.analysis.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisSource {
    /// The requests this proxy served, counted in memory.
    #[default]
    Local,
    /// The `proxy_rollout_cohort_*` series of every proxy, read from Prometheus.
    Prometheus,
}

/// `rollout.analysis.prometheus_url`: an `http` or `https` URL with a host, checked on load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusUrl(reqwest::Url);

impl PrometheusUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err("must be an http:// or https:// URL with a host".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must have no query and no fragment".into());
        }
        Ok(Self(url))
    }

    /// The HTTP API's instant query endpoint under this URL (a path prefix is kept).
    pub fn query_endpoint(&self) -> String {
        format!("{}/api/v1/query", self.0.as_str().trim_end_matches('/'))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Serialize for PrometheusUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for PrometheusUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

impl Default for AnalysisSection {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            min_requests: NonZeroU32::new(500).unwrap_or(NonZeroU32::MIN),
            max_inconclusive: Duration::from_secs(30 * 60),
            error_rate_tolerance: 0.01,
            latency_tolerance: 1.10,
            confidence: 0.98,
            critical_error_rate: 0.05,
            passes_to_promote: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            failures_to_rollback: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            max_shadow_mismatch_rate: 0.01,
            source: AnalysisSource::Local,
            prometheus_url: None,
            prometheus_selector: String::new(),
            prometheus_timeout: Duration::from_secs(5),
        }
    }
}

impl RolloutSection {
    /// What a range check of `[rollout]` finds first: the dotted key and the reason.
    fn invalid_key(&self) -> Option<(String, &'static str)> {
        if self.enabled && self.steps.is_empty() {
            return Some((
                "rollout.steps".into(),
                "must not be empty when rollout.enabled",
            ));
        }
        let mut previous = 0;
        for (index, step) in self.steps.iter().enumerate() {
            let basis_points = step.percent.basis_points();
            if step.shadow && (index > 0 || basis_points > 0) {
                return Some((
                    format!("rollout.steps[{index}].shadow"),
                    "only the first step may be a shadow step, at percent = 0 (a dark launch)",
                ));
            }
            let reason = if step.shadow {
                continue;
            } else if basis_points == 0 {
                "must be above 0 (0 only for a first step with shadow = true)"
            } else if basis_points <= previous {
                "must be above the previous step's (steps strictly increase)"
            } else {
                previous = basis_points;
                continue;
            };
            return Some((format!("rollout.steps[{index}].percent"), reason));
        }
        let analysis = &self.analysis;
        // `!(a < x)` rather than `x >= a` so that NaN is refused too.
        let checks: [(&str, bool, &'static str); 6] = [
            ("interval", analysis.interval.is_zero(), "must be above 0"),
            (
                "error_rate_tolerance",
                !(0.0..1.0).contains(&analysis.error_rate_tolerance),
                "must be at least 0 and below 1",
            ),
            (
                "latency_tolerance",
                !(analysis.latency_tolerance >= 1.0 && analysis.latency_tolerance.is_finite()),
                "must be at least 1",
            ),
            (
                "confidence",
                !(analysis.confidence > 0.5 && analysis.confidence < 1.0),
                "must be above 0.5 and below 1",
            ),
            (
                "critical_error_rate",
                !(analysis.critical_error_rate > 0.0 && analysis.critical_error_rate <= 1.0),
                "must be above 0 and at most 1",
            ),
            (
                "max_shadow_mismatch_rate",
                !(0.0..=1.0).contains(&analysis.max_shadow_mismatch_rate),
                "must be at least 0 and at most 1",
            ),
        ];
        let prometheus: [(&str, bool, &'static str); 3] = [
            (
                "prometheus_url",
                analysis.source == AnalysisSource::Prometheus && analysis.prometheus_url.is_none(),
                "is needed with source = \"prometheus\"",
            ),
            (
                "prometheus_selector",
                analysis.prometheus_selector.contains(['{', '}', '\n']),
                "must be label matchers without braces, e.g. job=\"canary-proxy\"",
            ),
            (
                "prometheus_timeout",
                analysis.prometheus_timeout.is_zero(),
                "must be above 0",
            ),
        ];
        (checks.into_iter().chain(prometheus))
            .find(|(_, refused, _)| *refused)
            .map(|(key, _, reason)| (format!("rollout.analysis.{key}"), reason))
    }
}

/// The keys read once at start; a change needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct StartupSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub threads: NonZeroUsize,
    pub work_stealing: bool,
    pub cookie_secret_file: PathBuf,
    pub admin_token_file: Option<PathBuf>,
    pub shutdown_grace_seconds: Seconds,
    pub upgrade_socket: PathBuf,
    /// `proxy.tls.listen`, if TLS is on (the certificate reloads; the listener does not).
    pub tls_listen: Option<SocketAddr>,
    pub fleet: bool,
    /// `rollout.controller` as the file says it (`CANARY_ROLLOUT_CONTROLLER` may override).
    pub rollout_controller: bool,
}

impl ProxyConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&common::config::read(path)?, path)
    }

    /// Parses `text` as if it were the file at `path`; relative paths are resolved against
    /// its folder.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = common::config::parse(text, path)?;
        config.validate(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.proxy.cookie_secret_file =
            common::config::resolve(base, &config.proxy.cookie_secret_file);
        config.rollout.state_file = common::config::resolve(base, &config.rollout.state_file);
        config.proxy.upgrade_socket = common::config::resolve(base, &config.proxy.upgrade_socket);
        config.shadow.secret_file = common::config::resolve(base, &config.shadow.secret_file);
        if let Some(file) = &mut config.proxy.admin_token_file {
            *file = common::config::resolve(base, file);
        }
        if let Some(tls) = &mut config.proxy.tls {
            tls.cert_file = common::config::resolve(base, &tls.cert_file);
            tls.key_file = common::config::resolve(base, &tls.key_file);
            crate::tls::load(&tls.cert_file, &tls.key_file)
                .map_err(|error| ConfigError::invalid(path, error.key(), error.to_string()))?;
        }
        Ok(config)
    }

    /// What one key's type cannot check alone.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| Err(ConfigError::invalid(path, key, reason));
        let (legacy, new) = (&self.backends.legacy, &self.backends.new);
        if let Some(shared) = (legacy.upstreams().iter()).find(|a| new.upstreams().contains(a)) {
            // Name a list the operator wrote, new's if both are.
            let (at_fault, other) = if new.upstreams.is_some() || legacy.upstreams.is_none() {
                (Side::New, Side::Legacy)
            } else {
                (Side::Legacy, Side::New)
            };
            let key = self.backends.side(at_fault).upstreams_key(at_fault);
            let other_key = self.backends.side(other).upstreams_key(other);
            return invalid(
                &key,
                &format!("{shared} is also in {other_key}: an address serves one side"),
            );
        }
        for side in Side::BOTH {
            let backend = self.backends.side(side);
            if backend.upstreams.is_none() && backend.listen.port() == 0 {
                return invalid(&backend.upstreams_key(side), "needs a port");
            }
        }
        if self.proxy.total_timeout_ms.get() < self.proxy.connect_timeout_ms.get() {
            return invalid(
                "proxy.total_timeout_ms",
                "must be at least proxy.connect_timeout_ms",
            );
        }
        if !self.health_check.path.starts_with('/') {
            return invalid("health_check.path", "must start with /");
        }
        if let Some((key, reason)) = self.rollout.invalid_key() {
            return invalid(&key, reason);
        }
        if let Err(error) = crate::shadow::IgnoreList::parse(&self.shadow.ignore) {
            return invalid("shadow.ignore", &error.to_string());
        }
        Ok(())
    }

    pub fn startup(&self) -> StartupSettings {
        StartupSettings {
            listen: self.proxy.listen,
            admin_listen: self.proxy.admin_listen,
            threads: self.proxy.threads,
            work_stealing: self.proxy.work_stealing,
            cookie_secret_file: self.proxy.cookie_secret_file.clone(),
            admin_token_file: self.proxy.admin_token_file.clone(),
            shutdown_grace_seconds: self.proxy.shutdown_grace_seconds,
            upgrade_socket: self.proxy.upgrade_socket.clone(),
            tls_listen: self.proxy.tls.as_ref().map(|tls| tls.listen),
            fleet: self.proxy.fleet,
            rollout_controller: self.rollout.controller,
        }
    }

    /// Why this proxy is one of several, if it is: `[proxy] fleet`, or a key that only makes
    /// sense with several (a follower, a judge over every proxy). `controller` is the role in
    /// force (the file's, or `CANARY_ROLLOUT_CONTROLLER`'s).
    pub fn fleet_reason(&self, controller: bool) -> Option<&'static str> {
        if self.proxy.fleet {
            Some("proxy.fleet = true")
        } else if !controller {
            Some("this proxy is not the rollout controller (rollout.controller = false)")
        } else if self.rollout.analysis.source == AnalysisSource::Prometheus {
            Some("rollout.analysis.source = \"prometheus\"")
        } else {
            None
        }
    }

    /// `routing.new_percent` in hundredths of a percent, 0 to 10,000.
    pub fn new_basis_points(&self) -> u32 {
        self.routing.new_percent.basis_points()
    }
}

/// A share from 0 to 100 % with at most two decimals, held exactly as basis points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent(u32);

impl Percent {
    pub fn from_percent(percent: f64) -> Result<Self, &'static str> {
        if !(0.0..=100.0).contains(&percent) {
            return Err("must be between 0 and 100");
        }
        let basis_points = percent * 100.0;
        if (basis_points - basis_points.round()).abs() > 1e-6 {
            return Err("must have at most two decimals (0.01 % resolution)");
        }
        Ok(Self(basis_points.round() as u32))
    }

    /// Hundredths of a percent, 0 to 10,000.
    pub fn basis_points(self) -> u32 {
        self.0
    }

    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_percent(f64::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_percent())
    }
}

/// A browser origin, `http(s)://host[:port]` in lower case as browsers serialise it, held as
/// the header value it is compared with and echoed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(HeaderValue);

impl Origin {
    pub fn parse(origin: &str) -> Result<Self, &'static str> {
        const SHAPE: &str = "must be an origin: http(s)://host[:port], lower case, no path";
        let uri: http::Uri = origin.parse().map_err(|_| SHAPE)?;
        // Exactly `scheme://authority`: no path, query or trailing slash.
        let shaped = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme @ ("http" | "https")), Some(authority)) => {
                origin
                    .strip_prefix(scheme)
                    .and_then(|o| o.strip_prefix("://"))
                    == Some(authority.as_str())
                    && !authority.as_str().contains('@')
            }
            _ => false,
        } && !origin.bytes().any(|b| b.is_ascii_uppercase());
        if !shaped {
            return Err(SHAPE);
        }
        HeaderValue::from_str(origin).map(Self).map_err(|_| SHAPE)
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Parsed from a `str`, so it is one.
        serializer.serialize_str(self.0.to_str().unwrap_or_default())
    }
}

/// A cookie name: RFC 6265's `token`, which is RFC 9110's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieName(String);

impl CookieName {
    fn is_token(name: &str) -> bool {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }

    /// For defaults and tests; an invalid name is a bug in the code.
    pub fn of(name: &str) -> Self {
        assert!(Self::is_token(name), "invalid cookie name {name:?}");
        Self(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CookieName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if Self::is_token(&name) {
            Ok(Self(name))
        } else {
            Err(D::Error::custom("must be a non-empty cookie token"))
        }
    }
}

impl Serialize for CookieName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
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
        assert_eq!(config.new_basis_points(), 0);
        assert_eq!(
            config.proxy.override_header.get().map(|h| h.as_str()),
            Some("x-canary")
        );
        assert_eq!(
            config.proxy.cookie_secret_file,
            PathBuf::from("/srv/data/cookie.secret")
        );
        assert_eq!(
            config.proxy.upgrade_socket,
            PathBuf::from("/srv/data/proxy-upgrade.sock")
        );
        assert_eq!(config.proxy.admin_token_file, None);
    }

    #[test]
    fn the_admin_token_file_resolves_against_the_config_folder_and_needs_a_restart() {
        let config = parse("[proxy]\nadmin_token_file = \"secrets/admin.token\"\n").unwrap();
        let file = PathBuf::from("/srv/secrets/admin.token");
        assert_eq!(config.proxy.admin_token_file.as_ref(), Some(&file));
        assert_eq!(config.startup().admin_token_file, Some(file));
        let absolute = parse("[proxy]\nadmin_token_file = \"/etc/canary/admin.token\"\n").unwrap();
        assert_eq!(
            absolute.proxy.admin_token_file,
            Some(PathBuf::from("/etc/canary/admin.token"))
        );
        assert_ne!(config.startup(), parse("").unwrap().startup());
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text).unwrap(), config, "{text}");
    }

    #[test]
    fn sections_of_other_binaries_are_ignored_whatever_their_names() {
        let text = "[server]\nbody_limit_bytes = 1\n[store]\nkind = \"redis\"\n\
                    [rate_limit.generate]\ncapacity = 0\n[some_future_section.nested]\nx = [1, 2]\n";
        assert_eq!(parse(text).unwrap().new_basis_points(), 0);
    }

    #[test]
    fn percentages_keep_hundredths() {
        let config = parse("[routing]\nnew_percent = 12.34\n").unwrap();
        assert_eq!(config.new_basis_points(), 1234);
        assert_eq!(
            parse("[routing]\nnew_percent = 100\n")
                .unwrap()
                .new_basis_points(),
            10_000
        );
    }

    #[test]
    fn invalid_edits_name_the_key() {
        for (text, key) in [
            ("[routing]\nnew_percent = 150\n", "routing.new_percent"),
            ("[routing]\nnew_percent = -1\n", "routing.new_percent"),
            ("[routing]\nnew_percent = 0.001\n", "routing.new_percent"),
            ("[routing]\nnew_percent = \"ten\"\n", "routing.new_percent"),
            ("[backends.canary]\nlisten = \"127.0.0.1:1\"\n", "canary"),
            (
                "[backends.new]\nlisten = \"not an address\"\n",
                "backends.new.listen",
            ),
            ("[proxy]\ncookie_name = \"a b\"\n", "proxy.cookie_name"),
            ("[proxy]\nthreads = 0\n", "proxy.threads"),
            (
                "[proxy]\ninternal_paths = [\"metrics\"]\n",
                "proxy.internal_paths",
            ),
            ("[proxy]\nmax_body_bytes = 10\n", "proxy.max_body_bytes"),
            (
                "[proxy]\noverride_header = \"a b\"\n",
                "proxy.override_header",
            ),
            (
                "[proxy]\ntrusted_proxies = [\"nope\"]\n",
                "proxy.trusted_proxies",
            ),
            (
                "[proxy]\nconnect_timeout_ms = 500\ntotal_timeout_ms = 100\n",
                "proxy.total_timeout_ms",
            ),
            (
                "[health_check]\ninterval_ms = 1\n",
                "health_check.interval_ms",
            ),
            ("[health_check]\npath = \"health\"\n", "health_check.path"),
            (
                "[health_check]\nhealthy_threshold = 0\n",
                "health_check.healthy_threshold",
            ),
            (
                "[backends.legacy]\nlisten = \"127.0.0.1:5\"\n[backends.new]\nlisten = \"127.0.0.1:5\"\n",
                "backends.new.listen",
            ),
            (
                "[backends.legacy]\nlisten = \"127.0.0.1:3000\"\nupstreams = []\n",
                "backends.legacy.upstreams",
            ),
            (
                "[backends.legacy]\nlisten = \"127.0.0.1:3000\"\nupstreams = [\"127.0.0.1:3000\", \"127.0.0.1:3000\"]\n",
                "backends.legacy.upstreams",
            ),
            (
                "[backends.legacy]\nlisten = \"127.0.0.1:3000\"\nupstreams = [\"127.0.0.1:3000\", \"legacy-2:3000\"]\n",
                "backends.legacy.upstreams[1]",
            ),
            (
                "[backends.new]\nlisten = \"127.0.0.1:3001\"\nupstreams = [\"127.0.0.1:0\"]\n",
                "backends.new.upstreams",
            ),
            (
                "[backends.new]\nlisten = \"127.0.0.1:3001\"\nupstreams = [\"0.0.0.0:3001\"]\n",
                "backends.new.upstreams",
            ),
            (
                "[backends.legacy]\nlisten = \"127.0.0.1:3000\"\nupstreams = \"127.0.0.1:3000\"\n",
                "backends.legacy.upstreams",
            ),
            (
                "[backends.legacy]\nlisten = \"127.0.0.1:3000\"\nupstreams = [\"127.0.0.1:3000\", \"127.0.0.1:3001\"]\n",
                "backends.legacy.upstreams",
            ),
            (
                "[backends.new]\nlisten = \"127.0.0.1:3001\"\nupstreams = [\"127.0.0.1:3000\"]\n",
                "backends.new.upstreams",
            ),
            (
                "[proxy.cors]\nallowed_origins = [\"http://localhost:5173/\"]\n",
                "proxy.cors.allowed_origins",
            ),
            (
                "[proxy.cors]\nallowed_origins = [\"HTTP://Localhost:5173\"]\n",
                "proxy.cors.allowed_origins",
            ),
            (
                "[proxy.cors]\nallowed_origins = [\"null\"]\n",
                "proxy.cors.allowed_origins",
            ),
            ("[proxy.cors]\nallowed_origin = []\n", "allowed_origin"),
            (
                "[proxy.cors]\nmax_age_seconds = 100000\n",
                "proxy.cors.max_age_seconds",
            ),
            (
                "[proxy.security_headers]\nreferrer_policy = \"a\\u0001b\"\n",
                "proxy.security_headers.referrer_policy",
            ),
            (
                "[proxy.compression]\nlevel = 0\n",
                "proxy.compression.level",
            ),
            ("[routing\nnew_percent = 5", "TOML parse error"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn upstreams_default_to_listen_and_read_back_the_same() {
        let config = parse("[backends.new]\nlisten = \"127.0.0.1:4001\"\n").unwrap();
        let address = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(
            config.backends.legacy.upstreams(),
            [address("127.0.0.1:3000")]
        );
        assert_eq!(config.backends.new.upstreams(), [address("127.0.0.1:4001")]);

        // Several hosts: each side's backends may bind the same port on their own hosts.
        let text = "[backends.legacy]\nlisten = \"0.0.0.0:3000\"\n\
                    upstreams = [\"10.0.0.1:3000\", \"10.0.0.2:3000\", \"[::1]:3010\"]\n\
                    [backends.new]\nlisten = \"0.0.0.0:3000\"\nupstreams = [\"10.0.1.1:3000\"]\n";
        let config = parse(text).unwrap();
        assert_eq!(
            config.backends.legacy.upstreams(),
            ["10.0.0.1:3000", "10.0.0.2:3000", "[::1]:3010"].map(address)
        );
        assert_eq!(
            config.backends.side(Side::New).upstreams(),
            [address("10.0.1.1:3000")]
        );
        let written = toml::to_string(&config).unwrap();
        assert_eq!(parse(&written).unwrap(), config, "{written}");

        let too_many: Vec<String> = (1..=65)
            .map(|port| format!("\"127.0.0.1:{port}\""))
            .collect();
        let text = format!("[backends.legacy]\nupstreams = [{}]\n", too_many.join(", "));
        let error = parse(&text).unwrap_err().to_string();
        assert!(
            error.contains("backends.legacy.upstreams: lists more than 64"),
            "{error}"
        );
    }

    #[test]
    fn cors_origins_security_headers_and_compression_read_typed() {
        let config = parse(
            "[proxy.cors]\nallowed_origins = [\"http://localhost:5173\", \"https://app.example.com\"]\n\
             allow_credentials = true\n[proxy.security_headers]\nx_frame_options = \"\"\n\
             [proxy.compression]\nmin_bytes = 10\n",
        )
        .unwrap();
        let origins: Vec<&str> = (config.proxy.cors.allowed_origins.iter())
            .map(|o| o.header_value().to_str().unwrap())
            .collect();
        assert_eq!(
            origins,
            ["http://localhost:5173", "https://app.example.com"]
        );
        assert!(config.proxy.cors.allow_credentials);
        assert_eq!(config.proxy.security_headers.x_frame_options.get(), None);
        assert_eq!(
            config.proxy.security_headers.referrer_policy.get().unwrap(),
            "no-referrer"
        );
        assert_eq!(config.proxy.compression.min_bytes, 10);
        let defaults = parse("").unwrap();
        assert!(defaults.proxy.cors.allowed_origins.is_empty());
        assert!(defaults.proxy.compression.enabled);
    }

    #[test]
    fn the_override_header_can_be_switched_off() {
        let config = parse("[proxy]\noverride_header = \"\"\n").unwrap();
        assert_eq!(config.proxy.override_header.get(), None);
    }

    #[test]
    fn a_config_written_from_the_structs_reads_back_the_same() {
        let mut config = ProxyConfig::default();
        config.routing.new_percent = Percent::from_percent(12.5).unwrap();
        config.proxy.override_header = OptionalHeaderName::off();
        config.proxy.cookie_secret_file = PathBuf::from("/srv/secret");
        config.rollout.state_file = PathBuf::from("/srv/rollout.json");
        config.shadow.secret_file = PathBuf::from("/srv/shadow.secret");
        config.proxy.upgrade_socket = PathBuf::from("/srv/proxy-upgrade.sock");
        config.proxy.cors.allowed_origins = vec![Origin::parse("http://localhost:5173").unwrap()];
        config.proxy.security_headers.x_dns_prefetch_control = OptionalHeaderValue::off();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text).unwrap(), config);
    }

    #[test]
    fn the_tls_section_resolves_its_files_and_names_the_key_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::write_dev_certificate(&dir.path().join("certs")).unwrap();
        let path = dir.path().join("config.toml");
        let section = "[proxy.tls]\nlisten = \"127.0.0.1:8443\"\n";
        let files = "cert_file = \"certs/cert.pem\"\nkey_file = \"certs/key.pem\"\n";
        let config = ProxyConfig::parse(&format!("{section}{files}"), &path).unwrap();
        let tls = config.proxy.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, dir.path().join("certs/cert.pem"));
        assert_eq!(tls.hsts_max_age_seconds, 31_536_000);
        assert_eq!(config.startup().tls_listen, Some(tls.listen));
        let text = toml::to_string(&config).unwrap();
        assert_eq!(ProxyConfig::parse(&text, &path).unwrap(), config);

        for (text, key) in [
            (format!("{section}{files}hsts = 1\n"), "proxy.tls"),
            (
                format!("{section}cert_file = \"nope.pem\"\nkey_file = \"certs/key.pem\"\n"),
                "proxy.tls.cert_file",
            ),
            (
                format!("{section}cert_file = \"certs/cert.pem\"\nkey_file = \"certs/cert.pem\"\n"),
                "proxy.tls.key_file",
            ),
            (
                files.replace("cert_file", "[proxy.tls]\ncert_file"),
                "listen",
            ),
        ] {
            let error = ProxyConfig::parse(&text, &path).unwrap_err();
            assert!(error.to_string().contains(key), "{text}: {error}");
        }
    }

    const ISSUE_EXAMPLE: &str = r#"
[rollout]
enabled = true
steps = [
  { percent = 1,   hold = "10m" },
  { percent = 5,   hold = "30m" },
  { percent = 25,  hold = "1h", approval = true },   # waits for an operator's approval before entering
  { percent = 50,  hold = "1h" },
  { percent = 100 },
]
on_failure = "rollback"          # or "pause"

[rollout.analysis]
interval = "10s"
min_requests = 500
max_inconclusive = "30m"
error_rate_tolerance = 0.01
latency_tolerance = 1.10
confidence = 0.98
critical_error_rate = 0.05
passes_to_promote = 3
failures_to_rollback = 2
"#;

    #[test]
    fn the_rollout_example_of_the_issue_reads_typed() {
        let rollout = parse(ISSUE_EXAMPLE).unwrap().rollout;
        assert!(rollout.enabled);
        let steps: Vec<(u32, Duration, bool)> = (rollout.steps.iter())
            .map(|s| (s.percent.basis_points(), s.hold, s.approval))
            .collect();
        let minutes = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(
            steps,
            [
                (100, minutes(10), false),
                (500, minutes(30), false),
                (2500, minutes(60), true),
                (5000, minutes(60), false),
                (10_000, Duration::ZERO, false),
            ]
        );
        assert_eq!(rollout.on_failure, OnFailure::Rollback);
        assert_eq!(rollout.analysis, AnalysisSection::default());
        let pause = parse("[rollout]\non_failure = \"pause\"\n").unwrap();
        assert_eq!(pause.rollout.on_failure, OnFailure::Pause);
    }

    #[test]
    fn a_dark_launch_is_a_first_step_at_0_with_shadow() {
        let text = "[rollout]\nenabled = true\nsteps = [\n  { percent = 0, hold = \"30m\", shadow = true },\n  { percent = 100 },\n]\n";
        let rollout = parse(text).unwrap().rollout;
        assert!(rollout.steps[0].shadow);
        assert_eq!(rollout.steps[0].percent.basis_points(), 0);
        assert_eq!(rollout.analysis.max_shadow_mismatch_rate, 0.01);
    }

    #[test]
    fn without_a_rollout_section_the_rollout_is_off_and_defaults_are_valid() {
        let config = parse("").unwrap();
        assert!(!config.rollout.enabled);
        // The state file sits beside the database, resolved against the config's folder.
        assert_eq!(
            config.rollout.state_file,
            Path::new("/srv/data/rollout-state.json")
        );
        let rollout = RolloutSection {
            state_file: RolloutSection::default().state_file,
            ..config.rollout
        };
        assert_eq!(rollout, RolloutSection::default());
        let enabled = RolloutSection {
            enabled: true,
            ..RolloutSection::default()
        };
        assert_eq!(enabled.invalid_key(), None);
    }

    #[test]
    fn invalid_rollout_edits_name_the_key() {
        let steps = |steps: &str| format!("[rollout]\nsteps = [{steps}]\n");
        let analysis = |line: &str| format!("[rollout.analysis]\n{line}\n");
        for (text, key) in [
            (steps("{ percent = 0 }"), "rollout.steps[0].percent"),
            (
                steps("{ percent = 5, shadow = true }"),
                "rollout.steps[0].shadow",
            ),
            (
                steps("{ percent = 0, shadow = true }, { percent = 0, shadow = true }"),
                "rollout.steps[1].shadow",
            ),
            (
                steps("{ percent = 5 }, { percent = 5 }"),
                "rollout.steps[1].percent",
            ),
            (
                steps("{ percent = 1 }, { percent = 10 }, { percent = 2 }"),
                "rollout.steps[2].percent",
            ),
            (
                steps("{ percent = 1 }, { percent = 10 }, { percent = 101 }"),
                "rollout.steps[2].percent",
            ),
            (
                steps("{ percent = 1 }, { percent = 10 }, { percent = 20.001 }"),
                "rollout.steps[2].percent",
            ),
            (
                steps("{ percent = 1 }, { percent = \"ten\" }"),
                "rollout.steps[1].percent",
            ),
            (
                steps("{ percent = 1, hold = \"ten minutes\" }"),
                "rollout.steps[0].hold",
            ),
            (steps("{ percent = 1, wait = \"1m\" }"), "wait"),
            (
                "[rollout]\nenabled = true\nsteps = []\n".into(),
                "rollout.steps",
            ),
            (
                "[rollout]\non_failure = \"retry\"\n".into(),
                "rollout.on_failure",
            ),
            (analysis("interval = \"0s\""), "rollout.analysis.interval"),
            (analysis("interval = 10"), "rollout.analysis.interval"),
            (
                analysis("max_inconclusive = \"soon\""),
                "rollout.analysis.max_inconclusive",
            ),
            (
                analysis("min_requests = 0"),
                "rollout.analysis.min_requests",
            ),
            (
                analysis("error_rate_tolerance = 1.5"),
                "rollout.analysis.error_rate_tolerance",
            ),
            (
                analysis("latency_tolerance = 0.9"),
                "rollout.analysis.latency_tolerance",
            ),
            (analysis("confidence = 0.5"), "rollout.analysis.confidence"),
            (analysis("confidence = 1.0"), "rollout.analysis.confidence"),
            (analysis("confidence = nan"), "rollout.analysis.confidence"),
            (
                analysis("critical_error_rate = 0"),
                "rollout.analysis.critical_error_rate",
            ),
            (
                analysis("passes_to_promote = 0"),
                "rollout.analysis.passes_to_promote",
            ),
            (
                analysis("failures_to_rollback = -1"),
                "rollout.analysis.failures_to_rollback",
            ),
            (analysis("intervall = \"1s\""), "intervall"),
            (analysis("source = \"graphite\""), "rollout.analysis.source"),
            (
                analysis("source = \"prometheus\""),
                "rollout.analysis.prometheus_url",
            ),
            (
                analysis("prometheus_url = \"127.0.0.1:9090\""),
                "rollout.analysis.prometheus_url",
            ),
            (
                analysis("prometheus_url = \"ftp://127.0.0.1:9090\""),
                "rollout.analysis.prometheus_url",
            ),
            (
                analysis("prometheus_url = \"http://127.0.0.1:9090/?x=1\""),
                "rollout.analysis.prometheus_url",
            ),
            (
                analysis("prometheus_selector = \"{job='a'}\""),
                "rollout.analysis.prometheus_selector",
            ),
            (
                analysis("prometheus_timeout = \"0s\""),
                "rollout.analysis.prometheus_timeout",
            ),
            (
                "[rollout]\ncontroller = \"yes\"\n".into(),
                "rollout.controller",
            ),
            ("[proxy]\nfleet = 1\n".into(), "proxy.fleet"),
        ] {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn the_judge_over_the_fleet_and_the_role_read_typed() {
        let text = "[proxy]\nfleet = true\n[rollout]\ncontroller = false\n\
                    [rollout.analysis]\nsource = \"prometheus\"\n\
                    prometheus_url = \"http://127.0.0.1:9090/prom/\"\n\
                    prometheus_selector = 'job=\"canary-proxy\"'\nprometheus_timeout = \"2s\"\n";
        let config = parse(text).unwrap();
        assert!(config.proxy.fleet);
        assert!(!config.rollout.controller);
        let analysis = &config.rollout.analysis;
        assert_eq!(analysis.source, AnalysisSource::Prometheus);
        assert_eq!(
            analysis.prometheus_url.as_ref().unwrap().query_endpoint(),
            "http://127.0.0.1:9090/prom/api/v1/query"
        );
        assert_eq!(analysis.prometheus_selector, r#"job="canary-proxy""#);
        assert_eq!(analysis.prometheus_timeout, Duration::from_secs(2));
        assert!(config.startup().fleet && !config.startup().rollout_controller);
        let back = toml::to_string(&config).unwrap();
        assert_eq!(parse(&back).unwrap(), config, "{back}");
        let defaults = parse("").unwrap();
        assert!(!defaults.proxy.fleet && defaults.rollout.controller);
        assert_eq!(defaults.rollout.analysis.source, AnalysisSource::Local);
    }

    #[test]
    fn a_rollout_written_from_the_structs_reads_back_the_same() {
        let mut config = ProxyConfig::default();
        config.rollout.enabled = true;
        config.rollout.on_failure = OnFailure::Pause;
        config.rollout.steps[2].approval = true;
        config.rollout.steps[0].hold = Duration::from_secs(90);
        config.rollout.analysis.interval = Duration::from_millis(1500);
        // Relative paths come back resolved against the file's folder.
        config.proxy.cookie_secret_file = PathBuf::from("/srv/secret");
        config.rollout.state_file = PathBuf::from("/srv/rollout.json");
        config.shadow.secret_file = PathBuf::from("/srv/shadow.secret");
        config.proxy.upgrade_socket = PathBuf::from("/srv/proxy-upgrade.sock");
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text).unwrap(), config, "{text}");
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
        ProxyConfig::load(&path).unwrap();
    }
}
