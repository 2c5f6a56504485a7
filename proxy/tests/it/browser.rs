//! End to end in headless Chromium (Debian's `chromium` and `chromium-driver`), through the
//! proxy's public port: the frontend's whole flow on each side, its error messages, and the
//! canary dashboard. Screenshots of each step go to `target/e2e-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use shared::testing::{eventually, forge};

use proxy::config::Origin;
use proxy::shadow::settings::{ShadowRoute, ShadowSection};
use shared::testing::TestEnv;

use crate::harness::{Stack, first_printed, percent};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver child process and a WebDriver session of a headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
    /// chromedriver's WebDriver port.
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

impl Browser {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "browser tests need Debian's chromium and chromium-driver (scripts/test installs them)"
        );
        // Port 0: chromedriver binds a free port itself and prints it.
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().expect("piped stdout");
        let port: u16 = first_printed(
            stdout,
            "chromedriver's port",
            // A bound on readiness, not a timing: generous, as a loaded CI machine needs.
            Duration::from_secs(60),
            |line| {
                line.strip_prefix("ChromeDriver was started successfully on port ")?
                    .trim_end_matches('.')
                    .parse()
                    .ok()
            },
        )
        .await;
        let url = format!("http://127.0.0.1:{port}");
        let http = shared::testing::client::client();
        eventually(
            "chromedriver answers",
            Duration::from_secs(20),
            async || {
                http.get(format!("{url}/status"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(())
            },
        )
        .await;
        let profile = tempfile::tempdir().expect("profile folder");
        // Flags as the machine's own browser probe used them: no background networking,
        // which this closed network would refuse.
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1100,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a WebDriver session");
        Self {
            client,
            driver,
            port,
            _profile: profile,
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png)
            .expect("write screenshot");
    }

    /// Waits (bounded) until the element's text satisfies `accept`, and returns it.
    async fn text_of(&self, css: &str, accept: impl Fn(&str) -> bool) -> String {
        eventually(
            &format!("{css} shows what was expected"),
            Duration::from_secs(15),
            async || {
                let element = self.client.find(Locator::Css(css)).await.ok()?;
                element.text().await.ok().filter(|t| accept(t))
            },
        )
        .await
    }

    async fn fill(&self, css: &str, value: &str) {
        let element = self
            .client
            .wait()
            .for_element(Locator::Css(css))
            .await
            .expect("field");
        element.clear().await.expect("clear");
        element.send_keys(value).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .for_element(Locator::Css(css))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
    }

    async fn sign_in(&self, base: &str, password: &str) {
        self.client
            .goto(&format!("{base}/"))
            .await
            .expect("open the page");
        self.text_of("#login-button", |t| t == "Sign in").await;
        self.fill("#email", "demo@example.com").await;
        self.fill("#password", password).await;
        self.click("#login-button").await;
    }

    /// Runs a Chrome DevTools Protocol command in this session, through chromedriver.
    async fn cdp(&self, command: &str, params: serde_json::Value) {
        let session = (self.client.session_id().await.ok().flatten()).expect("a session");
        let answer = shared::testing::client::client()
            .post(format!(
                "http://127.0.0.1:{}/session/{session}/goog/cdp/execute",
                self.port
            ))
            .json(&json!({"cmd": command, "params": params}))
            .send()
            .await
            .expect("chromedriver answers");
        assert!(
            answer.status().is_success(),
            "{command}: {}",
            answer.status()
        );
    }

    /// From now on, every page records the content-security-policy violations it meets.
    async fn watch_csp(&self) {
        let source = "window.__cspViolations = []; \
            document.addEventListener('securitypolicyviolation', \
              (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));";
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": source }),
        )
        .await;
    }

    async fn csp_violations(&self) -> Vec<String> {
        let seen = self
            .client
            .execute("return window.__cspViolations || null;", vec![])
            .await
            .expect("script runs");
        serde_json::from_value::<Option<Vec<String>>>(seen)
            .expect("a list")
            .expect("the CSP watch is installed")
    }

    async fn finish(self) {
        let _ = self.client.clone().close().await;
    }
}

async fn full_flow(new_percent: f64, side: &str) {
    let stack = Stack::start(new_percent).await;
    let browser = Browser::start().await;
    browser.watch_csp().await;
    browser
        .sign_in(&stack.proxy.base_url, "demo-password")
        .await;
    browser.text_of("#user-name", |t| t == "Demo User").await;
    browser.text_of("#served-by", |t| t == side).await;
    browser.screenshot(&format!("{side}-1-signed-in")).await;
    browser.click("#generate-button").await;
    let usage = browser.text_of("#usage", |t| t.contains("tokens")).await;
    assert!(usage.starts_with("local-canary-1"), "{usage}");
    let output = browser.text_of("#output", |t| !t.is_empty()).await;
    assert!(output.split_whitespace().count() >= 2, "{output}");
    browser.text_of("#served-by", |t| t == side).await;
    browser.screenshot(&format!("{side}-2-generated")).await;

    // The page's own script and style ran under its content-security-policy...
    assert_eq!(browser.csp_violations().await, Vec::<String>::new());
    let background = browser
        .client
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .expect("script runs");
    assert_eq!(
        background,
        json!("rgb(247, 248, 250)"),
        "the page's style applies"
    );
    // ...which is enforced: an injected inline script is refused, and the watch sees it.
    browser
        .client
        .execute(
            "const s = document.createElement('script'); s.textContent = 'window.injected = 1;'; \
             document.body.appendChild(s); return null;",
            vec![],
        )
        .await
        .expect("script runs");
    eventually(
        "the injected script is refused",
        Duration::from_secs(10),
        async || {
            let seen = browser.csp_violations().await;
            seen.iter()
                .any(|v| v.starts_with("script-src"))
                .then_some(())
        },
    )
    .await;
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_works_on_legacy_at_0_percent() {
    full_flow(0.0, "legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_works_on_new_at_100_percent() {
    full_flow(100.0, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_header_sends_a_tester_to_new_at_0_percent() {
    let stack = Stack::start(0.0).await;
    let browser = Browser::start().await;
    // What a tester's header extension does: add `x-canary: new` to every request.
    browser.cdp("Network.enable", json!({})).await;
    browser
        .cdp(
            "Network.setExtraHTTPHeaders",
            json!({"headers": {"x-canary": "new"}}),
        )
        .await;
    browser
        .sign_in(&stack.proxy.base_url, "demo-password")
        .await;
    browser.text_of("#user-name", |t| t == "Demo User").await;
    browser.text_of("#served-by", |t| t == "new").await;
    browser.screenshot("override-new-at-0-percent").await;
    browser.finish().await;
}

/// The frontend page as a second origin serves it (a development server, say): the same
/// bytes the backends serve, with the proxy's origin in `<meta name="canary-api">`.
async fn serve_page_from_a_second_origin(
    listener: tokio::net::TcpListener,
    stack: &Stack,
) -> tokio::sync::oneshot::Sender<()> {
    let page = shared::testing::client::client()
        .get(stack.url("/"))
        .send()
        .await
        .expect("the page")
        .text()
        .await
        .expect("the page's text");
    let empty = r#"<meta name="canary-api" content="">"#;
    assert!(page.contains(empty), "the page names no API origin");
    let page = page.replacen(
        empty,
        &format!(
            r#"<meta name="canary-api" content="{}">"#,
            stack.proxy.base_url
        ),
        1,
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_from_a_second_origin_logs_in_and_generates_through_the_proxy() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the second origin");
    let origin = format!("http://{}", listener.local_addr().expect("an address"));
    let allowed = Origin::parse(&origin).expect("an origin");
    let stack = Stack::start_with(TestEnv::new(), 100.0, |c| {
        c.proxy.cors.allowed_origins = vec![allowed];
    })
    .await;
    let _stop = serve_page_from_a_second_origin(listener, &stack).await;
    let browser = Browser::start().await;
    browser.watch_csp().await;
    browser.sign_in(&origin, "demo-password").await;
    browser.text_of("#user-name", |t| t == "Demo User").await;
    // `x-served-by` is readable across origins only because the proxy exposes it.
    browser.text_of("#served-by", |t| t == "new").await;
    browser.click("#generate-button").await;
    let usage = browser.text_of("#usage", |t| t.contains("tokens")).await;
    assert!(usage.starts_with("local-canary-1"), "{usage}");
    let url = browser.client.current_url().await.expect("a url");
    assert_eq!(
        url.origin().ascii_serialization(),
        origin,
        "still on the second origin"
    );
    assert_eq!(browser.csp_violations().await, Vec::<String>::new());
    browser.screenshot("second-origin-generated").await;
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_the_error() {
    let stack = Stack::start(50.0).await;
    let browser = Browser::start().await;
    browser
        .sign_in(&stack.proxy.base_url, "not-the-password")
        .await;
    browser
        .text_of("#login-message", |t| t == "Wrong email or password.")
        .await;
    browser.screenshot("wrong-password").await;
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_sends_the_user_back_to_login() {
    let stack = Stack::start(50.0).await;
    let browser = Browser::start().await;
    browser
        .sign_in(&stack.proxy.base_url, "demo-password")
        .await;
    browser.text_of("#user-name", |t| t == "Demo User").await;
    let mut claims = forge::claims(&stack.env.config);
    claims["exp"] = json!(forge::now() - 3600);
    let expired = forge::hs256(&forge::hs256_header(), &claims, &stack.env.secret);
    browser
        .client
        .execute(
            "sessionStorage.setItem('canary.token', arguments[0]);",
            vec![json!(expired)],
        )
        .await
        .expect("script runs");
    browser.client.refresh().await.expect("reload");
    browser
        .text_of("#login-message", |t| {
            t == "Your session has expired. Please sign in again."
        })
        .await;
    browser.screenshot("expired-session").await;
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_both_backends() {
    let stack = Stack::start(25.0).await;
    let http = shared::testing::client::client();
    for side in ["legacy", "new"] {
        for _ in 0..20 {
            let _ = http
                .get(stack.url("/health"))
                .header("x-canary", side)
                .send()
                .await;
        }
    }
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/admin/", stack.proxy.admin_url))
        .await
        .expect("open the dashboard");
    browser.text_of("#new-percent", |t| t == "25").await;
    for side in ["legacy", "new"] {
        let heading = browser
            .text_of(&format!("#backend-{side} h2"), |t| !t.is_empty())
            .await;
        assert!(
            heading.starts_with(side) && heading.contains("healthy"),
            "{heading}"
        );
        browser
            .text_of(&format!("#backend-{side} [data-metric=requests] b"), |t| {
                t.ends_with("/s")
            })
            .await;
        browser
            .text_of(&format!("#backend-{side} [data-metric=p99] b"), |t| {
                t.ends_with("ms")
            })
            .await;
    }
    // Each side's one replica, by its address.
    for address in [stack.legacy_addr, stack.new_addr] {
        browser
            .text_of(&format!("[data-replica=\"{address}\"]"), |t| {
                t.starts_with("up") && t.contains("answered")
            })
            .await;
    }
    browser.screenshot("dashboard").await;
    browser.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_approves_the_step_that_waits_for_an_operator() {
    let stack = Stack::start_with(shared::testing::TestEnv::new(), 0.0, |config| {
        config.rollout.enabled = true;
        config.rollout.steps[0].approval = true;
    })
    .await;
    let browser = Browser::start().await;
    browser.watch_csp().await;
    browser
        .client
        .goto(&format!("{}/admin/", stack.proxy.admin_url))
        .await
        .expect("open the dashboard");
    browser
        .text_of("#rollout-phase", |t| t.contains("waiting"))
        .await;
    browser
        .text_of(
            "#rollout-steps li[data-step='0'][data-state=waiting]",
            |t| !t.is_empty(),
        )
        .await;
    browser.screenshot("rollout-waiting").await;
    browser.click("#rollout-approve").await;
    browser
        .text_of("#rollout-phase", |t| t.contains("progressing"))
        .await;
    browser
        .text_of(
            "#rollout-steps li[data-step='0'][data-state=current]",
            |t| !t.is_empty(),
        )
        .await;
    browser.screenshot("rollout-approved").await;
    let on_disk = stack.config().routing.new_percent.as_percent();
    assert_eq!(on_disk, 1.0, "the first step's weight is written");
    assert_eq!(browser.csp_violations().await, Vec::<String>::new());
    browser.finish().await;
}

/// Shadowing every `GET /health`, with a noise call for each (as `shadow.rs`'s `shadow_all`),
/// so the noise is learnt within the first 20 comparisons.
fn shadow_health(config: &mut proxy::config::ProxyConfig) {
    config.shadow = ShadowSection {
        percent: percent(100.0),
        noise_percent: percent(100.0),
        routes: vec![ShadowRoute::parse("GET /health").expect("a route")],
        ..config.shadow.clone()
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_shadow_comparisons_of_health_without_mismatch() {
    let stack = Stack::start_with(TestEnv::new(), 50.0, shadow_health).await;
    let http = shared::testing::client::client();
    for _ in 0..40 {
        http.get(stack.url("/health"))
            .send()
            .await
            .expect("GET /health");
    }
    let browser = Browser::start().await;
    browser.watch_csp().await;
    browser
        .client
        .goto(&format!("{}/admin/", stack.proxy.admin_url))
        .await
        .expect("open the dashboard");
    let counted = |t: &str| t.parse::<u64>().is_ok_and(|n| n > 0);
    let row = r#"#shadow-routes tr[data-route="/health"]"#;
    browser
        .text_of(&format!("{row} [data-field=compared]"), counted)
        .await;
    // Past the noise's warm-up: comparisons are classified, and none is a mismatch.
    browser
        .text_of(&format!("{row} [data-field=matched]"), counted)
        .await;
    browser
        .text_of(&format!("{row} [data-field=mismatched]"), |t| t == "0")
        .await;
    browser
        .text_of(&format!("{row} [data-field=mismatch-rate]"), |t| t == "0 %")
        .await;
    browser
        .text_of("#shadow-overall [data-field=compared]", counted)
        .await;
    browser
        .text_of("#shadow-overall [data-field=mismatched]", |t| t == "0")
        .await;
    browser
        .text_of("#shadow-overall [data-field=mismatch-rate]", |t| t == "0 %")
        .await;
    browser.text_of("#shadow-state", |t| t == "comparing").await;
    let mismatching = (browser.client)
        .find_all(Locator::Css("#shadow-fields tr[data-verdict=mismatch]"))
        .await
        .expect("a query");
    assert!(mismatching.is_empty(), "no field of /health is a mismatch");
    let idle = (browser.client.find(Locator::Css("#shadow-idle")).await)
        .expect("the idle note")
        .is_displayed()
        .await
        .expect("its visibility");
    assert!(
        !idle,
        "the 'off or idle' note is hidden once comparisons came"
    );
    browser.screenshot("dashboard-shadow").await;

    // The fields table, from a report with markup in every string it shows: rendered as
    // text, each row with its stable attributes and its verdict's style.
    let hostile = json!({
        "thresholds": {"relative": 0.2, "absolute": 0.0003, "minNoiseComparisons": 20},
        "overall": {"compared": 3, "matched": 1, "mismatched": 1, "noiseOnly": 1, "unclassified": 0,
            "noiseCompared": 3, "bodySkipped": 0, "skipped": 0, "dropped": 0, "timedOut": 0,
            "mismatchRate": 0.3333},
        "routes": [{
            "route": "/x\"<b class=injected>", "compared": 3, "matched": 1, "mismatched": 1,
            "noiseOnly": 1, "unclassified": 0, "noiseCompared": 3, "bodySkipped": 0, "skipped": 0,
            "dropped": 0, "timedOut": 0, "mismatchRate": 0.3333, "warmingUp": false,
            "fields": [
                {"field": "$.<b class=injected>", "crossCompared": 3, "crossDiffered": 1,
                 "crossRate": 0.3333, "noiseCompared": 3, "noiseDiffered": 0, "noiseRate": 0.0,
                 "verdict": "mismatch", "samples": [{"a": "\"<b class=injected>\"", "b": "\"b\""}]},
                {"field": "$.id", "crossCompared": 3, "crossDiffered": 3, "crossRate": 1.0,
                 "noiseCompared": 3, "noiseDiffered": 3, "noiseRate": 1.0, "verdict": "noise",
                 "samples": []},
                {"field": "other", "crossCompared": 3, "crossDiffered": 1, "crossRate": 0.3333,
                 "noiseCompared": 0, "noiseDiffered": 0, "noiseRate": null, "verdict": "pending",
                 "samples": [{"field": "$.<i>", "a": "1", "b": "2"}]}
            ]
        }]
    });
    let shown = (browser.client)
        .execute(
            "renderShadow(arguments[0]); \
             const rows = [...document.querySelectorAll('#shadow-fields tr[data-route][data-field][data-verdict]')]; \
             return { \
               rows: rows.map((r) => [r.dataset.route, r.dataset.field, r.dataset.verdict, \
                 r.querySelector('.verdict').className, r.querySelector('[data-field=cross-rate]').textContent, \
                 r.querySelector('[data-field=noise-rate]').textContent]), \
               samples: rows.map((r) => [...r.querySelectorAll('.samples li')].map((li) => li.textContent)), \
               injected: document.querySelectorAll('#shadow .injected, #shadow i').length };",
            vec![hostile],
        )
        .await
        .expect("script runs");
    let route = "/x\"<b class=injected>";
    assert_eq!(
        shown,
        json!({
            "rows": [
                [route, "$.<b class=injected>", "mismatch", "verdict verdict-mismatch", "33.33 %", "0 %"],
                [route, "$.id", "noise", "verdict verdict-noise", "100 %", "100 %"],
                [route, "other", "pending", "verdict verdict-pending", "33.33 %", "–"],
            ],
            "samples": [["legacy\"<b class=injected>\" new\"b\""], [], ["$.<i> legacy1 new2"]],
            "injected": 0,
        })
    );
    assert_eq!(browser.csp_violations().await, Vec::<String>::new());
    browser.finish().await;
}
