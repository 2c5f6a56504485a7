//! A graceful shutdown lets a request in flight finish, here a stream mid-generation.

use serde_json::json;
use shared::server_tests::Spawned;
use shared::testing::TestEnv;
use shared::testing::client::{client, demo_token};
use shared::{BackendName, routes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_stream_in_flight() {
    let env = TestEnv::with(|c| c.generate.local.token_delay_ms = 50);
    let spawned = Spawned::start(&env, BackendName::New, new_backend::serve);
    let token = demo_token(spawned.server()).await;
    let response = client()
        .post(spawned.server().url(routes::GENERATE))
        .bearer_auth(&token)
        .json(&json!({"prompt": "in flight", "maxTokens": 10, "stream": true}))
        .send()
        .await
        .expect("the stream starts");
    assert_eq!(response.status(), 200);
    let stopping = tokio::spawn(spawned.shut_down());
    let body = response
        .text()
        .await
        .expect("the stream is read to its end");
    assert!(body.contains("event: done"), "{body}");
    stopping
        .await
        .expect("stop completes")
        .expect("server exits cleanly");
}
