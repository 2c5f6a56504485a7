//! Handlers: extract what `Service` needs, call it, turn its `Reply` into a response.

use actix_web::http::header::HeaderValue;
use actix_web::web::{self, Data, Payload};
use actix_web::{HttpRequest, HttpResponse, Resource};
use shared::endpoint::{self, Endpoint, Methods};
use shared::{Incoming, Service};

use crate::reply::into_response;

/// `endpoint` on its methods, answered by `Service`; any other method gets the contract's 405.
pub fn resource(endpoint: Endpoint) -> Resource {
    let answer = move |service: Data<Service>, request: HttpRequest, body: Payload| async move {
        let headers = request.headers();
        let incoming = Incoming::new(
            service.shadow_key(),
            |name| headers.get(name.as_str()).map(HeaderValue::as_bytes),
            body,
        );
        into_response(service.answer(endpoint, incoming).await)
    };
    let methods = endpoint.methods();
    let resource = web::resource(endpoint.path());
    let resource = match methods {
        Methods::Post => resource.route(web::post().to(answer)),
        Methods::Get => resource
            .route(web::get().to(answer))
            .route(web::head().to(answer)),
    };
    resource.default_service(web::to(
        move || async move { into_response(methods.refusal()) },
    ))
}

pub async fn not_found() -> HttpResponse {
    into_response(endpoint::not_found())
}
