//! `proxy rollout status|approve|pause|resume|abort`: an operator's client of the admin
//! listener's rollout routes. It finds the listener and the token the way the proxy does
//! (`proxy.admin_listen`, `CANARY_ADMIN_TOKEN` else `proxy.admin_token_file`), sends one
//! request and prints the rollout's status as a summary (or its JSON with `--json`).
//!
//! What can be pure is (the target, the summary, reading an error answer), and tested so;
//! `run` only adds the one HTTP exchange.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::admin_auth::{self, AdminAuthError, Token};
use crate::config::ProxyConfig;
use common::config::ConfigError;

/// However the listener is reached, an answer takes no longer than this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What the operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Status,
    /// Enter step `step` (its index in `rollout.steps`, as `status` shows it).
    Approve {
        step: usize,
    },
    Pause,
    Resume,
    Abort,
}

impl Action {
    /// The route under the admin base, and the JSON body of a POST (`None`: a GET).
    fn request(self) -> (&'static str, Option<serde_json::Value>) {
        let post = |path, body| (path, Some(body));
        match self {
            Self::Status => ("/admin/rollout", None),
            Self::Approve { step } => post(
                "/admin/rollout/approve",
                serde_json::json!({ "step": step }),
            ),
            // Empty objects rather than no body: the admin listener takes only JSON POSTs.
            Self::Pause => post("/admin/rollout/pause", serde_json::json!({})),
            Self::Resume => post("/admin/rollout/resume", serde_json::json!({})),
            Self::Abort => post("/admin/rollout/abort", serde_json::json!({})),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Token(#[from] AdminAuthError),
    #[error("--admin {url}: {reason}")]
    AdminUrl { url: String, reason: &'static str },
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
    #[error("no answer from the admin listener at {url}: {}", causes(source))]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{code}: {message}{}", hint(code))]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the admin listener answered {status}: {body}")]
    Unexpected { status: u16, body: String },
    #[error("the admin listener's answer is not a rollout status: {0}")]
    NotAStatus(serde_json::Error),
}

/// An error and its causes, `: `-separated: reqwest's own message alone says only that
/// sending failed, the cause says why (refused, timed out, no such host).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

fn hint(code: &str) -> &'static str {
    match code {
        "UNAUTHORIZED" => " (set CANARY_ADMIN_TOKEN, or proxy.admin_token_file in --config)",
        "STALE_APPROVAL" => " (see `proxy rollout status` for the step waiting)",
        _ => "",
    }
}

/// Where requests go and with which token.
#[derive(Debug)]
pub struct Target {
    /// `http://host:port` (or what `--admin` said, without a trailing `/`).
    pub base: String,
    pub token: Option<Token>,
}

impl Target {
    /// From `--admin` if given, else `proxy.admin_listen` of the config at `config_path`; the
    /// token from `CANARY_ADMIN_TOKEN`, else `proxy.admin_token_file`. The config is read only
    /// when one of them needs it, and with `--admin` a config file that is not there is no
    /// error (the token then comes from the environment, or there is none).
    pub fn resolve(config_path: &Path, admin: Option<&str>) -> Result<Self, CliError> {
        let env_token = std::env::var_os(admin_auth::TOKEN_ENV);
        let (base, config) = match admin {
            Some(url) => {
                let wanted = env_token.is_none() && config_path.exists();
                let config = wanted.then(|| ProxyConfig::load(config_path)).transpose()?;
                (parse_admin_url(url)?, config)
            }
            None => {
                let config = ProxyConfig::load(config_path)?;
                (base_for_listen(config.proxy.admin_listen), Some(config))
            }
        };
        let token_file = config
            .as_ref()
            .and_then(|config| config.proxy.admin_token_file.as_deref());
        let token = admin_auth::read_token(env_token, token_file)?;
        Ok(Self { base, token })
    }
}

/// The URL for a listener bound at `listen`: a wildcard bind is reached on this host's own
/// loopback of the same family, never on another address.
pub fn base_for_listen(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// `--admin`: `http(s)://host:port[/prefix]`, or `host:port` for `http://host:port`.
pub fn parse_admin_url(url: &str) -> Result<String, CliError> {
    let refuse = |reason| CliError::AdminUrl {
        url: url.to_owned(),
        reason,
    };
    let full = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let parsed = reqwest::Url::parse(&full).map_err(|_| refuse("not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(refuse("must be http(s)://host:port"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(refuse("must have no query, fragment or user"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Sends `action` to `target` and returns what to print: the status summary, or with `json`
/// the status as the listener sent it.
pub fn run(target: &Target, action: Action, json: bool) -> Result<String, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Client(error.to_string()))?;
    let (status, body) = runtime.block_on(exchange(target, action))?;
    answer_to_output(status, &body, json)
}

async fn exchange(target: &Target, action: Action) -> Result<(u16, String), CliError> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        // Only the host the operator named (or the config's) ever sees the token: no
        // HTTP_PROXY from the environment, no redirect followed elsewhere.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| CliError::Client(error.to_string()))?;
    let (path, body) = action.request();
    let url = format!("{}{path}", target.base);
    let mut request = match &body {
        None => client.get(&url),
        Some(body) => client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
    };
    if let Some(token) = &target.token {
        request = request.bearer_auth(token.as_str());
    }
    let unreachable = |source| CliError::Unreachable {
        url: url.clone(),
        source,
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(unreachable)?;
    Ok((status, text))
}

/// What to print for an answer, or the error it carries.
pub fn answer_to_output(status: u16, body: &str, json: bool) -> Result<String, CliError> {
    if !(200..300).contains(&status) {
        return Err(error_from_answer(status, body));
    }
    if json {
        return Ok(format!("{}\n", body.trim_end()));
    }
    let parsed: RolloutStatus = serde_json::from_str(body).map_err(CliError::NotAStatus)?;
    Ok(summary(&parsed))
}

/// An error answer: the contract's envelope when it is one, else its first bytes.
pub fn error_from_answer(status: u16, body: &str) -> CliError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Envelope>(body) {
        Ok(Envelope { error }) => CliError::Refused {
            status,
            code: error.code,
            message: error.message,
        },
        Err(_) => CliError::Unexpected {
            status,
            body: body.chars().take(200).collect(),
        },
    }
}

/// `GET /admin/rollout`'s JSON. Every field has a default, so a field the listener adds or
/// leaves out never stops an operator from reading the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutStatus {
    pub enabled: bool,
    pub phase: String,
    pub pause_reason: Option<String>,
    pub rollback_reason: Option<String>,
    pub step_index: usize,
    pub current_percent: f64,
    pub step_started_at: Option<String>,
    pub hold_remaining_seconds: Option<f64>,
    pub consecutive_passes: u64,
    pub consecutive_failures: u64,
    pub steps: Vec<StepStatus>,
    pub last_evaluation: Option<EvaluationStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StepStatus {
    pub percent: f64,
    pub hold_seconds: f64,
    pub approval: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EvaluationStatus {
    pub at: String,
    pub outcome: String,
    pub critical: Option<String>,
    pub canary_requests: u64,
    pub baseline_requests: u64,
    pub verdicts: Vec<VerdictStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VerdictStatus {
    pub scope: String,
    pub metric: String,
    pub outcome: String,
    pub canary: f64,
    pub baseline: f64,
    pub p_value: Option<f64>,
    pub reason: String,
}

/// The status for a person: where the rollout is, what it waits for (with the command that
/// unblocks it), and what the last evaluation found, one line per verdict. Steps are shown
/// by their index, the number `proxy rollout approve` takes.
pub fn summary(status: &RolloutStatus) -> String {
    let mut out = String::new();
    let phase = if status.phase.is_empty() {
        "unknown"
    } else {
        &status.phase
    };
    // `write!` to a `String` cannot fail.
    let _ = write!(out, "rollout: {phase}");
    match phase {
        "paused" => {
            let reason = status.pause_reason.as_deref().unwrap_or("no reason given");
            let _ = write!(out, " ({reason})");
        }
        "rolled_back" => {
            let reason = status
                .rollback_reason
                .as_deref()
                .unwrap_or("no reason given");
            let _ = write!(out, " ({reason})");
        }
        _ => {}
    }
    if !status.enabled {
        out.push_str(" — disabled ([rollout] enabled = false)");
    }
    out.push('\n');
    let _ = writeln!(out, "  new gets {}", percent(status.current_percent));
    if let Some(last) = status.steps.len().checked_sub(1) {
        let step = status.steps.get(status.step_index);
        let _ = write!(out, "  step #{} of #0..#{last}", status.step_index);
        if let Some(step) = step {
            let _ = write!(out, " ({})", describe_step(step));
        }
        out.push('\n');
    }
    if phase == "waiting_approval" {
        let _ = writeln!(
            out,
            "  waiting for an operator to approve entering step #{}; to approve, run:\n    \
             proxy rollout approve {}",
            status.step_index, status.step_index
        );
    }
    if phase == "paused" {
        out.push_str("  to go on, run: proxy rollout resume\n");
    }
    match (status.hold_remaining_seconds, &status.step_started_at) {
        (Some(left), Some(since)) => {
            let _ = writeln!(
                out,
                "  hold: {} left (step entered {since})",
                duration(left)
            );
        }
        (Some(left), None) => {
            let _ = writeln!(out, "  hold: {} left", duration(left));
        }
        (None, Some(since)) => {
            let _ = writeln!(out, "  step entered {since}");
        }
        (None, None) => {}
    }
    let _ = writeln!(
        out,
        "  in a row: {} passing, {} failing evaluations",
        status.consecutive_passes, status.consecutive_failures
    );
    if !status.steps.is_empty() {
        let steps: Vec<String> = (status.steps.iter().enumerate())
            .map(|(index, step)| format!("#{index} {}", describe_step(step)))
            .collect();
        let _ = writeln!(out, "  steps: {}", steps.join(" · "));
    }
    match &status.last_evaluation {
        None => out.push_str("last evaluation: none yet\n"),
        Some(evaluation) => evaluation_lines(&mut out, evaluation),
    }
    out
}

fn evaluation_lines(out: &mut String, evaluation: &EvaluationStatus) {
    let _ = writeln!(
        out,
        "last evaluation {}: {} (canary {} requests, baseline {})",
        evaluation.at, evaluation.outcome, evaluation.canary_requests, evaluation.baseline_requests
    );
    if let Some(critical) = &evaluation.critical {
        let _ = writeln!(out, "  critical: {critical}");
    }
    for verdict in &evaluation.verdicts {
        let p_value = verdict
            .p_value
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.4}"));
        let _ = writeln!(
            out,
            "  {:<22} {:<15} {:<13} canary {:>10} vs baseline {:>10}  p={:<7} {}",
            verdict.scope,
            verdict.metric,
            verdict.outcome,
            number(verdict.canary),
            number(verdict.baseline),
            p_value,
            verdict.reason
        );
    }
}

fn describe_step(step: &StepStatus) -> String {
    let mut text = percent(step.percent);
    if step.hold_seconds > 0.0 {
        let _ = write!(text, ", hold {}", duration(step.hold_seconds));
    }
    if step.approval {
        text.push_str(", approval");
    }
    text
}

/// `5%`, `12.5%`, `0.01%`: as `Display` writes an `f64`, without trailing zeros.
fn percent(value: f64) -> String {
    format!("{value}%")
}

/// At most four decimals, without trailing zeros (error rates, latencies).
fn number(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// `1h 30m`, `4m 5s`, `0s`: whole seconds, largest units first.
fn duration(seconds: f64) -> String {
    let total = if seconds.is_finite() && seconds > 0.0 {
        seconds.round() as u64
    } else {
        0
    };
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    let parts: Vec<String> = [(hours, "h"), (minutes, "m"), (secs, "s")]
        .into_iter()
        .filter(|(amount, _)| *amount > 0)
        .map(|(amount, unit)| format!("{amount}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITING: &str = r#"{
        "enabled": true,
        "phase": "waiting_approval",
        "pauseReason": null,
        "rollbackReason": null,
        "stepIndex": 2,
        "currentPercent": 5.0,
        "stepStartedAt": "2026-11-24T06:00:00Z",
        "holdRemainingSeconds": 270.4,
        "consecutivePasses": 3,
        "consecutiveFailures": 0,
        "steps": [
            {"percent": 1.0, "holdSeconds": 600.0, "approval": false},
            {"percent": 5.0, "holdSeconds": 1800.0, "approval": false},
            {"percent": 25.0, "holdSeconds": 3600.0, "approval": true},
            {"percent": 50.0, "holdSeconds": 3600.0, "approval": false},
            {"percent": 100.0, "holdSeconds": 0.0, "approval": false}
        ],
        "lastEvaluation": {
            "at": "2026-11-24T06:40:10Z",
            "outcome": "pass",
            "critical": null,
            "canaryRequests": 612,
            "baselineRequests": 598,
            "verdicts": [
                {"scope": "overall", "metric": "error_rate", "outcome": "pass",
                 "canary": 0.0016, "baseline": 0.00167, "pValue": 0.48, "reason": "within tolerance"},
                {"scope": "/api/auth/verify", "metric": "latency_p99", "outcome": "inconclusive",
                 "canary": 12.5, "baseline": 11.0, "pValue": null, "reason": "too few requests"}
            ]
        }
    }"#;

    fn parse(json: &str) -> RolloutStatus {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_rollout_waiting_for_approval_shows_the_command_that_approves_it() {
        let text = summary(&parse(WAITING));
        let expected = "\
rollout: waiting_approval
  new gets 5%
  step #2 of #0..#4 (25%, hold 1h, approval)
  waiting for an operator to approve entering step #2; to approve, run:
    proxy rollout approve 2
  hold: 4m 30s left (step entered 2026-11-24T06:00:00Z)
  in a row: 3 passing, 0 failing evaluations
  steps: #0 1%, hold 10m · #1 5%, hold 30m · #2 25%, hold 1h, approval · #3 50%, hold 1h · #4 100%
last evaluation 2026-11-24T06:40:10Z: pass (canary 612 requests, baseline 598)
  overall                error_rate      pass          canary     0.0016 vs baseline     0.0017  p=0.4800  within tolerance
  /api/auth/verify       latency_p99     inconclusive  canary       12.5 vs baseline         11  p=-       too few requests
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn paused_and_rolled_back_say_why_and_an_idle_disabled_one_says_so() {
        let paused = summary(&parse(
            r#"{"enabled": true, "phase": "paused", "pauseReason": "operator", "stepIndex": 1,
                "currentPercent": 5, "steps": [{"percent": 1}, {"percent": 5}],
                "lastEvaluation": {"at": "t", "outcome": "fail", "critical": "error rate 0.2 at or above 0.05",
                                   "canaryRequests": 30, "baselineRequests": 30, "verdicts": []}}"#,
        ));
        assert!(
            paused.starts_with("rollout: paused (operator)\n"),
            "{paused}"
        );
        assert!(
            paused.contains("to go on, run: proxy rollout resume\n"),
            "{paused}"
        );
        assert!(paused.contains("  step #1 of #0..#1 (5%)\n"), "{paused}");
        assert!(
            paused.contains("  critical: error rate 0.2 at or above 0.05\n"),
            "{paused}"
        );
        assert!(!paused.contains("approve"), "{paused}");

        let rolled_back = summary(&parse(
            r#"{"enabled": true, "phase": "rolled_back", "rollbackReason": "critical_error_rate",
                "currentPercent": 0}"#,
        ));
        assert!(rolled_back.starts_with("rollout: rolled_back (critical_error_rate)\n"));
        assert!(rolled_back.contains("  new gets 0%\n"));

        let idle = summary(&parse(
            r#"{"enabled": false, "phase": "idle", "currentPercent": 12.5}"#,
        ));
        assert_eq!(
            idle,
            "rollout: idle — disabled ([rollout] enabled = false)\n  new gets 12.5%\n  \
             in a row: 0 passing, 0 failing evaluations\nlast evaluation: none yet\n"
        );
    }

    #[test]
    fn an_envelope_becomes_its_code_and_message_and_anything_else_its_first_bytes() {
        let stale = error_from_answer(
            409,
            r#"{"error":{"code":"STALE_APPROVAL","message":"step 1 is not awaiting approval","requestId":"r"}}"#,
        );
        assert_eq!(
            stale.to_string(),
            "STALE_APPROVAL: step 1 is not awaiting approval \
             (see `proxy rollout status` for the step waiting)"
        );
        let unauthorized =
            error_from_answer(401, r#"{"error":{"code":"UNAUTHORIZED","message":"m"}}"#);
        assert!(unauthorized.to_string().contains("CANARY_ADMIN_TOKEN"));
        let odd = error_from_answer(502, &"x".repeat(500));
        assert_eq!(
            odd.to_string(),
            format!("the admin listener answered 502: {}", "x".repeat(200))
        );
        assert!(matches!(
            answer_to_output(409, "{}", false),
            Err(CliError::Unexpected { status: 409, .. })
        ));
    }

    #[test]
    fn json_output_is_the_body_as_sent_and_a_summary_needs_a_status() {
        assert_eq!(
            answer_to_output(200, "{\"phase\":\"x\"}", true).unwrap(),
            "{\"phase\":\"x\"}\n"
        );
        assert!(matches!(
            answer_to_output(200, "[1]", false),
            Err(CliError::NotAStatus(_))
        ));
    }

    #[test]
    fn actions_are_a_get_or_json_posts() {
        assert_eq!(Action::Status.request(), ("/admin/rollout", None));
        let (path, body) = Action::Approve { step: 2 }.request();
        assert_eq!(path, "/admin/rollout/approve");
        assert_eq!(body.unwrap().to_string(), r#"{"step":2}"#);
        for (action, path) in [
            (Action::Pause, "/admin/rollout/pause"),
            (Action::Resume, "/admin/rollout/resume"),
            (Action::Abort, "/admin/rollout/abort"),
        ] {
            assert_eq!(action.request(), (path, Some(serde_json::json!({}))));
        }
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback_and_others_as_they_are() {
        for (listen, base) in [
            ("0.0.0.0:9901", "http://127.0.0.1:9901"),
            ("[::]:9901", "http://[::1]:9901"),
            ("127.0.0.1:9901", "http://127.0.0.1:9901"),
            ("[::1]:9902", "http://[::1]:9902"),
            ("192.168.1.20:9901", "http://192.168.1.20:9901"),
        ] {
            assert_eq!(base_for_listen(listen.parse().unwrap()), base, "{listen}");
        }
    }

    #[test]
    fn admin_urls_are_http_bases_without_query_or_user() {
        for (url, base) in [
            ("http://127.0.0.1:9901", "http://127.0.0.1:9901"),
            ("http://127.0.0.1:9901/", "http://127.0.0.1:9901"),
            ("127.0.0.1:9901", "http://127.0.0.1:9901"),
            (
                "https://canary.example.com/ops/",
                "https://canary.example.com/ops",
            ),
            ("http://[::1]:9901", "http://[::1]:9901"),
        ] {
            assert_eq!(parse_admin_url(url).unwrap(), base, "{url}");
        }
        for url in [
            "ftp://127.0.0.1:9901",
            "http://",
            "http://127.0.0.1:9901/?a=1",
            "http://user@127.0.0.1:9901",
            "not a url",
        ] {
            assert!(parse_admin_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn durations_and_numbers_read_short() {
        for (seconds, text) in [
            (0.0, "0s"),
            (0.4, "0s"),
            (59.6, "1m"),
            (90.0, "1m 30s"),
            (3600.0, "1h"),
            (5400.0, "1h 30m"),
            (-3.0, "0s"),
            (f64::NAN, "0s"),
        ] {
            assert_eq!(duration(seconds), text, "{seconds}");
        }
        for (value, text) in [
            (0.0, "0"),
            (0.00167, "0.0017"),
            (12.5, "12.5"),
            (11.0, "11"),
            (-0.00001, "0"),
        ] {
            assert_eq!(number(value), text, "{value}");
        }
    }
}
