//! Argon2id hashing at OWASP's parameters, off the async workers and bounded in concurrency.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// OWASP's minimum for argon2id: 19 MiB of memory, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes and verifies passwords; at most `concurrency` at once, the rest queue.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when an email is unknown, so that costs what a wrong password costs.
    dummy_hash: Arc<str>,
}

impl Passwords {
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let dummy_hash = hash_blocking(&uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.bounded(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it does the same work
    /// against a dummy and answers false.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .bounded(move || verify_blocking(&password, &hash))
            .await?;
        Ok(known && matches)
    }

    async fn bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.permits.acquire().await;
        Ok(tokio::task::spawn_blocking(work).await?)
    }
}

/// Hashes with a fresh random salt. Blocking: tens of milliseconds of CPU.
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    // A stored hash we cannot parse matches nothing; it is logged so an operator can fix it.
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(error) => {
            tracing::error!(%error, "stored password hash is malformed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_at_owasp_parameters_with_fresh_salts() {
        let a = hash_blocking("pw").unwrap();
        let b = hash_blocking("pw").unwrap();
        assert_ne!(a, b, "salts must differ");
        for hash in [&a, &b] {
            assert!(
                hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
                "{hash}"
            );
        }
        assert!(verify_blocking("pw", &a));
        assert!(!verify_blocking("other", &a));
        assert!(!verify_blocking("pw", "not a hash"));
    }

    #[tokio::test]
    async fn unknown_users_never_match() {
        let passwords = Passwords::new(1).unwrap();
        let dummy = passwords.dummy_hash.to_string();
        assert!(!passwords.verify("anything".into(), None).await.unwrap());
        // Even the dummy's own password (which nobody knows) would not log an unknown user in.
        assert!(!passwords.verify(dummy, None).await.unwrap());
    }
}
