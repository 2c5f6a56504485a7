//! Users in PostgreSQL (`database.url`), for backends on several hosts.
//!
//! The pool lives on a small runtime of its own: the backends build their `Service` before
//! their runtime starts, and actix-web runs one runtime per worker thread, while a
//! connection belongs to the runtime that opened it. Each query is spawned there and awaited
//! from whichever runtime the request runs on.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::runtime::Runtime;

use super::{User, UserStore};
use crate::config::PostgresUrl;
use crate::db::StoreError;

/// The schema, embedded at build time from `shared/migrations/postgres`. Every backend applies
/// what is missing when it starts; sqlx holds an advisory lock meanwhile, so backends that
/// start at once apply each migration once.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a start waits for PostgreSQL to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a working connection (sqlx retries a refused one meanwhile)
/// before it is answered 500: a login has argon2 to run after it, and a client to answer.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per backend process; a login holds one for one short query.
const MAX_CONNECTIONS: u32 = 8;

pub struct PostgresUsers {
    pool: PgPool,
    /// `Some` until dropped; dropped without waiting, since the owner may be on a runtime.
    runtime: Option<Runtime>,
}

fn from_row(row: PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
    })
}

impl PostgresUsers {
    /// Connects to `url` and applies the migrations it lacks; fails, naming `database.url`
    /// (never its password), if PostgreSQL does not answer within `CONNECT_TIMEOUT`.
    /// Blocking: call it before serving.
    pub fn connect(url: &PostgresUrl) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postgres-users")
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        let options = url.options().clone();
        let shown = url.to_string();
        let started = runtime.spawn(async move {
            // One connection of its own first: the pool would retry a refused connection until
            // its timeout and then report only that it timed out.
            let connected =
                tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await;
            let unreachable = |source| StoreError::PostgresConnect {
                url: shown.clone(),
                source,
            };
            match connected {
                Ok(Ok(conn)) => conn.close().await.map_err(unreachable)?,
                Ok(Err(source)) => return Err(unreachable(source)),
                Err(_) => {
                    return Err(unreachable(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {CONNECT_TIMEOUT:?}"),
                    ))));
                }
            }
            // Created on this runtime, so its connections and upkeep tasks live here.
            let pool = PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options);
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|source| StoreError::PostgresMigrate {
                    url: shown.clone(),
                    source,
                })?;
            Ok(pool)
        });
        let started = futures::executor::block_on(started).map_err(StoreError::from);
        let pool = match started.and_then(std::convert::identity) {
            Ok(pool) => pool,
            Err(error) => {
                // The caller may be on a runtime, where dropping one would panic.
                runtime.shutdown_background();
                return Err(error);
            }
        };
        tracing::info!(url = %url, "users in PostgreSQL");
        Ok(Self {
            pool,
            runtime: Some(runtime),
        })
    }

    /// Runs `query` with the pool on this store's runtime.
    async fn run<T, F>(&self, query: impl FnOnce(PgPool) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(|| {
            StoreError::Runtime(std::io::Error::other("the store is shutting down"))
        })?;
        Ok(runtime.spawn(query(self.pool.clone())).await??)
    }
}

impl Drop for PostgresUsers {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait]
impl UserStore for PostgresUsers {
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = email.to_owned();
        self.run(|pool| async move {
            sqlx::query("SELECT id, email, name, password_hash FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(&pool)
                .await?
                .map(from_row)
                .transpose()
        })
        .await
    }

    async fn insert(&self, user: &User) -> Result<bool, StoreError> {
        let user = user.clone();
        self.run(|pool| async move {
            let done = sqlx::query(
                "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (email) DO NOTHING",
            )
            .bind(user.id)
            .bind(user.email)
            .bind(user.name)
            .bind(user.password_hash)
            .execute(&pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.run(|pool| async move {
            sqlx::query(
                "SELECT id, email, name, password_hash FROM users ORDER BY created_at, email",
            )
            .fetch_all(&pool)
            .await?
            .into_iter()
            .map(from_row)
            .collect()
        })
        .await
    }

    async fn remove(&self, email: &str) -> Result<bool, StoreError> {
        let email = email.to_owned();
        self.run(|pool| async move {
            let done = sqlx::query("DELETE FROM users WHERE email = $1")
                .bind(email)
                .execute(&pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}
