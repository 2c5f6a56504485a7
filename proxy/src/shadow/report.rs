//! The shadow's counts as `GET /admin/shadow` shows them (camelCase JSON): the thresholds,
//! the counters overall and per route with their mismatch rate, and per field its counts,
//! rates, verdict (with the counts as they are now) and recent redacted samples; fields that
//! matter first (mismatch, pending, noise), `other` last. A field is listed once it has
//! differed in some comparison, so `match` is a verdict the report does not show.

use serde::Serialize;

use super::field::FieldPath;
use super::noise::{self, Verdict};
use super::stats::{Outcomes, RouteStats, Sample, Stats};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub thresholds: ThresholdsReport,
    pub overall: Totals,
    pub routes: Vec<RouteReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdsReport {
    pub relative: f64,
    pub absolute: f64,
    pub min_noise_comparisons: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// `mismatched / (matched + mismatched + noiseOnly)`; `null` before any.
    pub mismatch_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteReport {
    pub route: &'static str,
    #[serde(flatten)]
    pub totals: Totals,
    /// Too little noise measured yet: comparisons are counted `unclassified`.
    pub warming_up: bool,
    pub fields: Vec<FieldReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldReport {
    pub field: String,
    pub cross_compared: u64,
    pub cross_differed: u64,
    pub cross_rate: Option<f64>,
    pub noise_compared: u64,
    pub noise_differed: u64,
    pub noise_rate: Option<f64>,
    pub verdict: Verdict,
    /// The most recent cross-version diffs, oldest first.
    pub samples: Vec<Sample>,
}

impl Stats {
    pub fn report(&self) -> Report {
        let routes = self
            .routes
            .iter()
            .map(|(route, stats)| RouteReport {
                route,
                totals: totals(stats.outcomes),
                warming_up: stats.warming_up(&self.thresholds),
                fields: self.fields(stats),
            })
            .collect();
        Report {
            thresholds: ThresholdsReport {
                relative: self.thresholds.relative,
                absolute: self.thresholds.absolute,
                min_noise_comparisons: self.thresholds.min_noise_comparisons,
            },
            overall: totals(self.counts(None).unwrap_or_default()),
            routes,
        }
    }

    fn fields(&self, route: &RouteStats) -> Vec<FieldReport> {
        let other = FieldPath::new(FieldPath::OTHER);
        let mut fields: Vec<FieldReport> = route
            .fields
            .iter()
            .chain(
                (route.other.cross_differed + route.other.noise_differed > 0)
                    .then_some((&other, &route.other)),
            )
            .map(|(path, stats)| {
                let counts = route.counts(path, stats);
                FieldReport {
                    field: path.to_string(),
                    cross_compared: counts.cross_compared,
                    cross_differed: counts.cross_differed,
                    cross_rate: counts.cross_rate(),
                    noise_compared: counts.noise_compared,
                    noise_differed: counts.noise_differed,
                    noise_rate: counts.noise_rate(),
                    verdict: noise::classify(counts, &self.thresholds),
                    samples: stats.samples.iter().cloned().collect(),
                }
            })
            .collect();
        let rank = |f: &FieldReport| {
            let verdict = match f.verdict {
                Verdict::Mismatch => 0,
                Verdict::Pending => 1,
                Verdict::Noise => 2,
                Verdict::Match => 3,
            };
            (f.field == FieldPath::OTHER, verdict)
        };
        // Stable: fields of one rank stay in path order.
        fields.sort_by_key(rank);
        fields
    }
}

fn totals(outcomes: Outcomes) -> Totals {
    Totals {
        outcomes,
        mismatch_rate: outcomes.mismatch_rate(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::shadow::diff::Comparison;
    use crate::shadow::noise::Thresholds;
    use crate::shadow::stats::Limits;

    #[test]
    fn the_admin_document() {
        let mut stats = Stats::new(
            Thresholds {
                min_noise_comparisons: 1,
                ..Thresholds::default()
            },
            Limits::default(),
        );
        let login = "/api/auth/login";
        stats.record_noise(login, &Comparison::found(&[("$.id", "1", "2")]));
        stats.record_cross(
            login,
            &Comparison::found(&[("$.id", "3", "4"), ("$.user.email", "\"a\"", "\"b\"")]),
        );
        stats.record_cross(login, &Comparison::found(&[]));
        stats.record_timed_out("/health");
        let report = serde_json::to_value(stats.report()).unwrap();
        assert_eq!(
            report,
            json!({
                "thresholds": {"relative": 0.2, "absolute": 0.0003, "minNoiseComparisons": 1},
                "overall": {
                    "compared": 2, "matched": 1, "mismatched": 1, "noiseOnly": 0,
                    "unclassified": 0, "noiseCompared": 1, "bodySkipped": 0, "skipped": 0,
                    "dropped": 0, "failed": 0, "incomplete": 0, "timedOut": 1, "mismatchRate": 0.5
                },
                "routes": [
                    {
                        "route": "/api/auth/login",
                        "compared": 2, "matched": 1, "mismatched": 1, "noiseOnly": 0,
                        "unclassified": 0, "noiseCompared": 1, "bodySkipped": 0, "skipped": 0,
                        "dropped": 0, "failed": 0, "incomplete": 0, "timedOut": 0, "mismatchRate": 0.5,
                        "warmingUp": false,
                        "fields": [
                            {
                                "field": "$.user.email",
                                "crossCompared": 2, "crossDiffered": 1, "crossRate": 0.5,
                                "noiseCompared": 1, "noiseDiffered": 0, "noiseRate": 0.0,
                                "verdict": "mismatch",
                                "samples": [{"a": "\"a\"", "b": "\"b\""}]
                            },
                            {
                                "field": "$.id",
                                "crossCompared": 2, "crossDiffered": 1, "crossRate": 0.5,
                                "noiseCompared": 1, "noiseDiffered": 1, "noiseRate": 1.0,
                                "verdict": "noise",
                                "samples": [{"a": "3", "b": "4"}]
                            }
                        ]
                    },
                    {
                        "route": "/health",
                        "compared": 0, "matched": 0, "mismatched": 0, "noiseOnly": 0,
                        "unclassified": 0, "noiseCompared": 0, "bodySkipped": 0, "skipped": 0,
                        "dropped": 0, "failed": 0, "incomplete": 0, "timedOut": 1, "mismatchRate": null,
                        "warmingUp": true,
                        "fields": []
                    }
                ]
            })
        );
    }
}
