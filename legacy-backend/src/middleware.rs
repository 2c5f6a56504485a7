//! Per request: keep or mint `x-request-id`, open a log span with it, and record the metrics.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use shared::Service;
use shared::metrics::OTHER_ROUTE;
use tracing::Instrument;

const REQUEST_ID: &str = "x-request-id";

pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = shared::request::request_id(request.headers().get(REQUEST_ID).map(|v| v.as_bytes()));
    let route = request
        .match_pattern()
        .unwrap_or_else(|| OTHER_ROUTE.to_owned());
    let method = request.method().clone();
    let service = request.app_data::<web::Data<Service>>().cloned();
    let span = tracing::info_span!("request", id = %id, method = %method, route);
    let mut response = next.call(request).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(service) = service {
        service
            .metrics()
            .observe_http(&route, method.as_str(), status, elapsed.as_secs_f64());
    }
    span.in_scope(|| tracing::info!(status, elapsed_us = elapsed.as_micros() as u64, "answered"));
    if let Ok(value) = HeaderValue::try_from(id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(response)
}
