//! The few lines that turn `shared`'s framework-free `Reply` into an actix-web response.
//!
//! actix-web 4 speaks `http` 0.2 and `Reply` speaks `http` 1. Version 0.2 accepts every status
//! code (100 to 999), header name and header value that version 1 accepts (it is looser only
//! in allowing `"` in a name); the tests below check every byte. So a value that exists in
//! `http` 1 converts, and the conversions here cannot fail.

use std::convert::Infallible;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use futures::StreamExt;
use shared::{Reply, ReplyBody};

pub fn into_response(reply: Reply) -> HttpResponse {
    let mut response = HttpResponse::build(status(reply.status));
    for (name, value) in &reply.headers {
        response.append_header(header(name, value));
    }
    match reply.body {
        ReplyBody::Full(bytes) => response.body(bytes),
        ReplyBody::Stream(stream) => response.streaming(stream.map(Ok::<_, Infallible>)),
    }
}

/// `status` in actix-web's `http` 0.2.
pub fn status(status: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(status.as_u16()).expect("http 0.2 accepts every http 1 status code")
}

/// `name: value` in actix-web's `http` 0.2.
pub fn header(name: &http::HeaderName, value: &http::HeaderValue) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_bytes(name.as_str().as_bytes())
            .expect("http 0.2 accepts every http 1 header name"),
        HeaderValue::from_bytes(value.as_bytes())
            .expect("http 0.2 accepts every http 1 header value"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_http_1_status_converts() {
        for code in 0..=u16::MAX {
            let Ok(status) = http::StatusCode::from_u16(code) else {
                continue;
            };
            assert_eq!(super::status(status).as_u16(), code);
        }
    }

    /// Both versions judge a name and a value byte by byte (a name through a short-name and a
    /// long-name path), so every byte at both lengths, and the longest name, cover them all.
    #[test]
    fn every_http_1_header_name_and_value_converts() {
        for byte in 0..=u8::MAX {
            for len in [2, 100] {
                let bytes = vec![byte; len];
                if let Ok(name) = http::HeaderName::from_bytes(&bytes) {
                    let value = http::HeaderValue::from_static("v");
                    assert_eq!(header(&name, &value).0, name.as_str());
                }
                if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                    let name = http::HeaderName::from_static("n");
                    assert_eq!(header(&name, &value).1.as_bytes(), value.as_bytes());
                }
            }
        }
        let longest = vec![b'a'; usize::from(u16::MAX)];
        let name = http::HeaderName::from_bytes(&longest).expect("the longest name http 1 takes");
        let value = http::HeaderValue::from_static("v");
        assert_eq!(header(&name, &value).0, name.as_str());
    }
}
