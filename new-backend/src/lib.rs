//! The new backend: axum routes over `shared::Service`.

mod handlers;
mod middleware;
mod reply;
#[cfg(feature = "test-util")]
pub mod testing;

use std::future::{Future, IntoFuture};
use std::pin::pin;

use axum::Router;
use shared::Service;
use shared::endpoint::Endpoint;
use tokio::sync::oneshot;

pub use shared;

/// Every route of the contract; anything else is 404, a wrong method 405, in the contract's shape.
pub fn app(service: Service) -> Router {
    Endpoint::ALL
        .into_iter()
        .fold(Router::new(), |router, endpoint| {
            router.route(endpoint.path(), handlers::route(endpoint))
        })
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            middleware::observe,
        ))
        .with_state(service)
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// requests in flight, streams included, finish within the shutdown grace before it returns.
/// Connections still open after the grace are left to the runtime, which a binary ends then.
pub async fn serve(
    listener: std::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let grace = service.shutdown_grace();
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // axum wants a `Send + 'static` signal; `shutdown` need not be one, so it is relayed.
    let (stop, stopped) = oneshot::channel::<()>();
    let server = axum::serve(listener, app(service)).with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    let mut server = pin!(server.into_future());
    tokio::select! {
        ended = &mut server => return ended,
        () = shutdown => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(ended) => ended,
        Err(_) => {
            tracing::warn!("grace period over; dropping the requests still in flight");
            Ok(())
        }
    }
}
