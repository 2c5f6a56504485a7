//! Per request: `shared`'s `Observation` (request id, log span, metrics unless a shadow)
//! around the handler.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::web::Data;
use shared::Service;
use shared::observation::Observation;
use tracing::Instrument;

use crate::reply;

pub async fn observe(
    service: Data<Service>,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let headers = request.headers();
    let route = request.match_pattern();
    let observation = Observation::start(
        service.shadow_key(),
        |name| headers.get(name.as_str()).map(HeaderValue::as_bytes),
        request.method().as_str(),
        route.as_deref(),
    );
    let mut response = next.call(request).instrument(observation.span()).await?;
    let (name, id) = observation.finish(service.metrics(), response.status().as_u16());
    let (name, id) = reply::header(&name, &id);
    response.headers_mut().insert(name, id);
    Ok(response)
}
