//! The same requests to both backends sharing one database and secret, as in production;
//! answers must be equal once tokens, generation ids and timestamps are normalised.

use serde_json::{Value, json};
use shared::config::Seconds;
use shared::routes;
use shared::testing::client::{Answer, client, demo_token, get, post_json, send};
use shared::testing::non_zero;
use shared::testing::{TestEnv, TestServer, forge};

/// Both backends on one environment, as deployed: one SQLite file, one secret.
pub(crate) async fn both(env: &TestEnv) -> (TestServer, TestServer) {
    let legacy = legacy_backend::testing::start(env).await;
    let new = new_backend::testing::start(env).await;
    // `normalise` hides which backend answered: make sure these really are the two, or every
    // comparison below would pass by comparing one backend with itself.
    for (server, name) in [(&legacy, "legacy"), (&new, "new")] {
        assert_eq!(get(server, routes::HEALTH).await.json()["backend"], name);
    }
    (legacy, new)
}

/// One request of the corpus; `{token}` in a header or body stands for a valid token.
struct Probe {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
}

fn probe(method: &'static str, path: &'static str) -> Probe {
    Probe {
        method,
        path,
        headers: Vec::new(),
        body: None,
    }
}

impl Probe {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn json(self, body: Value) -> Self {
        self.raw("application/json", body.to_string())
    }
    fn raw(mut self, content_type: &'static str, body: String) -> Self {
        self.headers.push(("content-type", content_type.to_owned()));
        self.body = Some(body);
        self
    }
    fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    async fn send(&self, server: &TestServer, request_id: &str) -> Answer {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).expect("method");
        let mut request = client()
            .request(method, server.url(self.path))
            .header("x-request-id", request_id);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        send(request).await
    }
}

fn corpus(token: &str, env: &TestEnv) -> Vec<Probe> {
    let mut expired = forge::claims(&env.config);
    expired["exp"] = json!(forge::now() - 3600);
    let expired = forge::hs256(&forge::hs256_header(), &expired, &env.secret);
    let login = |email: &str, password: &str| json!({"email": email, "password": password});
    vec![
        probe("GET", routes::HEALTH),
        probe("GET", routes::INDEX),
        probe("POST", routes::INDEX),
        probe("GET", routes::OPENAPI),
        probe("GET", "/nowhere"),
        probe("POST", "/api/auth"),
        probe("HEAD", routes::HEALTH),
        probe("GET", routes::LOGIN),
        probe("DELETE", routes::GENERATE),
        probe("OPTIONS", routes::VERIFY),
        probe("POST", routes::HEALTH),
        probe("POST", routes::LOGIN).json(login("demo@example.com", "demo-password")),
        probe("POST", routes::LOGIN).json(login("DEMO@EXAMPLE.COM", "demo-password")),
        probe("POST", routes::LOGIN).json(login("demo@example.com", "wrong")),
        probe("POST", routes::LOGIN).json(login("nobody@example.com", "wrong")),
        probe("POST", routes::LOGIN).json(json!({})),
        probe("POST", routes::LOGIN).json(json!({"email": null, "password": 3})),
        probe("POST", routes::LOGIN).json(login("bad", &"p".repeat(2000))),
        probe("POST", routes::LOGIN),
        probe("POST", routes::LOGIN).raw("application/json", "{\"email\":".into()),
        probe("POST", routes::LOGIN).raw("application/json", "[]".into()),
        probe("POST", routes::LOGIN).raw("text/plain", "hello".into()),
        probe("POST", routes::LOGIN).raw("application/json", "x".repeat(70_000)),
        probe("POST", routes::VERIFY).bearer(token),
        probe("POST", routes::VERIFY).header("authorization", format!("bearer {token}")),
        probe("POST", routes::VERIFY).json(json!({"token": token})),
        probe("POST", routes::VERIFY)
            .bearer(token)
            .json(json!({"token": "junk"})),
        probe("POST", routes::VERIFY)
            .bearer("junk")
            .json(json!({"token": token})),
        probe("POST", routes::VERIFY),
        probe("POST", routes::VERIFY).json(json!({"token": 1})),
        probe("POST", routes::VERIFY).bearer(&expired),
        probe("POST", routes::VERIFY).header("authorization", "Basic abc"),
        probe("POST", routes::VERIFY)
            .bearer(token)
            .raw("text/plain", "x".into()),
        probe("POST", routes::GENERATE).json(json!({"prompt": "hi"})),
        probe("POST", routes::GENERATE)
            .bearer(&expired)
            .json(json!({"prompt": "hi"})),
        probe("POST", routes::GENERATE)
            .bearer(token)
            .json(json!({"prompt": "Write a haiku", "maxTokens": 20, "temperature": 0.3})),
        probe("POST", routes::GENERATE).bearer(token).json(
            json!({"prompt": "Write a haiku", "maxTokens": 20, "temperature": 0.3, "stream": true}),
        ),
        probe("POST", routes::GENERATE)
            .bearer(token)
            .json(json!({"prompt": "x", "model": "custom"})),
        probe("POST", routes::GENERATE)
            .bearer(token)
            .json(json!({"prompt": "", "maxTokens": 0, "temperature": 2, "stream": 1})),
        probe("POST", routes::GENERATE)
            .bearer(token)
            .raw("text/plain", "x".into()),
        probe("POST", routes::GENERATE)
            .bearer(token)
            .raw("application/json", "x".repeat(70_000)),
        probe("POST", routes::GENERATE)
            .bearer(token)
            .raw("application/json", "{".into()),
    ]
}

/// Replaces what legitimately differs between two answers: tokens, generation ids, times,
/// and the `backend` of `/health`.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match (key.as_str(), field.as_str()) {
                    ("token" | "expiresAt" | "backend", Some(_)) => *field = json!("<normalised>"),
                    ("id", Some(id)) if id.starts_with("gen_") => *field = json!("<gen id>"),
                    _ => normalise(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// What a client can observe and must find equal: status, the contract's headers, the body.
fn observable(answer: &Answer) -> Value {
    let headers: Vec<Value> = [
        "content-type",
        "allow",
        "retry-after",
        "www-authenticate",
        "cache-control",
        "ratelimit-limit",
        "x-request-id",
    ]
    .iter()
    .map(|name| json!([name, answer.header(name)]))
    .collect();
    let mut body = match answer.header("content-type") {
        _ if answer.body.is_empty() => Value::Null,
        Some("text/event-stream") => json!(answer.events()),
        Some("application/json") => answer.json(),
        _ => json!(answer.body),
    };
    normalise(&mut body);
    json!({"status": answer.status, "headers": headers, "body": body,
           "has_ratelimit": answer.header("ratelimit-remaining").is_some()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_answer_the_corpus_identically() {
    let env = TestEnv::with(|c| {
        c.auth.login_throttle.max_failures = non_zero(1000);
        c.rate_limit.generate.capacity = non_zero(1000);
    });
    let (legacy, new) = both(&env).await;
    let token = demo_token(&legacy).await;
    let mut differences = Vec::new();
    for (i, probe) in corpus(&token, &env).iter().enumerate() {
        let request_id = format!("diff-{i}");
        let a = observable(&probe.send(&legacy, &request_id).await);
        let b = observable(&probe.send(&new, &request_id).await);
        if a != b {
            differences.push(format!(
                "{} {} ({:?}):\n  legacy: {a}\n  new:    {b}",
                probe.method, probe.path, probe.headers
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_by_one_backend_verifies_on_the_other() {
    let env = TestEnv::new();
    let (legacy, new) = both(&env).await;
    for (minter, verifier) in [(&legacy, &new), (&new, &legacy)] {
        let token = demo_token(minter).await;
        let answer = post_json(verifier, routes::VERIFY, &json!({}), Some(&token)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["user"]["email"], "demo@example.com");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generate_budget_is_one_per_user_across_both_backends() {
    let env = TestEnv::new();
    let (legacy, new) = both(&env).await;
    let token = demo_token(&legacy).await;
    let capacity = env.config.rate_limit.generate.capacity.get();
    let mut remaining = Vec::new();
    for i in 0..capacity {
        let server = if i % 2 == 0 { &legacy } else { &new };
        let answer = post_json(
            server,
            routes::GENERATE,
            &json!({"prompt": "hi"}),
            Some(&token),
        )
        .await;
        assert_eq!(answer.status, 200);
        remaining.push(
            answer
                .header("ratelimit-remaining")
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(remaining, (0..capacity).rev().collect::<Vec<_>>());
    for server in [&legacy, &new] {
        let answer = post_json(
            server,
            routes::GENERATE,
            &json!({"prompt": "hi"}),
            Some(&token),
        )
        .await;
        assert_eq!(answer.status, 429);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_is_shared_across_both_backends() {
    // A window no run outlasts, so the failures below all count.
    let env = TestEnv::with(|c| c.auth.login_throttle.window_seconds = Seconds::of(3600));
    let (legacy, new) = both(&env).await;
    let wrong = json!({"email": "demo@example.com", "password": "wrong"});
    let max = env.config.auth.login_throttle.max_failures.get();
    for i in 0..max {
        let server = if i % 2 == 0 { &legacy } else { &new };
        assert_eq!(
            post_json(server, routes::LOGIN, &wrong, None).await.status,
            401
        );
    }
    for server in [&legacy, &new] {
        assert_eq!(
            post_json(server, routes::LOGIN, &wrong, None).await.status,
            429
        );
    }
}
