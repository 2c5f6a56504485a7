//! The edge checks a request head must pass before any backend sees it: a pure function of
//! the head and the limits, no Pingora types. (The per-client cap on requests in flight
//! needs the shared counts, so `ProxyState::take_client_slot` makes it.)

use http::{HeaderMap, Method, Uri, Version};

use crate::answer::ProxyAnswer;

/// The limits in force, from `[proxy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
}

/// Refuses a request target over `max_header_bytes` (414), a head over it (431), an HTTP/1.1
/// request without `host` (400; HTTP/1.0 needs none, and `forwarding::host_for_backend`
/// gives it one), or one that declares a body over `max_body_bytes` (a body without a
/// declared length is counted as it streams in).
pub fn check(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    limits: Limits,
) -> Result<(), ProxyAnswer> {
    if target_bytes(uri) > limits.max_header_bytes {
        return Err(ProxyAnswer::UriTooLong);
    }
    if head_bytes(method, uri, headers) > limits.max_header_bytes {
        return Err(ProxyAnswer::HeadersTooLarge);
    }
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    // HTTP/1.1 request message that lacks a Host header field". HTTP/2 carries `:authority`.
    if version == Version::HTTP_11 && !headers.contains_key(http::header::HOST) {
        return Err(ProxyAnswer::MissingHost);
    }
    if declared_body_bytes(headers).is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ProxyAnswer::DeclaredBodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    Ok(())
}

/// The size of a request head as it came on the wire, near enough for a cap: the request
/// line, then `name: value\r\n` per field.
pub fn head_bytes(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    let target = target_bytes(uri);
    // " " + " HTTP/1.1\r\n" around the target.
    let request_line = method.as_str().len() + target + 12;
    headers.iter().fold(request_line, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}

/// The length of the request target as sent (origin form: path and query).
fn target_bytes(uri: &Uri) -> usize {
    uri.path_and_query().map_or(1, |pq| pq.as_str().len())
}

/// The body length `content-length` declares, if it declares one that parses.
fn declared_body_bytes(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 100,
        max_body_bytes: 2048,
    };

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_head_is_measured_as_on_the_wire() {
        let uri: Uri = "/api/auth/login?x=1".parse().unwrap();
        let head = headers(&[("host", "a"), ("x-pad", "bbb")]);
        // "POST /api/auth/login?x=1 HTTP/1.1\r\n" + "host: a\r\n" + "x-pad: bbb\r\n"
        let on_the_wire = 4 + 1 + 19 + 11 + (4 + 2 + 1 + 2) + (5 + 2 + 3 + 2);
        assert_eq!(head_bytes(&Method::POST, &uri, &head), on_the_wire);
    }

    #[test]
    fn heads_and_declared_bodies_over_the_limits_are_refused() {
        let long = "a".repeat(100);
        let many_small: Vec<(&'static str, &str)> = [
            "x-a", "x-b", "x-c", "x-d", "x-e", "x-f", "x-g", "x-h", "x-i", "x-j",
        ]
        .into_iter()
        .map(|name| (name, "0123"))
        .collect();
        for (what, fields, expected) in [
            ("a small head", vec![("host", "a")], Ok(())),
            (
                "no host",
                vec![("x-pad", "b")],
                Err(ProxyAnswer::MissingHost),
            ),
            (
                "one long field",
                vec![("x-pad", long.as_str())],
                Err(ProxyAnswer::HeadersTooLarge),
            ),
            (
                "many small fields",
                many_small,
                Err(ProxyAnswer::HeadersTooLarge),
            ),
            (
                "a body at the limit",
                vec![("host", "a"), ("content-length", "2048")],
                Ok(()),
            ),
            (
                "a body over the limit",
                vec![("host", "a"), ("content-length", " 2049 ")],
                Err(ProxyAnswer::DeclaredBodyTooLarge { limit: 2048 }),
            ),
            (
                "an unparsable length (left to the framing)",
                vec![("host", "a"), ("content-length", "lots")],
                Ok(()),
            ),
            (
                "no length (counted as it streams)",
                vec![("host", "a")],
                Ok(()),
            ),
        ] {
            let uri: Uri = "/health".parse().unwrap();
            assert_eq!(
                check(
                    &Method::GET,
                    &uri,
                    Version::HTTP_11,
                    &headers(&fields),
                    LIMITS
                ),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn the_head_limit_is_checked_before_the_body_limit() {
        let uri: Uri = "/health".parse().unwrap();
        let long = "a".repeat(200);
        let fields = headers(&[("content-length", "999999"), ("x-pad", &long)]);
        assert_eq!(
            check(&Method::POST, &uri, Version::HTTP_11, &fields, LIMITS),
            Err(ProxyAnswer::HeadersTooLarge)
        );
    }

    #[test]
    fn a_long_target_is_414_and_host_is_required_from_http_1_1_only() {
        let host = headers(&[("host", "a")]);
        let none = HeaderMap::new();
        let long: Uri = format!("/{}", "a".repeat(100)).parse().unwrap();
        let just: Uri = format!("/{}", "a".repeat(99)).parse().unwrap();
        let short: Uri = "/health".parse().unwrap();
        for (what, uri, version, fields, expected) in [
            (
                "a target over the limit",
                &long,
                Version::HTTP_11,
                &host,
                Err(ProxyAnswer::UriTooLong),
            ),
            (
                "a target over the limit, before the missing host",
                &long,
                Version::HTTP_11,
                &none,
                Err(ProxyAnswer::UriTooLong),
            ),
            (
                "a target at the limit, with the rest of the head over it",
                &just,
                Version::HTTP_11,
                &host,
                Err(ProxyAnswer::HeadersTooLarge),
            ),
            (
                "HTTP/1.1 without host",
                &short,
                Version::HTTP_11,
                &none,
                Err(ProxyAnswer::MissingHost),
            ),
            (
                "HTTP/1.0 without host",
                &short,
                Version::HTTP_10,
                &none,
                Ok(()),
            ),
            (
                "HTTP/2 (`:authority`)",
                &short,
                Version::HTTP_2,
                &none,
                Ok(()),
            ),
            (
                "HTTP/1.1 with host",
                &short,
                Version::HTTP_11,
                &host,
                Ok(()),
            ),
        ] {
            assert_eq!(
                check(&Method::GET, uri, version, fields, LIMITS),
                expected,
                "{what}"
            );
        }
    }
}
