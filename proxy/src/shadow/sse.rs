//! Event streams (generate with `"stream": true`) cannot be compared as bytes: the text, and
//! how it is cut into `delta` events, differ by nature between two calls. What must agree is
//! the structure: which event types come in which order (runs of one type collapsed, since
//! the chunking is the text's), whether the stream ends with its final `done` event, and
//! the JSON shape (keys and value types) of each event type's data.

use std::collections::BTreeMap;

use serde_json::Value;

use super::diff::Diffs;
use super::field::{self, FieldPath};

/// The contract's final event (docs/API.md): a stream without it was cut short or ended on
/// an `error`.
pub const FINAL_EVENT: &str = "done";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `message` when the event names none (as browsers do).
    pub kind: String,
    pub data: String,
}

/// The events of a complete stream, parsed as the WHATWG `EventSource` does: lines end in
/// CRLF, LF or CR; `:` starts a comment; `data` lines join with `\n`; a blank line
/// dispatches; an event with no data is not dispatched; a last event without its blank line
/// is dropped (the stream ended before it was complete).
pub fn parse(body: &[u8]) -> Vec<Event> {
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut kind = String::new();
    let mut data = String::new();
    let mut has_data = false;
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if has_data {
                events.push(Event {
                    kind: if kind.is_empty() {
                        "message".to_owned()
                    } else {
                        std::mem::take(&mut kind)
                    },
                    data: std::mem::take(&mut data),
                });
            }
            kind.clear();
            data.clear();
            has_data = false;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => value.clone_into(&mut kind),
            "data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    events
}

/// Compares two complete streams into `out`: `sse.events`, `sse.final`, and the shape of
/// the data of each event type both streams hold (`sse.data[TYPE]…`; a type only one side
/// has is already in `sse.events`).
pub(crate) fn compare(a: &[u8], b: &[u8], out: &mut Diffs) {
    let (a, b) = (parse(a), parse(b));
    let (sequence_a, sequence_b) = (sequence(&a), sequence(&b));
    if sequence_a != sequence_b {
        out.push(
            FieldPath::SSE_EVENTS,
            render_sequence(&sequence_a),
            render_sequence(&sequence_b),
        );
    }
    let (final_a, final_b) = (ends_with_final(&a), ends_with_final(&b));
    if final_a != final_b {
        out.push(FieldPath::SSE_FINAL, render_end(&a), render_end(&b));
    }
    let (shapes_a, shapes_b) = (shapes(&a), shapes(&b));
    for (kind, shape_a) in &shapes_a {
        let Some(shape_b) = shapes_b.get(kind) else {
            continue;
        };
        let prefix = data_prefix(kind);
        let paths = shape_a
            .keys()
            .chain(shape_b.keys().filter(|p| !shape_a.contains_key(*p)));
        for path in paths {
            let types_a = shape_a.get(path).copied().unwrap_or(Types::ABSENT);
            let types_b = shape_b.get(path).copied().unwrap_or(Types::ABSENT);
            if types_a != types_b {
                out.push(
                    format!("{prefix}{path}"),
                    types_a.render(),
                    types_b.render(),
                );
            }
        }
    }
}

/// `sse.data[done]`, or `sse.data["an event"]` for a type that is no identifier.
fn data_prefix(kind: &str) -> String {
    let mut prefix = FieldPath::SSE_DATA.to_owned();
    prefix.push('[');
    if field::is_identifier(kind) {
        prefix.push_str(kind);
    } else {
        // Serialising a `str` cannot fail.
        prefix.push_str(&serde_json::to_string(kind).unwrap_or_default());
    }
    prefix.push(']');
    prefix
}

/// The event types in order, runs of one type collapsed.
fn sequence(events: &[Event]) -> Vec<&str> {
    let mut kinds: Vec<&str> = Vec::new();
    for event in events {
        if kinds.last() != Some(&event.kind.as_str()) {
            kinds.push(&event.kind);
        }
    }
    kinds
}

fn render_sequence(kinds: &[&str]) -> String {
    if kinds.is_empty() {
        "(no events)".to_owned()
    } else {
        kinds.join(", ")
    }
}

fn ends_with_final(events: &[Event]) -> bool {
    events.last().is_some_and(|e| e.kind == FINAL_EVENT)
}

fn render_end(events: &[Event]) -> String {
    match events.last() {
        Some(last) if last.kind == FINAL_EVENT => FINAL_EVENT.to_owned(),
        Some(last) => format!("{} (last event: {})", field::ABSENT, last.kind),
        None => format!("{} (no events)", field::ABSENT),
    }
}

/// The value types seen at one path, over every event of a type: a set, since `absent`
/// joins when some events have the path and others not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Types(u8);

impl Types {
    const NAMES: [&'static str; 8] = [
        "null", "boolean", "number", "string", "array", "object", "not-json", "absent",
    ];
    const NOT_JSON: Types = Types(1 << 6);
    const ABSENT: Types = Types(1 << 7);

    fn of(value: &Value) -> Types {
        Types(
            1 << match value {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Number(_) => 2,
                Value::String(_) => 3,
                Value::Array(_) => 4,
                Value::Object(_) => 5,
            },
        )
    }

    fn render(self) -> String {
        let names: Vec<&str> = (0..8)
            .filter(|bit| self.0 & (1 << bit) != 0)
            .filter_map(|bit| Self::NAMES.get(bit).copied())
            .collect();
        names.join("|")
    }
}

/// Path (relative to the data: `""`, `.usage.inputTokens`, `[*]`) → value types there.
type Shape = BTreeMap<String, Types>;

/// The shape of each event type's data, merged over its events.
fn shapes(events: &[Event]) -> BTreeMap<&str, Shape> {
    let mut per_kind: BTreeMap<&str, Vec<Shape>> = BTreeMap::new();
    for event in events {
        let mut shape = Shape::new();
        match serde_json::from_str::<Value>(&event.data) {
            Ok(value) => shape_of(&value, &mut String::new(), &mut shape),
            Err(_) => {
                shape.insert(String::new(), Types::NOT_JSON);
            }
        }
        per_kind.entry(&event.kind).or_default().push(shape);
    }
    per_kind
        .into_iter()
        .map(|(kind, shapes)| (kind, merge(&shapes)))
        .collect()
}

fn shape_of(value: &Value, path: &mut String, shape: &mut Shape) {
    let types = shape.entry(path.clone()).or_default();
    types.0 |= Types::of(value).0;
    let len = path.len();
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                field::push_name(path, '.', key);
                shape_of(item, path, shape);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            path.push_str("[*]");
            for item in items {
                shape_of(item, path, shape);
            }
            path.truncate(len);
        }
        _ => {}
    }
}

/// One shape for many events: a path some lack is also `absent`.
fn merge(shapes: &[Shape]) -> Shape {
    let mut merged = Shape::new();
    for shape in shapes {
        for (path, types) in shape {
            merged.entry(path.clone()).or_default().0 |= types.0;
        }
    }
    for (path, types) in &mut merged {
        if shapes.iter().any(|shape| !shape.contains_key(path)) {
            types.0 |= Types::ABSENT.0;
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_data(body: &str) -> Vec<(String, String)> {
        parse(body.as_bytes())
            .into_iter()
            .map(|e| (e.kind, e.data))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, d)| ((*k).to_owned(), (*d).to_owned()))
            .collect()
    }

    #[test]
    fn parses_as_an_event_source_does() {
        let cases: [(&str, &[(&str, &str)]); 10] = [
            ("", &[]),
            (
                "event: delta\ndata: {\"text\":\"a\"}\n\n",
                &[("delta", "{\"text\":\"a\"}")],
            ),
            ("event:delta\r\ndata:x\r\n\r\n", &[("delta", "x")]),
            ("event: delta\rdata: x\r\r", &[("delta", "x")]),
            ("data: one\ndata: two\n\n", &[("message", "one\ntwo")]),
            (": a comment\nevent: done\ndata: {}\n\n", &[("done", "{}")]),
            // No data: not dispatched, and the type does not carry over.
            ("event: ping\n\ndata: x\n\n", &[("message", "x")]),
            // The last event never got its blank line.
            (
                "event: delta\ndata: a\n\nevent: done\ndata: {}",
                &[("delta", "a")],
            ),
            ("\u{feff}data\n\n", &[("message", "")]),
            (
                "id: 1\nretry: 5\nevent: e\ndata:  two spaces\n\n",
                &[("e", " two spaces")],
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(kinds_and_data(body), pairs(expected), "{body:?}");
        }
    }

    #[test]
    fn sequences_collapse_runs() {
        let events =
            parse(b"event: delta\ndata: 1\n\nevent: delta\ndata: 2\n\nevent: done\ndata: {}\n\n");
        assert_eq!(sequence(&events), ["delta", "done"]);
    }

    #[test]
    fn shapes_merge_over_the_events_of_a_type() {
        let events = parse(
            b"event: delta\ndata: {\"text\":\"a\",\"n\":[1]}\n\n\
              event: delta\ndata: {\"text\":\"b\",\"n\":[]}\n\n\
              event: delta\ndata: nope\n\n",
        );
        let shapes = shapes(&events);
        let delta = &shapes["delta"];
        let rendered: Vec<(&str, String)> = delta
            .iter()
            .map(|(path, types)| (path.as_str(), types.render()))
            .collect();
        assert_eq!(
            rendered,
            [
                ("", "object|not-json".to_owned()),
                (".n", "array|absent".to_owned()),
                (".n[*]", "number|absent".to_owned()),
                (".text", "string|absent".to_owned()),
            ]
        );
    }
}
