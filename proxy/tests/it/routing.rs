//! Weighted, sticky routing through the proxy: the split, stickiness by cookie and by token
//! subject, monotonic buckets, forged cookies, the override header and `x-served-by`.

use common::config::value::OptionalHeaderName;
use futures::StreamExt;
use serde_json::json;
use shared::testing::client::{Answer, client, send};

use crate::harness::Stack;

const COOKIE: &str = "canary_bucket";

/// `GET /health` through the proxy with optional cookie and headers; the side is checked
/// against the body, so `x-served-by` cannot lie.
async fn health(stack: &Stack, cookie: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let mut request = client().get(stack.url("/health"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("{COOKIE}={cookie}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = send(request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("x-served-by"),
        answer.json()["backend"].as_str(),
        "x-served-by names the backend that answered"
    );
    answer
}

fn side(answer: &Answer) -> String {
    answer
        .header("x-served-by")
        .expect("x-served-by")
        .to_owned()
}

/// The signed value a `set-cookie` carries.
fn cookie_value(answer: &Answer) -> Option<String> {
    let header = answer.header("set-cookie")?;
    let value = header.strip_prefix(&format!("{COOKIE}="))?;
    Some(value.split(';').next()?.to_owned())
}

/// How many of `clients` cookie-less clients land on new (16 at a time).
async fn count_new(stack: &Stack, clients: usize) -> usize {
    futures::stream::iter(0..clients)
        .map(|_| async { side(&health(stack, None, &[]).await) == "new" })
        .buffer_unordered(16)
        .filter(|is_new| futures::future::ready(*is_new))
        .count()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookieless_clients_split_within_binomial_tolerance() {
    let stack = Stack::start(0.0).await;
    const CLIENTS: usize = 2_000;
    for percent in [0.0, 10.0, 50.0, 100.0] {
        if percent > 0.0 {
            stack.set_percent(percent).await;
        }
        let new = count_new(&stack, CLIENTS).await as f64;
        let p = percent / 100.0;
        // Five standard deviations of a binomial: flaky one run in millions.
        let tolerance = 5.0 * (CLIENTS as f64 * p * (1.0 - p)).sqrt();
        let expected = CLIENTS as f64 * p;
        assert!(
            (new - expected).abs() <= tolerance,
            "{percent} %: {new} of {CLIENTS} on new, expected {expected} ± {tolerance}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_with_its_cookie_stays_on_one_side() {
    let stack = Stack::start(50.0).await;
    let first = health(&stack, None, &[]).await;
    let cookie = cookie_value(&first).expect("a new client gets a cookie");
    let set_cookie = first.header("set-cookie").unwrap();
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=2592000"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    for _ in 0..100 {
        let answer = health(&stack, Some(&cookie), &[]).await;
        assert_eq!(side(&answer), side(&first));
        assert_eq!(
            answer.header("set-cookie"),
            None,
            "a valid cookie is not replaced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_percentage_moves_no_client_back_to_legacy() {
    let stack = Stack::start(10.0).await;
    let mut clients = Vec::new();
    for _ in 0..400 {
        let answer = health(&stack, None, &[]).await;
        clients.push((cookie_value(&answer).expect("cookie"), side(&answer)));
    }
    stack.set_percent(50.0).await;
    let mut moved_to_new = 0;
    for (cookie, before) in &clients {
        let after = side(&health(&stack, Some(cookie), &[]).await);
        assert!(
            !(before == "new" && after == "legacy"),
            "a client went back from new to legacy"
        );
        moved_to_new += usize::from(before == "legacy" && after == "new");
    }
    assert!(moved_to_new > 0, "raising the weight moved nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_and_missing_cookies_get_a_fresh_bucket_never_an_error() {
    let stack = Stack::start(50.0).await;
    let valid = cookie_value(&health(&stack, None, &[]).await).unwrap();
    let (bucket, signature) = valid.split_once('.').unwrap();
    let other_bucket = (bucket.parse::<u16>().unwrap() + 5_000) % 10_000;
    for bad in [
        format!("{other_bucket}.{signature}"),
        format!("{bucket}.AAAAAAAAAAAAAAAAAAAAAA"),
        "garbage".to_owned(),
        "99999.x".to_owned(),
        String::new(),
    ] {
        let answer = health(&stack, Some(&bad), &[]).await;
        let fresh = cookie_value(&answer).unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert_ne!(fresh, bad);
    }
    let answer = health(&stack, None, &[("cookie", "other=1")]).await;
    assert!(cookie_value(&answer).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_header_forces_a_side_without_touching_the_cookie() {
    let stack = Stack::start(0.0).await;
    let answer = health(&stack, None, &[("x-canary", "new")]).await;
    assert_eq!(side(&answer), "new");
    assert_eq!(answer.header("set-cookie"), None);
    let cookie = cookie_value(&health(&stack, None, &[]).await).unwrap();
    let forced = health(&stack, Some(&cookie), &[("x-canary", "NEW")]).await;
    assert_eq!(side(&forced), "new");
    assert_eq!(forced.header("set-cookie"), None);
    assert_eq!(side(&health(&stack, Some(&cookie), &[]).await), "legacy");
    assert_eq!(
        side(&health(&stack, None, &[("x-canary", "sideways")]).await),
        "legacy"
    );
    stack.set_percent(100.0).await;
    assert_eq!(
        side(&health(&stack, None, &[("x-canary", "legacy")]).await),
        "legacy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_header_and_served_by_can_be_switched_off() {
    let env = shared::testing::TestEnv::new();
    let stack = Stack::start_with(env, 0.0, |c| {
        c.proxy.override_header = OptionalHeaderName::off();
        c.proxy.served_by_header = false;
    })
    .await;
    let answer = send(client().get(stack.url("/health")).header("x-canary", "new")).await;
    assert_eq!(answer.json()["backend"], "legacy");
    assert_eq!(answer.header("x-served-by"), None);
}

fn bearer_for(subject: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "Bearer {}.{}.sig",
        b64(json!({"alg": "HS256"})),
        b64(json!({"sub": subject}))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_cookies_are_sticky_by_token_subject() {
    let stack = Stack::start(50.0).await;
    let mut new = 0;
    for i in 0..200 {
        let token = bearer_for(&format!("user-{i}"));
        let first = side(&health(&stack, None, &[("authorization", &token)]).await);
        for _ in 0..5 {
            assert_eq!(
                side(&health(&stack, None, &[("authorization", &token)]).await),
                first
            );
        }
        new += usize::from(first == "new");
    }
    // 200 subjects at 50 %: five standard deviations is about 35.
    assert!((65..=135).contains(&new), "{new} of 200 subjects on new");
}
