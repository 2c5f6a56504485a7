//! A real `redis-server` for tests: a child process on a free loopback port, nothing saved to
//! disk, killed when dropped. A test can kill it mid-run and start a fresh one on the same
//! port, which is what a restarted Redis looks like to its clients (no data, no scripts).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::config::{OnStoreError, RedisUrl, StoreConfig, StoreKind};
use crate::testing::{eventually, free_loopback_port};

/// How long a fresh `redis-server` may take to answer PING.
const START_LIMIT: Duration = Duration::from_secs(10);
/// A store timeout for tests: generous, since on two loaded cores a slow answer is no outage,
/// and a test of an outage kills Redis, which clients see at once.
const TEST_STORE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    folder: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a `redis-server` on a free loopback port and waits until it answers.
    pub async fn start() -> Self {
        const ATTEMPTS: usize = 3;
        let folder = tempfile::tempdir().expect("a temporary folder");
        let mut server = Self {
            child: None,
            port: 0,
            folder,
        };
        for _ in 0..ATTEMPTS {
            // Picked free and released, so another process may take it before Redis binds
            // it; then Redis exits and another port is tried.
            server.port = free_loopback_port();
            if server.spawn_and_wait().await {
                return server;
            }
        }
        panic!(
            "redis-server found no free port in {ATTEMPTS} attempts; its log:\n{}",
            server.log()
        );
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server on the same port, after `kill`: its data and script cache are
    /// empty, as after a restart without persistence.
    pub async fn restart(&mut self) {
        self.kill();
        // Redis binds with SO_REUSEADDR, so the port is free once the old server is reaped.
        assert!(
            self.spawn_and_wait().await,
            "redis-server did not start again on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr())
    }

    /// `[store]` on this server, with `on_store_error` as given.
    pub fn store_config(&self, on_store_error: OnStoreError) -> StoreConfig {
        StoreConfig {
            kind: StoreKind::Redis,
            url: Some(RedisUrl::new(&self.url()).expect("a valid Redis URL")),
            timeout: TEST_STORE_TIMEOUT,
            on_store_error,
        }
    }

    /// A fresh connection of the test's own, to look at or change what the server holds.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("the test's own connection to redis-server")
    }

    fn log_path(&self) -> PathBuf {
        self.folder.path().join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Spawns on `self.port`; true once it answers PING, false if it exited first.
    async fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::File::create(self.log_path()).expect("create the Redis log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.folder.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); `scripts/install --test` installs it")
            });
        self.child = Some(child);
        let url = self.url();
        let up = eventually(
            "redis-server answers PING or exits",
            START_LIMIT,
            async || {
                if let Some(child) = self.child.as_mut()
                    && child.try_wait().expect("the child's state").is_some()
                {
                    return Some(false);
                }
                ping(&url).await.then_some(true)
            },
        )
        .await;
        if !up {
            self.child = None;
        }
        up
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .is_ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The contract's cases that decide with the stores (the budget, the throttle, and the
/// shadows that must leave both alone), each against a backend whose `[store]` is a fresh
/// `redis-server` of its own: `contract_on_redis_tests!(new_backend::testing::start)`. The
/// other cases never touch a store; `contract_tests!` runs every case on SQLite.
///
/// `on_store_error = "deny"`, so a Redis that failed would show as a 503, never be hidden
/// by a per-process budget.
#[macro_export]
macro_rules! contract_on_redis_tests {
    ($start:path) => {
        $crate::contract_on_redis_tests! { @cases $start;
            throttle::login_throttle_locks_then_unlocks in a_short_window,
            throttle::login_success_resets_the_throttle in a_long_window,
            generate::generate_rate_limit_counts_down_then_429,
            shadow::shadow_generates_spend_no_budget,
            shadow::shadow_logins_leave_the_throttle_alone in a_long_window,
        }
    };
    (@cases $start:path; $($module:ident :: $case:ident $(in $env:ident)?),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let redis = $crate::testing::redis::RedisServer::start().await;
                let mut env = $crate::contract_tests!(@env $module $($env)?);
                env.config.store = redis.store_config($crate::config::OnStoreError::Deny);
                let server = $start(&env).await;
                $crate::testing::contract::$module::$case(&server, &env).await;
            }
        )*
    };
}
