//! Values leave the diff short and without secrets: a diff's values end up in samples that
//! `GET /admin/shadow` shows and operators paste into tickets, and the answers compared hold
//! tokens (login) and whatever a backend might leak by mistake. So every value is cut to
//! `MAX_VALUE_CHARS`, anything under a key named like a credential becomes `[redacted]`,
//! and so does any string that looks like a JWT, wherever it appears.

use std::borrow::Cow;

use serde_json::Value;

use super::field::{ABSENT, FieldPath};

/// The longest rendered value, in characters (the last one is `…` when cut).
pub const MAX_VALUE_CHARS: usize = 200;

pub const REDACTED: &str = "[redacted]";

/// Words whose key holds a credential: a key is sensitive when one of its words, or the
/// whole key without separators, ends with one (`accessToken`, `api_key`, `newPassword`,
/// `clientSecret`), but not `outputTokens`.
const SENSITIVE: [&str; 8] = [
    "token",
    "password",
    "passwd",
    "secret",
    "authorization",
    "cookie",
    "credential",
    "apikey",
];

/// Whether a JSON key (or a header name) is named like a credential.
pub fn is_sensitive_key(key: &str) -> bool {
    let mut words: Vec<String> = Vec::new();
    let mut joined = String::with_capacity(key.len());
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            previous_lower = false;
            words.push(String::new());
            continue;
        }
        let lower = c.is_lowercase();
        if (c.is_uppercase() && previous_lower) || words.is_empty() {
            words.push(String::new());
        }
        previous_lower = lower;
        let c = c.to_ascii_lowercase();
        joined.push(c);
        if let Some(word) = words.last_mut() {
            word.push(c);
        }
    }
    SENSITIVE
        .iter()
        .any(|s| joined.ends_with(s) || words.iter().any(|w| w.ends_with(s)))
}

/// Whether any name along a field's path is sensitive (`$.auth.password`, `$.token#sub`:
/// a token's claims are under the key `token`).
pub fn is_sensitive_path(field: &FieldPath) -> bool {
    field
        .as_str()
        .split(['.', '[', ']', '#', '"'])
        .any(is_sensitive_key)
}

/// A cheap test for what looks like a compact JWT: three dot-separated base64url segments,
/// the first beginning with `eyJ` (`{"` encoded). Looser than `jwt::decode` on purpose: a
/// redaction should err towards hiding.
pub fn looks_like_jwt(text: &str) -> bool {
    let mut segments = text.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    header.len() > 3
        && header.starts_with("eyJ")
        && !payload.is_empty()
        && base64url(header)
        && base64url(payload)
        && base64url(signature)
}

/// `text` with every JWT-looking word replaced by `[redacted]`.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::new();
    let mut copied = 0;
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(is_token_char) {
        let word_len = rest[start..]
            .find(|c: char| !is_token_char(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        // A sentence may end right after a token.
        let candidate = word.trim_end_matches('.');
        if looks_like_jwt(candidate) {
            let at = offset + start;
            out.push_str(&text[copied..at]);
            out.push_str(REDACTED);
            copied = at + candidate.len();
        }
        offset += start + word_len;
        rest = &rest[start + word_len..];
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `text` cut to `MAX_VALUE_CHARS` characters, the last one `…` when cut.
pub fn short(text: &str) -> String {
    match text.char_indices().nth(MAX_VALUE_CHARS - 1) {
        Some((cut, _)) if text[cut..].chars().nth(1).is_some() => format!("{}…", &text[..cut]),
        _ => text.to_owned(),
    }
}

/// A value as a sample keeps it: `[redacted]` if its field is under a sensitive name (but
/// `(absent)` stays), else short with JWTs redacted. The diff's values already are; this
/// makes sure.
pub fn sample(field: &FieldPath, value: &str) -> String {
    if value == ABSENT {
        value.to_owned()
    } else if is_sensitive_path(field) {
        REDACTED.to_owned()
    } else {
        short(&redact_text(value))
    }
}

/// A JSON value, compact, short, with sensitive keys' values and JWT-looking strings
/// redacted. Stops writing once past the limit, so a large array costs little.
pub fn render_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value);
    short(&out)
}

fn write_json(out: &mut String, value: &Value) {
    // Room for a few characters more than fit, so that `short` knows to cut.
    if out.len() > MAX_VALUE_CHARS * 4 {
        return;
    }
    match value {
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
                if out.len() > MAX_VALUE_CHARS * 4 {
                    break;
                }
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                if is_sensitive_key(key) {
                    write_string(out, REDACTED);
                } else {
                    write_json(out, item);
                }
                if out.len() > MAX_VALUE_CHARS * 4 {
                    break;
                }
            }
            out.push('}');
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
    }
}

fn write_string(out: &mut String, text: &str) {
    let text = if looks_like_jwt(text) {
        REDACTED
    } else {
        // Only what can be shown: a long string costs no more than its first characters.
        match text.char_indices().nth(MAX_VALUE_CHARS) {
            Some((cut, _)) => &text[..cut],
            None => text,
        }
    };
    // Serialising a `str` cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl";

    #[test]
    fn keys_named_like_credentials() {
        let cases = [
            ("token", true),
            ("accessToken", true),
            ("access_token", true),
            ("refresh-token", true),
            ("JWTToken", true),
            ("tokenType", true),
            ("password", true),
            ("newPassword", true),
            ("passwordHash", true),
            ("clientSecret", true),
            ("SECRET", true),
            ("authorization", true),
            ("set-cookie", true),
            ("apiKey", true),
            ("api_key", true),
            ("outputTokens", false),
            ("inputTokens", false),
            ("email", false),
            ("user", false),
            ("www-authenticate", false),
            ("expiresIn", false),
            ("", false),
        ];
        for (key, sensitive) in cases {
            assert_eq!(is_sensitive_key(key), sensitive, "{key}");
        }
    }

    #[test]
    fn paths_under_a_credential() {
        let cases = [
            ("$.token", true),
            ("$.token#sub", true),
            ("$.auth.password", true),
            ("$[\"api key\"]", true),
            ("$.items[*].secret", true),
            ("$.user.email", false),
            ("$.usage.outputTokens", false),
            ("ratelimit-remaining", false),
            ("sse.data[done].usage.inputTokens", false),
        ];
        for (path, sensitive) in cases {
            assert_eq!(
                is_sensitive_path(&FieldPath::new(path)),
                sensitive,
                "{path}"
            );
        }
    }

    #[test]
    fn what_looks_like_a_jwt() {
        let cases = [
            (JWT, true),
            ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.", true),
            ("eyJ.eyJ.x", false),
            ("abc.def.ghi", false),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9", false),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.a.b", false),
            ("eyJhbGciOiJIUzI1NiJ9..sig", false),
            ("eyJhbGci OiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.sig", false),
            ("ada@example.com", false),
        ];
        for (text, jwt) in cases {
            assert_eq!(looks_like_jwt(text), jwt, "{text}");
        }
    }

    #[test]
    fn jwts_in_text_are_redacted() {
        let bearer = format!("Bearer {JWT}");
        let sentence = format!("token {JWT}. Then {JWT}, end");
        let cases = [
            ("no token here", "no token here".to_owned()),
            (JWT, REDACTED.to_owned()),
            (bearer.as_str(), format!("Bearer {REDACTED}")),
            (
                sentence.as_str(),
                format!("token {REDACTED}. Then {REDACTED}, end"),
            ),
            ("version 0.1.0.", "version 0.1.0.".to_owned()),
        ];
        for (text, expected) in cases {
            assert_eq!(redact_text(text), expected);
        }
    }

    #[test]
    fn values_are_short() {
        assert_eq!(short("abc"), "abc");
        let exact = "x".repeat(MAX_VALUE_CHARS);
        assert_eq!(short(&exact), exact);
        let long = "é".repeat(MAX_VALUE_CHARS + 1);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), MAX_VALUE_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn json_is_rendered_redacted_and_short() {
        let cases = [
            (json!("ada"), "\"ada\"".to_owned()),
            (json!(42), "42".to_owned()),
            (json!(null), "null".to_owned()),
            (
                json!({"token": JWT, "user": {"password": "hunter2", "name": "Ada"}}),
                r#"{"token":"[redacted]","user":{"name":"Ada","password":"[redacted]"}}"#
                    .to_owned(),
            ),
            (json!([JWT, "x"]), r#"["[redacted]","x"]"#.to_owned()),
        ];
        for (value, expected) in cases {
            assert_eq!(render_json(&value), expected);
        }
        let long = json!((0..10_000).collect::<Vec<_>>());
        let rendered = render_json(&long);
        assert_eq!(rendered.chars().count(), MAX_VALUE_CHARS);
        assert!(rendered.starts_with("[0,1,2,"));
    }

    #[test]
    fn samples_are_redacted_by_path_and_content() {
        let quoted_jwt = format!("\"{JWT}\"");
        let cases = [
            ("$.password", "\"hunter2\"", REDACTED.to_owned()),
            ("$.token#sub", "\"u1\"", REDACTED.to_owned()),
            ("$.note", quoted_jwt.as_str(), format!("\"{REDACTED}\"")),
            ("$.user.name", "\"Ada\"", "\"Ada\"".to_owned()),
        ];
        for (field, value, expected) in cases {
            assert_eq!(sample(&FieldPath::new(field), value), expected, "{field}");
        }
    }
}
