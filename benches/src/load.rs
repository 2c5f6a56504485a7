//! The load generator: hyper HTTP/1.1 clients on kept-alive connections, latencies in an
//! HDR histogram (microseconds).
//!
//! Closed loop: N connections send back to back, for throughput. Open loop: requests are
//! due at a fixed rate and latency counts from when each was due, not when it went out, so a
//! stalled server is charged for the requests it kept waiting (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One kind of request, sent again and again.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RequestSpec {
    pub fn get(path: &str) -> Self {
        Self {
            method: http::Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn post_json(path: &str, body: serde_json::Value) -> Self {
        Self {
            method: http::Method::POST,
            path: path.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn build(&self, addr: SocketAddr) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header("host", addr.to_string());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
            .body(Full::new(self.body.clone()))
            .unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `connections` senders, as fast as they can.
    Closed { connections: usize },
    /// `rate` requests per second in all, spread over `connections`.
    Open { rate: f64, connections: usize },
}

impl Mode {
    fn connections(self) -> usize {
        match self {
            Mode::Closed { connections } | Mode::Open { connections, .. } => connections.max(1),
        }
    }
}

/// What one run measured, whichever generator drove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figures {
    /// Answered requests, whatever their status.
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// p50, p90, p99 and p99.9 in microseconds.
    pub percentiles_us: [u64; 4],
}

impl Figures {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn figures(&self) -> Figures {
        Figures {
            requests: self.requests,
            errors: self.errors,
            elapsed: self.elapsed,
            percentiles_us: [0.50, 0.90, 0.99, 0.999]
                .map(|quantile| self.latency_us.value_at_quantile(quantile)),
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// What became of one request.
enum Exchange {
    /// The connection was closed before the request went out (a server may close a
    /// kept-alive connection between requests, as nginx does after `keepalive_requests`):
    /// reconnect and send it then; not an error.
    NotSent,
    /// Sent, but no complete answer came back.
    Failed,
    Answered(u16),
}

/// Sends one request and reads the whole answer.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> Exchange {
    if sender.ready().await.is_err() {
        return Exchange::NotSent;
    }
    let Ok(response) = sender.send_request(request).await else {
        return Exchange::Failed;
    };
    let status = response.status().as_u16();
    match response.into_body().collect().await {
        Ok(_) => Exchange::Answered(status),
        Err(_) => Exchange::Failed,
    }
}

/// Whether `GET path` answers 200 right now.
pub async fn probe(addr: SocketAddr, path: &str) -> bool {
    let Some(mut sender) = connect(addr).await else {
        return false;
    };
    let attempt = exchange(&mut sender, RequestSpec::get(path).build(addr));
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Exchange::Answered(200))
    )
}

/// Sends one request on a fresh connection and returns status and body (for set-up steps).
pub async fn once(addr: SocketAddr, spec: &RequestSpec) -> Option<(u16, Bytes)> {
    let mut sender = connect(addr).await?;
    sender.ready().await.ok()?;
    let response = sender.send_request(spec.build(addr)).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

/// Runs `spec` against `addr` for `duration` or `max_requests`, whichever ends first.
pub async fn run(
    addr: SocketAddr,
    spec: &RequestSpec,
    mode: Mode,
    duration: Duration,
    max_requests: u64,
) -> LoadResult {
    let connections = mode.connections();
    let budget = Arc::new(AtomicU64::new(max_requests));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..connections)
        .map(|worker| {
            let spec = spec.clone();
            let budget = Arc::clone(&budget);
            // Worker w sends requests w, w + N, w + 2N … of the global schedule.
            let schedule = match mode {
                Mode::Open { rate, .. } => Some((
                    Duration::from_secs_f64(connections as f64 / rate),
                    Duration::from_secs_f64(worker as f64 / rate),
                )),
                Mode::Closed { .. } => None,
            };
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut done, mut errors) = (0u64, 0u64);
                let mut sender = connect(addr).await;
                for i in 0u32.. {
                    let due = match schedule {
                        Some((interval, offset)) => started + offset + interval * i,
                        None => Instant::now(),
                    };
                    if due >= deadline
                        || budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                                left.checked_sub(1)
                            })
                            .is_err()
                    {
                        break;
                    }
                    // Closed loop sends at once: a timer for a deadline already passed would
                    // still go through the timer wheel on every request.
                    if schedule.is_some() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    // One reconnect for a connection the server closed while idle; the
                    // request's latency still counts from when it was due.
                    let mut outcome = Exchange::NotSent;
                    for _ in 0..2 {
                        outcome = match sender.as_mut() {
                            Some(s) => exchange(s, spec.build(addr)).await,
                            None => Exchange::NotSent,
                        };
                        if !matches!(outcome, Exchange::NotSent) {
                            break;
                        }
                        sender = connect(addr).await;
                    }
                    match outcome {
                        Exchange::Answered(status) if (200..300).contains(&status) => {
                            let micros = due.elapsed().as_micros().max(1) as u64;
                            let _ = latency.record(micros.min(100_000_000));
                            done += 1;
                        }
                        Exchange::Answered(_) => {
                            done += 1;
                            errors += 1;
                        }
                        Exchange::NotSent | Exchange::Failed => {
                            errors += 1;
                            sender = connect(addr).await;
                        }
                    }
                }
                (latency, done, errors)
            })
        })
        .collect();
    let mut result = LoadResult {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: histogram(),
    };
    for worker in workers {
        if let Ok((latency, done, errors)) = worker.await {
            let _ = result.latency_us.add(latency);
            result.requests += done;
            result.errors += errors;
        }
    }
    result.elapsed = started.elapsed();
    result
}
