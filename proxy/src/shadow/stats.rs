//! The counts the noise rule needs, kept per route and per field, and what each comparison
//! came to: the wiring records every comparison here (`record_cross` for legacy against
//! new, `record_noise` for two calls to one side) and what it could not compare
//! (`record_skipped`, `record_dropped`, `record_timed_out`).
//!
//! When a cross-version comparison counts as what (`Outcome`), decided once, when it is
//! recorded, with the rates known then (its own diffs included):
//! - while the route has fewer than `Thresholds::min_noise_comparisons` noise comparisons,
//!   `unclassified`, whatever it found (so that the mismatch rate, over classified
//!   comparisons only, is not skewed by a warm-up that can only count matches);
//! - else `matched` if no field differed; `mismatched` if at least one differing field is a
//!   `Verdict::Mismatch` now; `unclassified` if none is but one is still `Pending` (its
//!   body-only noise count is short); else `noiseOnly`.
//!
//! The mismatch rate is `mismatched / (matched + mismatched + noiseOnly)`. A field's own
//! verdict in the report is recomputed from its counts at report time, so it can move
//! (noise measured later can turn an early "mismatch" field into "noise"); the comparison
//! counters do not move.
//!
//! Memory is bounded: routes are the caller's bounded `RouteLabel`s; each route holds at most
//! `Limits::max_fields` field paths, further ones counted together as `other`; each field
//! keeps its `Limits::max_samples` most recent cross-version diffs, redacted. Not
//! synchronised: the wiring holds it behind one lock.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::diff::Comparison;
use super::field::{FieldDiff, FieldPath};
use super::noise::{self, FieldCounts, Thresholds, Verdict};
use super::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct field paths per route; more collapse into `other`.
    pub max_fields: usize,
    /// Recent sample diffs per field.
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_fields: 64,
            max_samples: 5,
        }
    }
}

/// Which two answers were compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Legacy against new: what the shadow is for.
    Cross,
    /// Two calls to the same side: how much differs by nature.
    Noise,
}

/// How one cross-version comparison was counted (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    Mismatched,
    NoiseOnly,
    Unclassified,
}

/// A route's counters (or all routes' together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// Cross-version comparisons recorded, each counted in exactly one of the next four.
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub noise_only: u64,
    pub unclassified: u64,
    /// Same-version comparisons recorded.
    pub noise_compared: u64,
    /// Cross-version comparisons whose bodies were not compared (a capture hit its cap).
    pub body_skipped: u64,
    /// Reported by the wiring: requests it chose not to shadow (not eligible), shadow
    /// requests it dropped (at its concurrency bound), and shadow calls that timed out.
    pub skipped: u64,
    pub dropped: u64,
    pub timed_out: u64,
    /// Shadows whose side could not be reached or broke the exchange, and those whose
    /// primary answer never completed (the client went away): neither was compared.
    pub failed: u64,
    pub incomplete: u64,
}

impl Outcomes {
    /// The comparisons the mismatch rate is over.
    pub fn classified(&self) -> u64 {
        self.matched + self.mismatched + self.noise_only
    }

    /// Real mismatches among the classified comparisons; `None` before any.
    pub fn mismatch_rate(&self) -> Option<f64> {
        let classified = self.classified();
        (classified > 0).then(|| self.mismatched as f64 / classified as f64)
    }

    fn add(&mut self, other: &Outcomes) {
        self.compared += other.compared;
        self.matched += other.matched;
        self.mismatched += other.mismatched;
        self.noise_only += other.noise_only;
        self.unclassified += other.unclassified;
        self.noise_compared += other.noise_compared;
        self.body_skipped += other.body_skipped;
        self.skipped += other.skipped;
        self.dropped += other.dropped;
        self.timed_out += other.timed_out;
        self.failed += other.failed;
        self.incomplete += other.incomplete;
    }
}

/// One kept diff, redacted; `field` names the real path of a diff counted as `other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, Default)]
pub(super) struct FieldStats {
    pub(super) cross_differed: u64,
    pub(super) noise_differed: u64,
    pub(super) samples: VecDeque<Sample>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct RouteStats {
    pub(super) outcomes: Outcomes,
    /// The comparisons in which the bodies were compared: the denominators of body fields.
    pub(super) cross_body_compared: u64,
    pub(super) noise_body_compared: u64,
    pub(super) fields: BTreeMap<FieldPath, FieldStats>,
    pub(super) other: FieldStats,
}

impl RouteStats {
    /// A field's counts, over the comparisons in which it was compared.
    pub(super) fn counts(&self, field: &FieldPath, stats: &FieldStats) -> FieldCounts {
        let body = field.is_body();
        FieldCounts {
            cross_compared: if body {
                self.cross_body_compared
            } else {
                self.outcomes.compared
            },
            cross_differed: stats.cross_differed,
            noise_compared: if body {
                self.noise_body_compared
            } else {
                self.outcomes.noise_compared
            },
            noise_differed: stats.noise_differed,
        }
    }

    fn other_path() -> FieldPath {
        FieldPath::new(FieldPath::OTHER)
    }

    /// Counts one comparison's diffs; `other` at most once however many fall into it.
    /// Returns the slots touched: `Some(path)` for a field, `None` for `other`.
    fn count(
        &mut self,
        kind: Kind,
        diffs: &[FieldDiff],
        limits: &Limits,
    ) -> Vec<Option<FieldPath>> {
        let mut touched = Vec::with_capacity(diffs.len());
        let mut other_counted = false;
        for diff in diffs {
            let known = self.fields.contains_key(&diff.field);
            let into_other = !known && self.fields.len() >= limits.max_fields;
            let stats = if into_other {
                &mut self.other
            } else {
                self.fields.entry(diff.field.clone()).or_default()
            };
            if !(into_other && other_counted) {
                match kind {
                    Kind::Cross => stats.cross_differed += 1,
                    Kind::Noise => stats.noise_differed += 1,
                }
            }
            if kind == Kind::Cross {
                stats.samples.push_back(Sample {
                    field: into_other.then(|| diff.field.to_string()),
                    a: redact::sample(&diff.field, &diff.a),
                    b: redact::sample(&diff.field, &diff.b),
                });
                while stats.samples.len() > limits.max_samples {
                    stats.samples.pop_front();
                }
            }
            if into_other {
                if !other_counted {
                    touched.push(None);
                }
                other_counted = true;
            } else {
                touched.push(Some(diff.field.clone()));
            }
        }
        touched
    }

    pub(super) fn verdict(&self, slot: Option<&FieldPath>, thresholds: &Thresholds) -> Verdict {
        let (path, stats) = match slot {
            Some(path) => match self.fields.get(path) {
                Some(stats) => (path.clone(), stats),
                None => return Verdict::Match,
            },
            None => (Self::other_path(), &self.other),
        };
        noise::classify(self.counts(&path, stats), thresholds)
    }

    pub(super) fn warming_up(&self, thresholds: &Thresholds) -> bool {
        self.outcomes.noise_compared < thresholds.min_noise_comparisons
    }
}

/// Every route's counts; see the module's doc.
#[derive(Debug, Clone)]
pub struct Stats {
    pub(super) thresholds: Thresholds,
    pub(super) limits: Limits,
    pub(super) routes: BTreeMap<&'static str, RouteStats>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(Thresholds::default(), Limits::default())
    }
}

impl Stats {
    pub fn new(thresholds: Thresholds, limits: Limits) -> Self {
        Stats {
            thresholds,
            limits,
            routes: BTreeMap::new(),
        }
    }

    /// Records `comparison` of the kind given; for a cross-version one, how it was counted.
    pub fn record(
        &mut self,
        kind: Kind,
        route: &'static str,
        comparison: &Comparison,
    ) -> Option<Outcome> {
        match kind {
            Kind::Cross => Some(self.record_cross(route, comparison)),
            Kind::Noise => {
                self.record_noise(route, comparison);
                None
            }
        }
    }

    /// Records a comparison of legacy's answer with new's, and says how it was counted.
    pub fn record_cross(&mut self, route: &'static str, comparison: &Comparison) -> Outcome {
        self.record_cross_fields(route, comparison).0
    }

    /// As `record_cross`, with the (bounded) paths of the fields it found really mismatched,
    /// for the per-field metric.
    pub fn record_cross_fields(
        &mut self,
        route: &'static str,
        comparison: &Comparison,
    ) -> (Outcome, Vec<FieldPath>) {
        let thresholds = self.thresholds;
        let limits = self.limits;
        let stats = self.routes.entry(route).or_default();
        stats.outcomes.compared += 1;
        if comparison.body_compared() {
            stats.cross_body_compared += 1;
        } else {
            stats.outcomes.body_skipped += 1;
        }
        let touched = stats.count(Kind::Cross, &comparison.diffs, &limits);
        let verdicts: Vec<Verdict> = touched
            .iter()
            .map(|slot| stats.verdict(slot.as_ref(), &thresholds))
            .collect();
        let outcome = if stats.warming_up(&thresholds) {
            Outcome::Unclassified
        } else if verdicts.is_empty() {
            Outcome::Matched
        } else if verdicts.contains(&Verdict::Mismatch) {
            Outcome::Mismatched
        } else if verdicts.contains(&Verdict::Pending) {
            Outcome::Unclassified
        } else {
            Outcome::NoiseOnly
        };
        let outcomes = &mut stats.outcomes;
        match outcome {
            Outcome::Matched => outcomes.matched += 1,
            Outcome::Mismatched => outcomes.mismatched += 1,
            Outcome::NoiseOnly => outcomes.noise_only += 1,
            Outcome::Unclassified => outcomes.unclassified += 1,
        }
        let mismatched = if outcome == Outcome::Mismatched {
            (touched.into_iter().zip(verdicts))
                .filter(|(_, verdict)| *verdict == Verdict::Mismatch)
                .map(|(slot, _)| slot.unwrap_or_else(RouteStats::other_path))
                .collect()
        } else {
            Vec::new()
        };
        (outcome, mismatched)
    }

    /// Records a comparison of two answers from the same side.
    pub fn record_noise(&mut self, route: &'static str, comparison: &Comparison) {
        let limits = self.limits;
        let stats = self.routes.entry(route).or_default();
        stats.outcomes.noise_compared += 1;
        if comparison.body_compared() {
            stats.noise_body_compared += 1;
        }
        stats.count(Kind::Noise, &comparison.diffs, &limits);
    }

    pub fn record_skipped(&mut self, route: &'static str) {
        self.routes.entry(route).or_default().outcomes.skipped += 1;
    }

    pub fn record_dropped(&mut self, route: &'static str) {
        self.routes.entry(route).or_default().outcomes.dropped += 1;
    }

    pub fn record_timed_out(&mut self, route: &'static str) {
        self.routes.entry(route).or_default().outcomes.timed_out += 1;
    }

    pub fn record_failed(&mut self, route: &'static str) {
        self.routes.entry(route).or_default().outcomes.failed += 1;
    }

    pub fn record_incomplete(&mut self, route: &'static str) {
        self.routes.entry(route).or_default().outcomes.incomplete += 1;
    }

    /// One route's counters, or every route's summed (`None`); `None` for a route never seen.
    pub fn counts(&self, route: Option<&str>) -> Option<Outcomes> {
        match route {
            Some(route) => self.routes.get(route).map(|s| s.outcomes),
            None => Some(
                self.routes
                    .values()
                    .fold(Outcomes::default(), |mut sum, s| {
                        sum.add(&s.outcomes);
                        sum
                    }),
            ),
        }
    }

    /// Real mismatches among classified comparisons, on one route or all (`None`): the
    /// rollout judge's metric. `None` until a comparison is classified.
    pub fn mismatch_rate(&self, route: Option<&str>) -> Option<f64> {
        self.counts(route)?.mismatch_rate()
    }

    /// A field's counts on a route (`other` for the collapsed ones).
    pub fn field_counts(&self, route: &str, field: &str) -> Option<FieldCounts> {
        let stats = self.routes.get(route)?;
        if field == FieldPath::OTHER {
            return Some(stats.counts(&RouteStats::other_path(), &stats.other));
        }
        let (path, field_stats) = stats.fields.get_key_value(&FieldPath::new(field))?;
        Some(stats.counts(path, field_stats))
    }

    /// A field's verdict on a route with the counts as they are now.
    pub fn verdict(&self, route: &str, field: &str) -> Option<Verdict> {
        self.field_counts(route, field)
            .map(|counts| noise::classify(counts, &self.thresholds))
    }

    /// A field's kept samples, oldest first.
    pub fn samples(&self, route: &str, field: &str) -> Vec<Sample> {
        let Some(stats) = self.routes.get(route) else {
            return Vec::new();
        };
        let field_stats = if field == FieldPath::OTHER {
            Some(&stats.other)
        } else {
            stats.fields.get(&FieldPath::new(field))
        };
        field_stats.map_or_else(Vec::new, |f| f.samples.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
    use serde_json::{Value, json};

    use super::*;
    use crate::shadow::diff::{BodyCheck, compare};
    use crate::shadow::ignore::IgnoreList;
    use crate::shadow::jwt::tests::token;
    use crate::shadow::redact::REDACTED;
    use crate::shadow::response::CapturedResponse;

    const LOGIN: &str = "/api/auth/login";

    fn json_answer(body: &Value) -> CapturedResponse {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        CapturedResponse::new(StatusCode::OK, headers, body.to_string())
    }

    fn without_warm_up() -> Stats {
        Stats::new(
            Thresholds {
                min_noise_comparisons: 0,
                ..Thresholds::default()
            },
            Limits::default(),
        )
    }

    /// 1,000 shadowed logins, every tenth also sent twice to the same side, compared for
    /// real; `answer(side, call)` is what side 0 (legacy) or 1 (new) answers on a call.
    fn run(answer: impl Fn(usize, usize) -> Value) -> Stats {
        let mut stats = Stats::default();
        let ignore = IgnoreList::default();
        let mut call = 0;
        let mut next = |side| {
            call += 1;
            json_answer(&answer(side, call))
        };
        for i in 0..1_000 {
            let primary = next(0);
            if i % 10 == 0 {
                let again = next(0);
                stats.record_noise(LOGIN, &compare(LOGIN, &primary, &again, &ignore));
            }
            let shadow = next(1);
            stats.record_cross(LOGIN, &compare(LOGIN, &primary, &shadow, &ignore));
        }
        stats
    }

    #[test]
    fn a_field_that_differs_on_every_call_is_noise() {
        let stats = run(|_, call| json!({"requestId": format!("{call:032x}"), "ok": true}));
        assert_eq!(stats.verdict(LOGIN, "$.requestId"), Some(Verdict::Noise));
        let counts = stats.counts(Some(LOGIN)).unwrap();
        // Noise is measured from the first request; the twentieth noise comparison comes with
        // request 190, so the 190 before it are unclassified.
        assert_eq!(
            counts,
            Outcomes {
                compared: 1_000,
                unclassified: 190,
                noise_only: 810,
                noise_compared: 100,
                ..Outcomes::default()
            }
        );
        assert_eq!(stats.mismatch_rate(Some(LOGIN)), Some(0.0));
        assert_eq!(stats.mismatch_rate(None), Some(0.0));
    }

    #[test]
    fn a_field_that_differs_only_across_versions_is_a_mismatch() {
        let stats = run(|side, call| {
            json!({"requestId": format!("{call:032x}"),
                   "user": {"email": if side == 0 { "Ada@example.com" } else { "ada@example.com" }}})
        });
        assert_eq!(
            stats.verdict(LOGIN, "$.user.email"),
            Some(Verdict::Mismatch)
        );
        assert_eq!(stats.verdict(LOGIN, "$.requestId"), Some(Verdict::Noise));
        let counts = stats.counts(Some(LOGIN)).unwrap();
        assert_eq!(
            (counts.unclassified, counts.mismatched, counts.noise_only),
            (190, 810, 0)
        );
        assert_eq!(stats.mismatch_rate(Some(LOGIN)), Some(1.0));
        let field = stats.field_counts(LOGIN, "$.user.email").unwrap();
        assert_eq!(
            field,
            FieldCounts {
                cross_compared: 1_000,
                cross_differed: 1_000,
                noise_compared: 100,
                noise_differed: 0,
            }
        );
    }

    #[test]
    fn a_comparison_is_counted_with_the_rates_known_then() {
        let mut stats = without_warm_up();
        let x = Comparison::found(&[("$.x", "1", "2")]);
        let cases = [
            // No noise measured: the difference looks real.
            (Kind::Cross, Some(Outcome::Mismatched)),
            (Kind::Noise, None),
            // 2 of 2 across, 1 of 1 within: noise.
            (Kind::Cross, Some(Outcome::NoiseOnly)),
        ];
        for (kind, expected) in cases {
            assert_eq!(stats.record(kind, LOGIN, &x), expected);
        }
        assert_eq!(
            stats.record_cross(LOGIN, &Comparison::found(&[])),
            Outcome::Matched
        );
        let counts = stats.counts(Some(LOGIN)).unwrap();
        // The first stays counted as it was; the field's verdict is today's.
        assert_eq!(
            (counts.mismatched, counts.noise_only, counts.matched),
            (1, 1, 1)
        );
        assert_eq!(stats.verdict(LOGIN, "$.x"), Some(Verdict::Noise));
        assert_eq!(stats.mismatch_rate(Some(LOGIN)), Some(1.0 / 3.0));
    }

    #[test]
    fn one_real_mismatch_among_noise_makes_the_comparison_mismatched() {
        let mut stats = without_warm_up();
        stats.record_noise(LOGIN, &Comparison::found(&[("$.id", "a", "b")]));
        let both = Comparison::found(&[("$.id", "c", "d"), ("$.email", "x", "y")]);
        assert_eq!(stats.record_cross(LOGIN, &both), Outcome::Mismatched);
        let id_only = Comparison::found(&[("$.id", "e", "f")]);
        assert_eq!(stats.record_cross(LOGIN, &id_only), Outcome::NoiseOnly);
    }

    #[test]
    fn bodies_not_compared_are_not_in_body_fields_rates() {
        let mut stats = Stats::new(
            Thresholds {
                min_noise_comparisons: 2,
                ..Thresholds::default()
            },
            Limits::default(),
        );
        let mut cut = Comparison::found(&[]);
        cut.body = BodyCheck::SkippedTruncated;
        stats.record_noise(LOGIN, &cut);
        stats.record_noise(LOGIN, &cut);
        stats.record_cross(LOGIN, &cut);
        // Two noise comparisons, neither with bodies: `$.a` cannot be judged yet, `status` can.
        let outcome = stats.record_cross(LOGIN, &Comparison::found(&[("$.a", "1", "2")]));
        assert_eq!(outcome, Outcome::Unclassified);
        assert_eq!(stats.verdict(LOGIN, "$.a"), Some(Verdict::Pending));
        assert_eq!(
            stats.field_counts(LOGIN, "$.a").unwrap(),
            FieldCounts {
                cross_compared: 1,
                cross_differed: 1,
                noise_compared: 0,
                noise_differed: 0,
            }
        );
        let outcome = stats.record_cross(LOGIN, &Comparison::found(&[("status", "200", "500")]));
        assert_eq!(outcome, Outcome::Mismatched);
        assert_eq!(
            stats.field_counts(LOGIN, "status").unwrap().cross_compared,
            3
        );
        assert_eq!(stats.counts(Some(LOGIN)).unwrap().body_skipped, 1);
    }

    #[test]
    fn field_paths_past_the_bound_collapse_into_other() {
        let mut stats = Stats::new(
            Thresholds::default(),
            Limits {
                max_fields: 3,
                max_samples: 5,
            },
        );
        let five = Comparison::found(&[
            ("$.a", "1", "2"),
            ("$.b", "1", "2"),
            ("$.c", "1", "2"),
            ("$.d", "1", "2"),
            ("$.e", "1", "2"),
        ]);
        stats.record_cross(LOGIN, &five);
        stats.record_noise(LOGIN, &five);
        // A known field keeps its own counts; a new one joins `other`.
        stats.record_cross(
            LOGIN,
            &Comparison::found(&[("$.a", "1", "2"), ("$.f", "1", "2")]),
        );
        let cases = [
            ("$.a", Some((2, 1))),
            ("$.b", Some((1, 1))),
            ("$.c", Some((1, 1))),
            ("$.d", None),
            ("$.f", None),
            // Once per comparison, however many paths fell into it.
            ("other", Some((2, 1))),
        ];
        for (field, expected) in cases {
            let counts = stats.field_counts(LOGIN, field);
            assert_eq!(
                counts.map(|c| (c.cross_differed, c.noise_differed)),
                expected,
                "{field}"
            );
        }
        let named: Vec<Option<String>> = stats
            .samples(LOGIN, "other")
            .into_iter()
            .map(|s| s.field)
            .collect();
        assert_eq!(
            named,
            [Some("$.d".into()), Some("$.e".into()), Some("$.f".into())]
        );
        let report = stats.report();
        let fields: Vec<&str> = report.routes[0]
            .fields
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields.len(), 4);
        assert_eq!(fields.last(), Some(&"other"));
    }

    #[test]
    fn samples_are_the_most_recent_and_redacted() {
        let mut stats = Stats::default();
        let jwt = token(&json!({"sub": "u1"}));
        for i in 0..7 {
            let (a, b) = (format!("\"v{i}\""), format!("\"w{i}\""));
            let bearer = format!("Bearer {jwt}");
            stats.record_cross(
                LOGIN,
                &Comparison::found(&[
                    ("$.name", a.as_str(), b.as_str()),
                    ("$.password", a.as_str(), b.as_str()),
                    ("$.user.accessToken", a.as_str(), b.as_str()),
                    ("$.note", bearer.as_str(), "none"),
                ]),
            );
        }
        let values = |field: &str| -> Vec<(String, String)> {
            stats
                .samples(LOGIN, field)
                .into_iter()
                .map(|s| (s.a, s.b))
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let recent: Vec<_> = (2..7)
            .map(|i| pair(&format!("\"v{i}\""), &format!("\"w{i}\"")))
            .collect();
        assert_eq!(values("$.name"), recent);
        assert_eq!(values("$.password"), vec![pair(REDACTED, REDACTED); 5]);
        assert_eq!(
            values("$.user.accessToken"),
            vec![pair(REDACTED, REDACTED); 5]
        );
        assert_eq!(
            values("$.note"),
            vec![pair(&format!("Bearer {REDACTED}"), "none"); 5]
        );
    }

    #[test]
    fn what_the_wiring_reports() {
        let mut stats = Stats::default();
        assert_eq!(stats.counts(Some(LOGIN)), None);
        assert_eq!(stats.mismatch_rate(None), None);
        stats.record_skipped(LOGIN);
        stats.record_dropped(LOGIN);
        stats.record_dropped("/health");
        stats.record_timed_out("/health");
        let cases = [
            (Some(LOGIN), (1, 1, 0)),
            (Some("/health"), (0, 1, 1)),
            (None, (1, 2, 1)),
        ];
        for (route, expected) in cases {
            let counts = stats.counts(route).unwrap();
            assert_eq!((counts.skipped, counts.dropped, counts.timed_out), expected);
            assert_eq!(counts.compared, 0);
        }
        assert_eq!(stats.mismatch_rate(Some(LOGIN)), None);
        assert_eq!(stats.counts(Some("/")), None);
    }

    #[test]
    fn rates_over_all_routes() {
        let mut stats = without_warm_up();
        stats.record_cross(LOGIN, &Comparison::found(&[("$.x", "1", "2")]));
        stats.record_cross(LOGIN, &Comparison::found(&[]));
        stats.record_cross("/health", &Comparison::found(&[]));
        stats.record_cross("/health", &Comparison::found(&[]));
        assert_eq!(stats.mismatch_rate(Some(LOGIN)), Some(0.5));
        assert_eq!(stats.mismatch_rate(Some("/health")), Some(0.0));
        assert_eq!(stats.mismatch_rate(None), Some(0.25));
    }
}
