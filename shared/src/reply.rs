//! A framework-free HTTP answer: each adapter turns a `Reply` into its own response type.

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::Serialize;

pub const APPLICATION_JSON: &str = "application/json";
pub const TEXT_EVENT_STREAM: &str = "text/event-stream";

pub enum ReplyBody {
    Full(Bytes),
    /// Server-sent events, written as they come; the adapter must not buffer them.
    Stream(BoxStream<'static, Bytes>),
}

pub struct Reply {
    pub status: u16,
    /// Lowercase names; `content-type` is always among them.
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
}

impl Reply {
    pub fn json<T: Serialize>(status: u16, value: &T) -> Self {
        // Serialising our own response types cannot fail: they hold no maps with non-string keys.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self::full(status, APPLICATION_JSON, Bytes::from(body))
    }

    pub fn full(status: u16, content_type: &str, body: Bytes) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            body: ReplyBody::Full(body),
        }
    }

    pub fn event_stream(stream: BoxStream<'static, Bytes>) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type", TEXT_EVENT_STREAM.to_owned()),
                ("cache-control", "no-cache".to_owned()),
                // Tells buffering reverse proxies (nginx) to pass events through at once.
                ("x-accel-buffering", "no".to_owned()),
            ],
            body: ReplyBody::Stream(stream),
        }
    }

    pub fn with_headers(
        mut self,
        headers: impl IntoIterator<Item = (&'static str, String)>,
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
