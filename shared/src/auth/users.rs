//! User accounts behind `UserStore`: in the SQLite file on one host (`SqliteUsers`), or in
//! PostgreSQL when `database.url` is set (`PostgresUsers`), so backends on several hosts share
//! them. Login and the `users` command see only the trait.

mod postgres;
mod sqlite;

use std::future::Future;

use async_trait::async_trait;

pub use self::postgres::PostgresUsers;
pub use self::sqlite::SqliteUsers;
use crate::api::UserView;
use crate::config::DatabaseConfig;
use crate::db::{Database, StoreError};

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
}

impl User {
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
        }
    }
}

/// Where the accounts live. Emails are stored normalised (`crate::api::normalise_email`) and
/// unique.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// The user with this (already normalised) email.
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;

    /// Inserts a user unless the email is taken; returns whether it was inserted.
    async fn insert(&self, user: &User) -> Result<bool, StoreError>;

    /// Every user, oldest first.
    async fn list(&self) -> Result<Vec<User>, StoreError>;

    /// Removes the user with this email; returns whether there was one.
    async fn remove(&self, email: &str) -> Result<bool, StoreError>;
}

/// The store `database` names: PostgreSQL at `url` if set (connected and migrated here, so an
/// unreachable server stops the start), else the users table of the SQLite file that `sqlite`
/// opens (called only then). Blocking: call it before serving.
pub fn open(
    database: &DatabaseConfig,
    sqlite: impl FnOnce() -> Result<Database, StoreError>,
) -> Result<Box<dyn UserStore>, StoreError> {
    Ok(match &database.url {
        Some(url) => Box::new(PostgresUsers::connect(url)?),
        None => Box::new(SqliteUsers::new(sqlite()?)),
    })
}

/// Runs `work` to completion from blocking code, whether or not the caller is itself on a
/// tokio runtime (the backends' start runs before theirs, tests' on theirs): on a scoped
/// thread with a runtime of its own.
pub fn block_on<T: Send>(work: impl Future<Output = T> + Send) -> Result<T, StoreError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(StoreError::Runtime)?;
                Ok(runtime.block_on(work))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PostgresUrl;
    use crate::service::{BackendName, Service};
    use crate::testing::TestEnv;
    use crate::testing::postgres::PostgresServer;

    fn user(email: &str, name: &str) -> User {
        User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.into(),
            name: name.into(),
            password_hash: format!("hash of {name}"),
        }
    }

    /// What every store must do, the same way.
    async fn check(store: &dyn UserStore) {
        assert!(store.list().await.unwrap().is_empty());
        assert!(
            store
                .find_by_email("ada@example.com")
                .await
                .unwrap()
                .is_none()
        );

        let ada = user("ada@example.com", "Ada");
        assert!(store.insert(&ada).await.unwrap(), "a new email is inserted");
        let found = store
            .find_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.id, found.name, found.password_hash),
            (ada.id.clone(), ada.name.clone(), ada.password_hash.clone())
        );

        let twin = user("ada@example.com", "Another Ada");
        assert!(
            !store.insert(&twin).await.unwrap(),
            "a taken email is refused"
        );
        let kept = store
            .find_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.id, ada.id, "the refused insert changed nothing");

        assert!(store.insert(&user("bob@example.com", "Bob")).await.unwrap());
        let emails: Vec<String> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.email)
            .collect();
        assert_eq!(
            emails,
            ["ada@example.com", "bob@example.com"],
            "oldest first"
        );

        assert!(store.remove("ada@example.com").await.unwrap());
        assert!(
            !store.remove("ada@example.com").await.unwrap(),
            "nothing left to remove"
        );
        assert!(
            store
                .find_by_email("ada@example.com")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_store_keeps_users() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteUsers::new(Database::open(&dir.path().join("users.db")).unwrap());
        check(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_postgres_store_keeps_users() {
        let server = PostgresServer::start().await;
        let store = PostgresUsers::connect(&server.config_url()).unwrap();
        check(&store).await;
    }

    /// Backends on several hosts start at once against one empty database; each applies the
    /// migrations it lacks, under sqlx's advisory lock, and none fails on the other's tables.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backends_starting_at_once_migrate_one_database_once() {
        let server = PostgresServer::start().await;
        let url = PostgresUrl::new(&server.url_of(&server.fresh_database().await)).unwrap();
        let stores: Vec<_> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| PostgresUsers::connect(&url)))
                .collect();
            starts
                .into_iter()
                .map(|s| s.join().unwrap().unwrap())
                .collect()
        });
        assert!(
            stores[0]
                .insert(&user("ada@example.com", "Ada"))
                .await
                .unwrap()
        );
        for store in &stores {
            assert!(
                store
                    .find_by_email("ada@example.com")
                    .await
                    .unwrap()
                    .is_some()
            );
        }
    }

    /// Through `Service::new`, as a backend starts (here on a test's runtime).
    #[tokio::test]
    async fn an_unreachable_postgres_stops_the_start_naming_the_key_and_not_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = PostgresUrl::new(&format!(
            "postgres://gateway:s3cret-word@127.0.0.1:{port}/gateway"
        ))
        .unwrap();
        let env = TestEnv::with(|config| config.database.url = Some(url));
        let error = Service::new(env.config.clone(), BackendName::New)
            .err()
            .expect("nothing listens there")
            .to_string();
        assert!(error.contains("database.url"), "{error}");
        assert!(
            error.contains(&format!("postgres://gateway@127.0.0.1:{port}/gateway")),
            "{error}"
        );
        assert!(!error.contains("s3cret-word"), "{error}");
    }
}
