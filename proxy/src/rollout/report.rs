//! One interval's judgement as the operator sees it: the judge run on the overall cohorts and
//! on each route's, combined into the `Evaluation` the controller acts on, with every verdict
//! and its numbers kept for `GET /admin/rollout`, the metrics and the state file.
//!
//! The evaluation fails if any verdict, overall or per route, fails; it passes only if every
//! overall metric passes (a route with too little traffic of its own is inconclusive and
//! neither blocks nor fails a step). Testing several scopes does not multiply false alarms
//! the way it would against a fixed threshold: each test asks whether new is significantly
//! worse than the baseline *plus its tolerance*, which identical backends almost never are.
//! Only the overall canary decides `critical`, or the health checks finding new down.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::cohorts::IntervalSample;
use super::judge::{self, AnalysisSettings, MetricVerdict};
use super::{CriticalReason, Evaluation, Outcome};

/// The `scope` of the verdicts on all requests together.
pub const OVERALL: &str = "overall";

/// A verdict on one metric of one scope: `overall` or a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopedVerdict {
    pub scope: String,
    #[serde(flatten)]
    pub verdict: MetricVerdict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    pub evaluation: Evaluation,
    pub canary_requests: u64,
    pub baseline_requests: u64,
    pub verdicts: Vec<ScopedVerdict>,
}

/// Judges one interval's sample; `new_up` is what the health checks last found.
pub fn evaluate(
    sample: &IntervalSample,
    settings: &AnalysisSettings,
    new_up: bool,
    at: SystemTime,
) -> Report {
    let overall = judge::judge(sample.canary(), sample.baseline(), settings);
    let scoped = |scope: &str, verdicts: Vec<MetricVerdict>| {
        let scope = scope.to_owned();
        verdicts.into_iter().map(move |verdict| ScopedVerdict {
            scope: scope.clone(),
            verdict,
        })
    };
    let mut verdicts: Vec<ScopedVerdict> = scoped(OVERALL, overall.verdicts).collect();
    for (route, canary, baseline) in sample.routes() {
        let judgement = judge::judge(canary, baseline, settings);
        verdicts.extend(scoped(route.label(), judgement.verdicts));
    }
    let outcome = if verdicts.iter().any(|v| v.verdict.outcome == Outcome::Fail) {
        Outcome::Fail
    } else {
        overall.evaluation.outcome
    };
    let critical = if new_up {
        overall.evaluation.critical
    } else {
        Some(CriticalReason::BackendDown)
    };
    Report {
        at,
        evaluation: Evaluation { outcome, critical },
        canary_requests: sample.canary().requests(),
        baseline_requests: sample.baseline().requests(),
        verdicts,
    }
}

/// An interval whose cohorts could not be read (`reason` says why): every overall metric
/// inconclusive, so nothing is promoted; only the health checks finding new down can still
/// roll back.
pub fn unavailable(reason: &str, new_up: bool, at: SystemTime) -> Report {
    let verdicts = [
        judge::Metric::ErrorRate,
        judge::Metric::LatencyMedian,
        judge::Metric::LatencyP99,
    ]
    .map(|metric| ScopedVerdict {
        scope: OVERALL.to_owned(),
        verdict: MetricVerdict {
            metric,
            outcome: Outcome::Inconclusive,
            canary: 0.0,
            baseline: 0.0,
            p_value: None,
            reason: reason.to_owned(),
        },
    });
    Report {
        at,
        evaluation: Evaluation {
            outcome: Outcome::Inconclusive,
            critical: (!new_up).then_some(CriticalReason::BackendDown),
        },
        canary_requests: 0,
        baseline_requests: 0,
        verdicts: verdicts.into(),
    }
}

/// What shadow traffic found over one interval: comparisons of legacy against new that were
/// classified (matched, mismatched or noise-only) and how many of them really mismatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShadowSample {
    pub classified: u64,
    pub mismatched: u64,
}

/// Adds shadow traffic's verdict to `report`: Fail when new's real mismatch rate is above
/// `max_rate` over at least `min_requests` comparisons, else Pass, or Inconclusive with
/// fewer. In a shadow step (a dark launch, no user on new) it is the evaluation's one
/// metric; otherwise it can fail an evaluation but, inconclusive, never blocks one.
pub fn add_shadow(
    report: &mut Report,
    shadow: ShadowSample,
    settings: &AnalysisSettings,
    max_rate: f64,
    shadow_step: bool,
) {
    let rate = (shadow.classified > 0).then(|| shadow.mismatched as f64 / shadow.classified as f64);
    let (outcome, reason) = match rate {
        Some(rate) if shadow.classified >= settings.min_requests => {
            let verdict = if rate > max_rate { "above" } else { "within" };
            let outcome = if rate > max_rate {
                Outcome::Fail
            } else {
                Outcome::Pass
            };
            let reason = format!(
                "shadow mismatch rate {rate:.4} ({} of {} comparisons) {verdict} the bound {max_rate}",
                shadow.mismatched, shadow.classified
            );
            (outcome, reason)
        }
        _ => (
            Outcome::Inconclusive,
            format!(
                "{} shadow comparisons: fewer than min_requests {}",
                shadow.classified, settings.min_requests
            ),
        ),
    };
    if !shadow_step && shadow.classified == 0 {
        // No shadow traffic at all: nothing to say, and nothing to show.
        return;
    }
    report.verdicts.push(ScopedVerdict {
        scope: OVERALL.to_owned(),
        verdict: MetricVerdict {
            metric: judge::Metric::ShadowMismatch,
            outcome,
            canary: rate.unwrap_or(0.0),
            baseline: max_rate,
            p_value: None,
            reason,
        },
    });
    let evaluation = &mut report.evaluation;
    evaluation.outcome = if shadow_step || outcome == Outcome::Fail {
        outcome
    } else {
        evaluation.outcome
    };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;

    use super::*;
    use crate::metrics::RouteLabel;
    use crate::rollout::cohorts::CohortKind;

    fn settings() -> AnalysisSettings {
        AnalysisSettings {
            min_requests: 50,
            ..AnalysisSettings::default()
        }
    }

    /// `requests` per cohort on `route`, new failing `canary_errors` of them.
    fn sample(route: &str, requests: u32, canary_errors: u32) -> IntervalSample {
        add(IntervalSample::default(), route, requests, canary_errors)
    }

    fn add(
        mut into: IntervalSample,
        from: &str,
        requests: u32,
        canary_errors: u32,
    ) -> IntervalSample {
        let route = RouteLabel::of(from);
        for i in 0..requests {
            let latency = Duration::from_micros(1_000 + u64::from(i % 97) * 10);
            let status = if i < canary_errors {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            into.record(CohortKind::Canary, route, status, latency);
            into.record(CohortKind::Baseline, route, StatusCode::OK, latency);
        }
        into
    }

    #[test]
    fn alike_cohorts_pass_with_a_verdict_per_metric_overall_and_per_route() {
        let report = evaluate(
            &sample("/health", 400, 0),
            &settings(),
            true,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(report.evaluation.outcome, Outcome::Pass, "{report:#?}");
        assert_eq!(report.evaluation.critical, None);
        assert_eq!(
            (report.canary_requests, report.baseline_requests),
            (400, 400)
        );
        let scopes: Vec<&str> = report.verdicts.iter().map(|v| v.scope.as_str()).collect();
        assert_eq!(
            scopes,
            [
                "overall", "overall", "overall", "/health", "/health", "/health"
            ]
        );
    }

    #[test]
    fn a_route_that_fails_fails_the_evaluation_though_overall_passes() {
        // Verify: 1,000 requests, no errors; generate: 200, 30 of them failing on new only.
        // Overall the canary's share is 2.5 % (under the critical 5 %), generate's is 15 %.
        let mixed = add(
            sample("/api/auth/verify", 1_000, 0),
            "/api/ai/generate",
            200,
            30,
        );
        let report = evaluate(&mixed, &settings(), true, SystemTime::UNIX_EPOCH);
        assert_eq!(report.evaluation.outcome, Outcome::Fail, "{report:#?}");
        assert_eq!(report.evaluation.critical, None);
        let failed: Vec<(&str, judge::Metric)> = (report.verdicts.iter())
            .filter(|v| v.verdict.outcome == Outcome::Fail)
            .map(|v| (v.scope.as_str(), v.verdict.metric))
            .collect();
        assert!(
            failed.contains(&("/api/ai/generate", judge::Metric::ErrorRate)),
            "{failed:?}"
        );
    }

    #[test]
    fn a_route_with_too_little_traffic_neither_blocks_nor_fails() {
        let mixed = add(
            sample("/api/auth/verify", 400, 0),
            "/api/ai/generate",
            10,
            0,
        );
        let report = evaluate(&mixed, &settings(), true, SystemTime::UNIX_EPOCH);
        assert_eq!(report.evaluation.outcome, Outcome::Pass, "{report:#?}");
        assert!(
            report.verdicts.iter().any(
                |v| v.scope == "/api/ai/generate" && v.verdict.outcome == Outcome::Inconclusive
            )
        );
    }

    #[test]
    fn new_down_is_critical_whatever_the_sample() {
        let report = evaluate(
            &IntervalSample::default(),
            &settings(),
            false,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            report.evaluation.critical,
            Some(CriticalReason::BackendDown)
        );
        assert_eq!(report.evaluation.outcome, Outcome::Inconclusive);
    }

    #[test]
    fn an_interval_that_could_not_be_read_is_inconclusive_and_says_why() {
        let report = unavailable("cannot reach Prometheus", true, SystemTime::UNIX_EPOCH);
        assert_eq!(report.evaluation.outcome, Outcome::Inconclusive);
        assert_eq!(report.evaluation.critical, None);
        assert_eq!(report.verdicts.len(), 3);
        assert!(
            report
                .verdicts
                .iter()
                .all(|v| v.verdict.reason.contains("Prometheus"))
        );
        let down = unavailable("cannot reach Prometheus", false, SystemTime::UNIX_EPOCH);
        assert_eq!(down.evaluation.critical, Some(CriticalReason::BackendDown));
    }

    fn shadow(classified: u64, mismatched: u64) -> ShadowSample {
        ShadowSample {
            classified,
            mismatched,
        }
    }

    #[test]
    fn in_a_shadow_step_the_mismatch_rate_alone_decides() {
        let empty = || {
            evaluate(
                &IntervalSample::default(),
                &settings(),
                true,
                SystemTime::UNIX_EPOCH,
            )
        };
        let cases = [
            (shadow(100, 0), Outcome::Pass),
            (shadow(100, 1), Outcome::Pass),
            (shadow(100, 2), Outcome::Fail),
            (shadow(10, 10), Outcome::Inconclusive),
            (shadow(0, 0), Outcome::Inconclusive),
        ];
        for (sample, expected) in cases {
            let mut report = empty();
            add_shadow(&mut report, sample, &settings(), 0.01, true);
            assert_eq!(report.evaluation.outcome, expected, "{sample:?}");
            let verdict = report.verdicts.last().unwrap();
            assert_eq!(verdict.verdict.metric, judge::Metric::ShadowMismatch);
        }
    }

    #[test]
    fn in_a_user_step_shadow_mismatches_fail_but_missing_shadows_never_block() {
        let passing = || {
            evaluate(
                &sample("/health", 400, 0),
                &settings(),
                true,
                SystemTime::UNIX_EPOCH,
            )
        };
        let mut failed = passing();
        add_shadow(&mut failed, shadow(100, 5), &settings(), 0.01, false);
        assert_eq!(failed.evaluation.outcome, Outcome::Fail);
        let mut few = passing();
        add_shadow(&mut few, shadow(10, 5), &settings(), 0.01, false);
        assert_eq!(few.evaluation.outcome, Outcome::Pass);
        let mut none = passing();
        let before = none.verdicts.len();
        add_shadow(&mut none, shadow(0, 0), &settings(), 0.01, false);
        assert_eq!(
            (none.evaluation.outcome, none.verdicts.len()),
            (Outcome::Pass, before)
        );
    }

    #[test]
    fn a_report_reads_back_from_its_json() {
        let report = evaluate(
            &sample("/health", 100, 0),
            &settings(),
            true,
            SystemTime::UNIX_EPOCH,
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(
            json.contains(r#""scope":"overall","metric":"error_rate""#),
            "{json}"
        );
        assert!(json.contains(r#""canaryRequests":100"#), "{json}");
        let back: Report = serde_json::from_str(&json).unwrap();
        // Floats come back within a rounding of what was written.
        assert_eq!(back.evaluation, report.evaluation);
        assert_eq!(back.verdicts.len(), report.verdicts.len());
        for (read, written) in back.verdicts.iter().zip(&report.verdicts) {
            assert_eq!(
                (&read.scope, &read.verdict.reason),
                (&written.scope, &written.verdict.reason)
            );
            assert!((read.verdict.canary - written.verdict.canary).abs() < 1e-9);
        }
    }
}
