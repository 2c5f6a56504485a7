//! Shadow traffic end to end: real backends (or a stand-in for one side) on loopback, the
//! proxy sending copies to the other side, and `GET /admin/shadow` read back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use proxy::config::ProxyConfig;
use proxy::shadow::settings::{ShadowRoute, ShadowSection};
use serde_json::{Value, json};
use shared::testing::client::client;
use shared::testing::{TestEnv, eventually};

use crate::harness::{Stack, metrics_text, percent, serve_stand_in};

/// Shadowing every eligible request, and a noise call for every one, so a test learns the
/// noise in a few dozen requests.
fn shadow_all(config: &mut ProxyConfig, routes: &[&str]) {
    config.shadow = ShadowSection {
        percent: percent(100.0),
        noise_percent: percent(100.0),
        routes: (routes.iter())
            .map(|r| ShadowRoute::parse(r).expect("a route"))
            .collect(),
        ..config.shadow.clone()
    };
}

async fn report(stack: &Stack) -> Value {
    client()
        .get(format!("{}/admin/shadow", stack.proxy.admin_url))
        .send()
        .await
        .expect("GET /admin/shadow")
        .json()
        .await
        .expect("the report is JSON")
}

fn route<'a>(report: &'a Value, name: &str) -> &'a Value {
    (report["routes"].as_array().expect("routes"))
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or(&Value::Null)
}

/// Waits until `route` has `compared` cross-version comparisons recorded.
async fn wait_compared(stack: &Stack, name: &str, compared: u64) -> Value {
    eventually(
        &format!("{compared} comparisons on {name}"),
        Duration::from_secs(15),
        async || {
            let report = report(stack).await;
            (route(&report, name)["compared"].as_u64() >= Some(compared)).then_some(report)
        },
    )
    .await
}

fn field<'a>(route: &'a Value, path: &str) -> Option<&'a Value> {
    (route["fields"].as_array()?)
        .iter()
        .find(|f| f["field"] == path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_real_backends_answer_alike_and_health_backend_is_not_reported() {
    let stack = Stack::start_with(TestEnv::new(), 50.0, |config| {
        shadow_all(config, &["GET /health", "POST /api/auth/verify"]);
    })
    .await;
    let http = client();
    let token = shared::testing::client::demo_token(&TestServer::of(&stack)).await;
    for i in 0..40 {
        http.get(stack.url("/health")).send().await.expect("health");
        let verify = http.post(stack.url("/api/auth/verify"));
        let verify = if i % 2 == 0 {
            verify.bearer_auth(&token)
        } else {
            verify
        };
        verify.send().await.expect("verify");
    }
    let report = wait_compared(&stack, "/health", 40).await;
    let report = {
        let _ = report;
        wait_compared(&stack, "/api/auth/verify", 40).await
    };
    for name in ["/health", "/api/auth/verify"] {
        let counts = route(&report, name);
        assert_eq!(counts["mismatched"], 0, "{name}: {report:#}");
        assert!(counts["matched"].as_u64() > Some(0), "{name}: {report:#}");
        assert!(field(counts, "$.backend").is_none(), "{name}: {report:#}");
    }
    assert_eq!(report["overall"]["mismatched"], 0);
}

/// A stand-in for new whose `/health` says another version (a real difference) and adds a
/// random id to every answer (a difference by nature).
async fn differing_new() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let counter = Arc::new(AtomicU64::new(0));
    let health = move || {
        let counter = Arc::clone(&counter);
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            axum::Json(json!({
                "status": "ok",
                "backend": "new",
                "version": "9.9.9",
                "requestUuid": format!("{n:08x}-0000-4000-8000-000000000000"),
            }))
        }
    };
    serve_stand_in(Router::new().route("/health", get(health))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_that_differs_is_named_with_a_sample_and_a_random_id_is_noise() {
    let (new, _server) = differing_new().await;
    // Every user on new: shadows go to legacy, noise calls to new, where the id varies.
    let stack = Stack::start_with(TestEnv::new(), 100.0, |config| {
        config.backends.new.listen = new;
        shadow_all(config, &["GET /health"]);
    })
    .await;
    let http = client();
    for _ in 0..60 {
        http.get(stack.url("/health")).send().await.expect("health");
    }
    let report = wait_compared(&stack, "/health", 60).await;
    let health = route(&report, "/health");
    let version = field(health, "$.version").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(version["verdict"], "mismatch", "{report:#}");
    let sample = &version["samples"][0];
    assert_eq!(
        (sample["a"].as_str(), sample["b"].as_str()),
        (Some("\"0.1.0\""), Some("\"9.9.9\"")),
        "{report:#}"
    );
    let uuid = field(health, "$.requestUuid").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(uuid["verdict"], "noise", "{report:#}");
    assert!(health["mismatched"].as_u64() > Some(0));
    // Only /health was shadowed, and only these two fields differ.
    let fields: Vec<&str> = (health["fields"].as_array().unwrap().iter())
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields.len(), 2, "{fields:?}");
    let metrics = metrics_text(&stack.proxy.admin_url).await;
    assert!(
        metrics
            .contains(r#"proxy_shadow_field_mismatches_total{field="$.version",route="/health"}"#),
        "{metrics}"
    );
}

/// A stand-in for new that answers its health checks at once but a shadow (a request signed
/// with the shadow header) only after ten seconds.
async fn sleepy_new() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let health = |headers: HeaderMap| async move {
        if headers.contains_key(common::shadow::HEADER) {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        axum::Json(json!({"status": "ok", "backend": "new", "version": "0.1.0"}))
    };
    serve_stand_in(Router::new().route("/health", get(health))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_shadow_side_holds_up_no_client_and_excess_shadows_are_dropped() {
    let (new, _server) = sleepy_new().await;
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        config.backends.new.listen = new;
        shadow_all(config, &["GET /health"]);
        config.shadow.noise_percent = percent(0.0);
        config.shadow.max_inflight = 2.try_into().expect("non-zero");
        config.shadow.timeout = Duration::from_secs(1);
    })
    .await;
    // One keep-alive connection, five requests in turn: each is answered by legacy while
    // the shadows sleep, so all five are done long before any shadow could be.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let five = async {
        for _ in 0..5 {
            let response = http.get(stack.url("/health")).send().await.expect("health");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["backend"], "legacy");
        }
    };
    tokio::time::timeout(Duration::from_secs(5), five)
        .await
        .expect("the clients' answers never wait for a shadow");
    let report = eventually(
        "the two shadows time out",
        Duration::from_secs(10),
        async || {
            let report = report(&stack).await;
            (route(&report, "/health")["timedOut"] == 2).then_some(report)
        },
    )
    .await;
    let health = route(&report, "/health");
    // Five requests here and the stack's readiness request: two shadows in flight (both
    // timed out), every other one dropped.
    let dropped = health["dropped"].as_u64().unwrap_or(0);
    assert!((3..=4).contains(&dropped), "{report:#}");
    assert_eq!(health["compared"], 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadowed_generate_spends_the_budget_once_and_a_large_body_is_skipped() {
    let env = TestEnv::with(|config| {
        config.rate_limit.generate.capacity = 10.try_into().expect("non-zero");
        config.rate_limit.generate.refill_per_minute = 1.try_into().expect("non-zero");
    });
    let stack = Stack::start_with(env, 50.0, |config| {
        shadow_all(config, &["POST /api/ai/generate"]);
        config.shadow.max_body_bytes = proxy_bounded(200);
    })
    .await;
    let token = shared::testing::client::demo_token(&TestServer::of(&stack)).await;
    let http = client();
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let response = http
            .post(stack.url("/api/ai/generate"))
            .bearer_auth(&token)
            .json(&json!({"prompt": "hello", "maxTokens": 8}))
            .send()
            .await
            .expect("generate");
        assert_eq!(response.status(), 200);
        let header = response.headers().get("ratelimit-remaining").cloned();
        remaining.push(header.and_then(|v| v.to_str().ok()?.parse::<u64>().ok()));
        let _ = response.bytes().await;
    }
    wait_compared(&stack, "/api/ai/generate", 4).await;
    // One token per client request, never one for its shadow or its noise call.
    assert_eq!(
        remaining,
        [Some(9), Some(8), Some(7), Some(6)],
        "{remaining:?}"
    );

    let large = "x".repeat(300);
    let response = http
        .post(stack.url("/api/ai/generate"))
        .bearer_auth(&token)
        .json(&json!({"prompt": large, "maxTokens": 8}))
        .send()
        .await
        .expect("generate");
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;
    let report = eventually(
        "the large body is skipped",
        Duration::from_secs(5),
        async || {
            let report = report(&stack).await;
            (route(&report, "/api/ai/generate")["skipped"] == 1).then_some(report)
        },
    )
    .await;
    assert_eq!(
        route(&report, "/api/ai/generate")["compared"],
        4,
        "{report:#}"
    );
}

fn proxy_bounded<const MIN: u64, const MAX: u64>(
    value: u64,
) -> common::config::value::Bounded<MIN, MAX> {
    common::config::value::Bounded::new(value).expect("in range")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_signed_shadow_header_is_stripped_and_spends_the_budget() {
    let env = TestEnv::with(|config| {
        config.rate_limit.generate.capacity = 10.try_into().expect("non-zero");
        config.rate_limit.generate.refill_per_minute = 1.try_into().expect("non-zero");
    });
    let key = env.shadow_key.clone();
    let stack = Stack::start_with(env, 0.0, |_| {}).await;
    let token = shared::testing::client::demo_token(&TestServer::of(&stack)).await;
    let http = client();
    for expected in [9, 8] {
        // Even a correct signature (a leaked key, say) is not a client's to send.
        let response = http
            .post(stack.url("/api/ai/generate"))
            .bearer_auth(&token)
            .header("x-request-id", "client-chosen-id")
            .header(common::shadow::HEADER, key.sign("client-chosen-id"))
            .json(&json!({"prompt": "hello", "maxTokens": 8}))
            .send()
            .await
            .expect("generate");
        let remaining = response.headers().get("ratelimit-remaining").cloned();
        assert_eq!(
            remaining.and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
            Some(expected)
        );
        let _ = response.bytes().await;
    }
}

/// The stack's public endpoint as a `TestServer`, for the client helpers.
struct TestServer;

impl TestServer {
    fn of(stack: &Stack) -> shared::testing::TestServer {
        let addr: SocketAddr = stack
            .proxy
            .base_url
            .trim_start_matches("http://")
            .parse()
            .expect("an address");
        shared::testing::TestServer::new(addr, || {})
    }
}

/// A stand-in for new whose streamed generation breaks off after its first chunk, without
/// the final `done` event (its health checks pass).
async fn truncating_new() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let generate = || async {
        (
            [("content-type", "text/event-stream")],
            "event: delta\ndata: {\"text\":\"Hello\"}\n\n",
        )
    };
    let health =
        || async { axum::Json(json!({"status": "ok", "backend": "new", "version": "0.1.0"})) };
    let app = Router::new()
        .route("/health", get(health))
        .route("/api/ai/generate", axum::routing::post(generate));
    serve_stand_in(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_generation_whose_shadow_lacks_its_final_event_is_a_mismatch() {
    let (new, _server) = truncating_new().await;
    let env = TestEnv::with(|config| {
        config.rate_limit.generate.capacity = 1000.try_into().expect("non-zero");
    });
    // Every user on legacy: the shadows go to the stand-in, the noise calls to legacy.
    let stack = Stack::start_with(env, 0.0, |config| {
        config.backends.new.listen = new;
        shadow_all(config, &["POST /api/ai/generate"]);
    })
    .await;
    let token = shared::testing::client::demo_token(&TestServer::of(&stack)).await;
    let http = client();
    for _ in 0..30 {
        let response = http
            .post(stack.url("/api/ai/generate"))
            .bearer_auth(&token)
            .json(&json!({"prompt": "hello", "maxTokens": 4, "stream": true}))
            .send()
            .await
            .expect("generate");
        assert_eq!(response.status(), 200);
        let body = response.text().await.expect("the stream");
        assert!(
            body.contains("event: done"),
            "the client's own stream is whole: {body}"
        );
    }
    let report = wait_compared(&stack, "/api/ai/generate", 30).await;
    let generate = route(&report, "/api/ai/generate");
    let last = field(generate, "sse.final").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(last["verdict"], "mismatch", "{report:#}");
    assert!(generate["mismatched"].as_u64() > Some(0), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_never_count_in_the_rollout_judges_cohorts() {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        shadow_all(config, &["GET /health"]);
        config.rollout.enabled = true;
        config.rollout.steps = vec![proxy::config::RolloutStep {
            percent: percent(50.0),
            hold: Duration::from_secs(3_600),
            approval: false,
            shadow: false,
        }];
        config.rollout.analysis.interval = Duration::from_millis(300);
    })
    .await;
    let admin = stack.proxy.admin_url.clone();
    let rollout = async || -> Value {
        client()
            .get(format!("{admin}/admin/rollout"))
            .send()
            .await
            .expect("GET /admin/rollout")
            .json()
            .await
            .expect("JSON")
    };
    eventually("the step is entered", Duration::from_secs(10), async || {
        (rollout().await["phase"] == "progressing").then_some(())
    })
    .await;
    // From one evaluation's boundary to the next, 20 client requests, each shadowed and
    // noise-called: the cohorts hold at most those 20.
    let first = rollout().await["lastEvaluation"]["at"].clone();
    let boundary = eventually("an evaluation", Duration::from_secs(10), async || {
        let at = rollout().await["lastEvaluation"]["at"].clone();
        (at != first).then_some(at)
    })
    .await;
    let http = client();
    for _ in 0..20 {
        http.get(stack.url("/health")).send().await.expect("health");
    }
    let status = eventually("the next evaluation", Duration::from_secs(10), async || {
        let status = rollout().await;
        (status["lastEvaluation"]["at"] != boundary).then_some(status)
    })
    .await;
    wait_compared(&stack, "/health", 20).await;
    let evaluation = &status["lastEvaluation"];
    let counted = evaluation["canaryRequests"].as_u64().unwrap_or(0)
        + evaluation["baselineRequests"].as_u64().unwrap_or(0);
    assert!(counted <= 20, "{status:#}");
}

/// A dark launch: the first step at 0 % judged on shadow traffic alone, then users.
fn dark_launch(config: &mut ProxyConfig) {
    config.shadow.noise_percent = percent(100.0);
    config.rollout.enabled = true;
    config.rollout.steps = vec![
        proxy::config::RolloutStep {
            percent: percent(0.0),
            hold: Duration::from_secs(1),
            approval: false,
            shadow: true,
        },
        proxy::config::RolloutStep {
            percent: percent(100.0),
            hold: Duration::ZERO,
            approval: false,
            shadow: false,
        },
    ];
    let analysis = &mut config.rollout.analysis;
    analysis.interval = Duration::from_millis(300);
    analysis.min_requests = 10.try_into().expect("non-zero");
    analysis.passes_to_promote = 2.try_into().expect("non-zero");
    analysis.latency_tolerance = 2.0;
}

async fn rollout_of(stack: &Stack) -> Value {
    client()
        .get(format!("{}/admin/rollout", stack.proxy.admin_url))
        .send()
        .await
        .expect("GET /admin/rollout")
        .json()
        .await
        .expect("JSON")
}

/// Sends `/health` requests until the rollout leaves its first step (bounded), checking that
/// no user is served by new while it is on it; returns the rollout's status.
async fn health_until_the_dark_launch_ends(stack: &Stack) -> Value {
    let http = client();
    let on_first_step =
        |status: &Value| status["phase"] == "progressing" && status["stepIndex"] == 0;
    for _ in 0..2_000 {
        let mut served = Vec::new();
        for _ in 0..10 {
            let response = http.get(stack.url("/health")).send().await.expect("health");
            let body: Value = response.json().await.expect("JSON");
            served.push(body["backend"].clone());
        }
        let status = rollout_of(stack).await;
        if !on_first_step(&status) {
            return status;
        }
        // Still on the dark launch after the batch, so it ran through all of it.
        assert!(
            served.iter().all(|b| b == "legacy"),
            "no user on new during the dark launch: {served:?}"
        );
    }
    panic!(
        "the dark launch never ended: {:#}\n{:#}",
        rollout_of(stack).await,
        report(stack).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dark_launch_judged_on_shadows_alone_moves_users_only_when_new_answers_alike() {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        dark_launch(config);
        // Shadowing is off in [shadow]: the shadow step turns it on for itself.
        config.shadow.percent = percent(0.0);
    })
    .await;
    let status = health_until_the_dark_launch_ends(&stack).await;
    assert_eq!(status["phase"], "completed", "{status:#}");
    assert_eq!(status["currentPercent"], 100.0);
    let report = report(&stack).await;
    assert!(
        route(&report, "/health")["matched"].as_u64() > Some(0),
        "{report:#}"
    );
    assert_eq!(route(&report, "/health")["mismatched"], 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dark_launch_of_a_new_that_answers_differently_never_moves_a_user() {
    let (new, _server) = differing_new().await;
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        config.backends.new.listen = new;
        dark_launch(config);
    })
    .await;
    let status = health_until_the_dark_launch_ends(&stack).await;
    assert_eq!(status["phase"], "rolled_back", "{status:#}");
    assert_eq!(status["rollbackReason"], "failures", "{status:#}");
    let failed: Vec<&Value> = (status["lastEvaluation"]["verdicts"]
        .as_array()
        .unwrap()
        .iter())
    .filter(|v| v["outcome"] == "fail")
    .map(|v| &v["metric"])
    .collect();
    assert_eq!(failed, [&json!("shadow_mismatch")], "{status:#}");
    assert_eq!(stack.config().routing.new_percent.as_percent(), 0.0);
}
