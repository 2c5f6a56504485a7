//! Compression of JSON and HTML answers by Pingora's response compression module
//! (`ResponseCompressionBuilder`, a downstream module): gzip or zstd, whichever the client's
//! `accept-encoding` lists first (the module takes the first coding it knows, ignoring
//! q-values, `identity` and codings it does not know).
//!
//! Not brotli: Pingora 0.9's brotli encoder flushes at the end of the body but never closes
//! the stream (the final empty meta-block is missing), so a conforming decoder refuses the
//! answer. `release` sets brotli's level to 0, so a client that lists `br` first gets the
//! answer as it is; one that lists gzip or zstd first (browsers, curl) gets that.
//!
//! The module is registered armed (so it reads `accept-encoding` before `request_filter`),
//! `hold` switches it off at the start of every request, and `release` switches it back on
//! for an answer `compresses` accepts: a JSON or HTML body of a known length of at least
//! `[proxy.compression] min_bytes`, not already encoded. So an event stream never is (it
//! would wait in the encoder and arrive late), nor a body of unknown length, nor the proxy's
//! own small answers. The decision is a pure function of the answer's fields.

use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use pingora::modules::http::HttpModules;
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::Session;

use crate::config::CompressionSection;

/// Registers the module, armed: any level but 0 makes it read the request's
/// `accept-encoding`; the level each answer gets is set by `release`.
pub fn register(modules: &mut HttpModules) {
    modules.add_module(ResponseCompressionBuilder::enable(1));
}

/// Nothing is compressed unless `release` says so.
pub fn hold(session: &mut Session) {
    set_level(session, 0);
}

/// Compresses this answer at `level` (brotli excepted, see above).
pub fn release(session: &mut Session, level: u32) {
    set_level(session, level);
}

fn set_level(session: &mut Session, level: u32) {
    let module = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>();
    // The level can only change before the module has seen the answer's head.
    if let Some(module) = module.filter(|m| m.is_header_phase()) {
        module.adjust_level(level);
        module.adjust_algorithm_level(Algorithm::Brotli, 0);
    }
}

/// Whether an answer with these fields is compressed (when the client accepts a coding).
pub fn compresses(settings: &CompressionSection, response: &HeaderMap) -> bool {
    let length = response
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    settings.enabled
        && !response.contains_key(CONTENT_ENCODING)
        && length.is_some_and(|n| n >= settings.min_bytes)
        && response.get(CONTENT_TYPE).is_some_and(is_json_or_html)
}

/// `application/json`, `application/*+json` or `text/html`, with any parameters.
fn is_json_or_html(content_type: &http::HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let is = |name: &str| essence.eq_ignore_ascii_case(name);
    is("application/json")
        || is("text/html")
        || (essence.len() > "application/+json".len()
            && essence[..12].eq_ignore_ascii_case("application/")
            && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_and_html_of_a_known_length_over_the_threshold() {
        let on = CompressionSection {
            min_bytes: 1000,
            ..CompressionSection::default()
        };
        let off = CompressionSection {
            enabled: false,
            ..on.clone()
        };
        for (name, settings, fields, expected) in [
            (
                "large JSON",
                &on,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "5000"),
                ][..],
                true,
            ),
            (
                "at the threshold",
                &on,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "1000"),
                ][..],
                true,
            ),
            (
                "under it",
                &on,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "999"),
                ][..],
                false,
            ),
            (
                "HTML with a charset",
                &on,
                &[
                    ("content-type", "text/html; charset=utf-8"),
                    ("content-length", "5000"),
                ][..],
                true,
            ),
            (
                "problem+json",
                &on,
                &[
                    ("content-type", "application/problem+json"),
                    ("content-length", "5000"),
                ][..],
                true,
            ),
            (
                "upper case",
                &on,
                &[
                    ("content-type", "Application/JSON"),
                    ("content-length", "5000"),
                ][..],
                true,
            ),
            (
                "an event stream",
                &on,
                &[
                    ("content-type", "text/event-stream"),
                    ("content-length", "5000"),
                ][..],
                false,
            ),
            (
                "an event stream of unknown length",
                &on,
                &[("content-type", "text/event-stream")][..],
                false,
            ),
            (
                "JSON of unknown length",
                &on,
                &[("content-type", "application/json")][..],
                false,
            ),
            (
                "plain text",
                &on,
                &[("content-type", "text/plain"), ("content-length", "5000")][..],
                false,
            ),
            (
                "Prometheus text",
                &on,
                &[
                    ("content-type", "text/plain; version=0.0.4"),
                    ("content-length", "5000"),
                ][..],
                false,
            ),
            (
                "already encoded",
                &on,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "5000"),
                    ("content-encoding", "gzip"),
                ][..],
                false,
            ),
            ("no type", &on, &[("content-length", "5000")][..], false),
            (
                "a bad length",
                &on,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "lots"),
                ][..],
                false,
            ),
            (
                "switched off",
                &off,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "5000"),
                ][..],
                false,
            ),
        ] {
            let mut map = HeaderMap::new();
            for (field, value) in fields {
                map.insert(*field, value.parse().unwrap());
            }
            assert_eq!(compresses(settings, &map), expected, "{name}");
        }
    }
}
