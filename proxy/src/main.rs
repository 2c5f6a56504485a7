//! The proxy's binary: flags, config, bind, serve until SIGTERM/SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use common::telemetry::LogFormat;
use proxy::config::ProxyConfig;
use proxy::server::{self, Listeners};

#[derive(Parser)]
#[command(about = "The canary edge proxy in front of the legacy and new backends")]
struct Args {
    /// The config file (sections [proxy], [routing], [health_check], [backends]); watched
    /// for edits while running.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Write a self-signed certificate for localhost (`cert.pem`, `key.pem`) into this
    /// folder for `[proxy.tls]` in development, then exit; never overwrites.
    #[arg(long, value_name = "DIR")]
    make_dev_cert: Option<PathBuf>,
}

/// glibc's allocator spends a sixth of the proxy's CPU on its arena locks under load
/// (measured with perf); mimalloc's per-thread heaps do not contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    common::telemetry::init(args.log_format);
    if let Some(dir) = args.make_dev_cert {
        let (cert, key) = proxy::tls::write_dev_certificate(&dir)
            .context("cannot make a development certificate")?;
        println!("wrote {} and {}", cert.display(), key.display());
        return Ok(());
    }
    let config = ProxyConfig::load(&args.config).context("cannot start the proxy")?;
    let tls_listen = config.proxy.tls.as_ref().map(|tls| tls.listen);
    let listeners = Listeners::bind(config.proxy.listen, config.proxy.admin_listen)
        .and_then(|listeners| listeners.with_tls(tls_listen))
        .context("cannot start the proxy")?;
    let state = server::state(args.config, config).context("cannot start the proxy")?;
    let shutdown = server::register_signals(common::shutdown::signal_future)
        .context("cannot listen for SIGTERM and SIGINT")?;
    server::serve(listeners, state, shutdown).context("cannot start the proxy")
}
