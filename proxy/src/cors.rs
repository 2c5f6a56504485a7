//! CORS at the edge, in the spirit of @fastify/cors: a page from one of `[proxy.cors]
//! allowed_origins` (exact origins) may call the API from a browser. The proxy answers a
//! preflight itself (never a backend, never a bucket cookie), puts the `access-control-*`
//! fields on answers for an allowed origin only, and `vary: origin` on every answer while CORS
//! is on. A disallowed origin gets no CORS fields, so its browser refuses. A pure function of
//! the request's fields and the `Policy` built once per config generation; no Pingora types.

use http::header::{
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderName, ORIGIN,
};
use http::{HeaderValue, Method};

use crate::config::CorsSection;
use crate::forwarding::HeaderEdit;

/// The contract's methods (`OPTIONS` needs no listing).
pub const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, POST");

/// What the frontend reads from an answer besides the CORS-safelisted fields: the request id,
/// the side that answered, when to retry and the generate budget (`API.md`).
pub const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static(
    "x-request-id, x-served-by, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset",
);

/// Request fields a page may send: the contract's, besides the CORS-safelisted ones (the
/// override header joins them when it is on).
const ALLOWED_HEADERS: [HeaderName; 3] = [
    http::header::CONTENT_TYPE,
    http::header::AUTHORIZATION,
    HeaderName::from_static(common::request_id::HEADER),
];

const VARY: &str = "vary";
const VARY_ACTUAL: HeaderValue = HeaderValue::from_static("origin");
const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// The `access-control-*` fields the proxy owns while CORS is on; a backend's are dropped.
const FIELDS: [&str; 6] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
];

/// `[proxy.cors]` with every header value built once, when the config is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    origins: Vec<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
    allowed_headers: Vec<HeaderName>,
    /// `allowed_headers` as one field value, answered when a preflight asks for others.
    allowed_headers_value: HeaderValue,
}

/// What the proxy answers to a preflight: `204` with these fields.
#[derive(Debug, Clone)]
pub struct Preflight<'a> {
    /// `None` for an origin that is not allowed: the answer then carries only `vary`.
    origin: Option<&'a HeaderValue>,
    allow_headers: Option<HeaderValue>,
    policy: &'a Policy,
}

impl Policy {
    pub fn new(section: &CorsSection, override_header: Option<&HeaderName>) -> Self {
        let allowed_headers: Vec<HeaderName> = ALLOWED_HEADERS
            .into_iter()
            .chain(override_header.cloned())
            .collect();
        let joined = allowed_headers
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            origins: (section.allowed_origins.iter())
                .map(|origin| origin.header_value().clone())
                .collect(),
            credentials: section.allow_credentials,
            max_age: HeaderValue::from(section.max_age_seconds.get()),
            allowed_headers,
            // Header names joined by ", " are a valid value.
            allowed_headers_value: HeaderValue::from_str(&joined)
                .unwrap_or(const { HeaderValue::from_static("content-type") }),
        }
    }

    /// CORS is on when at least one origin is allowed.
    pub fn is_on(&self) -> bool {
        !self.origins.is_empty()
    }

    /// The allowed origin the request comes from, byte for byte; `None` for no `origin`, or
    /// one not configured.
    fn allowed_origin(&self, request: &HeaderMap) -> Option<&HeaderValue> {
        let origin = request.get(ORIGIN)?;
        self.origins.iter().find(|allowed| *allowed == origin)
    }

    /// The preflight answer, when CORS is on and the request is one: `OPTIONS` with `origin`
    /// and `access-control-request-method`. Requested headers are echoed when all of them are
    /// allowed; otherwise the allowed list is answered, and the browser refuses.
    pub fn preflight(&self, method: &Method, request: &HeaderMap) -> Option<Preflight<'_>> {
        let is_preflight = self.is_on()
            && method == Method::OPTIONS
            && request.contains_key(ORIGIN)
            && request.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !is_preflight {
            return None;
        }
        let origin = self.allowed_origin(request);
        let allow_headers = origin.and_then(|_| {
            let requested = request.get(ACCESS_CONTROL_REQUEST_HEADERS)?;
            Some(if self.allows_all(requested) {
                requested.clone()
            } else {
                self.allowed_headers_value.clone()
            })
        });
        Some(Preflight {
            origin,
            allow_headers,
            policy: self,
        })
    }

    /// Whether every name in a comma-separated list is allowed (case-insensitively).
    fn allows_all(&self, requested: &HeaderValue) -> bool {
        let Ok(list) = requested.to_str() else {
            return false;
        };
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .all(|name| {
                (self.allowed_headers.iter())
                    .any(|allowed| allowed.as_str().eq_ignore_ascii_case(name))
            })
    }

    /// The CORS fields of an answer to an actual request (proxied or the proxy's own): when
    /// CORS is on, a backend's `access-control-*` fields go and `vary: origin` is added; for
    /// an allowed origin, that origin, the credentials flag and the exposed fields.
    pub fn to_client<H: HeaderEdit>(
        &self,
        request: &HeaderMap,
        response: &mut H,
    ) -> Result<(), H::Error> {
        if !self.is_on() {
            return Ok(());
        }
        for name in FIELDS {
            response.remove(name);
        }
        response.append(VARY, VARY_ACTUAL)?;
        if let Some(origin) = self.allowed_origin(request) {
            response.insert("access-control-allow-origin", origin.clone())?;
            if self.credentials {
                response.insert("access-control-allow-credentials", TRUE)?;
            }
            response.insert("access-control-expose-headers", EXPOSE_HEADERS)?;
        }
        Ok(())
    }
}

impl Preflight<'_> {
    /// Writes the preflight's fields; the caller adds the status (204) and length (0).
    pub fn write<H: HeaderEdit>(&self, response: &mut H) -> Result<(), H::Error> {
        response.append(VARY, VARY_PREFLIGHT)?;
        let Some(origin) = self.origin else {
            return Ok(());
        };
        response.insert("access-control-allow-origin", origin.clone())?;
        if self.policy.credentials {
            response.insert("access-control-allow-credentials", TRUE)?;
        }
        response.insert("access-control-allow-methods", ALLOW_METHODS)?;
        if let Some(headers) = &self.allow_headers {
            response.insert("access-control-allow-headers", headers.clone())?;
        }
        response.insert("access-control-max-age", self.policy.max_age.clone())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::lines;
    use common::config::value::Bounded;

    use super::*;
    use crate::config::Origin;

    const APP: &str = "http://localhost:5173";

    fn policy(origins: &[&str], credentials: bool) -> Policy {
        let section = CorsSection {
            allowed_origins: origins.iter().map(|o| Origin::parse(o).unwrap()).collect(),
            allow_credentials: credentials,
            max_age_seconds: Bounded::of(600),
        };
        Policy::new(&section, Some(&HeaderName::from_static("x-canary")))
    }

    fn fields(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn preflight_answer(
        policy: &Policy,
        method: Method,
        request: &HeaderMap,
    ) -> Option<Vec<String>> {
        let preflight = policy.preflight(&method, request)?;
        let mut answer = HeaderMap::new();
        preflight.write(&mut answer).unwrap();
        Some(lines(&answer))
    }

    const PREFLIGHT_VARY: &str =
        "vary: origin, access-control-request-method, access-control-request-headers";

    #[test]
    fn preflights_are_answered_for_allowed_origins_only() {
        let on = policy(&[APP, "https://app.example.com"], false);
        let with_credentials = policy(&[APP], true);
        let off = policy(&[], false);
        let asks = |origin: &str, headers: &str| {
            let mut request = fields(&[
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ]);
            if !headers.is_empty() {
                request.insert("access-control-request-headers", headers.parse().unwrap());
            }
            request
        };
        let allowed = |headers: &str, credentials: bool| {
            let mut expected = vec![
                "access-control-allow-methods: GET, HEAD, POST".to_owned(),
                format!("access-control-allow-origin: {APP}"),
                "access-control-max-age: 600".to_owned(),
                PREFLIGHT_VARY.to_owned(),
            ];
            if !headers.is_empty() {
                expected.push(format!("access-control-allow-headers: {headers}"));
            }
            if credentials {
                expected.push("access-control-allow-credentials: true".to_owned());
            }
            expected.sort();
            Some(expected)
        };
        let all = "content-type, authorization, x-request-id, x-canary";
        for (name, policy, method, request, expected) in [
            (
                "requested headers echoed",
                &on,
                Method::OPTIONS,
                asks(APP, "content-type,authorization"),
                allowed("content-type,authorization", false),
            ),
            (
                "any case, with spaces",
                &on,
                Method::OPTIONS,
                asks(APP, "Content-Type, X-Canary"),
                allowed("Content-Type, X-Canary", false),
            ),
            (
                "no requested headers",
                &on,
                Method::OPTIONS,
                asks(APP, ""),
                allowed("", false),
            ),
            (
                "a header not allowed: the list",
                &on,
                Method::OPTIONS,
                asks(APP, "content-type, x-secret"),
                allowed(all, false),
            ),
            (
                "credentials when configured",
                &with_credentials,
                Method::OPTIONS,
                asks(APP, "authorization"),
                allowed("authorization", true),
            ),
            (
                "another origin: only vary",
                &on,
                Method::OPTIONS,
                asks("http://evil.example", "content-type"),
                Some(vec![PREFLIGHT_VARY.to_owned()]),
            ),
            (
                "exact match: no trailing slash",
                &on,
                Method::OPTIONS,
                asks("http://localhost:5173/", ""),
                Some(vec![PREFLIGHT_VARY.to_owned()]),
            ),
            (
                "exact match: port",
                &on,
                Method::OPTIONS,
                asks("http://localhost:5174", ""),
                Some(vec![PREFLIGHT_VARY.to_owned()]),
            ),
            (
                "exact match: scheme",
                &on,
                Method::OPTIONS,
                asks("https://localhost:5173", ""),
                Some(vec![PREFLIGHT_VARY.to_owned()]),
            ),
            (
                "the literal null origin",
                &on,
                Method::OPTIONS,
                asks("null", ""),
                Some(vec![PREFLIGHT_VARY.to_owned()]),
            ),
            (
                "CORS off: the backends answer",
                &off,
                Method::OPTIONS,
                asks(APP, ""),
                None,
            ),
            ("not OPTIONS", &on, Method::POST, asks(APP, ""), None),
            (
                "OPTIONS without a requested method",
                &on,
                Method::OPTIONS,
                fields(&[("origin", APP)]),
                None,
            ),
            (
                "OPTIONS without an origin",
                &on,
                Method::OPTIONS,
                fields(&[("access-control-request-method", "POST")]),
                None,
            ),
        ] {
            assert_eq!(
                preflight_answer(policy, method, &request),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn actual_answers_carry_cors_fields_for_allowed_origins_only() {
        let on = policy(&[APP], false);
        let with_credentials = policy(&[APP], true);
        let off = policy(&[], false);
        let expose = format!(
            "access-control-expose-headers: {}",
            EXPOSE_HEADERS.to_str().unwrap()
        );
        let allowed = [
            expose.as_str(),
            "access-control-allow-origin: http://localhost:5173",
            "vary: content-type",
            "vary: origin",
        ];
        for (name, policy, origin, expected) in [
            ("allowed", &on, Some(APP), &allowed[..]),
            (
                "another origin",
                &on,
                Some("http://evil.example"),
                &["vary: content-type", "vary: origin"][..],
            ),
            (
                "no origin",
                &on,
                None,
                &["vary: content-type", "vary: origin"][..],
            ),
            (
                "CORS off: nothing added, nothing dropped",
                &off,
                Some(APP),
                &["access-control-allow-origin: *", "vary: content-type"][..],
            ),
        ] {
            let request = origin.map_or_else(HeaderMap::new, |o| fields(&[("origin", o)]));
            // A backend's own CORS field is dropped while the proxy owns CORS.
            let mut response = fields(&[
                ("vary", "content-type"),
                ("access-control-allow-origin", "*"),
            ]);
            policy.to_client(&request, &mut response).unwrap();
            let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            expected.sort();
            assert_eq!(lines(&response), expected, "{name}");
        }
        let mut response = HeaderMap::new();
        with_credentials
            .to_client(&fields(&[("origin", APP)]), &mut response)
            .unwrap();
        assert_eq!(response["access-control-allow-credentials"], "true");
    }

    #[test]
    fn the_override_header_is_allowed_only_when_it_is_on() {
        let section = CorsSection {
            allowed_origins: vec![Origin::parse(APP).unwrap()],
            ..CorsSection::default()
        };
        let request = fields(&[
            ("origin", APP),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-canary"),
        ]);
        let without = Policy::new(&section, None);
        let answer = preflight_answer(&without, Method::OPTIONS, &request).unwrap();
        assert!(
            answer.contains(
                &"access-control-allow-headers: content-type, authorization, x-request-id"
                    .to_owned()
            ),
            "{answer:?}"
        );
    }
}
