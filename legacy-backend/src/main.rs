//! The legacy backend's binary: flags, config, bind, serve until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use shared::cli::ServeArgs;
use shared::{BackendName, Service};

/// glibc's allocator spends a sixth of the proxy's CPU on its arena locks under load
/// (measured with perf); mimalloc's per-thread heaps do not contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = ServeArgs::parse();
    shared::telemetry::init(args.log_format);
    let config = args.load_config()?;
    let addr = args.listen_addr(&config, BackendName::Legacy);
    let service =
        Service::new(config, BackendName::Legacy).context("cannot start the legacy backend")?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "legacy backend listening");
    // actix-web stops on SIGINT/SIGTERM itself, finishing in-flight requests within the grace.
    legacy_backend::spawn(listener, service, true)?.await?;
    Ok(())
}
