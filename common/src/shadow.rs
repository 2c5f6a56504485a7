//! Shadow requests: copies of a client's request that the proxy sends to the other backend to
//! compare the answers. A shadow must not have side effects a second time, so a backend that
//! recognises one spends no rate-limit budget, leaves the login throttle alone and counts
//! nothing in its metrics.
//!
//! A shadow says so in [`HEADER`], whose value is the HMAC-SHA256 of the request's
//! `x-request-id` under a secret only the proxy and the backends hold ([`SECRET_ENV`], else
//! `[shadow] secret_file`). The proxy strips [`HEADER`] from every client request, and a value
//! that does not verify is ignored, so no client can make its own requests free.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::secret::{self, MIN_SECRET_BYTES, SecretError};

/// The header that marks a shadow request; its value is [`ShadowKey::sign`] of the request id.
pub const HEADER: &str = "x-canary-shadow";

/// The environment variable that, when set, overrides `[shadow] secret_file`.
pub const SECRET_ENV: &str = "CANARY_SHADOW_SECRET";

/// The length of an HMAC-SHA256 tag in bytes; the header holds twice as many hex digits.
const TAG_BYTES: usize = 32;

/// The key shared by the proxy (which signs) and the backends (which verify).
#[derive(Clone)]
pub struct ShadowKey {
    /// Keyed once; each use clones it, which skips hashing the key again.
    mac: Hmac<Sha256>,
}

/// A secret too short to be a shadow key.
#[derive(Debug, thiserror::Error)]
#[error("a shadow key needs at least {MIN_SECRET_BYTES} bytes, not {0}")]
pub struct ShortKey(pub usize);

impl ShadowKey {
    /// The key for `secret`, which must be at least [`MIN_SECRET_BYTES`] long.
    pub fn new(secret: &[u8]) -> Result<Self, ShortKey> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ShortKey(secret.len()));
        }
        // HMAC takes a key of any length, so this cannot fail; the error type is for the
        // signature's sake.
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| ShortKey(secret.len()))?;
        Ok(Self { mac })
    }

    /// The value of [`HEADER`] for the request whose `x-request-id` is `request_id`: the
    /// lowercase hex HMAC-SHA256 of the id.
    pub fn sign(&self, request_id: &str) -> HeaderValue {
        let tag = self.tag(request_id).finalize().into_bytes();
        HeaderValue::from_str(&hex::encode(tag)).expect("hex digits are a header value")
    }

    /// Whether `header` is [`ShadowKey::sign`] of `request_id`. The comparison takes the same
    /// time however many bytes match; a value of the wrong length or not hex is refused.
    pub fn verify(&self, request_id: &str, header: &[u8]) -> bool {
        let mut tag = [0u8; TAG_BYTES];
        if hex::decode_to_slice(header, &mut tag).is_err() {
            return false;
        }
        self.tag(request_id).verify_slice(&tag).is_ok()
    }

    fn tag(&self, request_id: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(request_id.as_bytes());
        mac
    }
}

impl std::fmt::Debug for ShadowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("ShadowKey(..)")
    }
}

/// What the backends read of `[shadow]`: where the key lives. The proxy's `[shadow]` holds
/// many more keys (how much to shadow, which routes), which this view ignores, so a new proxy
/// key never stops a backend from starting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowSecretSection {
    /// Read when `CANARY_SHADOW_SECRET` is unset; created with 32 random bytes (mode 0600) if
    /// absent. Relative to the config file's folder.
    pub secret_file: PathBuf,
}

impl Default for ShadowSecretSection {
    fn default() -> Self {
        Self {
            secret_file: PathBuf::from("data/shadow.secret"),
        }
    }
}

impl ShadowSecretSection {
    /// `secret_file` resolved against `base`, the config file's folder.
    pub fn resolved(mut self, base: &Path) -> Self {
        self.secret_file = crate::config::resolve(base, &self.secret_file);
        self
    }

    /// The key from [`SECRET_ENV`] if set, else from `secret_file`, created on first start.
    /// Blocking (file I/O): call it before serving.
    pub fn load_key(&self) -> Result<ShadowKey, SecretError> {
        let secret = secret::load_or_create(SECRET_ENV, &self.secret_file)?;
        // `load_or_create` has checked the length; this refusal is only there to name it.
        ShadowKey::new(&secret).map_err(|ShortKey(len)| SecretError::TooShort {
            source_name: self.secret_file.display().to_string(),
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a shadow secret for these tests only, 32+ bytes";

    fn key() -> ShadowKey {
        ShadowKey::new(SECRET).unwrap()
    }

    #[test]
    fn a_signature_verifies_for_its_request_id_under_its_key() {
        let signed = key().sign("req-1");
        assert_eq!(signed.len(), 2 * TAG_BYTES);
        assert!(
            signed
                .as_bytes()
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
            "lowercase hex: {signed:?}"
        );
        assert!(key().verify("req-1", signed.as_bytes()));
    }

    #[test]
    fn another_request_id_or_another_key_does_not_verify() {
        let signed = key().sign("req-1");
        assert!(!key().verify("req-2", signed.as_bytes()));
        assert!(!key().verify("", signed.as_bytes()));
        let other = ShadowKey::new(b"another secret, also of at least 32 bytes").unwrap();
        assert!(!other.verify("req-1", signed.as_bytes()));
    }

    #[test]
    fn garbage_does_not_verify() {
        let signed = key().sign("req-1");
        let upper = signed.to_str().unwrap().to_ascii_uppercase();
        let truncated = &signed.as_bytes()[..2 * TAG_BYTES - 2];
        let longer = [signed.as_bytes(), b"00"].concat();
        let not_hex = [&signed.as_bytes()[..2 * TAG_BYTES - 1], b"g"].concat();
        let mut flipped = signed.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        for garbage in [
            &b""[..],
            b"1",
            b"true",
            truncated,
            &longer,
            &not_hex,
            &flipped,
            &[0xff; 2 * TAG_BYTES],
        ] {
            assert!(
                !key().verify("req-1", garbage),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        // Hex digits are case-insensitive to the decoder; the tag is what counts.
        assert!(key().verify("req-1", upper.as_bytes()));
    }

    #[test]
    fn a_short_secret_is_refused_and_the_key_is_never_printed() {
        assert_eq!(ShadowKey::new(&[7; 31]).unwrap_err().0, 31);
        assert_eq!(format!("{:?}", key()), "ShadowKey(..)");
    }

    #[test]
    fn the_section_ignores_keys_it_does_not_own_and_resolves_its_file() {
        let text = "[shadow]\npercent = 5\nsecret_file = \"keys/s\"\n[shadow.routes]\nx = 1\n";
        #[derive(Deserialize)]
        struct File {
            shadow: ShadowSecretSection,
        }
        let path = Path::new("/etc/gateway/config.toml");
        let file: File = crate::config::parse(text, path).unwrap();
        let section = file.shadow.resolved(Path::new("/etc/gateway"));
        assert_eq!(section.secret_file, PathBuf::from("/etc/gateway/keys/s"));
        assert_eq!(
            ShadowSecretSection::default().secret_file,
            PathBuf::from("data/shadow.secret")
        );
    }

    #[test]
    fn the_key_file_is_created_once_and_signs_alike_after() {
        // The variable would win over the file; it is unset where the tests run.
        if std::env::var_os(SECRET_ENV).is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let section = ShadowSecretSection {
            secret_file: dir.path().join("shadow.secret"),
        };
        let first = section.load_key().unwrap();
        let second = section.load_key().unwrap();
        assert_eq!(first.sign("req-1"), second.sign("req-1"));
    }
}
