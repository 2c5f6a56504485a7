//! Load benchmarks: both backends, the proxy (at 0, 50 and 100 %), and nginx and haproxy in
//! front of the same backend, measured side by side on this machine in one run.

pub mod fleet;
pub mod load;
pub mod plan;
pub mod plot;
pub mod procs;
pub mod report;
pub mod wrk;

use std::path::{Path, PathBuf};

pub use plan::Settings;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Process(#[from] procs::ProcError),
    #[error(transparent)]
    Wrk(#[from] wrk::WrkError),
    #[error("the demo login failed before measuring; see the backend logs")]
    Login,
    #[error("interrupted; every server started was stopped")]
    Interrupted,
    #[error("cannot write results: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot draw the plot: {0}")]
    Plot(String),
}

pub struct Outcome {
    pub results_file: PathBuf,
    pub plot_file: PathBuf,
    pub total_requests: u64,
    pub configurations: usize,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or("? GiB".into(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let kernel = command_output("uname", &["-sr"]).unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory} memory, {kernel}")
}

/// Starts the fleet from `bin_dir`, measures, and writes `results.md` and `latency.svg` into
/// `out_dir`. Stops every server it started, also when interrupted with Ctrl-C.
pub async fn run(
    settings: Settings,
    bin_dir: &Path,
    out_dir: &Path,
    command_line: String,
) -> Result<Outcome, BenchError> {
    let wrk = wrk::Wrk::find().filter(|_| settings.wrk);
    match &wrk {
        Some(wrk) => eprintln!("bench: closed loop driven by {}", wrk.program.display()),
        None if !settings.wrk => {
            eprintln!("bench: --no-wrk: the harness's own generator drives everything")
        }
        None => eprintln!(
            "bench: wrk is not installed (scripts/install --bench installs it); the harness's own \
             generator drives the closed loop too, and the report says so"
        ),
    }
    let fleet = fleet::Fleet::start(bin_dir).await?;
    let configurations = fleet.configurations().len();
    let expected = plan::expected_duration(&settings, configurations, wrk.is_some());
    eprintln!(
        "bench: {configurations} configurations; expect about {:.0} s of load (plus start-up)",
        expected.as_secs_f64()
    );
    let started = std::time::Instant::now();
    let measured = tokio::select! {
        measured = plan::run(&fleet, &settings, wrk.as_ref(), |step| eprintln!("bench: {step}")) => measured?,
        _ = tokio::signal::ctrl_c() => return Err(BenchError::Interrupted),
    };
    drop(fleet);
    eprintln!(
        "bench: measured for {:.0} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(out_dir)?;
    let plot_file = out_dir.join("latency.svg");
    plot::latency_svg(&measured, &plot_file).map_err(|e| BenchError::Plot(e.to_string()))?;
    let context = report::Context {
        machine: machine(),
        commit: command_output("git", &["rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "unknown".into()),
        command_line,
        binaries: bin_dir.display().to_string(),
        date: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        plot_file: "latency.svg".into(),
    };
    let results_file = out_dir.join("results.md");
    std::fs::write(
        &results_file,
        report::markdown(&measured, &settings, &context),
    )?;
    Ok(Outcome {
        results_file,
        plot_file,
        total_requests: measured.total_requests,
        configurations,
    })
}
