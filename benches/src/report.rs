//! `benches/results.md`: the machine, the commit, the command, a table per endpoint and mode
//! (medians over rounds), the ratios that matter and which targets hold.

use std::fmt::Write as _;

use crate::plan::{Endpoint, FloodResult, Measurements, Sample, Series, Settings, mode_name};

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
    pub front_cpu_per_1k: Option<f64>,
    pub backend_cpu_per_1k: f64,
}

pub fn summarise(samples: &[Sample]) -> Summary {
    let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Summary {
        rps: pick(|s| s.rps),
        p50: pick(|s| s.p50),
        p90: pick(|s| s.p90),
        p99: pick(|s| s.p99),
        p999: pick(|s| s.p999),
        errors: samples.iter().map(|s| s.errors).sum(),
        requests: samples.iter().map(|s| s.requests).sum(),
        front_cpu_per_1k: samples
            .iter()
            .map(|s| s.front_cpu_per_1k)
            .collect::<Option<Vec<_>>>()
            .map(median),
        backend_cpu_per_1k: pick(|s| s.backend_cpu_per_1k),
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
                && matches!(s.mode, crate::load::Mode::Closed { .. }) == closed
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

fn cpu(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.3}"))
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

pub fn markdown(m: &Measurements, settings: &Settings, context: &Context) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmark results\n");
    let _ = writeln!(
        out,
        "Measured by `benches` ({}) on {}.\n\n- machine: {}\n- commit: `{}`\n- command: `{}`\n- each run: {:?}; {} round(s), configurations in alternation; figures are medians over rounds\n- servers: started by the harness from `{}` on loopback ports it picked, `RUST_LOG=warn`; the load generator runs on the same cores\n- latency in milliseconds; open-loop latency counts from each request's due time (no coordinated omission)\n- CPU: seconds of user + system time per 1,000 requests, from `/proc`, for the process in front and for the backend(s)\n",
        if settings.quick {
            "quick mode: too short to mean anything, proves the harness only"
        } else {
            "full run"
        },
        context.date,
        context.machine,
        context.commit,
        context.command_line,
        settings.duration,
        settings.rounds,
        context.binaries,
    );
    let _ = writeln!(
        out,
        "![latency percentiles per configuration]({})\n",
        context.plot_file
    );
    let mut last_heading = String::new();
    for series in &m.series {
        let heading = format!(
            "## `{}` — {}",
            series.endpoint.path(),
            mode_name(series.mode)
        );
        if heading != last_heading {
            let _ = writeln!(out, "{heading}\n");
            let _ = writeln!(
                out,
                "| configuration | req/s | p50 | p90 | p99 | p99.9 | errors | CPU front /1k | CPU backend /1k |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            last_heading = heading;
        }
        let s = summarise(&series.samples);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} / {} | {} | {} |",
            series.configuration,
            s.rps,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.p999),
            s.errors,
            s.requests,
            cpu(s.front_cpu_per_1k),
            cpu(Some(s.backend_cpu_per_1k)),
        );
        let next_differs = m
            .series
            .iter()
            .skip_while(|x| !std::ptr::eq(*x, series))
            .nth(1)
            .is_none_or(|next| {
                next.endpoint != series.endpoint || mode_name(next.mode) != mode_name(series.mode)
            });
        if next_differs {
            let _ = writeln!(out);
        }
    }
    ratios(&mut out, m);
    floods(&mut out, &m.floods);
    let _ = writeln!(out, "## Peak memory\n\n| process | peak RSS |\n|---|---:|");
    for (name, kib) in &m.peak_memory_kib {
        let _ = writeln!(out, "| {name} | {:.1} MiB |", *kib as f64 / 1024.0);
    }
    out
}

fn ratios(out: &mut String, m: &Measurements) {
    let _ = writeln!(
        out,
        "## Ratios (closed loop throughput, closed loop p99, CPU per request)\n"
    );
    let _ = writeln!(
        out,
        "| endpoint | comparison | throughput | p99 | CPU front /1k |\n|---|---|---:|---:|---:|"
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
                get("proxy → legacy (0 %)"),
                get("legacy direct"),
            ),
            (
                "proxy → new / new direct",
                get("proxy → new (100 %)"),
                get("new direct"),
            ),
            (
                "proxy at 50 % / proxy at 0 %",
                get("proxy at 50 %"),
                get("proxy → legacy (0 %)"),
            ),
            (
                "rollout judging / proxy at 50 %",
                get("proxy at 50 %, rollout judging"),
                get("proxy at 50 %"),
            ),
            (
                "our proxy / nginx",
                get("proxy → legacy (0 %)"),
                get("nginx → legacy"),
            ),
            (
                "our proxy / haproxy",
                get("proxy → legacy (0 %)"),
                get("haproxy → legacy"),
            ),
        ];
        for (label, a, b) in pairs {
            if let (Some(a), Some(b)) = (a, b) {
                let front_cpu = match (a.front_cpu_per_1k, b.front_cpu_per_1k) {
                    (Some(x), Some(y)) => ratio(x, y),
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
        "## Verify under a login flood (open loop)\n\n| backend | verify p99 alone | verify p99 during flood | ratio | logins served during flood |\n|---|---:|---:|---:|---:|"
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
