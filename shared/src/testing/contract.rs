//! The contract of `../shared/API.md` as executable cases, written once and run against each
//! backend by `contract_tests!`. Each case asserts status, the contract's headers and the
//! exact JSON.

use serde_json::{Value, json};

use super::client::{Answer, client, demo_token, get, post_json, send};
use super::forge;
use super::{TEST_MAX_LOGIN_FAILURES, TEST_RATE_LIMIT, TestEnv, TestServer};
use crate::routes::{GENERATE, HEALTH, LOGIN, METRICS, OPENAPI, VERIFY};

/// Generates one `#[tokio::test]` per contract case, each against a fresh server that
/// `$start(&TestEnv) -> TestServer` starts.
#[macro_export]
macro_rules! contract_tests {
    ($start:path) => {
        $crate::contract_tests!(@cases $start;
            health_names_the_backend, request_id_is_kept_or_generated, unknown_route_is_404,
            wrong_method_is_405_with_allow, login_succeeds, login_email_is_case_insensitive,
            login_unknown_email_and_wrong_password_answer_alike, login_validation_names_each_field,
            login_refuses_other_media_types, login_refuses_oversized_bodies,
            login_odd_input_is_a_clear_client_error, login_lengths_count_characters,
            login_throttle_locks_then_unlocks, login_success_resets_the_throttle,
            verify_is_not_starved_by_a_login_flood,
            token_verifies_in_an_independent_library, verify_accepts_the_header,
            verify_accepts_the_body_when_there_is_no_header, verify_header_wins_over_body,
            verify_without_token_is_token_missing, verify_refuses_attacks,
            generate_requires_a_token, generate_checks_in_contract_order, generate_answers_whole,
            generate_is_deterministic_and_honours_max_tokens, generate_validation_names_each_field,
            generate_streams_deltas_then_done, generate_rate_limit_counts_down_then_429,
            metrics_are_prometheus_text, openapi_document_is_served, frontend_page_is_served);
    };
    (@cases $start:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let env = $crate::testing::TestEnv::new();
                let server = $start(&env).await;
                $crate::testing::contract::$case(&server, &env).await;
            }
        )*
    };
}

fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn validation(details: &[(&str, &str)]) -> Value {
    let message = details
        .iter()
        .map(|(f, m)| format!("{f}: {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let details: Vec<Value> = details
        .iter()
        .map(|(f, m)| json!({"field": f, "message": m}))
        .collect();
    json!({"error": {"code": "VALIDATION_ERROR", "message": message, "details": details}})
}

fn assert_answer(answer: &Answer, status: u16, body: &Value) {
    assert_eq!(answer.status, status, "status of {}", answer.body);
    assert_eq!(&answer.json(), body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

const INVALID_CREDENTIALS: &str = "invalid email or password";
const TOKEN_MISSING: &str = "a bearer token is required";
const TOKEN_INVALID: &str = "the token is invalid";
const TOKEN_EXPIRED: &str = "the token has expired";

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

fn login_body(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

pub async fn login_succeeds(server: &TestServer, env: &TestEnv) {
    let answer = post_json(
        server,
        LOGIN,
        &login_body("demo@example.com", "demo-password"),
        None,
    )
    .await;
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
    let answer = post_json(
        server,
        LOGIN,
        &login_body("DeMo@Example.COM", "demo-password"),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["user"]["email"], "demo@example.com");
}

pub async fn login_unknown_email_and_wrong_password_answer_alike(server: &TestServer, _: &TestEnv) {
    let wrong = post_json(
        server,
        LOGIN,
        &login_body("demo@example.com", "wrong"),
        None,
    )
    .await;
    let unknown = post_json(
        server,
        LOGIN,
        &login_body("nobody@example.com", "demo-password"),
        None,
    )
    .await;
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
    // A megabyte is refused the same way, without being read whole.
    let megabyte = login_body("demo@example.com", &"x".repeat(1024 * 1024));
    assert_eq!(post_json(server, LOGIN, &megabyte, None).await.status, 413);
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
    let answer = post_json(
        server,
        LOGIN,
        &login_body("demo@example.com", "demo-password"),
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
}

pub async fn login_lengths_count_characters(server: &TestServer, _: &TestEnv) {
    let answer = post_json(
        server,
        LOGIN,
        &login_body("demo@example.com", &"é".repeat(1024)),
        None,
    )
    .await;
    assert_answer(
        &answer,
        401,
        &error("INVALID_CREDENTIALS", INVALID_CREDENTIALS),
    );
}

async fn fail_login(server: &TestServer, email: &str) -> Answer {
    post_json(server, LOGIN, &login_body(email, "wrong-password"), None).await
}

pub async fn login_throttle_locks_then_unlocks(server: &TestServer, _: &TestEnv) {
    // Known and unknown emails are throttled alike, so throttling reveals nothing.
    for email in ["demo@example.com", "ghost@example.com"] {
        for _ in 0..TEST_MAX_LOGIN_FAILURES {
            assert_eq!(fail_login(server, email).await.status, 401);
        }
        let locked = fail_login(server, email).await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        assert_eq!(locked.header("retry-after"), Some("1"));
        assert_eq!(locked.json()["error"]["code"], "RATE_LIMITED");
    }
    // Even the right password waits for the window.
    let right = post_json(
        server,
        LOGIN,
        &login_body("DEMO@example.com", "demo-password"),
        None,
    )
    .await;
    assert_eq!(right.status, 429);
    // The one-second window closes; poll (bounded) rather than sleep a guessed time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = post_json(
            server,
            LOGIN,
            &login_body("demo@example.com", "demo-password"),
            None,
        )
        .await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the lock outlived its window"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub async fn login_success_resets_the_throttle(server: &TestServer, _: &TestEnv) {
    for _ in 0..TEST_MAX_LOGIN_FAILURES - 1 {
        assert_eq!(fail_login(server, "demo@example.com").await.status, 401);
    }
    demo_token(server).await;
    for _ in 0..TEST_MAX_LOGIN_FAILURES {
        assert_eq!(fail_login(server, "demo@example.com").await.status, 401);
    }
    assert_eq!(fail_login(server, "demo@example.com").await.status, 429);
}

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

pub async fn token_verifies_in_an_independent_library(server: &TestServer, env: &TestEnv) {
    let token = demo_token(server).await;
    let claims = forge::verify_independently(&token, &env.secret).expect("verifies");
    assert_eq!(claims["iss"], env.config.auth.issuer.as_str());
    assert_eq!(claims["aud"], env.config.auth.audience.as_str());
    assert!(forge::verify_independently(&token, &[0u8; 32]).is_err());
}

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

/// Tokens an attacker might send, and the code each must get.
fn attacks(env: &TestEnv) -> Vec<(&'static str, String, &'static str)> {
    let secret = &env.secret;
    let config = &env.config;
    let leeway = config.auth.leeway_seconds as i64;
    let now = forge::now();
    let header = forge::hs256_header();
    let with = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = forge::claims(config);
        edit(claims.as_object_mut().unwrap());
        forge::hs256(&header, &claims, secret)
    };
    let valid = forge::hs256(&header, &forge::claims(config), secret);
    let mut tampered: Vec<&str> = valid.split('.').collect();
    let forged_payload = {
        let mut claims = forge::claims(config);
        claims["sub"] = json!("admin");
        forge::unsigned(&header, &claims, "")
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    tampered[1] = &forged_payload;
    let tampered = tampered.join(".");
    vec![
        (
            "alg none",
            forge::unsigned(
                &json!({"alg": "none", "typ": "JWT"}),
                &forge::claims(config),
                "",
            ),
            "TOKEN_INVALID",
        ),
        (
            "alg none signed",
            forge::hs256(&json!({"alg": "none"}), &forge::claims(config), secret),
            "TOKEN_INVALID",
        ),
        (
            "HS512 header",
            forge::hs256(
                &json!({"alg": "HS512", "typ": "JWT"}),
                &forge::claims(config),
                secret,
            ),
            "TOKEN_INVALID",
        ),
        (
            "RS256 header",
            forge::unsigned(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &forge::claims(config),
                "c2lnbmF0dXJl",
            ),
            "TOKEN_INVALID",
        ),
        (
            "another key",
            forge::hs256(&header, &forge::claims(config), &[9u8; 32]),
            "TOKEN_INVALID",
        ),
        ("tampered payload", tampered, "TOKEN_INVALID"),
        (
            "expired one second past the leeway",
            with(&|c| {
                c.insert("exp".into(), json!(now - leeway - 1));
            }),
            "TOKEN_EXPIRED",
        ),
        (
            "not yet valid",
            with(&|c| {
                c.insert("nbf".into(), json!(now + leeway + 60));
            }),
            "TOKEN_INVALID",
        ),
        (
            "iat in the future",
            with(&|c| {
                c.insert("iat".into(), json!(now + leeway + 60));
            }),
            "TOKEN_INVALID",
        ),
        (
            "missing issuer",
            with(&|c| {
                c.remove("iss");
            }),
            "TOKEN_INVALID",
        ),
        (
            "wrong issuer",
            with(&|c| {
                c.insert("iss".into(), json!("someone-else"));
            }),
            "TOKEN_INVALID",
        ),
        (
            "missing audience",
            with(&|c| {
                c.remove("aud");
            }),
            "TOKEN_INVALID",
        ),
        (
            "wrong audience",
            with(&|c| {
                c.insert("aud".into(), json!("another-app"));
            }),
            "TOKEN_INVALID",
        ),
        (
            "missing exp",
            with(&|c| {
                c.remove("exp");
            }),
            "TOKEN_INVALID",
        ),
        (
            "missing sub",
            with(&|c| {
                c.remove("sub");
            }),
            "TOKEN_INVALID",
        ),
        (
            "unknown crit header",
            forge::hs256(
                &json!({"alg": "HS256", "typ": "JWT", "crit": ["x-bank"], "x-bank": 1}),
                &forge::claims(config),
                secret,
            ),
            "TOKEN_INVALID",
        ),
        (
            "kid with path and SQL characters",
            forge::hs256(
                &json!({"alg": "HS256", "kid": "../../../../dev/null'; DROP TABLE users; --"}),
                &forge::claims(config),
                b"",
            ),
            "TOKEN_INVALID",
        ),
        ("not a JWT", "not.a.jwt".to_owned(), "TOKEN_INVALID"),
        ("two segments", "abc.def".to_owned(), "TOKEN_INVALID"),
        (
            "a 100 KB token",
            format!("{}.{}", "a".repeat(100 * 1024), "b"),
            "TOKEN_INVALID",
        ),
    ]
}

pub async fn verify_refuses_attacks(server: &TestServer, env: &TestEnv) {
    for (name, token, code) in attacks(env) {
        let answer = post_json(server, VERIFY, &json!({}), Some(&token)).await;
        assert_eq!(answer.status, 401, "{name}: {}", answer.body);
        assert_eq!(answer.json()["valid"], false, "{name}");
        assert_eq!(answer.json()["error"]["code"], code, "{name}");
        let generate = post_json(server, GENERATE, &json!({"prompt": "hi"}), Some(&token)).await;
        assert_eq!(generate.status, 401, "{name}: {}", generate.body);
        assert_eq!(generate.json()["error"]["code"], code, "{name}");
    }
    // The server is still there and still verifies good tokens.
    let valid = forge::hs256(
        &forge::hs256_header(),
        &forge::claims(&env.config),
        &env.secret,
    );
    assert_eq!(
        post_json(server, VERIFY, &json!({}), Some(&valid))
            .await
            .status,
        200
    );
}

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
