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

/// Refills `state` up to `now_ms`, takes `cost` tokens if there are enough, and reports.
pub fn apply(
    bucket: TokenBucketConfig,
    state: Option<BucketState>,
    now_ms: i64,
    cost: f64,
) -> (BucketState, Decision) {
    let capacity = f64::from(bucket.capacity.get());
    let per_ms = f64::from(bucket.refill_per_minute.get()) / 60_000.0;
    let tokens = match state {
        None => capacity,
        Some(s) => (s.tokens + (now_ms - s.updated_ms).max(0) as f64 * per_ms).min(capacity),
    };
    let allowed = tokens >= cost;
    let left = if allowed { tokens - cost } else { tokens };
    let secs_until = |needed: f64| (needed.max(0.0) / per_ms / 1000.0).ceil() as u64;
    let decision = Decision {
        allowed,
        limit: bucket.capacity.get(),
        remaining: left.floor() as u32,
        reset_secs: secs_until(capacity - left),
        retry_after_secs: (!allowed).then(|| secs_until(cost - left).max(1)),
    };
    (
        BucketState {
            tokens: left,
            updated_ms: now_ms,
        },
        decision,
    )
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
    fn peeking_spends_nothing() {
        let (state, decision) = apply(BUCKET, None, 0, 0.0);
        assert_eq!(state.tokens, 3.0);
        assert_eq!(decision.remaining, 3);
        assert_eq!(decision.reset_secs, 0);
    }
}
