//! The `ProxyHttp` implementation: the request's steps in order, each a call into a small
//! module. `request_filter` loads the config generation once, checks the head at the edge
//! (`edge`), takes the client's in-flight slot, chooses the bucket (`bucket`) and the side
//! (`routing`), or answers itself (`answer`); `upstream_peer` connects to a replica of the
//! chosen side (`replicas`), retrying a failed connect on its other replicas, then once on
//! the other side; the header filters edit the forwarding fields (`forwarding`); `logging`
//! counts the request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::answer::{self, ProxyAnswer};
use crate::bucket;
use crate::compression;
use crate::edge;
use crate::forwarding::{self, Client};
use crate::internal;
use crate::metrics::RouteLabel;
use crate::replicas::{Attempts, InFlight, Pick};
use crate::rollout::cohorts::{self, CohortKind};
use crate::routing::{self, RouteInput, Side};
use crate::shadow::choice::{self, Choice, SkipReason};
use crate::shadow::mirror::{Plan, ShadowRequest, Slot};
use crate::shadow::request::{RequestShadow, shadow_fields};
use crate::state::{ClientSlot, Generation, ProxyState};
use crate::sticky;
use crate::tls;

pub struct CanaryProxy {
    pub state: Arc<ProxyState>,
}

/// What one request carries through the filters.
pub struct RequestCtx {
    started: Instant,
    generation: Option<Arc<Generation>>,
    route: RouteLabel,
    /// The side being tried now; `None` until decided (or when refused at the edge).
    side: Option<Side>,
    /// The side whose response reached the client; `None` for answers made by the proxy.
    answered_by: Option<Side>,
    /// The replicas this request failed on, and whether it moved to the other side.
    attempts: Attempts,
    /// The replica being tried now, counted in its load while held.
    upstream: Option<(Pick, InFlight)>,
    /// Whether an error after connecting was retried (once at most: it may be slow).
    replayed: bool,
    /// The judge's cohort this request counts in, while a rollout runs.
    cohort: Option<CohortKind>,
    /// Drawn for a shadow, with its in-flight slot: whether it also takes a noise call.
    shadow_drawn: Option<(bool, Slot)>,
    /// The shadow under way, once the request is on its way to the primary.
    shadow: Option<RequestShadow>,
    request_id: String,
    set_cookie: Option<String>,
    body_bytes: usize,
    _slot: Option<ClientSlot>,
    /// Over the TLS listener: the cookie is `Secure`, the backend sees `https`.
    tls: bool,
    /// `strict-transport-security` for every answer, when over TLS.
    hsts: Option<http::HeaderValue>,
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
}

impl CanaryProxy {
    /// The side for this request, or the answer that refuses it. Takes the client's slot and
    /// prepares the cookie on the way.
    fn decide(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        generation: &Generation,
    ) -> Result<Side, ProxyAnswer> {
        let live = &generation.settings.proxy;
        let head = session.req_header();
        let limits = edge::Limits {
            max_header_bytes: live.max_header_bytes.as_usize(),
            max_body_bytes: live.max_body_bytes.as_usize(),
        };
        edge::check(&head.method, &head.uri, head.version, &head.headers, limits)?;
        if internal::is_internal(head.uri.path(), &live.internal_paths) {
            return Err(ProxyAnswer::InternalPath);
        }
        if let Some(ip) = client_ip(session) {
            let slot = self
                .state
                .take_client_slot(ip, live.max_requests_per_client.get());
            ctx._slot = Some(slot.ok_or(ProxyAnswer::TooManyRequestsFromClient)?);
        }

        let settings = bucket::Settings {
            cookie_name: live.cookie_name.as_str(),
            override_header: live.override_header.get(),
        };
        let signer = &self.state.signer;
        let choice = bucket::choose(&head.headers, settings, signer, sticky::random_bucket);
        if choice.pins_cookie() {
            ctx.set_cookie = Some(sticky::set_cookie(
                live.cookie_name.as_str(),
                &signer.cookie_value(choice.bucket),
                live.cookie_max_age_seconds,
                live.cookie_secure || ctx.tls,
            ));
        }

        let health = &self.state.health;
        let route = routing::route(RouteInput {
            bucket: choice.bucket,
            new_basis_points: generation.settings.new_basis_points(),
            forced: choice.forced,
            legacy_up: health.is_up(Side::Legacy),
            new_up: health.is_up(Side::New),
        })
        .ok_or(ProxyAnswer::NoBackend)?;
        if route.is_failover() {
            self.state.metrics.failover(route.preferred, route.side);
        }
        let shadowing = &generation.settings.shadow;
        let dark_launch = self.state.rollout.is_dark_launch();
        if shadowing.is_on() || dark_launch {
            let request = choice::Request {
                method: &head.method,
                path: head.uri.path(),
                headers: &head.headers,
                side: route.side,
                other_up: health.is_up(route.side.other()),
                paid_provider: generation.settings.generate.is_paid(),
                dark_launch,
            };
            let shadows = &self.state.shadow;
            match choice::choose(shadowing, request, || rand::random_range(0..10_000)) {
                Choice::No => {}
                Choice::Skipped(reason) => {
                    shadows.skipped(&self.state.metrics.shadow, ctx.route.label(), reason)
                }
                Choice::Shadow { noise } => {
                    match shadows.in_flight.take(shadowing.max_inflight.get()) {
                        Some(slot) => ctx.shadow_drawn = Some((noise, slot)),
                        None => shadows.dropped(&self.state.metrics.shadow, ctx.route.label()),
                    }
                }
            }
        }
        if generation.settings.rollout.enabled {
            ctx.cohort = cohorts::membership(cohorts::Routed {
                bucket: choice.bucket,
                preferred: route.preferred,
                forced: choice.forced.is_some(),
                failover: route.is_failover(),
                new_basis_points: generation.settings.new_basis_points(),
            });
        }
        Ok(route.side)
    }

    /// Marks the replica tried now as failed; returns whether another is left to try (of
    /// its side, else of the other side if the request has not moved yet).
    fn failed_on_replica(&self, ctx: &mut RequestCtx) -> bool {
        let (Some((pick, _)), Some(generation)) = (&ctx.upstream, &ctx.generation) else {
            return false;
        };
        ctx.attempts.failed(*pick);
        (ctx.attempts).has_next(pick.side, |side| generation.pool(side).loads())
    }
}

#[async_trait]
impl ProxyHttp for CanaryProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            generation: None,
            route: RouteLabel::of(""),
            side: None,
            answered_by: None,
            attempts: Attempts::default(),
            upstream: None,
            replayed: false,
            cohort: None,
            shadow_drawn: None,
            shadow: None,
            request_id: String::new(),
            set_cookie: None,
            body_bytes: 0,
            _slot: None,
            tls: false,
            hsts: None,
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

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        compression::register(modules);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        compression::hold(session);
        // One generation for the whole request, so it sees one consistent config.
        let generation = self.state.live.load_full();
        ctx.tls = tls::is_tls(session);
        if ctx.tls {
            ctx.hsts = generation.hsts.clone();
        }
        let head = session.req_header();
        ctx.route = RouteLabel::of(head.uri.path());
        ctx.request_id = common::request_id::request_id(
            head.headers
                .get(common::request_id::HEADER)
                .map(|v| v.as_bytes()),
        );
        if let Some(preflight) = generation.cors.preflight(&head.method, &head.headers) {
            answer::write_preflight(
                session,
                &preflight,
                &ctx.request_id,
                &generation,
                ctx.hsts.as_ref(),
            )
            .await?;
            ctx.generation = Some(generation);
            return Ok(true);
        }
        let decided = self.decide(session, ctx, &generation);
        match decided {
            Ok(side) => {
                ctx.generation = Some(generation);
                ctx.side = Some(side);
                Ok(false)
            }
            Err(refusal) => {
                if let Some(reason) = refusal.refusal_reason() {
                    self.state.metrics.edge_refusal(reason);
                }
                answer::write(
                    session,
                    &refusal,
                    &ctx.request_id,
                    &generation,
                    ctx.hsts.as_ref(),
                )
                .await?;
                ctx.generation = Some(generation);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let (Some(generation), Some(side)) = (&ctx.generation, ctx.side) else {
            return Error::e_explain(ErrorType::InternalError, "no side decided");
        };
        let loads = |side| generation.pool(side).loads();
        let Some(pick) = ctx.attempts.next(side, loads, rand::random()) else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "no replica is left to try");
        };
        if pick.side != side {
            self.state.metrics.failover(side, pick.side);
            ctx.side = Some(pick.side);
        }
        let Some((hold, member)) = generation.pool(pick.side).hold(pick.index) else {
            return Error::e_explain(ErrorType::InternalError, "a replica outside its pool");
        };
        let peer = Box::new(member.peer.clone());
        ctx.upstream = Some((pick, hold));
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some((pick, hold)) = &ctx.upstream {
            let replica = hold.replica();
            self.state.metrics.upstream_error(pick.side, "connect");
            replica.connect_failed();
            let (backend, address) = (pick.side.as_str(), replica.address);
            // Nothing reached the backend, so even a POST is safe to send elsewhere.
            if self.failed_on_replica(ctx) {
                tracing::warn!(backend, %address, error = %e, "connect failed; trying another replica");
                e.set_retry(true);
            }
        }
        e
    }

    /// Pingora's policy (replay only idempotent requests whose body is still buffered), plus:
    /// when it would give up, and nothing has reached the client yet, try once more, on
    /// another replica of the side or else on the other side. A backend that just stopped
    /// leaves stale pooled connections behind; without this a GET could fail before the
    /// health checks notice.
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
            ctx.replayed,
            session.response_written().is_none(),
            ctx.side,
        ) {
            self.state.metrics.upstream_error(side, "proxy");
            if self.failed_on_replica(ctx) {
                ctx.replayed = true;
                e.set_retry(true);
            }
        }
        e
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(shadow) = &mut ctx.shadow
            && shadow.waiting_for_body()
        {
            let within = body.as_ref().is_none_or(|chunk| shadow.body_chunk(chunk));
            if !within {
                ctx.shadow = None;
                let metrics = &self.state.metrics.shadow;
                (self.state.shadow).skipped(metrics, ctx.route.label(), SkipReason::BodyTooLarge);
            } else if end_of_stream {
                shadow.start(&self.state);
            }
        }
        if let (Some(chunk), Some(generation)) = (body, &ctx.generation) {
            ctx.body_bytes += chunk.len();
            if ctx.body_bytes > generation.settings.proxy.max_body_bytes.as_usize() {
                // `fail_to_proxy` answers it: Pingora's 413 is `ProxyAnswer::BodyTooLarge`.
                if let Some(reason) = ProxyAnswer::BodyTooLarge.refusal_reason() {
                    self.state.metrics.edge_refusal(reason);
                }
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
        let ip = client_ip(session);
        let trusted = match (&ctx.generation, ip) {
            (Some(generation), Some(ip)) => generation.settings.proxy.trusted_proxies.contains(&ip),
            _ => false,
        };
        let client = Client {
            ip,
            trusted,
            request_id: &ctx.request_id,
            tls: ctx.tls,
        };
        let replica = ctx
            .upstream
            .as_ref()
            .map(|(_, hold)| hold.replica().address);
        if let Some(address) = replica {
            forwarding::host_for_backend(upstream, address)?;
        }
        forwarding::to_backend(upstream, client)?;
        // A retry goes to the side the shadow was meant for: no shadow then.
        if let (Some((noise, slot)), Some(generation), Some(side), Some(replica), false) = (
            ctx.shadow_drawn.take(),
            &ctx.generation,
            ctx.side,
            replica,
            ctx.attempts.failed_over(),
        ) && let Some(shadow_address) = generation
            .pool(side.other())
            .address_for_copy(rand::random())
        {
            let settings = &generation.settings.shadow;
            let plan = Plan {
                primary: side,
                primary_address: replica,
                shadow_address,
                noise,
                timeout: settings.timeout,
                max_body_bytes: settings.max_body_bytes.as_usize(),
            };
            let request = ShadowRequest {
                method: upstream.method.clone(),
                target: (upstream.uri.path_and_query())
                    .map_or_else(|| "/".to_owned(), |target| target.as_str().to_owned()),
                headers: shadow_fields(&upstream.headers),
                body: Bytes::new(),
            };
            let label = ctx.route.label();
            let mut shadow = RequestShadow::new(label, ctx.request_id.clone(), plan, request, slot);
            if !choice::has_body(&session.req_header().headers) {
                shadow.start(&self.state);
            }
            ctx.shadow = Some(shadow);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(shadow) = &mut ctx.shadow
            && Some(shadow.primary()) == ctx.side
        {
            shadow.primary_head(upstream_response.status, &upstream_response.headers);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.answered_by = ctx.side;
        if let Some(hsts) = &ctx.hsts {
            response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        let Some(generation) = &ctx.generation else {
            forwarding::strip_hop_by_hop(response);
            return Ok(());
        };
        generation.edge_fields(&session.req_header().headers, response)?;
        let compression = &generation.settings.proxy.compression;
        if compression::compresses(compression, &response.headers) {
            compression::release(session, compression.level.get() as u32);
        }
        let served_by = ctx
            .side
            .filter(|_| generation.settings.proxy.served_by_header);
        forwarding::to_client(response, served_by, ctx.set_cookie.take(), &ctx.request_id)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let Some(shadow) = &mut ctx.shadow {
            if let Some(chunk) = body {
                shadow.primary_body(chunk);
            }
            if end_of_stream {
                shadow.primary_done();
            }
        }
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
        if let (Some(side), ErrorSource::Upstream) = (ctx.side, e.esource()) {
            let kind = answer::upstream_error_kind(e.etype());
            self.state.metrics.upstream_error(side, kind);
        }
        let answer = ProxyAnswer::for_error(e.etype(), e.esource());
        // Pingora's 413 was counted where it was raised; a malformed body is counted here.
        if let Some(reason) = answer
            .filter(|a| *a == ProxyAnswer::MalformedRequest)
            .and_then(|a| a.refusal_reason())
        {
            self.state.metrics.edge_refusal(reason);
        }
        if let Some(answer) = &answer
            && session.response_written().is_none()
        {
            let generation =
                (ctx.generation.clone()).unwrap_or_else(|| self.state.live.load_full());
            // The client may be gone already; there is nobody left to tell.
            let _ = answer::write(
                session,
                answer,
                &ctx.request_id,
                &generation,
                ctx.hsts.as_ref(),
            )
            .await;
        }
        FailToProxy {
            error_code: answer.map_or(0, |a| a.status().as_u16()),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        self.state
            .metrics
            .request(ctx.answered_by, ctx.route, status, elapsed.as_secs_f64());
        if let (Some(_), Some((_, hold))) = (ctx.answered_by, &ctx.upstream) {
            hold.replica().answered();
        }
        if let (Some(kind), Ok(status)) = (ctx.cohort, StatusCode::from_u16(status)) {
            // Its side failed it and the other answered: the client was spared, the judge
            // is not.
            let status = if ctx.attempts.failed_over() {
                StatusCode::BAD_GATEWAY
            } else {
                status
            };
            self.state
                .rollout
                .collector
                .record(kind, ctx.route, status, elapsed);
        }
        if let Some(error) = error {
            tracing::warn!(request_id = %ctx.request_id, status, %error, "request failed");
        } else {
            tracing::debug!(request_id = %ctx.request_id, status, backend = ?ctx.side, elapsed_us = elapsed.as_micros() as u64, "proxied");
        }
    }
}
