//! The rollout controller end to end: real servers on loopback, a schedule of second-long
//! holds, load from bounded loops of requests, and the controller's own writes to the config
//! file checked on disk. The judge's statistics are tested over simulated traffic in
//! `proxy::rollout`; here it is the wiring: cohorts from real requests, the weight written
//! and applied, the state file, the admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use proxy::config::{AnalysisSection, OnFailure, ProxyConfig, RolloutSection, RolloutStep};
use serde_json::{Value, json};
use shared::testing::client::client;
use shared::testing::{TestEnv, eventually};

use crate::harness::{
    ChildProxy, Refusing, Stack, metrics_text, percent, serve_stand_in, start_legacy,
};

/// Steps of `(percent, hold in seconds, approval)`, judged every 300 ms on a few dozen
/// requests, so a rollout runs in seconds.
pub(crate) fn schedule(steps: &[(f64, u64, bool)]) -> RolloutSection {
    RolloutSection {
        enabled: true,
        steps: (steps.iter())
            .map(|&(value, hold, approval)| RolloutStep {
                percent: percent(value),
                hold: Duration::from_secs(hold),
                approval,
                shadow: false,
            })
            .collect(),
        on_failure: OnFailure::Rollback,
        analysis: AnalysisSection {
            interval: Duration::from_millis(300),
            min_requests: 30.try_into().expect("non-zero"),
            max_inconclusive: Duration::from_secs(60),
            passes_to_promote: 2.try_into().expect("non-zero"),
            ..AnalysisSection::default()
        },
        ..RolloutSection::default()
    }
}

pub(crate) async fn rollout_status(admin_url: &str) -> Value {
    let response = client()
        .get(format!("{admin_url}/admin/rollout"))
        .send()
        .await
        .expect("GET /admin/rollout");
    assert_eq!(response.status(), 200);
    response.json().await.expect("the rollout status is JSON")
}

pub(crate) async fn post_command(admin_url: &str, command: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{admin_url}/admin/rollout/{command}"))
        .json(&body)
        .send()
        .await
        .expect("POST a rollout command")
}

/// Waits (bounded) until the rollout status satisfies `done`, and returns it.
pub(crate) async fn wait_for_status(
    admin_url: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, limit, async || {
        let status = rollout_status(admin_url).await;
        done(&status).then_some(status)
    })
    .await
}

/// Waits until the rollout has entered its first step.
pub(crate) async fn first_step_entered(admin_url: &str) -> Value {
    wait_for_status(
        admin_url,
        "the first step is entered",
        Duration::from_secs(10),
        |s| s["phase"] == "progressing",
    )
    .await
}

/// A stack whose rollout holds (for an hour) at `percent` on its first step, once it is there.
async fn holding_at(percent: f64) -> Stack {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        config.rollout = schedule(&[(percent, 3_600, false), (100.0, 0, false)]);
    })
    .await;
    first_step_entered(&stack.proxy.admin_url).await;
    stack
}

/// Waits until `n` more evaluations have been made.
pub(crate) async fn wait_evaluations(admin_url: &str, n: usize) -> Value {
    let mut last = rollout_status(admin_url).await["lastEvaluation"]["at"].clone();
    let mut status = Value::Null;
    for _ in 0..n {
        status = wait_for_status(admin_url, "an evaluation", Duration::from_secs(10), |s| {
            s["lastEvaluation"]["at"] != last
        })
        .await;
        last = status["lastEvaluation"]["at"].clone();
    }
    status
}

/// `routing.new_percent` in the file on disk now.
pub(crate) fn percent_on_disk(path: &std::path::Path) -> f64 {
    ProxyConfig::load(path)
        .expect("the file the controller wrote is a valid config")
        .routing
        .new_percent
        .as_percent()
}

/// Requests without a cookie from `workers` loops until `stop` is set (or a bound of time
/// passes), so every request is a new user with a random bucket; counts what was sent.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(url: String, verify: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let workers = (0..6)
            .map(|_| {
                let (stop, sent, url) = (Arc::clone(&stop), Arc::clone(&sent), url.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                        let request = if verify {
                            client.post(&url).json(&json!({}))
                        } else {
                            client.get(&url)
                        };
                        let _ = request.send().await.map(|r| r.status());
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            workers,
        }
    }

    pub(crate) async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.await;
        }
        self.sent.load(Ordering::Relaxed)
    }
}

/// A stand-in for the new backend that fails `/api/auth/verify` with 500 once in every
/// `fail_one_in` requests (else 401, as the real one answers a request without a token) and
/// answers its health checks, so only the judge can tell.
pub(crate) async fn failing_new(fail_one_in: u64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let count = Arc::new(AtomicU64::new(0));
    let verify = move || {
        let count = Arc::clone(&count);
        async move {
            let n = count.fetch_add(1, Ordering::Relaxed);
            let status = if n.is_multiple_of(fail_one_in) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::UNAUTHORIZED
            };
            (
                status,
                [("content-type", "application/json")],
                r#"{"error":{"code":"UNAUTHORIZED","message":"missing token"}}"#,
            )
        }
    };
    let app = Router::new()
        .route("/health", get(|| async { r#"{"status":"ok"}"# }))
        .route("/api/auth/verify", post(verify));
    serve_stand_in(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_new_backend_is_rolled_back_and_the_file_says_zero_with_its_comments() {
    let env = TestEnv::new();
    let legacy = start_legacy(&env).await;
    let (new, _server) = failing_new(4).await;
    let mut config = ProxyConfig::default();
    config.backends.legacy.listen = legacy
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    config.backends.new.listen = new;
    config.rollout = schedule(&[(20.0, 1, false), (50.0, 1, false), (100.0, 0, false)]);
    config.rollout.state_file = env.dir().join("rollout-state.json");
    let comment = "# The operator's notes: keep this line.";
    // The proxy binary itself, as a process, with a commented file.
    let proxy = ChildProxy::start_with(
        config,
        |text| {
            let line = "new_percent = 0.0\n";
            assert!(text.contains(line), "{text}");
            let text = text.replace(
                line,
                "new_percent = 0   # moved by the rollout controller\n",
            );
            format!("{comment}\n{text}\n# The end.\n")
        },
        Vec::<Refusing>::new(),
    )
    .await;
    let entered = first_step_entered(&proxy.admin_url).await;
    assert_eq!(entered["currentPercent"], 20.0);

    let load = Load::start(format!("{}/api/auth/verify", proxy.base_url), true);
    let status = wait_for_status(
        &proxy.admin_url,
        "the rollout rolls back",
        Duration::from_secs(30),
        |s| s["phase"] == "rolled_back",
    )
    .await;
    let sent = load.stop().await;

    assert!(sent > 0);
    assert_eq!(
        status["rollbackReason"], "critical_error_rate",
        "{status:#}"
    );
    assert_eq!(status["currentPercent"], 0.0);
    let evaluation = &status["lastEvaluation"];
    assert_eq!(evaluation["critical"], "critical_error_rate", "{status:#}");
    let text = std::fs::read_to_string(&proxy.config_path).expect("read the config");
    assert!(text.starts_with(comment), "{text}");
    assert!(text.ends_with("# The end.\n"), "{text}");
    assert!(
        text.contains("new_percent = 0   # moved by the rollout controller"),
        "{text}"
    );
    assert_eq!(percent_on_disk(&proxy.config_path), 0.0);
    // The step never went further than the first.
    assert_eq!(status["stepIndex"], 0, "{status:#}");
    let metrics = metrics_text(&proxy.admin_url).await;
    assert!(
        metrics.contains(r#"proxy_rollout_rollbacks_total{reason="critical_error_rate"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"proxy_rollout_phase{phase="rolled_back"} 1"#));
}

/// A stand-in for the new backend whose `/health` answers correctly but `delay` late.
async fn slow_new(delay: Duration) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let health = move || async move {
        tokio::time::sleep(delay).await;
        r#"{"status":"ok"}"#
    };
    serve_stand_in(Router::new().route("/health", get(health))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_new_backend_fails_on_latency_and_is_rolled_back() {
    let (slow, _server) = slow_new(Duration::from_millis(20)).await;
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        config.backends.new.listen = slow;
        config.rollout = schedule(&[(20.0, 1, false), (100.0, 0, false)]);
    })
    .await;
    let admin = &stack.proxy.admin_url;
    let load = Load::start(stack.url("/health"), false);
    let status = wait_for_status(
        admin,
        "the rollout rolls back",
        Duration::from_secs(30),
        |s| s["phase"] == "rolled_back",
    )
    .await;
    load.stop().await;
    assert_eq!(status["rollbackReason"], "failures", "{status:#}");
    let failed: Vec<&Value> = (status["lastEvaluation"]["verdicts"]
        .as_array()
        .unwrap()
        .iter())
    .filter(|v| v["scope"] == "overall" && v["outcome"] == "fail")
    .map(|v| &v["metric"])
    .collect();
    assert!(failed.contains(&&json!("latency_median")), "{status:#}");
    assert_eq!(percent_on_disk(&stack.config_path), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_real_new_backend_the_schedule_reaches_100() {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        config.rollout = schedule(&[(10.0, 1, false), (50.0, 1, false), (100.0, 0, false)]);
        // Both backends answer /health in well under a millisecond, so a run of requests
        // on a loaded test machine can differ by more than 10 % by chance of scheduling;
        // this test is about the schedule, the judge's tolerance is tested in simulation.
        config.rollout.analysis.latency_tolerance = 2.0;
    })
    .await;
    let admin = &stack.proxy.admin_url;
    let load = Load::start(stack.url("/health"), false);
    let status = wait_for_status(
        admin,
        "the rollout completes",
        Duration::from_secs(60),
        |s| s["phase"] == "completed" || s["phase"] == "rolled_back" || s["phase"] == "paused",
    )
    .await;
    load.stop().await;
    assert_eq!(status["phase"], "completed", "{status:#}");
    assert_eq!(status["currentPercent"], 100.0);
    assert_eq!(percent_on_disk(&stack.config_path), 100.0);
    let entered: Vec<&Value> = (status["events"].as_array().unwrap().iter())
        .filter(|e| e["event"] == "step_entered")
        .map(|e| &e["percent"])
        .collect();
    assert_eq!(entered, [10.0, 50.0, 100.0], "{status:#}");
    // Promotions came from passing evaluations on real samples.
    let metrics = metrics_text(admin).await;
    let passes = metrics
        .lines()
        .find(|l| l.starts_with(r#"proxy_rollout_verdicts_total{metric="overall",verdict="pass"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(passes >= 4, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_traffic_it_stays_on_its_first_step() {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        config.rollout = schedule(&[(10.0, 0, false), (100.0, 0, false)]);
        config.rollout.analysis.max_inconclusive = Duration::from_secs(1);
    })
    .await;
    let admin = &stack.proxy.admin_url;
    let status = wait_for_status(
        admin,
        "it pauses for lack of data",
        Duration::from_secs(10),
        |s| s["phase"] == "paused",
    )
    .await;
    assert_eq!(status["pauseReason"], "inconclusive", "{status:#}");
    assert_eq!(status["stepIndex"], 0);
    assert_eq!(status["currentPercent"], 10.0);
    assert_eq!(status["lastEvaluation"]["outcome"], "inconclusive");
    let after = wait_evaluations(admin, 2).await;
    assert_eq!(
        (after["phase"].clone(), after["stepIndex"].clone()),
        (json!("paused"), json!(0))
    );
    assert_eq!(percent_on_disk(&stack.config_path), 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_hold_resumes_the_same_step_with_the_hold_already_served() {
    let mut stack = holding_at(10.0).await;
    let before = rollout_status(&stack.proxy.admin_url).await;
    // Evaluations are made, and the hold runs, before the restart.
    wait_evaluations(&stack.proxy.admin_url, 2).await;

    // The first proxy is gone before the second starts: one controller at a time.
    stack.proxy.stop();
    stack.proxy =
        crate::harness::start_proxy(&stack.config_path, crate::harness::bind_listeners()).await;
    let after = rollout_status(&stack.proxy.admin_url).await;
    assert_eq!(after["phase"], "progressing", "{after:#}");
    assert_eq!(after["stepIndex"], 0);
    assert_eq!(after["stepStartedAt"], before["stepStartedAt"], "{after:#}");
    let remaining = after["holdRemainingSeconds"].as_f64().unwrap();
    let first = before["holdRemainingSeconds"].as_f64().unwrap();
    assert!(
        remaining < first,
        "{remaining} after the restart, {first} before"
    );
    assert_eq!(percent_on_disk(&stack.config_path), 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_of_new_percent_pauses_the_controller_which_never_overrides_it() {
    let stack = holding_at(10.0).await;
    let admin = &stack.proxy.admin_url;
    stack.set_percent(33.0).await;
    let status = wait_for_status(
        admin,
        "the controller pauses",
        Duration::from_secs(10),
        |s| s["phase"] == "paused",
    )
    .await;
    assert_eq!(status["pauseReason"], "manual_override", "{status:#}");
    wait_evaluations(admin, 3).await;
    assert_eq!(percent_on_disk(&stack.config_path), 33.0);
    assert_eq!(rollout_status(admin).await["currentPercent"], 33.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_approve_gets_409_and_a_double_approve_advances_once() {
    let stack = Stack::start_with(TestEnv::new(), 0.0, |config| {
        config.rollout = schedule(&[(10.0, 3_600, true), (100.0, 0, false)]);
    })
    .await;
    let admin = &stack.proxy.admin_url;
    let waiting = wait_for_status(admin, "it awaits approval", Duration::from_secs(10), |s| {
        s["phase"] == "waiting_approval"
    })
    .await;
    assert_eq!(waiting["stepIndex"], 0);
    assert_eq!(waiting["awaitingApprovalStep"], 0);
    assert_eq!(percent_on_disk(&stack.config_path), 0.0);

    let stale = post_command(admin, "approve", json!({"step": 1})).await;
    assert_eq!(stale.status(), 409);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "STALE_APPROVAL", "{body}");

    // Two operators approve the same step at once: one wins, the other is told it is stale.
    let (first, second) = tokio::join!(
        post_command(admin, "approve", json!({"step": 0})),
        post_command(admin, "approve", json!({"step": 0})),
    );
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let status = rollout_status(admin).await;
    assert_eq!(
        (status["phase"].clone(), status["stepIndex"].clone()),
        (json!("progressing"), json!(0))
    );
    let approvals = (status["events"].as_array().unwrap().iter())
        .filter(|e| e["event"] == "approved")
        .count();
    assert_eq!(approvals, 1, "{status:#}");
    assert_eq!(percent_on_disk(&stack.config_path), 10.0);

    // A command needs JSON: a form post (what another site's page could send) is refused.
    let form = client()
        .post(format!("{admin}/admin/rollout/abort"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);

    // Abort rolls back now; resume starts again from the first step.
    let aborted = post_command(admin, "abort", json!({})).await;
    assert_eq!(aborted.status(), 200);
    let aborted: Value = aborted.json().await.unwrap();
    assert_eq!(aborted["phase"], "rolled_back");
    assert_eq!(aborted["rollbackReason"], "aborted");
    assert_eq!(percent_on_disk(&stack.config_path), 0.0);
    let resumed: Value = post_command(admin, "resume", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["phase"], "waiting_approval", "{resumed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_rollout_commands_are_refused_and_the_weight_is_the_operators() {
    let stack = Stack::start(25.0).await;
    let admin = &stack.proxy.admin_url;
    let status = rollout_status(admin).await;
    assert_eq!(status["enabled"], false);
    assert_eq!(status["phase"], "idle");
    let refused = post_command(admin, "pause", json!({})).await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ROLLOUT_DISABLED");
    assert_eq!(percent_on_disk(&stack.config_path), 25.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_going_down_mid_rollout_rolls_back() {
    let mut stack = holding_at(10.0).await;
    let admin = stack.proxy.admin_url.clone();
    drop(stack.new.take());
    let status = wait_for_status(
        &admin,
        "the rollout rolls back",
        Duration::from_secs(10),
        |s| s["phase"] == "rolled_back",
    )
    .await;
    assert_eq!(status["rollbackReason"], "backend_down", "{status:#}");
    assert_eq!(status["lastEvaluation"]["critical"], "backend_down");
    assert_eq!(percent_on_disk(&stack.config_path), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_forced_by_the_override_header_count_in_neither_cohort() {
    let stack = holding_at(50.0).await;
    let admin = &stack.proxy.admin_url;
    // An evaluation boundary, so the next interval holds only what is sent below.
    wait_evaluations(admin, 1).await;
    let http = client();
    for side in ["new", "legacy"].iter().cycle().take(60) {
        let response = http
            .get(stack.url("/health"))
            .header("x-canary", *side)
            .send()
            .await
            .expect("a forced request");
        assert_eq!(response.status(), 200);
    }
    let status = wait_evaluations(admin, 1).await;
    let evaluation = &status["lastEvaluation"];
    assert_eq!(evaluation["canaryRequests"], 0, "{status:#}");
    assert_eq!(evaluation["baselineRequests"], 0, "{status:#}");
    // The same requests without the header are counted.
    for _ in 0..60 {
        http.get(stack.url("/health"))
            .send()
            .await
            .expect("a request");
    }
    let counted = wait_for_status(
        admin,
        "the requests are counted",
        Duration::from_secs(10),
        |s| {
            let evaluation = &s["lastEvaluation"];
            evaluation["canaryRequests"].as_u64().unwrap_or(0)
                + evaluation["baselineRequests"].as_u64().unwrap_or(0)
                > 0
        },
    )
    .await;
    let evaluation = &counted["lastEvaluation"];
    let total = evaluation["canaryRequests"].as_u64().unwrap()
        + evaluation["baselineRequests"].as_u64().unwrap();
    assert!(total <= 60, "{counted:#}");
}
