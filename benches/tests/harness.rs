//! The benchmark harness in quick mode, against the debug builds of this workspace: it must
//! start everything, send requests to every configuration, and write its report.
//! It asserts that the harness ran and counted, never a timing.

use std::path::PathBuf;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_mode_measures_every_configuration_and_writes_the_report() {
    // The servers run as separate processes (their CPU is read from /proc), so build them
    // in this test's profile first; after `cargo test --workspace` this only links.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "-p",
            "legacy-backend",
            "-p",
            "new-backend",
            "-p",
            "proxy",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the servers failed");
    let bin_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    let out = tempfile::tempdir().expect("temporary folder");
    let outcome = benches::run(
        benches::Settings::quick(),
        &bin_dir,
        out.path(),
        "test".into(),
    )
    .await
    .expect("the quick benchmark runs");
    assert!(
        outcome.configurations >= 6,
        "{} configurations",
        outcome.configurations
    );
    assert!(
        outcome.total_requests > 100,
        "{} requests",
        outcome.total_requests
    );
    let report = std::fs::read_to_string(&outcome.results_file).expect("results.md");
    for expected in [
        "legacy direct",
        "new direct",
        "proxy → legacy (0 %)",
        "proxy at 50 %",
        "proxy at 50 %, rollout judging",
        "/api/auth/login",
        "Verify under a login flood",
    ] {
        assert!(report.contains(expected), "results.md lacks {expected}");
    }
    let svg = std::fs::read_to_string(&outcome.plot_file).expect("latency.svg");
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );
}
