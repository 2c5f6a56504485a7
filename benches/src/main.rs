//! `bench`: measure both backends, the proxy, nginx and haproxy side by side.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Load benchmarks of the backends and the proxy, with nginx and haproxy when installed"
)]
struct Args {
    /// A short run (well under a minute) that proves the harness, not the numbers.
    #[arg(long)]
    quick: bool,
    /// Where the server binaries are; default: beside this one (target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write results.md and latency.svg.
    #[arg(long, default_value = "benches")]
    out_dir: PathBuf,
    /// Rounds of alternation (full runs).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per run (full runs; wrk rounds to whole seconds).
    #[arg(long)]
    seconds: Option<f64>,
    /// Do not use wrk even where it is installed: the harness's own generator drives the
    /// closed loop too (the report says so).
    #[arg(long)]
    no_wrk: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = if args.quick {
        benches::Settings::quick()
    } else {
        benches::Settings::full()
    };
    settings.wrk = !args.no_wrk;
    if let Some(rounds) = args.rounds {
        settings.rounds = rounds.max(1);
    }
    if let Some(seconds) = args.seconds {
        settings.duration = std::time::Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    }
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release")),
    };
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome = benches::run(settings, &bin_dir, &args.out_dir, command_line).await?;
    println!(
        "{} requests over {} configurations; wrote {} and {}",
        outcome.total_requests,
        outcome.configurations,
        outcome.results_file.display(),
        outcome.plot_file.display()
    );
    Ok(())
}
