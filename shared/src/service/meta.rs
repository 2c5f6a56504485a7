//! The endpoints that need nothing from the request: health, metrics, the OpenAPI document
//! and the frontend page.

use bytes::Bytes;

use super::Service;
use crate::api::HealthResponse;
use crate::reply::{APPLICATION_JSON, Reply};

impl Service {
    /// `GET /health`.
    pub fn health(&self) -> Reply {
        Reply::json(
            200,
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
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(self.inner.metrics.render()),
        )
    }

    /// `GET /`: the frontend page. It uses only the contract's endpoints, so it works
    /// unchanged against either backend, and through the proxy.
    pub fn frontend(&self) -> Reply {
        Reply::full(
            200,
            "text/html; charset=utf-8",
            Bytes::from_static(include_bytes!("../../web/index.html")),
        )
        .with_headers([
            ("cache-control", "no-cache".to_owned()),
            ("x-content-type-options", "nosniff".to_owned()),
        ])
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> Reply {
        Reply::full(200, APPLICATION_JSON, self.inner.openapi.clone())
    }
}
