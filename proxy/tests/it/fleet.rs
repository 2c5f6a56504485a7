//! Several proxies on one `config.toml` and one cookie secret: they route every user alike,
//! follow an edit of the weight together, and never move a user back to legacy while it
//! rises; a proxy of a fleet never makes up a secret of its own; and one controller judges
//! the whole fleet's traffic through Prometheus, rolling back on errors that only another
//! proxy saw.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use proxy::bucket::{self, Source};
use proxy::config::{AnalysisSource, PrometheusUrl, ProxyConfig};
use proxy::fleet::Role;
use proxy::routing::{self, BUCKETS, RouteInput, Side};
use serde_json::Value;
use shared::testing::client::client;
use shared::testing::{TestEnv, TestServer, eventually};

use crate::harness::{
    ChildProxy, Refusing, RunningProxy, bind_listeners, metrics_text, percent, proxy_config,
    serve_state, start_legacy, start_new, start_proxy_as, write_config,
};
use crate::prometheus::{JOB, PrometheusServer};
use crate::rollout::{
    Load, failing_new, first_step_entered, percent_on_disk, post_command, rollout_status, schedule,
    wait_for_status,
};

/// Users whose side is checked with real requests through every proxy, of each kind.
const SAMPLED_USERS: usize = 300;
/// How soon every proxy runs an edit of the shared file: the promise of the README.
const FOLLOW_LIMIT: Duration = Duration::from_millis(1_500);

fn addr_of(server: &TestServer) -> SocketAddr {
    server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("a socket address")
}

/// Writes a 32-byte secret at `path`, as an operator gives one to every proxy host.
fn give_secret(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("a folder")).expect("create the folder");
    let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
    std::fs::write(path, secret).expect("write the cookie secret");
}

/// Proxies on one config file and one secret, in front of one pair of backends.
struct Fleet {
    _env: TestEnv,
    _legacy: TestServer,
    _new: TestServer,
    config_path: PathBuf,
    proxies: Vec<RunningProxy>,
}

impl Fleet {
    async fn start(proxies: usize, new_percent: f64) -> Self {
        let env = TestEnv::new();
        let legacy = start_legacy(&env).await;
        let new = start_new(&env).await;
        let config_path = env.dir().join("proxy.toml");
        let listeners: Vec<_> = (0..proxies).map(|_| bind_listeners()).collect();
        let mut config = proxy_config(
            (addr_of(&legacy), addr_of(&new)),
            &listeners[0],
            new_percent,
        );
        config.proxy.fleet = true;
        config.proxy.cookie_secret_file = env.dir().join("cookie.secret");
        config.shadow.secret_file = env.dir().join("shadow.secret");
        give_secret(&config.proxy.cookie_secret_file);
        write_config(&config_path, &config);
        let mut running = Vec::new();
        for listeners in listeners {
            running.push(start_proxy_as(&config_path, listeners, Role::Follower).await);
        }
        Self {
            _env: env,
            _legacy: legacy,
            _new: new,
            config_path,
            proxies: running,
        }
    }

    fn config(&self) -> ProxyConfig {
        ProxyConfig::load(&self.config_path).expect("the fleet's config is valid")
    }

    /// Writes `new_percent` into the shared file and waits until every proxy runs it,
    /// failing if one does not within `FOLLOW_LIMIT`.
    async fn set_percent(&self, new_percent: f64) {
        let mut config = self.config();
        config.routing.new_percent = percent(new_percent);
        write_config(&self.config_path, &config);
        let what = format!("every proxy runs {new_percent} % within {FOLLOW_LIMIT:?}");
        eventually(&what, FOLLOW_LIMIT, async || {
            for proxy in &self.proxies {
                let status = admin_status(&proxy.admin_url).await;
                if status["newPercent"].as_f64() != Some(new_percent) {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
}

async fn admin_status(admin_url: &str) -> Value {
    client()
        .get(format!("{admin_url}/admin/status"))
        .send()
        .await
        .expect("GET /admin/status")
        .json()
        .await
        .expect("the status is JSON")
}

/// A user as a proxy sees one: a cookie the fleet signed, or a bearer token's subject.
#[derive(Debug, Clone)]
enum User {
    Cookie(String),
    Subject(String),
}

impl User {
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let (name, value) = match self {
            User::Cookie(value) => ("cookie", format!("canary_bucket={value}")),
            User::Subject(subject) => ("authorization", bearer(subject)),
        };
        headers.insert(name, HeaderValue::from_str(&value).expect("a header value"));
        headers
    }
}

/// A bearer token with this subject: the proxy reads `sub` for stickiness without
/// verifying it, and `/health` asks for no token.
fn bearer(subject: &str) -> String {
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"sub":"{subject}"}}"#));
    format!("Bearer h.{payload}.s")
}

/// Every bucket's cookie, signed by `proxy`, and 10,000 subjects.
fn users(proxy: &RunningProxy) -> Vec<User> {
    let cookies = (0..BUCKETS).map(|bucket| User::Cookie(proxy.state.signer.cookie_value(bucket)));
    let subjects = (0..10_000).map(|n| User::Subject(format!("user-{n}")));
    cookies.chain(subjects).collect()
}

/// The side `proxy` sends `user` to, by its own pure steps with its secret and weight; a
/// cookie it could not verify (another secret) is a failure, not a fresh draw.
fn side_by_its_steps(proxy: &RunningProxy, user: &User) -> Side {
    let generation = proxy.state.live.load();
    let settings = bucket::Settings {
        cookie_name: generation.settings.proxy.cookie_name.as_str(),
        override_header: None,
    };
    let choice = bucket::choose(&user.headers(), settings, &proxy.state.signer, || {
        panic!("{user:?}: the proxy would draw a bucket, so it cannot verify the cookie")
    });
    let expected = match user {
        User::Cookie(_) => Source::Cookie,
        User::Subject(_) => Source::Token,
    };
    assert_eq!(choice.source, expected, "{user:?}");
    let route = routing::route(RouteInput {
        bucket: choice.bucket,
        new_basis_points: generation.settings.new_basis_points(),
        forced: None,
        legacy_up: true,
        new_up: true,
    })
    .expect("both backends up");
    route.side
}

/// The side that answered `user` through `proxy`, by `x-served-by`; a proxy that accepted
/// the user's cookie sets none of its own.
async fn side_served(client: &reqwest::Client, proxy: &RunningProxy, user: &User) -> Side {
    let response = client
        .get(proxy.url("/health"))
        .headers(user.headers())
        .send()
        .await
        .expect("GET /health through a proxy");
    assert_eq!(response.status(), 200, "{user:?}");
    if let User::Cookie(_) = user {
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{user:?}: the proxy re-pinned a cookie the fleet signed"
        );
    }
    let served = response
        .headers()
        .get("x-served-by")
        .map(|v| v.as_bytes().to_vec());
    Side::parse(served.as_deref().unwrap_or_default()).expect("x-served-by: legacy or new")
}

/// The sides that answered `users` through `proxy`, a few requests at a time.
async fn sides_served(proxy: &RunningProxy, users: &[User]) -> Vec<Side> {
    let client = client();
    futures::stream::iter(users)
        .map(|user| side_served(&client, proxy, user))
        .buffered(8)
        .collect()
        .await
}

/// Every `step`-th user, `SAMPLED_USERS` of each kind.
fn sample(users: &[User]) -> Vec<User> {
    let (cookies, subjects) = users.split_at(usize::from(BUCKETS));
    let every = |of: &[User]| {
        let step = of.len() / SAMPLED_USERS;
        of.iter()
            .step_by(step)
            .take(SAMPLED_USERS)
            .cloned()
            .collect::<Vec<_>>()
    };
    [every(cookies), every(subjects)].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_proxies_on_one_config_and_secret_send_every_user_to_the_same_side() {
    let fleet = Fleet::start(3, 37.5).await;
    let users = users(&fleet.proxies[0]);
    assert_eq!(users.len(), 20_000);

    // All 20,000 by each proxy's own steps: its secret verifies the cookie, its weight
    // places the bucket.
    let sides: Vec<Vec<Side>> = (fleet.proxies.iter())
        .map(|proxy| {
            users
                .iter()
                .map(|user| side_by_its_steps(proxy, user))
                .collect()
        })
        .collect();
    for (n, other) in sides.iter().enumerate().skip(1) {
        let differ = (users.iter().zip(sides[0].iter().zip(other)))
            .filter(|(_, (a, b))| a != b)
            .count();
        assert_eq!(
            differ, 0,
            "proxy {n} sends {differ} users elsewhere than proxy 0"
        );
    }
    let on_new = sides[0].iter().filter(|side| **side == Side::New).count();
    // Cookies: exactly 3,750 of the 10,000 buckets; subjects: about as many.
    assert!(
        (7_000..8_000).contains(&on_new),
        "{on_new} of 20,000 on new at 37.5 %"
    );

    // A sample by real requests through each proxy: the side that answers is that side.
    let sampled = sample(&users);
    let expected: Vec<Side> = (sampled.iter())
        .map(|user| side_by_its_steps(&fleet.proxies[0], user))
        .collect();
    assert!(expected.contains(&Side::New) && expected.contains(&Side::Legacy));
    for (n, proxy) in fleet.proxies.iter().enumerate() {
        let served = sides_served(proxy, &sampled).await;
        let differ = (sampled.iter().zip(expected.iter().zip(&served)))
            .filter(|(_, (a, b))| a != b)
            .map(|(user, _)| user)
            .collect::<Vec<_>>();
        assert!(
            differ.is_empty(),
            "proxy {n} served {} users elsewhere: {differ:?}",
            differ.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_the_weight_reaches_every_proxy_within_one_and_a_half_seconds() {
    let fleet = Fleet::start(3, 0.0).await;
    let generations = async || {
        let mut seen = Vec::new();
        for proxy in &fleet.proxies {
            seen.push(admin_status(&proxy.admin_url).await["generation"].clone());
        }
        seen
    };
    let before = generations().await;
    for new_percent in [12.5, 60.0, 100.0, 0.0] {
        fleet.set_percent(new_percent).await;
    }
    let after = generations().await;
    for (n, (before, after)) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            after.as_u64(),
            before.as_u64().map(|g| g + 4),
            "proxy {n} ran every edit, each once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_moves_back_to_legacy_while_the_weight_rises() {
    let fleet = Fleet::start(3, 0.0).await;
    // Users who brought a cookie from any proxy, users with tokens, and new visitors who
    // keep the cookie the first proxy they meet pins.
    let users = sample(&users(&fleet.proxies[0]));
    let (cookies, subjects) = users.split_at(SAMPLED_USERS);
    let mut users: Vec<User> = [&cookies[..100], &subjects[..100]].concat();
    let client = client();
    for n in 0..100 {
        let proxy = &fleet.proxies[n % 3];
        let response = client
            .get(proxy.url("/health"))
            .send()
            .await
            .expect("a first visit");
        let pinned = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.strip_prefix("canary_bucket="))
            .expect("a first visit is pinned a bucket")
            .to_owned();
        users.push(User::Cookie(pinned));
    }

    let mut on_new = vec![false; users.len()];
    for (step, new_percent) in [0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 100.0]
        .into_iter()
        .enumerate()
    {
        fleet.set_percent(new_percent).await;
        // Each user through another proxy at each step.
        for (n, proxy) in fleet.proxies.iter().enumerate() {
            let mine: Vec<usize> = (0..users.len()).filter(|u| (u + step) % 3 == n).collect();
            let asked: Vec<User> = mine.iter().map(|&u| users[u].clone()).collect();
            let served = sides_served(proxy, &asked).await;
            for (&u, side) in mine.iter().zip(served) {
                let now_new = side == Side::New;
                assert!(
                    now_new || !on_new[u],
                    "{:?} moved back to legacy at {new_percent} % (proxy {n})",
                    users[u]
                );
                on_new[u] = now_new;
            }
        }
        let count = on_new.iter().filter(|n| **n).count();
        match new_percent {
            0.0 => assert_eq!(count, 0),
            100.0 => assert_eq!(count, users.len()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_starts_while_the_file_changes_runs_what_the_file_says() {
    let fleet = Fleet::start(1, 0.0).await;
    // A second proxy loads the file at 0 %; the controller (here, the test) writes 30 %
    // before the new proxy watches the file.
    let loaded = fleet.config();
    let state = proxy::server::state_as(fleet.config_path.clone(), loaded, Role::Follower)
        .expect("the proxy's state");
    let mut edited = fleet.config();
    edited.routing.new_percent = percent(30.0);
    write_config(&fleet.config_path, &edited);
    let late = serve_state(state, bind_listeners()).await;
    eventually("the late proxy runs 30 %", FOLLOW_LIMIT, async || {
        (admin_status(&late.admin_url).await["newPercent"] == 30.0).then_some(())
    })
    .await;
}

/// A fleet proxy's config with no secret anywhere: `cookie.secret` in `dir` does not exist.
fn config_without_secret(dir: &Path) -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.proxy.cookie_secret_file = dir.join("cookie.secret");
    config.shadow.secret_file = dir.join("shadow.secret");
    config
}

#[test]
fn a_proxy_of_a_fleet_refuses_to_make_up_a_secret_and_says_how_to_give_it_one() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let config_path = dir.path().join("proxy.toml");
    let told = |config: &mut ProxyConfig| config.proxy.fleet = true;
    let judging = |config: &mut ProxyConfig| {
        config.rollout.analysis.source = AnalysisSource::Prometheus;
        config.rollout.analysis.prometheus_url =
            Some(PrometheusUrl::parse("http://127.0.0.1:9090").expect("a URL"));
    };
    type Edit = fn(&mut ProxyConfig);
    let cases: [(&str, Edit, Role, &str); 3] = [
        ("told so", told, Role::Controller, "proxy.fleet = true"),
        (
            "a follower",
            |_| {},
            Role::Follower,
            "rollout.controller = false",
        ),
        (
            "judging the fleet",
            judging,
            Role::Controller,
            "source = \"prometheus\"",
        ),
    ];
    for (what, edit, role, reason) in cases {
        let mut config = config_without_secret(dir.path());
        edit(&mut config);
        let refused = proxy::server::state_as(config_path.clone(), config.clone(), role);
        let error = refused
            .err()
            .unwrap_or_else(|| panic!("{what}: started"))
            .to_string();
        for needed in [
            reason,
            "CANARY_COOKIE_SECRET",
            &format!(
                "head -c 32 /dev/urandom > {}",
                config.proxy.cookie_secret_file.display()
            ),
            "on every proxy host",
        ] {
            assert!(error.contains(needed), "{what}: {needed:?} not in {error}");
        }
        assert!(
            !config.proxy.cookie_secret_file.exists(),
            "{what}: a secret was made up all the same"
        );
        // Given a secret, it starts.
        give_secret(&config.proxy.cookie_secret_file);
        proxy::server::state_as(config_path.clone(), config.clone(), role)
            .unwrap_or_else(|e| panic!("{what}: refused a given secret: {e}"));
        std::fs::remove_file(&config.proxy.cookie_secret_file).expect("remove the secret");
    }
    // A proxy on its own makes one up, as it always did.
    let alone = config_without_secret(dir.path());
    proxy::server::state_as(config_path, alone.clone(), Role::Controller).expect("starts");
    assert!(alone.proxy.cookie_secret_file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_follows_its_environment_and_refuses_a_fleet_without_a_secret() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (legacy, new) = (Refusing::bind(), Refusing::bind());
    let mut config = config_without_secret(dir.path());
    config.backends.legacy.listen = legacy.addr();
    config.backends.new.listen = new.addr();
    config.proxy.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.proxy.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.rollout.enabled = true;
    let config_path = dir.path().join("proxy.toml");
    write_config(&config_path, &config);

    // The shared file says controller; this host's environment says follower.
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("--config")
        .arg(&config_path)
        .env("CANARY_ROLLOUT_CONTROLLER", "false")
        .env_remove("CANARY_COOKIE_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the proxy binary starts");
    let status = eventually(
        "the proxy refuses to start",
        Duration::from_secs(20),
        async || child.try_wait().expect("the child's status"),
    )
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("rollout.controller = false"), "{stderr}");
    assert!(stderr.contains("set CANARY_COOKIE_SECRET"), "{stderr}");
    assert!(!config.proxy.cookie_secret_file.exists());

    // With the secret in its environment it starts, follows, and refuses commands.
    let secret = "a shared secret of at least thirty-two bytes";
    let environment = [
        ("CANARY_ROLLOUT_CONTROLLER", "false"),
        ("CANARY_COOKIE_SECRET", secret),
    ];
    let follower = ChildProxy::start_in(config, |text| text, vec![legacy, new], &environment).await;
    let status = rollout_status(&follower.admin_url).await;
    assert_eq!(status["controller"], false, "{status:#}");
    let refused = post_command(&follower.admin_url, "pause", serde_json::json!({})).await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.expect("a JSON refusal");
    assert_eq!(body["error"]["code"], "NOT_CONTROLLER", "{body:#}");
}

/// The value of `series` for `cohort` on the verify route, in Prometheus text.
fn verify_cohort(text: &str, series: &str, cohort: &str) -> Option<f64> {
    let labels = format!("{series}{{cohort=\"{cohort}\",route=\"/api/auth/verify\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&labels))
        .and_then(|value| value.parse().ok())
}

/// The proxies' rollout schedule: 20 % held for an hour, judged every `interval` on the
/// cohorts `source` gives.
fn judged_at_20(interval: Duration) -> proxy::config::RolloutSection {
    let mut rollout = schedule(&[(20.0, 3_600, false), (100.0, 0, false)]);
    rollout.analysis.interval = interval;
    rollout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_rolls_back_on_errors_that_only_another_proxy_saw_through_prometheus() {
    let env = TestEnv::new();
    let legacy = start_legacy(&env).await;
    // One answer in four a 500, the health checks fine: only the judge can tell.
    let (new, _failing) = failing_new(4).await;
    let (controller_listeners, follower_listeners) = (bind_listeners(), bind_listeners());
    let admin =
        |listeners: &proxy::server::Listeners| listeners.admin.local_addr().expect("an address");
    let prometheus =
        PrometheusServer::scraping(&[admin(&controller_listeners), admin(&follower_listeners)])
            .await;

    let config_path = env.dir().join("proxy.toml");
    let mut config = proxy_config((addr_of(&legacy), new), &controller_listeners, 0.0);
    config.proxy.cookie_secret_file = env.dir().join("cookie.secret");
    config.shadow.secret_file = env.dir().join("shadow.secret");
    config.rollout = judged_at_20(Duration::from_secs(3));
    config.rollout.state_file = env.dir().join("rollout-state.json");
    let analysis = &mut config.rollout.analysis;
    analysis.source = AnalysisSource::Prometheus;
    analysis.prometheus_url = Some(PrometheusUrl::parse(&prometheus.url()).expect("a URL"));
    analysis.prometheus_selector = format!("job=\"{JOB}\"");
    analysis.prometheus_timeout = Duration::from_secs(2);
    give_secret(&config.proxy.cookie_secret_file);
    write_config(&config_path, &config);
    let controller = start_proxy_as(&config_path, controller_listeners, Role::Controller).await;
    let follower = start_proxy_as(&config_path, follower_listeners, Role::Follower).await;
    prometheus.wait_until_scraped(2).await;

    let entered = first_step_entered(&controller.admin_url).await;
    assert_eq!(entered["currentPercent"], 20.0);
    assert_eq!(entered["source"], "prometheus");
    eventually("the follower runs 20 %", FOLLOW_LIMIT * 2, async || {
        (admin_status(&follower.admin_url).await["newPercent"] == 20.0).then_some(())
    })
    .await;

    // Every user's request goes through the follower; the controller sees none.
    let load = Load::start(follower.url("/api/auth/verify"), true);
    let status = wait_for_status(
        &controller.admin_url,
        "the controller rolls back",
        Duration::from_secs(60),
        |s| s["phase"] == "rolled_back",
    )
    .await;
    let sent = load.stop().await;

    assert!(sent > 0);
    assert_eq!(
        status["rollbackReason"], "critical_error_rate",
        "{status:#}"
    );
    let evaluation = &status["lastEvaluation"];
    assert!(
        evaluation["canaryRequests"].as_u64() > Some(0),
        "{status:#}"
    );
    let own = metrics_text(&controller.admin_url).await;
    for cohort in ["canary", "baseline"] {
        assert_eq!(
            verify_cohort(&own, "proxy_rollout_cohort_latency_seconds_count", cohort),
            Some(0.0),
            "the controller itself served no {cohort} request"
        );
    }
    assert_eq!(percent_on_disk(&config_path), 0.0);
    eventually(
        "the follower follows the rollback",
        FOLLOW_LIMIT * 2,
        async || (admin_status(&follower.admin_url).await["newPercent"] == 0.0).then_some(()),
    )
    .await;
    let follower_metrics = metrics_text(&follower.admin_url).await;
    let errors = verify_cohort(
        &follower_metrics,
        "proxy_rollout_cohort_server_errors_total",
        "canary",
    );
    assert!(
        errors > Some(0.0),
        "the follower counted new's errors: {errors:?}"
    );
    let follower_status = rollout_status(&follower.admin_url).await;
    assert_eq!(follower_status["controller"], false);
    assert_eq!(
        follower_status["lastEvaluation"],
        Value::Null,
        "a follower judges nothing"
    );
}

/// Runs a controller on `source = "prometheus"` (`analysis` says where and how to ask) that
/// would promote after one pass with no hold, under load until `ready` and three evaluations;
/// asserts it held at 20 % on an inconclusive evaluation, and returns that evaluation's
/// reason and the proxy's metrics.
async fn held_at_20_by_prometheus(
    env: &TestEnv,
    listeners: proxy::server::Listeners,
    analysis: impl FnOnce(&mut proxy::config::AnalysisSection),
    ready: impl std::future::Future<Output = ()>,
) -> (String, String) {
    let legacy = start_legacy(env).await;
    let new = start_new(env).await;
    let config_path = env.dir().join("proxy.toml");
    let mut config = proxy_config((addr_of(&legacy), addr_of(&new)), &listeners, 0.0);
    config.proxy.cookie_secret_file = env.dir().join("cookie.secret");
    config.shadow.secret_file = env.dir().join("shadow.secret");
    // Promote after one pass, no hold: only a missing or partial answer can keep it at 20 %.
    config.rollout = schedule(&[(20.0, 0, false), (100.0, 0, false)]);
    config.rollout.analysis.passes_to_promote = 1.try_into().expect("non-zero");
    config.rollout.state_file = env.dir().join("rollout-state.json");
    config.rollout.analysis.source = AnalysisSource::Prometheus;
    analysis(&mut config.rollout.analysis);
    give_secret(&config.proxy.cookie_secret_file);
    write_config(&config_path, &config);
    let proxy = start_proxy_as(&config_path, listeners, Role::Controller).await;
    ready.await;
    first_step_entered(&proxy.admin_url).await;

    let load = Load::start(proxy.url("/health"), false);
    let status = crate::rollout::wait_evaluations(&proxy.admin_url, 3).await;
    let sent = load.stop().await;
    assert!(sent > 0);
    assert_eq!(status["phase"], "progressing", "{status:#}");
    assert_eq!(status["currentPercent"], 20.0);
    let evaluation = &status["lastEvaluation"];
    assert_eq!(evaluation["outcome"], "inconclusive", "{status:#}");
    let reason = evaluation["verdicts"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (reason, metrics_text(&proxy.admin_url).await)
}

/// `proxy_rollout_source_errors_total` of `kind` in `metrics`.
fn source_errors(metrics: &str, kind: &str) -> Option<u64> {
    let prefix = format!("proxy_rollout_source_errors_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|n| n.parse::<u64>().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_answer_from_prometheus_the_controller_never_promotes() {
    let nobody = Refusing::bind();
    let env = TestEnv::new();
    let url = format!("http://{}", nobody.addr());
    let analysis = |analysis: &mut proxy::config::AnalysisSection| {
        analysis.prometheus_url = Some(PrometheusUrl::parse(&url).expect("a URL"));
    };
    let (reason, metrics) =
        held_at_20_by_prometheus(&env, bind_listeners(), analysis, async {}).await;
    assert!(reason.contains("cannot reach Prometheus"), "{reason}");
    let errors = source_errors(&metrics, "unreachable");
    assert!(errors >= Some(3), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_prometheus_cannot_scrape_makes_the_evaluation_inconclusive() {
    // A second proxy that Prometheus is told to scrape but cannot reach: its users' traffic
    // would be missing from the sums, so nothing may be promoted on them.
    let unscraped = Refusing::bind();
    let env = TestEnv::new();
    let listeners = bind_listeners();
    let admin = listeners.admin.local_addr().expect("an address");
    let prometheus = PrometheusServer::scraping(&[admin, unscraped.addr()]).await;
    let analysis = |analysis: &mut proxy::config::AnalysisSection| {
        analysis.prometheus_url = Some(PrometheusUrl::parse(&prometheus.url()).expect("a URL"));
        analysis.prometheus_selector = format!("job=\"{JOB}\"");
        analysis.prometheus_timeout = Duration::from_secs(2);
    };
    let ready = prometheus.wait_until_scraped(1);
    let (reason, metrics) = held_at_20_by_prometheus(&env, listeners, analysis, ready).await;
    assert!(
        reason.contains("missed scrapes") && reason.contains(&unscraped.addr().to_string()),
        "{reason}"
    );
    let incomplete = source_errors(&metrics, "incomplete");
    assert!(incomplete >= Some(1), "{metrics}");
}
