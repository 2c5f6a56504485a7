//! What a careless or hostile client writes on the wire, as raw bytes over TCP: requests
//! without `host`, pipelined requests, internal paths in every spelling, and heads and
//! bodies no parser should accept. The proxy answers in the contract's error shape wherever
//! Pingora lets it; the few answers Pingora writes itself (see ARCHITECTURE.md, "What
//! Pingora answers itself") are pinned here too, so a Pingora upgrade that changes them is
//! noticed.

use std::time::Duration;

use serde_json::json;
use shared::testing::eventually;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::Stack;
use crate::observability::{scrape, value_of};
use crate::raw::{RawResponse, addr_of, exchange, read_responses};

/// The side that answers everything at `percent` (0 or 100).
fn side_at(percent: f64) -> &'static str {
    if percent == 0.0 { "legacy" } else { "new" }
}

/// An answer the proxy made itself: `status`, the contract's shape with `code`, no backend.
fn assert_ours(response: &RawResponse, status: u16, code: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}: {response:?}"
    );
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    assert_eq!(
        response.header("x-served-by"),
        None,
        "{what}: no backend answered"
    );
    assert_eq!(
        response.header("set-cookie"),
        None,
        "{what}: no bucket was chosen"
    );
    assert!(response.header("x-request-id").is_some(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_host_is_answered_alike_on_both_sides() {
    for percent in [0.0, 100.0] {
        let stack = Stack::start(percent).await;
        let addr = addr_of(&stack.proxy.base_url);

        // HTTP/1.0 needs no host: the backend gets one (its own address) and answers.
        let old = exchange(addr, b"GET /health HTTP/1.0\r\n\r\n", 1).await;
        let health = &old.responses[0];
        assert_eq!(health.status, 200, "at {percent} %: {}", health.body_text());
        assert_eq!(health.json()["backend"], side_at(percent));
        assert_eq!(health.header("x-served-by"), Some(side_at(percent)));

        // HTTP/1.1 must have one (RFC 9112 §3.2): 400, from the proxy, never forwarded.
        let new = exchange(addr, b"GET / HTTP/1.1\r\n\r\n", 1).await;
        assert_ours(
            &new.responses[0],
            400,
            "BAD_REQUEST",
            "HTTP/1.1 without host",
        );
        assert!(new.closed);

        let samples = scrape(&stack).await;
        let refused = value_of(
            &samples,
            "proxy_edge_refusals_total",
            &[("reason", "missing_host")],
        );
        assert_eq!(refused, Some(1.0), "at {percent} %");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order_on_one_connection() {
    for percent in [0.0, 100.0] {
        let stack = Stack::start(percent).await;
        let mut stream = TcpStream::connect(addr_of(&stack.proxy.base_url))
            .await
            .expect("connect to the proxy");
        let login = json!({"email": "nobody@example.com", "password": "wrong"}).to_string();
        let pipelined = format!(
            "GET /health HTTP/1.1\r\nhost: a\r\nx-request-id: pipe-1\r\n\r\n\
             POST /api/auth/login HTTP/1.1\r\nhost: a\r\nx-request-id: pipe-2\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{login}\
             GET /nowhere HTTP/1.1\r\nhost: a\r\nx-request-id: pipe-3\r\n\r\n",
            login.len()
        );
        stream
            .write_all(pipelined.as_bytes())
            .await
            .expect("write the requests");
        let answered = read_responses(&mut stream, 3).await;
        let seen: Vec<(u16, Option<&str>)> = answered
            .responses
            .iter()
            .map(|r| (r.status, r.header("x-request-id")))
            .collect();
        assert_eq!(
            seen,
            [
                (200, Some("pipe-1")),
                (401, Some("pipe-2")),
                (404, Some("pipe-3"))
            ],
            "at {percent} %: {:?}",
            answered.responses
        );
        assert_eq!(
            answered.responses[1].json()["error"]["code"],
            "INVALID_CREDENTIALS"
        );
        for response in &answered.responses {
            assert_eq!(response.header("x-served-by"), Some(side_at(percent)));
            assert_ne!(response.header("connection"), Some("close"));
        }
        assert!(!answered.closed, "the connection stays open");

        // And it goes on serving.
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: a\r\nx-request-id: after\r\n\r\n")
            .await
            .expect("write one more request");
        let after = read_responses(&mut stream, 1).await;
        assert_eq!(after.responses[0].status, 200);
        assert_eq!(after.responses[0].header("x-request-id"), Some("after"));
    }
}

/// Every spelling of `/metrics` that a backend could resolve to its own `/metrics`.
const SPELLINGS: [&str; 11] = [
    "/metrics",
    "/metrics?name[]=x",
    "/metrics/",
    "/METRICS",
    "/%6detrics",
    "/%6D%65trics",
    "//metrics",
    "/./metrics",
    "/x/../metrics",
    "/%2e/metrics",
    "http://a/metrics",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_paths_answer_a_backends_404_at_the_public_listener() {
    for percent in [0.0, 100.0] {
        let stack = Stack::start(percent).await;
        let addr = addr_of(&stack.proxy.base_url);
        // The proxy counts a request after its answer has left: wait until the start-up's
        // readiness request is counted before taking the baseline.
        let before = eventually(
            "the readiness request is counted",
            Duration::from_secs(5),
            async || {
                let samples = scrape(&stack).await;
                let answered: f64 = (samples.iter())
                    .filter(|s| s.name == "proxy_requests_total")
                    .map(|s| s.value)
                    .sum();
                (answered >= 1.0).then(|| proxied(&samples))
            },
        )
        .await;
        for target in SPELLINGS {
            let request = format!("GET {target} HTTP/1.1\r\nhost: a\r\n\r\n");
            let answer = exchange(addr, request.as_bytes(), 1).await;
            let response = &answer.responses[0];
            let what = format!("{target} at {percent} %");
            assert_ours(response, 404, "NOT_FOUND", &what);
            assert_eq!(
                response.body_text(),
                r#"{"error":{"code":"NOT_FOUND","message":"no such route"}}"#,
                "{what}: word for word a backend's 404"
            );
        }
        let samples = scrape(&stack).await;
        let refused = value_of(
            &samples,
            "proxy_edge_refusals_total",
            &[("reason", "internal_path")],
        );
        assert_eq!(refused, Some(SPELLINGS.len() as f64), "at {percent} %");
        assert_eq!(proxied(&samples), before, "no backend saw any of them");
    }
}

/// Requests either backend answered, on every route.
fn proxied(samples: &[crate::observability::Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "proxy_requests_total" && !s.has(&[("backend", "none")]))
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_paths_are_configurable() {
    let stack = Stack::start(0.0).await;
    let addr = addr_of(&stack.proxy.base_url);
    let status_of = async |target: &str| {
        let request = format!("GET {target} HTTP/1.1\r\nhost: a\r\n\r\n");
        exchange(addr, request.as_bytes(), 1).await.responses[0].status
    };
    assert_eq!(status_of("/openapi.json").await, 200);
    stack
        .apply(|config| {
            config.proxy.internal_paths = vec![proxy::internal::InternalPath::of("/openapi.json")]
        })
        .await;
    assert_eq!(status_of("/openapi.json").await, 404);
    assert_eq!(status_of("/%6Fpenapi.json").await, 404);
    // No longer listed: the backend's own answers.
    assert_eq!(status_of("/metrics").await, 200);
}

/// What the proxy answers to a hostile input.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The proxy's own answer: status and contract code.
    Ours(u16, &'static str),
    /// Pingora's bare answer (empty body, `connection: close`), written before the proxy
    /// sees the request: see ARCHITECTURE.md.
    Pingora(u16),
}

fn many_fields(count: usize) -> Vec<u8> {
    let mut head = String::from("GET /health HTTP/1.1\r\nhost: a\r\n");
    for i in 0..count {
        head.push_str(&format!("x-field-{i}: {}\r\n", "v".repeat(200)));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn target_of(length: usize) -> Vec<u8> {
    format!("GET /{} HTTP/1.1\r\nhost: a\r\n\r\n", "a".repeat(length)).into_bytes()
}

fn chunked_login(body: &str) -> Vec<u8> {
    format!(
        "POST /api/auth/login HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{body}"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_the_right_status_in_the_contracts_shape_where_pingora_lets_us() {
    use Expect::{Ours, Pingora};
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "an HTTP/1.1 request without host",
            b"GET /health HTTP/1.1\r\n\r\n".to_vec(),
            Ours(400, "BAD_REQUEST"),
        ),
        (
            "a 40 KiB request target",
            target_of(40 * 1024),
            Ours(414, "URI_TOO_LONG"),
        ),
        (
            "a 40 KiB head in 200 fields",
            many_fields(200),
            Ours(431, "HEADERS_TOO_LARGE"),
        ),
        (
            "a chunk size that overflows",
            chunked_login("ffffffffffffffffffffffff\r\n"),
            Ours(400, "BAD_REQUEST"),
        ),
        (
            "a chunk size that is not hex",
            chunked_login("zz\r\n{}\r\n0\r\n\r\n"),
            Ours(400, "BAD_REQUEST"),
        ),
        (
            "a chunk longer than its size",
            chunked_login("2\r\n{}xx\r\n0\r\n\r\n"),
            Ours(400, "BAD_REQUEST"),
        ),
        // Refused by Pingora while parsing the head, before any hook runs.
        (
            "300 fields (over Pingora's 256)",
            many_fields(300),
            Pingora(400),
        ),
        (
            "a 64 KiB request target (over http's URI limit)",
            target_of(64 * 1024),
            Pingora(400),
        ),
        (
            "a request line that is not HTTP",
            b"\x01\x02 nonsense\r\n\r\n".to_vec(),
            Pingora(400),
        ),
        (
            "an unknown HTTP version",
            b"GET / HTTP/9.9\r\nhost: a\r\n\r\n".to_vec(),
            Pingora(400),
        ),
        (
            "two different content-lengths",
            b"POST /api/auth/login HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n\
              content-length: 2\r\n\r\nab"
                .to_vec(),
            Pingora(400),
        ),
        (
            "two hosts",
            b"GET /health HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_vec(),
            Pingora(400),
        ),
        (
            "CONNECT",
            b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n".to_vec(),
            Pingora(405),
        ),
    ];
    let stack = Stack::start(50.0).await;
    let addr = addr_of(&stack.proxy.base_url);
    for (what, bytes, expected) in cases {
        let answer = exchange(addr, &bytes, 1).await;
        let Some(response) = answer.responses.first() else {
            panic!("{what}: no answer at all");
        };
        match expected {
            Ours(status, code) => assert_ours(response, status, code, what),
            Pingora(status) => {
                assert_eq!(response.status, status, "{what}");
                assert!(response.body.is_empty(), "{what}: {}", response.body_text());
                assert_eq!(response.header("server"), Some("Pingora"), "{what}");
            }
        }
        assert!(answer.closed, "{what}: the connection is closed after");
    }
    // Still serving.
    let health = exchange(addr, b"GET /health HTTP/1.1\r\nhost: a\r\n\r\n", 1).await;
    assert_eq!(health.responses[0].status, 200);
    let refusals = eventually(
        "the refusals are counted",
        Duration::from_secs(5),
        async || {
            let samples = scrape(&stack).await;
            let malformed = value_of(
                &samples,
                "proxy_edge_refusals_total",
                &[("reason", "malformed_request")],
            );
            (malformed == Some(3.0)).then_some(samples)
        },
    )
    .await;
    let count = |reason| {
        value_of(
            &refusals,
            "proxy_edge_refusals_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(count("uri_too_long"), Some(1.0));
    assert_eq!(count("header_too_large"), Some(1.0));
}
