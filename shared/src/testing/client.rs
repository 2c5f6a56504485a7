//! A small HTTP client for tests: send, then look at status, headers and body.

use serde_json::Value;

use super::TestServer;

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The whole of `response`: status, headers, and the body read to its end.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("a readable body");
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(event, data)` pairs of a `text/event-stream` body.
    pub fn events(&self) -> Vec<(String, Value)> {
        self.body
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix("event: ") {
                        name = rest.to_owned();
                    } else if let Some(rest) = line.strip_prefix("data: ") {
                        data.push_str(rest);
                    }
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
                (name, data)
            })
            .collect()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client")
}

pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    Answer::read(request.send().await.expect("the server answers")).await
}

pub async fn get(server: &TestServer, path: &str) -> Answer {
    send(client().get(server.url(path))).await
}

/// POSTs `body` as `application/json`, with a bearer token if given.
pub async fn post_json(
    server: &TestServer,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> Answer {
    let mut request = client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(request).await
}

/// Logs the demo user in and returns the token.
pub async fn demo_token(server: &TestServer) -> String {
    let answer = post_json(
        server,
        crate::routes::LOGIN,
        &serde_json::json!({"email": crate::service::DEMO_EMAIL, "password": crate::service::DEMO_PASSWORD}),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "demo login: {}", answer.body);
    answer.json()["token"].as_str().expect("a token").to_owned()
}
