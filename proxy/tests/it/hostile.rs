//! What a careless or hostile client writes on the wire, as raw bytes over TCP.

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::Stack;
use crate::raw::{addr_of, read_responses};

/// The side that answers everything at `percent` (0 or 100).
fn side_at(percent: f64) -> &'static str {
    if percent == 0.0 { "legacy" } else { "new" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order_on_one_connection() {
    for percent in [0.0, 100.0] {
        let stack = Stack::start(percent).await;
        let mut stream = TcpStream::connect(addr_of(&stack.proxy.base_url))
            .await
            .expect("connect to the proxy");
        let login = json!({"email": "nobody@example.com", "password": "wrong"}).to_string();
        let pipelined = format!(
            "GET /health HTTP/1.1\r\nhost: a\r\nx-request-id: pipe-1\r\n\r\n\
             POST /api/auth/login HTTP/1.1\r\nhost: a\r\nx-request-id: pipe-2\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{login}\
             GET /nowhere HTTP/1.1\r\nhost: a\r\nx-request-id: pipe-3\r\n\r\n",
            login.len()
        );
        stream
            .write_all(pipelined.as_bytes())
            .await
            .expect("write the requests");
        let answered = read_responses(&mut stream, 3).await;
        let seen: Vec<(u16, Option<&str>)> = answered
            .responses
            .iter()
            .map(|r| (r.status, r.header("x-request-id")))
            .collect();
        assert_eq!(
            seen,
            [
                (200, Some("pipe-1")),
                (401, Some("pipe-2")),
                (404, Some("pipe-3"))
            ],
            "at {percent} %: {:?}",
            answered.responses
        );
        assert_eq!(
            answered.responses[1].json()["error"]["code"],
            "INVALID_CREDENTIALS"
        );
        for response in &answered.responses {
            assert_eq!(response.header("x-served-by"), Some(side_at(percent)));
            assert_ne!(response.header("connection"), Some("close"));
        }
        assert!(!answered.closed, "the connection stays open");

        // And it goes on serving.
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: a\r\nx-request-id: after\r\n\r\n")
            .await
            .expect("write one more request");
        let after = read_responses(&mut stream, 1).await;
        assert_eq!(after.responses[0].status, 200);
        assert_eq!(after.responses[0].header("x-request-id"), Some("after"));
    }
}
