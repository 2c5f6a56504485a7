//! The per-email login throttle: it locks, it unlocks, and a success resets it.
//!
//! The window runs on the server's clock, so each case picks one it can rely on: long enough
//! that its hashes fit in it on two loaded cores, and short only where the case waits it out.

use crate::config::Seconds;
use std::time::Duration;

use super::login;
use crate::testing::client::{Answer, demo_token};
use crate::testing::{TEST_MAX_LOGIN_FAILURES, TestEnv, TestServer, eventually};

/// The window of `a_short_window`: room for a few hashes on loaded cores, quick to wait out.
const SHORT_WINDOW_SECONDS: u64 = 5;

/// For a case that waits for the window to close.
pub fn a_short_window() -> TestEnv {
    TestEnv::with(|c| c.auth.login_throttle.window_seconds = Seconds::of(SHORT_WINDOW_SECONDS))
}

/// For a case that must stay within one window: no test outlasts an hour, so a count that
/// drops was reset, not expired.
pub fn a_long_window() -> TestEnv {
    TestEnv::with(|c| c.auth.login_throttle.window_seconds = Seconds::of(3600))
}

async fn fail_login(server: &TestServer, email: &str) -> Answer {
    login(server, email, "wrong-password").await
}

pub async fn login_throttle_locks_then_unlocks(server: &TestServer, _: &TestEnv) {
    // Known and unknown emails are throttled alike, so throttling reveals nothing. The demo
    // user comes last, so the right password is tried while its window is fresh.
    for email in ["ghost@example.com", "demo@example.com"] {
        for _ in 0..TEST_MAX_LOGIN_FAILURES {
            assert_eq!(fail_login(server, email).await.status, 401);
        }
        let locked = fail_login(server, email).await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        let retry_after = locked.header("retry-after").and_then(|s| s.parse().ok());
        assert!(
            retry_after.is_some_and(|s: u64| (1..=SHORT_WINDOW_SECONDS).contains(&s)),
            "retry-after {retry_after:?} is within the window"
        );
        assert_eq!(locked.json()["error"]["code"], "RATE_LIMITED");
    }
    // Even the right password waits for the window.
    let right = login(server, "DEMO@example.com", "demo-password").await;
    assert_eq!(right.status, 429);
    // The window closes, and the lock with it.
    let limit = Duration::from_secs(SHORT_WINDOW_SECONDS + 10);
    eventually("the lock ends with its window", limit, async || {
        let answer = login(server, "demo@example.com", "demo-password").await;
        if answer.status != 200 {
            assert_eq!(answer.status, 429, "{}", answer.body);
        }
        (answer.status == 200).then_some(())
    })
    .await;
}

pub async fn login_success_resets_the_throttle(server: &TestServer, _: &TestEnv) {
    for _ in 0..TEST_MAX_LOGIN_FAILURES - 1 {
        assert_eq!(fail_login(server, "demo@example.com").await.status, 401);
    }
    demo_token(server).await;
    for _ in 0..TEST_MAX_LOGIN_FAILURES {
        assert_eq!(fail_login(server, "demo@example.com").await.status, 401);
    }
    assert_eq!(fail_login(server, "demo@example.com").await.status, 429);
}
