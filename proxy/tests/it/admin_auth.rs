//! Who may use the admin listener: off loopback only with the bearer token (the dashboard
//! page aside), on loopback freely unless a token is configured; an admin listener off
//! loopback without a token never starts. And `proxy rollout`, the binary as a child
//! process, against a stand-in admin listener (axum) that records what it was sent, and
//! against the proxy itself.
//!
//! The admin listener is bound on `0.0.0.0` where the test needs it off loopback, but every
//! request goes to `127.0.0.1`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use proxy::config::ProxyConfig;
use proxy::server::Listeners;
use serde_json::{Value, json};
use shared::testing::client::client;

use crate::harness::{self, Refusing, RunningProxy};

const TOKEN: &str = "admin-s3cret-token";

/// Every test here reads the token the proxy would read; one in the runner's environment
/// would decide instead of the test.
fn no_token_in_the_environment() {
    assert!(
        std::env::var_os("CANARY_ADMIN_TOKEN").is_none(),
        "unset CANARY_ADMIN_TOKEN to run the admin access tests"
    );
}

/// The public listener on loopback and the admin one at `admin` (port 0).
fn listeners(admin: &str) -> Listeners {
    Listeners {
        public: TcpListener::bind("127.0.0.1:0").expect("bind the public listener"),
        admin: TcpListener::bind(admin).expect("bind the admin listener"),
        tls: None,
    }
}

/// A proxy config for `listeners` whose backends refuse every connection (admin access
/// needs none), with `token` in a file next to it when given; returns the config's path.
fn write_config(
    dir: &Path,
    listeners: &Listeners,
    backends: &[Refusing; 2],
    token: Option<&str>,
) -> PathBuf {
    let mut config =
        harness::proxy_config((backends[0].addr(), backends[1].addr()), listeners, 0.0);
    if let Some(token) = token {
        let file = dir.join("admin.token");
        // Surrounding whitespace is trimmed, as an editor's final newline.
        std::fs::write(&file, format!("  {token}\n")).expect("write the token file");
        config.proxy.admin_token_file = Some(PathBuf::from("admin.token"));
    }
    let path = dir.join("proxy.toml");
    harness::write_config(&path, &config);
    path
}

struct Admin {
    proxy: RunningProxy,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
    _backends: [Refusing; 2],
}

impl Admin {
    async fn start(admin: &str, token: Option<&str>) -> Self {
        no_token_in_the_environment();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let backends = [Refusing::bind(), Refusing::bind()];
        let listeners = listeners(admin);
        let config_path = write_config(dir.path(), &listeners, &backends, token);
        let proxy = harness::start_proxy(&config_path, listeners).await;
        Self {
            proxy,
            config_path,
            _dir: dir,
            _backends: backends,
        }
    }

    async fn get(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = client().get(format!("{}{path}", self.proxy.admin_url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.expect("the admin listener answers")
    }
}

async fn assert_unauthorized(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 401, "{what}");
    let headers = response.headers().clone();
    assert_eq!(headers["www-authenticate"], "Bearer", "{what}");
    assert_eq!(headers["content-type"], "application/json", "{what}");
    // The admin listener's answers carry the security headers too.
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
}

#[tokio::test]
async fn off_loopback_every_admin_route_needs_the_token_but_the_dashboard_page() {
    let admin = Admin::start("0.0.0.0:0", Some(TOKEN)).await;
    assert!(admin.proxy.admin_url.starts_with("http://127.0.0.1:"));
    let right = format!("Bearer {TOKEN}");
    for path in ["/metrics", "/admin/status", "/admin/stats", "/nope"] {
        assert_unauthorized(admin.get(path, None).await, path).await;
        for wrong in [
            "Bearer wrong-token",
            &format!("Bearer {TOKEN}x"),
            &format!("Basic {TOKEN}"),
            TOKEN,
        ] {
            assert_unauthorized(admin.get(path, Some(wrong)).await, wrong).await;
        }
    }
    for path in ["/metrics", "/admin/status", "/admin/stats"] {
        let response = admin.get(path, Some(&right)).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    let status: Value = (admin
        .get("/admin/status", Some(&format!("bearer  {TOKEN}")))
        .await)
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["newPercent"], 0.0);
    // With the token, what is not there is still not there.
    assert_eq!(admin.get("/nope", Some(&right)).await.status(), 404);
    for path in ["/admin", "/admin/"] {
        let response = admin.get(path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("ASCII")
                .starts_with("text/html")
        );
    }
}

#[tokio::test]
async fn off_loopback_without_a_token_the_proxy_refuses_to_start_naming_both_sources() {
    no_token_in_the_environment();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let backends = [Refusing::bind(), Refusing::bind()];
    let listeners = listeners("0.0.0.0:0");
    let config_path = write_config(dir.path(), &listeners, &backends, None);
    let config = ProxyConfig::load(&config_path).expect("a valid config");
    let state = proxy::server::state(config_path, config).expect("the state");
    let error = proxy::server::serve(listeners, state, std::future::pending())
        .expect_err("an open admin listener off loopback must not start")
        .to_string();
    assert!(error.contains("proxy.admin_token_file"), "{error}");
    assert!(error.contains("CANARY_ADMIN_TOKEN"), "{error}");
    assert!(error.contains("0.0.0.0:"), "{error}");
}

#[tokio::test]
async fn an_unreadable_or_empty_token_file_stops_the_start_naming_the_key() {
    no_token_in_the_environment();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let backends = [Refusing::bind(), Refusing::bind()];
    let listeners = listeners("127.0.0.1:0");
    let config_path = write_config(dir.path(), &listeners, &backends, Some(TOKEN));
    for content in [None, Some(" \n")] {
        let token_file = dir.path().join("admin.token");
        match content {
            None => std::fs::remove_file(&token_file).expect("remove the token file"),
            Some(text) => std::fs::write(&token_file, text).expect("write the token file"),
        }
        let config = ProxyConfig::load(&config_path).expect("a valid config");
        let error = proxy::server::state(config_path.clone(), config)
            .map(drop)
            .expect_err("no usable token")
            .to_string();
        assert!(error.starts_with("proxy.admin_token_file"), "{error}");
    }
}

#[tokio::test]
async fn on_loopback_the_admin_listener_is_open_unless_a_token_is_configured() {
    let open = Admin::start("127.0.0.1:0", None).await;
    for path in ["/metrics", "/admin/status", "/admin/"] {
        assert_eq!(open.get(path, None).await.status(), 200, "{path}");
    }
    drop(open);

    let guarded = Admin::start("127.0.0.1:0", Some(TOKEN)).await;
    assert_unauthorized(guarded.get("/admin/status", None).await, "loopback").await;
    let right = format!("Bearer {TOKEN}");
    assert_eq!(
        guarded.get("/admin/status", Some(&right)).await.status(),
        200
    );
    assert_eq!(guarded.get("/admin/", None).await.status(), 200);
}

/// Runs the proxy binary with `args` (from a folder without a `config.toml`) off the
/// test's runtime, so a server on that runtime keeps answering it.
async fn proxy_binary(args: &[&str], token: Option<&str>) -> Output {
    let cwd = tempfile::tempdir().expect("a temporary folder");
    let mut command = Command::new(env!("CARGO_BIN_EXE_proxy"));
    command.args(args).current_dir(cwd.path());
    match token {
        Some(token) => command.env("CANARY_ADMIN_TOKEN", token),
        None => command.env_remove("CANARY_ADMIN_TOKEN"),
    };
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the blocking task")
        .expect("the proxy binary runs");
    drop(cwd);
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One request the stand-in admin listener received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: String,
}

/// A stand-in for the rollout routes: `GET /admin/rollout` and `POST` to any action answer
/// a canned status waiting for approval of step 2; an approval of any other step is a stale
/// one (409). Records every request.
async fn stand_in_admin() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let status = json!({
        "enabled": true,
        "phase": "waiting_approval",
        "pauseReason": null,
        "rollbackReason": null,
        "stepIndex": 2,
        "currentPercent": 5.0,
        "stepStartedAt": null,
        "holdRemainingSeconds": null,
        "consecutivePasses": 3,
        "consecutiveFailures": 0,
        "steps": [
            {"percent": 1.0, "holdSeconds": 600.0, "approval": false},
            {"percent": 5.0, "holdSeconds": 1800.0, "approval": false},
            {"percent": 25.0, "holdSeconds": 3600.0, "approval": true},
            {"percent": 100.0, "holdSeconds": 0.0, "approval": false}
        ],
        "lastEvaluation": {
            "at": "2026-11-24T06:40:10Z", "outcome": "pass", "critical": null,
            "canaryRequests": 612, "baselineRequests": 598,
            "verdicts": [{"scope": "overall", "metric": "error_rate", "outcome": "pass",
                          "canary": 0.0016, "baseline": 0.0017, "pValue": 0.48,
                          "reason": "within tolerance"}]
        }
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
            let (status, record) = (status.clone(), Arc::clone(&record));
            async move {
                let field = |name: &str| {
                    (headers.get(name)).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                };
                let request = Seen {
                    path: uri.path().to_owned(),
                    content_type: field("content-type"),
                    authorization: field("authorization"),
                    body: body.clone(),
                };
                record.lock().expect("the record").push(request);
                let stale = uri.path() == "/admin/rollout/approve" && body != r#"{"step":2}"#;
                if stale {
                    let envelope = json!({"error": {"code": "STALE_APPROVAL",
                        "message": "step 1 is not awaiting approval: the rollout is waiting_approval at step 2",
                        "requestId": "r-1"}});
                    return (StatusCode::CONFLICT, axum::Json(envelope));
                }
                (StatusCode::OK, axum::Json(status))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stand-in");
    let address = listener.local_addr().expect("an address");
    // Bound, so connections wait in its backlog until it accepts: no start-up to wait for.
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, seen)
}

#[tokio::test]
async fn the_rollout_cli_prints_the_status_and_sends_json_approvals_with_the_token() {
    let (address, seen) = stand_in_admin().await;
    let admin = format!("http://{address}");

    let status = proxy_binary(&["rollout", "status", "--admin", &admin], None).await;
    assert!(status.status.success(), "{}", text(&status.stderr));
    let printed = text(&status.stdout);
    assert!(
        printed.starts_with("rollout: waiting_approval\n"),
        "{printed}"
    );
    assert!(printed.contains("proxy rollout approve 2\n"), "{printed}");
    assert!(printed.contains("overall"), "{printed}");
    assert!(printed.contains("p=0.4800"), "{printed}");

    let json = proxy_binary(&["rollout", "--admin", &admin, "status", "--json"], None).await;
    assert!(json.status.success(), "{}", text(&json.stderr));
    let body: Value = serde_json::from_slice(&json.stdout).expect("JSON on stdout");
    assert_eq!(body["phase"], "waiting_approval");

    let approve = proxy_binary(
        &["rollout", "approve", "2", "--admin", &admin],
        Some("cli-token"),
    )
    .await;
    assert!(approve.status.success(), "{}", text(&approve.stderr));
    assert!(text(&approve.stdout).starts_with("rollout: waiting_approval\n"));

    let stale = proxy_binary(
        &["rollout", "approve", "1", "--admin", &admin],
        Some("cli-token"),
    )
    .await;
    assert_eq!(stale.status.code(), Some(1));
    assert!(stale.stdout.is_empty(), "{}", text(&stale.stdout));
    let stderr = text(&stale.stderr);
    assert!(stderr.contains("STALE_APPROVAL"), "{stderr}");
    assert!(
        stderr.contains("step 1 is not awaiting approval"),
        "{stderr}"
    );

    for action in ["pause", "resume", "abort"] {
        let output = proxy_binary(&["rollout", action, "--admin", &admin], Some("cli-token")).await;
        assert!(
            output.status.success(),
            "{action}: {}",
            text(&output.stderr)
        );
    }

    let seen = seen.lock().expect("the record").clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/admin/rollout",
            "/admin/rollout",
            "/admin/rollout/approve",
            "/admin/rollout/approve",
            "/admin/rollout/pause",
            "/admin/rollout/resume",
            "/admin/rollout/abort",
        ]
    );
    // Without CANARY_ADMIN_TOKEN and without a config, no token is sent.
    assert_eq!(seen[0].authorization, None);
    let approval = &seen[2];
    assert_eq!(approval.body, r#"{"step":2}"#);
    assert_eq!(approval.content_type.as_deref(), Some("application/json"));
    assert_eq!(approval.authorization.as_deref(), Some("Bearer cli-token"));
    for post in &seen[4..] {
        assert_eq!(
            post.content_type.as_deref(),
            Some("application/json"),
            "{post:?}"
        );
        assert_eq!(
            post.authorization.as_deref(),
            Some("Bearer cli-token"),
            "{post:?}"
        );
    }
}

#[tokio::test]
async fn the_rollout_cli_refuses_bad_usage_with_exit_code_2() {
    for args in [
        &["rollout"][..],
        &["rollout", "approve"],
        &["rollout", "approve", "two"],
        &["rollout", "launch"],
    ] {
        let output = proxy_binary(args, None).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

#[tokio::test]
async fn the_rollout_cli_finds_the_wildcard_admin_listener_and_its_token_through_the_config() {
    let admin = Admin::start("0.0.0.0:0", Some(TOKEN)).await;
    let config = admin.config_path.to_str().expect("a UTF-8 path");
    let with_config = proxy_binary(&["rollout", "status", "--config", config], None).await;
    let stderr = text(&with_config.stderr);
    // The token from `proxy.admin_token_file` reached the wildcard listener over loopback.
    assert_eq!(with_config.status.code(), Some(0), "{stderr}");
    let stdout = text(&with_config.stdout);
    assert!(stdout.contains("idle"), "{stdout}");

    let url = &admin.proxy.admin_url;
    let without = proxy_binary(&["rollout", "status", "--admin", url], None).await;
    assert_eq!(without.status.code(), Some(1));
    let stderr = text(&without.stderr);
    assert!(stderr.contains("UNAUTHORIZED"), "{stderr}");
    assert!(stderr.contains("CANARY_ADMIN_TOKEN"), "{stderr}");
}
