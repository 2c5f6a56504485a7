//! `POST /api/auth/login`: the token it mints, and every way a request can be refused.

use futures::StreamExt as _;
use serde_json::{Value, json};

use super::{INVALID_CREDENTIALS, assert_answer, error, login, login_body, validation};
use crate::routes::LOGIN;
use crate::testing::client::{client, demo_token, post_json, send};
use crate::testing::forge;
use crate::testing::{TestEnv, TestServer};

pub async fn login_succeeds(server: &TestServer, env: &TestEnv) {
    let answer = login(server, "demo@example.com", "demo-password").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    let token = body["token"].as_str().expect("token");
    let id = body["user"]["id"].as_str().expect("user id");
    assert!(!id.is_empty());
    assert_eq!(
        body,
        json!({"token": token, "tokenType": "Bearer", "expiresIn": 3600,
               "user": {"id": id, "email": "demo@example.com", "name": "Demo User"}})
    );
    let claims = forge::verify_independently(token, &env.secret).expect("verifies");
    let mut keys: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["aud", "email", "exp", "iat", "iss", "jti", "name", "sub"]
    );
    assert_eq!(claims["sub"], id);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

pub async fn login_email_is_case_insensitive(server: &TestServer, _: &TestEnv) {
    let answer = login(server, "DeMo@Example.COM", "demo-password").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["user"]["email"], "demo@example.com");
}

pub async fn login_unknown_email_and_wrong_password_answer_alike(server: &TestServer, _: &TestEnv) {
    let wrong = login(server, "demo@example.com", "wrong").await;
    let unknown = login(server, "nobody@example.com", "demo-password").await;
    for answer in [&wrong, &unknown] {
        assert_answer(
            answer,
            401,
            &error("INVALID_CREDENTIALS", INVALID_CREDENTIALS),
        );
    }
    assert_eq!(wrong.body, unknown.body);
}

pub async fn login_validation_names_each_field(server: &TestServer, _: &TestEnv) {
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            json!({}),
            vec![("email", "is required"), ("password", "is required")],
        ),
        (
            json!({"email": "a@b.co"}),
            vec![("password", "is required")],
        ),
        (
            json!({"email": "not an email", "password": "x"}),
            vec![("email", "must be a valid email address")],
        ),
        (
            json!({"email": 42, "password": ["x"]}),
            vec![
                ("email", "must be a string"),
                ("password", "must be a string"),
            ],
        ),
        (
            json!({"email": "a@b.co", "password": ""}),
            vec![("password", "must be between 1 and 1024 characters")],
        ),
        (
            json!({"email": "a@b.co", "password": "x".repeat(1025)}),
            vec![("password", "must be between 1 and 1024 characters")],
        ),
        (
            json!({"email": format!("{}@example.com", "a".repeat(250)), "password": "x"}),
            vec![("email", "must be a valid email address")],
        ),
    ];
    for (body, details) in cases {
        let answer = post_json(server, LOGIN, &body, None).await;
        assert_answer(&answer, 400, &validation(&details));
    }
    let empty = send(client().post(server.url(LOGIN))).await;
    assert_answer(
        &empty,
        400,
        &validation(&[("email", "is required"), ("password", "is required")]),
    );
    for bad in ["{", "[1, 2]", "\"text\"", "null"] {
        let answer = send(
            client()
                .post(server.url(LOGIN))
                .header("content-type", "application/json")
                .body(bad),
        )
        .await;
        let expected = if bad == "{" {
            "must be valid JSON"
        } else {
            "must be a JSON object"
        };
        assert_answer(&answer, 400, &validation(&[("body", expected)]));
    }
}

pub async fn login_refuses_other_media_types(server: &TestServer, _: &TestEnv) {
    let expected = error(
        "UNSUPPORTED_MEDIA_TYPE",
        "content-type must be application/json",
    );
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let answer = send(
            client()
                .post(server.url(LOGIN))
                .header("content-type", content_type)
                .body("{}"),
        )
        .await;
        assert_answer(&answer, 415, &expected);
    }
    let without = send(
        client()
            .post(server.url(LOGIN))
            .body(r#"{"email":"a@b.co","password":"x"}"#),
    )
    .await;
    assert_answer(&without, 415, &expected);
    let with_charset = send(
        client()
            .post(server.url(LOGIN))
            .header("content-type", "application/json; charset=utf-8")
            .body(login_body("demo@example.com", "demo-password").to_string()),
    )
    .await;
    assert_eq!(with_charset.status, 200);
}

pub async fn login_refuses_oversized_bodies(server: &TestServer, _: &TestEnv) {
    let body = login_body("demo@example.com", &"x".repeat(70 * 1024));
    let answer = post_json(server, LOGIN, &body, None).await;
    assert_answer(
        &answer,
        413,
        &error(
            "PAYLOAD_TOO_LARGE",
            "request body is larger than 65536 bytes",
        ),
    );
    // A megabyte is refused the same way.
    let megabyte = login_body("demo@example.com", &"x".repeat(1024 * 1024));
    assert_eq!(post_json(server, LOGIN, &megabyte, None).await.status, 413);
    // A body that never ends cannot be read whole: it is refused once it passes the limit.
    let over_the_limit = bytes::Bytes::from(vec![b' '; 70 * 1024]);
    let endless = futures::stream::iter([Ok::<_, std::io::Error>(over_the_limit)])
        .chain(futures::stream::pending());
    let request = client()
        .post(server.url(LOGIN))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(endless));
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), send(request))
        .await
        .expect("an answer before the body ends, which it never does");
    assert_answer(
        &answer,
        413,
        &error(
            "PAYLOAD_TOO_LARGE",
            "request body is larger than 65536 bytes",
        ),
    );
}

pub async fn login_odd_input_is_a_clear_client_error(server: &TestServer, _: &TestEnv) {
    let cases = [
        (login_body("demo@example.com", &"x".repeat(60 * 1024)), 400),
        (login_body("demo\u{0}@example.com", "demo-password"), 400),
        (login_body("demo@example.com", "demo\u{0}password"), 401),
        (login_body("' OR 1=1 --@example.com", "x"), 400),
        (login_body("demo@example.com", "' OR '1'='1"), 401),
        (login_body("x@example.com'; DROP TABLE users; --", "x"), 400),
    ];
    for (body, status) in cases {
        let answer = post_json(server, LOGIN, &body, None).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
    }
    // The users table survived.
    let answer = login(server, "demo@example.com", "demo-password").await;
    assert_eq!(answer.status, 200);
}

pub async fn login_lengths_count_characters(server: &TestServer, _: &TestEnv) {
    let answer = login(server, "demo@example.com", &"é".repeat(1024)).await;
    assert_answer(
        &answer,
        401,
        &error("INVALID_CREDENTIALS", INVALID_CREDENTIALS),
    );
}

pub async fn token_verifies_in_an_independent_library(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    let claims = forge::verify_independently(&token, &env.secret).expect("verifies");
    assert_eq!(claims["iss"], env.config.auth.issuer.as_str());
    assert_eq!(claims["aud"], env.config.auth.audience.as_str());
    assert!(forge::verify_independently(&token, &[0u8; 32]).is_err());
}
