//! Rebuilds when a migration is added: `sqlx::migrate!` embeds `migrations/postgres` at build
//! time, and a new file there is otherwise not noticed.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
