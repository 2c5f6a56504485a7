//! `wrk` as the closed-loop load generator: a C event loop that costs the cores it shares
//! with the servers less than any generator of ours would, so that a peak comparison measures
//! the servers. It is driven with a Lua script written here from a [`RequestSpec`], whose
//! `done()` prints one machine-readable line that [`parse`] reads. wrk has no open loop (it
//! sends the next request when the last one is answered); open loop stays on `load`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::load::{Figures, RequestSpec};

/// The first word of the line `done()` prints.
const MARKER: &str = "bench-wrk";

#[derive(Debug, thiserror::Error)]
pub enum WrkError {
    #[error("cannot start wrk: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("wrk did not finish within {0:?}")]
    Overran(Duration),
    #[error("wrk failed ({status}): {stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("wrk printed no `{MARKER}` line; its output ends:\n{0}")]
    NoSummary(String),
    #[error("wrk's summary line lacks or garbles `{0}`")]
    Field(&'static str),
}

/// Where wrk is, if it is installed; and `taskset`, to pin it.
#[derive(Clone, Debug)]
pub struct Wrk {
    pub program: PathBuf,
    pub taskset: Option<PathBuf>,
}

impl Wrk {
    pub fn find() -> Option<Self> {
        Some(Self {
            program: crate::procs::installed("wrk")?,
            taskset: crate::procs::installed("taskset"),
        })
    }
}

/// One wrk run: `wrk -tTHREADS -cCONNECTIONS -dDURATION`, pinned to `cpu` when given (and
/// `taskset` is installed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub threads: usize,
    pub connections: usize,
    pub cpu: Option<usize>,
}

/// What `done()` reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Answered requests, whatever their status.
    pub requests: u64,
    pub duration: Duration,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// Answers with a status of 400 or more (wrk's own count; counting 2xx in `response()`
    /// would make every answer cross into Lua).
    pub status_errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

impl Summary {
    pub fn figures(&self) -> Figures {
        Figures {
            requests: self.requests,
            errors: self.connect_errors
                + self.read_errors
                + self.write_errors
                + self.timeouts
                + self.status_errors,
            elapsed: self.duration,
            percentiles_us: [self.p50_us, self.p90_us, self.p99_us, self.p999_us],
        }
    }
}

/// A Lua string literal holding `text` exactly (any byte, quotes and newlines included).
fn lua_string(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for &byte in text {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b' '..=b'~' => out.push(char::from(byte)),
            // Decimal escapes, three digits so that a following digit cannot extend them.
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
    out.push('"');
    out
}

/// The wrk script sending `spec` (the path goes in the URL) and printing one summary line.
pub fn script(spec: &RequestSpec) -> String {
    let mut lua = format!(
        "wrk.method = {}\n",
        lua_string(spec.method.as_str().as_bytes())
    );
    if !spec.body.is_empty() {
        lua.push_str(&format!("wrk.body = {}\n", lua_string(&spec.body)));
    }
    for (name, value) in &spec.headers {
        lua.push_str(&format!(
            "wrk.headers[{}] = {}\n",
            lua_string(name.as_bytes()),
            lua_string(value.as_bytes())
        ));
    }
    lua.push_str(&format!(
        r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{MARKER} requests=%d duration_us=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"#
    ));
    lua
}

/// Reads the line `script`'s `done()` printed out of wrk's whole standard output.
pub fn parse(stdout: &str) -> Result<Summary, WrkError> {
    let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(MARKER))
    else {
        let lines: Vec<&str> = stdout.lines().collect();
        return Err(WrkError::NoSummary(
            lines[lines.len().saturating_sub(10)..].join("\n"),
        ));
    };
    let field = |key: &'static str| -> Result<u64, WrkError> {
        line.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
            .ok_or(WrkError::Field(key))
    };
    Ok(Summary {
        requests: field("requests")?,
        duration: Duration::from_micros(field("duration_us")?),
        connect_errors: field("connect")?,
        read_errors: field("read")?,
        write_errors: field("write")?,
        timeouts: field("timeout")?,
        status_errors: field("status")?,
        p50_us: field("p50_us")?,
        p90_us: field("p90_us")?,
        p99_us: field("p99_us")?,
        p999_us: field("p999_us")?,
    })
}

/// wrk takes whole seconds; a run is never shorter than one.
pub fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs_f64().round().max(1.0) as u64
}

/// The command line: `[taskset -c CPU] wrk -t… -c… -d…s --latency -s SCRIPT URL`.
fn command(wrk: &Wrk, shape: Shape, duration: Duration, script: &Path, url: &str) -> Vec<String> {
    let mut argv = Vec::new();
    if let (Some(cpu), Some(taskset)) = (shape.cpu, &wrk.taskset) {
        argv.extend([taskset.display().to_string(), "-c".into(), cpu.to_string()]);
    }
    argv.extend([
        wrk.program.display().to_string(),
        format!("-t{}", shape.threads.max(1)),
        format!("-c{}", shape.connections.max(shape.threads).max(1)),
        format!("-d{}s", whole_seconds(duration)),
        "-s".into(),
        script.display().to_string(),
        url.into(),
    ]);
    argv
}

/// Runs wrk against `addr` for `duration` (whole seconds) and returns what it measured. The
/// script goes to `dir`; wrk is killed if it overruns by more than ten seconds.
pub async fn run(
    wrk: &Wrk,
    dir: &Path,
    addr: SocketAddr,
    spec: &RequestSpec,
    shape: Shape,
    duration: Duration,
) -> Result<Summary, WrkError> {
    let script_file = dir.join("bench.lua");
    std::fs::write(&script_file, script(spec)).map_err(WrkError::Spawn)?;
    let url = format!("http://{addr}{}", spec.path);
    let argv = command(wrk, shape, duration, &script_file, &url);
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(WrkError::Spawn)?;
    let limit = Duration::from_secs(whole_seconds(duration) + 10);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| WrkError::Overran(limit))?
        .map_err(WrkError::Spawn)?;
    if !output.status.success() {
        return Err(WrkError::Failed {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.1.0's whole output for a run of `script`'s kind (a POST to a server answering 501).
    const CAPTURED: &str = "Running 1s test @ http://127.0.0.1:18765/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    23.03ms   41.02ms 180.34ms   85.00%
    Req/Sec     1.08k     0.96k    2.43k    37.50%
  963 requests in 1.08s, 521.94KB read
  Non-2xx or 3xx responses: 963
Requests/sec:    895.68
Transfer/sec:    485.45KB
bench-wrk requests=963 duration_us=1075166 connect=0 read=0 write=0 timeout=0 status=963 p50_us=359 p90_us=93899 p99_us=162462 p999_us=179867
";

    #[test]
    fn parses_the_summary_line_out_of_wrks_output() {
        let summary = parse(CAPTURED).expect("parses");
        assert_eq!(
            summary,
            Summary {
                requests: 963,
                duration: Duration::from_micros(1_075_166),
                connect_errors: 0,
                read_errors: 0,
                write_errors: 0,
                timeouts: 0,
                status_errors: 963,
                p50_us: 359,
                p90_us: 93_899,
                p99_us: 162_462,
                p999_us: 179_867,
            }
        );
        let figures = summary.figures();
        assert_eq!(figures.errors, 963);
        assert_eq!(figures.percentiles_us, [359, 93_899, 162_462, 179_867]);
    }

    #[test]
    fn output_without_the_line_or_with_a_garbled_field_is_refused() {
        let without: String = CAPTURED
            .lines()
            .filter(|l| !l.starts_with(MARKER))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(matches!(parse(&without), Err(WrkError::NoSummary(_))));
        let garbled = CAPTURED.replace("p99_us=162462", "p99_us=nan");
        assert!(matches!(parse(&garbled), Err(WrkError::Field("p99_us"))));
    }

    #[test]
    fn the_script_sends_method_body_and_headers_exactly() {
        let spec =
            RequestSpec::post_json("/api/auth/verify", serde_json::json!({"a": "x\"y\\z\n"}))
                .header("authorization", "Bearer t.k.n");
        let lua = script(&spec);
        assert!(lua.contains("wrk.method = \"POST\"\n"), "{lua}");
        // The JSON text {"a":"x\"y\\z\n"}, each quote and backslash escaped once more for Lua.
        assert!(
            lua.contains(r#"wrk.body = "{\"a\":\"x\\\"y\\\\z\\n\"}""#),
            "{lua}"
        );
        assert!(lua.contains("wrk.headers[\"content-type\"] = \"application/json\"\n"));
        assert!(lua.contains("wrk.headers[\"authorization\"] = \"Bearer t.k.n\"\n"));
        assert!(lua.contains("done = function(summary, latency, requests)"));
        assert!(lua.contains("latency:percentile(99.9)"));
    }

    #[test]
    fn a_get_has_no_body_and_control_bytes_are_escaped() {
        let lua = script(&RequestSpec::get("/health"));
        assert!(lua.contains("wrk.method = \"GET\"\n"));
        assert!(!lua.contains("wrk.body"));
        assert_eq!(lua_string(b"a\r\n\x7f1"), "\"a\\013\\010\\1271\"");
    }

    #[test]
    fn the_command_is_pinned_only_when_asked_and_taskset_exists() {
        let wrk = Wrk {
            program: "/usr/bin/wrk".into(),
            taskset: Some("/usr/bin/taskset".into()),
        };
        let shape = Shape {
            threads: 2,
            connections: 50,
            cpu: Some(1),
        };
        let argv = command(
            &wrk,
            shape,
            Duration::from_millis(2600),
            Path::new("/tmp/b.lua"),
            "http://127.0.0.1:1/x",
        );
        assert_eq!(
            argv,
            [
                "/usr/bin/taskset",
                "-c",
                "1",
                "/usr/bin/wrk",
                "-t2",
                "-c50",
                "-d3s",
                "-s",
                "/tmp/b.lua",
                "http://127.0.0.1:1/x"
            ]
        );
        let unpinned = command(
            &Wrk {
                taskset: None,
                ..wrk
            },
            shape,
            Duration::from_millis(250),
            Path::new("/tmp/b.lua"),
            "http://127.0.0.1:1/x",
        );
        assert_eq!(unpinned[0], "/usr/bin/wrk");
        assert_eq!(unpinned[3], "-d1s", "wrk runs whole seconds, at least one");
    }
}
