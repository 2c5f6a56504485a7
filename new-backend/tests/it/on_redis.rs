//! Both backends on one Redis, as on several hosts: one generate budget and one login
//! throttle across them, and what each does while Redis is down. No cookies and no proxy:
//! each request goes straight to the side the test picks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use shared::config::{OnStoreError, Seconds};
use shared::routes::{GENERATE, LOGIN, METRICS};
use shared::testing::client::{Answer, client, demo_token, get, post_json, send};
use shared::testing::redis::RedisServer;
use shared::testing::{
    TEST_MAX_LOGIN_FAILURES, TEST_RATE_LIMIT, TestEnv, TestServer, eventually, non_zero,
};

use crate::differential::both;

/// Long enough for a few password hashes on two loaded cores, short enough to wait out.
const WINDOW_SECONDS: u64 = 5;
/// How long a backend may take to notice that Redis is back (it asks once a second).
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);
/// Requests each load task sends at most, whatever happens.
const LOAD_LIMIT: usize = 5_000;

fn on(redis: &RedisServer, on_store_error: OnStoreError) -> TestEnv {
    TestEnv::with(|c| {
        c.store = redis.store_config(on_store_error);
        c.auth.login_throttle.window_seconds = Seconds::of(WINDOW_SECONDS);
    })
}

async fn generate(server: &TestServer, token: &str) -> Answer {
    post_json(server, GENERATE, &json!({"prompt": "count"}), Some(token)).await
}

async fn login(server: &TestServer, password: &str) -> Answer {
    let body = json!({"email": "demo@example.com", "password": password});
    post_json(server, LOGIN, &body, None).await
}

fn remaining(answer: &Answer) -> Option<u32> {
    answer.header("ratelimit-remaining")?.parse().ok()
}

/// `answer` is the 429 of a spent budget, with when to come back.
fn assert_spent(answer: &Answer) {
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "RATE_LIMITED");
    assert_eq!(remaining(answer), Some(0));
    let retry: Option<u64> = answer.header("retry-after").and_then(|s| s.parse().ok());
    // One token a minute: the next arrives within 60 seconds.
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
}

/// `answer` is the 503 of a Redis that does not answer, in the contract's shape.
fn assert_store_unavailable(answer: &Answer) {
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"error": {
            "code": "STORE_UNAVAILABLE",
            "message": "a shared store is unreachable; retry shortly"
        }})
    );
    assert_eq!(answer.header("retry-after"), Some("1"));
}

/// The value of the series of `name` whose labels include `labels`, on `server`.
async fn metric(server: &TestServer, name: &str, labels: &str) -> Option<u64> {
    let text = get(server, METRICS).await.body;
    text.lines()
        .find(|line| line.starts_with(&format!("{name}{{")) && line.contains(labels))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_spend_one_budget_exactly() {
    let redis = RedisServer::start().await;
    let env = on(&redis, OnStoreError::Deny);
    let (legacy, new) = both(&env).await;
    let token = demo_token(&legacy).await;
    let sides = [&legacy, &new];
    for spent in 0..TEST_RATE_LIMIT {
        let answer = generate(sides[spent as usize % 2], &token).await;
        assert_eq!(answer.status, 200, "request {spent}: {}", answer.body);
        assert_eq!(remaining(&answer), Some(TEST_RATE_LIMIT - 1 - spent));
    }
    for side in sides {
        assert_spent(&generate(side, &token).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_throttle_locks_and_unlocks_across_both_backends() {
    let redis = RedisServer::start().await;
    let env = on(&redis, OnStoreError::Deny);
    let (legacy, new) = both(&env).await;
    let sides = [&legacy, &new];
    for failure in 0..TEST_MAX_LOGIN_FAILURES {
        let answer = login(sides[failure as usize % 2], "wrong-password").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    // Locked on both, even for the right password.
    for side in sides {
        let locked = login(side, "demo-password").await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        let retry: Option<u64> = locked.header("retry-after").and_then(|s| s.parse().ok());
        assert!(
            retry.is_some_and(|s| (1..=WINDOW_SECONDS).contains(&s)),
            "{retry:?}"
        );
    }
    // The window closes for both: the one that logs in first clears it for the other too.
    for side in sides {
        let limit = Duration::from_secs(WINDOW_SECONDS + 10);
        eventually("the lock ends with its window", limit, async || {
            let answer = login(side, "demo-password").await;
            if answer.status != 200 {
                assert_eq!(answer.status, 429, "{}", answer.body);
            }
            (answer.status == 200).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_local_fallback_keeps_answering_then_shares_again() {
    let mut redis = RedisServer::start().await;
    let env = on(&redis, OnStoreError::Local);
    let (legacy, new) = both(&env).await;
    let token = demo_token(&legacy).await;
    let sides = [&legacy, &new];
    for (spent, side) in sides.into_iter().enumerate() {
        let answer = generate(side, &token).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(remaining(&answer), Some(TEST_RATE_LIMIT - 1 - spent as u32));
    }

    redis.kill();
    // Each process decides alone, on a full budget of its own: answers, never a 5xx.
    for side in sides {
        for left in (0..TEST_RATE_LIMIT).rev() {
            let answer = generate(side, &token).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(remaining(&answer), Some(left));
        }
        assert_spent(&generate(side, &token).await);
        let labels = r#"store="rate_limit""#;
        assert_eq!(metric(side, "store_degraded", labels).await, Some(1));
        let local = metric(side, "store_fallback_total", labels).await;
        assert!(
            local.is_some_and(|n| n > u64::from(TEST_RATE_LIMIT)),
            "{local:?}"
        );
        // Login never fails open: without its throttle it answers 503.
        assert_store_unavailable(&login(side, "demo-password").await);
    }

    // A fresh Redis on the same port: no buckets, no scripts. Each side's own budget is spent,
    // so its first 200 is the shared budget's, which counts both sides again.
    redis.restart().await;
    for (spent, side) in sides.into_iter().enumerate() {
        let answer = eventually("the backend asks Redis again", RECOVERY_LIMIT, async || {
            let answer = generate(side, &token).await;
            match answer.status {
                200 => Some(answer),
                429 => None,
                _ => panic!("neither answered nor refused: {}", answer.body),
            }
        })
        .await;
        assert_eq!(remaining(&answer), Some(TEST_RATE_LIMIT - 1 - spent as u32));
    }
    for spent in 2..TEST_RATE_LIMIT {
        let answer = generate(sides[spent as usize % 2], &token).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(remaining(&answer), Some(TEST_RATE_LIMIT - 1 - spent));
    }
    for side in sides {
        assert_spent(&generate(side, &token).await);
        assert_eq!(
            metric(side, "store_degraded", r#"store="rate_limit""#).await,
            Some(0)
        );
        assert_eq!(login(side, "demo-password").await.status, 200);
    }
}

/// Redis is killed and restarted while both backends are under load: with a budget too large
/// to spend, every request is answered 200, before, during and after the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_with_local_fallback_answers_every_request() {
    let mut redis = RedisServer::start().await;
    let env = TestEnv::with(|c| {
        c.store = redis.store_config(OnStoreError::Local);
        c.rate_limit.generate.capacity = non_zero(1_000_000);
    });
    let (legacy, new) = both(&env).await;
    let token = demo_token(&legacy).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = [&legacy, &new]
        .into_iter()
        .map(|side| {
            let request = client()
                .post(side.url(GENERATE))
                .header("content-type", "application/json")
                .bearer_auth(&token)
                .body(json!({"prompt": "load"}).to_string());
            let (answered, stop) = (Arc::clone(&answered), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) && statuses.len() < LOAD_LIMIT {
                    let answer = send(request.try_clone().expect("a body in memory")).await;
                    statuses.push((answer.status, answer.body));
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                statuses
            })
        })
        .collect();
    let more_answers = async |what: &str, more: usize| {
        let target = answered.load(Ordering::SeqCst) + more;
        eventually(what, Duration::from_secs(30), async || {
            (answered.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
    };

    more_answers("answers with Redis up", 20).await;
    redis.kill();
    more_answers("answers with Redis down", 40).await;
    redis.restart().await;
    for side in [&legacy, &new] {
        eventually(
            "the backend decides with Redis again",
            RECOVERY_LIMIT,
            async || {
                let degraded = metric(side, "store_degraded", r#"store="rate_limit""#).await;
                (degraded == Some(0)).then_some(())
            },
        )
        .await;
    }
    more_answers("answers with Redis back", 20).await;
    stop.store(true, Ordering::SeqCst);

    for task in load {
        let statuses = task.await.expect("the load task");
        assert!(statuses.len() < LOAD_LIMIT, "the load outlasted its bound");
        for (status, body) in statuses {
            assert_eq!(status, 200, "{body}");
        }
    }
    for side in [&legacy, &new] {
        let local = metric(side, "store_fallback_total", r#"store="rate_limit""#).await;
        assert!(local.is_some_and(|n| n > 0), "{local:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_deny_answers_503_on_both_backends() {
    let mut redis = RedisServer::start().await;
    let env = on(&redis, OnStoreError::Deny);
    let (legacy, new) = both(&env).await;
    let token = demo_token(&legacy).await;
    assert_eq!(generate(&new, &token).await.status, 200);
    redis.kill();
    for side in [&legacy, &new] {
        assert_store_unavailable(&generate(side, &token).await);
        assert_store_unavailable(&login(side, "demo-password").await);
    }
    redis.restart().await;
    for side in [&legacy, &new] {
        eventually(
            "the backend reaches Redis again",
            RECOVERY_LIMIT,
            async || {
                let answer = generate(side, &token).await;
                if answer.status != 200 {
                    assert_store_unavailable(&answer);
                }
                (answer.status == 200).then_some(())
            },
        )
        .await;
    }
}
