//! JWTs in answers (login's `token`) are new on every call: `iat`, `exp` and `jti` change,
//! so the signature does too. Compared as strings they would always differ; compared by
//! their lasting claims they differ only when something real does (another `sub`, `iss`,
//! `aud`). The header and the signature are not compared: both backends sign with one
//! secret, and that a token from one verifies on the other is the contract suite's job.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Claims that differ on every token by nature, left out of the comparison.
pub const VOLATILE_CLAIMS: [&str; 4] = ["iat", "exp", "nbf", "jti"];

/// The claims of `text` without the volatile ones, when `text` is a compact JWT: three
/// base64url segments, the first decoding to a JSON object with `alg`, the second to a JSON
/// object. `None` for anything else (which is then compared as a plain string).
pub fn lasting_claims(text: &str) -> Option<Map<String, Value>> {
    let mut segments = text.split('.');
    let (Some(header), Some(payload), Some(_signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let header = decode_object(header)?;
    if !header.contains_key("alg") {
        return None;
    }
    let mut claims = decode_object(payload)?;
    for claim in VOLATILE_CLAIMS {
        claims.remove(claim);
    }
    Some(claims)
}

fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// A compact JWT with these claims (the signature is not checked, so any bytes do).
    pub(crate) fn token(claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signature = URL_SAFE_NO_PAD.encode(claims.to_string().len().to_string());
        format!("{header}.{payload}.{signature}")
    }

    #[test]
    fn what_counts_as_a_jwt() {
        let encode = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let claims = json!({"sub": "u1", "iat": 1, "exp": 2, "nbf": 1, "jti": "x", "iss": "i"});
        let cases: Vec<(String, Option<Value>)> = vec![
            (token(&claims), Some(json!({"sub": "u1", "iss": "i"}))),
            (
                format!("{}.{}.", encode(r#"{"alg":"none"}"#), encode("{}")),
                Some(json!({})),
            ),
            // No `alg` in the header.
            (
                format!("{}.{}.sig", encode(r#"{"typ":"JWT"}"#), encode("{}")),
                None,
            ),
            // The payload is not an object.
            (
                format!("{}.{}.sig", encode(r#"{"alg":"HS256"}"#), encode("[1]")),
                None,
            ),
            // Not base64url (padding, `+`).
            (
                format!("{}=.{}.sig", encode(r#"{"alg":"HS256"}"#), encode("{}")),
                None,
            ),
            ("a.b.c".to_owned(), None),
            ("a.b".to_owned(), None),
            (format!("{}.x", token(&claims)), None),
            ("ada@example.com".to_owned(), None),
        ];
        for (text, expected) in cases {
            assert_eq!(lasting_claims(&text).map(Value::Object), expected, "{text}");
        }
    }
}
