//! The `users` command against a config in a temporary folder: add, list, remove, refusals, the
//! same in the SQLite file and in PostgreSQL.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use shared::testing::postgres::PostgresServer;

pub fn users(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_users"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "0")
        .spawn()
        .expect("users runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("users ends")
}

pub fn text_of(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn users_are_added_listed_and_removed_and_bad_input_is_refused_in_sqlite() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[database]\npath = \"users.db\"\n").expect("write config");
    add_list_remove_and_refuse(&config);
    assert!(
        dir.path().join("users.db").exists(),
        "the path is relative to the config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_added_listed_and_removed_and_bad_input_is_refused_in_postgres() {
    let server = PostgresServer::start().await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("config.toml");
    let text = format!(
        "[database]\npath = \"unused.db\"\nurl = \"{}\"\n",
        server.url()
    );
    std::fs::write(&config, text).expect("write config");
    add_list_remove_and_refuse(&config);
    assert!(
        !dir.path().join("unused.db").exists(),
        "with a url, the users are not in the SQLite file"
    );
}

#[test]
fn an_unreachable_postgres_is_named_without_its_password() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("config.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let text = format!("[database]\nurl = \"postgres://ops:s3cret@127.0.0.1:{port}/users\"\n");
    std::fs::write(&config, text).expect("write config");
    let listed = users(&config, &["list"], "");
    assert!(!listed.status.success());
    assert!(
        text_of(&listed).contains("database.url"),
        "{}",
        text_of(&listed)
    );
    assert!(!text_of(&listed).contains("s3cret"), "{}", text_of(&listed));
}

/// The same session against whichever store `config` names; the outcomes must not differ.
fn add_list_remove_and_refuse(config: &Path) {
    let added = users(
        config,
        &[
            "add",
            "--email",
            "Ada@Example.com",
            "--name",
            "Ada Lovelace",
        ],
        "a long password\n",
    );
    assert!(added.status.success(), "{}", text_of(&added));

    let listed = users(config, &["list"], "");
    assert!(
        text_of(&listed).contains("ada@example.com\tAda Lovelace"),
        "{}",
        text_of(&listed)
    );

    let again = users(
        config,
        &["add", "--email", "ada@example.com", "--name", "Ada"],
        "another password\n",
    );
    assert!(!again.status.success());
    assert!(
        text_of(&again).contains("already exists"),
        "{}",
        text_of(&again)
    );

    let short = users(
        config,
        &["add", "--email", "bob@example.com", "--name", "Bob"],
        "short\n",
    );
    assert!(!short.status.success());
    assert!(
        text_of(&short).contains("between 8 and 1024"),
        "{}",
        text_of(&short)
    );

    let bad_email = users(
        config,
        &["add", "--email", "nobody", "--name", "X"],
        "a long password\n",
    );
    assert!(!bad_email.status.success());

    let removed = users(config, &["remove", "--email", "ADA@example.com"], "");
    assert!(removed.status.success(), "{}", text_of(&removed));
    assert!(!text_of(&users(config, &["list"], "")).contains("ada@example.com"));
    assert!(
        !users(config, &["remove", "--email", "ada@example.com"], "")
            .status
            .success()
    );
}
