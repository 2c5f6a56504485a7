//! Hot reload: a weight change applies within a second under load without failing a request,
//! an invalid edit keeps the running config, and a half-written file does not stick. The
//! binary itself reloads on SIGHUP and stops cleanly on SIGTERM and SIGINT.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shared::testing::client::{client, send};
use shared::testing::eventually;

use proxy::config::ProxyConfig;

use crate::harness::{ChildProxy, Stack, percent};
use crate::observability::{admin_status, admin_status_at, scrape, scrape_at, value_of};

/// `text` with its `new_percent` line set to `percent`: for the edits the config structs
/// cannot hold (an out-of-range weight).
fn with_percent(text: &str, percent: &str) -> String {
    let replaced: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("new_percent") {
                format!("new_percent = {percent}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(text.lines().any(|l| l.starts_with("new_percent")), "{text}");
    replaced.join("\n") + "\n"
}

/// Sides of `count` cookie-less `GET /health` requests: (legacy, new).
async fn split(stack: &Stack, count: usize) -> (usize, usize) {
    let sides: Vec<String> = futures::stream::iter(0..count)
        .map(|_| async {
            let answer = send(client().get(stack.url("/health"))).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let side = answer
                .header("x-served-by")
                .expect("x-served-by")
                .to_owned();
            assert_eq!(answer.json()["backend"], side.as_str());
            side
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let new = sides.iter().filter(|s| *s == "new").count();
    (count - new, new)
}

/// The backend answering a cookie-less request now.
async fn side_now(stack: &Stack) -> String {
    let answer = send(client().get(stack.url("/health"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
        .header("x-served-by")
        .expect("x-served-by")
        .to_owned()
}

fn reload_errors(status: &serde_json::Value) -> u64 {
    status["counts"]["reloads"]["error"]
        .as_u64()
        .expect("counts.reloads.error")
}

/// Background `GET /health` loops until `stop` is set (or their own bounds are reached).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(stack: &Stack, loops: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks = (0..loops)
            .map(|_| {
                let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
                let url = stack.url("/health");
                tokio::spawn(async move {
                    let client = client();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut failures = Vec::new();
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        match client
                            .get(&url)
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await
                        {
                            Ok(r) if r.status() == 200 => {
                                if let Err(e) = r.bytes().await {
                                    failures.push(format!("body: {e}"));
                                }
                            }
                            Ok(r) => failures.push(format!(
                                "status {}: {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(e) => failures.push(format!("error: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, sent, tasks }
    }

    /// Stops the loops; returns how many requests they sent and the failures.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.expect("a load loop"));
        }
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_weight_changes_under_load_apply_within_a_second_without_a_failed_request() {
    let stack = Stack::start(0.0).await;
    let load = Load::start(&stack, 4);
    let percents = [10.0, 50.0, 100.0, 0.0, 50.0, 100.0, 10.0, 0.0, 100.0, 0.0];
    for (generation, percent) in (stack.generation()..).zip(percents) {
        let took = stack.set_percent(percent).await;
        assert!(
            took < Duration::from_secs(1),
            "the edit to {percent} % took {took:?} to apply"
        );
        assert_eq!(
            stack.generation(),
            generation + 1,
            "one edit, one generation"
        );
        assert_eq!(admin_status(&stack).await["newPercent"], percent);
        let (legacy, new) = split(&stack, 50).await;
        match percent {
            0.0 => assert_eq!(new, 0, "at 0 % every request is legacy"),
            100.0 => assert_eq!(legacy, 0, "at 100 % every request is new"),
            // 50 fair coins all landing the same way: 2 in 10^15.
            50.0 => assert!(legacy > 0 && new > 0, "at 50 %: {legacy} legacy, {new} new"),
            // At 10 %, 25 or more of 50 on new: about 1 in 10^8.
            _ => assert!(new < 25, "at 10 %: {legacy} legacy, {new} new"),
        }
    }
    let (sent, failures) = load.finish().await;
    assert!(sent > 0, "the background load sent nothing");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_is_refused_and_the_running_routing_stays() {
    let stack = Stack::start(100.0).await;
    let valid = std::fs::read_to_string(&stack.config_path).expect("read config");
    let generation = stack.generation();
    let invalid_edits = [
        ("an out-of-range weight", with_percent(&valid, "150")),
        ("bad TOML", valid.replacen("[routing]", "[routing", 1)),
        (
            "an unknown backend",
            format!("[backends.canary]\nlisten = \"127.0.0.1:1\"\n{valid}"),
        ),
    ];
    for (what, text) in invalid_edits {
        let errors = reload_errors(&admin_status(&stack).await);
        stack.write_config_text(&text);
        eventually(
            &format!("{what} is refused"),
            Duration::from_secs(5),
            async || (reload_errors(&admin_status(&stack).await) > errors).then_some(()),
        )
        .await;
        assert_eq!(stack.generation(), generation, "{what} made a generation");
        let status = admin_status(&stack).await;
        assert_eq!(status["newPercent"], 100.0, "{what}");
        assert_eq!(status["generation"], generation, "{what}");
        let (legacy, _) = split(&stack, 20).await;
        assert_eq!(legacy, 0, "after {what}, requests still go to new");
    }
    let samples = scrape(&stack).await;
    let refused = value_of(
        &samples,
        "proxy_config_reloads_total",
        &[("result", "error")],
    );
    assert!(refused.is_some_and(|n| n >= 3.0), "{refused:?}");

    // A valid edit after the refusals applies.
    let mut edit = ProxyConfig::parse(&valid, &stack.config_path).expect("valid");
    edit.routing.new_percent = percent(0.0);
    stack.write_config(&edit);
    eventually(
        "the valid edit applies",
        Duration::from_secs(5),
        async || (stack.generation() > generation).then_some(()),
    )
    .await;
    assert_eq!(stack.generation(), generation + 1);
    assert_eq!(admin_status(&stack).await["newPercent"], 0.0);
    let (_, new) = split(&stack, 20).await;
    assert_eq!(new, 0, "after the valid edit to 0 %, requests go to legacy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_does_not_stick() {
    let stack = Stack::start(0.0).await;
    let cut_in_half = |text: &str| {
        // Cut inside a table header, so the half is certainly not a valid config.
        let cut = text.find("[health_check]").expect("a health_check section") + 7;
        text[..cut].to_owned()
    };

    // An editor writing in place: the first half, then at once the whole text.
    let with_percent = |value: f64| {
        let mut config = stack.config();
        config.routing.new_percent = percent(value);
        toml::to_string(&config).expect("a config serialises")
    };
    let full = with_percent(100.0);
    let half = cut_in_half(&full);
    assert!(
        proxy::config::ProxyConfig::parse(&half, &stack.config_path).is_err(),
        "{half}"
    );
    let generation = stack.generation();
    std::fs::write(&stack.config_path, &half).expect("write half");
    std::fs::write(&stack.config_path, &full).expect("write the rest");
    eventually(
        "the whole file is applied",
        Duration::from_secs(5),
        async || (admin_status(&stack).await["newPercent"] == 100.0).then_some(()),
    )
    .await;
    assert!(stack.generation() > generation);
    assert_eq!(side_now(&stack).await, "new");

    // The same, but the reloader certainly reads the half file first (and refuses it).
    let full = with_percent(0.0);
    let half = cut_in_half(&full);
    let errors = reload_errors(&admin_status(&stack).await);
    let generation = stack.generation();
    std::fs::write(&stack.config_path, &half).expect("write half");
    eventually(
        "the half file is refused",
        Duration::from_secs(5),
        async || (reload_errors(&admin_status(&stack).await) > errors).then_some(()),
    )
    .await;
    assert_eq!(
        stack.generation(),
        generation,
        "the half file made a generation"
    );
    assert_eq!(side_now(&stack).await, "new", "the running config stays");
    std::fs::write(&stack.config_path, &full).expect("write the rest");
    eventually(
        "the completed file is applied",
        Duration::from_secs(5),
        async || (admin_status(&stack).await["newPercent"] == 0.0).then_some(()),
    )
    .await;
    assert_eq!(stack.generation(), generation + 1);
    assert_eq!(side_now(&stack).await, "legacy");
}

/// `counts.reloads.ok` of a proxy's `/admin/status`.
async fn reloads_ok(admin_url: &str) -> u64 {
    admin_status_at(admin_url).await["counts"]["reloads"]["ok"]
        .as_u64()
        .expect("counts.reloads.ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    // The real binary in its own process, so the signal goes to it and to nothing else.
    let proxy = ChildProxy::start().await;
    let before = reloads_ok(&proxy.admin_url).await;
    // The file is unchanged, so only SIGHUP's forced reload can count one.
    proxy.signal("HUP");
    eventually(
        "SIGHUP reloads the config",
        Duration::from_secs(5),
        async || (reloads_ok(&proxy.admin_url).await > before).then_some(()),
    )
    .await;
    assert_eq!(reloads_ok(&proxy.admin_url).await, before + 1);
    let samples = scrape_at(&proxy.admin_url).await;
    assert_eq!(
        value_of(&samples, "proxy_config_reloads_total", &[("result", "ok")]),
        Some((before + 1) as f64)
    );
    assert_eq!(
        admin_status_at(&proxy.admin_url).await["generation"],
        1,
        "the same content makes no new generation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_the_binary_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut proxy = ChildProxy::start().await;
        proxy.signal(signal);
        let status = proxy.exited(Duration::from_secs(10)).await;
        assert!(status.success(), "after SIG{signal}: {status}");
    }
}
