//! Zero-downtime upgrade of the proxy binary: under a steady load through the proxy, with a
//! streamed generation open, a successor started with `--upgrade` takes the listening sockets
//! over. No connection is refused, no request fails, the stream ends with its final event, the
//! predecessor exits cleanly, and the successor's pid answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::config::value::{Millis, Seconds};
use futures::StreamExt;
use proxy::config::{ProxyConfig, TlsSection};
use serde_json::{Value, json};
use shared::routes::{GENERATE, HEALTH, LOGIN};
use shared::testing::client::{Answer, client, send};
use shared::testing::{TestEnv, eventually};

use crate::harness::{
    ChildProxy, Refusing, addr_of, start_legacy, start_new, upgrade_exit, write_config,
};
use crate::tls::https_client;

/// Bounds of the load: each worker sends at most this many requests, for at most this long.
const REQUESTS_PER_WORKER: usize = 20_000;
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// What one load worker saw.
#[derive(Default)]
struct Tally {
    refused: Vec<String>,
    failed: Vec<String>,
}

/// A steady, bounded load of `GET /health` through the proxy: half the workers keep their
/// connections alive between requests, half open one per request.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let workers = [true, true, false, false]
            .into_iter()
            .map(|keep_alive| {
                let client = if keep_alive {
                    client()
                } else {
                    reqwest::Client::builder()
                        .no_proxy()
                        .pool_max_idle_per_host(0)
                        .build()
                        .expect("a reqwest client")
                };
                let (url, stop, answered) = (url.clone(), Arc::clone(&stop), Arc::clone(&answered));
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let deadline = Instant::now() + LOAD_LIMIT;
                    for _ in 0..REQUESTS_PER_WORKER {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match client.get(&url).send().await {
                            Ok(response) => {
                                let status = response.status();
                                match response.bytes().await {
                                    Ok(_) if status.is_success() => {
                                        answered.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Ok(_) => tally.failed.push(format!("status {status}")),
                                    Err(error) => tally.failed.push(format!("body: {error:?}")),
                                }
                            }
                            Err(error) if error.is_connect() => {
                                tally.refused.push(format!("{error:?}"))
                            }
                            Err(error) => tally.failed.push(format!("{error:?}")),
                        }
                    }
                    tally
                })
            })
            .collect();
        Self {
            stop,
            answered,
            workers,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `more` requests beyond those answered so far are answered.
    async fn answers(&self, more: usize, what: &str) {
        let target = self.answered() + more;
        eventually(what, Duration::from_secs(20), async || {
            (self.answered() >= target).then_some(())
        })
        .await;
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for worker in self.workers {
            let tally = worker.await.expect("a load worker");
            all.refused.extend(tally.refused);
            all.failed.extend(tally.failed);
        }
        all
    }
}

async fn status(proxy: &ChildProxy) -> Option<Value> {
    // A connection of its own each time: never one the predecessor is closing.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .ok()?;
    let response = client
        .get(format!("{}/admin/status", proxy.admin_url))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

async fn login(proxy: &ChildProxy) -> String {
    let answer = send(
        client()
            .post(format!("{}{LOGIN}", proxy.base_url))
            .header("content-type", "application/json")
            .body(
                json!({"email": shared::service::DEMO_EMAIL, "password": shared::service::DEMO_PASSWORD})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(answer.status, 200, "demo login: {}", answer.body);
    answer.json()["token"].as_str().expect("a token").to_owned()
}

/// Upgrades a running proxy binary to a successor on its config after `edit`, under load and
/// with a stream open; returns the successor's `/admin/status`.
async fn hand_over(edit: impl FnOnce(&mut ProxyConfig)) -> (Value, Value) {
    // 20 words at 100 ms each: the stream is still open when the hand-over happens.
    let env = TestEnv::with(|config| config.generate.local.token_delay_ms = Millis::of(100));
    let (legacy, new) = (start_legacy(&env).await, start_new(&env).await);
    let mut config = ProxyConfig::default();
    config.backends.legacy.listen = addr_of(&legacy);
    config.backends.new.listen = addr_of(&new);
    config.shadow.secret_file = env.dir().join("shadow.secret");
    config.health_check.interval_ms = Millis::of(100);
    // Long enough for the stream to end on the predecessor.
    config.proxy.shutdown_grace_seconds = Seconds::of(5);
    let mut proxy = ChildProxy::start_graceful(config, |text| text, Vec::new()).await;
    let before = status(&proxy).await.expect("the predecessor's status");
    assert_eq!(before["process"]["pid"], proxy.pid());

    let load = Load::start(format!("{}{HEALTH}", proxy.base_url));
    load.answers(50, "the load runs through the predecessor")
        .await;

    let token = login(&proxy).await;
    let stream = client()
        .post(format!("{}{GENERATE}", proxy.base_url))
        .header("content-type", "application/json")
        .bearer_auth(&token)
        .body(
            json!({"prompt": "stream me across an upgrade", "maxTokens": 20, "stream": true})
                .to_string(),
        )
        .send()
        .await
        .expect("the predecessor answers");
    assert_eq!(stream.status(), 200);
    let headers = stream.headers().clone();
    let mut body = stream.bytes_stream();
    let mut received = String::new();
    // The stream has begun on the predecessor before the hand-over (timeouts: hang guards).
    while !received.contains("event: delta") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a first delta")
            .expect("the stream goes on")
            .expect("a body chunk");
        received.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }

    let mut predecessor = proxy.upgrade(edit).await;
    let successor = proxy.pid();
    assert_ne!(predecessor.pid(), successor);
    eventually(
        "the successor answers on the admin listener",
        Duration::from_secs(10),
        async || {
            let answer = status(&proxy).await?;
            (answer["process"]["pid"] == successor).then_some(())
        },
    )
    .await;
    load.answers(50, "the load runs through the hand-over")
        .await;

    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the stream goes on or ends")
    {
        let chunk = chunk.expect("the stream is not cut by the hand-over");
        received.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
    let events = Answer {
        status: 200,
        headers,
        body: received,
    }
    .events();
    let (last, deltas) = events.split_last().expect("events");
    assert_eq!(last.0, "done", "{events:?}");
    assert_eq!(deltas.len(), 20, "{events:?}");

    let exit = predecessor.exited(Duration::from_secs(30)).await;
    assert!(exit.success(), "the predecessor's exit: {exit}");
    load.answers(50, "the load runs through the successor alone")
        .await;
    let tally = load.stop().await;
    assert!(
        tally.refused.is_empty(),
        "{} refused: {:?}",
        tally.refused.len(),
        tally.refused.first()
    );
    assert!(
        tally.failed.is_empty(),
        "{} failed: {:?}",
        tally.failed.len(),
        tally.failed.first()
    );
    let after = status(&proxy).await.expect("the successor's status");
    assert_eq!(after["process"]["pid"], successor);
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_over_without_a_refused_or_failed_request() {
    let (before, after) = hand_over(|_| {}).await;
    assert_eq!(after["newPercent"], before["newPercent"]);
    let generation = before["generation"].as_u64().expect("a generation");
    assert_eq!(
        after["generation"],
        generation + 1,
        "the successor's load follows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_applies_a_setting_that_needs_a_restart() {
    let threads = std::num::NonZeroUsize::new(2).expect("non-zero");
    let (before, after) = hand_over(|config| config.proxy.threads = threads).await;
    assert_eq!(before["process"]["threads"], 1);
    assert_eq!(after["process"]["threads"], 2);
}

/// A successor that cannot serve (its edited config wants an admin address another socket
/// holds) exits with an error naming the address; the running proxy keeps serving, and lets
/// go of its controller and its control socket, so the next upgrade succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_running_proxy_serving() {
    let mut proxy = ChildProxy::start().await;
    let running = proxy.pid();
    let taken = Refusing::bind();
    let (exit, stderr) = proxy
        .failed_upgrade(|config| config.proxy.admin_listen = taken.addr())
        .await;
    assert!(!exit.success(), "{exit}: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {}", taken.addr())),
        "{stderr}"
    );
    let answer = status(&proxy).await.expect("the running proxy answers");
    assert_eq!(answer["process"]["pid"], running);

    let any_port = "127.0.0.1:0".parse().expect("an address");
    let mut predecessor = proxy
        .upgrade(|config| config.proxy.admin_listen = any_port)
        .await;
    assert_eq!(predecessor.pid(), running);
    let exit = predecessor.exited(Duration::from_secs(30)).await;
    assert!(exit.success(), "the predecessor's exit: {exit}");
    let answer = status(&proxy).await.expect("the successor answers");
    assert_eq!(answer["process"]["pid"], proxy.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_no_proxy_running_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let config_path = dir.path().join("proxy.toml");
    let (legacy, new) = (Refusing::bind(), Refusing::bind());
    let mut config = ProxyConfig::default();
    config.backends.legacy.listen = legacy.addr();
    config.backends.new.listen = new.addr();
    write_config(&config_path, &config);
    let (exit, stderr) = upgrade_exit(&config_path).await;
    assert!(!exit.success(), "{exit}: {stderr}");
    assert!(
        stderr.contains("no running proxy answers on proxy.upgrade_socket"),
        "{stderr}"
    );
}

/// The TLS listener is handed over too: HTTPS answers at the same address from the successor,
/// on a new connection and on one kept alive from before the hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_tls_listener_over_too() {
    let certificates = tempfile::tempdir().expect("a temporary folder");
    let (cert_file, key_file) =
        proxy::tls::write_dev_certificate(certificates.path()).expect("a development certificate");
    let root = std::fs::read(&cert_file).expect("the certificate");
    let (legacy, new) = (Refusing::bind(), Refusing::bind());
    let mut config = ProxyConfig::default();
    config.backends.legacy.listen = legacy.addr();
    config.backends.new.listen = new.addr();
    let any_port = "127.0.0.1:0".parse().expect("an address");
    config.proxy.tls = Some(TlsSection::new(any_port, cert_file, key_file));
    let mut proxy = ChildProxy::start_with(config, |text| text, vec![legacy, new]).await;
    let url = format!(
        "{}{HEALTH}",
        proxy.https_url.as_deref().expect("an HTTPS listener")
    );
    // Both backends refuse: any answer is the proxy's own, which is all this needs.
    let answers = async |client: &reqwest::Client| {
        let response = client.get(&url).send().await.expect("HTTPS answers");
        assert!(response.status().is_server_error(), "{response:?}");
    };
    let kept = https_client(&[&root], false);
    answers(&kept).await;

    let mut predecessor = proxy.upgrade(|_| {}).await;
    let exit = predecessor.exited(Duration::from_secs(30)).await;
    assert!(exit.success(), "the predecessor's exit: {exit}");
    answers(&https_client(&[&root], false)).await;
    answers(&kept).await;
    let answer = status(&proxy).await.expect("the successor answers");
    assert_eq!(answer["process"]["pid"], proxy.pid());
}
