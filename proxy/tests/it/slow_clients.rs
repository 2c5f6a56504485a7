//! A client that trickles its request head is cut off at the head deadline; one that sends
//! its head promptly is served, also on a kept-alive connection, and an answer that takes
//! longer than the head deadline streams to its end.

use common::config::value::Millis;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use shared::testing::TestEnv;
use shared::testing::client::Answer;

use crate::harness::Stack;
use crate::streaming::{login, start_stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_off_at_the_deadline() {
    let env = TestEnv::new();
    let stack = Stack::start_with(env, 0.0, |c| {
        c.proxy.request_head_timeout_ms = Millis::of(500)
    })
    .await;
    let addr = stack
        .proxy
        .base_url
        .trim_start_matches("http://")
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    // One header line every 100 ms: each read is prompt, the head as a whole never ends.
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut cut_off = false;
    for line in 0.. {
        assert!(
            Instant::now() < give_up,
            "the trickling client was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream
            .write_all(format!("x-slow-{line}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_off = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(_)) => panic!("the proxy answered a request whose head never ended"),
            Err(_) => {}
        }
    }
    assert!(cut_off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_heads_are_served_on_a_kept_alive_connection() {
    let env = TestEnv::new();
    let stack = Stack::start_with(env, 0.0, |c| {
        c.proxy.request_head_timeout_ms = Millis::of(500)
    })
    .await;
    let client = shared::testing::client::client();
    for _ in 0..20 {
        let answer = shared::testing::client::send(client.get(stack.url("/health"))).await;
        assert_eq!(answer.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_head_deadline_streams_to_its_done_event() {
    // Six tokens at 200 ms each: over twice the 500 ms head deadline.
    let env = TestEnv::with(|config| config.generate.local.token_delay_ms = Millis::of(200));
    let deadline = Duration::from_millis(500);
    let stack = Stack::start_with(env, 0.0, |c| {
        c.proxy.request_head_timeout_ms = Millis::of(500)
    })
    .await;
    for (percent, side) in [(0.0, "legacy"), (100.0, "new")] {
        if percent > 0.0 {
            stack.set_percent(percent).await;
        }
        let token = login(&stack).await;
        let started = Instant::now();
        let response = start_stream(&stack, &token, 6).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(
            headers.get("x-served-by").and_then(|v| v.to_str().ok()),
            Some(side)
        );
        // A hang guard only; a stream cut at the deadline ends in an error here.
        let body = tokio::time::timeout(Duration::from_secs(20), response.text())
            .await
            .expect("the stream ends")
            .expect("the whole stream, not cut off");
        let took = started.elapsed();
        assert!(
            took > deadline,
            "the answer took {took:?}, not longer than the head deadline: the test shows nothing"
        );
        let answer = Answer {
            status: 200,
            headers,
            body,
        };
        let events = answer.events();
        let (done, deltas) = events.split_last().expect("events");
        assert_eq!(done.0, "done", "{side}: {events:?}");
        assert_eq!(
            Some(deltas.len() as u64),
            done.1["usage"]["outputTokens"].as_u64(),
            "{side}: {events:?}"
        );
    }
}
