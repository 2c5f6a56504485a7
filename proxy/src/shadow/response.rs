//! What the wiring captured of one backend's answer to a shadowed request: the whole head
//! and the body up to the capture's byte cap. Plain `http` types, so the diff never sees
//! Pingora's.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as received (after any transfer decoding), at most the capture's cap.
    pub body: Bytes,
    /// The body reached the capture's byte cap: what is in `body` is only its beginning, so
    /// the diff compares the status and headers only.
    pub truncated: bool,
}

impl CapturedResponse {
    /// A complete (untruncated) answer.
    pub fn new(status: StatusCode, headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        CapturedResponse {
            status,
            headers,
            body: body.into(),
            truncated: false,
        }
    }
}
