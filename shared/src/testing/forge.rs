//! Hand-made JWTs for attack tests: any header, any claims, any key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// `header.claims` signed with HMAC-SHA256 under `key`, whatever the header says.
pub fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// `header.claims.` with the given (possibly empty) signature segment.
pub fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(claims))
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Claims like the ones login mints, valid now, for the demo user of `TestEnv`'s config.
pub fn claims(config: &crate::Config) -> Value {
    let now = now();
    json!({
        "sub": "user-1", "email": "demo@example.com", "name": "Demo User",
        "iat": now, "exp": now + 600,
        "iss": config.auth.issuer, "aud": config.auth.audience,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

pub fn hs256_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

/// Verifies `token` with the `jwt` crate, an implementation independent of the one the
/// service uses, and returns its claims.
pub fn verify_independently(token: &str, secret: &[u8]) -> Result<Value, String> {
    use jwt::VerifyWithKey;
    let key = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    let claims: std::collections::BTreeMap<String, Value> =
        token.verify_with_key(&key).map_err(|e| e.to_string())?;
    Ok(Value::Object(claims.into_iter().collect()))
}
