//! Cases that hold for every route: health, request ids, 404 and 405, metrics, the
//! OpenAPI document and the frontend page.

use serde_json::json;

use super::{assert_answer, error};
use crate::routes::{GENERATE, HEALTH, LOGIN, METRICS, OPENAPI, VERIFY};
use crate::testing::client::{client, get, post_json, send};
use crate::testing::{TestEnv, TestServer};

pub async fn health_names_the_backend(server: &TestServer, _: &TestEnv) {
    let head = send(client().head(server.url(HEALTH))).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let answer = get(server, HEALTH).await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert!(
        matches!(body["backend"].as_str(), Some("legacy" | "new")),
        "{body}"
    );
    assert_eq!(
        body,
        json!({"status": "ok", "backend": body["backend"], "version": "0.1.0"})
    );
}

pub async fn request_id_is_kept_or_generated(server: &TestServer, _: &TestEnv) {
    let kept = send(
        client()
            .get(server.url(HEALTH))
            .header("x-request-id", "req-42"),
    )
    .await;
    assert_eq!(kept.header("x-request-id"), Some("req-42"));
    let minted = get(server, "/nowhere").await;
    assert!(
        minted
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 16)
    );
    // Generated per request: a fixed id would pass the check above.
    let again = get(server, "/nowhere").await;
    assert_ne!(again.header("x-request-id"), minted.header("x-request-id"));
}

pub async fn unknown_route_is_404(server: &TestServer, _: &TestEnv) {
    for path in ["/nowhere", "/api/auth/login/", "/api", "/HEALTH"] {
        assert_answer(
            &get(server, path).await,
            404,
            &error("NOT_FOUND", "no such route"),
        );
    }
    let post = post_json(server, "/api/other", &json!({}), None).await;
    assert_answer(&post, 404, &error("NOT_FOUND", "no such route"));
}

pub async fn wrong_method_is_405_with_allow(server: &TestServer, _: &TestEnv) {
    let cases = [
        (reqwest::Method::GET, LOGIN, "POST"),
        (reqwest::Method::PUT, VERIFY, "POST"),
        (reqwest::Method::DELETE, GENERATE, "POST"),
        (reqwest::Method::POST, HEALTH, "GET, HEAD"),
        (reqwest::Method::PATCH, METRICS, "GET, HEAD"),
        (reqwest::Method::POST, OPENAPI, "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let answer = send(client().request(method.clone(), server.url(path))).await;
        assert_answer(
            &answer,
            405,
            &error("METHOD_NOT_ALLOWED", "method not allowed"),
        );
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
    }
}

pub async fn metrics_are_prometheus_text(server: &TestServer, _: &TestEnv) {
    get(server, HEALTH).await;
    let answer = get(server, METRICS).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let backend = get(server, HEALTH).await.json()["backend"]
        .as_str()
        .unwrap()
        .to_owned();
    let series = format!(
        r#"http_requests_total{{method="GET",route="/health",status="200",backend="{backend}"}}"#
    );
    assert!(answer.body.contains(&series), "{}", answer.body);
    assert!(
        answer
            .body
            .contains("# TYPE http_request_duration_seconds histogram")
    );
}

pub async fn openapi_document_is_served(server: &TestServer, _: &TestEnv) {
    let answer = get(server, OPENAPI).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let doc = answer.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        answer.body.as_bytes(),
        crate::openapi::document_json().as_slice()
    );
}

pub async fn frontend_page_is_served(server: &TestServer, _: &TestEnv) {
    let answer = get(server, "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(answer.body.contains("<title>Canary</title>"));
    // The page talks to the contract's endpoints only.
    for path in [LOGIN, VERIFY, GENERATE] {
        assert!(answer.body.contains(path), "{path}");
    }
    let post = send(client().post(server.url("/"))).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}
