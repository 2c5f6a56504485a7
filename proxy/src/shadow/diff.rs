//! One comparison of two answers to the same request, as a list of the fields that differ:
//! the status, the media type, the headers the backends set (`field::HEADERS`), then the
//! body by its media type: JSON field by field (`json`), an event stream by structure
//! (`sse`), anything else as bytes. A body that hit the capture's cap on either side is not
//! compared (only its beginning is known); the `Comparison` says so. Fields the ignore list
//! names for the route are dropped, and each field appears at most once, with its first
//! values (elements of one array share a path).

use std::collections::HashSet;

use http::HeaderMap;
use http::header::CONTENT_TYPE;

use super::field::{ABSENT, FieldDiff, FieldPath, HEADERS};
use super::ignore::IgnoreList;
use super::redact;
use super::response::CapturedResponse;
use super::{json, sse};

/// The result of comparing two answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The fields that differ, at most once each, in the order found.
    pub diffs: Vec<FieldDiff>,
    pub body: BodyCheck,
}

/// Whether the bodies were compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCheck {
    Compared,
    /// One body or both hit the capture's cap: the status and headers were compared, and
    /// `truncated` differs when only one was cut.
    SkippedTruncated,
}

impl Comparison {
    pub fn is_match(&self) -> bool {
        self.diffs.is_empty()
    }

    pub fn body_compared(&self) -> bool {
        self.body == BodyCheck::Compared
    }

    /// The diff of one field, if it differs.
    pub fn diff(&self, field: &str) -> Option<&FieldDiff> {
        self.diffs.iter().find(|d| d.field.as_str() == field)
    }
}

#[cfg(test)]
impl Comparison {
    /// A comparison that found these `(field, a, b)`, as `compare` would hand it over.
    pub(crate) fn found(diffs: &[(&str, &str, &str)]) -> Self {
        Comparison {
            diffs: (diffs.iter())
                .map(|(field, a, b)| FieldDiff {
                    field: FieldPath::new(*field),
                    a: (*a).to_owned(),
                    b: (*b).to_owned(),
                })
                .collect(),
            body: BodyCheck::Compared,
        }
    }
}

/// Compares `a` and `b`, two answers to one request on `route` (a `RouteLabel`'s label).
pub fn compare(
    route: &str,
    a: &CapturedResponse,
    b: &CapturedResponse,
    ignore: &IgnoreList,
) -> Comparison {
    let mut out = Diffs::default();
    if a.status != b.status {
        out.push(FieldPath::STATUS, a.status.as_str(), b.status.as_str());
    }
    let (type_a, type_b) = (media_type(&a.headers), media_type(&b.headers));
    if type_a != type_b {
        let render = |t: &Option<String>| t.clone().unwrap_or_else(|| ABSENT.to_owned());
        out.push(FieldPath::CONTENT_TYPE, render(&type_a), render(&type_b));
    }
    for name in HEADERS {
        let (values_a, values_b) = (header_list(&a.headers, name), header_list(&b.headers, name));
        if values_a != values_b {
            let render = |v: Option<String>| v.unwrap_or_else(|| ABSENT.to_owned());
            out.push(name, render(values_a), render(values_b));
        }
    }
    let body = if a.truncated || b.truncated {
        if a.truncated != b.truncated {
            out.push(FieldPath::TRUNCATED, describe_cap(a), describe_cap(b));
        }
        BodyCheck::SkippedTruncated
    } else {
        compare_bodies(
            (type_a.as_deref(), &a.body),
            (type_b.as_deref(), &b.body),
            &mut out,
        );
        BodyCheck::Compared
    };
    let mut diffs = out.list;
    diffs.retain(|d| !ignore.ignores(route, &d.field));
    Comparison { diffs, body }
}

/// The diffs found so far, each field once, values short and redacted.
#[derive(Debug, Default)]
pub(crate) struct Diffs {
    list: Vec<FieldDiff>,
    seen: HashSet<FieldPath>,
}

impl Diffs {
    pub(crate) fn push(
        &mut self,
        field: impl Into<String>,
        a: impl AsRef<str>,
        b: impl AsRef<str>,
    ) {
        let field = FieldPath::new(field);
        if !self.seen.insert(field.clone()) {
            return;
        }
        let (a, b) = (
            redact::sample(&field, a.as_ref()),
            redact::sample(&field, b.as_ref()),
        );
        self.list.push(FieldDiff { field, a, b });
    }
}

/// `type/subtype` lowercased, then its parameters sorted, names lowercased, values unquoted
/// (and `charset`'s lowercased): `application/json; charset=utf-8` however it was spelled.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = String::from_utf8_lossy(headers.get(CONTENT_TYPE)?.as_bytes()).into_owned();
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let mut parameters: Vec<String> = parts
        .filter_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().trim_matches('"');
            let value = if name == "charset" {
                value.to_ascii_lowercase()
            } else {
                value.to_owned()
            };
            Some(format!("{name}={value}"))
        })
        .collect();
    parameters.sort();
    Some(
        std::iter::once(essence)
            .chain(parameters)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// A header's values as one list (`allow: GET` and `allow: HEAD` read as `GET, HEAD`, as
/// HTTP defines), byte for byte otherwise; `None` when absent.
fn header_list(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<_> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn describe_cap(answer: &CapturedResponse) -> String {
    if answer.truncated {
        format!("cut at the cap, {} bytes", answer.body.len())
    } else {
        format!("complete, {} bytes", answer.body.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    EventStream,
    Bytes,
}

fn body_kind(media_type: Option<&str>) -> BodyKind {
    let essence = media_type
        .and_then(|t| t.split(';').next())
        .unwrap_or_default();
    if essence == "application/json" || essence.ends_with("+json") {
        BodyKind::Json
    } else if essence == "text/event-stream" {
        BodyKind::EventStream
    } else {
        BodyKind::Bytes
    }
}

fn compare_bodies(a: (Option<&str>, &[u8]), b: (Option<&str>, &[u8]), out: &mut Diffs) {
    let ((type_a, body_a), (type_b, body_b)) = (a, b);
    if body_a == body_b {
        return;
    }
    match (body_kind(type_a), body_kind(type_b)) {
        (BodyKind::EventStream, BodyKind::EventStream) => sse::compare(body_a, body_b, out),
        (BodyKind::Json, BodyKind::Json) => {
            match (
                serde_json::from_slice(body_a),
                serde_json::from_slice(body_b),
            ) {
                (Ok(value_a), Ok(value_b)) => {
                    json::compare(&value_a, &value_b, &mut "$".to_owned(), out);
                }
                _ => compare_bytes(body_a, body_b, out),
            }
        }
        _ => compare_bytes(body_a, body_b, out),
    }
}

/// Bytes that differ: each side's length and its text from a little before the first
/// difference.
fn compare_bytes(a: &[u8], b: &[u8], out: &mut Diffs) {
    let first = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let start = first.saturating_sub(20);
    let render = |body: &[u8]| {
        let end = body.len().min(start + 160);
        let excerpt = body.get(start..end).unwrap_or_default();
        let text: String = String::from_utf8_lossy(excerpt)
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        format!("{} bytes, from byte {start}: {text}", body.len())
    };
    out.push(FieldPath::BODY, render(a), render(b));
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use serde_json::{Value, json};

    use super::*;
    use crate::shadow::jwt::tests::token;
    use crate::shadow::redact::REDACTED;

    fn answer(status: u16, content_type: &str, body: impl Into<Bytes>) -> CapturedResponse {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        CapturedResponse::new(StatusCode::from_u16(status).unwrap(), headers, body)
    }

    fn json_answer(status: u16, body: &Value) -> CapturedResponse {
        answer(status, "application/json", body.to_string())
    }

    fn with(mut answer: CapturedResponse, name: &'static str, value: &str) -> CapturedResponse {
        answer
            .headers
            .append(name, HeaderValue::from_str(value).unwrap());
        answer
    }

    /// An event stream of `(event, data)` pairs.
    fn stream(events: &[(&str, &str)]) -> CapturedResponse {
        let body: String = events
            .iter()
            .map(|(event, data)| format!("event: {event}\ndata: {data}\n\n"))
            .collect();
        answer(200, "text/event-stream", body)
    }

    /// `(field, a, b)` of a diff.
    type Found = (&'static str, &'static str, &'static str);
    /// `(event, data)` of a stream.
    type Events = Vec<(&'static str, String)>;

    fn diff_on(route: &str, a: &CapturedResponse, b: &CapturedResponse) -> Comparison {
        compare(route, a, b, &IgnoreList::default())
    }

    fn fields(comparison: &Comparison) -> Vec<&str> {
        comparison.diffs.iter().map(|d| d.field.as_str()).collect()
    }

    const DONE: &str = r#"{"id":"gen_1","model":"local","stopReason":"end_turn","usage":{"inputTokens":7,"outputTokens":3}}"#;

    fn login(email: &str, claims: &Value) -> Value {
        json!({"token": token(claims), "tokenType": "Bearer", "expiresIn": 3600,
               "user": {"id": "u1", "email": email, "name": "Ada"}})
    }

    #[test]
    fn identical_answers_have_no_diffs() {
        let claims = json!({"sub": "u1", "iat": 1, "exp": 2, "jti": "a"});
        let cases = [
            json_answer(200, &login("ada@example.com", &claims)),
            json_answer(
                404,
                &json!({"error": {"code": "NOT_FOUND", "message": "no route"}}),
            ),
            with(
                json_answer(429, &json!({"error": {"code": "RATE_LIMITED"}})),
                "retry-after",
                "3",
            ),
            stream(&[("delta", r#"{"text":"a"}"#), ("done", DONE)]),
            answer(200, "text/html", "<!doctype html><p>hi</p>"),
            answer(200, "application/json", ""),
            CapturedResponse::new(StatusCode::NO_CONTENT, HeaderMap::new(), ""),
        ];
        for case in cases {
            let comparison = diff_on("/", &case, &case.clone());
            assert!(comparison.is_match(), "{case:?}: {:?}", comparison.diffs);
            assert!(comparison.body_compared());
        }
    }

    #[test]
    fn what_differs_by_nature_is_not_compared() {
        let a = json_answer(200, &json!({"b": 1, "a": [1, 2]}));
        // Key order and white space are not significant in JSON.
        let b = answer(200, "application/json", r#"{ "a" : [1,2], "b":1 }"#);
        let mut a_headers = a.clone();
        let mut b_headers = b.clone();
        for (name, value_a, value_b) in [
            (
                "date",
                "Tue, 24 Nov 2026 06:00:00 GMT",
                "Tue, 24 Nov 2026 06:00:01 GMT",
            ),
            ("x-request-id", "r1", "r2"),
            ("x-served-by", "legacy", "new"),
            ("content-length", "20", "25"),
            ("connection", "keep-alive", "close"),
            ("server", "actix", "axum"),
        ] {
            a_headers = with(a_headers, name, value_a);
            b_headers = with(b_headers, name, value_b);
        }
        assert!(diff_on("/", &a, &b).is_match());
        assert!(diff_on("/", &a_headers, &b_headers).is_match());
    }

    #[test]
    fn a_json_field_that_differs_is_named_by_its_path() {
        let cases: Vec<(Value, Value, Vec<&str>)> = vec![
            (
                login("ada@example.com", &json!({"sub": "u1"})),
                login("bob@example.com", &json!({"sub": "u1"})),
                vec!["$.user.email"],
            ),
            (
                json!({"error": {"code": "TOKEN_EXPIRED", "message": "m"}}),
                json!({"error": {"code": "TOKEN_INVALID", "message": "m"}}),
                vec!["$.error.code"],
            ),
            // Missing on one side, either way.
            (
                json!({"error": {"code": "C", "details": []}}),
                json!({"error": {"code": "C"}}),
                vec!["$.error.details"],
            ),
            (json!({"a": 1}), json!({"a": 1, "b": 2}), vec!["$.b"]),
            // Null is not absent.
            (json!({"a": null}), json!({}), vec!["$.a"]),
            // A change of type.
            (
                json!({"expiresIn": 3600}),
                json!({"expiresIn": "3600"}),
                vec!["$.expiresIn"],
            ),
            (json!({"n": 1}), json!({"n": 1.0}), vec!["$.n"]),
            (json!({"u": {"a": 1}}), json!({"u": [1]}), vec!["$.u"]),
            (json!([1]), json!({"a": 1}), vec!["$"]),
            // Arrays: a length difference at the array, elements under `[*]`, once.
            (
                json!({"details": [{"field": "email"}]}),
                json!({"details": [{"field": "email"}, {"field": "password"}]}),
                vec!["$.details"],
            ),
            (
                json!({"details": [{"field": "email", "m": 1}, {"field": "name", "m": 1}]}),
                json!({"details": [{"field": "EMAIL", "m": 1}, {"field": "NAME", "m": 2}]}),
                vec!["$.details[*].field", "$.details[*].m"],
            ),
            (
                json!({"m": [[1, 2], [3]]}),
                json!({"m": [[1, 2], [4]]}),
                vec!["$.m[*][*]"],
            ),
            // Keys that are no identifiers.
            (
                json!({"a key": 1}),
                json!({"a key": 2}),
                vec!["$[\"a key\"]"],
            ),
            (
                json!({"usage": {"inputTokens": 7, "outputTokens": 42}}),
                json!({"usage": {"inputTokens": 7, "outputTokens": 41}}),
                vec!["$.usage.outputTokens"],
            ),
        ];
        for (a, b, expected) in cases {
            let comparison = diff_on(
                "/api/auth/login",
                &json_answer(200, &a),
                &json_answer(200, &b),
            );
            assert_eq!(fields(&comparison), expected, "{a} vs {b}");
        }
    }

    #[test]
    fn values_are_rendered_short_and_redacted() {
        let long = "x".repeat(1_000);
        let cases: Vec<(Value, Value, &str, &str, &str)> = vec![
            (
                json!({"e": "ada"}),
                json!({"e": "bob"}),
                "$.e",
                "\"ada\"",
                "\"bob\"",
            ),
            (json!({"e": 1}), json!({}), "$.e", "1", ABSENT),
            (
                json!({"a": [1]}),
                json!({"a": [1, 2]}),
                "$.a",
                "1 items: [1]",
                "2 items: [1,2]",
            ),
            (
                json!({"u": {"password": "hunter2", "n": 1}}),
                json!({"u": {"password": "hunter2", "n": 2}}),
                "$.u.n",
                "1",
                "2",
            ),
            (
                json!({"u": {"n": 1}}),
                json!({"u": {"password": "hunter2", "n": 1}}),
                "$.u.password",
                ABSENT,
                REDACTED,
            ),
            (
                json!({"u": 1}),
                json!({"u": {"secret": "s"}}),
                "$.u",
                "1",
                r#"{"secret":"[redacted]"}"#,
            ),
        ];
        for (a, b, field, value_a, value_b) in cases {
            let comparison = diff_on("/", &json_answer(200, &a), &json_answer(200, &b));
            let diff = comparison.diff(field).unwrap();
            assert_eq!(
                (diff.a.as_str(), diff.b.as_str()),
                (value_a, value_b),
                "{field}"
            );
        }
        let comparison = diff_on(
            "/",
            &json_answer(200, &json!({"t": long})),
            &json_answer(200, &json!({"t": "short"})),
        );
        let diff = comparison.diff("$.t").unwrap();
        assert_eq!(diff.a.chars().count(), redact::MAX_VALUE_CHARS);
    }

    #[test]
    fn status_media_type_and_headers() {
        let base = || json_answer(200, &json!({}));
        let json_with = |content_type: &str| answer(200, content_type, "{}");
        let cases: Vec<(CapturedResponse, CapturedResponse, Vec<Found>)> = vec![
            (
                base(),
                json_answer(201, &json!({})),
                vec![("status", "200", "201")],
            ),
            (
                json_with("application/json"),
                json_with("Application/JSON"),
                vec![],
            ),
            (
                json_with("application/json; charset=UTF-8"),
                json_with("application/json;charset=\"utf-8\""),
                vec![],
            ),
            (
                json_with("application/json; b=2; a=1"),
                json_with("application/json;a=1;b=2"),
                vec![],
            ),
            (
                json_with("application/json"),
                json_with("application/json; charset=utf-8"),
                vec![(
                    "content-type",
                    "application/json",
                    "application/json; charset=utf-8",
                )],
            ),
            (
                json_with("application/json"),
                json_with("text/plain"),
                vec![("content-type", "application/json", "text/plain")],
            ),
            (
                CapturedResponse::new(StatusCode::OK, HeaderMap::new(), "{}"),
                json_with("application/json"),
                vec![("content-type", ABSENT, "application/json")],
            ),
            (
                with(base(), "ratelimit-remaining", "9"),
                with(base(), "ratelimit-remaining", "8"),
                vec![("ratelimit-remaining", "9", "8")],
            ),
            (
                with(base(), "retry-after", "3"),
                base(),
                vec![("retry-after", "3", ABSENT)],
            ),
            // One field or two, the same list.
            (
                with(base(), "allow", "GET, HEAD"),
                with(with(base(), "allow", "GET"), "allow", "HEAD"),
                vec![],
            ),
            (
                with(base(), "allow", "GET, HEAD"),
                with(base(), "allow", "GET,HEAD"),
                vec![("allow", "GET, HEAD", "GET,HEAD")],
            ),
            (
                with(base(), "www-authenticate", "Bearer"),
                with(base(), "www-authenticate", "Bearer"),
                vec![],
            ),
        ];
        for (a, b, expected) in cases {
            let comparison = diff_on("/api/ai/generate", &a, &b);
            let found: Vec<(&str, &str, &str)> = comparison
                .diffs
                .iter()
                .map(|d| (d.field.as_str(), d.a.as_str(), d.b.as_str()))
                .collect();
            assert_eq!(found, expected, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn the_ignore_list_drops_fields_on_its_routes() {
        let health = |backend: &str| {
            json_answer(
                200,
                &json!({"status": "ok", "backend": backend, "version": "0.1.0"}),
            )
        };
        let ignore = IgnoreList::parse(["/health $.backend", "* ratelimit-reset"]).unwrap();
        let cases = [
            ("/health", health("legacy"), health("new"), vec![]),
            // Only on its route.
            ("/", health("legacy"), health("new"), vec!["$.backend"]),
            (
                "/health",
                json_answer(
                    200,
                    &json!({"status": "ok", "backend": "legacy", "version": "1"}),
                ),
                health("new"),
                vec!["$.version"],
            ),
            (
                "/api/ai/generate",
                with(health("x"), "ratelimit-reset", "10"),
                with(health("x"), "ratelimit-reset", "11"),
                vec![],
            ),
        ];
        for (route, a, b, expected) in cases {
            assert_eq!(
                fields(&compare(route, &a, &b, &ignore)),
                expected,
                "{route}"
            );
        }
    }

    #[test]
    fn jwts_are_compared_by_their_lasting_claims() {
        let claims = |sub: &str, iat: u64, jti: &str| {
            json!({"sub": sub, "email": "ada@example.com", "iss": "canary", "aud": ["web"],
                   "iat": iat, "nbf": iat, "exp": iat + 3600, "jti": jti})
        };
        let cases: Vec<(Value, Value, Vec<&str>)> = vec![
            (claims("u1", 100, "a"), claims("u1", 160, "b"), vec![]),
            (
                claims("u1", 100, "a"),
                claims("u2", 100, "a"),
                vec!["$.token#sub"],
            ),
            (
                claims("u1", 100, "a"),
                json!({"sub": "u1", "email": "ada@example.com", "iss": "canary", "aud": ["web", "api"]}),
                vec!["$.token#aud"],
            ),
            (
                claims("u1", 100, "a"),
                json!({"sub": "u1", "email": "ada@example.com", "iss": "canary"}),
                vec!["$.token#aud"],
            ),
        ];
        for (a, b, expected) in cases {
            let comparison = diff_on(
                "/api/auth/login",
                &json_answer(200, &login("ada@example.com", &a)),
                &json_answer(200, &login("ada@example.com", &b)),
            );
            assert_eq!(fields(&comparison), expected, "{a} vs {b}");
            for diff in &comparison.diffs {
                // Under the key `token`: its claims are redacted too (an absence is shown).
                for value in [&diff.a, &diff.b] {
                    assert!(value == REDACTED || value == ABSENT, "{value}");
                }
            }
        }
        // A JWT against a string that is none: the string differs, and the token is hidden.
        let comparison = diff_on(
            "/",
            &json_answer(200, &json!({"t": token(&claims("u1", 1, "a"))})),
            &json_answer(200, &json!({"t": "opaque"})),
        );
        let diff = comparison.diff("$.t").unwrap();
        assert_eq!(
            (diff.a.as_str(), diff.b.as_str()),
            ("\"[redacted]\"", "\"opaque\"")
        );
    }

    #[test]
    fn event_streams_are_compared_by_structure() {
        let delta = |text: &str| ("delta", format!(r#"{{"text":"{text}"}}"#));
        let events = |list: Vec<(&'static str, String)>| list;
        let done = || ("done", DONE.to_owned());
        let cases: Vec<(Events, Events, Vec<&str>)> = vec![
            // Other text, cut otherwise: the same structure.
            (
                events(vec![delta("Hello"), delta(" world"), done()]),
                events(vec![delta("Hi"), done()]),
                vec![],
            ),
            // Cut short: no `done`.
            (
                events(vec![delta("a"), done()]),
                events(vec![delta("a")]),
                vec!["sse.events", "sse.final"],
            ),
            // Ended on an error.
            (
                events(vec![delta("a"), done()]),
                events(vec![delta("a"), ("error", r#"{"error":{"code":"UPSTREAM_ERROR"}}"#.to_owned())]),
                vec!["sse.events", "sse.final"],
            ),
            // Both without `done` the same way: the same.
            (events(vec![delta("a")]), events(vec![delta("b"), delta("c")]), vec![]),
            // Another shape of `done`'s data.
            (
                events(vec![delta("a"), done()]),
                events(vec![
                    delta("a"),
                    ("done", r#"{"id":"gen_2","model":"m","stopReason":"end_turn","usage":{"inputTokens":"7","outputTokens":3}}"#.to_owned()),
                ]),
                vec!["sse.data[done].usage.inputTokens"],
            ),
            (
                events(vec![delta("a"), done()]),
                events(vec![delta("a"), ("done", r#"{"id":"gen_2"}"#.to_owned())]),
                vec![
                    "sse.data[done].model",
                    "sse.data[done].stopReason",
                    "sse.data[done].usage",
                    "sse.data[done].usage.inputTokens",
                    "sse.data[done].usage.outputTokens",
                ],
            ),
            (
                events(vec![delta("a"), done()]),
                events(vec![("delta", "plain text".to_owned()), done()]),
                vec!["sse.data[delta]", "sse.data[delta].text"],
            ),
            // An event type on one side only is in the sequence, not in the shapes.
            (
                events(vec![("ping", "{}".to_owned()), delta("a"), done()]),
                events(vec![delta("a"), done()]),
                vec!["sse.events"],
            ),
        ];
        for (a, b, expected) in cases {
            fn to_refs<'a>(list: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
                list.iter().map(|(e, d)| (*e, d.as_str())).collect()
            }
            let comparison = diff_on(
                "/api/ai/generate",
                &stream(&to_refs(&a)),
                &stream(&to_refs(&b)),
            );
            assert_eq!(fields(&comparison), expected, "{a:?} vs {b:?}");
        }
        let comparison = diff_on(
            "/api/ai/generate",
            &stream(&[("delta", r#"{"text":"a"}"#), ("done", DONE)]),
            &stream(&[("delta", r#"{"text":"a"}"#)]),
        );
        let found: Vec<(&str, &str)> = comparison
            .diffs
            .iter()
            .map(|d| (d.a.as_str(), d.b.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("delta, done", "delta"),
                ("done", "(absent) (last event: delta)")
            ]
        );
    }

    #[test]
    fn truncated_bodies_are_compared_by_head_only() {
        let cut = |mut answer: CapturedResponse| {
            answer.truncated = true;
            answer
        };
        let big = |text: &str| json_answer(200, &json!({"content": text}));
        let cases = [
            // Both cut: the bodies are not compared, however they differ.
            (cut(big("aaaa")), cut(big("bbbb")), vec![]),
            (
                cut(big("aaaa")),
                cut(json_answer(500, &json!({}))),
                vec!["status"],
            ),
            (
                with(cut(big("a")), "ratelimit-remaining", "3"),
                with(cut(big("b")), "ratelimit-remaining", "2"),
                vec!["ratelimit-remaining"],
            ),
            // One cut, one complete: they cannot be the same size.
            (cut(big("aaaa")), big("aaaa"), vec!["truncated"]),
            (
                stream(&[("delta", r#"{"text":"a"}"#), ("done", DONE)]),
                cut(stream(&[("delta", r#"{"text":"a"}"#)])),
                vec!["truncated"],
            ),
        ];
        for (a, b, expected) in cases {
            let comparison = diff_on("/api/ai/generate", &a, &b);
            assert_eq!(fields(&comparison), expected, "{a:?} vs {b:?}");
            assert_eq!(comparison.body, BodyCheck::SkippedTruncated);
            assert!(!comparison.body_compared());
        }
        let comparison = diff_on("/", &cut(big("a")), &big("a"));
        let diff = comparison.diff("truncated").unwrap();
        assert_eq!(
            (diff.a.as_str(), diff.b.as_str()),
            ("cut at the cap, 15 bytes", "complete, 15 bytes")
        );
    }

    #[test]
    fn other_bodies_are_compared_as_bytes() {
        let zeros = |n: usize| "\\u{0}".repeat(n);
        let cases = [
            (
                answer(200, "text/html", "<p>legacy</p>"),
                answer(200, "text/html", "<p>new</p>"),
                "13 bytes, from byte 0: <p>legacy</p>".to_owned(),
                "10 bytes, from byte 0: <p>new</p>".to_owned(),
            ),
            (
                answer(200, "text/plain", "line one\nline two"),
                answer(200, "text/plain", "line one\nline 2"),
                "17 bytes, from byte 0: line one\\nline two".to_owned(),
                "15 bytes, from byte 0: line one\\nline 2".to_owned(),
            ),
            // Declared JSON that is none.
            (
                answer(200, "application/json", r#"{"a":1}"#),
                answer(200, "application/json", r#"{"a":"#),
                r#"7 bytes, from byte 0: {"a":1}"#.to_owned(),
                r#"5 bytes, from byte 0: {"a":"#.to_owned(),
            ),
            // From a little before the first difference.
            (
                answer(200, "application/octet-stream", vec![0_u8; 100]),
                answer(
                    200,
                    "application/octet-stream",
                    [vec![0_u8; 50], vec![1]].concat(),
                ),
                // 70 bytes of excerpt, escaped past the limit and cut.
                redact::short(&format!("100 bytes, from byte 30: {}", zeros(70))),
                format!("51 bytes, from byte 30: {}\\u{{1}}", zeros(20)),
            ),
        ];
        for (a, b, value_a, value_b) in cases {
            let comparison = diff_on("/", &a, &b);
            assert_eq!(fields(&comparison), ["body"]);
            let diff = comparison.diff("body").unwrap();
            assert_eq!((&diff.a, &diff.b), (&value_a, &value_b));
        }
    }
}
