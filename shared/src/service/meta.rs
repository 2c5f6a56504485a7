//! The endpoints that need nothing from the request: health, metrics, the OpenAPI document
//! and the frontend page.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, StatusCode};

use super::Service;
use crate::api::HealthResponse;
use crate::reply::{APPLICATION_JSON, NO_CACHE, Reply};

/// The Prometheus text exposition format, version 0.0.4.
const PROMETHEUS_TEXT: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

impl Service {
    /// `GET /health`.
    pub fn health(&self) -> Reply {
        Reply::json(
            StatusCode::OK,
            &HealthResponse {
                status: "ok",
                backend: self.inner.backend.as_str(),
                version: env!("CARGO_PKG_VERSION"),
            },
        )
    }

    /// `GET /metrics`.
    pub fn metrics_text(&self) -> Reply {
        Reply::full(
            StatusCode::OK,
            PROMETHEUS_TEXT,
            Bytes::from(self.inner.metrics.render()),
        )
    }

    /// `GET /`: the frontend page. It uses only the contract's endpoints, so it works
    /// unchanged against either backend, and through the proxy.
    pub fn frontend(&self) -> Reply {
        Reply::full(
            StatusCode::OK,
            HTML,
            Bytes::from_static(include_bytes!("../../web/index.html")),
        )
        .with_headers([
            (CACHE_CONTROL, NO_CACHE),
            (
                X_CONTENT_TYPE_OPTIONS,
                const { HeaderValue::from_static("nosniff") },
            ),
        ])
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> Reply {
        Reply::full(StatusCode::OK, APPLICATION_JSON, self.inner.openapi.clone())
    }
}
