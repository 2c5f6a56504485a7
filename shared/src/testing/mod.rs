//! Test helpers: an isolated environment per test, a small HTTP client, forged tokens, and the
//! contract suite that both backends run (`contract_tests!`).

pub mod client;
pub mod contract;
pub mod forge;
pub mod postgres;
pub mod redis;
pub mod server;

use std::path::Path;

use std::num::NonZeroU32;

use crate::config::{Config, Seconds};
use crate::shadow::ShadowKey;

/// A config whose files live in a fresh temporary folder, with the demo user seeded, a known
/// JWT secret and shadow key, and small limits so throttling and rate limiting are quick to
/// reach.
pub struct TestEnv {
    dir: tempfile::TempDir,
    pub config: Config,
    pub secret: Vec<u8>,
    /// The key the proxy would sign shadow requests with (`crate::shadow`).
    pub shadow_key: ShadowKey,
}

pub const TEST_RATE_LIMIT: u32 = 5;
pub const TEST_MAX_LOGIN_FAILURES: u32 = 3;

impl TestEnv {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A test environment with `edit` applied to its config.
    pub fn with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut config = Config::default();
        config.database.path = dir.path().join("gateway.db");
        config.database.seed_demo_user = true;
        config.auth.secret_file = dir.path().join("jwt.secret");
        config.shadow.secret_file = dir.path().join("shadow.secret");
        config.auth.max_concurrent_hashes = 2;
        config.auth.login_throttle.max_failures = non_zero(TEST_MAX_LOGIN_FAILURES);
        config.auth.login_throttle.window_seconds = Seconds::of(1);
        config.rate_limit.generate.capacity = non_zero(TEST_RATE_LIMIT);
        config.rate_limit.generate.refill_per_minute = NonZeroU32::MIN;
        edit(&mut config);
        let secret: [u8; 32] = rand::random();
        std::fs::write(&config.auth.secret_file, secret).expect("write the test secret");
        let shadow_secret: [u8; 32] = rand::random();
        std::fs::write(&config.shadow.secret_file, shadow_secret)
            .expect("write the test shadow secret");
        Self {
            dir,
            config,
            secret: secret.to_vec(),
            shadow_key: ShadowKey::new(&shadow_secret).expect("32 bytes are a shadow key"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// A server started by a test; stopped when dropped.
pub struct TestServer {
    pub base_url: String,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl TestServer {
    pub fn new(addr: std::net::SocketAddr, stop: impl FnOnce() + Send + 'static) -> Self {
        Self {
            base_url: format!("http://{addr}"),
            stop: Some(Box::new(stop)),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// Polls `check` every 20 ms until it yields a value, and returns it; fails the test, naming
/// `what`, once `limit` has passed, also when a check is still running then. The one way tests
/// wait for something to become true. Its clock is tokio's, so it also works in paused time.
pub async fn eventually<T>(
    what: &str,
    limit: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(_) => panic!("never happened within {limit:?}: {what} (the last check hung)"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened within {limit:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// For test constants, which are never zero.
pub fn non_zero(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).expect("a non-zero test constant")
}

/// A loopback port no one listens on now, for a server that binds it itself (Redis,
/// PostgreSQL, Prometheus cannot take a bound socket). Released before the server binds it,
/// so another process may take it first: the server then exits and its start tries another.
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::eventually;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_value_a_check_yields() {
        let mut checks = 0;
        let value = eventually("the third check", Duration::from_secs(1), async || {
            checks += 1;
            (checks == 3).then_some(checks * 10)
        })
        .await;
        assert_eq!((value, checks), (30, 3));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "never happened within 1s: the impossible")]
    async fn eventually_fails_naming_what_never_happened() {
        eventually(
            "the impossible",
            Duration::from_secs(1),
            async || None::<()>,
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "never happened within 1s: an answer (the last check hung)")]
    async fn eventually_fails_when_a_check_hangs() {
        eventually("an answer", Duration::from_secs(1), async || {
            std::future::pending::<Option<()>>().await
        })
        .await;
    }
}
