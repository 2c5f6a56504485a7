//! `benches/results.md`: how it was measured (the machine, the commit, the command, which
//! generator drove which table, what was pinned), issue 12's targets and whether each holds,
//! a table per endpoint and mode (medians over rounds), the generator check, the pinned
//! scenario, the ratios, the login floods and the peak memory.

use std::fmt::Write as _;

use crate::fleet::PINGORA_FLOOR;
use crate::load::Mode;
use crate::plan::{
    Driver, Endpoint, FloodResult, Measurements, PerRequest, Sample, Series, Settings, WrkUse,
    mode_name,
};

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn median_per_request(all: &[PerRequest]) -> PerRequest {
    let pick = |f: fn(&PerRequest) -> f64| median(all.iter().map(f).collect());
    PerRequest {
        user_us: pick(|p| p.user_us),
        system_us: pick(|p| p.system_us),
        context_switches: pick(|p| p.context_switches),
    }
}

/// The median of each figure over a series' rounds.
#[derive(Clone, Debug)]
pub struct Summary {
    pub rps: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub errors: u64,
    pub requests: u64,
    pub front: Option<PerRequest>,
    pub backend: PerRequest,
}

pub fn summarise(samples: &[Sample]) -> Summary {
    let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let backends: Vec<PerRequest> = samples.iter().map(|s| s.backend).collect();
    Summary {
        rps: pick(|s| s.rps),
        p50: pick(|s| s.p50),
        p90: pick(|s| s.p90),
        p99: pick(|s| s.p99),
        p999: pick(|s| s.p999),
        errors: samples.iter().map(|s| s.errors).sum(),
        requests: samples.iter().map(|s| s.requests).sum(),
        front: samples
            .iter()
            .map(|s| s.front)
            .collect::<Option<Vec<_>>>()
            .filter(|all| !all.is_empty())
            .map(|all| median_per_request(&all)),
        backend: median_per_request(&backends),
    }
}

pub struct Context {
    pub machine: String,
    pub commit: String,
    pub command_line: String,
    pub binaries: String,
    pub date: String,
    pub plot_file: String,
}

fn find(series: &[Series], endpoint: Endpoint, closed: bool, name: &str) -> Option<Summary> {
    series
        .iter()
        .find(|s| {
            s.endpoint == endpoint
                && s.configuration == name
                && matches!(s.mode, Mode::Closed { .. }) == closed
        })
        .map(|s| summarise(&s.samples))
}

fn ms(value: f64) -> String {
    if value.is_nan() {
        "–".into()
    } else if value < 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.1}")
    }
}

fn cpu_split(value: Option<PerRequest>) -> String {
    value.map_or("–".into(), |p| {
        format!("{:.1} ({:.1} + {:.1})", p.cpu_us(), p.user_us, p.system_us)
    })
}

fn switches(value: Option<PerRequest>) -> String {
    value.map_or("–".into(), |p| format!("{:.2}", p.context_switches))
}

fn ratio_of(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

fn ratio(a: f64, b: f64) -> String {
    ratio_of(a, b).map_or("–".into(), |r| format!("{r:.2}×"))
}

/// What a target asks of its measured value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// A ratio of at least this.
    AtLeast(f64),
    /// A ratio of at most this.
    AtMost(f64),
    /// A ratio within this of 1 either way (0.05: 0.95× to 1.05×).
    Within(f64),
    /// Mebibytes, strictly under this.
    MibUnder(f64),
}

impl Bound {
    pub fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtLeast(x) => value >= x,
            Bound::AtMost(x) => value <= x,
            Bound::Within(x) => (value - 1.0).abs() <= x,
            Bound::MibUnder(x) => value < x,
        }
    }

    fn describe(self) -> String {
        match self {
            Bound::AtLeast(x) => format!("≥ {x}×"),
            Bound::AtMost(x) => format!("≤ {x}×"),
            Bound::Within(x) => format!("{:.2}× to {:.2}×", 1.0 - x, 1.0 + x),
            Bound::MibUnder(x) => format!("< {x} MiB"),
        }
    }

    fn value(self, value: f64) -> String {
        match self {
            Bound::MibUnder(_) => format!("{value:.1} MiB"),
            _ => format!("{value:.2}×"),
        }
    }
}

/// One of issue 12's targets: what is compared, the bound, and the measured value if the
/// run had what it needs (nginx, say).
pub struct Target {
    pub what: String,
    pub bound: Bound,
    pub measured: Option<f64>,
}

impl Target {
    fn new(what: impl Into<String>, bound: Bound, measured: Option<f64>) -> Self {
        Self {
            what: what.into(),
            bound,
            measured,
        }
    }

    pub fn verdict(&self) -> &'static str {
        match self.measured {
            Some(value) if self.bound.holds(value) => "holds",
            Some(_) => "**does not hold**",
            None => "not measured",
        }
    }
}

const PROXY: &str = "proxy → legacy (0 %)";
const PROXY_50: &str = "proxy at 50 %";
const NGINX: &str = "nginx → legacy";
const HAPROXY: &str = "haproxy → legacy";

/// Issue 12's targets against this run's medians.
pub fn targets(m: &Measurements) -> Vec<Target> {
    let mut all = Vec::new();
    for endpoint in [Endpoint::Health, Endpoint::Verify] {
        let get = |name: &str| find(&m.series, endpoint, true, name);
        let path = endpoint.path();
        let (proxy, proxy_50) = (get(PROXY), get(PROXY_50));
        let (nginx, haproxy) = (get(NGINX), get(HAPROXY));
        let both = |a: &Option<Summary>, b: &Option<Summary>, f: fn(&Summary) -> Option<f64>| {
            ratio_of(f(a.as_ref()?)?, f(b.as_ref()?)?)
        };
        let rps = |s: &Summary| Some(s.rps);
        let cpu = |s: &Summary| s.front.map(|f| f.cpu_us());
        all.push(Target::new(
            format!("`{path}` proxy / nginx, throughput"),
            Bound::AtLeast(0.75),
            both(&proxy, &nginx, rps),
        ));
        all.push(Target::new(
            format!("`{path}` proxy / haproxy, throughput"),
            Bound::AtLeast(0.75),
            both(&proxy, &haproxy, rps),
        ));
        all.push(Target::new(
            format!("`{path}` proxy / nginx, CPU per request in front"),
            Bound::AtMost(1.7),
            both(&proxy, &nginx, cpu),
        ));
        all.push(Target::new(
            format!("`{path}` proxy / nginx, p99"),
            Bound::AtMost(1.5),
            both(&proxy, &nginx, |s| Some(s.p99)),
        ));
        all.push(Target::new(
            format!("`{path}` proxy at 50 % / at 0 %, throughput"),
            Bound::Within(0.05),
            both(&proxy_50, &proxy, rps),
        ));
        all.push(Target::new(
            format!("`{path}` proxy at 50 % / at 0 %, CPU per request in front"),
            Bound::Within(0.05),
            both(&proxy_50, &proxy, cpu),
        ));
    }
    let proxies = m
        .peak_memory_kib
        .iter()
        .filter(|(name, _)| name.starts_with("proxy"));
    all.push(Target::new(
        "proxy peak RSS under load (the largest of the four proxies)",
        Bound::MibUnder(30.0),
        proxies
            .map(|(_, kib)| *kib as f64 / 1024.0)
            .reduce(f64::max),
    ));
    for backend in ["legacy", "new"] {
        let get = |endpoint: Endpoint| {
            m.pinned
                .iter()
                .find(|p| p.backend == backend && p.endpoint == endpoint)
                .map(|p| summarise(&p.samples))
        };
        let (generate, verify) = (get(Endpoint::Generate), get(Endpoint::Verify));
        let pair = generate.as_ref().zip(verify.as_ref());
        all.push(Target::new(
            format!("{backend}, pinned: generate / verify, throughput"),
            Bound::AtLeast(0.5),
            pair.and_then(|(g, v)| ratio_of(g.rps, v.rps)),
        ));
        all.push(Target::new(
            format!("{backend}, pinned: generate / verify, p99.9"),
            Bound::AtMost(3.0),
            pair.and_then(|(g, v)| ratio_of(g.p999, v.p999)),
        ));
    }
    for flood in &m.floods {
        all.push(Target::new(
            format!("{}: verify p99 during a login flood / alone", flood.backend),
            Bound::AtMost(2.0),
            ratio_of(flood.flooded.p99, flood.alone.p99),
        ));
    }
    for check in &m.generator_checks {
        let (own, wrk) = (summarise(&check.own), summarise(&check.wrk));
        all.push(Target::new(
            format!(
                "harness: own generator / wrk on legacy direct, `{}` throughput",
                check.endpoint.path()
            ),
            Bound::AtLeast(0.9),
            ratio_of(own.rps, wrk.rps),
        ));
    }
    all
}

/// Why wrk drove nothing, when it did not.
fn without_wrk(wrk: &WrkUse) -> Option<&'static str> {
    match wrk {
        WrkUse::Used { .. } => None,
        WrkUse::NotInstalled => {
            Some("**wrk is not installed**: `scripts/install --bench` installs it")
        }
        WrkUse::Declined => Some("**`--no-wrk`**"),
    }
}

fn driver_note(driver: Driver, wrk: &WrkUse, quick: bool) -> String {
    match (driver, wrk) {
        (Driver::Wrk { .. }, WrkUse::Used { path }) => {
            format!("{} (`{path}`)", driver.describe())
        }
        (_, WrkUse::Used { .. }) if quick => format!("{} (quick mode)", Driver::Own.describe()),
        (_, WrkUse::Used { .. }) => Driver::Own.describe(),
        (_, other) => format!(
            "{} ({})",
            Driver::Own.describe(),
            without_wrk(other).unwrap_or_default()
        ),
    }
}

pub fn markdown(m: &Measurements, settings: &Settings, context: &Context) -> String {
    let mut out = String::new();
    let wrk = &m.wrk;
    let closed_driver = m
        .series
        .iter()
        .find(|s| matches!(s.mode, Mode::Closed { .. }))
        .map_or(Driver::Own, |s| s.driver);
    let pinning = &m.pinning;
    let pinned_where = match pinning.server_cpu {
        Some(cpu) => format!(
            "each backend a process of its own started with `taskset -c {cpu}`, the generator {}",
            match pinning.driver {
                Driver::Wrk { cpu: Some(g), .. } => format!("pinned with `taskset -c {g}`"),
                _ => "unpinned".into(),
            }
        ),
        None => "**not pinned** (no `taskset`, or fewer than two CPUs allowed)".into(),
    };
    let _ = writeln!(out, "# Benchmark results\n");
    let _ = writeln!(
        out,
        "Measured by `benches` ({}) on {}.\n\n\
         - machine: {}\n\
         - commit: `{}`\n\
         - command: `{}`\n\
         - servers: started by the harness from `{}` on loopback ports it picked, `RUST_LOG=warn`; the proxies with the shipped defaults (every feature on), nginx with 2 workers and upstream keepalive, haproxy with `nbthread 2`, both in front of the same legacy backend as the proxy at 0 %\n\
         - each run: {:?} (wrk: whole seconds); {} round(s), configurations in alternation (A B C … A B C …) so that a burst of noise hits every configuration; figures are medians over rounds\n\
         - closed loop (peak throughput): driven by {}; nothing pinned: servers and generator share the cores as the scheduler places them, as they would on a host\n\
         - open loop: driven by the harness's own generator (hyper, in this process): wrk cannot hold a rate, it sends a connection's next request only when the last is answered; open-loop latency counts from each request's due time (no coordinated omission)\n\
         - the generator check runs both generators on the same direct-backend load, so a reader sees whether the own generator would have been the bottleneck\n\
         - pinned scenario: {}, {} connections\n\
         - latency in milliseconds; CPU in µs per request, user + system from `/proc/PID/stat` (fields 14 and 15) summed over the process tree (nginx: master and workers); context switches per request, voluntary + involuntary summed over `/proc/PID/task/*/status`\n",
        if settings.quick {
            "quick mode: too short to mean anything, proves the harness only"
        } else {
            "full run"
        },
        context.date,
        context.machine,
        context.commit,
        context.command_line,
        context.binaries,
        settings.duration,
        settings.rounds,
        driver_note(closed_driver, wrk, settings.quick),
        pinned_where,
        pinning.connections,
    );
    target_table(&mut out, m);
    let _ = writeln!(
        out,
        "![latency percentiles per configuration]({})\n",
        context.plot_file
    );
    let mut last_heading = String::new();
    for (i, series) in m.series.iter().enumerate() {
        let heading = format!(
            "## `{}` — {} — {}",
            series.endpoint.path(),
            mode_name(series.mode),
            match series.mode {
                Mode::Closed { .. } => driver_note(series.driver, wrk, settings.quick),
                Mode::Open { .. } => Driver::Own.describe(),
            }
        );
        if heading != last_heading {
            let _ = writeln!(out, "{heading}\n");
            let _ = writeln!(
                out,
                "| configuration | req/s | p50 | p90 | p99 | p99.9 | errors | front CPU µs/req (user + sys) | front ctx switches/req | backend CPU µs/req |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            last_heading = heading;
        }
        let s = summarise(&series.samples);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} / {} | {} | {} | {:.1} |",
            series.configuration,
            s.rps,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.p999),
            s.errors,
            s.requests,
            cpu_split(s.front),
            switches(s.front),
            s.backend.cpu_us(),
        );
        let next_differs = m.series.get(i + 1).is_none_or(|next| {
            next.endpoint != series.endpoint || mode_name(next.mode) != mode_name(series.mode)
        });
        if next_differs {
            let _ = writeln!(out);
        }
    }
    generator_checks(&mut out, m);
    pinned(&mut out, m);
    ratios(&mut out, m);
    floods(&mut out, &m.floods);
    let _ = writeln!(out, "## Peak memory\n\n| process | peak RSS |\n|---|---:|");
    for (name, kib) in &m.peak_memory_kib {
        let _ = writeln!(out, "| {name} | {:.1} MiB |", *kib as f64 / 1024.0);
    }
    out
}

fn target_table(out: &mut String, m: &Measurements) {
    let _ = writeln!(
        out,
        "## Targets (issue 12)\n\nProxy figures are the proxy at 0 % (in front of the legacy backend, like nginx and haproxy), closed loop; ratios of medians.\n\n| target | bound | measured | |\n|---|---:|---:|---|"
    );
    if let Some(why) = without_wrk(&m.wrk) {
        let _ = writeln!(
            out,
            "| *the closed-loop figures below were driven by the harness's own generator ({why}); the generator check could not tell whether it was the bottleneck* | | | |"
        );
    }
    for target in targets(m) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            target.what,
            target.bound.describe(),
            target
                .measured
                .map_or("–".into(), |v| target.bound.value(v)),
            target.verdict()
        );
    }
    let _ = writeln!(out);
}

fn generator_checks(out: &mut String, m: &Measurements) {
    let _ = writeln!(
        out,
        "## Generator check: the legacy backend alone, closed loop, both generators\n"
    );
    if let Some(why) = without_wrk(&m.wrk) {
        let _ = writeln!(
            out,
            "No wrk ({why}): nothing to check the own generator against; its closed-loop peaks may understate the servers.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Same connections, same whole seconds, in alternation. Own / wrk well under 0.9× would mean the own generator, not the server, set the peak.\n\n| endpoint | connections | wrk req/s | own req/s | own / wrk | wrk p99 | own p99 | backend CPU µs/req (wrk, own) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for check in &m.generator_checks {
        let (wrk, own) = (summarise(&check.wrk), summarise(&check.own));
        let _ = writeln!(
            out,
            "| `{}` | {} | {:.0} | {:.0} | {} | {} | {} | {:.1}, {:.1} |",
            check.endpoint.path(),
            check.connections,
            wrk.rps,
            own.rps,
            ratio(own.rps, wrk.rps),
            ms(wrk.p99),
            ms(own.p99),
            wrk.backend.cpu_us(),
            own.backend.cpu_us(),
        );
    }
    let _ = writeln!(out);
}

fn pinned(out: &mut String, m: &Measurements) {
    let _ = writeln!(
        out,
        "## Pinned: generate (local provider, `maxTokens` 64) against verify, each backend alone — {}\n\n| backend | endpoint | req/s | p50 | p99 | p99.9 | errors | backend CPU µs/req (user + sys) | ctx switches/req |\n|---|---|---:|---:|---:|---:|---:|---:|---:|",
        m.pinning.driver.describe()
    );
    for p in &m.pinned {
        let s = summarise(&p.samples);
        let _ = writeln!(
            out,
            "| {} | `{}` | {:.0} | {} | {} | {} | {} / {} | {} | {} |",
            p.backend,
            p.endpoint.path(),
            s.rps,
            ms(s.p50),
            ms(s.p99),
            ms(s.p999),
            s.errors,
            s.requests,
            cpu_split(Some(s.backend)),
            switches(Some(s.backend)),
        );
    }
    let _ = writeln!(out);
}

fn ratios(out: &mut String, m: &Measurements) {
    let _ = writeln!(
        out,
        "## Ratios (closed loop throughput, closed loop p99, CPU per request in front)\n"
    );
    let _ = writeln!(
        out,
        "| endpoint | comparison | throughput | p99 | front CPU µs/req |\n|---|---|---:|---:|---:|"
    );
    for endpoint in Endpoint::ALL {
        let get = |name: &str| find(&m.series, endpoint, true, name);
        let pairs = [
            (
                "new / legacy (direct)",
                get("new direct"),
                get("legacy direct"),
            ),
            (
                "proxy → legacy / legacy direct",
                get(PROXY),
                get("legacy direct"),
            ),
            (
                "proxy → new / new direct",
                get("proxy → new (100 %)"),
                get("new direct"),
            ),
            ("proxy at 50 % / proxy at 0 %", get(PROXY_50), get(PROXY)),
            (
                "rollout judging / proxy at 50 %",
                get("proxy at 50 %, rollout judging"),
                get(PROXY_50),
            ),
            ("our proxy / nginx", get(PROXY), get(NGINX)),
            ("our proxy / haproxy", get(PROXY), get(HAPROXY)),
            ("Pingora alone / nginx", get(PINGORA_FLOOR), get(NGINX)),
            ("our proxy / Pingora alone", get(PROXY), get(PINGORA_FLOOR)),
        ];
        for (label, a, b) in pairs {
            if let (Some(a), Some(b)) = (a, b) {
                let front_cpu = match (a.front, b.front) {
                    (Some(x), Some(y)) => ratio(x.cpu_us(), y.cpu_us()),
                    _ => "–".into(),
                };
                let _ = writeln!(
                    out,
                    "| `{}` | {label} | {} | {} | {front_cpu} |",
                    endpoint.path(),
                    ratio(a.rps, b.rps),
                    ratio(a.p99, b.p99)
                );
            }
        }
    }
    let _ = writeln!(out);
}

fn floods(out: &mut String, floods: &[FloodResult]) {
    let _ = writeln!(
        out,
        "## Verify under a login flood (open loop, the harness's own generator)\n\n| backend | verify p99 alone | verify p99 during flood | ratio | logins served during flood |\n|---|---:|---:|---:|---:|"
    );
    for f in floods {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            f.backend,
            ms(f.alone.p99),
            ms(f.flooded.p99),
            ratio(f.flooded.p99, f.alone.p99),
            f.logins_during_flood
        );
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_at_their_edges_and_not_past_them() {
        assert!(Bound::AtLeast(0.75).holds(0.75));
        assert!(!Bound::AtLeast(0.75).holds(0.74));
        assert!(Bound::AtMost(1.7).holds(1.7));
        assert!(!Bound::AtMost(1.7).holds(1.71));
        assert!(Bound::Within(0.05).holds(0.96));
        assert!(Bound::Within(0.05).holds(1.04));
        assert!(!Bound::Within(0.05).holds(0.94));
        assert!(!Bound::Within(0.05).holds(1.06));
        assert!(Bound::MibUnder(30.0).holds(29.9));
        assert!(!Bound::MibUnder(30.0).holds(30.0));
    }

    #[test]
    fn a_target_without_a_measurement_is_not_measured_rather_than_failed() {
        let missing = Target::new("nginx absent", Bound::AtLeast(0.75), None);
        assert_eq!(missing.verdict(), "not measured");
        let failed = Target::new("slow", Bound::AtLeast(0.75), Some(0.5));
        assert_eq!(failed.verdict(), "**does not hold**");
    }

    #[test]
    fn medians_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
