//! Forged and malformed tokens: each is refused by verify and by generate with its code.

use serde_json::{Value, json};

use crate::routes::{GENERATE, VERIFY};
use crate::testing::client::post_json;
use crate::testing::forge;
use crate::testing::{TestEnv, TestServer};

/// Tokens an attacker might send, and the code each must get.
fn attacks(env: &TestEnv) -> Vec<(&'static str, String, &'static str)> {
    let secret = &env.secret;
    let config = &env.config;
    let leeway = config.auth.leeway_seconds.get() as i64;
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
