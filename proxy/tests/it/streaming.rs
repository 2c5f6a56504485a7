//! Server-sent events pass through the proxy as they are produced, from either backend: the
//! first delta reaches the client while the backend is still generating the rest.

use common::config::value::Millis;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use shared::routes::{GENERATE, LOGIN};
use shared::testing::TestEnv;
use shared::testing::client::{Answer, client, send};

use crate::harness::Stack;

/// Logs the demo user in through the proxy; returns the token.
pub(crate) async fn login(stack: &Stack) -> String {
    let answer = send(
        client()
            .post(stack.url(LOGIN))
            .header("content-type", "application/json")
            .body(
                json!({"email": shared::service::DEMO_EMAIL, "password": shared::service::DEMO_PASSWORD})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(answer.status, 200, "demo login: {}", answer.body);
    answer.json()["token"].as_str().expect("a token").to_owned()
}

/// A streaming generate request through the proxy, with response headers received.
pub(crate) async fn start_stream(stack: &Stack, token: &str, max_tokens: u32) -> reqwest::Response {
    client()
        .post(stack.url(GENERATE))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(json!({"prompt": "stream me through the proxy", "maxTokens": max_tokens, "stream": true}).to_string())
        .send()
        .await
        .expect("the proxy answers")
}

async fn events_arrive_one_by_one(new_percent: f64, side: &str) {
    // Each token takes 200 ms to produce, so a proxy that buffered would deliver one chunk.
    let env = TestEnv::with(|config| config.generate.local.token_delay_ms = Millis::of(200));
    let stack = Stack::start_with(env, new_percent, |_| {}).await;
    let token = login(&stack).await;
    let response = start_stream(&stack, &token, 5).await;
    assert_eq!(response.status(), 200);
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("x-served-by").as_deref(), Some(side));
    let headers = response.headers().clone();

    let mut body = response.bytes_stream();
    let mut chunks: Vec<String> = Vec::new();
    let mut first_delta = None;
    // The timeout is a hang guard only.
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the stream goes on or ends")
    {
        let chunk = String::from_utf8(chunk.expect("a body chunk").to_vec()).expect("UTF-8");
        if first_delta.is_none() && chunk.contains("event: delta") {
            assert!(
                !chunk.contains("event: done"),
                "the first delta came together with the end of the stream: {chunk:?}"
            );
            first_delta = Some(chunks.len());
        }
        chunks.push(chunk);
    }
    let first_delta = first_delta.expect("a delta event");
    let later = &chunks[first_delta + 1..];
    assert!(
        !later.is_empty(),
        "nothing followed the first delta: {chunks:?}"
    );
    assert!(
        later.iter().any(|c| c.contains("event: done")),
        "the done event came after the first delta: {chunks:?}"
    );
    let delta_chunks = chunks.iter().filter(|c| c.contains("event: delta")).count();
    assert!(
        delta_chunks > 1,
        "all deltas arrived in one chunk: {chunks:?}"
    );

    // And the stream as a whole is intact: deltas, then one done.
    let answer = Answer {
        status: 200,
        headers,
        body: chunks.concat(),
    };
    let events = answer.events();
    let (done, deltas) = events.split_last().expect("events");
    assert_eq!(done.0, "done");
    assert!(deltas.iter().all(|(name, _)| name == "delta"), "{events:?}");
    assert_eq!(
        Some(deltas.len() as u64),
        done.1["usage"]["outputTokens"].as_u64(),
        "{events:?}"
    );
    assert!(deltas.len() > 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_from_legacy_arrives_incrementally_through_the_proxy() {
    events_arrive_one_by_one(0.0, "legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_from_new_arrives_incrementally_through_the_proxy() {
    events_arrive_one_by_one(100.0, "new").await;
}
