//! User accounts in the shared SQLite file.

use rusqlite::OptionalExtension;

use crate::api::UserView;
use crate::db::{Database, StoreError, now_ms};

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

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        password_hash: row.get(3)?,
    })
}

#[derive(Clone)]
pub struct Users {
    db: Database,
}

impl Users {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The user with this (already normalised) email.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
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

    /// Inserts a user unless the email is taken; returns whether it was inserted.
    pub fn insert_blocking(&self, user: &User) -> Result<bool, StoreError> {
        self.db.run_blocking(|conn| {
            let inserted = conn.execute(
                "INSERT INTO users (id, email, name, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(email) DO NOTHING",
                rusqlite::params![user.id, user.email, user.name, user.password_hash, now_ms()],
            )?;
            Ok(inserted == 1)
        })
    }

    pub fn exists_blocking(&self, email: &str) -> Result<bool, StoreError> {
        self.db.run_blocking(|conn| {
            conn.query_row("SELECT 1 FROM users WHERE email = ?1", [email], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    pub fn list_blocking(&self) -> Result<Vec<User>, StoreError> {
        self.db.run_blocking(|conn| {
            let mut statement = conn.prepare(
                "SELECT id, email, name, password_hash FROM users ORDER BY created_at, email",
            )?;
            let users = statement.query_map([], from_row)?;
            users.collect()
        })
    }

    /// Removes the user with this email; returns whether there was one.
    pub fn remove_blocking(&self, email: &str) -> Result<bool, StoreError> {
        self.db.run_blocking(|conn| {
            Ok(conn.execute("DELETE FROM users WHERE email = ?1", [email])? == 1)
        })
    }
}
