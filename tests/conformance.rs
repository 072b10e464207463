//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned, installed
//! into `.tools/node` by `scripts/install-node-tools`) against `iris serve` over Streamable
//! HTTP. Its active server suite runs with `tests/conformance-baseline.yml`, which lists the
//! scenarios Iris is expected to fail and why: an unlisted failure fails this test, and so
//! does a listed scenario that starts passing. It talks only to the server on 127.0.0.1.
//! Fails, never skips, when the suite or a Node.js 22 is not installed.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{fake_teams_config, node_tool, processes_with_marker, serve_http, wait_for};

/// Scenarios Iris passes; each must show as passed in the summary.
const PASSING: [&str; 5] = [
    "server-initialize",
    "ping",
    "tools-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_http() {
    let suite = node_tool("@modelcontextprotocol/conformance/dist/index.js");
    let node = common::node_22();
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-baseline.yml");
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-conformance-{}", uuid::Uuid::new_v4());
    let config = fake_teams_config(dir.path(), &marker);
    let (mut server, url) = serve_http(&config, dir.path());
    let results = dir.path().join("results");

    let run = tokio::process::Command::new(&node)
        .arg(&suite)
        .args(["server", "--url", &url, "--expected-failures"])
        .arg(&baseline)
        .arg("--output-dir")
        .arg(&results)
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the conformance suite did not finish within 150 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the conformance suite found unexpected results ({}); update tests/conformance-baseline.yml only for an intended change\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    for scenario in PASSING {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("✓ {scenario}: "))),
            "scenario {scenario} did not pass:\n{stdout}"
        );
    }

    assert!(server.terminate().success());
    wait_for("agents stopped", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}
