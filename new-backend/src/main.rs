//! The new backend's binary: flags, logging, config, bind, then serve until SIGINT/SIGTERM.

use anyhow::Context;
use shared::BackendName;

/// The legacy backend's allocator (mimalloc: glibc's contends on its arena locks under load),
/// so that the canary compares the two backends' code, not their allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let (listener, service) = shared::cli::start(BackendName::New)?;
    // Built after the blocking start above, so that none of it runs on an async worker.
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = common::shutdown::signal_future().context("cannot listen for signals")?;
        new_backend::serve(listener, service, shutdown)
            .await
            .context("the new backend failed")
    })
}
