//! Both stores against the pure functions (`ratelimit::apply`, `throttle::after_failure` and
//! `throttle::locked_for`): the same reproducible sequences of decisions, at instants the test
//! picks, must give the same answers field by field from SQLite, from the Redis scripts and
//! from the functions. And what only Redis has: TTLs, script reloading, unavailability.

use std::num::NonZeroU32;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::redis::{Clock, RedisLoginThrottle, RedisRateLimitStore, RedisStore};
use crate::auth::throttle::{self, LoginThrottleStore, SqliteLoginThrottle};
use crate::config::{LoginThrottleConfig, OnStoreError, RedisUrl, Seconds, TokenBucketConfig};
use crate::db::{Database, StoreError};
use crate::ratelimit::{self, RateLimitStore, SqliteRateLimitStore};
use crate::testing::non_zero;
use crate::testing::redis::RedisServer;

/// Capacity and refill per minute: rates that divide a minute and rates that do not (one
/// token every 8571.43 ms at 7), where a float bucket and an integer GCRA would part ways.
const BUCKETS: [(u32, u32); 6] = [(1, 1), (3, 7), (5, 13), (2, 60), (10, 7), (4, 1000)];
const STEPS: usize = 400;
/// Around now, as production's instants are.
const START_MS: i64 = 1_764_000_000_000;

fn bucket((capacity, refill): (u32, u32)) -> TokenBucketConfig {
    TokenBucketConfig {
        capacity: non_zero(capacity),
        refill_per_minute: non_zero(refill),
    }
}

/// The next instant: mostly right at a token's edge (one interval, a millisecond either
/// side), sometimes the same instant, sometimes a long wait.
fn next_instant(rng: &mut StdRng, now: i64, bucket: TokenBucketConfig) -> i64 {
    let interval: i64 = 60_000_u32.div_ceil(bucket.refill_per_minute.get()).into();
    now + match rng.random_range(0..6) {
        0 => 0,
        1 => interval - 1,
        2 => interval,
        3 => interval + 1,
        4 => rng.random_range(0..interval * 3),
        _ => rng.random_range(0..20),
    }
}

/// Replays a sequence of takes and peeks per bucket through `store` and through `apply`.
async fn replays_like_the_pure_bucket(store: &dyn RateLimitStore) {
    for (i, &config) in BUCKETS.iter().enumerate() {
        let bucket = bucket(config);
        let key = format!("differential:{i}");
        let mut rng = StdRng::seed_from_u64(i as u64);
        let mut state = None;
        let mut now = START_MS;
        let mut refused = 0;
        for step in 0..STEPS {
            now = next_instant(&mut rng, now, bucket);
            let take = rng.random_bool(0.8);
            let (after, mut expected) =
                ratelimit::apply(bucket, state, now, if take { 1.0 } else { 0.0 });
            let got = if take {
                state = Some(after);
                store.take(&key, bucket, now).await
            } else {
                expected.retry_after_secs = None;
                store.peek(&key, bucket, now).await
            }
            .expect("the store answers");
            assert_eq!(got, expected, "bucket {config:?}, step {step}, at {now} ms");
            refused += usize::from(!got.allowed);
        }
        assert!(
            (1..STEPS).contains(&refused),
            "bucket {config:?}: the sequence must both allow and refuse, refused {refused}"
        );
    }
}

const THROTTLE: LoginThrottleConfig = LoginThrottleConfig {
    max_failures: NonZeroU32::new(3).expect("non-zero"),
    window_seconds: Seconds::of(10),
};

/// Replays failures, successes and checks through `store` and through the pure functions.
async fn replays_like_the_pure_throttle(store: &dyn LoginThrottleStore) {
    let mut rng = StdRng::seed_from_u64(13);
    let mut window = None;
    let mut now = START_MS;
    let mut locked = 0;
    for step in 0..STEPS {
        now += rng.random_range(0..2_500);
        match rng.random_range(0..10) {
            0 => {
                store.clear("who@example.com").await.expect("cleared");
                window = None;
            }
            1..=5 => {
                store
                    .record_failure("who@example.com", THROTTLE, now)
                    .await
                    .expect("recorded");
                window = Some(throttle::after_failure(THROTTLE, window, now));
            }
            _ => {
                let got = store
                    .locked_for("who@example.com", THROTTLE, now)
                    .await
                    .expect("the store answers");
                let expected = throttle::locked_for(THROTTLE, window, now);
                assert_eq!(got, expected, "step {step}, at {now} ms, window {window:?}");
                locked += usize::from(got.is_some());
            }
        }
    }
    assert!(locked > 0, "the sequence must lock at least once");
}

fn sqlite() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = Database::open(&dir.path().join("gateway.db")).expect("the database opens");
    (dir, db)
}

fn redis_store(server: &RedisServer, clock: Clock) -> RedisStore {
    let url = RedisUrl::new(&server.url()).expect("a valid URL");
    let config = server.store_config(OnStoreError::Deny);
    RedisStore::new(url.client(), config.timeout, clock)
}

#[tokio::test]
async fn the_sqlite_bucket_replays_like_the_pure_one() {
    let (_dir, db) = sqlite();
    replays_like_the_pure_bucket(&SqliteRateLimitStore::new(db).expect("writer")).await;
}

#[tokio::test]
async fn the_redis_gcra_replays_like_the_pure_bucket() {
    let server = RedisServer::start().await;
    let store = RedisRateLimitStore::new(redis_store(&server, Clock::Caller));
    replays_like_the_pure_bucket(&store).await;
}

#[tokio::test]
async fn the_sqlite_throttle_replays_like_the_pure_one() {
    let (_dir, db) = sqlite();
    replays_like_the_pure_throttle(&SqliteLoginThrottle::new(db)).await;
}

#[tokio::test]
async fn the_redis_throttle_replays_like_the_pure_one() {
    let server = RedisServer::start().await;
    let store = RedisLoginThrottle::new(redis_store(&server, Clock::Caller));
    replays_like_the_pure_throttle(&store).await;
}

/// On Redis's own clock, every key written has a TTL, no longer than the state it holds: a
/// bucket until it is full, a window until it closes.
#[tokio::test]
async fn every_key_expires_when_its_state_would() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server, Clock::Server);
    let bucket = bucket((2, 60));
    let limiter = RedisRateLimitStore::new(redis.clone());
    let taken = limiter.take("user", bucket, 0).await.expect("an answer");
    assert_eq!(taken.remaining, 1);
    let throttle = RedisLoginThrottle::new(redis);
    throttle
        .record_failure("who@example.com", THROTTLE, 0)
        .await
        .expect("recorded");
    let mut connection = server.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("PTTL");
        // One token at 60 a minute refills in a second; the window is ten.
        let longest = if key.contains("bucket") {
            1_001
        } else {
            10_000
        };
        assert!((1..=longest).contains(&ttl), "{key}: PTTL {ttl}");
    }
}

/// Decisions go by EVALSHA, and a Redis that lost its scripts (`SCRIPT FLUSH`, a restart) is
/// sent them again, without the caller seeing it.
#[tokio::test]
async fn scripts_go_by_evalsha_and_are_reloaded_after_a_flush() {
    let server = RedisServer::start().await;
    let limiter = RedisRateLimitStore::new(redis_store(&server, Clock::Server));
    let bucket = bucket((3, 1));
    let mut connection = server.connection().await;
    let mut remaining = Vec::new();
    for _ in 0..2 {
        remaining.push(
            limiter
                .take("user", bucket, 0)
                .await
                .expect("an answer")
                .remaining,
        );
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec_async(&mut connection)
            .await
            .expect("SCRIPT FLUSH");
    }
    remaining.push(
        limiter
            .take("user", bucket, 0)
            .await
            .expect("an answer")
            .remaining,
    );
    assert_eq!(remaining, vec![2, 1, 0]);
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    assert!(stats.contains("cmdstat_evalsha:"), "{stats}");
    assert!(
        !stats.contains("cmdstat_eval:"),
        "never the whole script: {stats}"
    );
}

/// A Redis nobody answers for is an `Unavailable` store, from every call, within the timeout.
#[tokio::test]
async fn an_unreachable_redis_is_unavailable() {
    let mut server = RedisServer::start().await;
    let redis = redis_store(&server, Clock::Server);
    server.kill();
    let limiter = RedisRateLimitStore::new(redis.clone());
    let throttle = RedisLoginThrottle::new(redis);
    let bucket = bucket((3, 1));
    let errors = [
        limiter.take("user", bucket, 0).await.err(),
        limiter.peek("user", bucket, 0).await.err(),
        throttle.locked_for("who", THROTTLE, 0).await.err(),
        throttle.record_failure("who", THROTTLE, 0).await.err(),
        throttle.clear("who").await.err(),
    ];
    for error in errors {
        assert!(
            matches!(error, Some(StoreError::Unavailable(_))),
            "{error:?}"
        );
    }
}
