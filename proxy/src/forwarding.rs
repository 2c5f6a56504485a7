//! The header edits on the way through: hop-by-hop fields stop at the proxy (both ways), the
//! request gets `x-forwarded-for`, `x-forwarded-proto` and `x-request-id`, and the response
//! gets `x-served-by`, the bucket cookie and `x-request-id`.
//!
//! The edits are written once against `HeaderEdit`, which Pingora's headers implement
//! (through their own methods, which keep the case map they write from in step) and so does
//! `http::HeaderMap`, which the tests use.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::routing::Side;

/// Hop-by-hop fields (RFC 9110 §7.6.1); Pingora itself manages framing (`transfer-encoding`,
/// `content-length`) and `connection` towards each side.
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_SERVED_BY: &str = "x-served-by";
const SET_COOKIE: &str = "set-cookie";

/// A header block the edits can read and change.
pub trait HeaderEdit {
    type Error;
    fn fields(&self) -> &HeaderMap;
    fn remove(&mut self, name: &str);
    /// Replaces every field `name` with one.
    fn insert(&mut self, name: &'static str, value: HeaderValue) -> Result<(), Self::Error>;
    fn append(&mut self, name: &'static str, value: HeaderValue) -> Result<(), Self::Error>;
}

/// What the proxy knows about the client when forwarding its request.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// `None` when the connection has no IP peer (never, for the TCP listener).
    pub ip: Option<IpAddr>,
    /// The peer is in `proxy.trusted_proxies`: its forwarding fields are kept.
    pub trusted: bool,
    pub request_id: &'a str,
    /// The request came over the TLS listener (`x-forwarded-proto: https`).
    pub tls: bool,
}

/// Removes the hop-by-hop fields, and those the `connection` field names.
pub fn strip_hop_by_hop<H: HeaderEdit>(headers: &mut H) {
    for name in connection_listed(headers.fields()) {
        headers.remove(&name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Names that the `connection` field lists as hop-by-hop, if there is one (rare: the
/// common `keep-alive` and `close` list nothing, so this allocates nothing).
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| {
            !name.is_empty()
                && !matches!(
                    name.as_str(),
                    "close" | "keep-alive" | "transfer-encoding" | "content-length"
                )
        })
        .collect()
}

/// The request as a backend receives it: hop-by-hop fields gone, `x-forwarded-for` set to
/// the client (appended to a trusted peer's list, one line, however many it sent),
/// `x-forwarded-proto` kept only from a trusted peer, and the request id.
pub fn to_backend<H: HeaderEdit>(headers: &mut H, client: Client<'_>) -> Result<(), H::Error> {
    strip_hop_by_hop(headers);
    let ip = client.ip.map(|ip| ip.to_string()).unwrap_or_default();
    // A trusted hop may send several field lines; all of them form the list.
    let mut previous = headers
        .fields()
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .peekable();
    let forwarded_for = if client.trusted && previous.peek().is_some() {
        let mut list = previous.collect::<Vec<_>>().join(", ");
        list.push_str(", ");
        list.push_str(&ip);
        list
    } else {
        ip
    };
    // Made of an address and of fields that were already visible ASCII.
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value)?;
    }
    if !client.trusted || headers.fields().get(X_FORWARDED_PROTO).is_none() {
        let proto = if client.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    }
    set_request_id(headers, client.request_id)
}

/// The response as the client receives it: hop-by-hop fields gone, the side that answered
/// (when `proxy.served_by_header` is on), the cookie that pins a new bucket, the request id.
pub fn to_client<H: HeaderEdit>(
    headers: &mut H,
    served_by: Option<Side>,
    set_cookie: Option<String>,
    request_id: &str,
) -> Result<(), H::Error> {
    strip_hop_by_hop(headers);
    if let Some(side) = served_by {
        headers.insert(X_SERVED_BY, HeaderValue::from_static(side.as_str()))?;
    }
    // The cookie is made of a configured token, our signature and fixed attributes.
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
        headers.append(SET_COOKIE, cookie)?;
    }
    set_request_id(headers, request_id)
}

fn set_request_id<H: HeaderEdit>(headers: &mut H, request_id: &str) -> Result<(), H::Error> {
    // Kept from the client only when visible ASCII, else minted: always a valid value.
    match HeaderValue::from_str(request_id) {
        Ok(value) => headers.insert(common::request_id::HEADER, value),
        Err(_) => Ok(()),
    }
}

impl HeaderEdit for HeaderMap {
    type Error = std::convert::Infallible;

    fn fields(&self) -> &HeaderMap {
        self
    }

    fn remove(&mut self, name: &str) {
        HeaderMap::remove(self, name);
    }

    fn insert(&mut self, name: &'static str, value: HeaderValue) -> Result<(), Self::Error> {
        HeaderMap::insert(self, name, value);
        Ok(())
    }

    fn append(&mut self, name: &'static str, value: HeaderValue) -> Result<(), Self::Error> {
        HeaderMap::append(self, name, value);
        Ok(())
    }
}

/// Pingora's request and response heads change only through their own methods, which keep
/// the header-name case they write in step with the fields.
macro_rules! pingora_header_edit {
    ($head:ty) => {
        impl HeaderEdit for $head {
            type Error = Box<pingora::Error>;

            fn fields(&self) -> &HeaderMap {
                &self.headers
            }

            fn remove(&mut self, name: &str) {
                self.remove_header(name);
            }

            fn insert(
                &mut self,
                name: &'static str,
                value: HeaderValue,
            ) -> Result<(), Self::Error> {
                self.insert_header(name, value)
            }

            fn append(
                &mut self,
                name: &'static str,
                value: HeaderValue,
            ) -> Result<(), Self::Error> {
                self.append_header(name, value).map(|_| ())
            }
        }
    };
}

pingora_header_edit!(RequestHeader);
pingora_header_edit!(ResponseHeader);

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn values(map: &HeaderMap, name: &str) -> Vec<String> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut map = headers(&[
            ("connection", "x-secret, Keep-Alive"),
            ("connection", "close"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "websocket"),
            ("x-ordinary", "Plain value, kept as is"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        // `connection` itself is Pingora's to manage towards each side.
        assert_eq!(left, ["connection", "x-ordinary"]);
        assert_eq!(values(&map, "x-ordinary"), ["Plain value, kept as is"]);
    }

    #[test]
    fn forwarding_fields_are_trusted_only_from_trusted_peers() {
        for (what, fields, trusted, forwarded_for, proto) in [
            ("a plain client", vec![], false, "10.0.0.9", "http"),
            (
                "an untrusted client's own fields are replaced",
                vec![
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-proto", "https"),
                ],
                false,
                "10.0.0.9",
                "http",
            ),
            (
                "several untrusted lines become one value",
                vec![
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "7.7.7.7"),
                ],
                false,
                "10.0.0.9",
                "http",
            ),
            (
                "a trusted peer's chain is appended to and its scheme kept",
                vec![
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-proto", "https"),
                ],
                true,
                "6.6.6.6, 10.0.0.9",
                "https",
            ),
            (
                "every line of a trusted peer is kept, as one list",
                vec![
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", " 7.7.7.7 "),
                    ("x-forwarded-for", ""),
                ],
                true,
                "6.6.6.6, 7.7.7.7, 10.0.0.9",
                "http",
            ),
            (
                "a trusted peer without a chain",
                vec![],
                true,
                "10.0.0.9",
                "http",
            ),
        ] {
            let mut map = headers(&fields);
            let client = Client {
                ip: Some(CLIENT),
                trusted,
                request_id: "req-1",
                tls: false,
            };
            let Ok(()) = to_backend(&mut map, client);
            assert_eq!(values(&map, "x-forwarded-for"), [forwarded_for], "{what}");
            assert_eq!(values(&map, "x-forwarded-proto"), [proto], "{what}");
            assert_eq!(values(&map, "x-request-id"), ["req-1"], "{what}");
        }
    }

    #[test]
    fn the_request_id_replaces_the_clients_and_hop_by_hop_fields_stop() {
        let mut map = headers(&[
            ("x-request-id", "from-client"),
            ("x-request-id", "twice"),
            ("keep-alive", "timeout=5"),
        ]);
        let client = Client {
            ip: None,
            trusted: false,
            request_id: "minted",
            tls: false,
        };
        let Ok(()) = to_backend(&mut map, client);
        assert_eq!(values(&map, "x-request-id"), ["minted"]);
        assert_eq!(values(&map, "x-forwarded-for"), [""]);
        assert!(map.get("keep-alive").is_none());
    }

    #[test]
    fn a_request_over_tls_is_forwarded_as_https() {
        let mut map = headers(&[("x-forwarded-proto", "http")]);
        let client = Client {
            ip: Some(CLIENT),
            trusted: false,
            request_id: "req-1",
            tls: true,
        };
        let Ok(()) = to_backend(&mut map, client);
        assert_eq!(values(&map, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn the_response_names_the_side_pins_the_bucket_and_carries_the_request_id() {
        for (served_by, cookie, expected_side, expected_cookies) in [
            (
                Some(Side::New),
                Some("canary_bucket=1.x; Path=/"),
                vec!["new"],
                vec!["session=abc", "canary_bucket=1.x; Path=/"],
            ),
            (
                Some(Side::Legacy),
                None,
                vec!["legacy"],
                vec!["session=abc"],
            ),
            // Switched off: a backend's own field passes, as any other.
            (None, None, vec!["spoofed"], vec!["session=abc"]),
        ] {
            let mut map = headers(&[
                ("set-cookie", "session=abc"),
                ("x-served-by", "spoofed"),
                ("upgrade", "h2c"),
                ("x-request-id", "backend-own"),
            ]);
            let Ok(()) = to_client(&mut map, served_by, cookie.map(str::to_owned), "req-2");
            assert_eq!(values(&map, "x-served-by"), expected_side);
            assert_eq!(values(&map, "set-cookie"), expected_cookies);
            assert_eq!(values(&map, "x-request-id"), ["req-2"]);
            assert!(map.get("upgrade").is_none());
        }
    }
}
