//! Users in the SQLite file both backend processes share (one host).

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::{User, UserStore};
use crate::db::{Database, StoreError, now_ms};

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        password_hash: row.get(3)?,
    })
}

#[derive(Clone)]
pub struct SqliteUsers {
    db: Database,
}

impl SqliteUsers {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

#[async_trait]
impl UserStore for SqliteUsers {
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = email.to_owned();
        self.db
            .run(move |conn| {
                conn.query_row(
                    "SELECT id, email, name, password_hash FROM users WHERE email = ?1",
                    [email],
                    from_row,
                )
                .optional()
            })
            .await
    }

    async fn insert(&self, user: &User) -> Result<bool, StoreError> {
        let user = user.clone();
        self.db
            .run(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO users (id, email, name, password_hash, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(email) DO NOTHING",
                    rusqlite::params![user.id, user.email, user.name, user.password_hash, now_ms()],
                )?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.db
            .run(|conn| {
                let mut statement = conn.prepare(
                    "SELECT id, email, name, password_hash FROM users ORDER BY created_at, email",
                )?;
                let users = statement.query_map([], from_row)?;
                users.collect()
            })
            .await
    }

    async fn remove(&self, email: &str) -> Result<bool, StoreError> {
        let email = email.to_owned();
        self.db
            .run(move |conn| Ok(conn.execute("DELETE FROM users WHERE email = ?1", [email])? == 1))
            .await
    }
}
