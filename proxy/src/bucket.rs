//! Which bucket a request belongs to, and whether the answer must pin it in a cookie: a
//! valid signed cookie wins, then the bearer token's subject, then a fresh draw. No Pingora
//! types; the signer and the draw are passed in, so every case is a table row.

use http::{HeaderMap, HeaderName};

use crate::routing::Side;
use crate::sticky::{self, BucketSigner};

/// Where a bucket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A cookie we signed.
    Cookie,
    /// The subject of the bearer token (API clients keep no cookies).
    Token,
    /// Drawn at random: the client brought neither.
    Drawn,
}

/// The bucket decision of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub bucket: u16,
    pub source: Source,
    /// The side the override header asks for, if it is on and present.
    pub forced: Option<Side>,
}

impl Choice {
    /// Whether the answer sets the cookie: when the bucket did not come from one, unless the
    /// override is used (it is for one request and leaves the cookie alone).
    pub fn pins_cookie(&self) -> bool {
        self.source != Source::Cookie && self.forced.is_none()
    }
}

/// What the bucket choice reads from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub cookie_name: &'a str,
    /// `None` when switched off.
    pub override_header: Option<&'a HeaderName>,
}

/// The bucket of a request with these headers; `draw` is called only when neither a valid
/// cookie nor a token subject gives one.
pub fn choose(
    headers: &HeaderMap,
    settings: Settings<'_>,
    signer: &BucketSigner,
    draw: impl FnOnce() -> u16,
) -> Choice {
    let forced = settings
        .override_header
        .and_then(|name| headers.get(name))
        .and_then(|v| Side::parse(v.as_bytes()));
    let from_cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| sticky::find_cookie(v, settings.cookie_name))
        .and_then(|value| signer.verify(value));
    let (bucket, source) = match from_cookie {
        Some(bucket) => (bucket, Source::Cookie),
        None => match headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| sticky::token_subject(v.as_bytes()))
        {
            Some(subject) => (signer.bucket_for_subject(&subject), Source::Token),
            None => (draw(), Source::Drawn),
        },
    };
    Choice {
        bucket,
        source,
        forced,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    static OVERRIDE: HeaderName = HeaderName::from_static("x-canary");

    fn settings() -> Settings<'static> {
        Settings {
            cookie_name: "canary_bucket",
            override_header: Some(&OVERRIDE),
        }
    }
    const DRAWN: u16 = 4321;

    fn signer() -> BucketSigner {
        BucketSigner::new(&[7u8; 32])
    }

    fn bearer(subject: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{subject}"}}"#));
        format!("Bearer h.{payload}.s")
    }

    #[test]
    fn cookie_then_token_then_draw_and_the_cookie_is_pinned_unless_forced() {
        let signer = signer();
        let signed = format!("canary_bucket={}", signer.cookie_value(17));
        let forged = "canary_bucket=17.AAAAAAAAAAAAAAAAAAAAAA".to_owned();
        let token = bearer("user-9");
        let subject_bucket = signer.bucket_for_subject("user-9");
        let other_cookies = format!("theme=dark; {signed}");
        for (what, fields, bucket, source, forced, pins) in [
            (
                "a signed cookie",
                vec![("cookie", signed.as_str())],
                17,
                Source::Cookie,
                None,
                false,
            ),
            (
                "a signed cookie among others",
                vec![("cookie", other_cookies.as_str())],
                17,
                Source::Cookie,
                None,
                false,
            ),
            (
                "a cookie beats a token",
                vec![("cookie", signed.as_str()), ("authorization", &token)],
                17,
                Source::Cookie,
                None,
                false,
            ),
            (
                "a forged cookie falls back to the token",
                vec![("cookie", forged.as_str()), ("authorization", &token)],
                subject_bucket,
                Source::Token,
                None,
                true,
            ),
            (
                "a token",
                vec![("authorization", token.as_str())],
                subject_bucket,
                Source::Token,
                None,
                true,
            ),
            (
                "a token that is not a JWT",
                vec![("authorization", "Bearer opaque")],
                DRAWN,
                Source::Drawn,
                None,
                true,
            ),
            ("nothing", vec![], DRAWN, Source::Drawn, None, true),
            (
                "the override",
                vec![("x-canary", "NEW")],
                DRAWN,
                Source::Drawn,
                Some(Side::New),
                false,
            ),
            (
                "the override with a cookie",
                vec![("x-canary", "legacy"), ("cookie", signed.as_str())],
                17,
                Source::Cookie,
                Some(Side::Legacy),
                false,
            ),
            (
                "an override naming no side",
                vec![("x-canary", "both")],
                DRAWN,
                Source::Drawn,
                None,
                true,
            ),
        ] {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.append(name, value.parse().unwrap());
            }
            let choice = choose(&headers, settings(), &signer, || DRAWN);
            assert_eq!(
                choice,
                Choice {
                    bucket,
                    source,
                    forced
                },
                "{what}"
            );
            assert_eq!(choice.pins_cookie(), pins, "{what}");
        }
    }

    #[test]
    fn the_override_is_ignored_when_switched_off() {
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", "new".parse().unwrap());
        let off = Settings {
            override_header: None,
            ..settings()
        };
        let choice = choose(&headers, off, &signer(), || DRAWN);
        assert_eq!(choice.forced, None);
        assert!(choice.pins_cookie());
    }

    #[test]
    fn the_draw_happens_only_when_nothing_else_gives_a_bucket() {
        let signer = signer();
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            format!("canary_bucket={}", signer.cookie_value(3))
                .parse()
                .unwrap(),
        );
        let choice = choose(&headers, settings(), &signer, || {
            panic!("drew a bucket for a client with a cookie")
        });
        assert_eq!(choice.bucket, 3);
    }
}
