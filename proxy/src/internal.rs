//! Paths the public listener never routes (`proxy.internal_paths`, `/metrics` by default): a
//! backend's own endpoints for operators, not for the internet. A request path matches when
//! it names the same resource however it is spelled — percent-encoded (`/%6detrics`), with
//! repeated slashes (`//metrics`), dot segments (`/x/../metrics`), a trailing slash or
//! another case — so no spelling that a backend might resolve to it gets through. A pure
//! function of the path; no Pingora types.

use std::borrow::Cow;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One internal path: absolute, held in the form requests are compared in (lower case, no
/// query, no empty or dot segment, no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalPath(String);

impl InternalPath {
    fn parse(path: &str) -> Result<Self, &'static str> {
        if !path.starts_with('/') {
            return Err("must start with /");
        }
        if path.contains(['?', '#']) {
            return Err("must be a path, without a query or a fragment");
        }
        let normal = normalize(path.as_bytes());
        Ok(Self(String::from_utf8_lossy(&normal).to_ascii_lowercase()))
    }

    /// For defaults and tests; an invalid path is a bug in the code.
    pub fn of(path: &str) -> Self {
        Self::parse(path)
            .unwrap_or_else(|reason| panic!("invalid internal path {path:?}: {reason}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for InternalPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl Serialize for InternalPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Whether the request `path` (without its query) names one of `internal`. Allocates only
/// for a path that needs normalising (a `%`, a `//`, a `/.` or a trailing `/`).
pub fn is_internal(path: &str, internal: &[InternalPath]) -> bool {
    if internal.is_empty() {
        return false;
    }
    let path = path.as_bytes();
    let normal = if needs_normalising(path) {
        Cow::Owned(normalize(path))
    } else {
        Cow::Borrowed(path)
    };
    internal
        .iter()
        .any(|p| p.0.as_bytes().eq_ignore_ascii_case(&normal))
}

fn needs_normalising(path: &[u8]) -> bool {
    path.contains(&b'%')
        || path.windows(2).any(|w| w == b"//" || w == b"/.")
        || (path.len() > 1 && path.ends_with(b"/"))
        || !path.starts_with(b"/")
}

/// Percent-decodes `path` once (as a backend's router does), then resolves it segment by
/// segment: empty and `.` segments dropped, `..` removes the one before.
fn normalize(path: &[u8]) -> Vec<u8> {
    let decoded = percent_decode(path);
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut normal = Vec::with_capacity(decoded.len() + 1);
    for segment in &segments {
        normal.push(b'/');
        normal.extend_from_slice(segment);
    }
    if normal.is_empty() {
        normal.push(b'/');
    }
    normal
}

fn percent_decode(path: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut decoded = Vec::with_capacity(path.len());
    let mut at = 0;
    while at < path.len() {
        let escaped = match path.get(at..at + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(path[at]);
                at += 1;
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_internal_path_matches_and_nothing_else() {
        let internal = [
            InternalPath::of("/metrics"),
            InternalPath::of("/debug/vars/"),
        ];
        for (path, expected) in [
            ("/metrics", true),
            ("/metrics/", true),
            ("/METRICS", true),
            ("/Metrics", true),
            ("/%6detrics", true),
            ("/%6Detrics", true),
            ("/%6D%65%74%72%69%63%73", true),
            ("//metrics", true),
            ("///metrics//", true),
            ("/./metrics", true),
            ("/x/../metrics", true),
            ("/x/%2e%2e/metrics", true),
            ("/%2fmetrics", true),
            ("/../metrics", true),
            ("/debug/vars", true),
            ("/debug//vars", true),
            ("/debug/%76ars/", true),
            // Not the same resource.
            ("/", false),
            ("/health", false),
            ("/metrics/x", false),
            ("/metricsx", false),
            ("/x/metrics", false),
            ("/api/metrics", false),
            ("/%256detrics", false),
            ("/metrics%", false),
            ("/metrics%2", false),
            ("/debug", false),
            ("*", false),
        ] {
            assert_eq!(is_internal(path, &internal), expected, "{path}");
        }
        assert!(!is_internal("/metrics", &[]));
    }

    #[test]
    fn configured_paths_are_held_in_normal_form_and_bad_ones_refused() {
        assert_eq!(InternalPath::of("/Debug//Vars/").as_str(), "/debug/vars");
        assert_eq!(InternalPath::of("/").as_str(), "/");
        for bad in ["metrics", "", "/metrics?x=1", "/metrics#top"] {
            assert!(InternalPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_paths_are_compared_without_normalising() {
        for path in ["/metrics", "/api/auth/login", "/health", "/"] {
            assert!(!needs_normalising(path.as_bytes()), "{path}");
        }
        for path in ["/%6detrics", "//metrics", "/./metrics", "/metrics/", "*"] {
            assert!(needs_normalising(path.as_bytes()), "{path}");
        }
    }
}
