//! Argon2id hashing at OWASP's parameters, on a few dedicated low-priority threads: never
//! on the async workers, bounded in concurrency, and yielding the CPU to every other request
//! when a login flood keeps them busy.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the password hashing threads are gone")]
    PoolGone,
}

/// A hashing failure is the server's fault: a 500, its detail logged and never sent.
impl From<PasswordError> for ApiError {
    fn from(error: PasswordError) -> Self {
        ApiError::internal(error)
    }
}

/// OWASP's minimum for argon2id: 19 MiB of memory, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads: `concurrency` of them, the rest of the work queues.
struct HashPool {
    jobs: mpsc::Sender<Job>,
}

/// Niceness of the hashing threads: a flood of logins then takes only the CPU that nothing
/// else wants (CFS gives a nice-10 thread about a tenth of a nice-0 one's share).
const HASHING_NICENESS: i32 = 10;

fn lower_this_threads_priority() {
    // SAFETY: setpriority only reads its integer arguments; on Linux, PRIO_PROCESS with
    // who = 0 applies to the calling thread alone. A failure (not permitted) leaves the
    // thread at normal priority, which is still correct, only less kind to other requests.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_NICENESS) };
    if result != 0 {
        tracing::debug!("cannot lower the priority of a hashing thread");
    }
}

impl HashPool {
    fn new(threads: usize) -> Self {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        let job = match receiver.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool was dropped
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        Self { jobs: sender }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.send(job).map_err(|_| PasswordError::PoolGone)?;
        result.await.map_err(|_| PasswordError::PoolGone)
    }
}

/// Hashes and verifies passwords on the hashing threads.
#[derive(Clone)]
pub struct Passwords {
    pool: Arc<HashPool>,
    /// Verified against when an email is unknown, so that costs what a wrong password costs.
    dummy_hash: Arc<str>,
}

impl Passwords {
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let dummy_hash = hash_blocking(&uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            pool: Arc::new(HashPool::new(concurrency)),
            dummy_hash: dummy_hash.into(),
        })
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
            .pool
            .run(move || verify_blocking(&password, &hash))
            .await?;
        Ok(known && matches)
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
