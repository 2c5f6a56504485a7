//! What the proxy keeps for shadowing across requests: the client shadows go out on, the
//! in-flight count, the key that signs them, and the comparison statistics (behind one lock:
//! taken once per finished shadow, never on the request path of an unshadowed request).

use std::sync::{Arc, Mutex, MutexGuard};

use http::{HeaderName, HeaderValue};

use super::choice::SkipReason;
use super::metrics::ShadowMetrics;
use super::mirror::{self, Ended, InFlight};
use super::stats::{Limits, Outcome, Stats};
use super::{IgnoreList, Thresholds, compare};

pub struct ShadowState {
    pub client: reqwest::Client,
    pub in_flight: Arc<InFlight>,
    key: common::shadow::ShadowKey,
    stats: Mutex<Stats>,
}

impl ShadowState {
    pub fn new(key: common::shadow::ShadowKey) -> reqwest::Result<Self> {
        Ok(Self {
            client: mirror::client()?,
            in_flight: Arc::default(),
            key,
            stats: Mutex::new(Stats::new(Thresholds::default(), Limits::default())),
        })
    }

    /// The fields that make a copy of the request with id `request_id` a shadow: the
    /// signature, and the id it signs.
    pub fn signature(&self, request_id: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut fields = vec![(
            HeaderName::from_static(common::shadow::HEADER),
            self.key.sign(request_id),
        )];
        if let Ok(id) = HeaderValue::from_str(request_id) {
            fields.push((HeaderName::from_static(common::request_id::HEADER), id));
        }
        fields
    }

    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        // A panic while counting leaves counts, not broken invariants.
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drawn, but not sent.
    pub fn skipped(&self, metrics: &ShadowMetrics, route: &'static str, reason: SkipReason) {
        tracing::debug!(route, reason = reason.as_str(), "shadow skipped");
        self.stats().record_skipped(route);
        metrics.ended(route, "skipped");
    }

    /// Over `max_inflight`.
    pub fn dropped(&self, metrics: &ShadowMetrics, route: &'static str) {
        self.stats().record_dropped(route);
        metrics.ended(route, "dropped");
    }

    /// Records how a shadow of `route` ended: compared (and the noise call, if any), or why
    /// not.
    pub fn record(
        &self,
        metrics: &ShadowMetrics,
        route: &'static str,
        ended: Ended,
        ignore: &IgnoreList,
    ) {
        match ended {
            Ended::Compared(answers) => {
                // Comparing runs outside the lock; counting inside.
                let cross = compare(route, &answers.legacy, &answers.new, ignore);
                let noise = (answers.noise.as_ref())
                    .map(|(first, second)| compare(route, first, second, ignore));
                let mut stats = self.stats();
                if let Some(noise) = &noise {
                    stats.record_noise(route, noise);
                }
                let (outcome, fields) = stats.record_cross_fields(route, &cross);
                drop(stats);
                let label = match outcome {
                    Outcome::Matched => "matched",
                    Outcome::Mismatched => "mismatched",
                    Outcome::NoiseOnly => "noise_only",
                    // Still learning the noise: compared, not yet judged.
                    Outcome::Unclassified => "unclassified",
                };
                metrics.ended(route, label);
                for field in fields {
                    metrics.field_mismatch(route, field.as_str());
                }
            }
            Ended::TimedOut => {
                self.stats().record_timed_out(route);
                metrics.ended(route, "timed_out");
            }
            Ended::Failed => {
                self.stats().record_failed(route);
                metrics.ended(route, "failed");
            }
            Ended::PrimaryIncomplete => {
                self.stats().record_incomplete(route);
                metrics.ended(route, "incomplete");
            }
        }
    }
}
