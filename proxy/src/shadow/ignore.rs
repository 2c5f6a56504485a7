//! Fields known to differ on purpose, never reported: `/health`'s `$.backend` is the one
//! answer in which the contract lets the backends differ (docs/API.md). Written in the
//! config as `"ROUTE FIELD"` strings (`"/health $.backend"`, `"* ratelimit-reset"`), checked
//! when the config is read so a typo is refused with the entry named, not silently ignored.

use super::field::FieldPath;
use crate::metrics::RouteLabel;

/// Every route, in an entry's route position.
pub const EVERY_ROUTE: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreList {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// `None`: every route.
    route: Option<&'static str>,
    field: FieldPath,
}

/// A refused entry, named by its position in the list (from 0) and its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error(
        "ignore entry [{index}] {entry:?}: expected \"ROUTE FIELD\" (e.g. \"/health $.backend\")"
    )]
    Shape { index: usize, entry: String },
    #[error(
        "ignore entry [{index}] {entry:?}: unknown route {route:?}; expected `*` or one of {known}"
    )]
    Route {
        index: usize,
        entry: String,
        route: String,
        known: String,
    },
    #[error("ignore entry [{index}] {entry:?}: {field:?} is not a compared field: {reason}")]
    Field {
        index: usize,
        entry: String,
        field: String,
        reason: &'static str,
    },
}

impl IgnoreList {
    /// Parses the config's entries; the first bad one is refused.
    pub fn parse<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Self, IgnoreError> {
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| parse_entry(index, entry.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(IgnoreList { entries })
    }

    /// Whether a diff of `field` on `route` (a `RouteLabel`'s label) is left out.
    pub fn ignores(&self, route: &str, field: &FieldPath) -> bool {
        self.entries
            .iter()
            .any(|e| e.route.is_none_or(|r| r == route) && e.field.covers(field))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_entry(index: usize, entry: &str) -> Result<Entry, IgnoreError> {
    let mut words = entry.split_whitespace();
    let (Some(route), Some(field), None) = (words.next(), words.next(), words.next()) else {
        return Err(IgnoreError::Shape {
            index,
            entry: entry.to_owned(),
        });
    };
    let route = if route == EVERY_ROUTE {
        None
    } else {
        let label = RouteLabel::all()
            .map(RouteLabel::label)
            .find(|label| *label == route);
        match label {
            Some(label) => Some(label),
            None => {
                return Err(IgnoreError::Route {
                    index,
                    entry: entry.to_owned(),
                    route: route.to_owned(),
                    known: RouteLabel::all()
                        .map(RouteLabel::label)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    };
    let field = FieldPath::parse(field).map_err(|reason| IgnoreError::Field {
        index,
        entry: entry.to_owned(),
        field: field.to_owned(),
        reason,
    })?;
    Ok(Entry { route, field })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_parse() {
        let list = IgnoreList::parse([
            "/health $.backend",
            "  *   ratelimit-reset ",
            "/api/ai/generate sse.data[delta]",
            "other body",
        ])
        .unwrap();
        let cases = [
            ("/health", "$.backend", true),
            ("/health", "$.backend.name", true),
            ("/health", "$.version", false),
            ("/api/auth/login", "$.backend", false),
            ("/api/auth/login", "ratelimit-reset", true),
            ("/health", "ratelimit-reset", true),
            ("/api/ai/generate", "sse.data[delta].text", true),
            ("/api/ai/generate", "sse.data[done].id", false),
            ("other", "body", true),
            ("/", "body", false),
        ];
        for (route, field, ignored) in cases {
            assert_eq!(
                list.ignores(route, &FieldPath::new(field)),
                ignored,
                "{route} {field}"
            );
        }
        assert!(IgnoreList::parse(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            ("", "ignore entry [1] \"\": expected \"ROUTE FIELD\""),
            ("/health", "ignore entry [1] \"/health\": expected"),
            (
                "/health $.a $.b",
                "ignore entry [1] \"/health $.a $.b\": expected",
            ),
            (
                "/healht $.backend",
                "ignore entry [1] \"/healht $.backend\": unknown route \"/healht\"; \
                 expected `*` or one of /api/auth/login, ",
            ),
            (
                "/health backend",
                "ignore entry [1] \"/health backend\": \"backend\" is not a compared field: ",
            ),
            (
                "* $.items[0]",
                "ignore entry [1] \"* $.items[0]\": \"$.items[0]\" is not a compared field: ",
            ),
            ("* date", "\"date\" is not a compared field"),
        ];
        for (bad, expected) in cases {
            let error = IgnoreList::parse(["* status", bad])
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{bad:?}: {error}");
        }
    }
}
