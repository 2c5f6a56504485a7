//! The few lines that turn `shared`'s framework-free `Reply` into an axum response.
//!
//! axum speaks the same `http` crate as `Reply`, so status and headers move over as they are:
//! nothing here can fail or drop a header.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use shared::{Reply, ReplyBody};

pub fn into_response(reply: Reply) -> Response {
    let body = match reply.body {
        ReplyBody::Full(bytes) => Body::from(bytes),
        ReplyBody::Stream(stream) => Body::from_stream(stream.map(Ok::<_, Infallible>)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    // `extend` appends, so a name given twice is sent twice, as the legacy backend does.
    response.headers_mut().extend(reply.headers);
    response
}
