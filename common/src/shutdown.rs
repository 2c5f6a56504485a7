//! The one shutdown signal of every binary: SIGINT and SIGTERM both mean "stop accepting,
//! finish what is in flight within the grace period, exit".

use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGINT or SIGTERM. Both handlers are installed before it returns
/// its future, so a signal sent right after start-up is not lost.
pub fn signal_future() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down; finishing in-flight requests"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutting down; finishing in-flight requests"),
        }
    })
}
