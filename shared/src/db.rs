//! The SQLite file both backend processes share: rate-limit buckets, login failures and, unless
//! `database.url` puts them in PostgreSQL (`crate::auth::users`), users.
//!
//! WAL mode lets the two processes read and write the file at once; every statement runs on
//! tokio's blocking pool so SQLite never stalls an async worker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create database folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot start the rate limit's writer thread: {0}")]
    Thread(std::io::Error),
    #[error("the rate limit's writer thread has stopped")]
    WriterGone,
    /// A batch of rate-limit decisions failed as a whole (the first cause, shared by all).
    #[error("rate limit batch: {0}")]
    Batch(String),
    /// A networked store (`crate::store`) did not answer, or not in time.
    #[error("{0}")]
    Unavailable(String),
    #[error("database.url: cannot connect to PostgreSQL at {url}: {source}")]
    PostgresConnect { url: String, source: sqlx::Error },
    #[error("database.url: cannot migrate PostgreSQL at {url}: {source}")]
    PostgresMigrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("cannot start a runtime for the database client: {0}")]
    Runtime(std::io::Error),
}

/// A store failure is the server's fault: a 500, its detail logged and never sent; a shared
/// store that does not answer is a 503, which the client may retry.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => ApiError::StoreUnavailable(detail),
            error => ApiError::internal(error),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_buckets (
    key        TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    email             TEXT PRIMARY KEY,
    failures          INTEGER NOT NULL,
    window_started_ms INTEGER NOT NULL
);
";

/// How long a statement waits for the other process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection borrowed from the pool, returned to it when dropped.
pub type PooledConnection = r2d2::PooledConnection<SqliteConnectionManager>;

#[derive(Clone)]
pub struct Database {
    pool: r2d2::Pool<SqliteConnectionManager>,
}

impl Database {
    /// Opens (creating if needed) the file and its schema. Blocking: call before serving.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let manager = SqliteConnectionManager::file(path).with_init(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        });
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .connection_timeout(BUSY_TIMEOUT)
            .build(manager)?;
        let conn = pool.get()?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { pool })
    }

    /// Runs `work` with a pooled connection on the blocking pool.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            Ok(work(&mut conn)?)
        })
        .await?
    }

    /// A connection to keep, for a thread of its own that writes (the rate limit's writer).
    pub fn connection(&self) -> Result<PooledConnection, StoreError> {
        Ok(self.pool.get()?)
    }

    /// The same, for callers already off the async runtime (the `users` command).
    pub fn run_blocking<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        Ok(work(&mut conn)?)
    }
}

/// Milliseconds since the Unix epoch, the clock every stored timestamp uses.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}
