//! The edge: oversized headers and bodies and too many concurrent requests from one client are
//! refused before any backend, in the contract's error shape; forwarding headers are set by
//! the proxy (a client's own are trusted only from `proxy.trusted_proxies`) and hop-by-hop
//! headers stop at the proxy.

use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use common::config::value::{Bounded, Millis};
use proxy::config::ProxyConfig;
use std::time::Duration;

use serde_json::{Value, json};
use shared::routes::LOGIN;
use shared::testing::TestEnv;
use shared::testing::client::{Answer, client, send};
use shared::testing::eventually;

use crate::harness::Stack;
use crate::observability::{admin_status, scrape, settled_status, value_of};
use crate::streaming::{login, start_stream};

fn assert_refused(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.json()["error"]["code"], code, "{}", answer.body);
    assert!(answer.json()["error"]["message"].is_string());
    assert_eq!(answer.header("x-served-by"), None, "no backend answered");
    assert!(answer.header("x-request-id").is_some());
}

fn requests_on(status: &Value, side: &str) -> u64 {
    status["counts"]["requests"][side]
        .as_u64()
        .expect("counts.requests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_the_limit_get_431_headers_too_large() {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |c| {
        c.proxy.max_header_bytes = Bounded::of(4096)
    })
    .await;
    let within = send(
        client()
            .get(stack.url("/health"))
            .header("x-padding", "a".repeat(2_000)),
    )
    .await;
    assert_eq!(within.status, 200, "{}", within.body);

    let over = send(
        client()
            .get(stack.url("/health"))
            .header("x-padding", "a".repeat(5_000)),
    )
    .await;
    assert_refused(&over, 431, "HEADERS_TOO_LARGE");
    // Many small headers count as much as one big one.
    let mut many = client().get(stack.url("/health"));
    for i in 0..100 {
        many = many.header(format!("x-small-{i}"), "b".repeat(40));
    }
    assert_refused(&send(many).await, 431, "HEADERS_TOO_LARGE");
    let samples = scrape(&stack).await;
    let refused = value_of(
        &samples,
        "proxy_edge_refusals_total",
        &[("reason", "header_too_large")],
    );
    assert_eq!(refused, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_payload_too_large_without_reaching_a_backend() {
    let stack = Stack::start_with(TestEnv::new(), 50.0, |c| {
        c.proxy.max_body_bytes = Bounded::of(2048)
    })
    .await;
    let before = settled_status(&stack).await;
    let post = |body: reqwest::Body| {
        client()
            .post(stack.url(LOGIN))
            .header("content-type", "application/json")
            .body(body)
    };
    let padding = "x".repeat(4_000);
    let over = json!({"email": "a@example.com", "password": "p", "padding": padding}).to_string();
    assert!(over.len() > 2048);

    // Declared in content-length: refused from the head, before any backend.
    let answer = send(post(over.clone().into())).await;
    assert_refused(&answer, 413, "PAYLOAD_TOO_LARGE");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2048"),
        "{}",
        answer.body
    );
    let after = eventually(
        "the refusal is counted",
        Duration::from_secs(5),
        async || {
            let status = admin_status(&stack).await;
            (requests_on(&status, "none") > requests_on(&before, "none")).then_some(status)
        },
    )
    .await;
    for side in ["legacy", "new"] {
        assert_eq!(
            requests_on(&after, side),
            requests_on(&before, side),
            "{side} answered a refused request"
        );
    }
    let samples = scrape(&stack).await;
    let refused = value_of(
        &samples,
        "proxy_edge_refusals_total",
        &[("reason", "body_too_large")],
    );
    assert_eq!(refused, Some(1.0));

    // Chunked, with no length declared: refused once the limit is crossed.
    let chunks: Vec<Result<String, std::io::Error>> = over
        .as_bytes()
        .chunks(512)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let answer = send(post(reqwest::Body::wrap_stream(futures::stream::iter(
        chunks,
    ))))
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "PAYLOAD_TOO_LARGE");

    // A body within the limit still goes through.
    let ok = send(post(
        json!({"email": shared::service::DEMO_EMAIL, "password": shared::service::DEMO_PASSWORD})
            .to_string()
            .into(),
    ))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// A slow streaming request, answered by a backend and still open. The slot of a request
/// that just ended is released a moment after its response, so a refusal by the proxy
/// (no `x-served-by`) is retried, bounded.
async fn hold_stream(stack: &Stack, token: &str) -> reqwest::Response {
    eventually(
        "a stream is held open",
        Duration::from_secs(5),
        async || {
            let response = start_stream(stack, token, 20).await;
            let refused_by_proxy =
                response.status() == 429 && !response.headers().contains_key("x-served-by");
            if !refused_by_proxy {
                assert_eq!(response.status(), 200);
                assert!(response.headers().contains_key("x-served-by"));
            }
            (!refused_by_proxy).then_some(response)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_concurrent_request_cap_gets_429_rate_limited() {
    let env = TestEnv::with(|config| config.generate.local.token_delay_ms = Millis::of(200));
    let stack = Stack::start_with(env, 50.0, |c| {
        c.proxy.max_requests_per_client = NonZeroU32::new(2).expect("non-zero")
    })
    .await;
    let token = login(&stack).await;
    // Two slow streams hold both of this address's slots (their heads have been answered).
    let (first, second) = tokio::join!(hold_stream(&stack, &token), hold_stream(&stack, &token));

    let third = send(client().get(stack.url("/health"))).await;
    assert_refused(&third, 429, "RATE_LIMITED");
    assert_eq!(third.header("retry-after"), Some("1"));
    let samples = scrape(&stack).await;
    let refused = value_of(
        &samples,
        "proxy_edge_refusals_total",
        &[("reason", "too_many_requests_from_client")],
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");

    // The slots are released when the requests end.
    drop((first, second));
    eventually(
        "a slot is free again",
        Duration::from_secs(10),
        async || {
            let answer = send(client().get(stack.url("/health"))).await;
            (answer.status == 200).then_some(())
        },
    )
    .await;
}

/// An upstream that answers every request with the headers it received, as
/// `{name: [values]}`.
async fn start_echo() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    async fn echo(headers: axum::http::HeaderMap) -> axum::Json<Value> {
        let mut seen = serde_json::Map::new();
        for name in headers.keys() {
            let values = headers
                .get_all(name)
                .iter()
                .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            seen.insert(name.as_str().to_owned(), Value::Array(values));
        }
        axum::Json(Value::Object(seen))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().fallback(echo);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop)
}

/// What the echo upstream saw of a request sent through the proxy with `headers`.
async fn seen_upstream(stack: &Stack, headers: &[(&str, &str)]) -> (Answer, Value) {
    let mut request = client()
        .get(stack.url("/echo"))
        .header("x-canary", "legacy");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = send(request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-served-by"), Some("legacy"));
    let seen = answer.json();
    (answer, seen)
}

fn values(seen: &Value, name: &str) -> Option<Vec<String>> {
    seen.get(name).map(|v| {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|s| s.as_str().expect("a string").to_owned())
            .collect()
    })
}

/// Points `[backends.legacy]` at a fresh echo upstream, with `edit` applied too; returns the
/// echo's stop handle.
async fn legacy_is_an_echo(
    stack: &Stack,
    edit: impl FnOnce(&mut ProxyConfig),
) -> tokio::sync::oneshot::Sender<()> {
    let (echo, stop) = start_echo().await;
    stack
        .apply(|config| {
            config.backends.legacy.listen = echo;
            edit(config);
        })
        .await;
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_by_the_proxy_and_hop_by_hop_headers_stop_there() {
    let stack = Stack::start(0.0).await;
    let _stop_echo = legacy_is_an_echo(&stack, |_| {}).await;

    let (answer, seen) = seen_upstream(
        &stack,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "trace-abc-123"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-ordinary", "Plain value, kept as is"),
        ],
    )
    .await;
    assert_eq!(
        values(&seen, "x-forwarded-for"),
        Some(vec!["127.0.0.1".to_owned()]),
        "an untrusted client's x-forwarded-for is replaced: {seen}"
    );
    assert_eq!(
        values(&seen, "x-forwarded-proto"),
        Some(vec!["http".to_owned()]),
        "{seen}"
    );
    assert_eq!(
        values(&seen, "x-request-id"),
        Some(vec!["trace-abc-123".to_owned()]),
        "{seen}"
    );
    assert_eq!(answer.header("x-request-id"), Some("trace-abc-123"));
    for hop_by_hop in ["x-secret", "keep-alive", "proxy-connection"] {
        assert_eq!(
            values(&seen, hop_by_hop),
            None,
            "{hop_by_hop} was forwarded: {seen}"
        );
    }
    if let Some(connection) = values(&seen, "connection") {
        assert!(
            connection.iter().all(|v| !v.contains("x-secret")),
            "the client's connection header was forwarded: {seen}"
        );
    }
    assert_eq!(
        values(&seen, "x-ordinary"),
        Some(vec!["Plain value, kept as is".to_owned()]),
        "{seen}"
    );

    // Two x-forwarded-for headers from an untrusted client still become one value.
    let (_, seen) = seen_upstream(
        &stack,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
        ],
    )
    .await;
    assert_eq!(
        values(&seen, "x-forwarded-for"),
        Some(vec!["127.0.0.1".to_owned()]),
        "{seen}"
    );

    // An odd request id is replaced by a fresh one, the same upstream and to the client.
    let odd = "has spaces and is odd";
    let (answer, seen) = seen_upstream(&stack, &[("x-request-id", odd)]).await;
    let ids = values(&seen, "x-request-id").expect("a request id upstream");
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], odd);
    assert!(!ids[0].is_empty() && ids[0].bytes().all(|b| b.is_ascii_graphic()));
    assert_eq!(answer.header("x-request-id"), Some(ids[0].as_str()));

    // From a trusted proxy the chain is appended to and the scheme kept.
    stack
        .apply(|config| config.proxy.trusted_proxies = vec![Ipv4Addr::LOCALHOST.into()])
        .await;
    let (_, seen) = seen_upstream(
        &stack,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        values(&seen, "x-forwarded-for"),
        Some(vec!["6.6.6.6, 127.0.0.1".to_owned()]),
        "{seen}"
    );
    assert_eq!(
        values(&seen, "x-forwarded-proto"),
        Some(vec!["https".to_owned()]),
        "{seen}"
    );
    let (_, seen) = seen_upstream(&stack, &[]).await;
    assert_eq!(
        values(&seen, "x-forwarded-for"),
        Some(vec!["127.0.0.1".to_owned()]),
        "{seen}"
    );
    assert_eq!(
        values(&seen, "x-forwarded-proto"),
        Some(vec!["http".to_owned()]),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_x_forwarded_for_fields_from_a_trusted_proxy_are_kept_as_one_list() {
    let stack = Stack::start(0.0).await;
    let _stop_echo = legacy_is_an_echo(&stack, |config| {
        config.proxy.trusted_proxies = vec![Ipv4Addr::LOCALHOST.into()]
    })
    .await;
    // Several fields are one comma-separated list (RFC 9110 §5.3); dropping one loses the
    // hop nearest to the trusted proxy and keeps only what the client wrote.
    let (_, seen) = seen_upstream(
        &stack,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
        ],
    )
    .await;
    assert_eq!(
        values(&seen, "x-forwarded-for"),
        Some(vec!["6.6.6.6, 7.7.7.7, 127.0.0.1".to_owned()]),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_is_rewritten_as_x_forwarded_for_is() {
    let stack = Stack::start(0.0).await;
    let _stop_echo = legacy_is_an_echo(&stack, |_| {}).await;
    let spoofed = [("forwarded", "for=6.6.6.6;proto=https;by=evil")];

    // From an untrusted client its own is dropped, and this hop's set.
    let (_, seen) = seen_upstream(&stack, &spoofed).await;
    assert_eq!(
        values(&seen, "forwarded"),
        Some(vec!["for=127.0.0.1;proto=http".to_owned()]),
        "{seen}"
    );
    let (_, seen) = seen_upstream(&stack, &[]).await;
    assert_eq!(
        values(&seen, "forwarded"),
        Some(vec!["for=127.0.0.1;proto=http".to_owned()]),
        "{seen}"
    );

    // From a trusted proxy this hop's element is appended to its list.
    stack
        .apply(|config| config.proxy.trusted_proxies = vec![Ipv4Addr::LOCALHOST.into()])
        .await;
    let (_, seen) = seen_upstream(
        &stack,
        &[
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("forwarded", "for=7.7.7.7"),
        ],
    )
    .await;
    assert_eq!(
        values(&seen, "forwarded"),
        Some(vec![
            "for=6.6.6.6;proto=https, for=7.7.7.7, for=127.0.0.1;proto=http".to_owned()
        ]),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_reaches_a_backend_with_a_host() {
    let stack = Stack::start(0.0).await;
    let _stop_echo = legacy_is_an_echo(&stack, |_| {}).await;
    let echo = stack.config().backends.legacy.listen;
    let proxy = crate::raw::addr_of(&stack.proxy.base_url);
    for (request, host) in [
        // HTTP/1.0 needs none: the backend's address stands in.
        (
            "GET /echo HTTP/1.0\r\nx-canary: legacy\r\n\r\n",
            echo.to_string(),
        ),
        (
            "GET /echo HTTP/1.0\r\nhost: example.com\r\nx-canary: legacy\r\n\r\n",
            "example.com".to_owned(),
        ),
        (
            "GET /echo HTTP/1.1\r\nhost: example.com:8080\r\nx-canary: legacy\r\n\r\n",
            "example.com:8080".to_owned(),
        ),
    ] {
        let answer = crate::raw::exchange(proxy, request.as_bytes(), 1).await;
        let seen = answer.responses[0].json();
        assert_eq!(
            values(&seen, "host"),
            Some(vec![host]),
            "{request:?}: {seen}"
        );
    }
}
