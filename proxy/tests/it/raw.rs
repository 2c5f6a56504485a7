//! A raw HTTP/1 client over one TCP connection, for what a well-behaved client never sends:
//! requests without `host`, HTTP/1.0, several requests written in one go, heads no parser
//! should accept. It writes bytes as given and reads back whole responses (framed by
//! `content-length`, `chunked` or the close), bounded in time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a whole exchange may take before the test fails (a bound, never a wait).
const LIMIT: Duration = Duration::from_secs(10);

/// One response as it came on the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or `Null` when it is not JSON (an empty body, say).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What came back for the bytes written.
#[derive(Debug)]
pub struct Exchange {
    pub responses: Vec<RawResponse>,
    /// The server closed the connection after the last response.
    pub closed: bool,
}

/// The proxy's public address from its base URL.
pub fn addr_of(base_url: &str) -> SocketAddr {
    base_url
        .trim_start_matches("http://")
        .parse()
        .expect("a socket address")
}

/// Connects, writes `request` in one go, and reads `expected` responses (see
/// `read_responses`).
pub async fn exchange(addr: SocketAddr, request: &[u8], expected: usize) -> Exchange {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    // The server may answer and close before reading everything (an oversized head); a
    // failed write then is part of what is tested, not an error of the test.
    let _ = stream.write_all(request).await;
    read_responses(&mut stream, expected).await
}

/// Reads until `expected` whole responses have arrived, or the server closes the
/// connection; after the last expected one, looks (briefly) whether the server closes.
pub async fn read_responses(stream: &mut TcpStream, expected: usize) -> Exchange {
    let deadline = Instant::now() + LIMIT;
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    let mut closed = false;
    let mut chunk = [0u8; 16 * 1024];
    while !closed && responses.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {expected} responses within {LIMIT:?}: {responses:?}"));
        match read {
            Ok(0) | Err(_) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some((response, used)) = parse(&buf, closed) {
            responses.push(response);
            buf.drain(..used);
        }
    }
    if !closed {
        closed = closes_soon(stream).await;
    }
    Exchange { responses, closed }
}

/// Whether the server closes the connection now that it has answered: a connection it
/// keeps stays silent, so a short read timeout is the answer "open" (a bound, not a sleep).
async fn closes_soon(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes after the last response"),
        Err(_) => false,
    }
}

/// One whole response from the front of `buf` and how many bytes it took; `None` while it
/// is incomplete. A body without framing runs to the close.
fn parse(buf: &[u8], closed: bool) -> Option<(RawResponse, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).expect("an ASCII response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let rest = &buf[head_end..];
    let (body, used) = if let Some(length) = find("content-length") {
        let length: usize = length.parse().expect("a content-length");
        (rest.get(..length)?.to_vec(), length)
    } else if find("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        dechunk(rest)?
    } else if status == 204 || status == 304 {
        (Vec::new(), 0)
    } else if closed {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    Some((
        RawResponse {
            status,
            headers,
            body,
        },
        head_end + used,
    ))
}

/// A chunked body from the front of `buf` and how many bytes it took; `None` while incomplete.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&buf[at..line_end]).expect("a chunk size");
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).expect("hex");
        at = line_end + 2;
        if size == 0 {
            // No trailers from our servers: the last chunk ends with one more CRLF.
            return (buf.len() >= at + 2).then_some((body, at + 2));
        }
        body.extend_from_slice(buf.get(at..at + size)?);
        at += size;
        if buf.len() < at + 2 {
            return None;
        }
        at += 2;
    }
}
