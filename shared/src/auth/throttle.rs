//! Login throttling per account, keyed by the normalised email whether or not it exists.
//!
//! A window opens at the first failure; after `max_failures` in it, attempts are refused until
//! it closes. Refused attempts do not extend it, so nobody can lock a victim out for longer
//! than one window. A success clears the count.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior};

use crate::config::LoginThrottleConfig;
use crate::db::{Database, StoreError};

/// Failures of one email: how many, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureWindow {
    pub failures: u32,
    pub started_ms: i64,
}

fn window_ms(config: LoginThrottleConfig) -> i64 {
    i64::try_from(config.window_seconds.get().as_millis()).unwrap_or(i64::MAX)
}

/// Seconds the caller must wait, if `window` locks the account at `now_ms`.
pub fn locked_for(
    config: LoginThrottleConfig,
    window: Option<FailureWindow>,
    now_ms: i64,
) -> Option<u64> {
    let window = window?;
    let ends_ms = window.started_ms + window_ms(config);
    if window.failures >= config.max_failures.get() && now_ms < ends_ms {
        Some(((ends_ms - now_ms) as u64).div_ceil(1000).max(1))
    } else {
        None
    }
}

/// The window after one more failure at `now_ms`.
pub fn after_failure(
    config: LoginThrottleConfig,
    window: Option<FailureWindow>,
    now_ms: i64,
) -> FailureWindow {
    match window {
        Some(w) if now_ms < w.started_ms + window_ms(config) => FailureWindow {
            failures: w.failures.saturating_add(1),
            started_ms: w.started_ms,
        },
        _ => FailureWindow {
            failures: 1,
            started_ms: now_ms,
        },
    }
}

#[async_trait]
pub trait LoginThrottleStore: Send + Sync {
    /// `Some(seconds to wait)` if `email` is locked out now.
    async fn locked_for(
        &self,
        email: &str,
        config: LoginThrottleConfig,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError>;
    async fn record_failure(
        &self,
        email: &str,
        config: LoginThrottleConfig,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    async fn clear(&self, email: &str) -> Result<(), StoreError>;
}

pub struct SqliteLoginThrottle {
    db: Database,
}

impl SqliteLoginThrottle {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

fn read_window(
    conn: &rusqlite::Connection,
    email: &str,
) -> rusqlite::Result<Option<FailureWindow>> {
    conn.query_row(
        "SELECT failures, window_started_ms FROM login_failures WHERE email = ?1",
        [email],
        |row| {
            Ok(FailureWindow {
                failures: row.get(0)?,
                started_ms: row.get(1)?,
            })
        },
    )
    .optional()
}

#[async_trait]
impl LoginThrottleStore for SqliteLoginThrottle {
    async fn locked_for(
        &self,
        email: &str,
        config: LoginThrottleConfig,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let email = email.to_owned();
        let window = self.db.run(move |conn| read_window(conn, &email)).await?;
        Ok(locked_for(config, window, now_ms))
    }

    async fn record_failure(
        &self,
        email: &str,
        config: LoginThrottleConfig,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let email = email.to_owned();
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let window = after_failure(config, read_window(&tx, &email)?, now_ms);
                tx.execute(
                    "INSERT INTO login_failures (email, failures, window_started_ms)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT(email) DO UPDATE SET failures = ?2, window_started_ms = ?3",
                    rusqlite::params![email, window.failures, window.started_ms],
                )?;
                tx.commit()
            })
            .await
    }

    async fn clear(&self, email: &str) -> Result<(), StoreError> {
        let email = email.to_owned();
        self.db
            .run(move |conn| {
                conn.execute("DELETE FROM login_failures WHERE email = ?1", [email])
                    .map(|_| ())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use crate::config::Seconds;

    use super::*;

    const CONFIG: LoginThrottleConfig = LoginThrottleConfig {
        max_failures: NonZeroU32::new(3).expect("non-zero"),
        window_seconds: Seconds::of(60),
    };

    #[test]
    fn locks_after_max_failures_until_the_window_closes() {
        let mut window = None;
        for t in [0, 1_000, 2_000] {
            assert_eq!(locked_for(CONFIG, window, t), None);
            window = Some(after_failure(CONFIG, window, t));
        }
        assert_eq!(locked_for(CONFIG, window, 2_000), Some(58));
        assert_eq!(locked_for(CONFIG, window, 59_500), Some(1));
        assert_eq!(locked_for(CONFIG, window, 60_000), None);
    }

    #[test]
    fn a_failure_after_the_window_starts_a_new_one() {
        let old = Some(FailureWindow {
            failures: 3,
            started_ms: 0,
        });
        assert_eq!(
            after_failure(CONFIG, old, 61_000),
            FailureWindow {
                failures: 1,
                started_ms: 61_000
            }
        );
    }
}
