//! Replica pools: two replicas of a side share its traffic and follow config edits; a replica
//! killed under load costs no client an error once the checks notice, and a POST it had
//! received is never sent again; a refused connect goes to the side's other replica before
//! the other side; a side fails over only when all its replicas are down; a bad list is
//! refused by its key while the running one stays.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use common::config::value::Millis;
use futures::StreamExt;
use proxy::config::{ProxyConfig, Upstreams};
use serde_json::{Value, json};
use shared::testing::client::{Answer, client, send};
use shared::testing::{TestServer, eventually};

use crate::harness::{Refusing, Stack, start_legacy};
use crate::observability::{admin_status, scrape, value_of};

fn address_of(server: &TestServer) -> SocketAddr {
    (server.base_url.trim_start_matches("http://"))
        .parse()
        .expect("a socket address")
}

/// An edit listing `addresses` as legacy's replicas.
fn legacy_upstreams(addresses: &[SocketAddr]) -> impl FnOnce(&mut ProxyConfig) + use<> {
    let upstreams = Upstreams::new(addresses.to_vec()).expect("a valid list");
    move |config| config.backends.legacy.upstreams = Some(upstreams)
}

/// `/admin/status`'s view of one side's replicas: address → (healthy, requests answered).
async fn replicas(stack: &Stack, side: &str) -> BTreeMap<String, (bool, u64)> {
    let status = admin_status(stack).await;
    let listed = status["backends"][side]["replicas"]
        .as_array()
        .unwrap_or_else(|| panic!("backends.{side}.replicas in {status}"))
        .clone();
    (listed.iter())
        .map(|replica| {
            let address = replica["address"].as_str().expect("an address").to_owned();
            let healthy = replica["healthy"].as_bool().expect("healthy");
            let requests = replica["requests"].as_u64().expect("requests");
            (address, (healthy, requests))
        })
        .collect()
}

async fn side_healthy(stack: &Stack, side: &str) -> bool {
    admin_status(stack).await["backends"][side]["healthy"]
        .as_bool()
        .expect("backends.*.healthy")
}

async fn failovers(stack: &Stack) -> f64 {
    let samples = scrape(stack).await;
    ["legacy", "new"]
        .iter()
        .map(|from| {
            let to = if *from == "legacy" { "new" } else { "legacy" };
            value_of(
                &samples,
                "proxy_failovers_total",
                &[("from", from), ("to", to)],
            )
            .unwrap_or(0.0)
        })
        .sum()
}

async fn health(stack: &Stack) -> Answer {
    send(client().get(stack.url("/health"))).await
}

fn login(stack: &Stack) -> reqwest::RequestBuilder {
    client()
        .post(stack.url(shared::routes::LOGIN))
        .header("content-type", "application/json")
        .body(
            json!({"email": shared::service::DEMO_EMAIL, "password": shared::service::DEMO_PASSWORD})
                .to_string(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_a_side_share_its_traffic_and_follow_edits() {
    let stack = Stack::start(0.0).await;
    // A second legacy process on the same database: a replica.
    let second = start_legacy(&stack.env).await;
    let (first, second_addr) = (stack.legacy_addr, address_of(&second));
    stack.apply(legacy_upstreams(&[first, second_addr])).await;

    let answers: Vec<Answer> = futures::stream::iter(0..80)
        .map(|i| {
            let stack = &stack;
            async move {
                if i % 4 == 0 {
                    send(login(stack)).await
                } else {
                    health(stack).await
                }
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-served-by"), Some("legacy"));
    }
    let (first, second_addr) = (first.to_string(), second_addr.to_string());
    let counted = eventually("all 80 are counted", Duration::from_secs(5), async || {
        let listed = replicas(&stack, "legacy").await;
        let total: u64 = listed.values().map(|(_, requests)| requests).sum();
        (total >= 80).then_some(listed)
    })
    .await;
    let listed: Vec<&String> = counted.keys().collect();
    let mut expected = vec![&first, &second_addr];
    expected.sort();
    assert_eq!(listed, expected);
    for (address, (healthy, requests)) in &counted {
        assert!(healthy, "{address} is down: {counted:?}");
        // 40 expected each; a fair draw strays below 15 with odds under one in a million.
        assert!(
            *requests >= 15,
            "{address} answered {requests} of 80: {counted:?}"
        );
    }
    let samples = scrape(&stack).await;
    for address in [&first, &second_addr] {
        let labels = [("backend", "legacy"), ("replica", address.as_str())];
        assert_eq!(value_of(&samples, "proxy_replica_up", &labels), Some(1.0));
        let answered = value_of(&samples, "proxy_replica_requests_total", &labels);
        assert!(
            answered.is_some_and(|n| n >= 15.0),
            "{address}: {answered:?}"
        );
    }

    // An edit that drops the first replica: everything goes to the second, and the first's
    // series are gone.
    stack.apply(legacy_upstreams(&[address_of(&second)])).await;
    let before = replicas(&stack, "legacy").await[&second_addr].1;
    for _ in 0..10 {
        let answer = health(&stack).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let after = eventually("the 10 are counted", Duration::from_secs(5), async || {
        let listed = replicas(&stack, "legacy").await;
        (listed[&second_addr].1 >= before + 10).then_some(listed)
    })
    .await;
    assert_eq!(after.len(), 1, "{after:?}");
    let samples = scrape(&stack).await;
    let gone = [("backend", "legacy"), ("replica", first.as_str())];
    assert_eq!(value_of(&samples, "proxy_replica_up", &gone), None);
    assert_eq!(
        value_of(&samples, "proxy_replica_requests_total", &gone),
        None
    );
}

/// What the stand-ins received: (the port of the one that got it, the body), in order.
type Received = Arc<Mutex<Vec<(u16, String)>>>;

/// A replica stand-in on a runtime of its own, so that `kill` ends it as a crash does: the
/// listener and every open connection close at once, whatever is in flight. (Aborting the
/// task of `harness::serve_stand_in` would leave its connections' tasks serving.) `GET /echo`
/// answers `{"port": …}`; `POST /echo` records its body, then answers the same, or never
/// when the body starts with `hold`.
struct StandIn {
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StandIn {
    fn start(received: &Received) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let address = listener.local_addr().expect("an address");
        let port = address.port();
        let received = Arc::clone(received);
        let app = axum::Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/echo",
                get(move || async move { axum::Json(json!({"port": port})) }).post(
                    move |body: String| async move {
                        let hold = body.starts_with("hold");
                        received
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((port, body));
                        if hold {
                            std::future::pending::<()>().await;
                        }
                        axum::Json(json!({"port": port}))
                    },
                ),
            );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            runtime: Some(runtime),
        }
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one load loop saw: requests sent, failures before and after the kill was detected,
/// and the POST bodies that were answered 200.
#[derive(Default)]
struct Seen {
    sent: usize,
    before: Vec<String>,
    after: Vec<String>,
    answered_posts: Vec<String>,
}

/// Alternating `GET /echo` and `POST /echo` (bodies `load-{id}-{n}`) through the proxy until
/// `stop`, at most 5,000 requests or 30 s; failures sorted by whether `detected` was set when
/// the request was sent.
async fn load(url: String, id: usize, stop: Arc<AtomicBool>, detected: Arc<AtomicBool>) -> Seen {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && seen.sent < 5_000 {
        seen.sent += 1;
        let after_detection = detected.load(Ordering::Relaxed);
        let body = format!("load-{id}-{}", seen.sent);
        let request = if seen.sent % 2 == 0 {
            client.post(&url).body(body.clone())
        } else {
            client.get(&url)
        };
        let outcome = match request.timeout(Duration::from_secs(10)).send().await {
            Ok(r) if r.status() == 200 && r.headers()["x-served-by"] == "legacy" => {
                match r.bytes().await {
                    Ok(_) => {
                        if seen.sent % 2 == 0 {
                            seen.answered_posts.push(body);
                        }
                        continue;
                    }
                    Err(e) => format!("body: {e}"),
                }
            }
            Ok(r) => format!(
                "status {} from {:?}",
                r.status(),
                r.headers().get("x-served-by")
            ),
            Err(e) => format!("error: {e}"),
        };
        if after_detection {
            seen.after.push(outcome);
        } else {
            seen.before.push(outcome);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_costs_no_error_after_detection_and_replays_no_post() {
    let stack = Stack::start(0.0).await;
    let received = Received::default();
    let mut stand_ins = [StandIn::start(&received), StandIn::start(&received)];
    let addresses = stand_ins.each_ref().map(|s| s.address);
    stack.apply(legacy_upstreams(&addresses)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let detected = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|id| {
            let url = stack.url("/echo");
            tokio::spawn(load(url, id, Arc::clone(&stop), Arc::clone(&detected)))
        })
        .collect();
    let posts_at = |port: u16| {
        let received = received.lock().unwrap_or_else(|p| p.into_inner());
        received.iter().filter(|(p, _)| *p == port).count()
    };
    eventually(
        "the load reaches both replicas",
        Duration::from_secs(10),
        async || {
            addresses
                .iter()
                .all(|a| posts_at(a.port()) >= 5)
                .then_some(())
        },
    )
    .await;

    // A POST that a replica has received, and holds without answering, when it dies.
    let held = tokio::spawn(
        client()
            .post(stack.url("/echo"))
            .body("hold-1")
            .timeout(Duration::from_secs(10))
            .send(),
    );
    let holder = eventually(
        "a replica holds the POST",
        Duration::from_secs(5),
        async || {
            let received = received.lock().unwrap_or_else(|p| p.into_inner());
            (received.iter()).find_map(|(port, body)| (body == "hold-1").then_some(*port))
        },
    )
    .await;
    let (dead, alive) = if holder == addresses[0].port() {
        (0, 1)
    } else {
        (1, 0)
    };
    stand_ins[dead].kill();
    let answer = held.await.expect("the held request's task");
    // The replica died with the POST: the client hears so, the POST is not sent again.
    let status = answer.map(|r| r.status().as_u16());
    assert!(
        status.as_ref().is_ok_and(|s| *s >= 500) || status.is_err(),
        "{status:?}"
    );

    let (dead_addr, alive_addr) = (addresses[dead].to_string(), addresses[alive].to_string());
    eventually(
        "the dead replica is marked down",
        Duration::from_secs(5),
        async || {
            let listed = replicas(&stack, "legacy").await;
            (!listed[&dead_addr].0).then_some(())
        },
    )
    .await;
    detected.store(true, Ordering::Relaxed);
    let at_detection = posts_at(addresses[alive].port());
    eventually(
        "the load goes on after the detection",
        Duration::from_secs(10),
        async || (posts_at(addresses[alive].port()) >= at_detection + 50).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Seen::default();
    for task in loops {
        let one = task.await.expect("a load loop");
        seen.sent += one.sent;
        seen.before.extend(one.before);
        seen.after.extend(one.after);
        seen.answered_posts.extend(one.answered_posts);
    }

    if !seen.before.is_empty() {
        eprintln!(
            "{} of {} requests failed between the kill and its detection: {:?}",
            seen.before.len(),
            seen.sent,
            &seen.before[..seen.before.len().min(5)]
        );
    }
    assert!(
        seen.after.is_empty(),
        "{} requests failed after the replica was marked down: {:?}",
        seen.after.len(),
        &seen.after[..seen.after.len().min(5)]
    );
    // No POST was received twice; each one answered was received once.
    let received = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, body) in &received {
        *times.entry(body.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs received more than once: {twice:?}");
    for body in &seen.answered_posts {
        assert_eq!(times.get(body.as_str()), Some(&1), "{body}");
    }
    assert_eq!(times.get("hold-1"), Some(&1));
    // The side stayed up on its other replica: nothing failed over.
    assert!(side_healthy(&stack, "legacy").await);
    let listed = replicas(&stack, "legacy").await;
    assert!(listed[&alive_addr].0, "{listed:?}");
    let samples = scrape(&stack).await;
    let labels = [("backend", "legacy"), ("replica", dead_addr.as_str())];
    assert_eq!(value_of(&samples, "proxy_replica_up", &labels), Some(0.0));
}

/// An edit with the health checks slowed down so far that they mark nothing down during a
/// test: what happens is the connect retries' doing.
fn slow_checks(config: &mut ProxyConfig) {
    config.health_check.interval_ms = Millis::of(60_000);
    config.health_check.unhealthy_threshold = NonZeroU32::new(100).expect("non-zero");
}

async fn connect_errors(stack: &Stack, address: SocketAddr) -> f64 {
    let address = address.to_string();
    let labels = [("backend", "legacy"), ("replica", address.as_str())];
    value_of(
        &scrape(stack).await,
        "proxy_replica_connect_errors_total",
        &labels,
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_tries_the_sides_other_replica_then_the_other_side() {
    let stack = Stack::start(0.0).await;
    let (dead, also_dead) = (Refusing::bind(), Refusing::bind());
    let listed = legacy_upstreams(&[dead.addr(), stack.legacy_addr]);
    stack
        .apply(|config| {
            listed(config);
            slow_checks(config);
        })
        .await;
    let failovers_before = failovers(&stack).await;
    for i in 0..40 {
        let request = if i % 4 == 0 {
            login(&stack)
        } else {
            client().get(stack.url("/health"))
        };
        let answer = send(request).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-served-by"), Some("legacy"));
    }
    // About half went to the dead replica first (one in 2^40 none did) and were retried on
    // the live one, never on the other side.
    let refused = connect_errors(&stack, dead.addr()).await;
    assert!(refused >= 1.0, "{refused}");
    assert_eq!(failovers(&stack).await, failovers_before);
    assert!(side_healthy(&stack, "legacy").await);

    // Both replicas refuse: each request tries both, then new.
    stack
        .apply(legacy_upstreams(&[dead.addr(), also_dead.addr()]))
        .await;
    let before = [
        connect_errors(&stack, dead.addr()).await,
        connect_errors(&stack, also_dead.addr()).await,
    ];
    for i in 0..10 {
        let request = if i % 2 == 0 {
            login(&stack)
        } else {
            client().get(stack.url("/health"))
        };
        let answer = send(request).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-served-by"), Some("new"));
    }
    let after = [
        connect_errors(&stack, dead.addr()).await,
        connect_errors(&stack, also_dead.addr()).await,
    ];
    assert_eq!(after, before.map(|n| n + 10.0));
    assert_eq!(failovers(&stack).await, failovers_before + 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_fails_over_only_when_all_its_replicas_are_down() {
    let mut stack = Stack::start(0.0).await;
    let second = start_legacy(&stack.env).await;
    let (first_addr, second_addr) = (stack.legacy_addr, address_of(&second));
    stack
        .apply(legacy_upstreams(&[first_addr, second_addr]))
        .await;

    drop(stack.legacy.take());
    let first = first_addr.to_string();
    eventually(
        "the first replica is marked down",
        Duration::from_secs(5),
        async || (!replicas(&stack, "legacy").await[&first].0).then_some(()),
    )
    .await;
    assert!(side_healthy(&stack, "legacy").await);
    let failovers_before = failovers(&stack).await;
    for _ in 0..10 {
        let answer = health(&stack).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-served-by"), Some("legacy"));
    }
    assert_eq!(failovers(&stack).await, failovers_before);

    drop(second);
    eventually(
        "legacy is marked down",
        Duration::from_secs(5),
        async || (!side_healthy(&stack, "legacy").await).then_some(()),
    )
    .await;
    for _ in 0..10 {
        let answer = health(&stack).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-served-by"), Some("new"));
        assert_eq!(answer.json()["backend"], "new");
    }
    assert_eq!(failovers(&stack).await, failovers_before + 10.0);
    let samples = scrape(&stack).await;
    assert_eq!(
        value_of(&samples, "proxy_backend_up", &[("backend", "legacy")]),
        Some(0.0)
    );
    for address in [first_addr, second_addr] {
        let address = address.to_string();
        let labels = [("backend", "legacy"), ("replica", address.as_str())];
        assert_eq!(value_of(&samples, "proxy_replica_up", &labels), Some(0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upstream_list_is_refused_by_its_key_and_the_running_one_stays() {
    let stack = Stack::start(0.0).await;
    let second = start_legacy(&stack.env).await;
    let listed = [stack.legacy_addr, address_of(&second)];
    stack.apply(legacy_upstreams(&listed)).await;
    let generation = stack.generation();
    let text = toml::to_string(&stack.config()).expect("a config serialises");
    let good = format!("upstreams = [\"{}\", \"{}\"]", listed[0], listed[1]);
    assert!(text.contains(&good), "{text}");
    let metrics = &stack.proxy.state.metrics;
    for bad in [
        "upstreams = []".to_owned(),
        format!("upstreams = [\"{}\", \"{}\"]", listed[0], listed[0]),
        format!("upstreams = [\"{}\", \"legacy-2:3000\"]", listed[0]),
        format!("upstreams = [\"{}\"]", stack.new_addr),
    ] {
        let refused = metrics.reload_count(false);
        stack.write_config_text(&text.replace(&good, &bad));
        eventually("the edit is refused", Duration::from_secs(5), async || {
            (metrics.reload_count(false) > refused).then_some(())
        })
        .await;
        assert_eq!(stack.generation(), generation, "{bad}");
        let status: Value = admin_status(&stack).await;
        assert_eq!(
            status["backends"]["legacy"]["replicas"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let answer = health(&stack).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}
