//! `POST /api/auth/verify`: a token in the header or the body, and a missing one.

use serde_json::{Value, json};

use super::{TOKEN_INVALID, TOKEN_MISSING, assert_answer, validation};
use crate::routes::VERIFY;
use crate::testing::client::{client, demo_token, post_json, send};
use crate::testing::forge;
use crate::testing::{TestEnv, TestServer};

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn verified(token: &str, env: &TestEnv) -> Value {
    let claims = forge::verify_independently(token, &env.secret).expect("verifies");
    json!({"valid": true,
           "user": {"id": claims["sub"], "email": "demo@example.com", "name": "Demo User"},
           "expiresAt": rfc3339(claims["exp"].as_i64().unwrap())})
}

pub async fn verify_accepts_the_header(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    let answer = post_json(server, VERIFY, &json!({}), Some(&token)).await;
    assert_answer(&answer, 200, &verified(&token, env));
    assert!(answer.json()["expiresAt"].as_str().unwrap().ends_with('Z'));
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let answer = send(
            client()
                .post(server.url(VERIFY))
                .header("authorization", format!("{scheme} {token}")),
        )
        .await;
        assert_eq!(answer.status, 200, "{scheme}");
    }
}

pub async fn verify_accepts_the_body_when_there_is_no_header(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    let answer = post_json(server, VERIFY, &json!({"token": token}), None).await;
    assert_answer(&answer, 200, &verified(&token, env));
}

pub async fn verify_header_wins_over_body(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    let header_good = post_json(server, VERIFY, &json!({"token": "garbage"}), Some(&token)).await;
    assert_answer(&header_good, 200, &verified(&token, env));
    let header_bad = post_json(server, VERIFY, &json!({"token": token}), Some("garbage")).await;
    assert_answer(
        &header_bad,
        401,
        &json!({"valid": false, "error": {"code": "TOKEN_INVALID", "message": TOKEN_INVALID}}),
    );
}

pub async fn verify_without_token_is_token_missing(server: &TestServer, _: &TestEnv) {
    let missing =
        json!({"valid": false, "error": {"code": "TOKEN_MISSING", "message": TOKEN_MISSING}});
    assert_answer(
        &send(client().post(server.url(VERIFY))).await,
        401,
        &missing,
    );
    assert_answer(
        &post_json(server, VERIFY, &json!({}), None).await,
        401,
        &missing,
    );
    assert_answer(
        &post_json(server, VERIFY, &json!({"token": ""}), None).await,
        401,
        &missing,
    );
    let wrong_type = post_json(server, VERIFY, &json!({"token": 5}), None).await;
    assert_answer(
        &wrong_type,
        400,
        &validation(&[("token", "must be a string")]),
    );
}
