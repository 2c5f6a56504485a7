//! The per-email login throttle: it locks, it unlocks, and a success resets it.

use super::login_body;
use crate::routes::LOGIN;
use crate::testing::client::{Answer, demo_token, post_json};
use crate::testing::{TEST_MAX_LOGIN_FAILURES, TestEnv, TestServer};

async fn fail_login(server: &TestServer, email: &str) -> Answer {
    post_json(server, LOGIN, &login_body(email, "wrong-password"), None).await
}

pub async fn login_throttle_locks_then_unlocks(server: &TestServer, _: &TestEnv) {
    // Known and unknown emails are throttled alike, so throttling reveals nothing.
    for email in ["demo@example.com", "ghost@example.com"] {
        for _ in 0..TEST_MAX_LOGIN_FAILURES {
            assert_eq!(fail_login(server, email).await.status, 401);
        }
        let locked = fail_login(server, email).await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        assert_eq!(locked.header("retry-after"), Some("1"));
        assert_eq!(locked.json()["error"]["code"], "RATE_LIMITED");
    }
    // Even the right password waits for the window.
    let right = post_json(
        server,
        LOGIN,
        &login_body("DEMO@example.com", "demo-password"),
        None,
    )
    .await;
    assert_eq!(right.status, 429);
    // The one-second window closes; poll (bounded) rather than sleep a guessed time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = post_json(
            server,
            LOGIN,
            &login_body("demo@example.com", "demo-password"),
            None,
        )
        .await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the lock outlived its window"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
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
