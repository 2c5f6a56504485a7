//! The header edits on the way through: hop-by-hop fields stop at the proxy (both ways), the
//! request gets `x-forwarded-for`, `forwarded` (RFC 7239), `x-forwarded-proto`, `x-request-id`
//! and always a `host`, and the response gets `x-served-by`, the bucket cookie and
//! `x-request-id`.
//!
//! The edits are written once against `HeaderEdit`, which Pingora's headers implement
//! (through their own methods, which keep the case map they write from in step) and so does
//! `http::HeaderMap`, which the tests use.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::routing::Side;

/// Hop-by-hop fields (RFC 9110 §7.6.1); Pingora itself manages framing (`transfer-encoding`,
/// `content-length`) and `connection` towards each side.
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED: &str = "forwarded";
const HOST: &str = "host";
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
    /// The client reached the proxy over TLS: the scheme forwarded is `https`, else `http`.
    pub tls: bool,
}

impl Client<'_> {
    /// The scheme the client used, as `x-forwarded-proto` and `forwarded`'s `proto` say it.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
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

/// The request as a backend receives it: hop-by-hop fields gone, `x-forwarded-for` and
/// `forwarded` set to the client (each appended to a trusted peer's list, one line, however
/// many it sent), `x-forwarded-proto` kept only from a trusted peer, and the request id.
pub fn to_backend<H: HeaderEdit>(headers: &mut H, client: Client<'_>) -> Result<(), H::Error> {
    strip_hop_by_hop(headers);
    // Only the proxy signs shadows; a client's claim to be one never reaches a backend.
    headers.remove(common::shadow::HEADER);
    let ip = client.ip.map(|ip| ip.to_string()).unwrap_or_default();
    set_list(headers, X_FORWARDED_FOR, client.trusted, ip)?;
    set_list(
        headers,
        FORWARDED,
        client.trusted,
        forwarded_element(client),
    )?;
    if !client.trusted || headers.fields().get(X_FORWARDED_PROTO).is_none() {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.scheme()))?;
    }
    set_request_id(headers, client.request_id)
}

/// Sets the list field `name` to `element`, after the fields a trusted peer sent (a trusted
/// hop may send several field lines; all of them form the list); an untrusted peer's go.
/// The element is taken by value: alone, it becomes the field's value without a copy.
fn set_list<H: HeaderEdit>(
    headers: &mut H,
    name: &'static str,
    trusted: bool,
    element: String,
) -> Result<(), H::Error> {
    let mut previous = headers
        .fields()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .peekable();
    let list = if trusted && previous.peek().is_some() {
        let mut list = previous.collect::<Vec<_>>().join(", ");
        list.push_str(", ");
        list.push_str(&element);
        list
    } else {
        element
    };
    // Made of an address, a scheme and of fields that were already visible ASCII.
    match HeaderValue::try_from(list) {
        Ok(value) => headers.insert(name, value),
        Err(_) => Ok(()),
    }
}

/// This hop's element of `forwarded` (RFC 7239 §4): `for=192.0.2.7;proto=http`; an IPv6
/// address is bracketed and quoted (`for="[2001:db8::7]"`, §6), an unknown one is `unknown`.
fn forwarded_element(client: Client<'_>) -> String {
    let mut element = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = match client.ip {
        Some(IpAddr::V4(ip)) => write!(element, "for={ip}"),
        Some(IpAddr::V6(ip)) => write!(element, "for=\"[{ip}]\""),
        None => write!(element, "for=unknown"),
    };
    element.push_str(";proto=");
    element.push_str(client.scheme());
    element
}

/// Gives the request a `host` if it has none (an HTTP/1.0 client need not send one; an
/// HTTP/1.1 request without one was refused at the edge): the backend's address, so that
/// both backends see the same request and answer alike.
pub fn host_for_backend<H: HeaderEdit>(
    headers: &mut H,
    backend: SocketAddr,
) -> Result<(), H::Error> {
    if headers.fields().contains_key(HOST) {
        return Ok(());
    }
    match HeaderValue::try_from(backend.to_string()) {
        Ok(value) => headers.insert(HOST, value),
        Err(_) => Ok(()),
    }
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
    fn forwarded_is_this_hops_element_appended_only_to_a_trusted_peers_list() {
        const V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
        for (what, ip, tls, fields, trusted, forwarded, proto) in [
            (
                "a plain client",
                Some(CLIENT),
                false,
                vec![],
                false,
                "for=10.0.0.9;proto=http",
                "http",
            ),
            (
                "an IPv6 client is bracketed and quoted",
                Some(V6),
                false,
                vec![],
                false,
                "for=\"[2001:db8::7]\";proto=http",
                "http",
            ),
            (
                "over TLS the scheme is https",
                Some(CLIENT),
                true,
                vec![],
                false,
                "for=10.0.0.9;proto=https",
                "https",
            ),
            (
                "no address",
                None,
                false,
                vec![],
                false,
                "for=unknown;proto=http",
                "http",
            ),
            (
                "an untrusted client's own is dropped",
                Some(CLIENT),
                false,
                vec![("forwarded", "for=6.6.6.6;proto=https;by=evil")],
                false,
                "for=10.0.0.9;proto=http",
                "http",
            ),
            (
                "an untrusted client's several lines are all dropped",
                Some(CLIENT),
                false,
                vec![("forwarded", "for=6.6.6.6"), ("forwarded", "for=7.7.7.7")],
                false,
                "for=10.0.0.9;proto=http",
                "http",
            ),
            (
                "a trusted peer's list is appended to",
                Some(CLIENT),
                false,
                vec![("forwarded", "for=6.6.6.6;proto=https")],
                true,
                "for=6.6.6.6;proto=https, for=10.0.0.9;proto=http",
                "http",
            ),
            (
                "every line of a trusted peer is kept, as one list",
                Some(V6),
                false,
                vec![
                    ("forwarded", "for=6.6.6.6"),
                    ("forwarded", " for=7.7.7.7, for=8.8.8.8 "),
                    ("forwarded", ""),
                ],
                true,
                "for=6.6.6.6, for=7.7.7.7, for=8.8.8.8, for=\"[2001:db8::7]\";proto=http",
                "http",
            ),
            (
                "a trusted peer without a list",
                Some(CLIENT),
                false,
                vec![],
                true,
                "for=10.0.0.9;proto=http",
                "http",
            ),
        ] {
            let mut map = headers(&fields);
            let client = Client {
                ip,
                trusted,
                request_id: "req-1",
                tls,
            };
            let Ok(()) = to_backend(&mut map, client);
            assert_eq!(values(&map, "forwarded"), [forwarded], "{what}");
            assert_eq!(values(&map, "x-forwarded-proto"), [proto], "{what}");
        }
    }

    #[test]
    fn a_request_without_host_gets_the_backends_address_and_one_with_keeps_its_own() {
        let backend: SocketAddr = "127.0.0.1:3001".parse().unwrap();
        for (fields, expected) in [
            (vec![], "127.0.0.1:3001"),
            (vec![("host", "example.com")], "example.com"),
            (vec![("host", "")], ""),
        ] {
            let mut map = headers(&fields);
            let Ok(()) = host_for_backend(&mut map, backend);
            assert_eq!(values(&map, "host"), [expected]);
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
