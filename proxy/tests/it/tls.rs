//! HTTPS on `[proxy.tls]`: an HTTPS client logs in, verifies and streams a generation over
//! HTTP/2 (negotiated by ALPN) and over HTTP/1.1, the events arriving as they are made; over
//! TLS the cookie is `Secure` and every answer, the proxy's own included, carries
//! `strict-transport-security`, while the plain listener keeps neither; a certificate path
//! that cannot be read stops the binary at start with the key named; a certificate replaced
//! on disk is served to new connections without a restart. (The development certificate's
//! own checks are unit tests in `proxy::tls`.)

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::config::value::Millis;
use futures::StreamExt;
use proxy::config::{ProxyConfig, TlsSection};
use reqwest::Version;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use shared::routes::{GENERATE, LOGIN, VERIFY};
use shared::testing::client::{Answer, client, send};
use shared::testing::{TestEnv, eventually};

use crate::harness::{Stack, bind_listeners, write_config};

const HSTS: &str = "max-age=31536000";

/// A stack whose proxy also serves HTTPS, with a development certificate from
/// `proxy::tls::write_dev_certificate`, which the test's clients trust.
struct TlsStack {
    stack: Stack,
    https: SocketAddr,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TlsStack {
    async fn start(env: TestEnv, edit: impl FnOnce(&mut ProxyConfig)) -> Self {
        let (cert_file, key_file) = proxy::tls::write_dev_certificate(&env.dir().join("tls"))
            .expect("a development certificate");
        let mut listeners = bind_listeners();
        let tls = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the TLS listener");
        let https = tls.local_addr().expect("an address");
        listeners.tls = Some(tls);
        let section = TlsSection::new(https, cert_file.clone(), key_file.clone());
        let stack = Stack::start_on(env, listeners, 0.0, |config| {
            config.proxy.tls = Some(section);
            edit(config);
        })
        .await;
        Self {
            stack,
            https,
            cert_file,
            key_file,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }
}

/// An HTTPS client trusting `roots` (PEM), on rustls, offering HTTP/2 and HTTP/1.1 by ALPN
/// unless `http1_only`.
pub(crate) fn https_client(roots: &[&[u8]], http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_info(true);
    for root in roots {
        let root = reqwest::Certificate::from_pem(root).expect("a PEM certificate");
        builder = builder.add_root_certificate(root);
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("an HTTPS client")
}

fn pem(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read a PEM file")
}

fn der(cert_pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem)
        .expect("a certificate")
        .to_vec()
}

/// The certificate the server showed for this response.
fn served_certificate(response: &reqwest::Response) -> Option<Vec<u8>> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
}

fn json_post(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
}

async fn login_verify_and_stream(version: Version) {
    // Each token takes 200 ms to produce, so a proxy that buffered would deliver one chunk.
    let env = TestEnv::with(|config| config.generate.local.token_delay_ms = Millis::of(200));
    // The stream outlasts the head deadline, which must time only the head (on HTTP/2 too).
    let tls = TlsStack::start(env, |config| {
        config.proxy.request_head_timeout_ms = Millis::of(300);
    })
    .await;
    let client = https_client(&[&pem(&tls.cert_file)], version == Version::HTTP_11);

    let demo =
        json!({"email": shared::service::DEMO_EMAIL, "password": shared::service::DEMO_PASSWORD});
    let response = json_post(&client, tls.url(LOGIN), demo)
        .send()
        .await
        .expect("the proxy answers over TLS");
    assert_eq!(response.version(), version);
    let login = Answer::read(response).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.header("strict-transport-security"), Some(HSTS));
    let cookie = login.header("set-cookie").expect("a new bucket is pinned");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let token = login.json()["token"].as_str().expect("a token").to_owned();

    let response = json_post(&client, tls.url(VERIFY), json!({}))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the proxy answers over TLS");
    assert_eq!(response.version(), version);
    let verify = Answer::read(response).await;
    assert_eq!(verify.status, 200, "{}", verify.body);
    assert_eq!(verify.json()["valid"], true, "{}", verify.body);
    assert_eq!(verify.header("strict-transport-security"), Some(HSTS));

    let body = json!({"prompt": "stream me over TLS", "maxTokens": 5, "stream": true});
    let response = json_post(&client, tls.url(GENERATE), body)
        .bearer_auth(&token)
        .send()
        .await
        .expect("the proxy answers over TLS");
    assert_eq!(response.version(), version);
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert_eq!(
        headers
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some(HSTS)
    );
    let mut stream = response.bytes_stream();
    let mut chunks: Vec<String> = Vec::new();
    let mut delta_before_done = false;
    // The timeout is a hang guard only.
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream goes on or ends")
    {
        let chunk = String::from_utf8(chunk.expect("a body chunk").to_vec()).expect("UTF-8");
        if chunk.contains("event: delta") && !chunk.contains("event: done") && chunks.is_empty() {
            delta_before_done = true;
        }
        chunks.push(chunk);
    }
    assert!(
        delta_before_done,
        "the first delta did not arrive on its own, before the end: {chunks:?}"
    );
    let delta_chunks = chunks.iter().filter(|c| c.contains("event: delta")).count();
    assert!(
        delta_chunks > 1,
        "all deltas arrived in one chunk: {chunks:?}"
    );
    let events = Answer {
        status: 200,
        headers,
        body: chunks.concat(),
    }
    .events();
    let (done, deltas) = events.split_last().expect("events");
    assert_eq!(done.0, "done", "{events:?}");
    assert_eq!(deltas.len(), 5, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_verify_and_a_streamed_generate_over_https_http2() {
    login_verify_and_stream(Version::HTTP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_verify_and_a_streamed_generate_over_https_http1() {
    login_verify_and_stream(Version::HTTP_11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_and_the_secure_cookie_follow_tls_and_cover_the_proxys_own_answers() {
    let tls = TlsStack::start(TestEnv::new(), |config| {
        config.proxy.cookie_secure = false;
        config.proxy.max_header_bytes = common::config::value::Bounded::of(4096);
    })
    .await;
    let https = https_client(&[&pem(&tls.cert_file)], true);

    // Refused at the edge, before any backend: still over TLS, so still HSTS.
    let refused = send(
        https
            .get(tls.url("/health"))
            .header("x-padding", "a".repeat(5_000)),
    )
    .await;
    assert_eq!(refused.status, 431, "{}", refused.body);
    assert_eq!(refused.header("strict-transport-security"), Some(HSTS));

    // The plain listener of the same proxy: neither HSTS nor a Secure cookie.
    let plain = send(client().get(tls.stack.url("/health"))).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(plain.header("strict-transport-security"), None);
    let cookie = plain.header("set-cookie").expect("a new bucket is pinned");
    assert!(!cookie.contains("Secure"), "{cookie}");

    // A configured age of 0 sends no HSTS, over TLS too.
    tls.stack
        .apply(|config| {
            if let Some(section) = &mut config.proxy.tls {
                section.hsts_max_age_seconds = 0;
            }
        })
        .await;
    let health = send(https.get(tls.url("/health"))).await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.header("strict-transport-security"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_after_reload() {
    let tls = TlsStack::start(TestEnv::new(), |_| {}).await;
    let first = pem(&tls.cert_file);
    let next = proxy::tls::dev_certificate().expect("a second certificate");
    let response = https_client(&[&first, &next.cert], false)
        .get(tls.url("/health"))
        .send()
        .await
        .expect("the proxy answers over TLS");
    assert_eq!(served_certificate(&response), Some(der(&first)));

    // As a renewal does: each file replaced whole (write, then rename); the key first, so
    // for a moment the pair does not fit, which must not stop the proxy.
    replace(&tls.key_file, &next.key);
    replace(&tls.cert_file, &next.cert);
    let expected = der(&next.cert);
    eventually(
        "the new certificate is served",
        Duration::from_secs(10),
        async || {
            // A new client each time: no connection and no TLS session to resume, so the
            // handshake shows the certificate in service now.
            let client = https_client(&[&first, &next.cert], false);
            let response = client.get(tls.url("/health")).send().await.ok()?;
            (served_certificate(&response).as_ref() == Some(&expected)).then_some(())
        },
    )
    .await;
    // Nothing else changed: the same config generation serves.
    assert_eq!(tls.stack.generation(), 1);
}

fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write a PEM file");
    std::fs::rename(&tmp, path).expect("rename a PEM file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_path_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pair = proxy::tls::dev_certificate().expect("a certificate");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&key_file, &pair.key).expect("write the key");
    let mut config = ProxyConfig::default();
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.proxy.listen = any_port;
    config.proxy.admin_listen = any_port;
    config.proxy.tls = Some(TlsSection::new(
        any_port,
        dir.path().join("missing.pem"),
        key_file,
    ));
    let config_path = dir.path().join("proxy.toml");
    write_config(&config_path, &config);

    let child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the proxy binary starts");
    let mut child = KilledOnDrop(child);
    let status = eventually(
        "the proxy refuses to start",
        Duration::from_secs(10),
        async || child.0.try_wait().expect("the child's status"),
    )
    .await;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.0.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("proxy.tls.cert_file"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

/// A child process that a failing test does not leave running.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
