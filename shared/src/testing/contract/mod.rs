//! The contract of `docs/API.md` as executable cases, written once and run against each
//! backend by `contract_tests!`. Each case asserts status, the contract's headers and the
//! exact JSON.
//!
//! One file per endpoint or concern, as mini-redis keeps one file per command; this one holds
//! the macro and the assertions they share.

pub mod attacks;
pub mod flood;
pub mod generate;
pub mod login;
pub mod routing;
pub mod shadow;
pub mod throttle;
pub mod verify;

use serde_json::{Value, json};

use super::client::{Answer, post_json};
use crate::routes::LOGIN;

/// Generates one `#[tokio::test]` per contract case, each against a fresh server that
/// `$start(&TestEnv) -> TestServer` starts: `contract_tests!(start)` against a backend,
/// `contract_tests!(start, through_proxy)` when `start` puts the proxy in front of it.
///
/// The `@each` arm holds the one list of cases, `module::case`, each run in `TestEnv::new()`
/// unless `in env` names a function of its module that makes its environment. A case marked
/// `[backend_only]` speaks to a backend as only the proxy may (a signed shadow request, which
/// the proxy strips from its clients' requests), so `through_proxy` leaves it out. The list
/// feeds both the tests (`@tests`) and [`CASES`] (`@names`), and a unit test below checks it
/// against every `pub async fn` in this folder, so a new case cannot be left out.
#[macro_export]
macro_rules! contract_tests {
    ($start:path) => {
        $crate::contract_tests! { @each tests [$start] }
    };
    ($start:path, through_proxy) => {
        $crate::contract_tests! { @each tests [$start, through_proxy] }
    };
    (@each $mode:ident [$($arg:tt)*]) => {
        $crate::contract_tests! { @$mode [$($arg)*]
            routing::health_names_the_backend,
            routing::request_id_is_kept_or_generated,
            routing::unknown_route_is_404,
            routing::wrong_method_is_405_with_allow,
            routing::metrics_are_prometheus_text,
            routing::openapi_document_is_served,
            routing::frontend_page_is_served,
            login::login_succeeds,
            login::login_email_is_case_insensitive,
            login::login_unknown_email_and_wrong_password_answer_alike,
            login::login_validation_names_each_field,
            login::login_refuses_other_media_types,
            login::login_refuses_oversized_bodies,
            login::login_odd_input_is_a_clear_client_error,
            login::login_lengths_count_characters,
            login::token_verifies_in_an_independent_library,
            throttle::login_throttle_locks_then_unlocks in a_short_window,
            throttle::login_success_resets_the_throttle in a_long_window,
            flood::verify_is_not_starved_by_a_login_flood,
            verify::verify_accepts_the_header,
            verify::verify_accepts_the_body_when_there_is_no_header,
            verify::verify_header_wins_over_body,
            verify::verify_without_token_is_token_missing,
            attacks::verify_refuses_attacks,
            generate::generate_requires_a_token,
            generate::generate_checks_in_contract_order,
            generate::generate_answers_whole,
            generate::generate_is_deterministic_and_honours_max_tokens,
            generate::generate_validation_names_each_field,
            generate::generate_streams_deltas_then_done,
            generate::generate_rate_limit_counts_down_then_429,
            shadow::forged_shadow_headers_are_ignored,
            shadow::shadow_generates_spend_no_budget [backend_only],
            shadow::shadow_logins_leave_the_throttle_alone in a_long_window [backend_only],
            shadow::shadows_are_not_counted_in_metrics in a_long_window [backend_only],
            shadow::shadow_answers_match_normal_ones [backend_only],
        }
    };
    (@tests $how:tt $(
        $module:ident :: $case:ident $(in $env:ident)? $([$only:ident])?
    ),* $(,)?) => {
        $(
            $crate::contract_tests! { @case $how $module $case [$($env)?] $($only)? }
        )*
    };
    (@case [$start:path, through_proxy] $module:ident $case:ident [$($env:ident)?] backend_only) => {};
    (@case [$start:path $(, through_proxy)?] $module:ident $case:ident [$($env:ident)?] $(backend_only)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let env = $crate::contract_tests!(@env $module $($env)?);
            let server = $start(&env).await;
            $crate::testing::contract::$module::$case(&server, &env).await;
        }
    };
    (@names [] $(
        $module:ident :: $case:ident $(in $env:ident)? $([$only:ident])?
    ),* $(,)?) => {
        &[$(concat!(stringify!($module), "::", stringify!($case))),*]
    };
    (@env $module:ident) => {
        $crate::testing::TestEnv::new()
    };
    (@env $module:ident $env:ident) => {
        $crate::testing::contract::$module::$env()
    };
}

/// Every case `contract_tests!` runs, as `module::case`, from the same list as the tests.
pub const CASES: &[&str] = crate::contract_tests! { @each names [] };

fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn validation(details: &[(&str, &str)]) -> Value {
    let message = details
        .iter()
        .map(|(f, m)| format!("{f}: {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let details: Vec<Value> = details
        .iter()
        .map(|(f, m)| json!({"field": f, "message": m}))
        .collect();
    json!({"error": {"code": "VALIDATION_ERROR", "message": message, "details": details}})
}

fn assert_answer(answer: &Answer, status: u16, body: &Value) {
    assert_eq!(answer.status, status, "status of {}", answer.body);
    assert_eq!(&answer.json(), body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

const INVALID_CREDENTIALS: &str = "invalid email or password";
const TOKEN_MISSING: &str = "a bearer token is required";
const TOKEN_INVALID: &str = "the token is invalid";
const TOKEN_EXPIRED: &str = "the token has expired";

fn login_body(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

/// `POST /api/auth/login` with this email and password, as JSON.
async fn login(server: &super::TestServer, email: &str, password: &str) -> Answer {
    post_json(server, LOGIN, &login_body(email, password), None).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::CASES;

    /// `module::name` of every `pub async fn` in the files of this folder: a case is public
    /// (the macro calls it from another crate) and async; helpers are private.
    fn cases_in_source() -> BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testing/contract");
        let mut found = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("the contract folder") {
            let path = entry.expect("a folder entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let module = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("a file name");
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            for line in text.lines() {
                if let Some(rest) = line.trim_start().strip_prefix("pub async fn ") {
                    let name = rest.split(['(', '<']).next().unwrap_or(rest).trim();
                    found.insert(format!("{module}::{name}"));
                }
            }
        }
        found
    }

    #[test]
    fn every_case_in_the_source_is_listed_once_and_every_listed_case_exists() {
        let listed: BTreeSet<String> = CASES.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            listed.len(),
            CASES.len(),
            "a case is listed twice: {CASES:?}"
        );
        let found = cases_in_source();
        let unlisted: Vec<_> = found.difference(&listed).collect();
        let missing: Vec<_> = listed.difference(&found).collect();
        assert!(
            unlisted.is_empty() && missing.is_empty(),
            "contract_tests! must list every `pub async fn` of shared/src/testing/contract \
             (a case lives in a module file, not in mod.rs; helpers are private)\n\
             not listed, so never run: {unlisted:?}\nlisted but not found: {missing:?}"
        );
    }
}
