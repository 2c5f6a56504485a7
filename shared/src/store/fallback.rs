//! `on_store_error = "local"`: while the shared budget does not answer, each process keeps
//! its own, in memory, rather than failing its requests.
//!
//! The budget then degrades to per process (a user may spend one budget on each backend
//! process) and comes back by itself: once degraded, the shared store is asked again at most
//! every `PROBE_INTERVAL` (the other decisions stay local meanwhile, so an unreachable Redis
//! costs one timeout a second, not one a request), and the first answer ends the outage. Each
//! change of mode is logged once and shown by `store_degraded`; every local decision counts in
//! `store_fallback_total`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::TokenBucketConfig;
use crate::db::StoreError;
use crate::metrics::FallbackMetrics;
use crate::ratelimit::{self, BucketState, Decision, RateLimitStore};

/// How often a degraded process asks the shared store again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Buckets the local budget holds at most; beyond it, full buckets (which hold nothing a
/// missing one does not) are dropped first, then the longest untouched.
const MAX_LOCAL_BUCKETS: usize = 100_000;

/// The shared store first, the local budget while it does not answer.
pub struct FallbackRateLimitStore<S> {
    shared: S,
    local: LocalBuckets,
    metrics: FallbackMetrics,
    /// `Some(when to ask the shared store again)` while degraded.
    degraded: Mutex<Option<Instant>>,
}

impl<S: RateLimitStore> FallbackRateLimitStore<S> {
    pub fn new(shared: S, metrics: FallbackMetrics) -> Self {
        Self {
            shared,
            local: LocalBuckets::default(),
            metrics,
            degraded: Mutex::new(None),
        }
    }

    /// Whether this decision should ask the shared store: always while it answers, and once
    /// per `PROBE_INTERVAL` (for one caller) while it does not.
    fn should_ask_shared(&self) -> bool {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        match *degraded {
            None => true,
            Some(next_probe) if Instant::now() >= next_probe => {
                *degraded = Some(Instant::now() + PROBE_INTERVAL);
                true
            }
            Some(_) => false,
        }
    }

    fn shared_answered(&self) {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if degraded.take().is_some() {
            self.metrics.degraded.set(0);
            tracing::info!("the shared rate-limit store answers again; the budget is shared again");
        }
    }

    fn shared_failed(&self, error: &StoreError) {
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if degraded.is_none() {
            self.metrics.degraded.set(1);
            tracing::warn!(
                %error,
                "the shared rate-limit store does not answer; each process keeps its own budget until it does"
            );
        }
        *degraded = Some(Instant::now() + PROBE_INTERVAL);
    }
}

#[async_trait]
impl<S: RateLimitStore> RateLimitStore for FallbackRateLimitStore<S> {
    async fn decide(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
        tokens: u32,
    ) -> Result<Decision, StoreError> {
        if self.should_ask_shared() {
            match self.shared.decide(key, bucket, now_ms, tokens).await {
                Ok(decision) => {
                    self.shared_answered();
                    return Ok(decision);
                }
                Err(error @ StoreError::Unavailable(_)) => self.shared_failed(&error),
                Err(error) => return Err(error),
            }
        }
        self.metrics.decisions.inc();
        Ok(self.local.apply(key, bucket, now_ms, f64::from(tokens)))
    }
}

/// This process's own buckets, with `ratelimit::apply` as the arithmetic.
#[derive(Default)]
struct LocalBuckets {
    buckets: Mutex<HashMap<String, BucketState>>,
}

impl LocalBuckets {
    fn apply(&self, key: &str, bucket: TokenBucketConfig, now_ms: i64, cost: f64) -> Decision {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (state, decision) = ratelimit::apply(bucket, buckets.get(key).copied(), now_ms, cost);
        if cost > 0.0 {
            if !buckets.contains_key(key) && buckets.len() >= MAX_LOCAL_BUCKETS {
                make_room(&mut buckets, bucket, now_ms);
            }
            buckets.insert(key.to_owned(), state);
        }
        decision
    }
}

/// Drops the buckets that have refilled (the same as absent), or else the longest untouched.
fn make_room(buckets: &mut HashMap<String, BucketState>, bucket: TokenBucketConfig, now_ms: i64) {
    buckets.retain(|_, state| {
        let (_, now) = ratelimit::apply(bucket, Some(*state), now_ms, 0.0);
        now.remaining < bucket.capacity.get()
    });
    if buckets.len() >= MAX_LOCAL_BUCKETS
        && let Some(oldest) = buckets
            .iter()
            .min_by_key(|(_, state)| state.updated_ms)
            .map(|(key, _)| key.clone())
    {
        buckets.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::metrics::Metrics;
    use crate::testing::non_zero;

    const BUCKET: TokenBucketConfig = TokenBucketConfig {
        capacity: std::num::NonZeroU32::new(2).expect("non-zero"),
        refill_per_minute: std::num::NonZeroU32::MIN,
    };

    /// A shared store that answers from its own buckets while `up`, else is unavailable.
    #[derive(Default)]
    struct Switchable {
        up: AtomicBool,
        buckets: LocalBuckets,
    }

    #[async_trait]
    impl RateLimitStore for &Switchable {
        async fn decide(
            &self,
            key: &str,
            bucket: TokenBucketConfig,
            now_ms: i64,
            tokens: u32,
        ) -> Result<Decision, StoreError> {
            if !self.up.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            Ok(self.buckets.apply(key, bucket, now_ms, f64::from(tokens)))
        }
    }

    #[tokio::test]
    async fn a_down_store_falls_back_to_a_local_budget_and_is_asked_again_later() {
        let shared = Switchable::default();
        let metrics = Metrics::new("legacy");
        let store = FallbackRateLimitStore::new(&shared, metrics.store_fallback("rate_limit"));
        // Down: the local budget answers, counted, and refuses once it is spent.
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(
                store
                    .take("k", BUCKET, 0)
                    .await
                    .expect("never an error")
                    .allowed,
            );
        }
        assert_eq!(answers, vec![true, true, false]);
        let text = metrics.render();
        assert!(
            text.contains(r#"store_degraded{store="rate_limit",backend="legacy"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"store_fallback_total{store="rate_limit",backend="legacy"} 3"#),
            "{text}"
        );
        // Back up: the next probe goes to the shared store, which has its own full budget.
        shared.up.store(true, Ordering::SeqCst);
        *store.degraded.lock().expect("not poisoned") = Some(Instant::now());
        assert!(store.take("k", BUCKET, 0).await.expect("an answer").allowed);
        assert_eq!(
            shared.buckets.buckets.lock().expect("not poisoned").len(),
            1
        );
        assert!(
            metrics
                .render()
                .contains(r#"store_degraded{store="rate_limit",backend="legacy"} 0"#)
        );
    }

    #[test]
    fn the_local_budget_stays_bounded() {
        let local = LocalBuckets::default();
        // One token a minute, one new user a millisecond: by the time the map is full the
        // first users' buckets have refilled, and go first.
        let bucket = TokenBucketConfig {
            capacity: non_zero(1),
            refill_per_minute: non_zero(1),
        };
        let users = MAX_LOCAL_BUCKETS + 10;
        for i in 0..users {
            local.apply(&format!("user-{i}"), bucket, i as i64, 1.0);
        }
        let buckets = local.buckets.lock().expect("not poisoned");
        assert!(buckets.len() <= MAX_LOCAL_BUCKETS, "{}", buckets.len());
        assert!(
            !buckets.contains_key("user-0"),
            "a refilled bucket is dropped"
        );
        let newest = format!("user-{}", users - 1);
        assert!(buckets.contains_key(&newest), "a spent bucket is kept");
    }
}
