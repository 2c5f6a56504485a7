//! The request side of the contract's pipeline, framework-free: content type, body size,
//! JSON parsing, bearer tokens and request ids, checked in the contract's order.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::HeaderName;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value};

pub use common::request_id::request_id;

use crate::error::{ApiError, TokenErrorKind};
use crate::shadow::{self, ShadowKey};

/// What a handler extracts from its framework's request and hands to `Service`.
pub struct Incoming<'a, B> {
    pub authorization: Option<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
    /// Whether this is a verified shadow of a request the other backend answered: `new`
    /// checks its headers with `crate::shadow::is_shadow`.
    pub shadow: bool,
    pub body: B,
}

impl<'a, B> Incoming<'a, B> {
    /// The headers `Service` reads, looked up with `header` in the framework's header map, and
    /// the body stream; `key` tells a shadow from the proxy.
    pub fn new(key: &ShadowKey, header: impl Fn(&HeaderName) -> Option<&'a [u8]>, body: B) -> Self {
        Self {
            authorization: header(&AUTHORIZATION),
            content_type: header(&CONTENT_TYPE),
            shadow: shadow::is_shadow(key, header),
            body,
        }
    }
}

/// The token of an `authorization: Bearer …` header (scheme matched case-insensitively).
/// `Ok(None)` when there is no header; an error when there is one but it holds no bearer token.
pub fn bearer_token(authorization: Option<&[u8]>) -> Result<Option<&str>, ApiError> {
    let Some(raw) = authorization else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::token(
            TokenErrorKind::Invalid,
            "authorization header must be 'Bearer <token>'",
        )
    };
    let value = std::str::from_utf8(raw).map_err(|_| malformed())?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

fn is_json(content_type: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(content_type) else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// Reads a JSON body in the contract's order: content type (415), size (413), syntax (400).
/// An empty body counts as `{}`.
pub async fn read_json_object<B, E>(
    content_type: Option<&[u8]>,
    body: B,
    limit: usize,
) -> Result<Map<String, Value>, ApiError>
where
    B: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if content_type.is_some_and(|ct| !is_json(ct)) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = match read_limited(body, limit).await {
        Ok(bytes) => bytes,
        // Without a content type any body is the wrong media type, whatever its size.
        Err(BodyError::TooLarge) if content_type.is_none() => {
            return Err(ApiError::UnsupportedMediaType);
        }
        Err(BodyError::TooLarge) => return Err(ApiError::PayloadTooLarge { limit }),
        Err(BodyError::Read(reason)) => {
            tracing::debug!(%reason, "request body could not be read");
            return Err(ApiError::validation("body", "could not be read"));
        }
    };
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    if content_type.is_none() {
        return Err(ApiError::UnsupportedMediaType);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::validation("body", "must be a JSON object")),
        Err(_) => Err(ApiError::validation("body", "must be valid JSON")),
    }
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Collects a body, stopping as soon as it passes `limit` so an oversized one is never buffered.
async fn read_limited<B, E>(mut body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if collected.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        )
    }

    async fn code(ct: Option<&str>, parts: &[&'static str], limit: usize) -> &'static str {
        match read_json_object(ct.map(str::as_bytes), body(parts), limit).await {
            Ok(_) => "OK",
            Err(e) => e.code(),
        }
    }

    #[tokio::test]
    async fn body_checks_follow_the_contract_order() {
        let cases: &[(Option<&str>, &[&'static str], &str)] = &[
            (Some("application/json"), &[r#"{"a":1}"#], "OK"),
            (Some("Application/JSON; charset=utf-8"), &["{}"], "OK"),
            (None, &[], "OK"),
            (Some("text/plain"), &[], "UNSUPPORTED_MEDIA_TYPE"),
            (Some("text/plain"), &["x"; 100], "UNSUPPORTED_MEDIA_TYPE"),
            (None, &["{}"], "UNSUPPORTED_MEDIA_TYPE"),
            (None, &["x"; 100], "UNSUPPORTED_MEDIA_TYPE"),
            (Some("application/json"), &["x"; 100], "PAYLOAD_TOO_LARGE"),
            (Some("application/json"), &["{"], "VALIDATION_ERROR"),
            (Some("application/json"), &["[1]"], "VALIDATION_ERROR"),
        ];
        for (ct, parts, expected) in cases {
            assert_eq!(code(*ct, parts, 50).await, *expected, "{ct:?} {parts:?}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_refused() {
        assert_eq!(bearer_token(None).unwrap(), None);
        assert_eq!(bearer_token(Some(b"Bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer_token(Some(b"bEaReR  abc ")).unwrap(), Some("abc"));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"Bearer \xff",
        ] {
            assert_eq!(bearer_token(Some(bad)).unwrap_err().code(), "TOKEN_INVALID");
        }
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 32);
        assert_ne!(request_id(Some(b"has space")), "has space");
        assert_eq!(request_id(Some(&[b'a'; 200])).len(), 32);
    }
}
