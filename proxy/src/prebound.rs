//! A Pingora listening service that serves on a socket its caller bound, instead of binding
//! an address itself: so `main` binds before it serves, and a test binds `127.0.0.1:0` and
//! knows the port without picking one and releasing it.
//!
//! Pingora looks every listening address up in a table of inherited sockets before it binds
//! (the table its graceful upgrade fills from the old process); a socket found there is
//! adopted as it is. `Prebound` hands the wrapped service a table holding only its own sockets
//! (the plain one, and the TLS one when there is one).
//! Ownership moves with it: the socket stays ours until the service starts, then Pingora's
//! listener owns (and closes) it. `std`'s sockets are opened close-on-exec, which adoption
//! keeps; Pingora needs them non-blocking, which `Prebound` sets.
//!
//! Pingora's own graceful upgrade is not used (the shutdown signal never asks for one), so its
//! table, which that upgrade would send to the next process, is left empty; `upgrade` passes
//! copies of these sockets instead, and a successor hands what it received to `Prebound` like
//! any socket it bound.

use std::net::TcpListener;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::TlsSettings;
use pingora::server::{Fds, ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};

pub struct Prebound<A> {
    service: Service<A>,
    /// Each socket with the key Pingora looks it up by: the address string it was told to
    /// listen on.
    listeners: Vec<(String, TcpListener)>,
}

impl<A> Prebound<A> {
    /// `service` will serve on `listener`; it must have no other listening address.
    pub fn new(mut service: Service<A>, listener: TcpListener) -> std::io::Result<Self> {
        let address = adopt(&listener)?;
        service.add_tcp(&address);
        Ok(Self {
            service,
            listeners: vec![(address, listener)],
        })
    }

    /// Also serves TLS with `settings` on `listener`.
    pub fn with_tls(
        mut self,
        listener: TcpListener,
        settings: TlsSettings,
    ) -> std::io::Result<Self> {
        let address = adopt(&listener)?;
        self.service.add_tls_with_settings(&address, None, settings);
        self.listeners.push((address, listener));
        Ok(self)
    }
}

/// The address Pingora will know `listener` by, once it is ready to be adopted.
fn adopt(listener: &TcpListener) -> std::io::Result<String> {
    listener.set_nonblocking(true)?;
    Ok(listener.local_addr()?.to_string())
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceWithDependents for Prebound<A> {
    async fn start_service(
        &mut self,
        _pingoras_table: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let mut ours = Fds::new();
        for (address, listener) in self.listeners.drain(..) {
            // From here on the listener Pingora builds from this descriptor owns it.
            ours.add(address, listener.into_raw_fd());
        }
        let table: ListenFds = Arc::new(ours.into());
        ServiceWithDependents::start_service(
            &mut self.service,
            Some(table),
            shutdown,
            listeners_per_fd,
            ready_notifier,
        )
        .await
    }

    fn name(&self) -> &str {
        ServiceWithDependents::name(&self.service)
    }

    fn threads(&self) -> Option<usize> {
        ServiceWithDependents::threads(&self.service)
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        ServiceWithDependents::runtime_opts_override(&self.service, global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        ServiceWithDependents::on_startup_delay(&self.service, time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        ServiceWithDependents::listen_addresses(&self.service)
    }
}
