//! `users`: add, list and remove accounts in the store both backends share: the SQLite file
//! `database.path`, or PostgreSQL at `database.url` when that is set.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use shared::api::{MAX_PASSWORD_CHARS, normalise_email};
use shared::auth::passwords::hash_blocking;
use shared::auth::users::{self, User};
use shared::config::Config;
use shared::db::Database;

#[derive(Parser)]
#[command(about = "Manage the accounts both backends log in against")]
struct Args {
    /// The config whose `[database]` to use: `url` if set, else `path`.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Adds a user; the password is read from the first line of standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// Lists users (id, email, name).
    List,
    /// Removes the user with this email.
    Remove {
        #[arg(long)]
        email: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    let path = &config.database.path;
    let users = users::open(&config.database, || Database::open(path)).with_context(|| {
        match &config.database.url {
            Some(url) => format!("cannot open the users at {url}"),
            None => format!("cannot open {}", path.display()),
        }
    })?;
    // Only the store's calls run on it; reading the password and hashing it stay off it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match args.command {
        Command::Add { email, name } => {
            let user = new_user(&email, &name)?;
            if !runtime.block_on(users.insert(&user))? {
                bail!("a user with email {} already exists", user.email);
            }
            println!("added {} {}", user.id, user.email);
        }
        Command::List => {
            for user in runtime.block_on(users.list())? {
                println!("{}\t{}\t{}", user.id, user.email, user.name);
            }
        }
        Command::Remove { email } => {
            let email = normalise_email(&email).context("--email must be a valid email address")?;
            if !runtime.block_on(users.remove(&email))? {
                bail!("no user with email {email}");
            }
            println!("removed {email}");
        }
    }
    Ok(())
}

/// The user `add` inserts: checked email and name, the password from standard input, hashed.
fn new_user(email: &str, name: &str) -> anyhow::Result<User> {
    let email = normalise_email(email).context("--email must be a valid email address")?;
    let name = name.trim().to_owned();
    if name.is_empty() {
        bail!("--name must not be empty");
    }
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    let chars = password.chars().count();
    if !(8..=MAX_PASSWORD_CHARS).contains(&chars) {
        bail!("the password must be between 8 and {MAX_PASSWORD_CHARS} characters");
    }
    Ok(User {
        id: uuid::Uuid::new_v4().to_string(),
        email,
        name,
        password_hash: hash_blocking(password)?,
    })
}
