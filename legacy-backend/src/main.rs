//! The legacy backend's binary: flags, logging, config, bind, then serve until SIGINT/SIGTERM.

use anyhow::Context;
use shared::BackendName;

/// glibc's allocator spends a sixth of the proxy's CPU on its arena locks under load
/// (measured with perf); mimalloc's per-thread heaps do not contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let (listener, service) = shared::cli::start(BackendName::Legacy)?;
    // What `#[actix_web::main]` would do, spelled out so that the blocking start above runs
    // before the runtime rather than on it.
    actix_web::rt::System::new().block_on(async {
        let shutdown = common::shutdown::signal_future().context("cannot listen for signals")?;
        legacy_backend::serve(listener, service, shutdown)
            .await
            .context("the legacy backend failed")
    })
}
