//! What is measured and in which order: every endpoint, closed and open loop, every
//! configuration in alternation round after round, then the login-flood scenario.

use std::time::Duration;

use serde_json::json;

use crate::fleet::{Configuration, Fleet};
use crate::load::{self, LoadResult, Mode, RequestSpec};
use crate::procs::Server;

#[derive(Clone, Debug)]
pub struct Settings {
    pub quick: bool,
    pub rounds: usize,
    pub duration: Duration,
    pub connections: usize,
    /// The open-loop rate of the light endpoints (login gets a fortieth of it).
    pub rate: f64,
    /// A bound on requests per run, whatever the duration.
    pub max_requests: u64,
}

impl Settings {
    pub fn full() -> Self {
        Self {
            quick: false,
            rounds: 3,
            duration: Duration::from_secs(3),
            connections: 32,
            rate: 2_000.0,
            max_requests: 2_000_000,
        }
    }

    pub fn quick() -> Self {
        Self {
            quick: true,
            rounds: 1,
            duration: Duration::from_millis(250),
            connections: 8,
            rate: 400.0,
            max_requests: 20_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Verify,
    Generate,
    Login,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Health,
        Endpoint::Verify,
        Endpoint::Generate,
        Endpoint::Login,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Health => "/health",
            Endpoint::Verify => "/api/auth/verify",
            Endpoint::Generate => "/api/ai/generate",
            Endpoint::Login => "/api/auth/login",
        }
    }

    fn request(self, token: &str) -> RequestSpec {
        let bearer = format!("Bearer {token}");
        match self {
            Endpoint::Health => RequestSpec::get("/health"),
            Endpoint::Verify => RequestSpec::post_json("/api/auth/verify", json!({}))
                .header("authorization", &bearer),
            Endpoint::Generate => RequestSpec::post_json(
                "/api/ai/generate",
                json!({"prompt": "Write a haiku about canaries", "maxTokens": 32}),
            )
            .header("authorization", &bearer),
            Endpoint::Login => RequestSpec::post_json("/api/auth/login", login_body()),
        }
    }

    /// Login is argon2-bound (tens of ms of CPU each): fewer connections, a lower rate.
    fn modes(self, settings: &Settings) -> [Mode; 2] {
        let (connections, rate) = match self {
            Endpoint::Login => (
                (settings.connections / 4).max(2),
                (settings.rate / 40.0).max(5.0),
            ),
            _ => (settings.connections, settings.rate),
        };
        [
            Mode::Closed { connections },
            Mode::Open {
                rate,
                connections: connections.min(16),
            },
        ]
    }
}

fn login_body() -> serde_json::Value {
    json!({"email": "demo@example.com", "password": "demo-password"})
}

pub fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Closed { connections } => format!("closed loop, {connections} connections"),
        Mode::Open { rate, connections } => {
            format!("open loop, {rate:.0} req/s over {connections} connections")
        }
    }
}

/// One run of one configuration.
#[derive(Clone, Debug)]
pub struct Sample {
    pub rps: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub requests: u64,
    pub errors: u64,
    /// CPU seconds per 1,000 requests of the process in front (proxy, nginx, haproxy).
    pub front_cpu_per_1k: Option<f64>,
    /// CPU seconds per 1,000 requests of the backend(s).
    pub backend_cpu_per_1k: f64,
}

/// All samples of one configuration under one endpoint and mode.
#[derive(Clone, Debug)]
pub struct Series {
    pub endpoint: Endpoint,
    pub mode: Mode,
    pub configuration: &'static str,
    pub samples: Vec<Sample>,
}

pub struct FloodResult {
    pub backend: &'static str,
    pub alone: Sample,
    pub flooded: Sample,
    pub logins_during_flood: u64,
}

pub struct Measurements {
    pub series: Vec<Series>,
    pub floods: Vec<FloodResult>,
    /// Peak resident memory (KiB) of each process in front, at the end.
    pub peak_memory_kib: Vec<(&'static str, u64)>,
    pub total_requests: u64,
}

fn cpu(servers: &[&Server]) -> f64 {
    servers.iter().map(|s| s.cpu_seconds()).sum()
}

async fn measure(
    config: &Configuration<'_>,
    spec: &RequestSpec,
    mode: Mode,
    settings: &Settings,
) -> Sample {
    let front: Vec<&Server> = config.front.into_iter().collect();
    let (front_before, backend_before) = (cpu(&front), cpu(&config.backends));
    let result = load::run(
        config.entry.addr,
        spec,
        mode,
        settings.duration,
        settings.max_requests,
    )
    .await;
    let (front_after, backend_after) = (cpu(&front), cpu(&config.backends));
    sample(
        &result,
        config.front.map(|_| front_after - front_before),
        backend_after - backend_before,
    )
}

fn sample(result: &LoadResult, front_cpu: Option<f64>, backend_cpu: f64) -> Sample {
    let per_1k = |seconds: f64| seconds * 1000.0 / result.requests.max(1) as f64;
    Sample {
        rps: result.rps(),
        p50: result.percentile_ms(0.50),
        p90: result.percentile_ms(0.90),
        p99: result.percentile_ms(0.99),
        p999: result.percentile_ms(0.999),
        requests: result.requests,
        errors: result.errors,
        front_cpu_per_1k: front_cpu.map(per_1k),
        backend_cpu_per_1k: per_1k(backend_cpu),
    }
}

/// Logs in once (on the legacy backend) for the token verify and generate use.
async fn token(fleet: &Fleet) -> Option<String> {
    let spec = RequestSpec::post_json("/api/auth/login", login_body());
    let (status, body) = load::once(fleet.legacy.addr, &spec).await?;
    if status != 200 {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    value["token"].as_str().map(str::to_owned)
}

pub async fn run(
    fleet: &Fleet,
    settings: &Settings,
    progress: impl Fn(&str),
) -> Result<Measurements, crate::BenchError> {
    let token = token(fleet).await.ok_or(crate::BenchError::Login)?;
    let configurations = fleet.configurations();
    let mut series = Vec::new();
    let mut total_requests = 0;
    for endpoint in Endpoint::ALL {
        let spec = endpoint.request(&token);
        for mode in endpoint.modes(settings) {
            let first = series.len();
            for configuration in &configurations {
                series.push(Series {
                    endpoint,
                    mode,
                    configuration: configuration.name,
                    samples: Vec::new(),
                });
            }
            // A B C … A B C …: a burst of noise hits every configuration, not just one.
            for round in 0..settings.rounds {
                for (i, configuration) in configurations.iter().enumerate() {
                    progress(&format!(
                        "{} · {} · {} · round {}/{}",
                        endpoint.path(),
                        mode_name(mode),
                        configuration.name,
                        round + 1,
                        settings.rounds
                    ));
                    let sample = measure(configuration, &spec, mode, settings).await;
                    total_requests += sample.requests;
                    series[first + i].samples.push(sample);
                }
            }
        }
    }
    let floods = login_floods(fleet, settings, &token, &progress).await;
    total_requests += floods
        .iter()
        .map(|f| f.alone.requests + f.flooded.requests + f.logins_during_flood)
        .sum::<u64>();
    let mut peak_memory_kib = vec![
        ("proxy (0 %)", fleet.proxy_0.peak_rss_kib()),
        ("proxy (50 %)", fleet.proxy_50.peak_rss_kib()),
        ("proxy (100 %)", fleet.proxy_100.peak_rss_kib()),
        (
            "proxy (50 %, rollout judging)",
            fleet.proxy_rollout.peak_rss_kib(),
        ),
    ];
    if let Some(nginx) = &fleet.nginx {
        peak_memory_kib.push(("nginx (master + workers)", nginx.peak_rss_kib()));
    }
    if let Some(haproxy) = &fleet.haproxy {
        peak_memory_kib.push(("haproxy", haproxy.peak_rss_kib()));
    }
    Ok(Measurements {
        series,
        floods,
        peak_memory_kib,
        total_requests,
    })
}

/// Verify's latency on each backend, open loop, alone and then under a login flood.
async fn login_floods(
    fleet: &Fleet,
    settings: &Settings,
    token: &str,
    progress: &impl Fn(&str),
) -> Vec<FloodResult> {
    let verify = Endpoint::Verify.request(token);
    let login = Endpoint::Login.request(token);
    let mode = Mode::Open {
        rate: settings.rate / 4.0,
        connections: 8,
    };
    let flood = Mode::Closed {
        connections: settings.connections / 2,
    };
    let mut results = Vec::new();
    for (name, backend) in [("legacy", &fleet.legacy), ("new", &fleet.new)] {
        progress(&format!("login flood · {name}"));
        let alone = load::run(
            backend.addr,
            &verify,
            mode,
            settings.duration * 2,
            settings.max_requests,
        )
        .await;
        let (flooded, logins) = tokio::join!(
            load::run(
                backend.addr,
                &verify,
                mode,
                settings.duration * 2,
                settings.max_requests
            ),
            load::run(
                backend.addr,
                &login,
                flood,
                settings.duration * 2,
                settings.max_requests
            ),
        );
        results.push(FloodResult {
            backend: name,
            alone: sample(&alone, None, 0.0),
            flooded: sample(&flooded, None, 0.0),
            logins_during_flood: logins.requests,
        });
    }
    results
}
