//! A graceful shutdown lets a request in flight finish, here a stream mid-generation.

use serde_json::json;
use shared::testing::client::{client, demo_token};
use shared::testing::{TestEnv, TestServer};
use shared::{BackendName, Service, routes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_stream_in_flight() {
    let env = TestEnv::with(|c| c.generate.local.token_delay_ms = 50);
    let service = Service::new(env.config.clone(), BackendName::Legacy).expect("service starts");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = legacy_backend::spawn(listener, service, false).expect("server starts");
    let handle = server.handle();
    let running = tokio::spawn(server);
    let base = TestServer::new(addr, || {});
    let token = demo_token(&base).await;
    let response = client()
        .post(base.url(routes::GENERATE))
        .bearer_auth(&token)
        .json(&json!({"prompt": "in flight", "maxTokens": 10, "stream": true}))
        .send()
        .await
        .expect("the stream starts");
    assert_eq!(response.status(), 200);
    let stopping = tokio::spawn(handle.stop(true));
    let body = response
        .text()
        .await
        .expect("the stream is read to its end");
    assert!(body.contains("event: done"), "{body}");
    stopping.await.expect("stop completes");
    running
        .await
        .expect("server task")
        .expect("server exits cleanly");
}
