//! The Anthropic provider against an in-process mock of the Messages API: the request it
//! sends, the answers it understands, and how each failure maps to the contract's classes.

use shared::config::{HttpBaseUrl, Seconds};
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use futures::StreamExt;
use serde_json::{Value, json};
use shared::api::Usage;
use shared::config::AnthropicProviderConfig;
use shared::generate::anthropic::AnthropicProvider;
use shared::generate::{Prompt, Provider, ProviderError, StreamEvent};

const API_KEY: &str = "sk-ant-test-key";
const CONFIG_MODEL: &str = "claude-config-model";
const PROMPT: &str = "Say hello";

/// Serves `router` on an ephemeral local port; the listener is bound before this returns, so
/// the server is ready for connections.
async fn mock(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock");
    let addr = listener.local_addr().expect("mock address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve the mock") });
    addr
}

fn provider(addr: SocketAddr) -> AnthropicProvider {
    let config = AnthropicProviderConfig {
        base_url: HttpBaseUrl::new(&format!("http://{addr}")).expect("an http URL"),
        model: CONFIG_MODEL.into(),
        timeout_seconds: Seconds::of(1),
        ..Default::default()
    };
    AnthropicProvider::new(&config, API_KEY.into()).expect("build the provider")
}

fn prompt() -> Prompt {
    Prompt {
        text: PROMPT.into(),
        max_tokens: 64,
        temperature: 0.5,
        model: None,
    }
}

/// A mock whose only route is `/v1/messages`.
fn messages(route: MethodRouter) -> Router {
    Router::new().route("/v1/messages", route)
}

/// Checks a Messages API request as the provider should send it for `prompt()`, expecting
/// `model` and `stream` in the body.
fn check_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    model: &str,
    stream: bool,
) -> Result<(), String> {
    if method != Method::POST || uri.path() != "/v1/messages" {
        return Err(format!("unexpected request {method} {uri}"));
    }
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if key != Some(API_KEY) {
        return Err(format!("x-api-key is {key:?}"));
    }
    let version = headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok());
    if version != Some("2023-06-01") {
        return Err(format!("anthropic-version is {version:?}"));
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let expected = [
        ("model", json!(model)),
        ("max_tokens", json!(64)),
        ("temperature", json!(0.5)),
        ("stream", json!(stream)),
    ];
    for (field, value) in expected {
        if body[field] != value {
            return Err(format!("{field} is {}, expected {value}", body[field]));
        }
    }
    let messages = body["messages"].as_array().map_or(0, Vec::len);
    if messages != 1 {
        return Err(format!("{messages} messages, expected 1"));
    }
    if body["messages"][0]["role"] != "user" || body["messages"][0]["content"] != PROMPT {
        return Err(format!("messages[0] is {}", body["messages"][0]));
    }
    Ok(())
}

/// A real-shaped non-streaming Messages response.
fn message_response(model: &str) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": " world"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 7, "output_tokens": 2},
    })
}

/// Server-sent events as the Messages API writes them: `event: NAME\ndata: JSON\n\n`.
fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

fn sse_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn message_start(model: &str, input_tokens: u32) -> (&'static str, Value) {
    (
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": "msg_01Stream",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        }),
    )
}

fn text_delta(text: &str) -> (&'static str, Value) {
    (
        "content_block_delta",
        json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }),
    )
}

/// Collects a stream whose `stream()` call must have succeeded.
async fn collect(
    provider: &AnthropicProvider,
    prompt: Prompt,
) -> Vec<Result<StreamEvent, ProviderError>> {
    match provider.stream(prompt).await {
        Ok(stream) => stream.collect().await,
        Err(error) => panic!("stream() failed before any event: {error:?}"),
    }
}

/// `stream()`'s error, which must come before any event.
async fn stream_error(provider: &AnthropicProvider) -> ProviderError {
    match provider.stream(prompt()).await {
        Ok(_) => panic!("stream() succeeded, expected an error before any event"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn generate_sends_a_messages_request_and_joins_the_text_blocks() {
    let addr = mock(Router::new().fallback(
        |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            match check_request(&method, &uri, &headers, &body, CONFIG_MODEL, false) {
                Ok(()) => axum::Json(message_response("claude-answer-model")).into_response(),
                Err(problem) => (StatusCode::BAD_REQUEST, problem).into_response(),
            }
        },
    ))
    .await;

    let generation = provider(addr).generate(prompt()).await.expect("generate");

    assert_eq!(generation.content, "Hello world");
    assert_eq!(generation.model, "claude-answer-model");
    assert_eq!(generation.stop_reason, "end_turn");
    assert_eq!(
        generation.usage,
        Usage {
            input_tokens: 7,
            output_tokens: 2
        }
    );
}

#[tokio::test]
async fn generate_sends_the_prompt_model_instead_of_the_configured_one() {
    let addr = mock(Router::new().fallback(
        |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            match check_request(&method, &uri, &headers, &body, "x", false) {
                Ok(()) => axum::Json(message_response("x")).into_response(),
                Err(problem) => (StatusCode::BAD_REQUEST, problem).into_response(),
            }
        },
    ))
    .await;

    let generation = provider(addr)
        .generate(Prompt {
            model: Some("x".into()),
            ..prompt()
        })
        .await
        .expect("generate");

    assert_eq!(generation.model, "x");
    assert_eq!(generation.content, "Hello world");
}

#[tokio::test]
async fn stream_yields_each_text_delta_then_done_with_model_stop_reason_and_usage() {
    let body = sse(&[
        message_start("claude-stream-model", 11),
        (
            "content_block_start",
            json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }),
        ),
        ("ping", json!({"type": "ping"})),
        text_delta("Hello"),
        text_delta(","),
        text_delta(" world"),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 3},
            }),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let addr = mock(Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, request: Bytes| async move {
            match check_request(&method, &uri, &headers, &request, CONFIG_MODEL, true) {
                Ok(()) => sse_response(body),
                Err(problem) => (StatusCode::BAD_REQUEST, problem).into_response(),
            }
        },
    ))
    .await;

    let events = collect(&provider(addr), prompt()).await;

    assert_eq!(
        events,
        vec![
            Ok(StreamEvent::Delta("Hello".into())),
            Ok(StreamEvent::Delta(",".into())),
            Ok(StreamEvent::Delta(" world".into())),
            Ok(StreamEvent::Done {
                model: "claude-stream-model".into(),
                stop_reason: "end_turn".into(),
                usage: Usage {
                    input_tokens: 11,
                    output_tokens: 3
                },
            }),
        ]
    );
}

/// Asserts that an error status from the API becomes `expected`'s class, for both `generate`
/// and `stream` (which must fail before yielding anything).
async fn check_status_mapping(status: u16, expected: &ProviderError) {
    let code = StatusCode::from_u16(status).expect("a valid status");
    let addr = mock(messages(post(move || async move {
        (
            code,
            axum::Json(json!({
                "type": "error",
                "error": {"type": "api_error", "message": "mock failure"},
            })),
        )
    })))
    .await;
    let provider = provider(addr);

    let from_generate = provider
        .generate(prompt())
        .await
        .expect_err("generate should fail");
    let from_stream = stream_error(&provider).await;

    for (call, error) in [("generate", from_generate), ("stream", from_stream)] {
        assert_eq!(
            std::mem::discriminant(&error),
            std::mem::discriminant(expected),
            "status {status} from {call}: got {error:?}, expected {expected:?}"
        );
    }
}

#[tokio::test]
async fn error_statuses_map_to_unavailable_or_upstream() {
    let unavailable = ProviderError::Unavailable(String::new());
    let upstream = ProviderError::Upstream(String::new());
    let cases = [
        (429, &unavailable),
        (529, &unavailable),
        (500, &upstream),
        (400, &upstream),
        (504, &ProviderError::Timeout),
    ];
    for (status, expected) in cases {
        check_status_mapping(status, expected).await;
    }
}

#[tokio::test]
async fn an_api_that_never_answers_times_out() {
    let addr = mock(messages(post(std::future::pending::<()>))).await;
    let provider = provider(addr);

    let (from_generate, from_stream) =
        tokio::join!(provider.generate(prompt()), stream_error(&provider));

    assert_eq!(from_generate, Err(ProviderError::Timeout));
    assert_eq!(from_stream, ProviderError::Timeout);
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let provider = provider(addr);

    let from_generate = provider
        .generate(prompt())
        .await
        .expect_err("generate should fail");
    let from_stream = stream_error(&provider).await;

    assert!(
        matches!(from_generate, ProviderError::Unavailable(_)),
        "generate: {from_generate:?}"
    );
    assert!(
        matches!(from_stream, ProviderError::Unavailable(_)),
        "stream: {from_stream:?}"
    );
}

#[tokio::test]
async fn an_overloaded_error_event_mid_stream_ends_it_as_unavailable() {
    let body = sse(&[
        message_start("claude-stream-model", 5),
        text_delta("Hel"),
        (
            "error",
            json!({
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }),
        ),
    ]);
    let addr = mock(messages(post(move || async move { sse_response(body) }))).await;

    let events = collect(&provider(addr), prompt()).await;

    assert_eq!(events.len(), 2, "events: {events:?}");
    assert_eq!(events[0], Ok(StreamEvent::Delta("Hel".into())));
    assert!(
        matches!(events[1], Err(ProviderError::Unavailable(_))),
        "last event: {:?}",
        events[1]
    );
}

#[tokio::test]
async fn a_stream_closed_before_message_stop_ends_with_an_upstream_error() {
    let body = sse(&[
        message_start("claude-stream-model", 5),
        text_delta("Hel"),
        text_delta("lo"),
    ]);
    let addr = mock(messages(post(move || async move { sse_response(body) }))).await;

    let events = collect(&provider(addr), prompt()).await;

    assert_eq!(events.len(), 3, "events: {events:?}");
    assert_eq!(
        events[..2],
        [
            Ok(StreamEvent::Delta("Hel".into())),
            Ok(StreamEvent::Delta("lo".into())),
        ]
    );
    assert!(
        matches!(events[2], Err(ProviderError::Upstream(_))),
        "last event: {:?}",
        events[2]
    );
}

#[tokio::test]
async fn an_error_status_whose_body_stalls_still_ends_in_time() {
    let stalled = || async {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::body::Body::from_stream(
                futures::stream::pending::<Result<Bytes, std::io::Error>>(),
            ),
        )
    };
    let addr = mock(messages(post(stalled))).await;
    let provider = provider(addr);
    assert!(matches!(
        stream_error(&provider).await,
        ProviderError::Upstream(_)
    ));
    assert!(matches!(
        provider.generate(prompt()).await,
        Err(ProviderError::Upstream(_) | ProviderError::Timeout)
    ));
}
