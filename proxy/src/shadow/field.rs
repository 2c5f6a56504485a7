//! The names of what a diff compares, so that the diff, the ignore list and the counts agree
//! on one spelling:
//!
//! | field | what |
//! |---|---|
//! | `status` | the status code |
//! | `content-type` | the media type, parameters normalised |
//! | `allow`, `retry-after`, … (`HEADERS`) | a header the backends set, byte for byte |
//! | `truncated` | one body hit the capture's cap, the other did not |
//! | `body` | a body that is not JSON or an event stream, as bytes |
//! | `$.user.email`, `$.items[*].id` | a JSON body's field; array indices collapse to `[*]` |
//! | `$.token#sub` | a claim of a JWT held in a JSON string (`#` then the claim) |
//! | `sse.events`, `sse.final` | an event stream's sequence of event types; its `done` |
//! | `sse.data[done].usage.inputTokens` | the JSON shape of the data of one event type |
//!
//! A key that is not a plain identifier is written as a JSON string in brackets
//! (`$["a key"]`).

use std::fmt;

/// The headers compared, besides `content-type`: every one the backends set on an answer of
/// the contract (the error headers `allow`, `retry-after`, `www-authenticate`; the rate-limit
/// budget; the caching and security fields of the page and the event stream). Never `date`,
/// `x-request-id`, `x-served-by`, `content-length` or hop-by-hop fields: they differ by
/// nature or belong to the transport.
pub const HEADERS: [&str; 10] = [
    "allow",
    "retry-after",
    "www-authenticate",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "cache-control",
    "x-accel-buffering",
    "x-content-type-options",
    "content-security-policy",
];

/// How a missing value is rendered in a `FieldDiff`.
pub const ABSENT: &str = "(absent)";

/// The longest field path kept; longer ones are cut (and may then share a name), so a
/// pathological body cannot make one name arbitrarily long.
pub const MAX_PATH_CHARS: usize = 256;

/// The name of one compared field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    pub const STATUS: &'static str = "status";
    pub const CONTENT_TYPE: &'static str = "content-type";
    pub const TRUNCATED: &'static str = "truncated";
    pub const BODY: &'static str = "body";
    pub const SSE_EVENTS: &'static str = "sse.events";
    pub const SSE_FINAL: &'static str = "sse.final";
    pub const SSE_DATA: &'static str = "sse.data";
    /// Where the counts collect fields past a route's bound (`stats::Limits::max_fields`).
    pub const OTHER: &'static str = "other";

    /// A path built by the diff itself, cut to `MAX_PATH_CHARS`.
    pub(crate) fn new(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if let Some((cut, _)) = path.char_indices().nth(MAX_PATH_CHARS) {
            path.truncate(cut);
        }
        FieldPath(path)
    }

    /// A field as an operator writes it (in the ignore list): refused, with the reason, when
    /// it is no field the diff reports.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let valid = if let Some(rest) = text.strip_prefix('$') {
            json_suffix(rest)
        } else if let Some(rest) = text.strip_prefix(Self::SSE_DATA) {
            sse_data_suffix(rest)
        } else if [
            Self::STATUS,
            Self::CONTENT_TYPE,
            Self::TRUNCATED,
            Self::BODY,
            Self::SSE_EVENTS,
            Self::SSE_FINAL,
        ]
        .contains(&text)
            || HEADERS.contains(&text)
        {
            Ok(())
        } else {
            Err(
                "expected `status`, `content-type`, a compared header, `truncated`, `body`, \
                 `sse.events`, `sse.final`, `sse.data[EVENT]…` or a JSON path such as `$.a.b`",
            )
        };
        valid.map(|()| FieldPath(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this field is read from the body, so it is compared only when both bodies are
    /// (neither was truncated).
    pub fn is_body(&self) -> bool {
        self.0.starts_with('$') || self.0.starts_with("sse.") || self.0 == Self::BODY
    }

    /// Whether `field` is this one or lies inside it (`$.user` covers `$.user.email`,
    /// `$.user[*]` and `$.user#sub`, not `$.username`).
    pub fn covers(&self, field: &FieldPath) -> bool {
        match field.0.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with(['.', '[', '#']),
            None => false,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One field that differs between two answers, each side's value rendered short (at most
/// `redact::MAX_VALUE_CHARS` characters) and redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: FieldPath,
    pub a: String,
    pub b: String,
}

/// Whether a key can be written after a dot.
pub(crate) fn is_identifier(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Appends `name` to a path: bare if it is an identifier, else as a JSON string in brackets.
/// `lead` is `.` for an object key, `#` for a JWT claim.
pub(crate) fn push_name(path: &mut String, lead: char, name: &str) {
    if is_identifier(name) {
        path.push(lead);
        path.push_str(name);
    } else {
        if lead != '.' {
            path.push(lead);
        }
        path.push('[');
        // Serialising a `str` cannot fail.
        path.push_str(&serde_json::to_string(name).unwrap_or_default());
        path.push(']');
    }
}

/// `sse.data` alone, or `[EVENT]` then a JSON path suffix.
fn sse_data_suffix(rest: &str) -> Result<(), &'static str> {
    if rest.is_empty() {
        return Ok(());
    }
    let Some(inner) = rest.strip_prefix('[') else {
        return Err("`sse.data` must be followed by `[EVENT]`");
    };
    let after = name_in_brackets(inner).ok_or("`sse.data[` must hold an event name and `]`")?;
    json_suffix(after)
}

/// After `$`: any number of `.key`, `["key"]`, `[*]`, `#claim`, `#["claim"]`.
fn json_suffix(mut rest: &str) -> Result<(), &'static str> {
    while let Some(lead) = rest.chars().next() {
        rest = &rest[lead.len_utf8()..];
        rest = match lead {
            '.' | '#' => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(rest.len());
                if end > 0 {
                    &rest[end..]
                } else if lead == '#' && rest.starts_with('[') {
                    quoted_in_brackets(&rest[1..]).ok_or("`#[` must hold a JSON string and `]`")?
                } else {
                    return Err("`.` or `#` must be followed by a name");
                }
            }
            '[' => match rest.strip_prefix("*]") {
                Some(after) => after,
                None => quoted_in_brackets(rest).ok_or("`[` must hold `*` or a JSON string")?,
            },
            _ => return Err("a JSON path goes on with `.key`, `[*]`, `[\"key\"]` or `#claim`"),
        };
    }
    Ok(())
}

/// `NAME]` or `"JSON string"]`: what follows the `]`.
fn name_in_brackets(inner: &str) -> Option<&str> {
    if inner.starts_with('"') {
        return quoted_in_brackets(inner);
    }
    let end = inner.find(']')?;
    is_identifier(&inner[..end]).then(|| &inner[end + 1..])
}

/// `"JSON string"]`: what follows the `]`.
fn quoted_in_brackets(inner: &str) -> Option<&str> {
    let body = inner.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                let literal = &inner[..i + 2];
                serde_json::from_str::<String>(literal).ok()?;
                return body[i + 1..].strip_prefix(']');
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_an_operator_may_write() {
        let cases = [
            ("status", true),
            ("content-type", true),
            ("ratelimit-remaining", true),
            ("truncated", true),
            ("body", true),
            ("sse.events", true),
            ("sse.final", true),
            ("sse.data", true),
            ("sse.data[delta]", true),
            ("sse.data[done].usage.inputTokens", true),
            ("sse.data[\"my event\"].x", true),
            ("$", true),
            ("$.backend", true),
            ("$.user.email", true),
            ("$.items[*].id", true),
            ("$[\"a key\"].b", true),
            ("$.token#sub", true),
            ("$.token#[\"a claim\"]", true),
            ("date", false),
            ("x-request-id", false),
            ("other", false),
            ("backend", false),
            ("$.", false),
            ("$..a", false),
            ("$.a[0]", false),
            ("$.a[*", false),
            ("$[\"unterminated]", false),
            ("$ a", false),
            ("$.a#", false),
            ("sse.data.", false),
            ("sse.data[]", false),
            ("sse.data[done", false),
            ("sse.datum", false),
        ];
        for (text, valid) in cases {
            assert_eq!(FieldPath::parse(text).is_ok(), valid, "{text}");
        }
    }

    #[test]
    fn a_path_covers_itself_and_what_lies_inside_it() {
        let cases = [
            ("$.user", "$.user", true),
            ("$.user", "$.user.email", true),
            ("$.user", "$.user[*]", true),
            ("$.user", "$.user#sub", true),
            ("$.user", "$.username", false),
            ("$.user.email", "$.user", false),
            ("sse.data", "sse.data[delta].text", true),
            ("$", "$.anything", true),
            ("status", "status", true),
            ("status", "$.status", false),
        ];
        for (ignore, field, covered) in cases {
            let ignore = FieldPath::parse(ignore).unwrap();
            assert_eq!(
                ignore.covers(&FieldPath::new(field)),
                covered,
                "{ignore} {field}"
            );
        }
    }

    #[test]
    fn names_are_bare_when_they_can_be() {
        let cases = [
            ('.', "email", "$.email"),
            ('.', "a key", "$[\"a key\"]"),
            ('.', "a.b", "$[\"a.b\"]"),
            ('.', "", "$[\"\"]"),
            ('#', "sub", "$#sub"),
            ('#', "x y", "$#[\"x y\"]"),
        ];
        for (lead, name, expected) in cases {
            let mut path = "$".to_owned();
            push_name(&mut path, lead, name);
            assert_eq!(path, expected);
            assert!(FieldPath::parse(&path).is_ok(), "{path} parses back");
        }
    }

    #[test]
    fn which_fields_are_read_from_the_body() {
        for (field, body) in [
            ("status", false),
            ("content-type", false),
            ("retry-after", false),
            ("truncated", false),
            ("other", false),
            ("body", true),
            ("$.a", true),
            ("sse.final", true),
        ] {
            assert_eq!(FieldPath::new(field).is_body(), body, "{field}");
        }
    }

    #[test]
    fn long_paths_are_cut() {
        let long = format!("$.{}", "é".repeat(1_000));
        assert_eq!(
            FieldPath::new(long).as_str().chars().count(),
            MAX_PATH_CHARS
        );
    }
}
