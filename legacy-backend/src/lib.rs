//! The legacy backend: actix-web routes over `shared::Service`.

mod handlers;
mod middleware;
mod reply;
#[cfg(feature = "test-util")]
pub mod testing;

use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use shared::Service;
use shared::endpoint::Endpoint;

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
        let observed = data.clone();
        Endpoint::ALL
            .into_iter()
            .fold(App::new(), |app, endpoint| {
                app.service(handlers::resource(endpoint))
            })
            .app_data(data.clone())
            .wrap(from_fn(move |request, next| {
                middleware::observe(observed.clone(), request, next)
            }))
            .default_service(web::to(handlers::not_found))
    })
    .shutdown_timeout(grace.as_secs())
    .listen(listener)?;
    if !handle_signals {
        server = server.disable_signals();
    }
    Ok(server.run())
}
