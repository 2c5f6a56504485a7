//! Where the generate budget and the login throttle live. `[store] kind` picks the SQLite
//! file (enough for the backends of one host) or Redis (shared by every host), and
//! `on_store_error` what the budget does while Redis does not answer.
//!
//! The login throttle is never wrapped in a fallback: a throttle each process kept for itself
//! would multiply the attempts an attacker gets, so login answers 503 instead.

pub mod fallback;
pub mod redis;
#[cfg(test)]
mod tests;

use crate::auth::throttle::{LoginThrottleStore, SqliteLoginThrottle};
use crate::config::{OnStoreError, StoreConfig, StoreKind};
use crate::db::{Database, StoreError};
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimitStore, SqliteRateLimitStore};

use self::fallback::FallbackRateLimitStore;
use self::redis::{Clock, RedisLoginThrottle, RedisRateLimitStore, RedisStore};

/// The `store` label of the generate budget's fallback series.
pub const RATE_LIMIT_STORE: &str = "rate_limit";

/// The two stores a `Service` decides with.
pub struct Stores {
    pub throttle: Box<dyn LoginThrottleStore>,
    pub limiter: Box<dyn RateLimitStore>,
}

impl Stores {
    /// The stores `config` names. Connects to nothing yet: Redis is reached on the first
    /// decision, so a backend starts (and falls back, or answers 503) while Redis is down.
    /// Fails only if a store cannot start what it runs on.
    pub fn new(config: &StoreConfig, db: &Database, metrics: &Metrics) -> Result<Self, StoreError> {
        let redis = match (config.kind, &config.url) {
            (StoreKind::Redis, Some(url)) => url,
            // `Config::parse` refuses kind = "redis" without a url.
            (StoreKind::Sqlite, _) | (StoreKind::Redis, None) => {
                return Ok(Self {
                    throttle: Box::new(SqliteLoginThrottle::new(db.clone())),
                    limiter: Box::new(SqliteRateLimitStore::new(db.clone())?),
                });
            }
        };
        let redis = RedisStore::new(redis.client(), config.timeout, Clock::Server);
        let shared = RedisRateLimitStore::new(redis.clone());
        let limiter: Box<dyn RateLimitStore> = match config.on_store_error {
            OnStoreError::Local => Box::new(FallbackRateLimitStore::new(
                shared,
                metrics.store_fallback(RATE_LIMIT_STORE),
            )),
            OnStoreError::Deny => Box::new(shared),
        };
        Ok(Self {
            throttle: Box::new(RedisLoginThrottle::new(redis)),
            limiter,
        })
    }
}
