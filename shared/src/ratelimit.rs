//! Per-user token buckets for generate, shared by both backend processes.
//!
//! The arithmetic is a pure function; where the buckets live is behind `RateLimitStore`, so
//! the SQLite file (enough on one host) can be replaced by a networked store.

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use rusqlite::{OptionalExtension, TransactionBehavior};

use crate::config::TokenBucketConfig;
use crate::db::{Database, StoreError};

// The IETF draft's names (draft-ietf-httpapi-ratelimit-headers), which both backends send.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The outcome of one request against a bucket, with what the rate-limit headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until one request is allowed; set when refused.
    pub retry_after_secs: Option<u64>,
}

impl Decision {
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        // `retry-after` belongs to the 429 itself (`ApiError::RateLimited`).
        vec![
            (RATELIMIT_LIMIT, HeaderValue::from(self.limit)),
            (RATELIMIT_REMAINING, HeaderValue::from(self.remaining)),
            (RATELIMIT_RESET, HeaderValue::from(self.reset_secs)),
        ]
    }
}

/// A bucket as stored: tokens left at `updated_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketState {
    pub tokens: f64,
    pub updated_ms: i64,
}

/// Tokens are counted in 60,000ths, so that a millisecond of refill (`refill_per_minute` of
/// them) and every decision are whole numbers: the SQLite bucket and the Redis GCRA
/// (`crate::store::redis`) then agree to the unit, where floating point would round each
/// its own way at the edges.
pub const UNITS_PER_TOKEN: i64 = 60_000;

/// `tokens` in units; a stored bucket holds a whole number of them, so rounding only undoes
/// the float's error.
fn to_units(tokens: f64) -> i64 {
    (tokens * UNITS_PER_TOKEN as f64).round() as i64
}

/// Refills `state` up to `now_ms`, takes `cost` tokens if there are enough, and reports.
pub fn apply(
    bucket: TokenBucketConfig,
    state: Option<BucketState>,
    now_ms: i64,
    cost: f64,
) -> (BucketState, Decision) {
    let capacity = i64::from(bucket.capacity.get()) * UNITS_PER_TOKEN;
    let refill_per_ms = i64::from(bucket.refill_per_minute.get());
    let units = match state {
        None => capacity,
        Some(s) => to_units(s.tokens)
            .saturating_add(
                now_ms
                    .saturating_sub(s.updated_ms)
                    .max(0)
                    .saturating_mul(refill_per_ms),
            )
            .min(capacity),
    };
    let cost = to_units(cost);
    let allowed = units >= cost;
    let left = if allowed { units - cost } else { units };
    (
        BucketState {
            tokens: left as f64 / UNITS_PER_TOKEN as f64,
            updated_ms: now_ms,
        },
        decision(bucket, allowed, left, cost),
    )
}

/// What a bucket reports when `left_units` remain after a request of `cost_units` that was
/// `allowed` or not. Both stores report through it.
pub fn decision(
    bucket: TokenBucketConfig,
    allowed: bool,
    left_units: i64,
    cost_units: i64,
) -> Decision {
    let capacity = i64::from(bucket.capacity.get()) * UNITS_PER_TOKEN;
    let units_per_sec = u64::from(bucket.refill_per_minute.get()) * 1000;
    let secs_until = |needed: i64| {
        u64::try_from(needed.max(0))
            .unwrap_or(0)
            .div_ceil(units_per_sec)
    };
    Decision {
        allowed,
        limit: bucket.capacity.get(),
        remaining: u32::try_from((left_units / UNITS_PER_TOKEN).max(0)).unwrap_or(u32::MAX),
        reset_secs: secs_until(capacity - left_units),
        retry_after_secs: (!allowed).then(|| secs_until(cost_units - left_units).max(1)),
    }
}

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Takes one token from `key`'s bucket if it has one.
    async fn take(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
    ) -> Result<Decision, StoreError>;

    /// Reports the bucket without taking from it (for answers that spend nothing).
    async fn peek(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
    ) -> Result<Decision, StoreError>;
}

/// Buckets in the shared SQLite file; one `IMMEDIATE` transaction per decision keeps the two
/// processes from both spending the last token.
pub struct SqliteRateLimitStore {
    db: Database,
}

impl SqliteRateLimitStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    async fn apply(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
        cost: f64,
    ) -> Result<Decision, StoreError> {
        let key = key.to_owned();
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Cached per connection: parsed once, not on every decision.
                let state = tx
                    .prepare_cached("SELECT tokens, updated_ms FROM rate_buckets WHERE key = ?1")?
                    .query_row([&key], |row| {
                        Ok(BucketState {
                            tokens: row.get(0)?,
                            updated_ms: row.get(1)?,
                        })
                    })
                    .optional()?;
                let (state, decision) = apply(bucket, state, now_ms, cost);
                if cost > 0.0 {
                    tx.prepare_cached(
                        "INSERT INTO rate_buckets (key, tokens, updated_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT(key) DO UPDATE SET tokens = ?2, updated_ms = ?3",
                    )?
                    .execute(rusqlite::params![
                        key,
                        state.tokens,
                        state.updated_ms
                    ])?;
                }
                tx.commit()?;
                Ok(decision)
            })
            .await
    }
}

#[async_trait]
impl RateLimitStore for SqliteRateLimitStore {
    async fn take(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        self.apply(key, bucket, now_ms, 1.0).await
    }

    async fn peek(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        let mut decision = self.apply(key, bucket, now_ms, 0.0).await?;
        decision.retry_after_secs = None;
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    const BUCKET: TokenBucketConfig = TokenBucketConfig {
        capacity: NonZeroU32::new(3).expect("non-zero"),
        refill_per_minute: NonZeroU32::new(60).expect("non-zero"),
    };

    #[test]
    fn a_full_bucket_counts_down_then_refuses_with_retry_after() {
        let mut state = None;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let (s, d) = apply(BUCKET, state, 0, 1.0);
            assert!(d.allowed);
            remaining.push(d.remaining);
            state = Some(s);
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let (_, refused) = apply(BUCKET, state, 0, 1.0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.reset_secs, 3);
    }

    #[test]
    fn tokens_refill_with_time_up_to_capacity() {
        let empty = Some(BucketState {
            tokens: 0.0,
            updated_ms: 0,
        });
        let (_, after_two_secs) = apply(BUCKET, empty, 2_000, 1.0);
        assert!(after_two_secs.allowed);
        assert_eq!(after_two_secs.remaining, 1);
        let (_, after_an_hour) = apply(BUCKET, empty, 3_600_000, 1.0);
        assert_eq!(after_an_hour.remaining, 2);
    }

    #[test]
    fn a_refill_that_does_not_divide_a_minute_counts_whole_tokens_exactly() {
        // 7 a minute: one token every 8571.43 ms, which floats cannot hold exactly.
        let bucket = TokenBucketConfig {
            capacity: NonZeroU32::new(10).expect("non-zero"),
            refill_per_minute: NonZeroU32::new(7).expect("non-zero"),
        };
        let empty = Some(BucketState {
            tokens: 0.0,
            updated_ms: 0,
        });
        let (_, early) = apply(bucket, empty, 8_571, 1.0);
        assert!(!early.allowed);
        assert_eq!(early.retry_after_secs, Some(1));
        let (_, just_in_time) = apply(bucket, empty, 8_572, 1.0);
        assert!(just_in_time.allowed);
        assert_eq!(just_in_time.remaining, 0);
        let (state, a_minute_on) = apply(bucket, empty, 60_000, 1.0);
        assert_eq!((a_minute_on.remaining, a_minute_on.reset_secs), (6, 35));
        assert_eq!(state.tokens, 6.0);
    }

    #[test]
    fn peeking_spends_nothing() {
        let (state, decision) = apply(BUCKET, None, 0, 0.0);
        assert_eq!(state.tokens, 3.0);
        assert_eq!(decision.remaining, 3);
        assert_eq!(decision.reset_secs, 0);
    }
}
