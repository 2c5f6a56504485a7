//! Active health checks: `GET /health` on each replica of each side at an interval, all at
//! once; a replica goes down after `unhealthy_threshold` failures in a row and up after
//! `healthy_threshold` successes (`Streak`, pure). A side is down when all its replicas are
//! (`Health::refresh`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::replicas::Replica;
use crate::routing::Side;
use crate::state::ProxyState;

pub struct HealthChecker {
    pub state: Arc<ProxyState>,
}

/// Consecutive results of one replica.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    failures: u32,
    successes: u32,
}

impl Streak {
    pub fn record(&mut self, ok: bool) {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
    }

    /// Whether a replica that was `up` is up after this streak.
    pub fn verdict(self, up: bool, healthy: NonZeroU32, unhealthy: NonZeroU32) -> bool {
        if up {
            self.failures < unhealthy.get()
        } else {
            self.successes >= healthy.get()
        }
    }
}

impl HealthChecker {
    async fn probe(client: reqwest::Client, url: String, timeout: Duration) -> bool {
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
        let mut streaks: HashMap<(Side, SocketAddr), Streak> = HashMap::new();
        loop {
            let generation = self.state.live.load_full();
            let check = &generation.settings.health_check;
            let mut probes = tokio::task::JoinSet::new();
            for side in Side::BOTH {
                for member in generation.pool(side).members() {
                    let replica = Arc::clone(&member.replica);
                    let url = format!("http://{}{}", replica.address, check.path);
                    let probe = Self::probe(client.clone(), url, check.timeout_ms.get());
                    probes.spawn(async move { (replica, probe.await) });
                }
            }
            let mut listed = Vec::with_capacity(probes.len());
            while let Some(probed) = probes.join_next().await {
                let Ok((replica, ok)) = probed else { continue };
                let key = (replica.side, replica.address);
                listed.push(key);
                let streak = streaks.entry(key).or_default();
                streak.record(ok);
                let up = streak.verdict(
                    replica.is_up(),
                    check.healthy_threshold,
                    check.unhealthy_threshold,
                );
                if replica.set_up(up) {
                    log_change(&replica, up);
                }
            }
            streaks.retain(|key, _| listed.contains(key));
            self.state
                .health
                .refresh(&self.state.live.load(), &self.state.metrics);
            let interval = check.interval_ms.get();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

fn log_change(replica: &Replica, up: bool) {
    let (backend, address) = (replica.side.as_str(), replica.address);
    if up {
        tracing::info!(backend, %address, "replica is up");
    } else {
        tracing::warn!(backend, %address, "replica is down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_flips_only_after_its_threshold_in_a_row() {
        let two = NonZeroU32::new(2).unwrap();
        let three = NonZeroU32::new(3).unwrap();
        // (results, starting up, verdicts after each)
        for (results, up, verdicts) in [
            (vec![false, false, false], true, vec![true, true, false]),
            (
                vec![false, false, true, false, false],
                true,
                vec![true, true, true, true, true],
            ),
            (vec![true, true], false, vec![false, true]),
            (
                vec![true, false, true, true],
                false,
                vec![false, false, false, true],
            ),
        ] {
            let (mut streak, mut state) = (Streak::default(), up);
            let mut seen = Vec::new();
            for ok in results {
                streak.record(ok);
                state = streak.verdict(state, two, three);
                seen.push(state);
            }
            assert_eq!(seen, verdicts);
        }
    }
}
