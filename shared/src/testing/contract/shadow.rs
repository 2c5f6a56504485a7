//! Shadow requests (`crate::shadow`): with a valid signature a request is answered as any
//! other but spends no budget, leaves the login throttle alone and is not counted; with any
//! other value the header is as good as absent.
//!
//! The proxy strips the header from its clients' requests, so every case that signs one is
//! `[backend_only]` in `contract_tests!`.

use std::collections::BTreeSet;

use reqwest::RequestBuilder;
use serde_json::{Value, json};

pub use super::throttle::a_long_window;
use super::{INVALID_CREDENTIALS, assert_answer, error, login_body};
use crate::routes::{GENERATE, HEALTH, LOGIN, METRICS, VERIFY};
use crate::service::{DEMO_EMAIL, DEMO_PASSWORD};
use crate::shadow::{HEADER, ShadowKey};
use crate::testing::client::{Answer, client, demo_token, get, send};
use crate::testing::forge;
use crate::testing::{TEST_MAX_LOGIN_FAILURES, TEST_RATE_LIMIT, TestEnv, TestServer};

/// A request id no other request of the test carries.
fn fresh_id() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// `request` as the proxy sends a shadow copy: a request id, and its signature.
fn shadowed(env: &TestEnv, request: RequestBuilder) -> RequestBuilder {
    let id = fresh_id();
    let signature = env.shadow_key.sign(&id);
    request.header("x-request-id", id).header(HEADER, signature)
}

/// `request` with a request id of its own, as the proxy sends every primary.
fn primary(request: RequestBuilder) -> RequestBuilder {
    request.header("x-request-id", fresh_id())
}

fn post(server: &TestServer, path: &str, body: &Value, token: Option<&str>) -> RequestBuilder {
    let request = client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

fn generate(server: &TestServer, token: &str) -> RequestBuilder {
    post(
        server,
        GENERATE,
        &json!({"prompt": "shadow me", "maxTokens": 8}),
        Some(token),
    )
}

fn remaining(answer: &Answer) -> Option<u32> {
    answer
        .header("ratelimit-remaining")
        .and_then(|r| r.parse().ok())
}

pub async fn forged_shadow_headers_are_ignored(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    let stranger = ShadowKey::new(b"not the key the backends were given").expect("a key");
    let signed = |id: &str| env.shadow_key.sign(id);
    // Each is what a client might send; the last two sign an id the request does not carry
    // as signed (none at all, or one the backend replaces because it holds a space).
    let forgeries: [(Option<String>, String); TEST_RATE_LIMIT as usize] = [
        (Some("forged-1".into()), "1".into()),
        (Some("forged-2".into()), text(stranger.sign("forged-2"))),
        (Some("forged-3".into()), text(signed("forged-4"))),
        (None, text(signed("forged-5"))),
        (Some("forged 6".into()), text(signed("forged 6"))),
    ];
    for (spent, (id, value)) in (1..).zip(forgeries) {
        let mut request = generate(server, &token).header(HEADER, &value);
        if let Some(id) = &id {
            request = request.header("x-request-id", id);
        }
        let answer = send(request).await;
        assert_eq!(answer.status, 200, "{id:?} {value}: {}", answer.body);
        assert_eq!(
            remaining(&answer),
            Some(TEST_RATE_LIMIT - spent),
            "{id:?} {value} spends like any request"
        );
    }
    let refused = send(generate(server, &token).header(HEADER, "1")).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
}

fn text(value: http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

pub async fn shadow_generates_spend_no_budget(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    // More shadows than the budget holds, whole and streamed: none is refused, and each
    // reports the budget as it stands.
    for stream in [false, true, false, true, false, true, false] {
        let request = post(
            server,
            GENERATE,
            &json!({"prompt": "shadow me", "maxTokens": 4, "stream": stream}),
            Some(&token),
        );
        let answer = send(shadowed(env, request)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(remaining(&answer), Some(TEST_RATE_LIMIT));
        assert_eq!(answer.header("retry-after"), None);
    }
    // As if the shadows never happened.
    let first = send(primary(generate(server, &token))).await;
    assert_eq!(remaining(&first), Some(TEST_RATE_LIMIT - 1));
    for _ in 1..TEST_RATE_LIMIT {
        assert_eq!(send(primary(generate(server, &token))).await.status, 200);
    }
    let refused = send(primary(generate(server, &token))).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    // The limiter's verdict was the primary's to take: a shadow of a refused request is
    // answered, reporting the empty budget.
    let shadow = send(shadowed(env, generate(server, &token))).await;
    assert_eq!(shadow.status, 200, "{}", shadow.body);
    assert_eq!(remaining(&shadow), Some(0));
    assert_eq!(shadow.header("retry-after"), None);
}

async fn login_as(
    server: &TestServer,
    env: Option<&TestEnv>,
    email: &str,
    password: &str,
) -> Answer {
    let request = post(server, LOGIN, &login_body(email, password), None);
    match env {
        Some(env) => send(shadowed(env, request)).await,
        None => send(primary(request)).await,
    }
}

pub async fn shadow_logins_leave_the_throttle_alone(server: &TestServer, env: &TestEnv) {
    let invalid = error("INVALID_CREDENTIALS", INVALID_CREDENTIALS);
    // Shadow failures past the limit record nothing: no lock, for them or for a primary.
    for _ in 0..=TEST_MAX_LOGIN_FAILURES {
        let answer = login_as(server, Some(env), DEMO_EMAIL, "wrong-password").await;
        assert_answer(&answer, 401, &invalid);
    }
    for _ in 1..TEST_MAX_LOGIN_FAILURES {
        let answer = login_as(server, None, DEMO_EMAIL, "wrong-password").await;
        assert_answer(&answer, 401, &invalid);
    }
    // One failure short of the lock: a shadow's success does not reset the count...
    let success = login_as(server, Some(env), DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(success.status, 200, "{}", success.body);
    let last = login_as(server, None, DEMO_EMAIL, "wrong-password").await;
    assert_answer(&last, 401, &invalid);
    // ...so the primaries' failures lock the email, for primaries and shadows alike, as a
    // shadow of a refused primary must be refused too.
    for shadow in [None, Some(env)] {
        let locked = login_as(server, shadow, DEMO_EMAIL, DEMO_PASSWORD).await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        assert_eq!(locked.json()["error"]["code"], "RATE_LIMITED");
        assert!(locked.header("retry-after").is_some());
    }
}

/// Every sample the backend exports, except those of `/metrics` itself, which each reading
/// adds to. A histogram's buckets are left out: its count and sum move with them, and a
/// failure then lists only the series that moved.
async fn samples(server: &TestServer) -> BTreeSet<String> {
    let answer = get(server, METRICS).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.contains("_bucket{"))
        .filter(|line| !line.contains(r#"route="/metrics""#))
        .map(str::to_owned)
        .collect()
}

pub async fn shadows_are_not_counted_in_metrics(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    // A locked email, so that a shadow is refused by the throttle too.
    for _ in 0..TEST_MAX_LOGIN_FAILURES {
        let answer = login_as(server, None, "locked@example.com", "wrong-password").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let before = samples(server).await;
    let shadows = [
        post(server, LOGIN, &login_body(DEMO_EMAIL, DEMO_PASSWORD), None),
        post(
            server,
            LOGIN,
            &login_body(DEMO_EMAIL, "wrong-password"),
            None,
        ),
        post(server, LOGIN, &login_body("locked@example.com", "x"), None),
        post(server, LOGIN, &json!({}), None),
        post(server, VERIFY, &json!({}), Some(&token)),
        generate(server, &token),
        post(
            server,
            GENERATE,
            &json!({"prompt": "streamed", "maxTokens": 4, "stream": true}),
            Some(&token),
        ),
        post(server, GENERATE, &json!({}), Some(&token)),
        post(server, GENERATE, &json!({}), None),
        client().get(server.url(HEALTH)),
        client().get(server.url("/nowhere")),
        client().get(server.url(LOGIN)),
    ];
    let mut statuses = Vec::new();
    for request in shadows {
        statuses.push(send(shadowed(env, request)).await.status);
    }
    assert_eq!(
        statuses,
        [200, 401, 429, 400, 200, 200, 200, 400, 401, 200, 404, 405]
    );
    let after = samples(server).await;
    assert_eq!(
        before.symmetric_difference(&after).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "shadows changed the metrics"
    );
    // The reading itself works: a primary does change them.
    send(primary(generate(server, &token))).await;
    assert_ne!(samples(server).await, after, "a primary is counted");
}

/// `answer`'s body with what differs between any two answers (generation ids, login tokens)
/// blanked: the JSON, or the events of a stream.
fn normalised(answer: &Answer) -> Value {
    fn blank(mut value: Value) -> Value {
        for key in ["id", "token"] {
            if let Some(field) = value.get_mut(key)
                && field.is_string()
            {
                *field = json!("…");
            }
        }
        value
    }
    if answer.header("content-type") == Some("text/event-stream") {
        let events = answer.events().into_iter();
        Value::Array(
            events
                .map(|(name, data)| json!([name, blank(data)]))
                .collect(),
        )
    } else if answer.header("content-type") == Some("application/json") {
        blank(answer.json())
    } else {
        json!(answer.body)
    }
}

/// The headers of the contract an answer might carry, `x-request-id` aside (each request has
/// its own).
const CONTRACT_HEADERS: [&str; 7] = [
    "content-type",
    "ratelimit-limit",
    "ratelimit-remaining",
    "retry-after",
    "www-authenticate",
    "allow",
    "cache-control",
];

pub async fn shadow_answers_match_normal_ones(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    let requests = [
        post(server, LOGIN, &login_body(DEMO_EMAIL, DEMO_PASSWORD), None),
        post(server, LOGIN, &login_body("nobody@example.com", "x"), None),
        post(server, LOGIN, &json!({"email": 1}), None),
        post(server, VERIFY, &json!({}), Some(&token)),
        post(server, VERIFY, &json!({}), None),
        generate(server, &token),
        post(
            server,
            GENERATE,
            &json!({"prompt": "streamed", "maxTokens": 4, "stream": true}),
            Some(&token),
        ),
        post(server, GENERATE, &json!({"prompt": ""}), Some(&token)),
        post(server, GENERATE, &json!({}), None),
        client().get(server.url(HEALTH)),
        client().get(server.url("/nowhere")),
        client().get(server.url(LOGIN)),
    ];
    for request in requests {
        let copy = request.try_clone().expect("a body that is not a stream");
        // The primary first, as the proxy sends it: the shadow then reports what the
        // primary left of the budget.
        let normal = send(primary(request)).await;
        let shadow = send(shadowed(env, copy)).await;
        let what = format!("{} {}", normal.status, normal.body);
        assert_eq!(shadow.status, normal.status, "{what}");
        assert_eq!(normalised(&shadow), normalised(&normal), "{what}");
        for name in CONTRACT_HEADERS {
            assert_eq!(shadow.header(name), normal.header(name), "{name} of {what}");
        }
        if let Value::Object(body) = normalised(&shadow)
            && body.contains_key("token")
        {
            let token = shadow.json()["token"].as_str().map(str::to_owned);
            let claims = token.map(|t| forge::verify_independently(&t, &env.secret));
            assert!(
                claims.as_ref().is_some_and(Result::is_ok),
                "the shadow's token verifies: {claims:?}"
            );
        }
    }
}
