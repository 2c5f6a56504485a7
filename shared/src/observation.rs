//! One request's observation, the same on both backends: keep or mint its `x-request-id`, open
//! its log span, and once its response head is ready, record the HTTP metrics and log a line.
//! Each adapter's middleware only hands over what its framework knows.
//!
//! A verified shadow (`crate::shadow`) is logged, marked `shadow=true`, but not counted: its
//! primary was counted on the other backend, and counting both would skew the comparison.

use std::time::Instant;

use http::{HeaderName, HeaderValue};
use tracing::Span;
use tracing::field::Empty;

use crate::endpoint::Endpoint;
use crate::metrics::{Metrics, OTHER_ROUTE, method_label};
use crate::request::request_id;
use crate::shadow::{self, ShadowKey};

pub const REQUEST_ID: HeaderName = HeaderName::from_static(common::request_id::HEADER);

/// A request between its arrival and its response head.
pub struct Observation {
    id: HeaderValue,
    method: &'static str,
    route: &'static str,
    span: Span,
    started: Instant,
    shadow: bool,
}

impl Observation {
    /// Starts observing a request from its headers (`header` looks one up: its
    /// `x-request-id`, and whether it is a shadow signed with `key`), its method and the
    /// route its router matched (`None` when none did).
    pub fn start<'a>(
        key: &ShadowKey,
        header: impl Fn(&HeaderName) -> Option<&'a [u8]>,
        method: &str,
        matched_route: Option<&str>,
    ) -> Self {
        let started = Instant::now();
        let (id, id_header) = identify(header(&REQUEST_ID));
        let shadow = shadow::is_shadow(key, header);
        // The label set stays bounded: a route is one of the contract's, or `other`.
        let route = matched_route
            .and_then(Endpoint::at)
            .map_or(OTHER_ROUTE, Endpoint::path);
        let span =
            tracing::info_span!("request", id = %id, method = %method, route, shadow = Empty);
        // Only shadows say so, so the lines of every other request are unchanged.
        if shadow {
            span.record("shadow", true);
        }
        Self {
            id: id_header,
            method: method_label(method),
            route,
            span,
            started,
            shadow,
        }
    }

    /// The span the request is handled in.
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// Records the answer's `status` in `metrics` (unless the request is a shadow) and the
    /// log, and returns the `x-request-id` header the response carries.
    pub fn finish(self, metrics: &Metrics, status: u16) -> (HeaderName, HeaderValue) {
        let elapsed = self.started.elapsed();
        if !self.shadow {
            metrics.observe_http(self.route, self.method, status, elapsed.as_secs_f64());
        }
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.span.in_scope(|| {
            // A load balancer's health probes and Prometheus's scrapes come every few seconds
            // from machines; at INFO they would bury what an operator reads.
            if is_polled(self.route) {
                tracing::debug!(status, elapsed_us, "answered");
            } else {
                tracing::info!(status, elapsed_us, "answered");
            }
        });
        (REQUEST_ID, self.id)
    }
}

/// Routes that machines poll (health probes, metric scrapes), logged at DEBUG.
fn is_polled(route: &str) -> bool {
    route == Endpoint::Health.path() || route == Endpoint::Metrics.path()
}

/// The request's id, and the same as a header value. `request_id` keeps a client's id only
/// when it is visible ASCII, which a header value may hold, and mints hex digits otherwise;
/// should a kept id ever not convert, a minted one takes its place rather than none.
fn identify(header: Option<&[u8]>) -> (String, HeaderValue) {
    let id = request_id(header);
    match HeaderValue::from_str(&id) {
        Ok(value) => (id, value),
        Err(_) => {
            let minted = request_id(None);
            let value = HeaderValue::from_str(&minted).expect("hex digits are a header value");
            (minted, value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ShadowKey {
        ShadowKey::new(&[9; 32]).expect("32 bytes")
    }

    /// `Observation::start` for a request with this `x-request-id` and `x-canary-shadow`.
    fn start(
        id: Option<&[u8]>,
        shadow: Option<&[u8]>,
        method: &str,
        route: Option<&str>,
    ) -> Observation {
        let header = |name: &HeaderName| {
            if name == REQUEST_ID {
                id
            } else if name == shadow::SHADOW {
                shadow
            } else {
                None
            }
        };
        Observation::start(&key(), header, method, route)
    }

    #[test]
    fn a_sane_id_is_kept_and_routes_outside_the_contract_are_other() {
        let metrics = Metrics::new("legacy");
        let observation = start(Some(b"abc-123"), None, "GET", Some("/health"));
        assert_eq!(
            observation.finish(&metrics, 200),
            (REQUEST_ID, HeaderValue::from_static("abc-123"))
        );
        let observation = start(Some(b"has space"), None, "PROPFIND", Some("/nowhere"));
        let (_, minted) = observation.finish(&metrics, 404);
        assert_eq!(minted.len(), 32);
        let text = metrics.render();
        for series in [
            r#"http_requests_total{method="GET",route="/health",status="200",backend="legacy"} 1"#,
            r#"http_requests_total{method="other",route="other",status="404",backend="legacy"} 1"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    /// Everything logged at INFO and above while `observe` runs, as text.
    fn info_log_of(observe: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .expect("not poisoned")
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, observe);
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn probes_and_scrapes_are_not_logged_at_info_while_api_calls_are() {
        let metrics = Metrics::new("new");
        let log = info_log_of(|| {
            for route in ["/health", "/metrics"] {
                start(None, None, "GET", Some(route)).finish(&metrics, 200);
            }
        });
        assert_eq!(log, "", "probes logged at INFO");
        let log = info_log_of(|| {
            start(None, None, "POST", Some("/api/auth/login")).finish(&metrics, 401);
        });
        assert!(
            log.contains("answered") && log.contains("status=401"),
            "{log}"
        );
    }

    #[test]
    fn a_shadow_is_logged_as_one_but_not_counted() {
        let metrics = Metrics::new("new");
        let signed = key().sign("shadow-1");
        let log = info_log_of(|| {
            let shadowed = start(
                Some(b"shadow-1"),
                Some(signed.as_bytes()),
                "POST",
                Some("/api/auth/login"),
            );
            assert_eq!(
                shadowed.finish(&metrics, 401),
                (REQUEST_ID, HeaderValue::from_static("shadow-1"))
            );
        });
        assert!(log.contains("shadow=true"), "{log}");
        assert!(
            !metrics.render().contains("http_requests_total{"),
            "{}",
            metrics.render()
        );
        // The same header on another request id is not a shadow: counted, and not marked.
        let log = info_log_of(|| {
            start(
                Some(b"another"),
                Some(signed.as_bytes()),
                "POST",
                Some("/api/auth/login"),
            )
            .finish(&metrics, 401);
        });
        assert!(!log.contains("shadow"), "{log}");
        assert!(
            metrics
                .render()
                .contains(r#"http_requests_total{method="POST",route="/api/auth/login",status="401",backend="new"} 1"#),
            "{}",
            metrics.render()
        );
    }
}
