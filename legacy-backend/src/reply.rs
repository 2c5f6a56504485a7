//! The few lines that turn `shared`'s framework-free `Reply` into an actix-web response.

use std::convert::Infallible;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use futures::StreamExt;
use shared::{Reply, ReplyBody};

pub fn into_response(reply: Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in reply.headers {
        response.append_header((name, value));
    }
    match reply.body {
        ReplyBody::Full(bytes) => response.body(bytes),
        ReplyBody::Stream(stream) => response.streaming(stream.map(Ok::<_, Infallible>)),
    }
}
