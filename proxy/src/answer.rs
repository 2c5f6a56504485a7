//! The answers the proxy makes itself, as one enum (in the spirit of sozu's `DefaultAnswer`):
//! each variant knows its status, contract code, message, extra headers and metric label,
//! so adding one is exhaustive, and its body is `common`'s `ErrorEnvelope`, the shape the
//! backends use. One writer puts them on the wire for the proxy listener (edge refusals and
//! `fail_to_proxy`); the admin listener turns the same answer into an `http::Response`.
//!
//! Also here: what a Pingora error means, both as an answer and as the `kind` label of
//! `proxy_upstream_errors_total`, each by an explicit mapping.

use std::borrow::Cow;

use bytes::Bytes;
use common::ErrorEnvelope;
use http::{HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use crate::state::Generation;
use crate::{cors, security_headers};

/// The names of Pingora's error types for a request body that breaks chunked framing
/// (`INVALID_CHUNK` and `INVALID_TRAILER_END` of `pingora-core`'s private `v1::body`).
const INVALID_CHUNK: &str = "InvalidChunk";
const INVALID_TRAILER_END: &str = "InvalidTrailerEnd";

/// An answer the proxy gives without a backend's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyAnswer {
    /// The request head is over `proxy.max_header_bytes`.
    HeadersTooLarge,
    /// The request target alone is over `proxy.max_header_bytes`.
    UriTooLong,
    /// An HTTP/1.1 request without `host` (RFC 9112 §3.2: the server must answer 400).
    MissingHost,
    /// The request broke HTTP/1 framing after its head (a bad chunk, say); Pingora's own
    /// answer to a head it cannot parse is not ours to write (see ARCHITECTURE.md).
    MalformedRequest,
    /// One of `proxy.internal_paths`, which the public listener never routes; the same
    /// answer as a backend's unknown route.
    InternalPath,
    /// `content-length` declares more than `proxy.max_body_bytes`.
    DeclaredBodyTooLarge { limit: usize },
    /// The body crossed `proxy.max_body_bytes` while streaming in (no length was declared).
    BodyTooLarge,
    /// The client address already holds `proxy.max_requests_per_client` requests.
    TooManyRequestsFromClient,
    /// Both backends are marked down.
    NoBackend,
    /// Connecting failed on both sides (no health check has noticed yet).
    BackendUnreachable,
    /// The backend did not answer within the read or total timeout.
    BackendTimeout,
    /// The backend broke the exchange.
    BackendError,
    /// Pingora refused the request with this status before it could be proxied.
    NotProxied(StatusCode),
    /// The admin listener has no such path.
    NotFound,
    /// The admin listener answers only `GET`.
    MethodNotAllowed,
    /// An admin request without the admin token, or with another (see `admin_auth`).
    Unauthorized,
}

impl ProxyAnswer {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::MissingHost | Self::MalformedRequest => StatusCode::BAD_REQUEST,
            Self::InternalPath => StatusCode::NOT_FOUND,
            Self::DeclaredBodyTooLarge { .. } | Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequestsFromClient => StatusCode::TOO_MANY_REQUESTS,
            Self::NoBackend | Self::BackendUnreachable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BackendError => StatusCode::BAD_GATEWAY,
            Self::NotProxied(status) => *status,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    /// The contract's machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Self::UriTooLong => "URI_TOO_LONG",
            Self::MissingHost | Self::MalformedRequest => "BAD_REQUEST",
            Self::InternalPath => "NOT_FOUND",
            Self::DeclaredBodyTooLarge { .. } | Self::BodyTooLarge => "PAYLOAD_TOO_LARGE",
            Self::TooManyRequestsFromClient => "RATE_LIMITED",
            Self::NoBackend | Self::BackendUnreachable => "BACKEND_UNAVAILABLE",
            Self::BackendTimeout => "BACKEND_TIMEOUT",
            Self::BackendError => "BACKEND_ERROR",
            Self::NotProxied(_) => "BAD_REQUEST",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Unauthorized => "UNAUTHORIZED",
        }
    }

    pub fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::HeadersTooLarge => "request headers are too large",
            Self::UriTooLong => "request target is too long",
            Self::MissingHost => "an HTTP/1.1 request needs a host header",
            Self::MalformedRequest => "malformed request",
            // Word for word the backends' 404, so an internal path looks like no route at all.
            Self::InternalPath => "no such route",
            Self::DeclaredBodyTooLarge { limit } => {
                return Cow::Owned(format!("request body is larger than {limit} bytes"));
            }
            Self::BodyTooLarge => "request body is too large",
            Self::TooManyRequestsFromClient => "too many concurrent requests from this address",
            Self::NoBackend | Self::BackendUnreachable => "no backend is available",
            Self::BackendTimeout => "the backend did not answer in time",
            Self::BackendError => "the backend failed to answer",
            Self::NotProxied(_) => "the request could not be proxied",
            Self::NotFound => "no such route",
            Self::MethodNotAllowed => "method not allowed",
            Self::Unauthorized => "the admin listener needs authorization: Bearer <admin token>",
        })
    }

    /// A header this answer carries besides the ones every answer has.
    pub fn extra_header(&self) -> Option<(&'static str, HeaderValue)> {
        match self {
            // Both clear up on their own within about a second: a slot frees, a check passes.
            Self::TooManyRequestsFromClient | Self::NoBackend => {
                Some(("retry-after", HeaderValue::from_static("1")))
            }
            // RFC 9110 §11.6.1: a 401 says which scheme would do.
            Self::Unauthorized => Some(("www-authenticate", HeaderValue::from_static("Bearer"))),
            Self::HeadersTooLarge
            | Self::UriTooLong
            | Self::MissingHost
            | Self::MalformedRequest
            | Self::InternalPath
            | Self::DeclaredBodyTooLarge { .. }
            | Self::BodyTooLarge
            | Self::BackendUnreachable
            | Self::BackendTimeout
            | Self::BackendError
            | Self::NotProxied(_)
            | Self::NotFound
            | Self::MethodNotAllowed => None,
        }
    }

    /// The `reason` label of `proxy_edge_refusals_total`, for the answers that refuse a
    /// request before any backend; `None` for the others (failures talking to a backend are
    /// counted by `upstream_error_kind` instead, admin answers not at all).
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            Self::HeadersTooLarge => Some("header_too_large"),
            Self::UriTooLong => Some("uri_too_long"),
            Self::MissingHost => Some("missing_host"),
            Self::MalformedRequest => Some("malformed_request"),
            Self::InternalPath => Some("internal_path"),
            Self::DeclaredBodyTooLarge { .. } | Self::BodyTooLarge => Some("body_too_large"),
            Self::TooManyRequestsFromClient => Some("too_many_requests_from_client"),
            Self::NoBackend => Some("no_backend"),
            Self::BackendUnreachable
            | Self::BackendTimeout
            | Self::BackendError
            | Self::NotProxied(_)
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::Unauthorized => None,
        }
    }

    /// `{"error": {"code", "message"}}`, serialised by the type the backends use too.
    pub fn body(&self) -> Bytes {
        Bytes::from(ErrorEnvelope::new(self.code(), self.message()).to_json())
    }

    /// Every header of the answer, in the order they are written: the content's type and
    /// length, the request id when there is one, then the variant's own.
    pub fn headers(
        &self,
        body_len: usize,
        request_id: Option<&str>,
    ) -> impl Iterator<Item = (&'static str, HeaderValue)> {
        // A request id is kept only when it is visible ASCII (or minted), so it always
        // makes a header value.
        let request_id = request_id
            .and_then(|id| HeaderValue::from_str(id).ok())
            .map(|id| (common::request_id::HEADER, id));
        [
            ("content-type", HeaderValue::from_static("application/json")),
            ("content-length", HeaderValue::from(body_len)),
        ]
        .into_iter()
        .chain(request_id)
        .chain(self.extra_header())
    }

    /// The answer as a whole response, for the admin listener (which has no request ids).
    pub fn to_response(&self) -> http::Response<Vec<u8>> {
        let body = self.body();
        let mut response = http::Response::new(body.to_vec());
        *response.status_mut() = self.status();
        for (name, value) in self.headers(body.len(), None) {
            response
                .headers_mut()
                .insert(http::HeaderName::from_static(name), value);
        }
        response
    }

    /// What the client is told when proxying failed with `error_type` from `source`; `None`
    /// when the client itself went away (there is nobody to tell).
    pub fn for_error(error_type: &ErrorType, source: &ErrorSource) -> Option<Self> {
        Some(match error_type {
            ErrorType::HTTPStatus(413) => Self::BodyTooLarge,
            ErrorType::HTTPStatus(status) => {
                Self::NotProxied(StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST))
            }
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError => Self::BackendUnreachable,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Self::BackendTimeout,
            // The client's own bytes broke the framing: tell it, if nothing was written yet.
            ErrorType::InvalidHTTPHeader
            | ErrorType::H1Error
            | ErrorType::Custom(INVALID_CHUNK | INVALID_TRAILER_END)
                if matches!(source, ErrorSource::Downstream) =>
            {
                Self::MalformedRequest
            }
            _ => match source {
                ErrorSource::Downstream => return None,
                ErrorSource::Upstream | ErrorSource::Internal | ErrorSource::Unset => {
                    Self::BackendError
                }
            },
        })
    }
}

/// Writes `answer` as the whole response, with the fields every answer gets (security, and
/// CORS for an allowed origin, so a page can read it; `hsts` is `strict-transport-security`
/// over TLS), and closes the connection afterwards (the request may not have been read to
/// its end).
pub async fn write(
    session: &mut Session,
    answer: &ProxyAnswer,
    request_id: &str,
    generation: &Generation,
    hsts: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    let body = answer.body();
    let mut header = ResponseHeader::build(answer.status(), Some(16))?;
    for (name, value) in answer.headers(body.len(), Some(request_id)) {
        header.insert_header(name, value)?;
    }
    generation.edge_fields(&session.req_header().headers, &mut header)?;
    if let Some(hsts) = hsts {
        header.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
    }
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// Answers a CORS preflight itself: `204` with the preflight's fields, the security fields
/// and the request id, no body.
pub async fn write_preflight(
    session: &mut Session,
    preflight: &cors::Preflight<'_>,
    request_id: &str,
    generation: &Generation,
    hsts: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(StatusCode::NO_CONTENT, Some(16))?;
    preflight.write(&mut header)?;
    security_headers::to_client(&generation.settings.proxy.security_headers, &mut header)?;
    if let Some(hsts) = hsts {
        header.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        header.insert_header(common::request_id::HEADER, id)?;
    }
    session.write_response_header(Box::new(header), true).await
}

/// The `kind` label of `proxy_upstream_errors_total` for a Pingora error: the type's name in
/// lower case. Spelled out, so a new Pingora error type is a compile error here rather than
/// a new label nobody expects; custom types and statuses collapse to one label each, so the
/// set of series stays bounded.
pub fn upstream_error_kind(error_type: &ErrorType) -> &'static str {
    match error_type {
        ErrorType::ConnectTimedout => "connecttimedout",
        ErrorType::ConnectRefused => "connectrefused",
        ErrorType::ConnectNoRoute => "connectnoroute",
        ErrorType::TLSWantX509Lookup => "tlswantx509lookup",
        ErrorType::TLSHandshakeFailure => "tlshandshakefailure",
        ErrorType::TLSHandshakeTimedout => "tlshandshaketimedout",
        ErrorType::InvalidCert => "invalidcert",
        ErrorType::HandshakeError => "handshakeerror",
        ErrorType::ConnectError => "connecterror",
        ErrorType::BindError => "binderror",
        ErrorType::AcceptError => "accepterror",
        ErrorType::SocketError => "socketerror",
        ErrorType::ConnectProxyFailure => "connectproxyfailure",
        ErrorType::InvalidHTTPHeader => "invalidhttpheader",
        ErrorType::H1Error => "h1error",
        ErrorType::H2Error => "h2error",
        ErrorType::H2Downgrade => "h2downgrade",
        ErrorType::InvalidH2 => "invalidh2",
        ErrorType::ReadError => "readerror",
        ErrorType::WriteError => "writeerror",
        ErrorType::ReadTimedout => "readtimedout",
        ErrorType::WriteTimedout => "writetimedout",
        ErrorType::ConnectionClosed => "connectionclosed",
        ErrorType::HTTPStatus(_) => "httpstatus",
        ErrorType::FileOpenError => "fileopenerror",
        ErrorType::FileCreateError => "filecreateerror",
        ErrorType::FileReadError => "filereaderror",
        ErrorType::FileWriteError => "filewriteerror",
        ErrorType::InternalError => "internalerror",
        ErrorType::UnknownError => "unknownerror",
        ErrorType::Custom(_) | ErrorType::CustomCode(_, _) => "custom",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ProxyAnswer; 16] = [
        ProxyAnswer::HeadersTooLarge,
        ProxyAnswer::UriTooLong,
        ProxyAnswer::MissingHost,
        ProxyAnswer::MalformedRequest,
        ProxyAnswer::InternalPath,
        ProxyAnswer::DeclaredBodyTooLarge { limit: 2048 },
        ProxyAnswer::BodyTooLarge,
        ProxyAnswer::TooManyRequestsFromClient,
        ProxyAnswer::NoBackend,
        ProxyAnswer::BackendUnreachable,
        ProxyAnswer::BackendTimeout,
        ProxyAnswer::BackendError,
        ProxyAnswer::NotProxied(StatusCode::BAD_REQUEST),
        ProxyAnswer::NotFound,
        ProxyAnswer::MethodNotAllowed,
        ProxyAnswer::Unauthorized,
    ];

    #[test]
    fn every_answer_has_its_status_code_message_and_label() {
        use ProxyAnswer as A;
        for (answer, status, code, message, reason) in [
            (
                A::HeadersTooLarge,
                431,
                "HEADERS_TOO_LARGE",
                "request headers are too large",
                Some("header_too_large"),
            ),
            (
                A::UriTooLong,
                414,
                "URI_TOO_LONG",
                "request target is too long",
                Some("uri_too_long"),
            ),
            (
                A::MissingHost,
                400,
                "BAD_REQUEST",
                "an HTTP/1.1 request needs a host header",
                Some("missing_host"),
            ),
            (
                A::MalformedRequest,
                400,
                "BAD_REQUEST",
                "malformed request",
                Some("malformed_request"),
            ),
            (
                A::InternalPath,
                404,
                "NOT_FOUND",
                "no such route",
                Some("internal_path"),
            ),
            (
                A::DeclaredBodyTooLarge { limit: 2048 },
                413,
                "PAYLOAD_TOO_LARGE",
                "request body is larger than 2048 bytes",
                Some("body_too_large"),
            ),
            (
                A::BodyTooLarge,
                413,
                "PAYLOAD_TOO_LARGE",
                "request body is too large",
                Some("body_too_large"),
            ),
            (
                A::TooManyRequestsFromClient,
                429,
                "RATE_LIMITED",
                "too many concurrent requests from this address",
                Some("too_many_requests_from_client"),
            ),
            (
                A::NoBackend,
                503,
                "BACKEND_UNAVAILABLE",
                "no backend is available",
                Some("no_backend"),
            ),
            (
                A::BackendUnreachable,
                503,
                "BACKEND_UNAVAILABLE",
                "no backend is available",
                None,
            ),
            (
                A::BackendTimeout,
                504,
                "BACKEND_TIMEOUT",
                "the backend did not answer in time",
                None,
            ),
            (
                A::BackendError,
                502,
                "BACKEND_ERROR",
                "the backend failed to answer",
                None,
            ),
            (
                A::NotProxied(StatusCode::from_u16(400).unwrap()),
                400,
                "BAD_REQUEST",
                "the request could not be proxied",
                None,
            ),
            (A::NotFound, 404, "NOT_FOUND", "no such route", None),
            (
                A::MethodNotAllowed,
                405,
                "METHOD_NOT_ALLOWED",
                "method not allowed",
                None,
            ),
            (
                A::Unauthorized,
                401,
                "UNAUTHORIZED",
                "the admin listener needs authorization: Bearer <admin token>",
                None,
            ),
        ] {
            assert_eq!(answer.status().as_u16(), status, "{answer:?}");
            assert_eq!(answer.code(), code, "{answer:?}");
            assert_eq!(answer.message(), message, "{answer:?}");
            assert_eq!(answer.refusal_reason(), reason, "{answer:?}");
            let body: serde_json::Value = serde_json::from_slice(&answer.body()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"error": {"code": code, "message": message}})
            );
        }
    }

    #[test]
    fn headers_are_type_length_request_id_then_retry_after_or_the_scheme_where_it_helps() {
        for answer in ALL {
            let body_len = answer.body().len();
            let headers: Vec<(&str, HeaderValue)> =
                answer.headers(body_len, Some("req-1")).collect();
            let retry = matches!(
                answer,
                ProxyAnswer::TooManyRequestsFromClient | ProxyAnswer::NoBackend
            );
            let mut expected = vec![
                ("content-type", HeaderValue::from_static("application/json")),
                ("content-length", HeaderValue::from(body_len)),
                ("x-request-id", HeaderValue::from_static("req-1")),
            ];
            if retry {
                expected.push(("retry-after", HeaderValue::from_static("1")));
            }
            if answer == ProxyAnswer::Unauthorized {
                expected.push(("www-authenticate", HeaderValue::from_static("Bearer")));
            }
            assert_eq!(headers, expected, "{answer:?}");
        }
    }

    #[test]
    fn an_internal_path_answers_exactly_as_a_backends_unknown_route() {
        let backend_404 = r#"{"error":{"code":"NOT_FOUND","message":"no such route"}}"#;
        assert_eq!(ProxyAnswer::InternalPath.body(), backend_404.as_bytes());
        assert_eq!(ProxyAnswer::InternalPath.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn admin_responses_carry_the_same_answer_without_a_request_id() {
        let response = ProxyAnswer::NotFound.to_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            response.headers()["content-length"],
            response.body().len().to_string().as_str()
        );
        assert!(response.headers().get("x-request-id").is_none());
        assert_eq!(
            String::from_utf8(response.into_body()).unwrap(),
            r#"{"error":{"code":"NOT_FOUND","message":"no such route"}}"#
        );
    }

    #[test]
    fn pingora_errors_map_to_answers() {
        use ErrorSource::{Downstream, Internal, Upstream};
        for (error_type, source, expected) in [
            (
                ErrorType::HTTPStatus(413),
                Internal,
                Some(ProxyAnswer::BodyTooLarge),
            ),
            (
                ErrorType::HTTPStatus(400),
                Downstream,
                Some(ProxyAnswer::NotProxied(StatusCode::BAD_REQUEST)),
            ),
            (
                ErrorType::HTTPStatus(1),
                Downstream,
                Some(ProxyAnswer::NotProxied(StatusCode::BAD_REQUEST)),
            ),
            (
                ErrorType::ConnectRefused,
                Upstream,
                Some(ProxyAnswer::BackendUnreachable),
            ),
            (
                ErrorType::ConnectTimedout,
                Upstream,
                Some(ProxyAnswer::BackendUnreachable),
            ),
            (
                ErrorType::ReadTimedout,
                Upstream,
                Some(ProxyAnswer::BackendTimeout),
            ),
            (
                ErrorType::WriteTimedout,
                Upstream,
                Some(ProxyAnswer::BackendTimeout),
            ),
            (
                ErrorType::ConnectionClosed,
                Upstream,
                Some(ProxyAnswer::BackendError),
            ),
            (
                ErrorType::InvalidHTTPHeader,
                Internal,
                Some(ProxyAnswer::BackendError),
            ),
            (ErrorType::ConnectionClosed, Downstream, None),
            (
                ErrorType::Custom("InvalidChunk"),
                Downstream,
                Some(ProxyAnswer::MalformedRequest),
            ),
            (
                ErrorType::Custom("InvalidTrailerEnd"),
                Downstream,
                Some(ProxyAnswer::MalformedRequest),
            ),
            (
                ErrorType::InvalidHTTPHeader,
                Downstream,
                Some(ProxyAnswer::MalformedRequest),
            ),
            (
                ErrorType::H1Error,
                Downstream,
                Some(ProxyAnswer::MalformedRequest),
            ),
            (
                ErrorType::Custom("InvalidChunk"),
                Upstream,
                Some(ProxyAnswer::BackendError),
            ),
            (ErrorType::ReadError, Downstream, None),
        ] {
            assert_eq!(
                ProxyAnswer::for_error(&error_type, &source),
                expected,
                "{error_type:?} from {source:?}"
            );
        }
    }

    #[test]
    fn upstream_error_kinds_are_the_lowercased_type_names() {
        for error_type in [
            ErrorType::ConnectTimedout,
            ErrorType::ConnectRefused,
            ErrorType::ConnectNoRoute,
            ErrorType::ConnectError,
            ErrorType::TLSHandshakeFailure,
            ErrorType::InvalidHTTPHeader,
            ErrorType::H1Error,
            ErrorType::ReadError,
            ErrorType::WriteError,
            ErrorType::ReadTimedout,
            ErrorType::WriteTimedout,
            ErrorType::ConnectionClosed,
            ErrorType::InternalError,
            ErrorType::UnknownError,
        ] {
            assert_eq!(
                upstream_error_kind(&error_type),
                format!("{error_type:?}").to_lowercase()
            );
        }
        assert_eq!(
            upstream_error_kind(&ErrorType::HTTPStatus(502)),
            "httpstatus"
        );
        assert_eq!(upstream_error_kind(&ErrorType::Custom("odd")), "custom");
    }

    /// Where an answer is documented: the public listener's in the contract (docs/API.md),
    /// the admin listener's for operators (docs/ADMIN.md), each in its own table; a new
    /// variant must pick one here.
    fn documented_in(answer: ProxyAnswer) -> (&'static str, &'static str, &'static str) {
        const API: &str = include_str!("../../docs/API.md");
        const ADMIN: &str = include_str!("../../docs/ADMIN.md");
        match answer {
            ProxyAnswer::HeadersTooLarge
            | ProxyAnswer::UriTooLong
            | ProxyAnswer::MissingHost
            | ProxyAnswer::MalformedRequest
            | ProxyAnswer::InternalPath
            | ProxyAnswer::DeclaredBodyTooLarge { .. }
            | ProxyAnswer::BodyTooLarge
            | ProxyAnswer::TooManyRequestsFromClient
            | ProxyAnswer::NoBackend
            | ProxyAnswer::BackendUnreachable
            | ProxyAnswer::BackendTimeout
            | ProxyAnswer::BackendError
            | ProxyAnswer::NotProxied(_) => ("docs/API.md", API, "## Answers from the edge proxy"),
            ProxyAnswer::NotFound | ProxyAnswer::MethodNotAllowed | ProxyAnswer::Unauthorized => {
                ("docs/ADMIN.md", ADMIN, "## Answers")
            }
        }
    }

    #[test]
    fn the_docs_in_the_repo_list_every_answer_with_its_status_in_its_listeners_table() {
        for answer in ALL {
            let (file, text, heading) = documented_in(answer);
            let start = text
                .find(&format!("\n{heading}\n"))
                .unwrap_or_else(|| panic!("{file} has no section {heading:?}"));
            let section = &text[start + 1..];
            let end = section[heading.len()..]
                .find("\n## ")
                .map_or(section.len(), |end| end + heading.len());
            let section = &section[..end];
            let status = answer.status().as_u16();
            let listed = section.lines().any(|line| {
                line.starts_with(&format!("| {status} |"))
                    && line.contains(&format!("`{}`", answer.code()))
            });
            // `NotProxied` carries whatever status Pingora refused with; its code is listed.
            let listed = listed
                || matches!(answer, ProxyAnswer::NotProxied(_))
                    && section.contains(&format!("`{}`", answer.code()));
            assert!(
                listed,
                "{file}'s {heading:?} lists no {status} `{}` ({answer:?})",
                answer.code()
            );
        }
    }
}
