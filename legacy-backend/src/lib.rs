//! The legacy backend: actix-web routes over `shared::Service`.

mod handlers;
mod middleware;
mod reply;
#[cfg(feature = "test-util")]
pub mod testing;

use std::future::Future;
use std::pin::pin;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use shared::Service;
use shared::endpoint::Endpoint;

pub use shared;

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// requests in flight, streams included, finish within the shutdown grace before it returns.
pub async fn serve(
    listener: std::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let data = web::Data::new(service);
    let grace = data.shutdown_grace();
    let server = HttpServer::new(move || {
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
    // `shutdown` alone stops the server: actix's own handlers would stop it on SIGINT without
    // the grace, so the two signals would not behave alike.
    .disable_signals()
    // actix counts the grace in whole seconds; rounding up never cuts a request short.
    .shutdown_timeout(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
    .listen(listener)?
    .run();
    let stop = server.handle();
    let mut server = pin!(server);
    tokio::select! {
        ended = &mut server => return ended,
        () = shutdown => {}
    }
    // The server future carries the stop out (no new connections, then the workers finish
    // what they hold), so it is polled alongside.
    let ((), stopped) = tokio::join!(stop.stop(true), server);
    stopped
}
