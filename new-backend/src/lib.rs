//! The new backend: axum routes over `shared::Service`.

mod handlers;
mod middleware;
mod reply;
#[cfg(feature = "test-util")]
pub mod testing;

use std::future::Future;

use axum::Router;
use shared::Service;
use shared::endpoint::Endpoint;

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

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(service))
        .with_graceful_shutdown(shutdown)
        .await
}
