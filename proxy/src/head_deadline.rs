//! A deadline for the whole request head. Pingora's read timeout applies to each read, so a
//! client trickling one header line every few seconds would hold a connection forever; this
//! wrapper drops the connection when the head is not complete in time.
//!
//! The proxy learns that a head is complete through Pingora's per-connection user context:
//! the wrapper puts a `HeadRead` there, and `CanaryProxy::on_connection_reuse` (called right
//! after the head is parsed) signals it.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
use pingora::server::ShutdownWatch;
use pingora::time::fast_timeout::fast_timeout;
use tokio::sync::Notify;

use crate::state::ProxyState;

/// How long idle keep-alive connections stay open after the process stops accepting.
const KEEPALIVE_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Put in the connection's user context; signalled once the request head has been read.
pub struct HeadRead(pub Arc<Notify>);

impl HeadRead {
    /// Signals the waiting wrapper if `context` is ours.
    pub fn signal(context: Box<dyn Any + Send + Sync>) {
        if let Ok(head_read) = context.downcast::<HeadRead>() {
            head_read.0.notify_one();
        }
    }
}

pub struct HeadDeadline<A> {
    pub inner: Arc<A>,
    pub state: Arc<ProxyState>,
}

#[async_trait]
impl<A> HttpServerApp for HeadDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if session.is_http2() {
            // An HTTP/2 stream reaches here with its head already read (and Pingora gives it
            // no connection context to signal through): nothing left to time.
            return self.inner.process_new_http(session, shutdown).await;
        }
        let deadline = self
            .state
            .live
            .load()
            .settings
            .proxy
            .request_head_timeout_ms
            .get();
        // Requests written in one go are answered in turn, in order (RFC 9112 §9.3.2); without
        // this Pingora answers the first and closes, dropping the rest.
        session.set_pipelining_enabled(true);
        let head_read = Arc::new(Notify::new());
        session.set_connection_user_context(Some(Box::new(HeadRead(Arc::clone(&head_read)))));
        let work = self.inner.process_new_http(session, shutdown);
        tokio::pin!(work);
        // Pingora's shared coarse timers: a tokio timer per request cost measurable CPU.
        let head_in_time = fast_timeout(deadline, head_read.notified());
        tokio::select! {
            biased;
            reused = &mut work => return reused,
            in_time = head_in_time => if in_time.is_err() {
                self.state.metrics.edge_refusal("request_head_timeout");
                tracing::debug!("request head not complete in time; closing the connection");
                return None;
            }
        }
        work.await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    /// Called once the process stops accepting (SIGTERM, or handed over to an upgrade).
    /// Pingora closes idle keep-alive connections here, and a client that wrote its next
    /// request at that moment would see it fail; so they first get a moment in which such a
    /// request is still answered, with `connection: close` (Pingora turns keep-alive off once
    /// shutting down), and the client's next connection reaches the successor.
    async fn http_cleanup(&self) {
        let grace = self.state.startup.shutdown_grace_seconds.get();
        tokio::time::sleep(KEEPALIVE_DRAIN.min(grace)).await;
        self.inner.http_cleanup().await
    }
}
