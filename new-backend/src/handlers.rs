//! Handlers: extract what `Service` needs, call it, turn its `Reply` into a response.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::response::Response;
use shared::endpoint::Methods;
use shared::{ApiError, Incoming, Service};

use crate::reply::into_response;

fn incoming(headers: &HeaderMap, body: Body) -> Incoming<'_, axum::body::BodyDataStream> {
    Incoming {
        authorization: headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        content_type: headers.get(CONTENT_TYPE).map(|v| v.as_bytes()),
        body: body.into_data_stream(),
    }
}

pub async fn login(State(service): State<Service>, headers: HeaderMap, body: Body) -> Response {
    into_response(service.login(incoming(&headers, body)).await)
}

pub async fn verify(State(service): State<Service>, headers: HeaderMap, body: Body) -> Response {
    into_response(service.verify(incoming(&headers, body)).await)
}

pub async fn generate(State(service): State<Service>, headers: HeaderMap, body: Body) -> Response {
    into_response(service.generate(incoming(&headers, body)).await)
}

pub async fn frontend(State(service): State<Service>) -> Response {
    into_response(service.frontend())
}

pub async fn health(State(service): State<Service>) -> Response {
    into_response(service.health())
}

pub async fn metrics(State(service): State<Service>) -> Response {
    into_response(service.metrics_text())
}

pub async fn openapi(State(service): State<Service>) -> Response {
    into_response(service.openapi())
}

pub async fn not_found() -> Response {
    into_response(ApiError::NotFound.into_reply())
}

pub async fn post_only() -> Response {
    into_response(
        ApiError::MethodNotAllowed {
            allow: Methods::Post,
        }
        .into_reply(),
    )
}

pub async fn get_only() -> Response {
    into_response(
        ApiError::MethodNotAllowed {
            allow: Methods::Get,
        }
        .into_reply(),
    )
}
