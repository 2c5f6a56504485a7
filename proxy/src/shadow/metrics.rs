//! The shadow's Prometheus series. `route` is one of the four routes a shadow can be sent on;
//! `field` a collapsed path (`$.user.email`, array indices as `[*]`), at most a fixed number
//! per route (`stats`), so both labels stay bounded.

use prometheus::{IntCounterVec, Opts, Registry};

/// How a shadowed request ended.
pub const OUTCOMES: [&str; 9] = [
    "matched",
    "mismatched",
    "noise_only",
    "unclassified",
    "skipped",
    "dropped",
    "timed_out",
    "failed",
    "incomplete",
];

const ROUTES: [&str; 4] = {
    use common::routes::*;
    [HEALTH, VERIFY, LOGIN, GENERATE]
};

pub struct ShadowMetrics {
    requests: IntCounterVec,
    field_mismatches: IntCounterVec,
}

impl ShadowMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "proxy_shadow_requests_total",
                "Shadowed requests by how they ended: compared (matched, mismatched, \
                 noise_only, unclassified while the noise is learnt) or not (skipped, dropped, timed_out, failed, incomplete)",
            ),
            &["route", "outcome"],
        )?;
        let field_mismatches = IntCounterVec::new(
            Opts::new(
                "proxy_shadow_field_mismatches_total",
                "Comparisons of legacy against new in which this field differed beyond its noise",
            ),
            &["route", "field"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(field_mismatches.clone()))?;
        for route in ROUTES {
            for outcome in OUTCOMES {
                requests.with_label_values(&[route, outcome]);
            }
        }
        Ok(Self {
            requests,
            field_mismatches,
        })
    }

    pub fn ended(&self, route: &str, outcome: &str) {
        self.requests.with_label_values(&[route, outcome]).inc();
    }

    pub fn field_mismatch(&self, route: &str, field: &str) {
        self.field_mismatches
            .with_label_values(&[route, field])
            .inc();
    }
}
