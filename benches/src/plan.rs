//! What is measured and in which order: every endpoint, closed loop (wrk when installed)
//! and open loop (the harness's own generator), every configuration in alternation round
//! after round; then the generator check, the pinned generate-against-verify scenario and
//! the login-flood scenario.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::fleet::{Backend, Configuration, Fleet};
use crate::load::{self, Figures, Mode, RequestSpec};
use crate::procs::{Server, Usage};
use crate::wrk::{Shape, Wrk};

#[derive(Clone, Debug)]
pub struct Settings {
    pub quick: bool,
    pub rounds: usize,
    pub duration: Duration,
    pub connections: usize,
    /// The open-loop rate of the light endpoints (login gets a fortieth of it).
    pub rate: f64,
    /// A bound on requests per run of the own generator, whatever the duration (wrk is
    /// bounded by its whole seconds, and killed ten seconds past them).
    pub max_requests: u64,
    /// Whether wrk is used at all where it is installed (`--no-wrk` says no: the harness's
    /// own generator drives everything, as on a machine without wrk).
    pub wrk: bool,
    /// Whether wrk drives the closed-loop tables; the generator check and the pinned
    /// scenario use it whenever it is used at all.
    pub wrk_tables: bool,
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
            wrk: true,
            wrk_tables: true,
        }
    }

    /// wrk runs whole seconds: in quick mode it drives only the generator check and the
    /// pinned scenario, so that the whole run stays well under a minute.
    pub fn quick() -> Self {
        Self {
            quick: true,
            rounds: 1,
            duration: Duration::from_millis(250),
            connections: 8,
            rate: 400.0,
            max_requests: 20_000,
            wrk: true,
            wrk_tables: false,
        }
    }
}

/// Connections and wrk threads of the pinned scenario (issue 12's `wrk -t2 -c50`).
const PINNED_CONNECTIONS: usize = 50;
const PINNED_WRK_THREADS: usize = 2;

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
                json!({"prompt": "Write a haiku about canaries", "maxTokens": 64}),
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

/// Which generator drove a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `wrk -tTHREADS`, pinned on `cpu` when given.
    Wrk { threads: usize, cpu: Option<usize> },
    /// The harness's own generator (`load`), in this process, unpinned.
    Own,
}

impl Driver {
    pub fn describe(self) -> String {
        match self {
            Driver::Wrk {
                threads,
                cpu: Some(cpu),
            } => format!("`wrk -t{threads}` pinned on CPU {cpu}"),
            Driver::Wrk { threads, cpu: None } => format!("`wrk -t{threads}`"),
            Driver::Own => "the harness's own generator".into(),
        }
    }
}

/// What one process (tree) spent per request over one run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerRequest {
    pub user_us: f64,
    pub system_us: f64,
    pub context_switches: f64,
}

impl PerRequest {
    pub fn cpu_us(&self) -> f64 {
        self.user_us + self.system_us
    }

    fn of(usage: Usage, requests: u64) -> Self {
        let requests = requests.max(1) as f64;
        Self {
            user_us: usage.user_seconds * 1e6 / requests,
            system_us: usage.system_seconds * 1e6 / requests,
            context_switches: usage.context_switches as f64 / requests,
        }
    }
}

/// One run of one configuration. Latencies in milliseconds.
#[derive(Clone, Debug)]
pub struct Sample {
    pub rps: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub requests: u64,
    pub errors: u64,
    /// The process in front (proxy, nginx's master and workers, haproxy), if any.
    pub front: Option<PerRequest>,
    /// The backend(s) serving.
    pub backend: PerRequest,
}

/// All samples of one configuration under one endpoint and mode.
#[derive(Clone, Debug)]
pub struct Series {
    pub endpoint: Endpoint,
    pub mode: Mode,
    pub driver: Driver,
    pub configuration: &'static str,
    pub samples: Vec<Sample>,
}

/// The same direct-backend run driven by wrk and by the harness's own generator, in
/// alternation: were the own generator much slower, it would have been the bottleneck.
pub struct GeneratorCheck {
    pub endpoint: Endpoint,
    pub connections: usize,
    pub wrk: Vec<Sample>,
    pub own: Vec<Sample>,
}

/// One endpoint on one backend process pinned on its own CPU, the generator on another.
pub struct PinnedSeries {
    pub backend: &'static str,
    pub endpoint: Endpoint,
    pub samples: Vec<Sample>,
}

/// Where the pinned scenario ran.
pub struct Pinning {
    /// The server's CPU, or `None` when `taskset` or a second CPU is missing.
    pub server_cpu: Option<usize>,
    pub driver: Driver,
    pub connections: usize,
}

pub struct FloodResult {
    pub backend: &'static str,
    pub alone: Sample,
    pub flooded: Sample,
    pub logins_during_flood: u64,
}

pub struct Measurements {
    pub series: Vec<Series>,
    pub generator_checks: Vec<GeneratorCheck>,
    pub pinned: Vec<PinnedSeries>,
    pub pinning: Pinning,
    pub floods: Vec<FloodResult>,
    /// Peak resident memory (KiB) of each process in front, at the end.
    pub peak_memory_kib: Vec<(&'static str, u64)>,
    pub total_requests: u64,
    pub wrk: WrkUse,
}

/// Whether wrk drove what it could, and if not, why the harness's generator stood in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WrkUse {
    Used { path: String },
    NotInstalled,
    Declined,
}

fn usage(servers: &[&Server]) -> Usage {
    servers.iter().map(|s| s.usage()).sum()
}

fn sample(figures: &Figures, front: Option<Usage>, backend: Usage) -> Sample {
    let [p50, p90, p99, p999] = figures.percentiles_us.map(|us| us as f64 / 1000.0);
    Sample {
        rps: figures.rps(),
        p50,
        p90,
        p99,
        p999,
        requests: figures.requests,
        errors: figures.errors,
        front: front.map(|usage| PerRequest::of(usage, figures.requests)),
        backend: PerRequest::of(backend, figures.requests),
    }
}

/// Drives load with wrk or with the harness's own generator.
struct Runner<'a> {
    wrk: Option<&'a Wrk>,
    /// Where wrk's script is written.
    dir: &'a Path,
    settings: &'a Settings,
}

impl Runner<'_> {
    /// wrk for closed loop when asked and installed; the own generator otherwise.
    async fn drive(
        &self,
        driver: Driver,
        addr: std::net::SocketAddr,
        spec: &RequestSpec,
        mode: Mode,
        duration: Duration,
    ) -> Result<Figures, crate::BenchError> {
        match (driver, self.wrk, mode) {
            (Driver::Wrk { threads, cpu }, Some(wrk), Mode::Closed { connections }) => {
                let shape = Shape {
                    threads,
                    connections,
                    cpu,
                };
                let summary = crate::wrk::run(wrk, self.dir, addr, spec, shape, duration).await?;
                Ok(summary.figures())
            }
            _ => Ok(
                load::run(addr, spec, mode, duration, self.settings.max_requests)
                    .await
                    .figures(),
            ),
        }
    }

    /// One run against `config`, with what the processes in front and behind spent.
    async fn measure(
        &self,
        config: &Configuration<'_>,
        spec: &RequestSpec,
        mode: Mode,
        driver: Driver,
    ) -> Result<Sample, crate::BenchError> {
        let front: Vec<&Server> = config.front.into_iter().collect();
        let (front_before, backend_before) = (usage(&front), usage(&config.backends));
        let figures = self
            .drive(
                driver,
                config.entry.addr,
                spec,
                mode,
                self.settings.duration,
            )
            .await?;
        let (front_after, backend_after) = (usage(&front), usage(&config.backends));
        Ok(sample(
            &figures,
            config.front.map(|_| front_after.since(front_before)),
            backend_after.since(backend_before),
        ))
    }

    /// The driver of the closed-loop tables.
    fn tables_driver(&self) -> Driver {
        if self.wrk.is_some() && self.settings.wrk_tables {
            Driver::Wrk {
                threads: 1,
                cpu: None,
            }
        } else {
            Driver::Own
        }
    }

    fn duration_of(&self, driver: Driver) -> Duration {
        match driver {
            Driver::Wrk { .. } if self.wrk.is_some() => {
                Duration::from_secs(crate::wrk::whole_seconds(self.settings.duration))
            }
            _ => self.settings.duration,
        }
    }
}

fn check_endpoints(settings: &Settings) -> &'static [Endpoint] {
    if settings.quick {
        &[Endpoint::Health]
    } else {
        &[Endpoint::Health, Endpoint::Verify]
    }
}

const PINNED_ENDPOINTS: [Endpoint; 2] = [Endpoint::Verify, Endpoint::Generate];
const PINNED_BACKENDS: [Backend; 2] = [Backend::Legacy, Backend::New];

/// How long `run` will take with these settings, servers' start-up aside.
pub fn expected_duration(settings: &Settings, configurations: usize, wrk: bool) -> Duration {
    let run = settings.duration;
    let wrk_run = Duration::from_secs(crate::wrk::whole_seconds(run));
    let closed = if wrk && settings.wrk_tables {
        wrk_run
    } else {
        run
    };
    let rounds = settings.rounds as u32;
    let tables = (closed + run) * (Endpoint::ALL.len() * configurations) as u32 * rounds;
    let check = if wrk {
        wrk_run * 2 * check_endpoints(settings).len() as u32 * rounds
    } else {
        Duration::ZERO
    };
    let pinned = if wrk { wrk_run } else { run }
        * (PINNED_BACKENDS.len() * PINNED_ENDPOINTS.len()) as u32
        * rounds;
    // Per backend: verify alone, then verify beside the flood, each twice the run.
    let floods = run * 4 * 2;
    tables + check + pinned + floods
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
    wrk: Option<&Wrk>,
    progress: impl Fn(&str),
) -> Result<Measurements, crate::BenchError> {
    let token = token(fleet).await.ok_or(crate::BenchError::Login)?;
    let runner = Runner {
        wrk,
        dir: fleet.dir.path(),
        settings,
    };
    let configurations = fleet.configurations();
    let mut series = Vec::new();
    let mut total_requests = 0;
    for endpoint in Endpoint::ALL {
        let spec = endpoint.request(&token);
        for mode in endpoint.modes(settings) {
            let driver = match mode {
                Mode::Closed { .. } => runner.tables_driver(),
                Mode::Open { .. } => Driver::Own,
            };
            let first = series.len();
            for configuration in &configurations {
                series.push(Series {
                    endpoint,
                    mode,
                    driver,
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
                    let sample = runner.measure(configuration, &spec, mode, driver).await?;
                    total_requests += sample.requests;
                    series[first + i].samples.push(sample);
                }
            }
        }
    }
    let generator_checks = generator_checks(fleet, &runner, &token, &progress).await?;
    total_requests += generator_checks
        .iter()
        .flat_map(|c| c.wrk.iter().chain(&c.own))
        .map(|s| s.requests)
        .sum::<u64>();
    let (pinned, pinning) = pinned(fleet, &runner, &token, &progress).await?;
    total_requests += pinned
        .iter()
        .flat_map(|p| &p.samples)
        .map(|s| s.requests)
        .sum::<u64>();
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
        ("Pingora alone", fleet.pingora_floor.peak_rss_kib()),
    ];
    if let Some(nginx) = &fleet.nginx {
        peak_memory_kib.push(("nginx (master + workers)", nginx.peak_rss_kib()));
    }
    if let Some(haproxy) = &fleet.haproxy {
        peak_memory_kib.push(("haproxy", haproxy.peak_rss_kib()));
    }
    Ok(Measurements {
        series,
        generator_checks,
        pinned,
        pinning,
        floods,
        peak_memory_kib,
        total_requests,
        wrk: match wrk {
            Some(wrk) => WrkUse::Used {
                path: wrk.program.display().to_string(),
            },
            None if settings.wrk => WrkUse::NotInstalled,
            None => WrkUse::Declined,
        },
    })
}

/// The legacy backend alone, closed loop, wrk and the own generator in alternation with the
/// same connections for the same whole seconds. Nothing to compare without wrk.
async fn generator_checks(
    fleet: &Fleet,
    runner: &Runner<'_>,
    token: &str,
    progress: &impl Fn(&str),
) -> Result<Vec<GeneratorCheck>, crate::BenchError> {
    if runner.wrk.is_none() {
        return Ok(Vec::new());
    }
    let settings = runner.settings;
    let connections = settings.connections;
    let mode = Mode::Closed { connections };
    let wrk = Driver::Wrk {
        threads: 1,
        cpu: None,
    };
    let duration = runner.duration_of(wrk);
    let mut checks = Vec::new();
    for &endpoint in check_endpoints(settings) {
        let spec = endpoint.request(token);
        let mut check = GeneratorCheck {
            endpoint,
            connections,
            wrk: Vec::new(),
            own: Vec::new(),
        };
        for round in 0..settings.rounds {
            for driver in [wrk, Driver::Own] {
                progress(&format!(
                    "generator check · {} · {} · round {}/{}",
                    endpoint.path(),
                    driver.describe(),
                    round + 1,
                    settings.rounds
                ));
                let before = fleet.legacy.usage();
                let figures = runner
                    .drive(driver, fleet.legacy.addr, &spec, mode, duration)
                    .await?;
                let spent = fleet.legacy.usage().since(before);
                let sample = sample(&figures, None, spent);
                match driver {
                    Driver::Wrk { .. } => check.wrk.push(sample),
                    Driver::Own => check.own.push(sample),
                }
            }
        }
        checks.push(check);
    }
    Ok(checks)
}

/// Generate against verify on each backend, each on a backend process of its own pinned on
/// one CPU, wrk pinned on another (`wrk -t2 -c50`): what a generate costs next to the
/// cheapest authenticated call, without the two processes fighting over a core.
async fn pinned(
    fleet: &Fleet,
    runner: &Runner<'_>,
    token: &str,
    progress: &impl Fn(&str),
) -> Result<(Vec<PinnedSeries>, Pinning), crate::BenchError> {
    let settings = runner.settings;
    let cpus = crate::procs::allowed_cpus();
    let taskset = crate::procs::installed("taskset");
    let placement = match (&taskset, cpus.as_slice()) {
        (Some(taskset), [server, generator, ..]) => Some((taskset.as_path(), *server, *generator)),
        _ => None,
    };
    let driver = match runner.wrk {
        Some(_) => Driver::Wrk {
            threads: PINNED_WRK_THREADS,
            cpu: placement.map(|(_, _, generator)| generator),
        },
        None => Driver::Own,
    };
    let mode = Mode::Closed {
        connections: PINNED_CONNECTIONS,
    };
    let duration = runner.duration_of(driver);
    let mut all = Vec::new();
    for backend in PINNED_BACKENDS {
        let server = fleet
            .start_extra(
                backend,
                placement.map(|(taskset, server, _)| (taskset, server)),
            )
            .await?;
        // A fresh process: one request of each kind first, so that opening the database and
        // the first statements are not charged to the first round.
        for endpoint in PINNED_ENDPOINTS {
            let _ = load::once(server.addr, &endpoint.request(token)).await;
        }
        let first = all.len();
        for endpoint in PINNED_ENDPOINTS {
            all.push(PinnedSeries {
                backend: backend.name(),
                endpoint,
                samples: Vec::new(),
            });
        }
        for round in 0..settings.rounds {
            for (i, endpoint) in PINNED_ENDPOINTS.into_iter().enumerate() {
                progress(&format!(
                    "pinned · {} · {} · round {}/{}",
                    backend.name(),
                    endpoint.path(),
                    round + 1,
                    settings.rounds
                ));
                let before = server.usage();
                let figures = runner
                    .drive(
                        driver,
                        server.addr,
                        &endpoint.request(token),
                        mode,
                        duration,
                    )
                    .await?;
                let spent = server.usage().since(before);
                all[first + i].samples.push(sample(&figures, None, spent));
            }
        }
    }
    Ok((
        all,
        Pinning {
            server_cpu: placement.map(|(_, server, _)| server),
            driver,
            connections: PINNED_CONNECTIONS,
        },
    ))
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
            alone: sample(&alone.figures(), None, Usage::default()),
            flooded: sample(&flooded.figures(), None, Usage::default()),
            logins_during_flood: logins.requests,
        });
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_run_with_the_defaults_is_bounded_well_under_fifteen_minutes() {
        // Both backends, four proxies, nginx and haproxy: eight configurations.
        let full = expected_duration(&Settings::full(), 8, true);
        assert!(full < Duration::from_secs(12 * 60), "{full:?}");
        assert!(full > Duration::from_secs(5 * 60), "{full:?}");
        let quick = expected_duration(&Settings::quick(), 8, true);
        assert!(quick < Duration::from_secs(30), "{quick:?}");
    }

    #[test]
    fn per_request_figures_divide_by_the_requests_served() {
        let usage = Usage {
            user_seconds: 0.3,
            system_seconds: 0.1,
            context_switches: 500,
        };
        let per = PerRequest::of(usage, 10_000);
        assert!((per.user_us - 30.0).abs() < 1e-9);
        assert!((per.system_us - 10.0).abs() < 1e-9);
        assert!((per.cpu_us() - 40.0).abs() < 1e-9);
        assert!((per.context_switches - 0.05).abs() < 1e-12);
    }
}
