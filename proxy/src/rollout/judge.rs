//! The judge: one evaluation of the canary cohort (requests new served) against a baseline
//! cohort of legacy requests from an equally large bucket range over the same interval, in
//! the manner of Kayenta — per metric a one-sided significance test plus a tolerance, so a
//! tiny but significant difference does not fail a step, and too little data is
//! `Inconclusive`, never `Fail`.

use std::ops::Range;
use std::time::Duration;

use http::StatusCode;
use rand::Rng;
use serde::Serialize;

use super::stats::{self, Proportion, Reservoir};
use super::{CriticalReason, Evaluation, Outcome};

/// Buckets run from 0 to `TOTAL_BASIS_POINTS - 1` (as `routing::BUCKETS`).
const TOTAL_BASIS_POINTS: u32 = crate::routing::BUCKETS as u32;

/// Latencies kept per cohort per evaluation: enough for a p99 of ~20 points above it, and
/// bounded (16 KiB per cohort) however busy the interval.
pub const LATENCY_SAMPLE_CAPACITY: usize = 2_048;

/// Below this many canary requests even a 100 % error share is not called critical: a
/// handful of failures right after a step is too little to roll back on at once.
pub const CRITICAL_MIN_REQUESTS: u64 = 20;

/// The buckets whose legacy requests form the baseline when new holds `[0, w)`: the range
/// just above, `[w, min(2w, 10000))`, so both cohorts come from user ranges of the same
/// size and the same time window.
///
/// Above 50 % (`w > 5000`) there are not `w` legacy buckets left: the baseline is all of
/// legacy, `[w, 10000)`, and shrinks as the weight grows (empty at 100 %, where every
/// evaluation is therefore `Inconclusive`). The tests stay valid with unequal cohorts, but
/// the baseline reaches `min_requests` later; a schedule should judge mostly at or below
/// 50 % and treat the last step (100 %) as done, not as something to judge.
pub fn baseline_buckets(new_basis_points: u32) -> Range<u32> {
    let w = new_basis_points.min(TOTAL_BASIS_POINTS);
    w..(2 * w).min(TOTAL_BASIS_POINTS)
}

/// What one side served during one evaluation interval.
#[derive(Debug, Clone)]
pub struct Cohort {
    requests: u64,
    server_errors: u64,
    /// Milliseconds, a uniform sample of every request's latency.
    latencies_ms: Reservoir<f64>,
}

impl Default for Cohort {
    fn default() -> Self {
        Cohort::with_latency_capacity(LATENCY_SAMPLE_CAPACITY)
    }
}

impl Cohort {
    pub fn with_latency_capacity(capacity: usize) -> Self {
        Cohort {
            requests: 0,
            server_errors: 0,
            latencies_ms: Reservoir::new(capacity),
        }
    }

    /// Count one response: a 5xx is a server error; its latency goes into the sample.
    pub fn record<R: Rng + ?Sized>(&mut self, status: StatusCode, latency: Duration, rng: &mut R) {
        self.requests += 1;
        if status.is_server_error() {
            self.server_errors += 1;
        }
        self.latencies_ms
            .offer(latency.as_secs_f64() * 1_000.0, rng);
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn server_errors(&self) -> u64 {
        self.server_errors
    }

    /// The 5xx share; `None` before any request.
    pub fn error_rate(&self) -> Option<f64> {
        self.errors().share()
    }

    /// The sampled latencies in milliseconds, in no particular order.
    pub fn latency_sample_ms(&self) -> &[f64] {
        self.latencies_ms.items()
    }

    fn errors(&self) -> Proportion {
        Proportion {
            successes: self.server_errors,
            trials: self.requests,
        }
    }
}

/// How to judge; the config engineer maps `[rollout.analysis]` onto it.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    /// Per cohort per evaluation; fewer means `Inconclusive`.
    pub min_requests: u64,
    /// New's 5xx share may exceed the baseline's by at most this (absolute).
    pub error_rate_tolerance: f64,
    /// New's median and p99 latency may be at most this ratio of the baseline's.
    pub latency_tolerance: f64,
    /// E.g. 0.98: a metric fails only when the test rejects at `1 − confidence`.
    pub confidence: f64,
    /// At or above this canary 5xx share over `CRITICAL_MIN_REQUESTS`: roll back at once.
    pub critical_error_rate: f64,
}

impl Default for AnalysisSettings {
    /// The values issue #10 gives as the `[rollout.analysis]` defaults.
    fn default() -> Self {
        AnalysisSettings {
            min_requests: 500,
            error_rate_tolerance: 0.01,
            latency_tolerance: 1.10,
            confidence: 0.98,
            critical_error_rate: 0.05,
        }
    }
}

impl AnalysisSettings {
    fn significance_level(&self) -> f64 {
        1.0 - self.confidence
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ErrorRate,
    LatencyMedian,
    LatencyP99,
}

/// The verdict on one metric, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricVerdict {
    pub metric: Metric,
    pub outcome: Outcome,
    /// The canary's value: a share for the error rate, milliseconds for latencies (0 when
    /// the cohort is empty).
    pub canary: f64,
    pub baseline: f64,
    /// The one-sided test's p-value, when there was enough data to run it.
    pub p_value: Option<f64>,
    pub reason: String,
}

/// One evaluation: a verdict per metric and the overall outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub verdicts: Vec<MetricVerdict>,
    pub evaluation: Evaluation,
}

/// Judge the canary against the baseline for one interval.
///
/// `Pass` only if every metric passes, `Fail` if any fails, `Inconclusive` otherwise —
/// and every metric is `Inconclusive` while either cohort has fewer than `min_requests`.
/// A canary 5xx share at or above `critical_error_rate` over at least
/// `CRITICAL_MIN_REQUESTS` requests is critical (and a failure) whatever `min_requests`.
pub fn judge(canary: &Cohort, baseline: &Cohort, settings: &AnalysisSettings) -> Judgement {
    let critical = is_critical(canary, settings).then_some(CriticalReason::CriticalErrorRate);
    let enough_data =
        canary.requests >= settings.min_requests && baseline.requests >= settings.min_requests;
    let too_little = || {
        format!(
            "canary {} requests, baseline {}: fewer than min_requests {}",
            canary.requests, baseline.requests, settings.min_requests
        )
    };

    let error_rate = if critical.is_some() {
        let share = canary.error_rate().unwrap_or(0.0);
        MetricVerdict {
            metric: Metric::ErrorRate,
            outcome: Outcome::Fail,
            canary: share,
            baseline: baseline.error_rate().unwrap_or(0.0),
            p_value: None,
            reason: format!(
                "critical: canary 5xx share {share:.4} over {} requests is at or above {}",
                canary.requests, settings.critical_error_rate
            ),
        }
    } else if enough_data {
        judge_error_rate(canary, baseline, settings)
    } else {
        inconclusive(
            Metric::ErrorRate,
            canary.error_rate(),
            baseline.error_rate(),
            too_little(),
        )
    };

    let latencies = [(Metric::LatencyMedian, 0.5), (Metric::LatencyP99, 0.99)];
    let latency_test = enough_data
        .then(|| {
            stats::mann_whitney_u_greater(canary.latency_sample_ms(), baseline.latency_sample_ms())
        })
        .flatten();
    let latency_verdicts = latencies.map(|(metric, tau)| {
        let canary_value = stats::quantile(canary.latency_sample_ms(), tau);
        let baseline_value = stats::quantile(baseline.latency_sample_ms(), tau);
        match (latency_test, canary_value, baseline_value) {
            (Some(test), Some(canary_ms), Some(baseline_ms)) if enough_data => {
                judge_latency(metric, test.p_value, canary_ms, baseline_ms, settings)
            }
            _ if !enough_data => inconclusive(metric, canary_value, baseline_value, too_little()),
            _ => inconclusive(
                metric,
                canary_value,
                baseline_value,
                "no latency sample in one of the cohorts".to_owned(),
            ),
        }
    });

    let verdicts: Vec<MetricVerdict> = std::iter::once(error_rate)
        .chain(latency_verdicts)
        .collect();
    let outcome = if verdicts.iter().any(|v| v.outcome == Outcome::Fail) {
        Outcome::Fail
    } else if verdicts.iter().all(|v| v.outcome == Outcome::Pass) {
        Outcome::Pass
    } else {
        Outcome::Inconclusive
    };
    Judgement {
        verdicts,
        evaluation: Evaluation { outcome, critical },
    }
}

fn is_critical(canary: &Cohort, settings: &AnalysisSettings) -> bool {
    canary.requests >= CRITICAL_MIN_REQUESTS
        && canary
            .error_rate()
            .is_some_and(|share| share >= settings.critical_error_rate)
}

fn inconclusive(
    metric: Metric,
    canary: Option<f64>,
    baseline: Option<f64>,
    reason: String,
) -> MetricVerdict {
    MetricVerdict {
        metric,
        outcome: Outcome::Inconclusive,
        canary: canary.unwrap_or(0.0),
        baseline: baseline.unwrap_or(0.0),
        p_value: None,
        reason,
    }
}

/// Fails only if new's 5xx share is significantly greater than the baseline's plus the
/// tolerance: the tolerance is inside the test, so a small real difference never fails.
fn judge_error_rate(
    canary: &Cohort,
    baseline: &Cohort,
    settings: &AnalysisSettings,
) -> MetricVerdict {
    let canary_share = canary.error_rate().unwrap_or(0.0);
    let baseline_share = baseline.error_rate().unwrap_or(0.0);
    let Some(test) = stats::two_proportion_z_test(
        canary.errors(),
        baseline.errors(),
        settings.error_rate_tolerance,
    ) else {
        return inconclusive(
            Metric::ErrorRate,
            Some(canary_share),
            Some(baseline_share),
            "no requests in one of the cohorts".to_owned(),
        );
    };
    let significant = test.p_value < settings.significance_level();
    let (outcome, verdict) = if significant {
        (Outcome::Fail, "significantly above")
    } else {
        (Outcome::Pass, "not significantly above")
    };
    MetricVerdict {
        metric: Metric::ErrorRate,
        outcome,
        canary: canary_share,
        baseline: baseline_share,
        p_value: Some(test.p_value),
        reason: format!(
            "canary 5xx share {canary_share:.4} ({}/{}) is {verdict} baseline {baseline_share:.4} \
             ({}/{}) + tolerance {} (p = {:.4}, z = {:.2}, confidence {})",
            canary.server_errors,
            canary.requests,
            baseline.server_errors,
            baseline.requests,
            settings.error_rate_tolerance,
            test.p_value,
            test.z,
            settings.confidence
        ),
    }
}

/// Fails only if new's latencies are significantly greater (Mann–Whitney) AND the ratio of
/// this quantile exceeds the tolerance: significance alone would fail a step over a
/// difference too small to matter once samples are large.
fn judge_latency(
    metric: Metric,
    p_value: f64,
    canary_ms: f64,
    baseline_ms: f64,
    settings: &AnalysisSettings,
) -> MetricVerdict {
    let ratio = if baseline_ms > 0.0 {
        canary_ms / baseline_ms
    } else if canary_ms > 0.0 {
        f64::INFINITY
    } else {
        1.0
    };
    let significant = p_value < settings.significance_level();
    let beyond_tolerance = ratio > settings.latency_tolerance;
    let outcome = if significant && beyond_tolerance {
        Outcome::Fail
    } else {
        Outcome::Pass
    };
    let name = match metric {
        Metric::LatencyMedian => "median",
        Metric::LatencyP99 => "p99",
        Metric::ErrorRate => "error rate",
    };
    let significance = if significant {
        "significantly greater"
    } else {
        "not significantly greater"
    };
    let tolerance = if beyond_tolerance { "above" } else { "within" };
    MetricVerdict {
        metric,
        outcome,
        canary: canary_ms,
        baseline: baseline_ms,
        p_value: Some(p_value),
        reason: format!(
            "canary {name} {canary_ms:.2} ms vs baseline {baseline_ms:.2} ms: ratio {ratio:.3} \
             {tolerance} tolerance {}; latencies {significance} (Mann–Whitney p = {p_value:.4}, \
             confidence {})",
            settings.latency_tolerance, settings.confidence
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Synthetic traffic for one cohort: log-normal latencies (median `median_ms`, log
    /// spread `sigma`) and a 5xx share, drawn from `rng`.
    struct Traffic {
        error_rate: f64,
        median_ms: f64,
        sigma: f64,
    }

    const LEGACY: Traffic = Traffic {
        error_rate: 0.005,
        median_ms: 40.0,
        sigma: 0.5,
    };

    impl Traffic {
        fn cohort(&self, requests: u64, rng: &mut StdRng) -> Cohort {
            let mut cohort = Cohort::default();
            for _ in 0..requests {
                let status = if rng.random_bool(self.error_rate) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                let latency_ms = self.median_ms * (self.sigma * standard_normal(rng)).exp();
                cohort.record(status, Duration::from_secs_f64(latency_ms / 1_000.0), rng);
            }
            cohort
        }
    }

    /// Box–Muller: rand 0.9 without rand_distr has no normal distribution.
    fn standard_normal(rng: &mut StdRng) -> f64 {
        let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1], so ln is finite
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn verdict(judgement: &Judgement, metric: Metric) -> &MetricVerdict {
        judgement
            .verdicts
            .iter()
            .find(|v| v.metric == metric)
            .unwrap()
    }

    fn slower(factor: f64) -> Traffic {
        Traffic {
            median_ms: LEGACY.median_ms * factor,
            ..LEGACY
        }
    }

    #[test]
    fn identical_backends_fail_at_most_two_percent_of_evaluations() {
        let settings = AnalysisSettings::default();
        let mut rng = StdRng::seed_from_u64(1);
        let failures = (0..1_000)
            .filter(|_| {
                let canary = LEGACY.cohort(1_000, &mut rng);
                let baseline = LEGACY.cohort(1_000, &mut rng);
                judge(&canary, &baseline, &settings).evaluation.outcome == Outcome::Fail
            })
            .count();
        assert!(failures <= 20, "{failures} of 1000 evaluations failed");
    }

    #[test]
    fn a_canary_at_three_percent_5xx_against_half_a_percent_fails() {
        let settings = AnalysisSettings::default();
        let mut rng = StdRng::seed_from_u64(2);
        let canary = Traffic {
            error_rate: 0.03,
            ..LEGACY
        }
        .cohort(2_000, &mut rng);
        let baseline = LEGACY.cohort(2_000, &mut rng);
        let judgement = judge(&canary, &baseline, &settings);
        assert_eq!(
            judgement.evaluation.outcome,
            Outcome::Fail,
            "{judgement:#?}"
        );
        assert_eq!(judgement.evaluation.critical, None);
        assert_eq!(
            verdict(&judgement, Metric::ErrorRate).outcome,
            Outcome::Fail
        );
    }

    #[test]
    fn thirty_percent_slower_fails_and_five_percent_slower_passes() {
        let settings = AnalysisSettings::default();
        let mut rng = StdRng::seed_from_u64(3);
        let baseline = LEGACY.cohort(5_000, &mut rng);

        let much_slower = judge(&slower(1.30).cohort(5_000, &mut rng), &baseline, &settings);
        assert_eq!(
            much_slower.evaluation.outcome,
            Outcome::Fail,
            "{much_slower:#?}"
        );
        assert_eq!(
            verdict(&much_slower, Metric::LatencyMedian).outcome,
            Outcome::Fail
        );

        let a_little_slower = judge(&slower(1.05).cohort(5_000, &mut rng), &baseline, &settings);
        assert_eq!(
            a_little_slower.evaluation.outcome,
            Outcome::Pass,
            "{a_little_slower:#?}"
        );
    }

    #[test]
    fn fewer_than_min_requests_is_inconclusive() {
        let settings = AnalysisSettings::default();
        let mut rng = StdRng::seed_from_u64(4);
        for (canary_requests, baseline_requests) in [(499, 5_000), (5_000, 499), (0, 0)] {
            let canary = slower(2.0).cohort(canary_requests, &mut rng);
            let baseline = LEGACY.cohort(baseline_requests, &mut rng);
            let judgement = judge(&canary, &baseline, &settings);
            assert_eq!(
                judgement.evaluation.outcome,
                Outcome::Inconclusive,
                "{judgement:#?}"
            );
            assert_eq!(judgement.evaluation.critical, None);
            assert!(
                judgement
                    .verdicts
                    .iter()
                    .all(|v| v.outcome == Outcome::Inconclusive && v.p_value.is_none())
            );
        }
    }

    #[test]
    fn all_errors_over_twenty_requests_is_critical_below_min_requests() {
        let settings = AnalysisSettings::default();
        let mut rng = StdRng::seed_from_u64(5);
        let failing = Traffic {
            error_rate: 1.0,
            ..LEGACY
        };
        let judgement = judge(&failing.cohort(20, &mut rng), &Cohort::default(), &settings);
        assert_eq!(
            judgement.evaluation.critical,
            Some(CriticalReason::CriticalErrorRate)
        );
        assert_eq!(judgement.evaluation.outcome, Outcome::Fail);
        assert_eq!(verdict(&judgement, Metric::ErrorRate).canary, 1.0);

        // Nineteen requests are too few to call it.
        let judgement = judge(&failing.cohort(19, &mut rng), &Cohort::default(), &settings);
        assert_eq!(judgement.evaluation.critical, None);
        assert_eq!(judgement.evaluation.outcome, Outcome::Inconclusive);
    }

    #[test]
    fn healthy_identical_cohorts_pass_every_metric_with_their_numbers() {
        let settings = AnalysisSettings::default();
        let mut rng = StdRng::seed_from_u64(6);
        let judgement = judge(
            &LEGACY.cohort(2_000, &mut rng),
            &LEGACY.cohort(2_000, &mut rng),
            &settings,
        );
        assert_eq!(
            judgement.evaluation,
            Evaluation {
                outcome: Outcome::Pass,
                critical: None
            }
        );
        let metrics: Vec<Metric> = judgement.verdicts.iter().map(|v| v.metric).collect();
        assert_eq!(
            metrics,
            [Metric::ErrorRate, Metric::LatencyMedian, Metric::LatencyP99]
        );
        for v in &judgement.verdicts {
            assert!(
                v.p_value.is_some() && v.baseline > 0.0 && !v.reason.is_empty(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn the_baseline_is_the_equally_wide_range_above_the_canary() {
        for (new_basis_points, expected) in [
            (0, 0..0),
            (100, 100..200),
            (2_500, 2_500..5_000),
            (5_000, 5_000..10_000),
            // Above half, the baseline is the rest of legacy and shrinks.
            (7_500, 7_500..10_000),
            (10_000, 10_000..10_000),
            (20_000, 10_000..10_000),
        ] {
            assert_eq!(
                baseline_buckets(new_basis_points),
                expected,
                "at {new_basis_points}"
            );
        }
    }

    #[test]
    fn the_cohort_sample_stays_bounded() {
        let mut rng = StdRng::seed_from_u64(7);
        let cohort = LEGACY.cohort(10_000, &mut rng);
        assert_eq!(cohort.requests(), 10_000);
        assert_eq!(cohort.latency_sample_ms().len(), LATENCY_SAMPLE_CAPACITY);
    }
}
