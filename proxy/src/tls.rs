//! HTTPS with rustls: the certificate and key files read and checked (`load`), served through
//! a resolver whose pair is swapped when the files change (`Certificates`, watched by
//! `CertWatcher`, so a renewed certificate needs no restart), the listener's settings (HTTP/2
//! by ALPN, HTTP/1.1 still served), what a request over TLS changes (`is_tls`, `hsts`), and
//! the self-signed pair for development (`dev_certificate`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderValue;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::state::ProxyState;

/// How often the certificate and key files are read for a change.
const POLL: Duration = Duration::from_secs(1);

/// Why a certificate and key cannot be served; each names the config key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate in {path}{}", detail(.reason))]
    NoCert { path: PathBuf, reason: String },
    #[error("no PEM private key in {path}{}", detail(.reason))]
    NoKey { path: PathBuf, reason: String },
    #[error("the key in {key} does not fit the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

fn detail(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl TlsError {
    /// The dotted config key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            Self::ReadCert { .. } | Self::NoCert { .. } => "proxy.tls.cert_file",
            Self::ReadKey { .. } | Self::NoKey { .. } | Self::Mismatch { .. } => {
                "proxy.tls.key_file"
            }
        }
    }
}

/// The certificate files' bytes, as read (compared to notice a change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl PemFiles {
    pub fn read(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            cert: std::fs::read(cert).map_err(|source| TlsError::ReadCert {
                path: cert.to_owned(),
                source,
            })?,
            key: std::fs::read(key).map_err(|source| TlsError::ReadKey {
                path: key.to_owned(),
                source,
            })?,
        })
    }

    /// The chain and its key, checked to belong together; `cert` and `key` name the files
    /// in errors.
    pub fn parse(&self, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsError::NoCert {
                path: cert.to_owned(),
                reason: error.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCert {
                path: cert.to_owned(),
                reason: String::new(),
            });
        }
        let private_key =
            PrivateKeyDer::from_pem_slice(&self.key).map_err(|error| TlsError::NoKey {
                path: key.to_owned(),
                reason: error.to_string(),
            })?;
        let mismatch = |reason: String| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let provider = provider().ok_or_else(|| mismatch("no crypto provider".into()))?;
        CertifiedKey::from_der(chain, private_key, &provider)
            .map_err(|error| mismatch(error.to_string()))
    }
}

/// The crypto rustls runs on here: ring, which Pingora installs (no OpenSSL, no aws-lc).
fn provider() -> Option<Arc<CryptoProvider>> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default().cloned()
}

/// Reads and checks the pair, as at start-up and on each change.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    PemFiles::read(cert, key)?.parse(cert, key)
}

/// The certificate every handshake gets: swapped whole when the files change.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
}

impl Certificates {
    pub fn new(first: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
        }
    }

    pub fn replace(&self, next: CertifiedKey) {
        self.current.store(Arc::new(next));
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The TLS listener's settings: the swappable certificate, HTTP/2 preferred by ALPN with
/// HTTP/1.1 allowed.
pub fn settings(certificates: Arc<Certificates>) -> Result<TlsSettings, pingora::BError> {
    // The paths are unused once a resolver is set; `with_callbacks` would need callbacks.
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(certificates);
    settings.enable_h2();
    Ok(settings)
}

/// Whether the request came over the TLS listener.
pub fn is_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

/// `strict-transport-security` for an answer over TLS, per `proxy.tls.hsts_max_age_seconds`
/// (`None` when TLS is off in the config, or the age is 0).
pub fn hsts(max_age_seconds: Option<u64>) -> Option<HeaderValue> {
    max_age_seconds
        .filter(|age| *age > 0)
        .and_then(|age| HeaderValue::try_from(format!("max-age={age}")).ok())
}

/// Reads the configured certificate and key files every second and serves a new pair as
/// soon as both files hold one that fits; a broken or half-written pair is logged and the
/// one in service stays. The paths are read from the config in force, so a reload that
/// names other files switches to them too.
pub struct CertWatcher {
    pub state: Arc<ProxyState>,
    pub certificates: Arc<Certificates>,
}

impl CertWatcher {
    /// Reads the files and swaps in their pair if their bytes differ from `last`.
    pub fn check(&self, last: &mut Option<PemFiles>) {
        let generation = self.state.live.load();
        let Some(tls) = &generation.settings.proxy.tls else {
            return;
        };
        let (cert, key) = (&tls.cert_file, &tls.key_file);
        let outcome = PemFiles::read(cert, key).and_then(|files| {
            if last.as_ref() == Some(&files) {
                return Ok(None);
            }
            *last = Some(files.clone());
            files.parse(cert, key).map(Some)
        });
        match outcome {
            Ok(None) => {}
            Ok(Some(pair)) => {
                self.certificates.replace(pair);
                tracing::info!(cert = %cert.display(), "tls certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(key = error.key(), %error, "tls certificate not reloaded; the one in service stays");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let generation = self.state.live.load();
        let mut last = generation
            .settings
            .proxy
            .tls
            .as_ref()
            .and_then(|tls| PemFiles::read(&tls.cert_file, &tls.key_file).ok());
        drop(generation);
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = poll.tick() => self.check(&mut last),
            }
        }
    }
}

/// A self-signed certificate and its key, PEM, for `localhost`, `127.0.0.1` and `::1`: for
/// development only (a client must be told to trust it, e.g. `curl --cacert cert.pem`).
pub fn dev_certificate() -> Result<PemFiles, rcgen::Error> {
    let names = ["localhost", "127.0.0.1", "::1"].map(str::to_owned);
    let pair = rcgen::generate_simple_self_signed(names.to_vec())?;
    Ok(PemFiles {
        cert: pair.cert.pem().into_bytes(),
        key: pair.signing_key.serialize_pem().into_bytes(),
    })
}

/// Writes a development pair as `cert.pem` and `key.pem` in `dir` (created if missing);
/// refuses to overwrite either file. Returns both paths.
pub fn write_dev_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), DevCertError> {
    let pair = dev_certificate()?;
    std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Both checked first, so a refusal leaves no half pair behind.
    if let Some(path) = [&cert, &key].into_iter().find(|path| path.exists()) {
        return Err(DevCertError::Write {
            path: path.clone(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    for (path, bytes, mode) in [(&cert, &pair.cert, 0o644), (&key, &pair.key, 0o600)] {
        write_new(path, bytes, mode).map_err(|source| DevCertError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok((cert, key))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?
        .write_all(bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_follows_the_configured_age() {
        assert_eq!(
            hsts(Some(31_536_000)).as_ref().map(HeaderValue::as_bytes),
            Some(&b"max-age=31536000"[..])
        );
        assert_eq!(hsts(Some(0)), None);
        assert_eq!(hsts(None), None);
    }

    #[test]
    fn a_dev_certificate_loads_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_dev_certificate(dir.path()).unwrap();
        load(&cert, &key).unwrap();
        // Never overwritten: a second run refuses.
        assert!(write_dev_certificate(dir.path()).is_err());

        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_dev_certificate(other.path()).unwrap();
        let error = load(&cert, &other_key).unwrap_err();
        assert_eq!(error.key(), "proxy.tls.key_file", "{error}");
    }

    #[test]
    fn each_bad_file_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_dev_certificate(dir.path()).unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let missing = dir.path().join("missing.pem");
        for (cert, key, expected) in [
            (&missing, &key, "proxy.tls.cert_file"),
            (&garbage, &key, "proxy.tls.cert_file"),
            (&key, &key, "proxy.tls.cert_file"),
            (&cert, &missing, "proxy.tls.key_file"),
            (&cert, &garbage, "proxy.tls.key_file"),
            (&cert, &cert, "proxy.tls.key_file"),
        ] {
            let error = load(cert, key).unwrap_err();
            assert_eq!(error.key(), expected, "{error}");
        }
    }
}
