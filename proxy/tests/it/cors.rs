//! What a browser sees at the edge: CORS (preflights answered by the proxy itself, CORS fields
//! for allowed origins only) and the security fields on every answer, the proxy's own errors
//! and the admin listener's included, with no field that names the server's software.

use common::config::value::{Bounded, Millis, OptionalHeaderValue};
use proxy::config::Origin;
use shared::routes::LOGIN;
use shared::testing::TestEnv;
use shared::testing::client::{Answer, client, send};

use crate::harness::{Refusing, Stack};

const APP: &str = "http://localhost:5173";

const SECURITY_FIELDS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-dns-prefetch-control", "off"),
];

async fn cors_stack() -> Stack {
    Stack::start_with(TestEnv::new(), 0.0, |c| {
        c.proxy.cors.allowed_origins = vec![Origin::parse(APP).expect("an origin")];
    })
    .await
}

async fn preflight(stack: &Stack, origin: &str, headers: &str) -> Answer {
    send(
        client()
            .request(reqwest::Method::OPTIONS, stack.url(LOGIN))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers),
    )
    .await
}

fn cors_fields(answer: &Answer) -> Vec<String> {
    let mut names: Vec<String> = (answer.headers.keys())
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect();
    names.sort();
    names
}

fn varies_on_origin(answer: &Answer) -> bool {
    (answer.headers.get_all("vary").iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin"))
}

fn login_body() -> String {
    serde_json::json!({"email": shared::service::DEMO_EMAIL, "password": shared::service::DEMO_PASSWORD})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_is_answered_by_the_proxy_without_a_backend_or_a_cookie() {
    let stack = cors_stack().await;
    let answer = preflight(&stack, APP, "content-type, authorization").await;
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        answer.header("access-control-allow-methods"),
        Some("GET, HEAD, POST")
    );
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("content-type, authorization")
    );
    assert_eq!(answer.header("access-control-max-age"), Some("600"));
    assert_eq!(answer.header("access-control-allow-credentials"), None);
    assert!(varies_on_origin(&answer));
    assert_eq!(answer.header("x-served-by"), None, "no backend answered");
    assert_eq!(
        answer.header("set-cookie"),
        None,
        "no bucket for a preflight"
    );
    assert!(answer.header("x-request-id").is_some());
    assert!(answer.body.is_empty());

    // A header outside the allowed set: the allowed list comes back, and the browser refuses.
    let answer = preflight(&stack, APP, "x-secret").await;
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("content-type, authorization, x-request-id, x-canary")
    );

    // Credentials, once configured (a reload, like any other edit).
    stack.apply(|c| c.proxy.cors.allow_credentials = true).await;
    let answer = preflight(&stack, APP, "content-type").await;
    assert_eq!(
        answer.header("access-control-allow-credentials"),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_answers_carry_cors_fields_for_allowed_origins_only() {
    let stack = cors_stack().await;
    let login = |origin: &'static str| {
        send(
            client()
                .post(stack.url(LOGIN))
                .header("origin", origin)
                .header("content-type", "application/json")
                .body(login_body()),
        )
    };
    let allowed = login(APP).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    let exposed = allowed
        .header("access-control-expose-headers")
        .expect("exposed fields");
    for name in [
        "x-request-id",
        "x-served-by",
        "retry-after",
        "ratelimit-remaining",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    assert!(varies_on_origin(&allowed));

    let other = login("http://evil.example").await;
    assert_eq!(other.status, 200, "the proxy serves; the browser refuses");
    assert_eq!(cors_fields(&other), Vec::<String>::new());
    assert!(varies_on_origin(&other));
    let preflight = preflight(&stack, "http://evil.example", "content-type").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(cors_fields(&preflight), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_allowed_origin_cors_is_off_and_preflights_reach_the_backends() {
    let stack = Stack::start(0.0).await;
    let answer = preflight(&stack, APP, "content-type").await;
    assert_eq!(answer.status, 405, "{}", answer.body);
    assert_eq!(answer.header("x-served-by"), Some("legacy"));
    assert_eq!(cors_fields(&answer), Vec::<String>::new());
    assert!(!varies_on_origin(&answer));
}

fn assert_security_fields(what: &str, answer: &Answer) {
    for (name, value) in SECURITY_FIELDS {
        assert_eq!(answer.header(name), Some(value), "{what}: {name}");
    }
    for name in ["server", "x-powered-by"] {
        assert_eq!(
            answer.header(name),
            None,
            "{what}: {name} names the software"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_fields_are_on_every_answer_including_the_proxys_own_errors() {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |c| {
        c.proxy.cors.allowed_origins = vec![Origin::parse(APP).expect("an origin")];
        c.proxy.max_header_bytes = Bounded::of(4096);
        c.proxy.max_body_bytes = Bounded::of(2048);
    })
    .await;
    let http = client();
    let admin = &stack.proxy.admin_url;
    for (what, request, status, by_proxy) in [
        ("proxied", http.get(stack.url("/health")), 200, false),
        ("the page", http.get(stack.url("/")), 200, false),
        ("a backend's 404", http.get(stack.url("/nope")), 404, false),
        ("a backend's 405", http.get(stack.url(LOGIN)), 405, false),
        (
            "the proxy's 431",
            http.get(stack.url("/health"))
                .header("x-padding", "a".repeat(5_000)),
            431,
            true,
        ),
        (
            "the proxy's 413",
            http.post(stack.url(LOGIN)).body(vec![b'x'; 4096]),
            413,
            true,
        ),
        (
            "admin metrics",
            http.get(format!("{admin}/metrics")),
            200,
            true,
        ),
        (
            "admin dashboard",
            http.get(format!("{admin}/admin/")),
            200,
            true,
        ),
        ("admin 404", http.get(format!("{admin}/nope")), 404, true),
    ] {
        let answer = send(request.header("origin", APP)).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_security_fields(what, &answer);
        if by_proxy {
            assert_eq!(answer.header("x-served-by"), None, "{what}");
        }
    }
    // The proxy's own answers carry the CORS fields too, so a page can read them.
    let refused = send(
        http.get(stack.url("/health"))
            .header("origin", APP)
            .header("x-padding", "a".repeat(5_000)),
    )
    .await;
    assert_eq!(refused.header("access-control-allow-origin"), Some(APP));
    assert!(refused.header("access-control-expose-headers").is_some());
    let page = send(http.get(stack.url("/"))).await;
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.starts_with("default-src 'none'")),
        "{:?}",
        page.header("content-security-policy")
    );

    // A field switched off at the edge is gone (neither backend sets it); one changed, changed.
    stack
        .apply(|c| {
            c.proxy.security_headers.x_frame_options = OptionalHeaderValue::off();
            c.proxy.security_headers.referrer_policy = OptionalHeaderValue::of("same-origin");
        })
        .await;
    let answer = send(http.get(stack.url("/health"))).await;
    assert_eq!(answer.header("x-frame-options"), None);
    assert_eq!(answer.header("referrer-policy"), Some("same-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_answer_when_no_backend_answers_carries_the_fields_too() {
    let (legacy, new) = (Refusing::bind(), Refusing::bind());
    let stack = Stack::start_with(TestEnv::new(), 0.0, |c| {
        c.backends.legacy.listen = legacy.addr();
        c.backends.new.listen = new.addr();
        // Slow probes, so both stay "up" and the request itself finds them refusing.
        c.health_check.interval_ms = Millis::of(60_000);
        c.proxy.cors.allowed_origins = vec![Origin::parse(APP).expect("an origin")];
    })
    .await;
    // Connect refused on one side, then on the other: `fail_to_proxy` answers.
    let answer = send(client().get(stack.url("/health")).header("origin", APP)).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "BACKEND_UNAVAILABLE");
    assert_security_fields("503", &answer);
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
}
