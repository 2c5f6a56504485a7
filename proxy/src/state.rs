//! What every request reads: the config generation in force (one `ArcSwap`, swapped whole on
//! reload), backend health, the metrics, and the per-client request counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;

use crate::admin_auth::AdminAuth;
use crate::config::{ProxyConfig, StartupSettings};
use crate::forwarding::HeaderEdit;
use crate::metrics::ProxyMetrics;
use crate::rollout::runner::Rollout;
use crate::routing::Side;
use crate::shadow::state::ShadowState;
use crate::sticky::BucketSigner;
use crate::{cors, security_headers};

/// One config generation: its settings and what is built from them once (the upstream peers,
/// the CORS policy's header values).
pub struct Generation {
    pub number: u64,
    pub loaded_at: time::OffsetDateTime,
    pub settings: ProxyConfig,
    pub cors: cors::Policy,
    /// `strict-transport-security` for answers over TLS, built once per generation.
    pub hsts: Option<http::HeaderValue>,
    /// `shadow.ignore`, parsed (the config checked it on load).
    pub shadow_ignore: crate::shadow::IgnoreList,
    peers: [HttpPeer; 2],
}

impl Generation {
    pub fn new(number: u64, settings: ProxyConfig) -> Self {
        let peer = |addr| {
            // Addresses were validated as socket addresses when the config was loaded, so
            // `HttpPeer::new` (which panics on a bad one) cannot fail here.
            let mut peer = HttpPeer::new(addr, false, String::new());
            peer.options.connection_timeout = Some(settings.proxy.connect_timeout_ms.get());
            peer.options.read_timeout = Some(settings.proxy.read_timeout_ms.get());
            peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
            peer
        };
        let peers = [
            peer(settings.backends.legacy.listen),
            peer(settings.backends.new.listen),
        ];
        let cors = cors::Policy::new(&settings.proxy.cors, settings.proxy.override_header.get());
        let hsts = crate::tls::hsts(settings.proxy.tls.as_ref().map(|t| t.hsts_max_age_seconds));
        let shadow_ignore =
            crate::shadow::IgnoreList::parse(&settings.shadow.ignore).unwrap_or_default();
        Self {
            shadow_ignore,
            number,
            loaded_at: time::OffsetDateTime::now_utc(),
            settings,
            cors,
            hsts,
            peers,
        }
    }

    /// The fields every answer on the public listener gets, proxied or the proxy's own: the
    /// security fields and, for the request's origin, the CORS fields.
    pub fn edge_fields<H: HeaderEdit>(
        &self,
        request: &http::HeaderMap,
        response: &mut H,
    ) -> Result<(), H::Error> {
        security_headers::to_client(&self.settings.proxy.security_headers, response)?;
        self.cors.to_client(request, response)
    }

    pub fn peer(&self, side: Side) -> HttpPeer {
        self.peers[side.index()].clone()
    }

    pub fn address(&self, side: Side) -> std::net::SocketAddr {
        match side {
            Side::Legacy => self.settings.backends.legacy.listen,
            Side::New => self.settings.backends.new.listen,
        }
    }
}

/// Whether the health checks last found a backend up; up until proven otherwise.
pub struct Health {
    up: [AtomicBool; 2],
}

impl Health {
    fn new() -> Self {
        Self {
            up: [AtomicBool::new(true), AtomicBool::new(true)],
        }
    }

    pub fn is_up(&self, side: Side) -> bool {
        self.up[side.index()].load(Ordering::Relaxed)
    }

    /// Records a verdict; returns whether it changed.
    pub fn set(&self, side: Side, up: bool) -> bool {
        self.up[side.index()].swap(up, Ordering::Relaxed) != up
    }
}

/// Requests in flight per client address, to cap what one client can hold.
#[derive(Default)]
pub struct ClientCounts {
    in_flight: Mutex<HashMap<IpAddr, u32>>,
}

/// Releases one in-flight slot of its client when the request ends.
pub struct ClientSlot {
    state: Arc<ProxyState>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self
            .state
            .clients
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

pub struct ProxyState {
    pub config_path: PathBuf,
    pub startup: StartupSettings,
    pub live: ArcSwap<Generation>,
    pub health: Health,
    pub metrics: ProxyMetrics,
    pub signer: BucketSigner,
    /// The rollout controller's progress and the cohorts it judges.
    pub rollout: Rollout,
    /// Who may use the admin listener; its token is read once, at start-up.
    pub admin_auth: AdminAuth,
    /// Shadow traffic: the client, the signing key, the comparisons.
    pub shadow: ShadowState,
    clients: ClientCounts,
}

impl ProxyState {
    pub fn new(
        config_path: PathBuf,
        config: ProxyConfig,
        cookie_secret: &[u8],
        admin_auth: AdminAuth,
        shadow: ShadowState,
    ) -> Arc<Self> {
        let metrics = ProxyMetrics::new();
        metrics.config_applied(1, config.new_basis_points());
        for side in Side::BOTH {
            metrics.backend_up(side, true);
        }
        let rollout = Rollout::new(metrics.rollout.cohorts.clone());
        Arc::new(Self {
            config_path,
            startup: config.startup(),
            live: ArcSwap::from_pointee(Generation::new(1, config)),
            health: Health::new(),
            metrics,
            signer: BucketSigner::new(cookie_secret),
            rollout,
            admin_auth,
            shadow,
            clients: ClientCounts::default(),
        })
    }

    /// Takes an in-flight slot for `ip`, or `None` if it already holds `max`.
    pub fn take_client_slot(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ClientSlot> {
        let mut map = self
            .clients
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            state: Arc::clone(self),
            ip,
        })
    }
}
