//! The legacy backend: actix-web routes over `shared::Service`.

mod handlers;
mod middleware;
mod reply;
#[cfg(feature = "test-util")]
pub mod testing;

use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use shared::{Service, routes};

pub use shared;

/// Starts serving `service` on `listener`; the returned `Server` resolves when it stops, and
/// its handle stops it gracefully. Unless `handle_signals` is false, SIGINT/SIGTERM stop it too.
pub fn spawn(
    listener: std::net::TcpListener,
    service: Service,
    handle_signals: bool,
) -> std::io::Result<Server> {
    let grace = Duration::from_secs(service.config().server.shutdown_grace_seconds);
    let data = web::Data::new(service);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::from_fn(middleware::observe))
            .service(post(routes::LOGIN, handlers::login))
            .service(post(routes::VERIFY, handlers::verify))
            .service(post(routes::GENERATE, handlers::generate))
            .service(get(routes::INDEX, handlers::frontend))
            .service(get(routes::HEALTH, handlers::health))
            .service(get(routes::METRICS, handlers::metrics))
            .service(get(routes::OPENAPI, handlers::openapi))
            .default_service(web::to(handlers::not_found))
    })
    .shutdown_timeout(grace.as_secs())
    .listen(listener)?;
    if !handle_signals {
        server = server.disable_signals();
    }
    Ok(server.run())
}

/// A POST-only route; other methods get 405 with `allow: POST`.
fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(handlers::post_only))
}

/// A GET route, which answers HEAD too; other methods get 405 with `allow: GET, HEAD`.
fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(handlers::get_only))
}
