//! One request's shadow, carried in the request's context through Pingora's hooks: the
//! request body collected as it passes (when there is one), the shadow started as soon as
//! the request is whole (at once without a body), and the primary's answer captured as it
//! streams to the client and handed over when complete. Nothing here ever holds up the
//! client's request: copies only, and a task of its own for the shadow.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::sync::oneshot;

use super::mirror::{self, Capture, Plan, ShadowRequest, Slot};
use super::response::CapturedResponse;
use crate::state::ProxyState;

pub struct RequestShadow {
    route: &'static str,
    request_id: String,
    plan: Plan,
    request: Option<ShadowRequest>,
    body: BytesMut,
    slot: Option<Slot>,
    primary_tx: Option<oneshot::Sender<CapturedResponse>>,
    primary_rx: Option<oneshot::Receiver<CapturedResponse>>,
    capture: Option<Capture>,
}

impl RequestShadow {
    pub fn new(
        route: &'static str,
        request_id: String,
        plan: Plan,
        request: ShadowRequest,
        slot: Slot,
    ) -> Self {
        let (primary_tx, primary_rx) = oneshot::channel();
        Self {
            route,
            request_id,
            plan,
            request: Some(request),
            body: BytesMut::new(),
            slot: Some(slot),
            primary_tx: Some(primary_tx),
            primary_rx: Some(primary_rx),
            capture: None,
        }
    }

    /// Keeps a copy of a request body chunk; `false` once the body is over the limit (the
    /// shadow is then abandoned and counted as skipped).
    pub fn body_chunk(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > self.plan.max_body_bytes {
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }

    /// Sends the shadow on a task of its own, once.
    pub fn start(&mut self, state: &Arc<ProxyState>) {
        let (Some(mut request), Some(slot), Some(primary)) = (
            self.request.take(),
            self.slot.take(),
            self.primary_rx.take(),
        ) else {
            return;
        };
        request.body = std::mem::take(&mut self.body).freeze();
        let shadow = &state.shadow;
        let signature = shadow.signature(&self.request_id);
        let client = shadow.client.clone();
        let plan = self.plan.clone();
        let route = self.route;
        let state = Arc::clone(state);
        tokio::spawn(async move {
            let ended = mirror::run(client, plan, request, signature, primary).await;
            drop(slot);
            let generation = state.live.load();
            let metrics = &state.metrics.shadow;
            (state.shadow).record(metrics, route, ended, &generation.shadow_ignore);
        });
    }

    /// The primary's head, as the backend sent it.
    pub fn primary_head(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.capture = Some(Capture::new(
            status,
            headers.clone(),
            self.plan.max_body_bytes,
        ));
    }

    pub fn primary_body(&mut self, chunk: &Bytes) {
        if let Some(capture) = &mut self.capture {
            capture.push(chunk);
        }
    }

    /// The primary's answer is complete: hand it to the shadow's task.
    pub fn primary_done(&mut self) {
        if let (Some(capture), Some(tx)) = (self.capture.take(), self.primary_tx.take()) {
            let _ = tx.send(capture.finish());
        }
    }

    /// Whether the shadow is still waiting for the request's body.
    pub fn waiting_for_body(&self) -> bool {
        self.request.is_some()
    }

    /// The side whose answer is being captured.
    pub fn primary(&self) -> crate::routing::Side {
        self.plan.primary
    }
}

/// The shadow's copy of the request's fields as the primary backend got them: without the
/// ones the client library sets itself (host, framing, connection).
pub fn shadow_fields(forwarded: &HeaderMap) -> HeaderMap {
    let mut fields = forwarded.clone();
    for name in [
        http::header::HOST,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        fields.remove(name);
    }
    fields
}
