//! `POST /api/ai/generate`: authentication, the order of checks, whole and streamed
//! answers, validation and the per-user budget.

use serde_json::{Value, json};

use super::{TOKEN_EXPIRED, TOKEN_MISSING, assert_answer, error, validation};
use crate::routes::{GENERATE, VERIFY};
use crate::testing::client::{client, demo_token, post_json, send};
use crate::testing::forge;
use crate::testing::{TEST_RATE_LIMIT, TestEnv, TestServer};

pub async fn generate_requires_a_token(server: &TestServer, env: &TestEnv) {
    let answer = post_json(server, GENERATE, &json!({"prompt": "hi"}), None).await;
    assert_answer(&answer, 401, &error("TOKEN_MISSING", TOKEN_MISSING));
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    let basic = send(
        client()
            .post(server.url(GENERATE))
            .header("authorization", "Basic dXNlcjpwdw=="),
    )
    .await;
    assert_answer(
        &basic,
        401,
        &error(
            "TOKEN_INVALID",
            "authorization header must be 'Bearer <token>'",
        ),
    );
    let mut claims = forge::claims(&env.config);
    claims["exp"] = json!(forge::now() - 3600);
    let expired = forge::hs256(&forge::hs256_header(), &claims, &env.secret);
    let answer = post_json(server, GENERATE, &json!({"prompt": "hi"}), Some(&expired)).await;
    assert_answer(&answer, 401, &error("TOKEN_EXPIRED", TOKEN_EXPIRED));
    let answer = post_json(server, VERIFY, &json!({}), Some(&expired)).await;
    assert_answer(
        &answer,
        401,
        &json!({"valid": false, "error": {"code": "TOKEN_EXPIRED", "message": TOKEN_EXPIRED}}),
    );
}

pub async fn generate_checks_in_contract_order(server: &TestServer, _: &TestEnv) {
    let token = demo_token(server).await;
    let request = |token: Option<&str>, content_type: &str, body: String| {
        let mut request = client()
            .post(server.url(GENERATE))
            .header("content-type", content_type.to_owned())
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        send(request)
    };
    let huge = json!({"prompt": "x".repeat(70 * 1024)}).to_string();
    let cases = [
        (None, "text/plain", huge.clone(), 401),
        (Some(token.as_str()), "text/plain", huge.clone(), 415),
        (Some(token.as_str()), "application/json", huge, 413),
        (
            Some(token.as_str()),
            "application/json",
            "{not json".to_owned(),
            400,
        ),
    ];
    for (token, content_type, body, status) in cases {
        let answer = request(token, content_type, body).await;
        assert_eq!(answer.status, status, "{content_type}: {}", answer.body);
    }
}

fn prompt(text: &str) -> Value {
    json!({"prompt": text, "maxTokens": 64, "temperature": 0.2})
}

pub async fn generate_answers_whole(server: &TestServer, _: &TestEnv) {
    let token = demo_token(server).await;
    let answer = post_json(
        server,
        GENERATE,
        &prompt("Write a haiku about canaries"),
        Some(&token),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("gen_"), "{id}");
    let content = body["content"].as_str().unwrap();
    assert!(!content.is_empty());
    let output = body["usage"]["outputTokens"].as_u64().unwrap();
    assert_eq!(output as usize, content.split_whitespace().count());
    assert_eq!(
        body,
        json!({"id": id, "model": "local-canary-1", "content": content, "stopReason": body["stopReason"],
               "usage": {"inputTokens": 5, "outputTokens": output}})
    );
    assert!(matches!(
        body["stopReason"].as_str(),
        Some("end_turn" | "max_tokens")
    ));
    assert_eq!(
        answer.header("ratelimit-limit"),
        Some(TEST_RATE_LIMIT.to_string().as_str())
    );
    assert_eq!(
        answer.header("ratelimit-remaining"),
        Some((TEST_RATE_LIMIT - 1).to_string().as_str())
    );
    assert!(
        answer
            .header("ratelimit-reset")
            .is_some_and(|r| r.parse::<u64>().is_ok())
    );
    let named = post_json(
        server,
        GENERATE,
        &json!({"prompt": "hi", "model": "my-model"}),
        Some(&token),
    )
    .await;
    assert_eq!(named.json()["model"], "my-model");
}

pub async fn generate_is_deterministic_and_honours_max_tokens(server: &TestServer, _: &TestEnv) {
    let token = demo_token(server).await;
    let first = post_json(server, GENERATE, &prompt("same prompt"), Some(&token))
        .await
        .json();
    let second = post_json(server, GENERATE, &prompt("same prompt"), Some(&token))
        .await
        .json();
    assert_eq!(first["content"], second["content"]);
    assert_ne!(first["id"], second["id"]);
    let short = post_json(
        server,
        GENERATE,
        &json!({"prompt": "same prompt", "maxTokens": 2}),
        Some(&token),
    )
    .await
    .json();
    assert_eq!(short["usage"]["outputTokens"], 2);
    assert_eq!(short["stopReason"], "max_tokens");
    assert_eq!(
        short["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        2
    );
}

pub async fn generate_validation_names_each_field(server: &TestServer, _: &TestEnv) {
    let token = demo_token(server).await;
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (json!({}), vec![("prompt", "is required")]),
        (
            json!({"prompt": ""}),
            vec![("prompt", "must be between 1 and 32000 characters")],
        ),
        (
            json!({"prompt": "é".repeat(32_001)}),
            vec![("prompt", "must be between 1 and 32000 characters")],
        ),
        (
            json!({"prompt": "x", "maxTokens": 0}),
            vec![("maxTokens", "must be an integer between 1 and 4096")],
        ),
        (
            json!({"prompt": "x", "maxTokens": 4097}),
            vec![("maxTokens", "must be an integer between 1 and 4096")],
        ),
        (
            json!({"prompt": "x", "maxTokens": 1.5}),
            vec![("maxTokens", "must be an integer between 1 and 4096")],
        ),
        (
            json!({"prompt": "x", "temperature": -0.1}),
            vec![("temperature", "must be a number between 0 and 1")],
        ),
        (
            json!({"prompt": "x", "temperature": "hot"}),
            vec![("temperature", "must be a number between 0 and 1")],
        ),
        (
            json!({"prompt": "x", "stream": "yes"}),
            vec![("stream", "must be a boolean")],
        ),
        (
            json!({"prompt": 1, "model": 2}),
            vec![
                ("prompt", "must be a string"),
                ("model", "must be a string"),
            ],
        ),
    ];
    for (body, details) in cases {
        let answer = post_json(server, GENERATE, &body, Some(&token)).await;
        assert_answer(&answer, 400, &validation(&details));
        // Refused bodies spend nothing but still report the budget.
        assert_eq!(
            answer.header("ratelimit-remaining"),
            Some(TEST_RATE_LIMIT.to_string().as_str())
        );
    }
    let ok = post_json(
        server,
        GENERATE,
        &json!({"prompt": "é".repeat(32_000), "maxTokens": 1}),
        Some(&token),
    )
    .await;
    assert_eq!(
        ok.status, 200,
        "32,000 two-byte characters are within the limit"
    );
}

pub async fn generate_streams_deltas_then_done(server: &TestServer, _: &TestEnv) {
    let token = demo_token(server).await;
    let whole = post_json(server, GENERATE, &prompt("stream me"), Some(&token))
        .await
        .json();
    let mut streamed = prompt("stream me");
    streamed["stream"] = json!(true);
    let answer = post_json(server, GENERATE, &streamed, Some(&token)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert!(answer.header("ratelimit-remaining").is_some());
    let events = answer.events();
    let (done, deltas) = events.split_last().expect("events");
    let mut text = String::new();
    for (name, data) in deltas {
        assert_eq!(name, "delta");
        let delta = data["text"].as_str().expect("text");
        assert_eq!(data, &json!({"text": delta}));
        text.push_str(delta);
    }
    assert_eq!(text, whole["content"].as_str().unwrap());
    assert_eq!(done.0, "done");
    let id = done.1["id"].as_str().unwrap();
    assert!(id.starts_with("gen_"));
    assert_eq!(
        done.1,
        json!({"id": id, "model": whole["model"], "stopReason": whole["stopReason"], "usage": whole["usage"]})
    );
    assert_eq!(
        deltas.len() as u64,
        whole["usage"]["outputTokens"].as_u64().unwrap()
    );
}

pub async fn generate_rate_limit_counts_down_then_429(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    for left in (0..TEST_RATE_LIMIT).rev() {
        let answer = post_json(server, GENERATE, &prompt("count"), Some(&token)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
    }
    let refused = post_json(server, GENERATE, &prompt("count"), Some(&token)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["code"], "RATE_LIMITED");
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // One token a minute: the next arrives within 60 seconds.
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        refused.json()["error"]["message"],
        format!("too many requests; retry in {retry} seconds")
    );
    // The budget is per user: another user still has a full one.
    let mut claims = forge::claims(&env.config);
    claims["sub"] = json!("someone-else");
    let other = forge::hs256(&forge::hs256_header(), &claims, &env.secret);
    let answer = post_json(server, GENERATE, &prompt("count"), Some(&other)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("ratelimit-remaining"),
        Some((TEST_RATE_LIMIT - 1).to_string().as_str())
    );
}
