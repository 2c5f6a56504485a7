//! Per-user token buckets for generate, shared by both backend processes.
//!
//! The arithmetic is a pure function; where the buckets live is behind `RateLimitStore`, so
//! the SQLite file (enough on one host) can be replaced by a networked store.

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use rusqlite::{OptionalExtension, TransactionBehavior};

use crate::config::TokenBucketConfig;
use crate::db::{Database, PooledConnection, StoreError};

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
    /// Takes `tokens` (1, or 0 to only look) from `key`'s bucket if it has them.
    async fn decide(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
        tokens: u32,
    ) -> Result<Decision, StoreError>;

    /// Takes one token from `key`'s bucket if it has one.
    async fn take(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        self.decide(key, bucket, now_ms, 1).await
    }

    /// Reports the bucket without taking from it (for answers that spend nothing).
    async fn peek(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        let mut decision = self.decide(key, bucket, now_ms, 0).await?;
        decision.retry_after_secs = None;
        Ok(decision)
    }
}

/// Buckets in the shared SQLite file, decided by one writer thread per process.
///
/// A decision must be exact across both backend processes, so it reads and writes the bucket
/// inside an `IMMEDIATE` transaction. One transaction per decision made every request pay for
/// a write lock, a WAL append and a blocking-pool hop, and made sixteen pooled connections
/// queue on the lock (with SQLite's busy handler sleeping between tries). Instead, decisions
/// queue to one thread that takes everything waiting and decides it in order in one
/// transaction (group commit): the same answers as one at a time, for one lock and one
/// append per batch.
pub struct SqliteRateLimitStore {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

/// One decision waiting for the writer.
struct Pending {
    key: String,
    bucket: TokenBucketConfig,
    now_ms: i64,
    cost: f64,
    reply: tokio::sync::oneshot::Sender<Result<Decision, StoreError>>,
}

/// Decisions queued beyond this wait for room (the callers' futures, not a thread).
const QUEUE_CAPACITY: usize = 1024;
/// Most decisions in one transaction, so one batch cannot hold the write lock for long.
const MAX_BATCH: usize = 256;

impl SqliteRateLimitStore {
    /// Starts the writer thread; it ends when the store is dropped.
    pub fn new(db: Database) -> Result<Self, StoreError> {
        let (queue, pending) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("rate-limit-writer".into())
            .spawn(move || write_batches(&db, pending))
            .map_err(StoreError::Thread)?;
        Ok(Self { queue })
    }
}

#[async_trait]
impl RateLimitStore for SqliteRateLimitStore {
    async fn decide(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
        tokens: u32,
    ) -> Result<Decision, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Pending {
            key: key.to_owned(),
            bucket,
            now_ms,
            cost: f64::from(tokens),
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// The writer thread: waits for a decision, takes whatever else is queued, decides the batch.
fn write_batches(db: &Database, mut pending: tokio::sync::mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Kept across batches (its statement cache with it); taken again after a failure.
    let mut connection: Option<PooledConnection> = None;
    while let Some(first) = pending.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let decided = match connection.as_mut() {
            Some(conn) => decide_batch(conn, &batch).map_err(StoreError::from),
            None => db.connection().and_then(|conn| {
                let conn = connection.insert(conn);
                decide_batch(conn, &batch).map_err(StoreError::from)
            }),
        };
        if decided.is_err() {
            connection = None;
        }
        match decided {
            Ok(decisions) => {
                for (waiting, decision) in batch.drain(..).zip(decisions) {
                    // A caller that went away (client disconnected) needs no answer.
                    let _ = waiting.reply.send(Ok(decision));
                }
            }
            Err(error) => {
                // Nothing was committed: every decision of the batch fails alike, none is spent.
                let message = error.to_string();
                for waiting in batch.drain(..) {
                    let _ = waiting.reply.send(Err(StoreError::Batch(message.clone())));
                }
            }
        }
    }
}

/// Decides `batch` in order in one `IMMEDIATE` transaction; a key that appears twice sees
/// its own earlier decision, as it would one transaction at a time.
fn decide_batch(
    conn: &mut rusqlite::Connection,
    batch: &[Pending],
) -> Result<Vec<Decision>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut decisions = Vec::with_capacity(batch.len());
    {
        // Cached per connection: parsed once, not on every decision.
        let mut select =
            tx.prepare_cached("SELECT tokens, updated_ms FROM rate_buckets WHERE key = ?1")?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO rate_buckets (key, tokens, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET tokens = ?2, updated_ms = ?3",
        )?;
        for pending in batch {
            let state = select
                .query_row([&pending.key], |row| {
                    Ok(BucketState {
                        tokens: row.get(0)?,
                        updated_ms: row.get(1)?,
                    })
                })
                .optional()?;
            let (state, decision) = apply(pending.bucket, state, pending.now_ms, pending.cost);
            if pending.cost > 0.0 {
                upsert.execute(rusqlite::params![
                    pending.key,
                    state.tokens,
                    state.updated_ms
                ])?;
            }
            decisions.push(decision);
        }
    }
    tx.commit()?;
    Ok(decisions)
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

    /// Two stores on one file stand for the two backend processes: each has its own writer
    /// and its own batches, and together they still spend exactly the capacity.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_decisions_through_two_writers_spend_exactly_the_capacity() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let db = Database::open(&dir.path().join("buckets.db")).expect("database");
        let stores = [
            std::sync::Arc::new(SqliteRateLimitStore::new(db.clone()).expect("writer")),
            std::sync::Arc::new(SqliteRateLimitStore::new(db).expect("writer")),
        ];
        let bucket = TokenBucketConfig {
            capacity: NonZeroU32::new(150).expect("non-zero"),
            refill_per_minute: NonZeroU32::new(1).expect("non-zero"),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400 {
            let store = std::sync::Arc::clone(&stores[i % 2]);
            tasks.spawn(async move { store.take("user-1", bucket, 1_000).await });
        }
        let mut allowed = 0;
        let mut remaining = Vec::new();
        while let Some(decision) = tasks.join_next().await {
            let decision = decision.expect("task").expect("decision");
            if decision.allowed {
                allowed += 1;
                remaining.push(decision.remaining);
            }
        }
        assert_eq!(allowed, 150);
        // Each token was handed out once: the counts left are 149 down to 0, no repeats.
        remaining.sort_unstable();
        assert_eq!(remaining, (0..150).collect::<Vec<u32>>());
        let other_key = stores[0]
            .take("user-2", bucket, 1_000)
            .await
            .expect("decision");
        assert!(other_key.allowed, "a bucket is per key");
    }

    #[tokio::test]
    async fn a_key_twice_in_one_batch_sees_its_own_first_decision() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let db = Database::open(&dir.path().join("buckets.db")).expect("database");
        let store = SqliteRateLimitStore::new(db).expect("writer");
        let (first, second, peeked) = tokio::join!(
            store.take("user-1", BUCKET, 0),
            store.take("user-1", BUCKET, 0),
            store.peek("user-1", BUCKET, 0),
        );
        let mut remaining = vec![
            first.expect("decision").remaining,
            second.expect("decision").remaining,
        ];
        remaining.sort_unstable();
        assert_eq!(remaining, vec![1, 2]);
        assert!(peeked.expect("decision").remaining <= 3);
        let after = store.peek("user-1", BUCKET, 0).await.expect("decision");
        assert_eq!(after.remaining, 1);
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
