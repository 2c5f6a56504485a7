//! Prometheus metrics with the same names on both backends, told apart by a `backend` label.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use common::routes::OTHER_ROUTE;

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    logins: IntCounterVec,
    tokens_generated: IntCounterVec,
    rate_limited: IntCounterVec,
    store_fallbacks: IntCounterVec,
    store_degraded: IntGaugeVec,
}

/// The series of one shared store's per-process fallback (`crate::store::fallback`).
#[derive(Clone)]
pub struct FallbackMetrics {
    /// Decisions the per-process fallback made because the shared store did not answer.
    pub decisions: IntCounter,
    /// 1 while the shared store is unreachable and the fallback decides, else 0.
    pub degraded: IntGauge,
}

/// Outcomes counted by `auth_logins_total`.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome {
    Success,
    InvalidCredentials,
    Throttled,
    Invalid,
    Error,
}

impl LoginOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Throttled => "throttled",
            Self::Invalid => "invalid_request",
            Self::Error => "error",
        }
    }
}

/// A bounded label for `method`: the common methods by name, any other as `other`.
pub(crate) fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    pub fn new(backend: &str) -> Self {
        let labels = [("backend".to_owned(), backend.to_owned())].into();
        let registry =
            Registry::new_custom(None, Some(labels)).expect("a registry without prefix is valid");
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request to response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let logins = IntCounterVec::new(
            Opts::new("auth_logins_total", "Login attempts by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let tokens_generated = IntCounterVec::new(
            Opts::new("ai_tokens_generated_total", "Output tokens generated"),
            &["provider"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_requests_total",
                "Requests refused with 429 by a rate limit or login throttle",
            ),
            &["route"],
        )
        .expect("valid metric");
        let store_fallbacks = IntCounterVec::new(
            Opts::new(
                "store_fallback_total",
                "Decisions made by the per-process fallback because the shared store did not answer",
            ),
            &["store"],
        )
        .expect("valid metric");
        let store_degraded = IntGaugeVec::new(
            Opts::new(
                "store_degraded",
                "1 while the shared store is unreachable and this process decides alone",
            ),
            &["store"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(store_degraded.clone()))
            .expect("metric names are unique");
        for collector in [
            &http_requests,
            &logins,
            &tokens_generated,
            &rate_limited,
            &store_fallbacks,
        ] {
            registry
                .register(Box::new(collector.clone()))
                .expect("metric names are unique");
        }
        registry
            .register(Box::new(http_duration.clone()))
            .expect("metric names are unique");
        Self {
            registry,
            http_requests,
            http_duration,
            logins,
            tokens_generated,
            rate_limited,
            store_fallbacks,
            store_degraded,
        }
    }

    /// The fallback series of `store` (a bounded name, such as `rate_limit`), both at 0 from
    /// the start so a dashboard sees them before the first outage.
    pub fn store_fallback(&self, store: &str) -> FallbackMetrics {
        FallbackMetrics {
            decisions: self.store_fallbacks.with_label_values(&[store]),
            degraded: self.store_degraded.with_label_values(&[store]),
        }
    }

    /// Called by `Observation::finish` once the response head is ready.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method_label(method), status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(seconds);
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins.with_label_values(&[outcome.label()]).inc();
    }

    pub fn tokens_generated(&self, provider: &str, tokens: u32) {
        self.tokens_generated
            .with_label_values(&[provider])
            .inc_by(u64::from(tokens));
    }

    pub fn rate_limited(&self, route: &str) {
        self.rate_limited.with_label_values(&[route]).inc();
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_carries_the_backend_label() {
        let metrics = Metrics::new("legacy");
        metrics.observe_http("/health", "GET", 200, 0.001);
        metrics.login(LoginOutcome::Success);
        let text = metrics.render();
        assert!(text.contains(
            r#"http_requests_total{method="GET",route="/health",status="200",backend="legacy"} 1"#
        ), "{text}");
        assert!(text.contains(r#"auth_logins_total{outcome="success",backend="legacy"} 1"#));
    }
}
