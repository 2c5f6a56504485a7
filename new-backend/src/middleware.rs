//! Per request: `shared`'s `Observation` (request id, log span, metrics unless a shadow)
//! around the handler.

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use shared::Service;
use shared::observation::Observation;
use tracing::Instrument;

pub async fn observe(
    State(service): State<Service>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let observation = Observation::start(
        service.shadow_key(),
        |name| headers.get(name).map(HeaderValue::as_bytes),
        request.method().as_str(),
        matched.as_ref().map(MatchedPath::as_str),
    );
    let mut response = next.run(request).instrument(observation.span()).await;
    let (name, id) = observation.finish(service.metrics(), response.status().as_u16());
    response.headers_mut().insert(name, id);
    response
}
