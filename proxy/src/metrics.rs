//! The proxy's Prometheus metrics, built to compare the two backends side by side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::rollout::metrics::RolloutMetrics;
use crate::routing::Side;
use crate::shadow::metrics::ShadowMetrics;
use crate::window::Window;

/// Seconds since the Unix epoch (a vDSO call, no syscall).
pub fn unix_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `backend` label of a request no backend answered (refused at the edge, both down).
pub const NO_BACKEND: &str = "none";

/// The bounded set of `route` labels: the contract's routes, `/`, then `other`.
const ROUTES: [&str; 8] = {
    use common::routes::*;
    [
        LOGIN,
        VERIFY,
        GENERATE,
        HEALTH,
        METRICS,
        OPENAPI,
        "/",
        common::routes::OTHER_ROUTE,
    ]
};
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const BACKENDS: [&str; 3] = ["legacy", "new", NO_BACKEND];

/// The `route` label of a request: an index in `ROUTES`, resolved once per request. (Not to be
/// confused with `routing::Route`, the decision of which backend answers.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLabel(usize);

impl RouteLabel {
    pub fn of(path: &str) -> Self {
        RouteLabel(
            ROUTES[..ROUTES.len() - 1]
                .iter()
                .position(|r| *r == path)
                .unwrap_or(ROUTES.len() - 1),
        )
    }

    pub fn label(self) -> &'static str {
        ROUTES[self.0]
    }

    /// Its position among the `COUNT` labels, for per-route arrays.
    pub fn index(self) -> usize {
        self.0
    }

    pub const COUNT: usize = ROUTES.len();

    /// Every label, in `index` order.
    pub fn all() -> impl Iterator<Item = RouteLabel> {
        (0..ROUTES.len()).map(RouteLabel)
    }
}

fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One replica's series, resolved once when the replica is first listed, so that counting
/// never hashes label strings.
pub struct ReplicaSeries {
    pub up: IntGauge,
    pub requests: IntCounter,
    pub connect_errors: IntCounter,
}

pub struct ProxyMetrics {
    registry: Registry,
    replica_up: IntGaugeVec,
    replica_requests: IntCounterVec,
    replica_connect_errors: IntCounterVec,
    upstream_errors: IntCounterVec,
    failovers: IntCounterVec,
    backend_up: IntGaugeVec,
    new_percent: Gauge,
    reloads: IntCounterVec,
    generation: IntGauge,
    edge_refusals: IntCounterVec,
    /// Requests per backend (legacy, new, none), for `/admin/status`.
    counts: [AtomicU64; 3],
    /// The hot path's series, resolved once: [backend][route][status class] and
    /// [backend][route], so a request never hashes label strings.
    request_series: Vec<IntCounter>,
    latency_series: Vec<Histogram>,
    /// The last minute per backend, for the dashboard.
    pub window: Window,
    pub rollout: RolloutMetrics,
    pub shadow: ShadowMetrics,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counter(
            "proxy_requests_total",
            "Requests answered, by the backend that answered",
            &["backend", "route", "status_class"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "proxy_request_duration_seconds",
                "Time from request head to the end of the response, as the proxy sees it",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["backend", "route"],
        )
        .expect("valid metric");
        let upstream_errors = counter(
            "proxy_upstream_errors_total",
            "Failures talking to a backend, by kind",
            &["backend", "kind"],
        );
        let failovers = counter(
            "proxy_failovers_total",
            "Requests sent to the other backend than their bucket's",
            &["from", "to"],
        );
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "proxy_backend_up",
                "1 when the health checks find the backend up",
            ),
            &["backend"],
        )
        .expect("valid metric");
        // `replica` is an address from the config file: bounded by what the operator lists.
        let replica_labels = ["backend", "replica"];
        let replica_up = IntGaugeVec::new(
            Opts::new(
                "proxy_replica_up",
                "1 when the health checks find the replica (one upstream address of a backend) up",
            ),
            &replica_labels,
        )
        .expect("valid metric");
        let replica_requests = counter(
            "proxy_replica_requests_total",
            "Requests answered, by the replica that answered",
            &replica_labels,
        );
        let replica_connect_errors = counter(
            "proxy_replica_connect_errors_total",
            "Failed connects to a replica (each retried on another replica or side if one is left)",
            &replica_labels,
        );
        let new_percent =
            Gauge::new("proxy_new_percent", "routing.new_percent in force").expect("valid metric");
        let reloads = counter(
            "proxy_config_reloads_total",
            "Config reloads, by result",
            &["result"],
        );
        let generation = IntGauge::new("proxy_config_generation", "Config generation in force")
            .expect("valid metric");
        let edge_refusals = counter(
            "proxy_edge_refusals_total",
            "Requests refused at the edge before any backend",
            &["reason"],
        );
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(failovers.clone()),
            Box::new(backend_up.clone()),
            Box::new(new_percent.clone()),
            Box::new(reloads.clone()),
            Box::new(generation.clone()),
            Box::new(edge_refusals.clone()),
            Box::new(replica_up.clone()),
            Box::new(replica_requests.clone()),
            Box::new(replica_connect_errors.clone()),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let rollout = RolloutMetrics::new(&registry).expect("metric names are unique");
        let shadow = ShadowMetrics::new(&registry).expect("metric names are unique");
        // The bounded series a dashboard reads start at 0, not at their first event: a
        // panel over them is not empty, and `rate` sees the first failover or reload too.
        for from in Side::BOTH {
            failovers.with_label_values(&[from.as_str(), from.other().as_str()]);
        }
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        let mut request_series = Vec::new();
        let mut latency_series = Vec::new();
        for backend in BACKENDS {
            for route in ROUTES {
                latency_series.push(latency.with_label_values(&[backend, route]));
                for class in STATUS_CLASSES {
                    request_series.push(requests.with_label_values(&[backend, route, class]));
                }
            }
        }
        Self {
            request_series,
            latency_series,
            window: Window::new(),
            rollout,
            shadow,
            registry,
            replica_up,
            replica_requests,
            replica_connect_errors,
            upstream_errors,
            failovers,
            backend_up,
            new_percent,
            reloads,
            generation,
            edge_refusals,
            counts: Default::default(),
        }
    }

    pub fn request(&self, backend: Option<Side>, route: RouteLabel, status: u16, seconds: f64) {
        let backend = backend.map_or(2, Side::index);
        let series = backend * ROUTES.len() + route.0;
        self.request_series[series * STATUS_CLASSES.len() + status_class(status)].inc();
        self.latency_series[series].observe(seconds);
        self.counts[backend].fetch_add(1, Ordering::Relaxed);
        if let Some(side) = Side::BOTH.get(backend) {
            self.window
                .record(*side, unix_second(), status, (seconds * 1e6) as u64);
        }
    }

    pub fn upstream_error(&self, backend: Side, kind: &str) {
        self.upstream_errors
            .with_label_values(&[backend.as_str(), kind])
            .inc();
    }

    pub fn failover(&self, from: Side, to: Side) {
        self.failovers
            .with_label_values(&[from.as_str(), to.as_str()])
            .inc();
    }

    pub fn backend_up(&self, backend: Side, up: bool) {
        self.backend_up
            .with_label_values(&[backend.as_str()])
            .set(i64::from(up));
    }

    /// The series of the replica at `address` of `backend`, created at 0.
    pub fn replica_series(&self, backend: Side, address: SocketAddr) -> ReplicaSeries {
        let labels = [backend.as_str(), &address.to_string()];
        ReplicaSeries {
            up: self.replica_up.with_label_values(&labels),
            requests: self.replica_requests.with_label_values(&labels),
            connect_errors: self.replica_connect_errors.with_label_values(&labels),
        }
    }

    /// Drops the series of a replica the config no longer lists.
    pub fn forget_replica(&self, backend: Side, address: SocketAddr) {
        let labels = [backend.as_str(), &address.to_string()];
        let _ = self.replica_up.remove_label_values(&labels);
        let _ = self.replica_requests.remove_label_values(&labels);
        let _ = self.replica_connect_errors.remove_label_values(&labels);
    }

    pub fn config_applied(&self, generation: u64, new_basis_points: u32) {
        self.generation.set(generation as i64);
        self.new_percent.set(f64::from(new_basis_points) / 100.0);
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn reload_count(&self, ok: bool) -> u64 {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .get()
    }

    pub fn edge_refusal(&self, reason: &str) {
        self.edge_refusals.with_label_values(&[reason]).inc();
    }

    /// Requests answered by legacy, new, and neither.
    pub fn counts(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.counts[i].load(Ordering::Relaxed))
    }

    pub fn failover_count(&self) -> u64 {
        Side::BOTH
            .iter()
            .map(|from| {
                self.failovers
                    .with_label_values(&[from.as_str(), from.other().as_str()])
                    .get()
            })
            .sum()
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}
