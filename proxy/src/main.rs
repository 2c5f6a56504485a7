//! The proxy's binary: flags, config, bind, serve until SIGTERM/SIGINT or until a successor
//! takes over (`--upgrade`); or, with `rollout`, an operator's client of the running proxy's
//! admin listener.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use common::telemetry::LogFormat;
use proxy::config::ProxyConfig;
use proxy::rollout_cli::{self, Action, Target};
use proxy::server::{self, Listeners, Upgrades};
use proxy::upgrade::{self, ControlSocket};

#[derive(Parser)]
#[command(about = "The canary edge proxy in front of the legacy and new backends")]
struct Args {
    /// The config file (sections [proxy], [routing], [health_check], [backends]); watched
    /// for edits while running. `rollout` reads `proxy.admin_listen` and
    /// `proxy.admin_token_file` from it.
    #[arg(long, default_value = "config.toml", global = true)]
    config: PathBuf,
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Write a self-signed certificate for localhost (`cert.pem`, `key.pem`) into this
    /// folder for `[proxy.tls]` in development, then exit; never overwrites.
    #[arg(long, value_name = "DIR", conflicts_with = "upgrade")]
    make_dev_cert: Option<PathBuf>,
    /// Take over from the proxy running on `proxy.upgrade_socket`: serve on its listening
    /// sockets (no connection refused, none dropped), then it finishes what it has in flight
    /// and exits. This process may be a new build and read an edited config.
    #[arg(long)]
    upgrade: bool,
    /// Without one, run the proxy.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Show or drive the progressive rollout of the running proxy, through its admin
    /// listener (token: CANARY_ADMIN_TOKEN, else proxy.admin_token_file).
    Rollout(RolloutArgs),
}

#[derive(clap::Args)]
struct RolloutArgs {
    /// The admin listener, e.g. http://127.0.0.1:9901 (default: `proxy.admin_listen` of
    /// --config, a wildcard address reached on loopback).
    #[arg(long, value_name = "URL", global = true)]
    admin: Option<String>,
    /// Print the status as the JSON the admin listener sent.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: RolloutAction,
}

#[derive(Subcommand)]
enum RolloutAction {
    /// Where the rollout is, what it waits for, and what the last evaluation found.
    Status,
    /// Let the rollout enter STEP (its index, as `status` shows it), which waits for approval.
    Approve {
        /// The index of the step in `rollout.steps`, from 0.
        step: usize,
    },
    /// Freeze the weight where it is until `resume`.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Stop the rollout and send every user to legacy.
    Abort,
}

/// glibc's allocator spends a sixth of the proxy's CPU on its arena locks under load
/// (measured with perf); mimalloc's per-thread heaps do not contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(Command::Rollout(rollout)) = args.command {
        if args.make_dev_cert.is_some() {
            Args::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--make-dev-cert cannot be used with a subcommand",
                )
                .exit();
        }
        return Ok(rollout_command(&args.config, rollout));
    }
    common::telemetry::init(args.log_format);
    if let Some(dir) = args.make_dev_cert {
        let (cert, key) = proxy::tls::write_dev_certificate(&dir)
            .context("cannot make a development certificate")?;
        println!("wrote {} and {}", cert.display(), key.display());
        return Ok(ExitCode::SUCCESS);
    }
    let config = ProxyConfig::load(&args.config).context("cannot start the proxy")?;
    let startup = config.startup();
    // Everything that can fail on a bad file is done before a predecessor is asked for its
    // sockets, so a bad upgrade leaves it serving untouched.
    let state = server::state(args.config, config).context("cannot start the proxy")?;
    let shutdown = server::register_signals(common::shutdown::signal_future)
        .context("cannot listen for SIGTERM and SIGINT")?;
    let (listeners, upgrades) = if args.upgrade {
        let mut predecessor = upgrade::take_over(&startup.upgrade_socket)
            .context("cannot take over from the running proxy")?;
        let (listeners, control) = predecessor
            .listeners(&startup)
            .context("cannot take over from the running proxy")?;
        tracing::info!(
            predecessor = predecessor.pid,
            "took the listening sockets over"
        );
        let upgrades = Upgrades {
            control,
            predecessor: Some(predecessor),
        };
        (listeners, upgrades)
    } else {
        let listeners = Listeners::bind(startup.listen, startup.admin_listen)
            .and_then(|listeners| listeners.with_tls(startup.tls_listen))
            .context("cannot start the proxy")?;
        let control =
            ControlSocket::bind(&startup.upgrade_socket).context("cannot start the proxy")?;
        let upgrades = Upgrades {
            control,
            predecessor: None,
        };
        (listeners, upgrades)
    };
    server::serve_upgradable(listeners, upgrades, state, shutdown)
        .context("cannot start the proxy")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the summary (or JSON) on stdout, or the error on stderr and exits 1; no logging is
/// set up, so stdout holds only the answer.
fn rollout_command(config: &Path, args: RolloutArgs) -> ExitCode {
    let action = match args.action {
        RolloutAction::Status => Action::Status,
        RolloutAction::Approve { step } => Action::Approve { step },
        RolloutAction::Pause => Action::Pause,
        RolloutAction::Resume => Action::Resume,
        RolloutAction::Abort => Action::Abort,
    };
    let result = Target::resolve(config, args.admin.as_deref())
        .and_then(|target| rollout_cli::run(&target, action, args.json));
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("proxy rollout: {error}");
            ExitCode::FAILURE
        }
    }
}
