//! Who may use the admin listener. Off loopback every request but the dashboard page needs
//! `authorization: Bearer <token>`; on loopback only when a token is configured. The token is
//! `CANARY_ADMIN_TOKEN`, else the file `proxy.admin_token_file`, read once at start-up. Also
//! the admin listener's CSRF rule: a POST must say `content-type: application/json`.
//!
//! Plain data and pure functions over `http` types, so all of it is tested without Pingora.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::answer::ProxyAnswer;

/// When set, the admin token; else `proxy.admin_token_file`.
pub const TOKEN_ENV: &str = "CANARY_ADMIN_TOKEN";
/// The config key naming the token's file.
pub const TOKEN_FILE_KEY: &str = "proxy.admin_token_file";

#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    #[error("{origin}: the admin token is empty")]
    Empty { origin: String },
    #[error("{origin}: the admin token must be printable ASCII without spaces")]
    NotPrintable { origin: String },
    #[error("{TOKEN_FILE_KEY}: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the admin listener {address} is not on loopback, so it needs a token: set \
         {TOKEN_ENV} or {TOKEN_FILE_KEY}"
    )]
    TokenRequired { address: SocketAddr },
}

/// The admin token as configured; its `Debug` never shows it, so it cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// `raw` trimmed of surrounding whitespace (a file usually ends in a newline); `origin`
    /// names where it came from for the error.
    pub fn parse(raw: &str, origin: &str) -> Result<Self, AdminAuthError> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(AdminAuthError::Empty {
                origin: origin.to_owned(),
            });
        }
        // What a header value and a shell carry unchanged: an operator can always send it.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdminAuthError::NotPrintable {
                origin: origin.to_owned(),
            });
        }
        Ok(Self(token.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The token from `env` (the value of `CANARY_ADMIN_TOKEN`, if set), else from `file`
/// (`proxy.admin_token_file`, already resolved against the config's folder), else none.
pub fn read_token(
    env: Option<OsString>,
    file: Option<&Path>,
) -> Result<Option<Token>, AdminAuthError> {
    if let Some(value) = env {
        let not_printable = || AdminAuthError::NotPrintable {
            origin: TOKEN_ENV.to_owned(),
        };
        let value = value.into_string().map_err(|_| not_printable())?;
        return Token::parse(&value, TOKEN_ENV).map(Some);
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| AdminAuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    Token::parse(&text, &format!("{TOKEN_FILE_KEY} ({})", path.display())).map(Some)
}

/// As `read_token`, with this process's `CANARY_ADMIN_TOKEN`.
pub fn read_token_from_env(file: Option<&Path>) -> Result<Option<Token>, AdminAuthError> {
    read_token(std::env::var_os(TOKEN_ENV), file)
}

/// Whether a listener bound at `address` asks for a token: always off loopback (anyone on the
/// network can reach it), and on loopback when the operator configured one.
pub fn token_required(address: SocketAddr, token_configured: bool) -> bool {
    token_configured || !address.ip().to_canonical().is_loopback()
}

/// The static dashboard page holds no data (it fetches the JSON routes, which are checked),
/// so a browser can load it before it has a token.
pub fn is_open_page(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && matches!(path, "/admin" | "/admin/")
}

/// The CSRF guard for a POST on the admin listener: a page from another site can send a
/// form (urlencoded, multipart or text/plain) without asking, but `application/json` only
/// after a CORS preflight, which the admin listener never grants. Parameters (`charset`) are
/// allowed and the media type is matched case-insensitively, as the contract's 415 rule.
pub fn is_json_post(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // None, or two that could each be read differently by something in between.
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// The admin listener's access rule for one process: a token's digest, or open (loopback
/// without a token; `check_listener` refuses any other listener).
#[derive(Clone, Default)]
pub struct AdminAuth {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.digest.map(|_| ".."))
            .finish()
    }
}

impl AdminAuth {
    pub fn new(token: Option<&Token>) -> Self {
        Self {
            digest: token.map(|token| digest(token.as_str().as_bytes())),
        }
    }

    /// Refuses to serve an admin listener bound at `address` that anyone could use.
    pub fn check_listener(&self, address: SocketAddr) -> Result<(), AdminAuthError> {
        if token_required(address, self.digest.is_some()) && self.digest.is_none() {
            return Err(AdminAuthError::TokenRequired { address });
        }
        Ok(())
    }

    /// Whether `headers` carry the token, when one is configured; the same answer for none
    /// and a wrong one, so a prober learns nothing from it.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ProxyAnswer> {
        let Some(expected) = &self.digest else {
            return Ok(());
        };
        let presented = bearer(headers).ok_or(ProxyAnswer::Unauthorized)?;
        // Both sides are SHA-256 digests, so the comparison takes as long whatever the
        // presented token's length, and `ct_eq` has no early exit at the first differing
        // byte: timing tells a prober nothing about the token.
        if bool::from(digest(presented).ct_eq(expected)) {
            Ok(())
        } else {
            Err(ProxyAnswer::Unauthorized)
        }
    }

    /// `check` for every request but the open dashboard page.
    pub fn check_request(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), ProxyAnswer> {
        if is_open_page(method, path) {
            return Ok(());
        }
        self.check(headers)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of the one `authorization: Bearer <token>` field (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.as_bytes();
    let split = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn auth(token: &str) -> AdminAuth {
        AdminAuth::new(Some(&Token::parse(token, "test").unwrap()))
    }

    #[test]
    fn the_environment_wins_over_the_file_and_both_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let read = |env: Option<&str>, file: Option<&Path>| {
            read_token(env.map(OsString::from), file)
                .unwrap()
                .map(|token| token.as_str().to_owned())
        };
        assert_eq!(
            read(Some(" from-env\n"), Some(&file)).as_deref(),
            Some("from-env")
        );
        assert_eq!(read(None, Some(&file)).as_deref(), Some("from-file"));
        assert_eq!(read(None, None), None);
    }

    #[test]
    fn an_empty_unreadable_or_unsendable_token_is_refused_naming_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.token");
        std::fs::write(&empty, " \n").unwrap();
        let missing = dir.path().join("missing.token");
        for (env, file, expected) in [
            (
                Some(""),
                None,
                "CANARY_ADMIN_TOKEN: the admin token is empty",
            ),
            (
                Some("two words"),
                None,
                "CANARY_ADMIN_TOKEN: the admin token must be printable",
            ),
            (
                Some("caf\u{e9}"),
                None,
                "CANARY_ADMIN_TOKEN: the admin token must be printable",
            ),
            (None, Some(&empty), "proxy.admin_token_file ("),
            (None, Some(&missing), "proxy.admin_token_file: cannot read"),
        ] {
            let error = read_token(env.map(OsString::from), file.map(PathBuf::as_path))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(expected), "{env:?} {file:?}: {error}");
        }
        let error = read_token(None, Some(&empty)).unwrap_err().to_string();
        assert!(error.ends_with("the admin token is empty"), "{error}");
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let token = Token::parse("s3cret", "test").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(!format!("{:?}", AdminAuth::new(Some(&token))).contains("s3cret"));
    }

    #[test]
    fn a_token_is_required_off_loopback_and_wherever_one_is_configured() {
        for (address, configured, required) in [
            ("127.0.0.1:9901", false, false),
            ("127.8.0.1:9901", false, false),
            ("[::1]:9901", false, false),
            ("[::ffff:127.0.0.1]:9901", false, false),
            ("127.0.0.1:9901", true, true),
            ("0.0.0.0:9901", false, true),
            ("[::]:9901", false, true),
            ("192.168.1.20:9901", false, true),
            ("0.0.0.0:9901", true, true),
        ] {
            let address: SocketAddr = address.parse().unwrap();
            assert_eq!(
                token_required(address, configured),
                required,
                "{address} {configured}"
            );
        }
    }

    #[test]
    fn a_listener_off_loopback_without_a_token_is_refused_naming_both_sources() {
        let open = AdminAuth::new(None);
        assert!(open.check_listener("127.0.0.1:0".parse().unwrap()).is_ok());
        let error = open
            .check_listener("0.0.0.0:9901".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("proxy.admin_token_file"), "{error}");
        assert!(error.contains("CANARY_ADMIN_TOKEN"), "{error}");
        assert!(
            auth("t")
                .check_listener("0.0.0.0:9901".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let auth = auth("right-token");
        for (fields, passes) in [
            (vec![("authorization", "Bearer right-token")], true),
            (vec![("authorization", "bearer   right-token ")], true),
            (vec![("authorization", "BEARER right-token")], true),
            (vec![], false),
            (vec![("authorization", "Bearer wrong-token")], false),
            (vec![("authorization", "Bearer right-toke")], false),
            (
                vec![("authorization", "Bearer right-token-and-more")],
                false,
            ),
            (vec![("authorization", "Bearer")], false),
            (vec![("authorization", "Bearer ")], false),
            (vec![("authorization", "Basic right-token")], false),
            (vec![("authorization", "right-token")], false),
            (
                vec![
                    ("authorization", "Bearer right-token"),
                    ("authorization", "Bearer right-token"),
                ],
                false,
            ),
        ] {
            let result = auth.check(&headers(&fields));
            assert_eq!(result.is_ok(), passes, "{fields:?}");
            if !passes {
                assert_eq!(result, Err(ProxyAnswer::Unauthorized));
            }
        }
    }

    #[test]
    fn without_a_token_everything_passes() {
        let open = AdminAuth::new(None);
        assert!(open.check(&HeaderMap::new()).is_ok());
        assert!(
            open.check(&headers(&[("authorization", "Bearer x")]))
                .is_ok()
        );
    }

    #[test]
    fn only_the_dashboard_page_is_open() {
        let auth = auth("t");
        let none = HeaderMap::new();
        for (method, path, open) in [
            (Method::GET, "/admin", true),
            (Method::GET, "/admin/", true),
            (Method::HEAD, "/admin/", true),
            (Method::POST, "/admin/", false),
            (Method::GET, "/admin/status", false),
            (Method::GET, "/admin/stats", false),
            (Method::GET, "/admin/rollout", false),
            (Method::POST, "/admin/rollout/approve", false),
            (Method::GET, "/metrics", false),
            (Method::GET, "/admin//", false),
            (Method::GET, "/nope", false),
        ] {
            assert_eq!(is_open_page(&method, path), open, "{method} {path}");
            assert_eq!(
                auth.check_request(&method, path, &none).is_ok(),
                open,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn only_a_json_content_type_makes_an_admin_post() {
        for (fields, json) in [
            (vec![("content-type", "application/json")], true),
            (
                vec![("content-type", "Application/JSON; charset=utf-8")],
                true,
            ),
            (
                vec![("content-type", " application/json ;charset=utf-8")],
                true,
            ),
            (vec![], false),
            (vec![("content-type", "")], false),
            (vec![("content-type", "text/plain")], false),
            (
                vec![("content-type", "application/x-www-form-urlencoded")],
                false,
            ),
            (
                vec![("content-type", "multipart/form-data; boundary=x")],
                false,
            ),
            (vec![("content-type", "application/jsonp")], false),
            (vec![("content-type", "application/json-patch+json")], false),
            (
                vec![("content-type", "text/plain; application/json")],
                false,
            ),
            (
                vec![
                    ("content-type", "application/json"),
                    ("content-type", "text/plain"),
                ],
                false,
            ),
        ] {
            assert_eq!(is_json_post(&headers(&fields)), json, "{fields:?}");
        }
        let mut opaque = HeaderMap::new();
        opaque.insert(
            CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        );
        assert!(!is_json_post(&opaque));
    }
}
