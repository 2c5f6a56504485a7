//! The `ProxyHttp` implementation: refuse at the edge what must be refused, decide the side,
//! connect (retrying a failed connect once on the other side), and mark the response.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use common::envelope::{ErrorBody, ErrorEnvelope};
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::metrics::Route;
use crate::routing::{self, RouteInput, Side};
use crate::state::{ClientSlot, Generation, ProxyState};
use crate::sticky;

pub struct CanaryProxy {
    pub state: Arc<ProxyState>,
}

/// What one request carries through the filters.
pub struct RequestCtx {
    started: Instant,
    generation: Option<Arc<Generation>>,
    route: Route,
    /// The side being tried now; `None` until decided (or when refused at the edge).
    side: Option<Side>,
    /// The side whose response reached the client; `None` for answers made by the proxy.
    answered_by: Option<Side>,
    retried: bool,
    request_id: String,
    set_cookie: Option<String>,
    body_bytes: usize,
    _slot: Option<ClientSlot>,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1); Pingora itself manages framing
/// (`transfer-encoding`, `content-length`) and `connection` towards each side.
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Names that the `connection` header lists as hop-by-hop, if there is one (rare).
fn connection_listed(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| {
            !name.is_empty()
                && !matches!(
                    name.as_str(),
                    "close" | "keep-alive" | "transfer-encoding" | "content-length"
                )
        })
        .collect()
}

/// A body in the contract's error shape, serialised by the type `shared` owns.
pub(crate) fn json_error(code: &'static str, message: &str) -> Bytes {
    let body = ErrorEnvelope {
        error: ErrorBody {
            code,
            message: message.to_owned(),
            details: None,
        },
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Answers from the proxy itself, in the contract's error shape, and closes the connection.
async fn write_error(
    session: &mut Session,
    request_id: &str,
    status: u16,
    code: &'static str,
    message: &str,
    extra: Option<(&'static str, &str)>,
) -> Result<()> {
    let body = json_error(code, message);
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("x-request-id", request_id)?;
    if let Some((name, value)) = extra {
        header.insert_header(name, value)?;
    }
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

impl CanaryProxy {
    /// Refuses at the edge: answers, then tells Pingora the request is done.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        code: &'static str,
        message: &str,
        extra: Option<(&'static str, &str)>,
    ) -> Result<bool> {
        write_error(session, &ctx.request_id, status, code, message, extra).await?;
        Ok(true)
    }

    fn client_ip(session: &Session) -> Option<IpAddr> {
        session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip())
    }
}

/// The size of a request head as it came on the wire, near enough for a cap.
fn header_bytes(header: &RequestHeader) -> usize {
    let target = header
        .uri
        .path_and_query()
        .map_or(1, |pq| pq.as_str().len());
    let head = target + header.method.as_str().len() + 12;
    header.headers.iter().fold(head, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}

#[async_trait]
impl ProxyHttp for CanaryProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            generation: None,
            route: Route::of(""),
            side: None,
            answered_by: None,
            retried: false,
            request_id: String::new(),
            set_cookie: None,
            body_bytes: 0,
            _slot: None,
        }
    }

    /// Called right after the request head is parsed, with what `HeadDeadline` left.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
        head_read: Box<dyn std::any::Any + Send + Sync>,
    ) {
        crate::head_deadline::HeadRead::signal(head_read);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let generation = self.state.live.load_full();
        let live = &generation.settings.proxy;
        let header = session.req_header();
        ctx.route = Route::of(header.uri.path());
        ctx.request_id = common::request_id::request_id(
            header.headers.get("x-request-id").map(|v| v.as_bytes()),
        );

        if header_bytes(header) > live.max_header_bytes.as_usize() {
            self.state.metrics.edge_refusal("header_too_large");
            ctx.generation = Some(generation);
            return self
                .refuse(
                    session,
                    ctx,
                    431,
                    "HEADERS_TOO_LARGE",
                    "request headers are too large",
                    None,
                )
                .await;
        }
        let declared_length = header
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared_length.is_some_and(|n| n > live.max_body_bytes.get()) {
            self.state.metrics.edge_refusal("body_too_large");
            let message = format!("request body is larger than {} bytes", live.max_body_bytes);
            ctx.generation = Some(generation);
            return self
                .refuse(session, ctx, 413, "PAYLOAD_TOO_LARGE", &message, None)
                .await;
        }
        if let Some(ip) = Self::client_ip(session) {
            match self
                .state
                .take_client_slot(ip, live.max_requests_per_client.get())
            {
                Some(slot) => ctx._slot = Some(slot),
                None => {
                    self.state
                        .metrics
                        .edge_refusal("too_many_requests_from_client");
                    ctx.generation = Some(generation);
                    return self
                        .refuse(
                            session,
                            ctx,
                            429,
                            "RATE_LIMITED",
                            "too many concurrent requests from this address",
                            Some(("retry-after", "1")),
                        )
                        .await;
                }
            }
        }

        let header = session.req_header();
        let cookie_bucket = header
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| sticky::find_cookie(v, live.cookie_name.as_str()))
            .and_then(|value| self.state.signer.verify(value));
        let forced = live
            .override_header
            .get()
            .and_then(|name| header.headers.get(name))
            .and_then(|v| Side::parse(v.as_bytes()));
        let bucket = match cookie_bucket {
            Some(bucket) => bucket,
            None => {
                let bucket = header
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| sticky::token_subject(v.as_bytes()))
                    .map(|sub| self.state.signer.bucket_for_subject(&sub))
                    .unwrap_or_else(sticky::random_bucket);
                // The override is for one request and leaves the cookie alone.
                if forced.is_none() {
                    ctx.set_cookie = Some(sticky::set_cookie(
                        live.cookie_name.as_str(),
                        &self.state.signer.cookie_value(bucket),
                        live.cookie_max_age_seconds,
                        live.cookie_secure,
                    ));
                }
                bucket
            }
        };
        let decided = routing::route(RouteInput {
            bucket,
            new_basis_points: generation.settings.new_basis_points(),
            forced,
            legacy_up: self.state.health.is_up(Side::Legacy),
            new_up: self.state.health.is_up(Side::New),
        });
        ctx.generation = Some(generation);
        match decided {
            None => {
                self.state.metrics.edge_refusal("no_backend");
                self.refuse(
                    session,
                    ctx,
                    503,
                    "BACKEND_UNAVAILABLE",
                    "no backend is available",
                    Some(("retry-after", "1")),
                )
                .await
            }
            Some(route) => {
                if route.is_failover() {
                    self.state.metrics.failover(route.preferred, route.side);
                }
                ctx.side = Some(route.side);
                Ok(false)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        match (&ctx.generation, ctx.side) {
            (Some(generation), Some(side)) => Ok(Box::new(generation.peer(side))),
            _ => Error::e_explain(ErrorType::InternalError, "no side decided"),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(side) = ctx.side {
            self.state.metrics.upstream_error(side, "connect");
            // Nothing reached the backend, so even a POST is safe to send to the other once.
            if !ctx.retried {
                ctx.retried = true;
                ctx.side = Some(side.other());
                self.state.metrics.failover(side, side.other());
                tracing::warn!(backend = side.as_str(), error = %e, "connect failed; trying the other backend");
                e.set_retry(true);
            }
        }
        e
    }

    /// Pingora's policy (replay only idempotent requests whose body is still buffered), plus:
    /// when it would give up, and nothing has reached the client yet, try the other backend
    /// once. A backend that just stopped leaves stale pooled connections behind; without
    /// this a GET could fail before the health checks notice.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !replayable {
            e.set_retry(false);
            return e;
        }
        e.retry.decide_reuse(client_reused);
        if let (false, false, true, Some(side)) = (
            e.retry(),
            ctx.retried,
            session.response_written().is_none(),
            ctx.side,
        ) {
            ctx.retried = true;
            ctx.side = Some(side.other());
            self.state.metrics.upstream_error(side, "proxy");
            self.state.metrics.failover(side, side.other());
            e.set_retry(true);
        }
        e
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(chunk), Some(generation)) = (body, &ctx.generation) {
            ctx.body_bytes += chunk.len();
            if ctx.body_bytes > generation.settings.proxy.max_body_bytes.as_usize() {
                self.state.metrics.edge_refusal("body_too_large");
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the edge limit",
                );
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        for name in connection_listed(&upstream.headers) {
            upstream.remove_header(name.as_str());
        }
        for name in HOP_BY_HOP {
            upstream.remove_header(name);
        }
        let client = Self::client_ip(session);
        let trusted = match (&ctx.generation, client) {
            (Some(generation), Some(ip)) => generation.settings.proxy.trusted_proxies.contains(&ip),
            _ => false,
        };
        let client = client.map(|ip| ip.to_string()).unwrap_or_default();
        // A trusted hop may send several header lines; all of them form the list.
        let previous: Vec<&str> = upstream
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let forwarded_for = if trusted && !previous.is_empty() {
            format!("{}, {client}", previous.join(", "))
        } else {
            client
        };
        upstream.insert_header("x-forwarded-for", forwarded_for)?;
        if !trusted || upstream.headers.get("x-forwarded-proto").is_none() {
            upstream.insert_header("x-forwarded-proto", "http")?;
        }
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        for name in connection_listed(&response.headers) {
            response.remove_header(name.as_str());
        }
        for name in HOP_BY_HOP {
            response.remove_header(name);
        }
        ctx.answered_by = ctx.side;
        let Some(generation) = &ctx.generation else {
            return Ok(());
        };
        if let (true, Some(side)) = (generation.settings.proxy.served_by_header, ctx.side) {
            response.insert_header("x-served-by", side.as_str())?;
        }
        if let Some(cookie) = ctx.set_cookie.take() {
            response.append_header("set-cookie", cookie)?;
        }
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        match &ctx.generation {
            Some(g) if ctx.started.elapsed() > g.settings.proxy.total_timeout_ms.get() => {
                Error::e_explain(
                    ErrorType::ReadTimedout,
                    "request over proxy.total_timeout_ms",
                )
            }
            _ => Ok(None),
        }
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let (status, code, message) = match e.etype() {
            ErrorType::HTTPStatus(413) => (413, "PAYLOAD_TOO_LARGE", "request body is too large"),
            ErrorType::HTTPStatus(status) => {
                (*status, "BAD_REQUEST", "the request could not be proxied")
            }
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError => (503, "BACKEND_UNAVAILABLE", "no backend is available"),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, "BACKEND_TIMEOUT", "the backend did not answer in time")
            }
            _ => match e.esource() {
                ErrorSource::Downstream => (0, "", ""),
                _ => (502, "BACKEND_ERROR", "the backend failed to answer"),
            },
        };
        if let (Some(side), ErrorSource::Upstream) = (ctx.side, e.esource()) {
            self.state
                .metrics
                .upstream_error(side, &format!("{:?}", e.etype()).to_lowercase());
        }
        if status > 0 && session.response_written().is_none() {
            // The client may be gone already; there is nobody left to tell.
            let _ = write_error(session, &ctx.request_id, status, code, message, None).await;
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        self.state
            .metrics
            .request(ctx.answered_by, ctx.route, status, elapsed.as_secs_f64());
        if let Some(error) = error {
            tracing::warn!(request_id = %ctx.request_id, status, %error, "request failed");
        } else {
            tracing::debug!(request_id = %ctx.request_id, status, backend = ?ctx.side, elapsed_us = elapsed.as_micros() as u64, "proxied");
        }
    }
}
