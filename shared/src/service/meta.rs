//! The endpoints that need nothing from the request: health, metrics, the OpenAPI document
//! and the frontend page.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, StatusCode};

use super::Service;
use crate::api::HealthResponse;
use crate::reply::{APPLICATION_JSON, NO_CACHE, Reply};

/// The Prometheus text exposition format, version 0.0.4.
const PROMETHEUS_TEXT: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// What the frontend page may do: run its one inline script and style (by their SHA-256,
/// checked by a test below against the page), call the API on its own origin, nothing else.
const FRONTEND_CSP: HeaderValue = HeaderValue::from_static(concat!(
    "default-src 'none'; ",
    "script-src 'sha256-nPaeJysRBuQ/GIAhnlxAfDkCS6IVDY5P2LbgNrie5BM='; ",
    "style-src 'sha256-9s8lOqKnAxyZrI1uxaEW9mdypxBkeXePaRuXQYljH6w='; ",
    "connect-src 'self'; img-src 'self'; form-action 'self'; ",
    "frame-ancestors 'self'; base-uri 'none'"
));

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
            (CONTENT_SECURITY_POLICY, FRONTEND_CSP),
        ])
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> Reply {
        Reply::full(StatusCode::OK, APPLICATION_JSON, self.inner.openapi.clone())
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::Digest;

    use super::FRONTEND_CSP;

    /// The text between `<tag>` and `</tag>`, where the page has exactly one such element.
    fn inline(page: &str, tag: &str) -> String {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        assert_eq!(page.matches(&open).count(), 1, "one inline <{tag}>");
        let start = page.find(&open).unwrap() + open.len();
        let end = page[start..].find(&close).unwrap() + start;
        page[start..end].to_owned()
    }

    #[test]
    fn the_pages_csp_allows_exactly_its_inline_script_and_style() {
        let page = include_str!("../../web/index.html");
        let csp = FRONTEND_CSP;
        let csp = csp.to_str().unwrap();
        for (directive, tag) in [("script-src", "script"), ("style-src", "style")] {
            let digest = sha2::Sha256::digest(inline(page, tag).as_bytes());
            let hash = base64::engine::general_purpose::STANDARD.encode(digest);
            let expected = format!("{directive} 'sha256-{hash}';");
            assert!(
                csp.contains(&expected),
                "the page's <{tag}> changed: put {expected:?} in FRONTEND_CSP"
            );
        }
        // Anything else the CSP would block: inline handlers, style attributes, other scripts.
        for blocked in [
            " style=\"",
            " onclick=",
            " onload=",
            " onsubmit=",
            "<script src",
            "javascript:",
        ] {
            assert!(
                !page.contains(blocked),
                "the page uses {blocked:?}, which its CSP blocks"
            );
        }
    }
}
