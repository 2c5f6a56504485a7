-- The accounts both backends log in against, as in the SQLite file (`shared/src/db.rs`).
-- Emails are stored normalised (trimmed, lowercased) by the code, so UNIQUE is enough.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
