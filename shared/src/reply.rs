//! A framework-free HTTP answer: each adapter turns a `Reply` into its own response type.
//!
//! Status and headers are the `http` crate's types, so a reply cannot hold an invalid status,
//! header name or header value, and neither adapter has a conversion that can fail.

use bytes::Bytes;
use futures::stream::BoxStream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

pub const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
pub const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
/// Tells buffering reverse proxies (nginx) to pass events through at once.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub enum ReplyBody {
    Full(Bytes),
    /// Server-sent events, written as they come; the adapter must not buffer them.
    Stream(BoxStream<'static, Bytes>),
}

pub struct Reply {
    pub status: StatusCode,
    /// In the order they are written; `content-type` is always among them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: ReplyBody,
}

impl Reply {
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        // Serialising our own response types cannot fail: they hold no maps with non-string keys.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self::full(status, APPLICATION_JSON, Bytes::from(body))
    }

    pub fn full(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Self {
        Self {
            status,
            headers: vec![(CONTENT_TYPE, content_type)],
            body: ReplyBody::Full(body),
        }
    }

    pub fn event_stream(stream: BoxStream<'static, Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: vec![
                (CONTENT_TYPE, TEXT_EVENT_STREAM),
                (CACHE_CONTROL, NO_CACHE),
                (X_ACCEL_BUFFERING, const { HeaderValue::from_static("no") }),
            ],
            body: ReplyBody::Stream(stream),
        }
    }

    pub fn with_headers(
        mut self,
        headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    ) -> Self {
        self.headers.extend(headers);
        self
    }
}

/// One server-sent event, `event: NAME\ndata: JSON\n\n`.
pub fn sse_event<T: Serialize>(name: &str, data: &T) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}
