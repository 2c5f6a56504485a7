//! JSON bodies compared field by field, so that a diff names what differs (`$.user.email`)
//! instead of "the body": objects key by key (key order is not significant in JSON), a key
//! on one side only is a diff, so is a change of type; arrays element by element under one
//! collapsed path (`$.items[*].id`, so the counts do not grow with the array), a length
//! difference being one diff at the array itself; strings holding JWTs by their lasting
//! claims (`$.token#sub`).

use serde_json::{Map, Value};

use super::diff::Diffs;
use super::field::{self, ABSENT};
use super::jwt;
use super::redact::render_json;

/// Compares `a` and `b` at `path` (`$` for a whole body) into `out`.
pub(crate) fn compare(a: &Value, b: &Value, path: &mut String, out: &mut Diffs) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => compare_members(a, b, '.', path, out),
        (Value::Array(items_a), Value::Array(items_b)) => {
            if items_a.len() != items_b.len() {
                let render = |items: &[Value], value: &Value| {
                    format!("{} items: {}", items.len(), render_json(value))
                };
                out.push(path.as_str(), render(items_a, a), render(items_b, b));
                return;
            }
            let len = path.len();
            path.push_str("[*]");
            for (item_a, item_b) in items_a.iter().zip(items_b) {
                compare(item_a, item_b, path, out);
            }
            path.truncate(len);
        }
        (Value::String(text_a), Value::String(text_b)) if text_a != text_b => {
            match (jwt::lasting_claims(text_a), jwt::lasting_claims(text_b)) {
                (Some(claims_a), Some(claims_b)) => {
                    compare_members(&claims_a, &claims_b, '#', path, out);
                }
                _ => out.push(path.as_str(), render_json(a), render_json(b)),
            }
        }
        _ if a == b => {}
        _ => out.push(path.as_str(), render_json(a), render_json(b)),
    }
}

/// An object's keys (`lead` `.`) or a JWT's claims (`lead` `#`).
fn compare_members(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    lead: char,
    path: &mut String,
    out: &mut Diffs,
) {
    let len = path.len();
    for (key, value_a) in a {
        field::push_name(path, lead, key);
        match b.get(key) {
            Some(value_b) => compare(value_a, value_b, path, out),
            None => out.push(path.as_str(), render_json(value_a), ABSENT),
        }
        path.truncate(len);
    }
    for (key, value_b) in b.iter().filter(|(key, _)| !a.contains_key(*key)) {
        field::push_name(path, lead, key);
        out.push(path.as_str(), ABSENT, render_json(value_b));
        path.truncate(len);
    }
}
