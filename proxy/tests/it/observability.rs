//! The admin listener: `/metrics` is valid Prometheus text with the series needed to compare
//! the two backends, and `/admin/status` reports the generation, weight, health and counts.
//! The helpers here (status, scrape, the exposition parser) are shared by the other proxy
//! tests.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use shared::testing::client::{Answer, client, send};
use shared::testing::eventually;

use crate::harness::Stack;

/// `GET {admin}/admin/status` as JSON.
pub(crate) async fn admin_status(stack: &Stack) -> Value {
    admin_status_at(&stack.proxy.admin_url).await
}

/// `GET {admin_url}/admin/status` as JSON, from any proxy.
pub(crate) async fn admin_status_at(admin_url: &str) -> Value {
    let answer = send(client().get(format!("{admin_url}/admin/status"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.json()
}

/// `/admin/status` once the request the harness sent while starting is counted (requests are
/// counted after their response is sent), so later counts can be compared exactly.
pub(crate) async fn settled_status(stack: &Stack) -> Value {
    eventually(
        "the start-up request is counted",
        Duration::from_secs(5),
        async || {
            let status = admin_status(stack).await;
            let requests = &status["counts"]["requests"];
            let total: u64 = ["legacy", "new", "none"]
                .iter()
                .filter_map(|side| requests[side].as_u64())
                .sum();
            (total >= 1).then_some(status)
        },
    )
    .await
}

/// `GET {admin}/metrics`, parsed strictly.
pub(crate) async fn scrape(stack: &Stack) -> Vec<Sample> {
    scrape_at(&stack.proxy.admin_url).await
}

/// `GET {admin_url}/metrics`, parsed strictly, from any proxy.
pub(crate) async fn scrape_at(admin_url: &str) -> Vec<Sample> {
    let answer = send(client().get(format!("{admin_url}/metrics"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_exposition(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body))
}

/// The value of the one series of `name` whose labels include all of `labels`; panics if several.
pub(crate) fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.has(labels))
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().map(|s| s.value)
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse()
                .map_err(|e| format!("value {text:?} is not a number: {e}"))
        }
        _ => Err(format!("value {text:?} is not a number")),
    }
}

/// Parses `{k="v",...}` at the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once('=').ok_or("a label without =")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = after
            .strip_prefix('"')
            .ok_or("a label value without \"")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (_, '\n') => return Err("a newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &after[1 + end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} at {rest:?}"));
        }
    }
}

/// A strict reader of the Prometheus text format (0.0.4): `# HELP`/`# TYPE` comments and
/// `name{labels} value [timestamp]` samples; every sample's family must have a `# TYPE`.
pub(crate) fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |why: String| format!("line {}: {why}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _) if is_metric_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if is_metric_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail(format!("unknown type {kind}")));
                    }
                    if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(fail("a second TYPE".into()));
                    }
                }
                (Some("HELP" | "TYPE"), _, _) => return Err(fail("a malformed comment".into())),
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| fail("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(fail)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|e| fail(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(fail(format!("no # TYPE for {family}")));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// `GET /health` through the proxy, forced to `side` with the override header.
async fn forced_health(stack: &Stack, side: &str) -> Answer {
    let answer = send(client().get(stack.url("/health")).header("x-canary", side)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["backend"], side);
    assert_eq!(answer.header("x-served-by"), Some(side));
    answer
}

#[test]
fn the_exposition_parser_is_strict() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let samples = parse_exposition(good).unwrap();
    assert_eq!(samples.len(), 4);
    assert_eq!(samples[0].labels["y"], "q\"\\");
    assert_eq!(samples[1].labels["le"], "+Inf");
    for bad in [
        "# TYPE a counter\na{x=1} 3\n",
        "# TYPE a counter\na{x=\"1\" 3\n",
        "# TYPE a counter\na 3 4 5\n",
        "# TYPE a counter\na three\n",
        "# TYPE a counter\n1a 3\n",
        "b 3\n",
        "# TYPE a counter\na{x=\"1\",x=\"2\"} 3\n",
        "# TYPE a counter\na{x=\"1\"}3\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?} was accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_parse_as_prometheus_text_with_both_backends_side_by_side() {
    let stack = Stack::start(25.0).await;
    for _ in 0..3 {
        forced_health(&stack, "legacy").await;
        forced_health(&stack, "new").await;
    }
    // Requests are counted after their response is sent, so wait for the last one (bounded).
    let samples = eventually("both sides counted", Duration::from_secs(5), async || {
        let samples = scrape(&stack).await;
        let counted = |backend| {
            value_of(
                &samples,
                "proxy_requests_total",
                &[
                    ("backend", backend),
                    ("route", "/health"),
                    ("status_class", "2xx"),
                ],
            )
            .unwrap_or(0.0)
        };
        (counted("legacy") >= 3.0 && counted("new") >= 3.0).then_some(samples)
    })
    .await;

    for backend in ["legacy", "new"] {
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == "proxy_request_duration_seconds_bucket"
                    && s.has(&[("backend", backend), ("route", "/health")])
            })
            .collect();
        assert!(!buckets.is_empty(), "no latency histogram for {backend}");
        assert!(
            buckets
                .iter()
                .any(|s| s.has(&[("le", "+Inf")]) && s.value >= 3.0),
            "{buckets:?}"
        );
        let count = value_of(
            &samples,
            "proxy_request_duration_seconds_count",
            &[("backend", backend), ("route", "/health")],
        );
        assert!(count.is_some_and(|c| c >= 3.0), "{backend}: {count:?}");
        assert_eq!(
            value_of(&samples, "proxy_backend_up", &[("backend", backend)]),
            Some(1.0),
            "{backend} is up"
        );
    }
    assert_eq!(value_of(&samples, "proxy_new_percent", &[]), Some(25.0));
    assert_eq!(
        value_of(&samples, "proxy_config_generation", &[]),
        Some(1.0)
    );

    // The gauge follows a reload.
    stack.set_percent(12.5).await;
    let samples = scrape(&stack).await;
    assert_eq!(value_of(&samples, "proxy_new_percent", &[]), Some(12.5));
    assert_eq!(
        value_of(&samples, "proxy_config_generation", &[]),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_status_shows_generation_weight_health_addresses_and_counts() {
    let stack = Stack::start(30.0).await;
    let before = settled_status(&stack).await;
    assert_eq!(before["generation"], 1);
    assert_eq!(before["newPercent"], 30.0);
    assert_eq!(
        before["configPath"],
        stack.config_path.display().to_string()
    );
    assert!(stack.config_path.starts_with(stack.env.dir()));
    let loaded_at = before["loadedAt"].as_str().expect("loadedAt");
    assert!(
        loaded_at.len() >= 20 && loaded_at.contains('T') && loaded_at.ends_with('Z'),
        "{loaded_at}"
    );
    for (side, addr) in [("legacy", stack.legacy_addr), ("new", stack.new_addr)] {
        assert_eq!(before["backends"][side]["address"], addr.to_string());
        assert_eq!(before["backends"][side]["healthy"], true);
    }
    let count = |status: &Value, side: &str| {
        status["counts"]["requests"][side]
            .as_u64()
            .unwrap_or_else(|| panic!("counts.requests.{side} in {status}"))
    };
    let (legacy0, new0) = (count(&before, "legacy"), count(&before, "new"));

    for _ in 0..3 {
        forced_health(&stack, "legacy").await;
    }
    for _ in 0..5 {
        forced_health(&stack, "new").await;
    }
    let after = eventually(
        "the requests are counted",
        Duration::from_secs(5),
        async || {
            let status = admin_status(&stack).await;
            (count(&status, "legacy") >= legacy0 + 3 && count(&status, "new") >= new0 + 5)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(count(&after, "legacy"), legacy0 + 3, "{after}");
    assert_eq!(count(&after, "new"), new0 + 5, "{after}");
    assert_eq!(after["counts"]["failovers"], 0);
    assert_eq!(after["counts"]["reloads"]["error"], 0);

    stack.set_percent(40.0).await;
    let reloaded = admin_status(&stack).await;
    assert_eq!(reloaded["generation"], 2);
    assert_eq!(reloaded["newPercent"], 40.0);
    assert!(
        reloaded["counts"]["reloads"]["ok"].as_u64() >= Some(1),
        "{reloaded}"
    );
}
