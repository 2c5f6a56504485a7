//! Handlers: extract what `Service` needs, call it, turn its `Reply` into a response.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};
use shared::endpoint::{self, Endpoint, Methods};
use shared::{Incoming, Service};

use crate::reply::into_response;

/// `endpoint` on its methods, answered by `Service`; any other method gets the contract's 405.
pub fn route(endpoint: Endpoint) -> MethodRouter<Service> {
    let answer = move |State(service): State<Service>, request: Request| async move {
        let (head, body) = request.into_parts();
        let incoming = Incoming::new(
            service.shadow_key(),
            |name| head.headers.get(name).map(HeaderValue::as_bytes),
            body.into_data_stream(),
        );
        into_response(service.answer(endpoint, incoming).await)
    };
    let methods = endpoint.methods();
    // `on(GET, …)` answers HEAD too, as `axum::routing::get` does.
    let filter = match methods {
        Methods::Post => MethodFilter::POST,
        Methods::Get => MethodFilter::GET,
    };
    on(filter, answer).fallback(move || async move { into_response(methods.refusal()) })
}

pub async fn not_found() -> Response {
    into_response(endpoint::not_found())
}
