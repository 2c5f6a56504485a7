//! The admin listener: `/metrics` (Prometheus text), `/admin/status` and `/admin/stats`
//! (JSON), and the dashboard page at `/admin/`. Anything else is a `ProxyAnswer`, in the
//! contract's error shape.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::answer::ProxyAnswer;
use crate::rollout::api;
use crate::routing::Side;
use crate::security_headers;
use crate::state::ProxyState;

const DASHBOARD: &[u8] = include_bytes!("../web/dashboard.html");

/// What the dashboard may do: run its one inline script and style (by their SHA-256, checked
/// by a test below against the page), call the admin API on its own origin, nothing else.
const DASHBOARD_CSP: &str = concat!(
    "default-src 'none'; ",
    "script-src 'sha256-nrbfx9lrgPpCdPaI4WygtpiecvKIxsPhD0zkN3Hv3tc='; ",
    "style-src 'sha256-fJzS4oHjZKbvhtBHmop5BcdZPSQVY4kL8RQ5KJImsgY='; ",
    "connect-src 'self'; img-src 'self' data:; form-action 'none'; ",
    "frame-ancestors 'self'; base-uri 'none'"
);

pub struct AdminApp {
    pub state: Arc<ProxyState>,
}

/// A 200 with `body`; errors are `ProxyAnswer`s.
fn ok(content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(http::StatusCode::OK)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

impl AdminApp {
    pub fn status(&self) -> serde_json::Value {
        let state = &self.state;
        let generation = state.live.load();
        let [legacy, new, none] = state.metrics.counts();
        let backend = |side: Side| {
            let pool = generation.pool(side);
            let replicas: Vec<_> = (pool.members().iter())
                .map(|member| {
                    let replica = &member.replica;
                    json!({
                        "address": replica.address.to_string(),
                        "healthy": replica.is_up(),
                        "inFlight": replica.in_flight(),
                        "requests": replica.answered_count(),
                    })
                })
                .collect();
            json!({
                // The first replica's, as before there were several.
                "address": replicas.first().map_or(json!(null), |r| r["address"].clone()),
                "healthy": state.health.is_up(side),
                "replicas": replicas,
            })
        };
        json!({
            "generation": generation.number,
            "loadedAt": generation.loaded_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "configPath": state.config_path.display().to_string(),
            // Which process answers: after an upgrade, the successor's.
            "process": {"pid": std::process::id(), "threads": state.startup.threads.get()},
            "newPercent": generation.settings.routing.new_percent.as_percent(),
            "backends": {"legacy": backend(Side::Legacy), "new": backend(Side::New)},
            "counts": {
                "requests": {"legacy": legacy, "new": new, "none": none},
                "failovers": state.metrics.failover_count(),
                "reloads": {"ok": state.metrics.reload_count(true), "error": state.metrics.reload_count(false)},
            },
        })
    }
}

impl AdminApp {
    /// Each backend's last minute: rates, error rate, p50/p99 and the per-second series.
    pub fn stats(&self) -> serde_json::Value {
        let now = crate::metrics::unix_second();
        let window = &self.state.metrics.window;
        json!({
            "windowSeconds": 60,
            "backends": {
                "legacy": window.minute(Side::Legacy, now),
                "new": window.minute(Side::New, now),
            },
        })
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let mut response = self.answer(session).await;
        let generation = self.state.live.load();
        let fields = &generation.settings.proxy.security_headers;
        // Editing an `http::HeaderMap` cannot fail.
        let _ = security_headers::to_client(fields, response.headers_mut());
        response
    }
}

impl AdminApp {
    async fn answer(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let header = session.req_header();
        let auth = &self.state.admin_auth;
        if let Err(refusal) = auth.check_request(&header.method, header.uri.path(), &header.headers)
        {
            return refusal.to_response();
        }
        if let Some(request) = api::route(&header.method, header.uri.path()) {
            return match request {
                Ok(request) => self.rollout(session, request).await,
                Err(refusal) => refusal.to_response(),
            };
        }
        if header.method != http::Method::GET {
            return ProxyAnswer::MethodNotAllowed.to_response();
        }
        match header.uri.path() {
            "/metrics" => ok(
                "text/plain; version=0.0.4; charset=utf-8",
                self.state.metrics.render().into_bytes(),
            ),
            "/admin/status" => ok("application/json", self.status().to_string().into_bytes()),
            "/admin/stats" => ok("application/json", self.stats().to_string().into_bytes()),
            "/admin/shadow" => {
                let report = self.state.shadow.stats().report();
                ok(
                    "application/json",
                    serde_json::to_vec(&report).unwrap_or_default(),
                )
            }
            "/admin" | "/admin/" => {
                let mut page = ok("text/html; charset=utf-8", DASHBOARD.to_vec());
                page.headers_mut().insert(
                    http::header::CONTENT_SECURITY_POLICY,
                    http::HeaderValue::from_static(DASHBOARD_CSP),
                );
                page
            }
            _ => ProxyAnswer::NotFound.to_response(),
        }
    }

    async fn rollout(
        &self,
        session: &mut ServerSession,
        request: api::Request,
    ) -> http::Response<Vec<u8>> {
        let rollout = &self.state.rollout;
        let path = match request {
            api::Request::Status => {
                let status = rollout.status(&self.state).await;
                return ok("application/json", status.to_string().into_bytes());
            }
            api::Request::Command(path) => path,
        };
        let body = match read_body(session, api::MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(refusal) => return refusal.to_response(),
        };
        let command = match api::command(path, &session.req_header().headers, &body) {
            Ok(command) => command,
            Err(refusal) => return refusal.to_response(),
        };
        match rollout.command(&self.state, command).await {
            Ok(status) => ok("application/json", status.to_string().into_bytes()),
            Err(error) => api::ApiError::from(error).to_response(),
        }
    }
}

/// The request body, up to `limit` bytes.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, api::ApiError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(api::body_too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => {
                tracing::debug!(%error, "admin: cannot read a request body");
                return Err(api::unreadable_body());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::Digest;

    use super::{DASHBOARD, DASHBOARD_CSP};

    fn inline(page: &str, tag: &str) -> String {
        let open = format!("<{tag}>");
        let start = page.find(&open).unwrap() + open.len();
        let end = page[start..].find(&format!("</{tag}>")).unwrap() + start;
        page[start..end].to_owned()
    }

    #[test]
    fn the_dashboards_csp_allows_exactly_its_inline_script_and_style() {
        let page = std::str::from_utf8(DASHBOARD).unwrap();
        for (directive, tag) in [("script-src", "script"), ("style-src", "style")] {
            assert_eq!(page.matches(&format!("<{tag}")).count(), 1, "one <{tag}>");
            let digest = sha2::Sha256::digest(inline(page, tag).as_bytes());
            let hash = base64::engine::general_purpose::STANDARD.encode(digest);
            let expected = format!("{directive} 'sha256-{hash}';");
            assert!(
                DASHBOARD_CSP.contains(&expected),
                "the dashboard's <{tag}> changed: put {expected:?} in DASHBOARD_CSP"
            );
        }
        for blocked in [
            " style=\"",
            " onclick=",
            " onload=",
            "<script src",
            "javascript:",
        ] {
            assert!(
                !page.contains(blocked),
                "the dashboard uses {blocked:?}, which its CSP blocks"
            );
        }
    }
}
