//! Hot reload: watch `config.toml` (inotify, SIGHUP, and a one-second poll as a safety net),
//! validate the whole file, and swap the routing state in one step. An invalid edit is refused
//! with the key named and counted; the running config keeps serving.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use notify::Watcher;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::ProxyConfig;
use crate::state::{Generation, ProxyState};

/// How long to let a burst of file events settle (an editor saving in two steps).
const SETTLE: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_secs(1);

pub struct Reloader {
    pub state: Arc<ProxyState>,
    /// Registered when the reloader is made, before any service runs: from the moment the
    /// proxy answers, a SIGHUP reloads and can never take its default action (exit).
    hangup: Mutex<Option<Signal>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied(u64),
    Refused,
}

impl Reloader {
    pub fn new(state: Arc<ProxyState>) -> std::io::Result<Self> {
        let hangup = crate::server::register_signals(|| signal(SignalKind::hangup()))?;
        Ok(Self {
            state,
            hangup: Mutex::new(Some(hangup)),
        })
    }

    /// Reads the file and applies it if its content differs from `last`; `force` re-applies.
    pub fn check(&self, last: &mut Option<Vec<u8>>, force: bool) -> Outcome {
        let state = &self.state;
        let bytes = match std::fs::read(&state.config_path) {
            Ok(bytes) => bytes,
            Err(error) => {
                if last.is_some() {
                    tracing::warn!(path = %state.config_path.display(), %error, "cannot read config; keeping the running one");
                    *last = None;
                }
                return Outcome::Unchanged;
            }
        };
        if !force && last.as_deref() == Some(bytes.as_slice()) {
            return Outcome::Unchanged;
        }
        *last = Some(bytes.clone());
        let text = String::from_utf8_lossy(&bytes);
        match ProxyConfig::parse(&text, &state.config_path) {
            Ok(config) => Outcome::Applied(apply(state, config)),
            Err(error) => {
                state.metrics.reload(false);
                tracing::error!(key = error.key(), %error, "config edit refused; the running config stays");
                Outcome::Refused
            }
        }
    }
}

impl Reloader {
    /// The file may have changed since the load the state was built from (another writer,
    /// such as the rollout controller of a fleet, or an edit, while this proxy started):
    /// run what it says now, or refuse it as any later edit would be.
    fn catch_up(&self, bytes: &[u8]) {
        let state = &self.state;
        match ProxyConfig::parse(&String::from_utf8_lossy(bytes), &state.config_path) {
            Ok(config) if config != state.live.load().settings => {
                apply(state, config);
            }
            Ok(_) => {}
            Err(error) => {
                state.metrics.reload(false);
                tracing::error!(key = error.key(), %error, "config edit refused; the running config stays");
            }
        }
    }
}

/// Reads the config file and applies it now, for a writer of the file (the rollout
/// controller) that must not wait for the watcher: returns the generation in force after.
pub fn apply_file(state: &ProxyState) -> Result<u64, common::config::ConfigError> {
    let config = ProxyConfig::load(&state.config_path)?;
    Ok(apply(state, config))
}

/// Applies `percent` as `routing.new_percent` in memory only, over the config in force: for a
/// rollback when the file cannot be written. Returns the generation in force after.
pub fn apply_percent(state: &ProxyState, percent: crate::config::Percent) -> u64 {
    let mut config = state.live.load().settings.clone();
    config.routing.new_percent = percent;
    apply(state, config)
}

/// Swaps in `config` as a new generation, unless it equals the one in force.
fn apply(state: &ProxyState, config: ProxyConfig) -> u64 {
    if config.startup() != state.startup {
        tracing::warn!(
            "proxy.listen, proxy.admin_listen, proxy.threads, proxy.work_stealing, \
             proxy.cookie_secret_file, proxy.admin_token_file, proxy.shutdown_grace_seconds, \
             proxy.upgrade_socket, proxy.tls.listen (or [proxy.tls] itself), proxy.fleet or \
             rollout.controller changed: these need a restart; the rest is applied"
        );
    }
    let current = state.live.load();
    if current.settings == config {
        state.metrics.reload(true);
        return current.number;
    }
    let number = current.number + 1;
    let percent = config.routing.new_percent.as_percent();
    state
        .metrics
        .config_applied(number, config.new_basis_points());
    let generation = Generation::new(number, config, &state.replicas, &state.metrics);
    state.live.store(Arc::new(generation));
    // The replicas may have changed: a side is up if any of its new list is.
    state.health.refresh(&state.live.load(), &state.metrics);
    state.metrics.reload(true);
    tracing::info!(
        generation = number,
        new_percent = percent,
        "config reloaded"
    );
    number
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut events) = tokio::sync::mpsc::channel::<()>(16);
        let watcher = notify::recommended_watcher(move |_| {
            let _ = tx.try_send(());
        });
        // Watch the folder, not the file: editors often replace the file by renaming.
        let dir = self
            .state
            .config_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned();
        let _watcher = match watcher {
            Ok(mut watcher) => match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(watcher),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the config folder; polling only");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "no file watcher; polling only");
                None
            }
        };
        let mut hangup = self
            .hangup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let mut poll = tokio::time::interval(POLL);
        let mut last = std::fs::read(&self.state.config_path).ok();
        if let Some(bytes) = &last {
            self.catch_up(bytes);
        }
        loop {
            let force = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = events.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while events.try_recv().is_ok() {}
                    false
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading config");
                    true
                }
                _ = poll.tick() => false,
            };
            self.check(&mut last, force);
        }
    }
}
