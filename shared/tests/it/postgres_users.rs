//! Users in PostgreSQL, as on several hosts: added with the `users` command (the real binary),
//! they log in on both backends, each started against that one PostgreSQL; an outage while
//! serving is a 500 in the contract's shape.

use serde_json::{Value, json};
use shared::routes;
use shared::testing::client::post_json;
use shared::testing::postgres::PostgresServer;
use shared::testing::{TestEnv, TestServer};

use crate::users_cli::{text_of, users};

/// The backends' environment (its own secrets and SQLite file for the budget and the
/// throttle) with the users in `server`, and a config file for the `users` command naming the
/// same PostgreSQL.
fn env_on(server: &PostgresServer) -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::with(|config| {
        config.database.url = Some(server.config_url());
        config.database.seed_demo_user = false;
    });
    let config = env.dir().join("users.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", server.url()))
        .expect("write the users command's config");
    (env, config)
}

async fn login(server: &TestServer, email: &str, password: &str) -> (u16, Value) {
    let body = json!({"email": email, "password": password});
    let answer = post_json(server, routes::LOGIN, &body, None).await;
    (answer.status, answer.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_with_the_command_log_in_on_both_backends() {
    let postgres = PostgresServer::start().await;
    let (env, config) = env_on(&postgres);
    let add = |email: &str, name: &str, password: &str| {
        let added = users(
            &config,
            &["add", "--email", email, "--name", name],
            &format!("{password}\n"),
        );
        assert!(added.status.success(), "{}", text_of(&added));
    };
    add("Ada@Example.com", "Ada Lovelace", "analytical engine");

    let legacy = legacy_backend::testing::start(&env).await;
    let new = new_backend::testing::start(&env).await;
    for backend in [&legacy, &new] {
        let (status, body) = login(backend, "ada@example.com", "analytical engine").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"]["email"], "ada@example.com");
        assert_eq!(body["user"]["name"], "Ada Lovelace");
        let (status, body) = login(backend, "ada@example.com", "difference engine").await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &json!("INVALID_CREDENTIALS"))
        );
    }

    // Read at every login, not at start: a user added or removed while both serve counts.
    add("grace@example.com", "Grace Hopper", "compiler first");
    let removed = users(&config, &["remove", "--email", "ada@example.com"], "");
    assert!(removed.status.success(), "{}", text_of(&removed));
    for backend in [&legacy, &new] {
        let (status, body) = login(backend, "grace@example.com", "compiler first").await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = login(backend, "ada@example.com", "analytical engine").await;
        assert_eq!(status, 401, "a removed user no longer logs in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gone_while_serving_is_a_500_that_tells_nothing() {
    let mut postgres = PostgresServer::start().await;
    let (env, config) = env_on(&postgres);
    let added = users(
        &config,
        &["add", "--email", "ada@example.com", "--name", "Ada"],
        "analytical engine\n",
    );
    assert!(added.status.success(), "{}", text_of(&added));
    let legacy = legacy_backend::testing::start(&env).await;
    let new = new_backend::testing::start(&env).await;
    assert_eq!(
        login(&new, "ada@example.com", "analytical engine").await.0,
        200
    );

    postgres.stop();
    for backend in [&legacy, &new] {
        let (status, body) = login(backend, "ada@example.com", "analytical engine").await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(
            body,
            json!({"error": {"code": "INTERNAL", "message": "internal error"}})
        );
    }
}
