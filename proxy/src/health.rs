//! Active health checks: `GET /health` on each backend at an interval; a backend goes down
//! after `unhealthy_threshold` failures in a row and up after `healthy_threshold` successes.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::routing::Side;
use crate::state::ProxyState;

pub struct HealthChecker {
    pub state: Arc<ProxyState>,
}

/// Consecutive results of one backend.
#[derive(Default, Clone, Copy)]
struct Streak {
    failures: u32,
    successes: u32,
}

impl HealthChecker {
    async fn probe(client: &reqwest::Client, url: String, timeout: std::time::Duration) -> bool {
        matches!(
            client.get(url).timeout(timeout).send().await,
            Ok(response) if response.status().is_success()
        )
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match reqwest::Client::builder().no_proxy().build() {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the health-check client; checks are off");
                return;
            }
        };
        let mut streaks = [Streak::default(); 2];
        loop {
            let generation = self.state.live.load_full();
            let check = &generation.settings.health_check;
            let timeout = check.timeout_ms.get();
            let url = |side| format!("http://{}{}", generation.address(side), check.path);
            let (legacy, new) = tokio::join!(
                Self::probe(&client, url(Side::Legacy), timeout),
                Self::probe(&client, url(Side::New), timeout)
            );
            for (side, ok) in [(Side::Legacy, legacy), (Side::New, new)] {
                let streak = &mut streaks[side.index()];
                if ok {
                    streak.successes += 1;
                    streak.failures = 0;
                } else {
                    streak.failures += 1;
                    streak.successes = 0;
                }
                let health = &self.state.health;
                let verdict = if health.is_up(side) {
                    streak.failures < check.unhealthy_threshold.get()
                } else {
                    streak.successes >= check.healthy_threshold.get()
                };
                if health.set(side, verdict) {
                    self.state.metrics.backend_up(side, verdict);
                    if verdict {
                        tracing::info!(backend = side.as_str(), "backend is up");
                    } else {
                        tracing::warn!(backend = side.as_str(), address = %generation.address(side), "backend is down");
                    }
                }
            }
            let interval = check.interval_ms.get();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
