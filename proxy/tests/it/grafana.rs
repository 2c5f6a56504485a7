//! `deploy/grafana/canary-proxy.json` against the proxy: every metric its queries name is one a
//! freshly started proxy serves (an unknown or renamed metric, or a vec no series of which
//! exists until its first event, would be a panel reading "No data"), but for the few listed
//! in `CREATED_ON_FIRST_EVENT`, which must be served once their event happened; and it names
//! no data source of one particular Grafana.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use proxy::config::ProxyConfig;
use proxy::state::ProxyState;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/canary-proxy.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every string under one of `keys`, anywhere in `value`.
fn strings_under<'a>(value: &'a Value, keys: &[&str], found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match child {
                    Value::String(text) if keys.contains(&key.as_str()) => found.push(text),
                    _ => strings_under(child, keys, found),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| strings_under(item, keys, found)),
        _ => {}
    }
}

fn is_identifier(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The family a series name belongs to: a histogram's `_bucket`, `_sum` and `_count` series
/// are the histogram's.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// The proxy's metric names in a PromQL expression: identifiers that start with `proxy_`.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("proxy_") {
        let starts_identifier = !rest[..at].chars().next_back().is_some_and(is_identifier);
        let tail = &rest[at..];
        let end = tail.find(|c| !is_identifier(c)).unwrap_or(tail.len());
        if starts_identifier {
            names.push(&tail[..end]);
        }
        rest = &tail[end..];
    }
    names
}

/// The families of the series in Prometheus text (comments skipped).
fn served_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| family(name).to_owned())
        .collect()
}

#[test]
fn the_metric_name_scanner_finds_identifiers_only() {
    assert_eq!(
        metric_names(
            "sum by (le) (rate(proxy_a_bucket{x=\"y\"}[5m])) / my_proxy_b + proxy_c*proxy_d"
        ),
        ["proxy_a_bucket", "proxy_c", "proxy_d"]
    );
    assert_eq!(
        family("proxy_request_duration_seconds_bucket"),
        "proxy_request_duration_seconds"
    );
    assert_eq!(family("proxy_requests_total"), "proxy_requests_total");
    let served = served_families(
        "# TYPE proxy_h histogram\nproxy_h_bucket{le=\"1\"} 0\nproxy_h_sum 0\nproxy_g 1\n",
    );
    assert_eq!(
        served,
        BTreeSet::from(["proxy_h".to_owned(), "proxy_g".to_owned()])
    );
}

/// The state a freshly started proxy has, before any request, health check, failover or
/// reload.
fn fresh_state() -> std::sync::Arc<ProxyState> {
    ProxyState::new(
        PathBuf::from("config.toml"),
        ProxyConfig::default(),
        b"a cookie secret for this test only",
        proxy::admin_auth::AdminAuth::new(None),
        proxy::shadow::state::ShadowState::new(
            common::shadow::ShadowKey::new(b"a shadow secret for this test only, 32 bytes+")
                .unwrap(),
        )
        .unwrap(),
    )
}

/// What the proxy's wiring does on a metric's first event.
type FirstEvent = fn(&ProxyState);

/// The vecs the dashboard may query although a fresh proxy serves no series of them, each with
/// the event that creates its first series, as the proxy's wiring records it.
///
/// Why a list at all: their labels are not known beforehand (a field path is whatever a
/// response holds), so no series can be created at start, and the prometheus crate cannot
/// show an empty vec: `Registry::gather` drops a family without series, and the registry
/// lists its collectors nowhere else. So "registered" is checked by the event: once it
/// happened, the family must be served under the name the dashboard queries. The list stays
/// minimal: an entry the proxy serves from start, or the dashboard does not query, fails.
/// Panels reading these show "No data" until the first event, which their descriptions say.
const CREATED_ON_FIRST_EVENT: [(&str, FirstEvent); 1] = [(
    // A comparison of legacy against new in which a field differed beyond its noise.
    "proxy_shadow_field_mismatches_total",
    |state| (state.metrics.shadow).field_mismatch("/health", "$.version"),
)];

#[test]
fn every_metric_the_grafana_dashboard_queries_is_served_from_start() {
    let dashboard = dashboard();
    // Panel queries (`expr`) and template variable queries (`definition`, `query`).
    let mut queries = Vec::new();
    strings_under(&dashboard, &["expr", "definition", "query"], &mut queries);
    let used: BTreeSet<&str> = queries
        .iter()
        .flat_map(|q| metric_names(q))
        .map(family)
        .collect();
    assert!(
        used.len() >= 10,
        "the dashboard's queries name only {used:?}: are the panels' `expr` where this test looks?"
    );

    // What `/metrics` serves right after start.
    let state = fresh_state();
    let served = served_families(&state.metrics.render());
    let on_first_event: BTreeSet<&str> = CREATED_ON_FIRST_EVENT.iter().map(|(n, _)| *n).collect();
    let missing: Vec<&str> = used
        .iter()
        .copied()
        .filter(|name| !served.contains(*name) && !on_first_event.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/canary-proxy.json queries metrics a freshly started proxy does not serve \
         (unknown, renamed, or a vec with no series until its first event): {missing:?}\n\
         served: {served:?}"
    );

    for (name, first_event) in CREATED_ON_FIRST_EVENT {
        assert!(
            used.contains(name),
            "{name} is listed as created on first event but the dashboard does not query it: \
             drop it from the list"
        );
        assert!(
            !served.contains(name),
            "{name} is served from start now: drop it from the list"
        );
        first_event(&state);
        let served = served_families(&state.metrics.render());
        assert!(
            served.contains(name),
            "{name} is not served even after the event that creates its first series: unknown, \
             renamed or not registered\nserved: {served:?}"
        );
    }
}

#[test]
fn the_grafana_dashboard_names_no_data_source_of_its_own() {
    let dashboard = dashboard();
    let mut uids = Vec::new();
    strings_under(
        &dashboard,
        &["uid", "datasource", "datasourceUid"],
        &mut uids,
    );
    // Grafana's built-in annotations source, the same in every Grafana.
    const BUILT_IN: &str = "-- Grafana --";
    let dashboard_uid = dashboard["uid"].as_str();
    let fixed: Vec<&str> = uids
        .into_iter()
        .filter(|uid| Some(*uid) != dashboard_uid && *uid != BUILT_IN)
        .filter(|uid| !(uid.starts_with("${") || uid.starts_with('$')))
        .collect();
    assert!(
        fixed.is_empty(),
        "data sources named by a fixed uid (someone's Grafana), not by the `datasource` \
         variable: {fixed:?}"
    );
    let variables = dashboard["templating"]["list"].as_array();
    assert!(
        variables.is_some_and(|list| list
            .iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "datasource")),
        "a `datasource` variable lets the importer pick the Prometheus"
    );
    assert_eq!(
        dashboard["id"],
        Value::Null,
        "an exported id would clash on import"
    );
}
