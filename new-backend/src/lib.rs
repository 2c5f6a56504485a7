//! The new backend: axum routes over `shared::Service`.

mod handlers;
mod middleware;
mod reply;
#[cfg(feature = "test-util")]
pub mod testing;

use std::future::Future;

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};
use shared::{Service, routes};

pub use shared;

/// Every route of the contract; anything else is 404, a wrong method 405, in the contract's shape.
pub fn app(service: Service) -> Router {
    Router::new()
        .route(routes::LOGIN, post(handlers::login))
        .route(routes::VERIFY, post(handlers::verify))
        .route(routes::GENERATE, post(handlers::generate))
        .route(routes::INDEX, get(handlers::frontend))
        .route(routes::HEALTH, get(handlers::health))
        .route(routes::METRICS, get(handlers::metrics))
        .route(routes::OPENAPI, get(handlers::openapi))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            middleware::observe,
        ))
        .with_state(service)
}

/// A POST-only route; other methods get 405 with `allow: POST`.
fn post<H: Handler<T, Service>, T: 'static>(handler: H) -> MethodRouter<Service> {
    on(MethodFilter::POST, handler).fallback(handlers::post_only)
}

/// A GET route, which answers HEAD too; other methods get 405 with `allow: GET, HEAD`.
fn get<H: Handler<T, Service>, T: 'static>(handler: H) -> MethodRouter<Service> {
    axum::routing::get(handler).fallback(handlers::get_only)
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
