//! The benchmark harness in quick mode, against the debug builds of this workspace: it must
//! start everything, send requests to every configuration, and write its report.
//! It asserts that the harness ran and counted, never a timing. With wrk installed it drives
//! the generator check and the pinned scenario; without (as in CI), the harness's own
//! generator stands in and the report says so.

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
            "-p",
            "benches",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the servers failed");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let bin_dir = target_dir.join("debug");
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
        "Pingora alone, no filters → legacy",
        "/api/auth/login",
        "Verify under a login flood",
        "## Targets (issue 12)",
        "front CPU µs/req (user + sys)",
        "## Pinned: generate",
        "| legacy | `/api/ai/generate` |",
        "| new | `/api/auth/verify` |",
        "## Generator check",
    ] {
        assert!(report.contains(expected), "results.md lacks {expected}");
    }
    let with_wrk = benches::wrk::Wrk::find().is_some();
    assert_eq!(
        report.contains("wrk is not installed"),
        !with_wrk,
        "the report must say when wrk is absent, and only then:\n{report}"
    );
    if with_wrk {
        assert!(
            report.contains("| `/health` | 8 |"),
            "the generator check has no /health row:\n{report}"
        );
    }
    // Every run of every table was answered: "errors / requests" is "0 / N" with N > 0.
    let counts: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("| "))
        .flat_map(|line| line.split(" | "))
        .filter(|cell| cell.contains(" / ") && cell.split(" / ").all(|n| n.parse::<u64>().is_ok()))
        .collect();
    assert!(counts.len() > 60, "{} runs in the report", counts.len());
    for cell in counts {
        let (errors, requests) = cell.split_once(" / ").unwrap_or_default();
        assert_eq!(errors, "0", "a run had errors:\n{report}");
        assert_ne!(requests, "0", "a run sent nothing:\n{report}");
    }
    let svg = std::fs::read_to_string(&outcome.plot_file).expect("latency.svg");
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );
}
