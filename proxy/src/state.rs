//! What every request reads: the config generation in force (one `ArcSwap`, swapped whole on
//! reload) with each side's replica pool, backend health, the metrics, and the per-client
//! request counts.

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
use crate::replicas::{Pool, Registry};
use crate::rollout::runner::Rollout;
use crate::routing::Side;
use crate::shadow::state::ShadowState;
use crate::sticky::BucketSigner;
use crate::{cors, security_headers};

/// One config generation: its settings and what is built from them once (each side's replica
/// pool with its peers, the CORS policy's header values).
pub struct Generation {
    pub number: u64,
    pub loaded_at: time::OffsetDateTime,
    pub settings: ProxyConfig,
    pub cors: cors::Policy,
    /// `strict-transport-security` for answers over TLS, built once per generation.
    pub hsts: Option<http::HeaderValue>,
    /// `shadow.ignore`, parsed (the config checked it on load).
    pub shadow_ignore: crate::shadow::IgnoreList,
    /// Legacy's replicas, then new's.
    pools: [Pool; 2],
}

impl Generation {
    /// The generation of `settings`; its replicas come from `replicas`, so the ones an
    /// earlier generation listed keep their health and load.
    pub fn new(
        number: u64,
        settings: ProxyConfig,
        replicas: &Registry,
        metrics: &ProxyMetrics,
    ) -> Self {
        let peer = |addr| {
            // Addresses were validated as socket addresses when the config was loaded, so
            // `HttpPeer::new` (which panics on a bad one) cannot fail here.
            let mut peer = HttpPeer::new(addr, false, String::new());
            peer.options.connection_timeout = Some(settings.proxy.connect_timeout_ms.get());
            peer.options.read_timeout = Some(settings.proxy.read_timeout_ms.get());
            peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
            peer
        };
        let upstreams = Side::BOTH.map(|side| settings.backends.side(side).upstreams());
        let pools = replicas.pools(upstreams, metrics, peer);
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
            pools,
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

    pub fn pool(&self, side: Side) -> &Pool {
        &self.pools[side.index()]
    }
}

/// Whether a side is up: whether the health checks last found any of its replicas up (see
/// `refresh`); up until proven otherwise.
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

    /// Takes each side's verdict from its replicas in `generation` (up if any is), after a
    /// round of checks or a reload; counts and logs the changes.
    pub fn refresh(&self, generation: &Generation, metrics: &ProxyMetrics) {
        for side in Side::BOTH {
            let up = generation.pool(side).any_up();
            if self.up[side.index()].swap(up, Ordering::Relaxed) == up {
                continue;
            }
            metrics.backend_up(side, up);
            if up {
                tracing::info!(backend = side.as_str(), "backend is up");
            } else {
                tracing::warn!(
                    backend = side.as_str(),
                    "backend is down: none of its replicas is up"
                );
            }
        }
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
    /// Every replica listed, so that a reload keeps their health and load.
    pub replicas: Registry,
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
        let replicas = Registry::default();
        let generation = Generation::new(1, config, &replicas, &metrics);
        let rollout = Rollout::new(metrics.rollout.cohorts.clone());
        Arc::new(Self {
            config_path,
            startup: generation.settings.startup(),
            live: ArcSwap::from_pointee(generation),
            replicas,
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
