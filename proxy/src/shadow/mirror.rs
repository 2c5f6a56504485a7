//! Sending shadows: the I/O around the pure comparison. A shadow is a copy of an eligible
//! request sent to the side that did not serve it, signed so that the backend gives it no
//! side effects (`common::shadow`), on a task of its own: the client's answer never waits
//! for it, and its failure, slowness or timeout changes nothing for the client. Its answer,
//! and the primary's as it streamed past (`Capture`), are compared once both are complete.
//!
//! Bounded everywhere: at most `max_inflight` shadows at once (over it a shadow is dropped,
//! never queued), each abandoned after `timeout`, bodies captured up to `max_body_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::oneshot;

use super::response::CapturedResponse;
use crate::routing::Side;

/// What a shadow needs from the client's request, taken when it was routed.
#[derive(Debug, Clone)]
pub struct ShadowRequest {
    pub method: Method,
    /// Path and query, as the client sent them.
    pub target: String,
    /// The client's fields bound for the backend, minus hop-by-hop ones.
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where and how one shadow is sent.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The side that serves the client; the shadow goes to the other.
    pub primary: Side,
    pub primary_address: std::net::SocketAddr,
    pub shadow_address: std::net::SocketAddr,
    /// Also send it a second time to the primary's side, for noise.
    pub noise: bool,
    pub timeout: Duration,
    pub max_body_bytes: usize,
}

/// How one shadow ended, for the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Both answers were complete: (legacy, new) for the comparison, and the noise call's
    /// answer with the primary's, if one was made.
    Compared(Box<Answers>),
    /// The shadow took longer than `timeout`.
    TimedOut,
    /// The shadow side could not be reached or broke the exchange.
    Failed,
    /// The primary's answer never completed (the client went away, the request failed).
    PrimaryIncomplete,
}

/// The answers of one compared shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub legacy: CapturedResponse,
    pub new: CapturedResponse,
    /// The primary's answer and the noise call's, when one was made.
    pub noise: Option<(CapturedResponse, CapturedResponse)>,
}

/// The primary's answer as it streams to the client: head and body up to the cap.
#[derive(Debug)]
pub struct Capture {
    status: StatusCode,
    headers: HeaderMap,
    body: BytesMut,
    truncated: bool,
    limit: usize,
}

impl Capture {
    pub fn new(status: StatusCode, headers: HeaderMap, limit: usize) -> Self {
        Self {
            status,
            headers,
            body: BytesMut::new(),
            truncated: false,
            limit,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.body.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    pub fn finish(self) -> CapturedResponse {
        CapturedResponse {
            status: self.status,
            headers: self.headers,
            body: self.body.freeze(),
            truncated: self.truncated,
        }
    }
}

/// Counts shadows in flight against a limit that a reload may change.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicU32,
}

/// One shadow's place in flight, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// A slot, or `None` when `max` are in flight: the shadow is dropped, not queued.
    pub fn take(self: &Arc<Self>, max: u32) -> Option<Slot> {
        let taken = self.count.fetch_add(1, Ordering::AcqRel);
        if taken >= max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(Arc::clone(self)))
    }

    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }
}

/// The HTTP client shadows go out on: pooled per backend, never through a proxy from the
/// environment, never following a redirect.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(16)
        .build()
}

/// Sends `request` to `address` and reads the answer up to `max_body_bytes`.
async fn call(
    client: &reqwest::Client,
    address: std::net::SocketAddr,
    request: &ShadowRequest,
    extra: &[(http::HeaderName, HeaderValue)],
    max_body_bytes: usize,
) -> Result<CapturedResponse, reqwest::Error> {
    let mut headers = request.headers.clone();
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    let url = format!("http://{address}{}", request.target);
    let mut response = client
        .request(request.method.clone(), url)
        .headers(headers)
        .body(request.body.clone())
        .send()
        .await?;
    let mut capture = Capture::new(
        response.status(),
        response.headers().clone(),
        max_body_bytes,
    );
    while let Some(chunk) = response.chunk().await? {
        capture.push(&chunk);
        if capture.truncated {
            break;
        }
    }
    Ok(capture.finish())
}

/// Runs one shadow to its end: the shadow call (and the noise call), then the primary's
/// captured answer. `signature` is the shadow header's value for the request's id.
pub async fn run(
    client: reqwest::Client,
    plan: Plan,
    request: ShadowRequest,
    signature: Vec<(http::HeaderName, HeaderValue)>,
    primary: oneshot::Receiver<CapturedResponse>,
) -> Ended {
    let shadow = call(
        &client,
        plan.shadow_address,
        &request,
        &signature,
        plan.max_body_bytes,
    );
    let noise = async {
        if plan.noise {
            let second = call(
                &client,
                plan.primary_address,
                &request,
                &signature,
                plan.max_body_bytes,
            );
            Some(second.await)
        } else {
            None
        }
    };
    let calls = async { tokio::join!(shadow, noise) };
    let (shadow, noise) = match tokio::time::timeout(plan.timeout, calls).await {
        Ok(answers) => answers,
        Err(_) => return Ended::TimedOut,
    };
    let Ok(shadow) = shadow else {
        return Ended::Failed;
    };
    // The primary streams to the client at its own pace (a generation can take a while);
    // waiting for it holds only this task and its slot.
    let primary = match tokio::time::timeout(plan.timeout, primary).await {
        Ok(Ok(primary)) => primary,
        _ => return Ended::PrimaryIncomplete,
    };
    let noise = match noise {
        Some(Ok(second)) => Some((primary.clone(), second)),
        _ => None,
    };
    let (legacy, new) = match plan.primary {
        Side::Legacy => (primary, shadow),
        Side::New => (shadow, primary),
    };
    Ended::Compared(Box::new(Answers { legacy, new, noise }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_keeps_what_fits_and_says_it_was_cut() {
        let mut capture = Capture::new(StatusCode::OK, HeaderMap::new(), 5);
        capture.push(b"abc");
        capture.push(b"defg");
        let captured = capture.finish();
        assert_eq!(&captured.body[..], b"abcde");
        assert!(captured.truncated);
        let mut whole = Capture::new(StatusCode::OK, HeaderMap::new(), 5);
        whole.push(b"abcde");
        assert!(!whole.finish().truncated);
    }

    #[test]
    fn in_flight_drops_over_the_limit_and_frees_on_drop() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.take(2).unwrap();
        let second = in_flight.take(2).unwrap();
        assert!(in_flight.take(2).is_none());
        assert_eq!(in_flight.count(), 2);
        drop(first);
        let third = in_flight.take(2);
        assert!(third.is_some());
        drop((second, third));
        assert_eq!(in_flight.count(), 0);
    }
}
