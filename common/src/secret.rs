//! Signing secrets (the JWT key, the proxy's cookie key, the shadow key): from an environment variable, else from a file created on first start.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{source_name} holds {len} bytes; a signing secret needs at least {MIN_SECRET_BYTES}")]
    TooShort { source_name: String, len: usize },
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create secret file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The secret from `env_var` if set, else from `file`, which is created with 32 random bytes
/// (mode 0600) when absent. Two processes starting at once agree on one file.
pub fn load_or_create(env_var: &str, file: &Path) -> Result<Vec<u8>, SecretError> {
    if let Some(value) = std::env::var_os(env_var) {
        let bytes = value.into_encoded_bytes();
        return check_len(bytes, env_var.to_owned());
    }
    if !file.exists() {
        create(file)?;
    }
    let bytes = std::fs::read(file).map_err(|source| SecretError::Read {
        path: file.to_owned(),
        source,
    })?;
    check_len(bytes, file.display().to_string())
}

fn check_len(bytes: Vec<u8>, source_name: String) -> Result<Vec<u8>, SecretError> {
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort {
            source_name,
            len: bytes.len(),
        });
    }
    Ok(bytes)
}

/// Writes the whole secret under a temporary name, then links it into place: the link fails
/// if another process got there first, and nobody ever reads a half-written secret.
fn create(file: &Path) -> Result<(), SecretError> {
    let err = |source| SecretError::Create {
        path: file.to_owned(),
        source,
    };
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let secret: [u8; MIN_SECRET_BYTES] = rand::random();
    let tmp = dir.join(format!(".secret-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&tmp)?;
        out.write_all(&secret)?;
        out.sync_all()?;
        match std::fs::hard_link(&tmp, file) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_32_byte_secret_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nested/jwt.secret");
        let first = load_or_create("SHARED_TEST_UNSET_SECRET_VAR", &file).unwrap();
        let second = load_or_create("SHARED_TEST_UNSET_SECRET_VAR", &file).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_short_secret_is_refused_naming_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("short.secret");
        std::fs::write(&file, b"too short").unwrap();
        let error = load_or_create("SHARED_TEST_UNSET_SECRET_VAR", &file)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("short.secret") && error.contains("at least 32"),
            "{error}"
        );
    }
}
