//! Handlers: extract what `Service` needs, call it, turn its `Reply` into a response.

use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use shared::endpoint::Methods;
use shared::{ApiError, Incoming, Service};

use crate::reply::into_response;

fn incoming(request: &HttpRequest, body: web::Payload) -> Incoming<'_, web::Payload> {
    let headers = request.headers();
    Incoming {
        authorization: headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        content_type: headers.get(CONTENT_TYPE).map(|v| v.as_bytes()),
        body,
    }
}

pub async fn login(
    service: web::Data<Service>,
    request: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    into_response(service.login(incoming(&request, body)).await)
}

pub async fn verify(
    service: web::Data<Service>,
    request: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    into_response(service.verify(incoming(&request, body)).await)
}

pub async fn generate(
    service: web::Data<Service>,
    request: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    into_response(service.generate(incoming(&request, body)).await)
}

pub async fn frontend(service: web::Data<Service>) -> HttpResponse {
    into_response(service.frontend())
}

pub async fn health(service: web::Data<Service>) -> HttpResponse {
    into_response(service.health())
}

pub async fn metrics(service: web::Data<Service>) -> HttpResponse {
    into_response(service.metrics_text())
}

pub async fn openapi(service: web::Data<Service>) -> HttpResponse {
    into_response(service.openapi())
}

pub async fn not_found() -> HttpResponse {
    into_response(ApiError::NotFound.into_reply())
}

pub async fn post_only() -> HttpResponse {
    into_response(
        ApiError::MethodNotAllowed {
            allow: Methods::Post,
        }
        .into_reply(),
    )
}

pub async fn get_only() -> HttpResponse {
    into_response(
        ApiError::MethodNotAllowed {
            allow: Methods::Get,
        }
        .into_reply(),
    )
}
