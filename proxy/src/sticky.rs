//! The sticky bucket: signed into a cookie so a client cannot pick its side, or derived from
//! a bearer token's subject for API clients that keep no cookies.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::routing::BUCKETS;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of HMAC kept in the cookie: 128 bits, ample against forgery, short on the wire.
const SIGNATURE_BYTES: usize = 16;

/// Signs and checks buckets with one secret.
#[derive(Clone)]
pub struct BucketSigner {
    key: HmacSha256,
}

impl BucketSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    fn mac(&self, domain: &[u8], data: &[u8]) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(domain);
        mac.update(data);
        mac
    }

    /// The cookie value for `bucket`: `BUCKET.SIGNATURE`.
    pub fn cookie_value(&self, bucket: u16) -> String {
        let tag = self
            .mac(b"bucket:", bucket.to_string().as_bytes())
            .finalize()
            .into_bytes();
        format!(
            "{bucket}.{}",
            URL_SAFE_NO_PAD.encode(&tag[..SIGNATURE_BYTES])
        )
    }

    /// The bucket of a cookie value we signed; `None` for anything malformed or forged.
    pub fn verify(&self, value: &str) -> Option<u16> {
        let (bucket, signature) = value.split_once('.')?;
        let parsed: u16 = bucket.parse().ok().filter(|b| *b < BUCKETS)?;
        if parsed.to_string() != bucket {
            return None; // one canonical spelling per bucket, so "007" cannot reuse 7's tag
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if signature.len() != SIGNATURE_BYTES {
            return None;
        }
        self.mac(b"bucket:", bucket.as_bytes())
            .verify_truncated_left(&signature)
            .ok()
            .map(|_| parsed)
    }

    /// A bucket for a token subject: a keyed hash, so it is stable for the subject but not
    /// predictable without the secret.
    pub fn bucket_for_subject(&self, subject: &str) -> u16 {
        let tag = self
            .mac(b"subject:", subject.as_bytes())
            .finalize()
            .into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16
    }
}

/// A fresh random bucket for a client that brought neither cookie nor token.
pub fn random_bucket() -> u16 {
    rand::random_range(0..BUCKETS)
}

/// The value of cookie `name` in a `cookie` header, if present.
pub fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value.trim().trim_matches('"'))
    })
}

/// The `sub` claim of a JWT, read without verifying it: only for stickiness, never for trust
/// (a forged subject only picks a bucket; the backend still refuses the token).
pub fn token_subject(authorization: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.len() > 8 * 1024 {
        return None;
    }
    let payload = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(serde::Deserialize)]
    struct Subject {
        sub: String,
    }
    serde_json::from_slice::<Subject>(&bytes)
        .ok()
        .map(|s| s.sub)
}

/// The `set-cookie` header value that pins `bucket`.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age_seconds}; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> BucketSigner {
        BucketSigner::new(&[3u8; 32])
    }

    #[test]
    fn signed_buckets_round_trip() {
        let signer = signer();
        for bucket in [0, 1, 4_999, 9_999] {
            assert_eq!(signer.verify(&signer.cookie_value(bucket)), Some(bucket));
        }
    }

    #[test]
    fn forged_and_malformed_cookies_are_refused() {
        let signer = signer();
        let good = signer.cookie_value(42);
        let (_, signature) = good.split_once('.').unwrap();
        let other_key = BucketSigner::new(&[4u8; 32]).cookie_value(42);
        for bad in [
            format!("43.{signature}"),
            format!("042.{signature}"),
            other_key,
            "42".into(),
            "42.".into(),
            "abc.def".into(),
            format!("10000.{signature}"),
            format!("42.{}", &signature[..10]),
            String::new(),
        ] {
            assert_eq!(signer.verify(&bad), None, "{bad}");
        }
    }

    #[test]
    fn subjects_hash_to_stable_spread_buckets() {
        let signer = signer();
        assert_eq!(
            signer.bucket_for_subject("u1"),
            signer.bucket_for_subject("u1")
        );
        let below_half = (0..2000)
            .filter(|i| signer.bucket_for_subject(&format!("user-{i}")) < 5_000)
            .count();
        assert!((850..1150).contains(&below_half), "{below_half}");
    }

    #[test]
    fn cookies_and_subjects_are_found() {
        assert_eq!(
            find_cookie("a=1; canary_bucket=5.x; b=2", "canary_bucket"),
            Some("5.x")
        );
        assert_eq!(find_cookie("xcanary_bucket=5", "canary_bucket"), None);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"user-7","exp":1}"#);
        let header = format!("Bearer h.{payload}.s");
        assert_eq!(token_subject(header.as_bytes()).as_deref(), Some("user-7"));
        assert_eq!(token_subject(b"Basic abc"), None);
        assert_eq!(token_subject(b"Bearer not-a-jwt"), None);
    }

    #[test]
    fn the_cookie_has_the_promised_attributes() {
        assert_eq!(
            set_cookie("canary_bucket", "1.x", 60, true),
            "canary_bucket=1.x; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
