//! A login flood (bounded password hashing) does not starve the cheap endpoints.

use serde_json::json;

use super::login_body;
use crate::routes::{LOGIN, VERIFY};
use crate::testing::client::{client, demo_token, post_json, send};
use crate::testing::{TestEnv, TestServer};

pub async fn verify_is_not_starved_by_a_login_flood(server: &TestServer, _: &TestEnv) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const FLOOD: usize = 24;
    let token = demo_token(server).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let url = server.url(LOGIN);
            let finished = Arc::clone(&finished);
            tokio::spawn(async move {
                let body = login_body(&format!("flood-{i}@example.com"), "wrong-password");
                let answer = send(
                    client()
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                )
                .await;
                finished.fetch_add(1, Ordering::SeqCst);
                answer.status
            })
        })
        .collect();
    // Hashing is bounded, so these are answered while most of the flood still waits its turn.
    for _ in 0..5 {
        let answer = post_json(server, VERIFY, &json!({}), Some(&token)).await;
        assert_eq!(answer.status, 200);
    }
    let done_when_verified = finished.load(Ordering::SeqCst);
    for login in flood {
        assert_eq!(login.await.expect("login task"), 401);
    }
    assert!(
        done_when_verified < FLOOD,
        "verify waited for the whole login flood"
    );
}
