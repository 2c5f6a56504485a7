//! Per request: keep or mint `x-request-id`, open a log span with it, and record the metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use shared::Service;
use shared::metrics::OTHER_ROUTE;
use tracing::Instrument;

const REQUEST_ID: &str = "x-request-id";

pub async fn observe(
    State(service): State<Service>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = shared::request::request_id(request.headers().get(REQUEST_ID).map(|v| v.as_bytes()));
    let route = matched.as_ref().map_or(OTHER_ROUTE, |m| m.as_str());
    let method = request.method().clone();
    let span = tracing::info_span!("request", id = %id, method = %method, route);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    service
        .metrics()
        .observe_http(route, method.as_str(), status, elapsed.as_secs_f64());
    span.in_scope(|| tracing::info!(status, elapsed_us = elapsed.as_micros() as u64, "answered"));
    if let Ok(value) = HeaderValue::try_from(id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
