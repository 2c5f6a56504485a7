//! Who may use the admin listener: off loopback only with the bearer token (the dashboard
//! page aside), on loopback freely unless a token is configured; an admin listener off
//! loopback without a token never starts.
//!
//! The admin listener is bound on `0.0.0.0` where the test needs it off loopback, but every
//! request goes to `127.0.0.1`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use proxy::config::ProxyConfig;
use proxy::server::Listeners;
use serde_json::Value;
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
