//! Per request: `shared`'s `Observation` (request id, log span, metrics) around the handler.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Data;
use shared::Service;
use shared::observation::{Observation, REQUEST_ID};
use tracing::Instrument;

use crate::reply;

pub async fn observe(
    service: Data<Service>,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request.headers().get(REQUEST_ID.as_str());
    let route = request.match_pattern();
    let observation = Observation::start(
        id.map(|id| id.as_bytes()),
        request.method().as_str(),
        route.as_deref(),
    );
    let mut response = next.call(request).instrument(observation.span()).await?;
    let (name, id) = observation.finish(service.metrics(), response.status().as_u16());
    let (name, id) = reply::header(&name, &id);
    response.headers_mut().insert(name, id);
    Ok(response)
}
