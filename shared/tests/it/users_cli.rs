//! The `users` command against a config in a temporary folder: add, list, remove, refusals.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn users(config: &std::path::Path, args: &[&str], stdin: &str) -> Output {
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

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn users_are_added_listed_and_removed_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[database]\npath = \"users.db\"\n").expect("write config");

    let added = users(
        &config,
        &[
            "add",
            "--email",
            "Ada@Example.com",
            "--name",
            "Ada Lovelace",
        ],
        "a long password\n",
    );
    assert!(added.status.success(), "{}", text(&added));
    assert!(
        dir.path().join("users.db").exists(),
        "the path is relative to the config"
    );

    let listed = users(&config, &["list"], "");
    assert!(
        text(&listed).contains("ada@example.com\tAda Lovelace"),
        "{}",
        text(&listed)
    );

    let again = users(
        &config,
        &["add", "--email", "ada@example.com", "--name", "Ada"],
        "another password\n",
    );
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));

    let short = users(
        &config,
        &["add", "--email", "bob@example.com", "--name", "Bob"],
        "short\n",
    );
    assert!(!short.status.success());
    assert!(
        text(&short).contains("between 8 and 1024"),
        "{}",
        text(&short)
    );

    let bad_email = users(
        &config,
        &["add", "--email", "nobody", "--name", "X"],
        "a long password\n",
    );
    assert!(!bad_email.status.success());

    let removed = users(&config, &["remove", "--email", "ADA@example.com"], "");
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!text(&users(&config, &["list"], "")).contains("ada@example.com"));
    assert!(
        !users(&config, &["remove", "--email", "ada@example.com"], "")
            .status
            .success()
    );
}
