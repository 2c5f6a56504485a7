//! A login flood does not starve the cheap endpoints: password hashing is bounded and runs on
//! its own low-priority threads, so verify answers while the flood is still being hashed.

use std::time::Duration;

use serde_json::json;

use super::login_body;
use crate::routes::{LOGIN, METRICS, VERIFY};
use crate::testing::client::{client, demo_token, get, post_json, send};
use crate::testing::{TestEnv, TestServer, eventually};

/// Logins in the flood, each for its own unknown email (so the throttle stays out of it), each
/// costing one password hash.
const FLOOD: u64 = 24;
/// Verifies answered while the server is hashing the flood.
const VERIFIES: usize = 5;
/// Generous: on two loaded cores a hash at low priority can take a long time.
const PATIENCE: Duration = Duration::from_secs(60);

/// The server's own count of logins refused for bad credentials (`auth_logins_total`).
async fn failed_logins(server: &TestServer) -> u64 {
    let metrics = get(server, METRICS).await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    metrics
        .body
        .lines()
        .find(|line| {
            line.starts_with("auth_logins_total{")
                && line.contains(r#"outcome="invalid_credentials""#)
        })
        .map_or(0, |line| {
            line.rsplit(' ')
                .next()
                .and_then(|count| count.parse().ok())
                .unwrap_or_else(|| panic!("a counter value: {line}"))
        })
}

pub async fn verify_is_not_starved_by_a_login_flood(server: &TestServer, _: &TestEnv) {
    let token = demo_token(server).await;
    assert_eq!(
        failed_logins(server).await,
        0,
        "no login failed before the flood"
    );
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let url = server.url(LOGIN);
            tokio::spawn(async move {
                let body = login_body(&format!("flood-{i}@example.com"), "wrong-password");
                let answer = send(
                    client()
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                )
                .await;
                answer.status
            })
        })
        .collect();
    // The verifies must run while the server is hashing the flood, not before it has begun:
    // wait until the server has refused a first login of it.
    let refused_before = eventually(
        "the server refuses a first login of the flood",
        PATIENCE,
        async || {
            let failed = failed_logins(server).await;
            (failed > 0).then_some(failed)
        },
    )
    .await;
    // Hashing is bounded, so these are answered while most of the flood still waits its turn.
    for _ in 0..VERIFIES {
        let answer = post_json(server, VERIFY, &json!({}), Some(&token)).await;
        assert_eq!(answer.status, 200);
    }
    // Counted after the last verify was answered, so at most this many were done by then.
    let refused_after = failed_logins(server).await;
    for login in flood {
        assert_eq!(login.await.expect("login task"), 401);
    }
    // The counter read above is the flood's: it ends at exactly the flood's size.
    eventually(
        "the server counts every login of the flood",
        PATIENCE,
        async || (failed_logins(server).await == FLOOD).then_some(()),
    )
    .await;
    assert!(
        refused_after < FLOOD,
        "verify waited for the whole login flood: {refused_before} of {FLOOD} logins were \
         refused when the verifies began, {refused_after} once they were answered"
    );
}
