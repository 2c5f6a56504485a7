//! The rollout's Prometheus series, every one created at start (at 0) so that dashboards and
//! alerts see them before the first rollout, and a `rate()` starts from a known zero.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::Outcome;
use super::controller::{Phase, RollbackReason};
use super::judge::Metric;
use super::report::Report;

/// The `metric` label of the evaluation as a whole.
const OVERALL: &str = "overall";
const OUTCOMES: [Outcome; 3] = [Outcome::Pass, Outcome::Fail, Outcome::Inconclusive];
const COHORTS: [&str; 2] = ["canary", "baseline"];

pub struct RolloutMetrics {
    phase: IntGaugeVec,
    step: IntGauge,
    verdicts: IntCounterVec,
    rollbacks: IntCounterVec,
    cohort_requests: IntGaugeVec,
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
        for cohort in COHORTS {
            cohort_requests.with_label_values(&[cohort]);
        }
        Ok(Self {
            phase,
            step,
            verdicts,
            rollbacks,
            cohort_requests,
        })
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
        for (cohort, size) in COHORTS.iter().zip(sizes) {
            self.cohort_requests
                .with_label_values(&[cohort])
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }
}
