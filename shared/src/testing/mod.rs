//! Test helpers: an isolated environment per test, a small HTTP client, forged tokens, and the
//! contract suite that both backends run (`contract_tests!`).

pub mod client;
pub mod contract;
pub mod forge;

use std::path::Path;

use crate::config::Config;

/// A config whose files live in a fresh temporary folder, with the demo user seeded, a known
/// JWT secret, and small limits so throttling and rate limiting are quick to reach.
pub struct TestEnv {
    dir: tempfile::TempDir,
    pub config: Config,
    pub secret: Vec<u8>,
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
        config.auth.max_concurrent_hashes = 2;
        config.auth.login_throttle.max_failures = TEST_MAX_LOGIN_FAILURES;
        config.auth.login_throttle.window_seconds = 1;
        config.rate_limit.generate.capacity = TEST_RATE_LIMIT;
        config.rate_limit.generate.refill_per_minute = 1;
        edit(&mut config);
        let secret: [u8; 32] = rand::random();
        std::fs::write(&config.auth.secret_file, secret).expect("write the test secret");
        Self {
            dir,
            config,
            secret: secret.to_vec(),
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
/// `what`, once `limit` has passed. The one way tests wait for something to become true.
pub async fn eventually<T>(
    what: &str,
    limit: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened within {limit:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
