//! The generate budget and the login throttle in Redis, shared by every backend of every host.
//!
//! Each decision is one Lua script, which Redis runs atomically, so no two processes can both
//! spend the last token or both miss a failure. Scripts go by EVALSHA and are loaded again
//! when Redis answers NOSCRIPT (after a restart or a `SCRIPT FLUSH`): `redis::Script` does
//! both. Every key a script writes gets a TTL, so nothing outlives the state it stands for: a
//! bucket expires once it is full again, a throttle window once it closes. Every call is
//! bounded by `[store] timeout`, and any failure, a timeout included, is
//! `StoreError::Unavailable`.
//!
//! The budget is GCRA: a bucket is its theoretical arrival time (TAT), the instant it will be
//! full again, and the debt `TAT - now` is the tokens it lacks. Time is counted in units of
//! 1/`refill_per_minute` ms, in which one token is exactly `UNITS_PER_TOKEN` units whatever the
//! rate, so the script and `ratelimit::apply` make the same decisions to the unit (the
//! differential test below replays the same sequences through both). The TAT is stored as
//! whole milliseconds plus the units left over, so every number the script handles is a small
//! integer that Lua's doubles hold exactly.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};
use tokio::sync::OnceCell;

use crate::auth::throttle::{self, FailureWindow, LoginThrottleStore};
use crate::config::{LoginThrottleConfig, TokenBucketConfig};
use crate::db::StoreError;
use crate::ratelimit::{self, Decision, RateLimitStore, UNITS_PER_TOKEN};

/// Key prefixes, so the budget and the throttle never collide with each other or with other
/// data in the same database.
const BUCKET_PREFIX: &str = "canary:bucket:";
const THROTTLE_PREFIX: &str = "canary:login:";

/// The instant the script decides at, in ms: `ARGV[1]` if given (tests), else Redis's `TIME`.
const NOW: &str = "
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
";

/// GCRA. KEYS[1]: the bucket. ARGV: now (or empty), capacity, refill per minute, cost (whole
/// tokens: 1 to take, 0 to peek), TTL slack in ms (`RedisStore::ttl_slack_ms`). Returns
/// {allowed (0/1), debt in units after the decision}.
static BUCKET_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local capacity = tonumber(ARGV[2])
local refill = tonumber(ARGV[3])
local cost = tonumber(ARGV[4]) * {UNITS_PER_TOKEN}
-- Floor division of integers held in doubles, exact however the quotient rounds.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local debt = 0
local tat = redis.call('HMGET', KEYS[1], 'ms', 'units')
if tat[1] then
  debt = math.max(0, (tonumber(tat[1]) - now) * refill + tonumber(tat[2]))
end
local allowed = debt + cost <= capacity * {UNITS_PER_TOKEN}
if allowed and cost > 0 then
  debt = debt + cost
  local ms = idiv(debt, refill)
  redis.call('HSET', KEYS[1], 'ms', string.format('%d', now + ms),
    'units', string.format('%d', debt - ms * refill))
  -- Gone once full again: a missing bucket is a full one.
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ms + 1 + tonumber(ARGV[5])))
end
return {{allowed and 1 or 0, debt}}
"
    ))
});

/// The window after one more failure (`throttle::after_failure`). KEYS[1]: the email's
/// window. ARGV: now (or empty), window in ms, TTL slack in ms. The key expires when its
/// window closes.
static FAILURE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local window = tonumber(ARGV[2])
local failures, started = 1, now
local stored = redis.call('HMGET', KEYS[1], 'failures', 'started_ms')
if stored[1] and now < tonumber(stored[2]) + window then
  failures, started = tonumber(stored[1]) + 1, tonumber(stored[2])
end
redis.call('HSET', KEYS[1], 'failures', string.format('%d', failures),
  'started_ms', string.format('%d', started))
redis.call('PEXPIRE', KEYS[1],
  string.format('%d', math.max(1, started + window - now) + tonumber(ARGV[3])))
return 1
"
    ))
});

/// The email's window and the instant it is judged at. KEYS[1]: the window. ARGV: now (or
/// empty). Returns {now} without a window, {now, failures, started_ms} with one.
static WINDOW_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local stored = redis.call('HMGET', KEYS[1], 'failures', 'started_ms')
if stored[1] then
  return {{now, tonumber(stored[1]), tonumber(stored[2])}}
end
return {{now}}
"
    ))
});

/// Whose clock decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Redis's `TIME`: every process of every host judges by the same clock.
    Server,
    /// The `now_ms` the caller passes: for tests that replay decisions at chosen instants.
    Caller,
}

/// One Redis, reached through a `ConnectionManager` that reconnects by itself.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    /// Made on first use, inside the async runtime the first decision runs on.
    connection: Arc<OnceCell<ConnectionManager>>,
    timeout: Duration,
    clock: Clock,
}

impl RedisStore {
    pub fn new(client: redis::Client, timeout: Duration, clock: Clock) -> Self {
        Self {
            client,
            connection: Arc::new(OnceCell::new()),
            timeout,
            clock,
        }
    }

    async fn connection(&self) -> RedisResult<ConnectionManager> {
        let (client, timeout) = (&self.client, self.timeout);
        self.connection
            .get_or_try_init(|| async move {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // A request waits for a reconnection no longer than `timeout` anyway; the
                    // retries only decide how soon after Redis returns the connection is back.
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client.clone(), config)
            })
            .await
            .cloned()
    }

    /// `ARGV[1]` of every script: the caller's instant, or empty for Redis's `TIME`.
    fn now_arg(&self, now_ms: i64) -> String {
        match self.clock {
            Clock::Server => String::new(),
            Clock::Caller => now_ms.to_string(),
        }
    }

    /// How much longer than needed a key lives. None with Redis's clock. With the caller's,
    /// its instants need not follow Redis's (a test replays a minute in a millisecond), so a
    /// key must not expire by Redis's clock while the caller's says it still holds something;
    /// a key that outlives its state is harmless, as a full bucket or a closed window.
    fn ttl_slack_ms(&self) -> u64 {
        match self.clock {
            Clock::Server => 0,
            Clock::Caller => 3_600_000,
        }
    }

    /// Runs `call` within `timeout`; every failure means Redis gave no answer to rely on.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::Unavailable(format!("redis {what}: {error}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis {what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// The generate budget in Redis.
pub struct RedisRateLimitStore {
    redis: RedisStore,
}

impl RedisRateLimitStore {
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }
}

#[async_trait]
impl RateLimitStore for RedisRateLimitStore {
    async fn decide(
        &self,
        key: &str,
        bucket: TokenBucketConfig,
        now_ms: i64,
        cost: u32,
    ) -> Result<Decision, StoreError> {
        let redis = &self.redis;
        let (allowed, debt): (i64, i64) = redis
            .bounded("rate limit", async {
                let mut connection = redis.connection().await?;
                BUCKET_SCRIPT
                    .key(format!("{BUCKET_PREFIX}{key}"))
                    .arg(redis.now_arg(now_ms))
                    .arg(bucket.capacity.get())
                    .arg(bucket.refill_per_minute.get())
                    .arg(cost)
                    .arg(redis.ttl_slack_ms())
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        let capacity = i64::from(bucket.capacity.get()) * UNITS_PER_TOKEN;
        Ok(ratelimit::decision(
            bucket,
            allowed == 1,
            capacity - debt,
            i64::from(cost) * UNITS_PER_TOKEN,
        ))
    }
}

/// The login throttle in Redis.
pub struct RedisLoginThrottle {
    redis: RedisStore,
}

impl RedisLoginThrottle {
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }
}

fn window_ms(config: LoginThrottleConfig) -> u64 {
    u64::try_from(config.window_seconds.get().as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl LoginThrottleStore for RedisLoginThrottle {
    async fn locked_for(
        &self,
        email: &str,
        config: LoginThrottleConfig,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let redis = &self.redis;
        let answer: Vec<i64> = redis
            .bounded("login throttle", async {
                let mut connection = redis.connection().await?;
                WINDOW_SCRIPT
                    .key(format!("{THROTTLE_PREFIX}{email}"))
                    .arg(redis.now_arg(now_ms))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        let (now_ms, window) = match answer[..] {
            [now_ms] => (now_ms, None),
            [now_ms, failures, started_ms] => (
                now_ms,
                Some(FailureWindow {
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    started_ms,
                }),
            ),
            _ => {
                return Err(StoreError::Unavailable(format!(
                    "redis login throttle: unexpected answer {answer:?}"
                )));
            }
        };
        Ok(throttle::locked_for(config, window, now_ms))
    }

    async fn record_failure(
        &self,
        email: &str,
        config: LoginThrottleConfig,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let redis = &self.redis;
        redis
            .bounded("login throttle", async {
                let mut connection = redis.connection().await?;
                FAILURE_SCRIPT
                    .key(format!("{THROTTLE_PREFIX}{email}"))
                    .arg(redis.now_arg(now_ms))
                    .arg(window_ms(config))
                    .arg(redis.ttl_slack_ms())
                    .invoke_async::<()>(&mut connection)
                    .await
            })
            .await
    }

    async fn clear(&self, email: &str) -> Result<(), StoreError> {
        let redis = &self.redis;
        redis
            .bounded("login throttle", async {
                let mut connection = redis.connection().await?;
                redis::cmd("DEL")
                    .arg(format!("{THROTTLE_PREFIX}{email}"))
                    .exec_async(&mut connection)
                    .await
            })
            .await
    }
}
