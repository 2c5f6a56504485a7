//! Helpers for the proxy's unit tests.

use http::HeaderMap;

/// Header fields as sorted `name: value` lines, for comparing with a table.
pub fn lines(map: &HeaderMap) -> Vec<String> {
    let mut lines: Vec<String> = map
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("<not text>")))
        .collect();
    lines.sort();
    lines
}
