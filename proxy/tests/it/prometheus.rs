//! A real Prometheus for tests (Debian's `prometheus`, which `scripts/install --test`
//! installs): a child process on a free loopback port, scraping the loopback targets it is
//! given every second, its storage in a temporary folder, killed when dropped. Its generated
//! `prometheus.yml` holds those targets and nothing else — no remote write, no alerting, no
//! service discovery — so it reaches nothing but loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shared::testing::client::client;
use shared::testing::eventually;

/// How long a fresh Prometheus may take to say it is ready.
const START_LIMIT: Duration = Duration::from_secs(30);
/// The job every target is scraped under, for `rollout.analysis.prometheus_selector`.
pub const JOB: &str = "canary-proxy";

pub struct PrometheusServer {
    child: Option<Child>,
    port: u16,
    folder: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (each a loopback `host:port` serving `/metrics`)
    /// every second, and waits until it is ready.
    pub async fn scraping(targets: &[SocketAddr]) -> Self {
        const ATTEMPTS: usize = 3;
        for target in targets {
            assert!(
                target.ip().is_loopback(),
                "{target}: a test's Prometheus scrapes loopback only"
            );
        }
        let folder = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(folder.path().join("prometheus.yml"), config(targets))
            .expect("write prometheus.yml");
        let mut server = Self {
            child: None,
            port: 0,
            folder,
        };
        for _ in 0..ATTEMPTS {
            // Picked free and released (Prometheus cannot take a bound socket), so another
            // process may take it first; then Prometheus exits and another port is tried.
            server.port = shared::testing::free_loopback_port();
            if server.spawn_and_wait().await {
                return server;
            }
        }
        panic!(
            "prometheus found no free port in {ATTEMPTS} attempts; its log:\n{}",
            server.log()
        );
    }

    /// Where its HTTP API is: `rollout.analysis.prometheus_url`.
    pub fn url(&self) -> String {
        format!(
            "http://{}",
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
        )
    }

    fn log_path(&self) -> PathBuf {
        self.folder.path().join("prometheus.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// One instant query's result, as the HTTP API's JSON `data.result`.
    pub async fn query(&self, promql: &str) -> serde_json::Value {
        let answer: serde_json::Value = client()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .await
            .expect("query Prometheus")
            .json()
            .await
            .expect("Prometheus answers JSON");
        answer["data"]["result"].clone()
    }

    /// Waits (bounded) until every target has been scraped successfully at least once.
    pub async fn wait_until_scraped(&self, targets: usize) {
        eventually(
            "Prometheus has scraped every target",
            START_LIMIT,
            async || {
                let up = self.query(&format!("up{{job=\"{JOB}\"}} == 1")).await;
                (up.as_array().map_or(0, Vec::len) == targets).then_some(())
            },
        )
        .await;
    }

    /// Spawns on `self.port`; true once it is ready, false if it exited first.
    async fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::File::create(self.log_path()).expect("create the Prometheus log");
        let folder = self.folder.path();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                folder.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                folder.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run prometheus ({e}); `scripts/install --test` installs it")
            });
        self.child = Some(child);
        let ready = format!("{}/-/ready", self.url());
        let up = eventually("prometheus is ready or exits", START_LIMIT, async || {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().expect("the child's state").is_some()
            {
                return Some(false);
            }
            let answer = client().get(&ready).send().await.ok()?;
            answer.status().is_success().then_some(true)
        })
        .await;
        if !up {
            self.child = None;
        }
        up
    }
}

/// `prometheus.yml`: one job scraping `targets` every second; nothing else.
fn config(targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
