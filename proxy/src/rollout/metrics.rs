//! The rollout's Prometheus series, every one created at start (at 0) so that dashboards and
//! alerts see them before the first rollout, and a `rate()` starts from a known zero.

use std::time::Duration;

use http::StatusCode;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::Outcome;
use super::cohorts::CohortKind;
use super::controller::{Phase, RollbackReason};
use super::judge::Metric;
use super::report::Report;
use super::source::SourceErrorKind;
use crate::metrics::RouteLabel;

/// Every cohort answer's latency, by `cohort` and `route`: its `_count` is the cohort's
/// requests. What the judge over the fleet reads from Prometheus (`source::prometheus`).
pub const COHORT_LATENCY: &str = "proxy_rollout_cohort_latency_seconds";
/// The cohort answers that count as server errors (5xx, or failed by their side and answered
/// by the other), by `cohort` and `route`.
pub const COHORT_SERVER_ERRORS: &str = "proxy_rollout_cohort_server_errors_total";

/// The cohort histogram's upper bounds: 0.25 ms growing by √2 to about 23 s, at three
/// significant digits. Finer than the latency histogram's, because the judge rebuilds a
/// latency sample from these buckets, and a 10 % shift must still move mass across them.
pub fn cohort_latency_buckets() -> Vec<f64> {
    (0..34)
        .map(|n| {
            let bound = 0.000_25 * std::f64::consts::SQRT_2.powi(n);
            let scale = 10f64.powi(2 - bound.log10().floor() as i32);
            (bound * scale).round() / scale
        })
        .collect()
}

/// The cohort series of every cohort and route, created at 0 (so an `increase` over a window
/// counts a series' first requests) and resolved once, so the request path never hashes a
/// label.
#[derive(Clone)]
pub struct CohortSeries {
    /// [cohort][route].
    latency: Vec<Histogram>,
    server_errors: Vec<IntCounter>,
}

impl CohortSeries {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                COHORT_LATENCY,
                "Latency of the answers in each of the rollout judge's cohorts (canary: new's \
                 buckets; baseline: as many legacy buckets just above), by route",
            )
            .buckets(cohort_latency_buckets()),
            &["cohort", "route"],
        )?;
        let server_errors = IntCounterVec::new(
            Opts::new(
                COHORT_SERVER_ERRORS,
                "Answers in each of the rollout judge's cohorts that count as server errors, \
                 by route",
            ),
            &["cohort", "route"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(server_errors.clone()))?;
        let mut series = Self {
            latency: Vec::new(),
            server_errors: Vec::new(),
        };
        for kind in CohortKind::ALL {
            for route in RouteLabel::all() {
                let labels = [kind.label(), route.label()];
                series.latency.push(latency.with_label_values(&labels));
                series
                    .server_errors
                    .push(server_errors.with_label_values(&labels));
            }
        }
        Ok(series)
    }

    pub fn record(
        &self,
        kind: CohortKind,
        route: RouteLabel,
        status: StatusCode,
        latency: Duration,
    ) {
        let at = kind.index() * RouteLabel::COUNT + route.index();
        if let Some(histogram) = self.latency.get(at) {
            histogram.observe(latency.as_secs_f64());
        }
        if status.is_server_error()
            && let Some(counter) = self.server_errors.get(at)
        {
            counter.inc();
        }
    }
}

/// The `metric` label of the evaluation as a whole.
const OVERALL: &str = "overall";
const OUTCOMES: [Outcome; 3] = [Outcome::Pass, Outcome::Fail, Outcome::Inconclusive];

pub struct RolloutMetrics {
    phase: IntGaugeVec,
    step: IntGauge,
    verdicts: IntCounterVec,
    rollbacks: IntCounterVec,
    cohort_requests: IntGaugeVec,
    source_errors: IntCounterVec,
    /// What the request path records each cohort answer into.
    pub cohorts: CohortSeries,
}

impl RolloutMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let phase = IntGaugeVec::new(
            Opts::new(
                "proxy_rollout_phase",
                "1 for the rollout's current phase, else 0",
            ),
            &["phase"],
        )?;
        let step = IntGauge::new(
            "proxy_rollout_step",
            "The index of the rollout step in force or awaiting approval",
        )?;
        let verdicts = IntCounterVec::new(
            Opts::new(
                "proxy_rollout_verdicts_total",
                "The judge's verdicts on new against legacy, per metric (overall scope) and for \
                 the evaluation as a whole (metric=\"overall\")",
            ),
            &["metric", "verdict"],
        )?;
        let rollbacks = IntCounterVec::new(
            Opts::new(
                "proxy_rollout_rollbacks_total",
                "Rollbacks to 0 %, by reason",
            ),
            &["reason"],
        )?;
        let cohort_requests = IntGaugeVec::new(
            Opts::new(
                "proxy_rollout_cohort_requests",
                "Requests in each cohort of the last evaluation",
            ),
            &["cohort"],
        )?;
        registry.register(Box::new(phase.clone()))?;
        registry.register(Box::new(step.clone()))?;
        registry.register(Box::new(verdicts.clone()))?;
        registry.register(Box::new(rollbacks.clone()))?;
        registry.register(Box::new(cohort_requests.clone()))?;
        let source_errors = IntCounterVec::new(
            Opts::new(
                "proxy_rollout_source_errors_total",
                "Evaluations left inconclusive because the cohorts could not be read from \
                 rollout.analysis.source, by kind of failure",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(source_errors.clone()))?;
        for kind in SourceErrorKind::ALL {
            source_errors.with_label_values(&[kind.as_str()]);
        }
        let cohorts = CohortSeries::new(registry)?;
        for p in Phase::ALL {
            phase
                .with_label_values(&[p.as_str()])
                .set(i64::from(p == Phase::Idle));
        }
        let metrics = [
            Metric::ErrorRate,
            Metric::LatencyMedian,
            Metric::LatencyP99,
            Metric::ShadowMismatch,
        ];
        for metric in metrics.iter().map(|m| m.as_str()).chain([OVERALL]) {
            for outcome in OUTCOMES {
                verdicts.with_label_values(&[metric, outcome.as_str()]);
            }
        }
        for reason in RollbackReason::ALL {
            rollbacks.with_label_values(&[reason.as_str()]);
        }
        for kind in CohortKind::ALL {
            cohort_requests.with_label_values(&[kind.label()]);
        }
        Ok(Self {
            phase,
            step,
            verdicts,
            rollbacks,
            cohort_requests,
            source_errors,
            cohorts,
        })
    }

    pub fn source_failed(&self, kind: SourceErrorKind) {
        self.source_errors.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn progress(&self, phase: Phase, step: usize) {
        for p in Phase::ALL {
            self.phase
                .with_label_values(&[p.as_str()])
                .set(i64::from(p == phase));
        }
        self.step.set(i64::try_from(step).unwrap_or(i64::MAX));
    }

    pub fn rolled_back(&self, reason: RollbackReason) {
        self.rollbacks.with_label_values(&[reason.as_str()]).inc();
    }

    /// Counts the overall verdicts and the evaluation's outcome, and the cohorts' sizes.
    pub fn evaluated(&self, report: &Report) {
        let overall = (report.verdicts.iter()).filter(|v| v.scope == super::report::OVERALL);
        for scoped in overall {
            let verdict = &scoped.verdict;
            self.verdicts
                .with_label_values(&[verdict.metric.as_str(), verdict.outcome.as_str()])
                .inc();
        }
        self.verdicts
            .with_label_values(&[OVERALL, report.evaluation.outcome.as_str()])
            .inc();
        let sizes = [report.canary_requests, report.baseline_requests];
        for (kind, size) in CohortKind::ALL.into_iter().zip(sizes) {
            self.cohort_requests
                .with_label_values(&[kind.label()])
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }
}
