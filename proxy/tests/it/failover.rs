//! Failover: a stopped backend is taken out by the health checks and its users go to the other
//! side; a refused connect is retried once on the other side before any check notices; with
//! both sides gone the proxy answers 503 in the contract's error shape instead of hanging.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use common::config::value::Millis;
use proxy::config::ProxyConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use shared::testing::client::{Answer, client, send};
use shared::testing::eventually;

use crate::harness::{Refusing, Stack};
use crate::observability::{admin_status, scrape, value_of};

const COOKIE: &str = "canary_bucket";
const UNAVAILABLE: &str =
    r#"{"error":{"code":"BACKEND_UNAVAILABLE","message":"no backend is available"}}"#;

fn cookie_value(answer: &Answer) -> Option<String> {
    let header = answer.header("set-cookie")?;
    let value = header.strip_prefix(&format!("{COOKIE}="))?;
    Some(value.split(';').next()?.to_owned())
}

async fn health(stack: &Stack, cookie: Option<&str>) -> Answer {
    let mut request = client().get(stack.url("/health"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("{COOKIE}={cookie}"));
    }
    send(request).await
}

/// An edit pointing the backends at `legacy` and `new`, with the health checks slowed down
/// so far that they cannot mark anything down during a test.
fn with_backends(legacy: SocketAddr, new: SocketAddr) -> impl FnOnce(&mut ProxyConfig) {
    move |config| {
        config.backends.legacy.listen = legacy;
        config.backends.new.listen = new;
        config.health_check.interval_ms = Millis::of(60_000);
        config.health_check.unhealthy_threshold = NonZeroU32::new(100).expect("non-zero");
    }
}

async fn healthy(stack: &Stack, side: &str) -> bool {
    admin_status(stack).await["backends"][side]["healthy"]
        .as_bool()
        .expect("backends.*.healthy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_backend_mid_load_moves_its_users_to_the_other() {
    let mut stack = Stack::start(50.0).await;
    // Clients that are on new, by their cookie.
    let mut on_new = Vec::new();
    for _ in 0..200 {
        let answer = health(&stack, None).await;
        assert_eq!(answer.status, 200);
        if answer.header("x-served-by") == Some("new") {
            on_new.push(cookie_value(&answer).expect("a cookie"));
        }
        if on_new.len() == 20 {
            break;
        }
    }
    assert!(!on_new.is_empty(), "nobody on new at 50 %");

    // Background load; a failure of a request sent after the stop was detected is an error.
    let stop = Arc::new(AtomicBool::new(false));
    let detected = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (stop, detected) = (Arc::clone(&stop), Arc::clone(&detected));
            let url = stack.url("/health");
            tokio::spawn(async move {
                let client = client();
                let deadline = Instant::now() + Duration::from_secs(30);
                let (mut before, mut after, mut sent) = (Vec::new(), Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && sent < 20_000 {
                    sent += 1;
                    let after_detection = detected.load(Ordering::Relaxed);
                    let outcome = match client
                        .get(&url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(_) => continue,
                            Err(e) => format!("body: {e}"),
                        },
                        Ok(r) => format!("status {}", r.status()),
                        Err(e) => format!("error: {e}"),
                    };
                    let failures = if after_detection {
                        &mut after
                    } else {
                        &mut before
                    };
                    failures.push(outcome);
                }
                (sent, before, after)
            })
        })
        .collect();

    // Let the load run against both sides, then stop new.
    let status = admin_status(&stack).await;
    let (legacy0, new0) = (
        status["counts"]["requests"]["legacy"].as_u64().unwrap(),
        status["counts"]["requests"]["new"].as_u64().unwrap(),
    );
    eventually(
        "the load reaches both sides",
        Duration::from_secs(10),
        async || {
            let status = admin_status(&stack).await;
            let counts = &status["counts"]["requests"];
            (counts["legacy"].as_u64() > Some(legacy0 + 5)
                && counts["new"].as_u64() > Some(new0 + 5))
            .then_some(())
        },
    )
    .await;
    drop(stack.new.take());
    eventually("new is marked down", Duration::from_secs(5), async || {
        (!healthy(&stack, "new").await).then_some(())
    })
    .await;
    detected.store(true, Ordering::Relaxed);

    let answers: Vec<Answer> = futures::stream::iter(0..200)
        .map(|i| {
            let cookie = (i % 2 == 0).then(|| on_new[i % on_new.len()].clone());
            let stack = &stack;
            async move { health(stack, cookie.as_deref()).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-served-by"), Some("legacy"));
        assert_eq!(answer.json()["backend"], "legacy");
    }

    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut before, mut after) = (0, Vec::new(), Vec::new());
    for task in loops {
        let (s, b, a) = task.await.expect("a load loop");
        sent += s;
        before.extend(b);
        after.extend(a);
    }
    if !before.is_empty() {
        eprintln!(
            "{} of {sent} requests failed between the stop and its detection: {:?}",
            before.len(),
            &before[..before.len().min(5)]
        );
    }
    assert!(sent > 0);
    assert!(
        after.is_empty(),
        "{} requests failed after new was marked down: {:?}",
        after.len(),
        &after[..after.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_retried_once_on_the_other_backend() {
    let stack = Stack::start(100.0).await;
    let dead = Refusing::bind();
    stack
        .apply(with_backends(stack.legacy_addr, dead.addr()))
        .await;
    let failovers = |samples: &[_]| {
        value_of(
            samples,
            "proxy_failovers_total",
            &[("from", "new"), ("to", "legacy")],
        )
        .unwrap_or(0.0)
    };
    let before = failovers(&scrape(&stack).await);

    for _ in 0..10 {
        let answer = health(&stack, None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-served-by"), Some("legacy"));
        assert_eq!(answer.json()["backend"], "legacy");
    }
    // A POST is retried too: nothing reached the dead backend.
    let login = send(
        client()
            .post(stack.url(shared::routes::LOGIN))
            .header("content-type", "application/json")
            .body(
                json!({"email": shared::service::DEMO_EMAIL, "password": shared::service::DEMO_PASSWORD})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.header("x-served-by"), Some("legacy"));
    assert!(login.json()["token"].is_string());

    // The health checks did not take new out: the connect retry did the failover.
    assert!(healthy(&stack, "new").await);
    let samples = scrape(&stack).await;
    assert!(
        failovers(&samples) >= before + 11.0,
        "{} failovers, {before} before",
        failovers(&samples)
    );
    let connect_errors = value_of(
        &samples,
        "proxy_upstream_errors_total",
        &[("backend", "new"), ("kind", "connect")],
    );
    assert!(
        connect_errors.is_some_and(|n| n >= 11.0),
        "{connect_errors:?}"
    );
}

fn assert_unavailable(answer: &Answer) {
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.body, UNAVAILABLE);
    assert!(answer.header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_down_answers_503_in_the_error_shape() {
    let mut stack = Stack::start(50.0).await;
    drop(stack.legacy.take());
    drop(stack.new.take());
    eventually("both are marked down", Duration::from_secs(5), async || {
        let status = admin_status(&stack).await;
        let backends = &status["backends"];
        (backends["legacy"]["healthy"] == false && backends["new"]["healthy"] == false)
            .then_some(())
    })
    .await;
    for request in [
        client().get(stack.url("/health")),
        client().get(stack.url("/health")).header("x-canary", "new"),
        client().post(stack.url(shared::routes::LOGIN)).body("{}"),
    ] {
        let answer = send(request).await;
        assert_unavailable(&answer);
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(answer.header("x-served-by"), None);
    }
    let samples = scrape(&stack).await;
    assert_eq!(
        value_of(&samples, "proxy_backend_up", &[("backend", "legacy")]),
        Some(0.0)
    );
    assert_eq!(
        value_of(&samples, "proxy_backend_up", &[("backend", "new")]),
        Some(0.0)
    );
    let refusals = value_of(
        &samples,
        "proxy_edge_refusals_total",
        &[("reason", "no_backend")],
    );
    assert!(refusals.is_some_and(|n| n >= 3.0), "{refusals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_unreachable_before_any_check_notices_answers_503_not_a_hang() {
    let stack = Stack::start(50.0).await;
    let (dead_legacy, dead_new) = (Refusing::bind(), Refusing::bind());
    stack
        .apply(with_backends(dead_legacy.addr(), dead_new.addr()))
        .await;
    for request in [
        client().get(stack.url("/health")),
        client()
            .get(stack.url("/health"))
            .header("x-canary", "legacy"),
        client().post(stack.url(shared::routes::LOGIN)).body("{}"),
    ] {
        // A hang guard only, not a timing assertion.
        let answer = tokio::time::timeout(Duration::from_secs(10), send(request))
            .await
            .expect("the proxy answers instead of hanging");
        assert_unavailable(&answer);
    }
    let status = admin_status(&stack).await;
    assert_eq!(status["backends"]["legacy"]["healthy"], true, "{status}");
    assert_eq!(status["backends"]["new"]["healthy"], true, "{status}");
}
