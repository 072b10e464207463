//! The MCP surface through a third-party client: the official MCP inspector's command line
//! (`@modelcontextprotocol/inspector-cli`, pinned, installed into `.tools/node` by
//! `scripts/install-node-tools`), over Streamable HTTP and over stdio, against the real
//! `iris serve` with fake agents. Fails, never skips, when the inspector is not installed.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    IRIS, fake_teams_config, node_tool, processes_with_marker, serve_http, typed, wait_for,
};
use iris::api::{CallerStatus, MessageOutcome, TeamList};
use rmcp::model::{CallToolResult, ListToolsResult};
use serde::de::DeserializeOwned;

/// The inspector's `build/` directory. Its `index.js` is the non-interactive CLI; it finds its
/// own `package.json` as `../package.json` relative to the *working directory*, so it must run
/// with this directory as its cwd (its `mcp-inspector-cli` launcher does not).
fn inspector_build() -> PathBuf {
    let build = node_tool("@modelcontextprotocol/inspector-cli/build");
    node_tool("@modelcontextprotocol/inspector-cli/build/index.js");
    build
}

/// What the inspector is pointed at.
enum Target {
    /// A Streamable HTTP URL.
    Http(String),
    /// `iris serve --stdio`, started by the inspector with this environment.
    Stdio { config: PathBuf, home: PathBuf },
}

/// Runs `node build/index.js <target> <args>` and reads its stdout (the MCP result as JSON)
/// as `T`.
async fn inspector<T: DeserializeOwned>(target: &Target, args: &[&str], marker: &str) -> T {
    let build = inspector_build();
    let mut command = tokio::process::Command::new(common::node_22());
    command
        .arg(build.join("index.js"))
        .current_dir(&build)
        .env_remove("RUST_LOG")
        // Carried by node and by the `iris serve --stdio` it starts, so the test can see
        // that they are gone afterwards.
        .env("FAKE_AGENT_MARKER", marker)
        .kill_on_drop(true);
    match target {
        Target::Http(url) => {
            command.arg(url).args(args);
        }
        Target::Stdio { config, home } => {
            command
                .arg(IRIS)
                .args(args)
                .args(["--", "serve", "--stdio"])
                .env("IRIS_CONFIG_PATH", config)
                .env("IRIS_HOME", home);
        }
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("the inspector did not finish within 120 s: {args:?}"))
        .unwrap_or_else(|error| {
            panic!("cannot run `node` (Node.js must be on PATH for the MCP inspector): {error}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the inspector failed ({}) for {args:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("the inspector printed no result of the expected type ({error}): {stdout}")
    })
}

/// `tools/list`, `tools/call list_teams` and `tools/call send_message`, each one inspector run
/// (one MCP session) against the target `target` gives.
async fn exercise(mut target: impl FnMut() -> Target, marker: &str) {
    let listed: ListToolsResult = inspector(&target(), &["--method", "tools/list"], marker).await;
    let mut names: Vec<&str> = listed.tools.iter().map(|tool| tool.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, common::TOOL_NAMES);
    for tool in &listed.tools {
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&serde_json::json!("object")),
            "{tool:?}"
        );
        assert!(
            tool.description
                .as_deref()
                .is_some_and(|text| !text.is_empty())
        );
    }

    let teams: CallToolResult = inspector(
        &target(),
        &["--method", "tools/call", "--tool-name", "list_teams"],
        marker,
    )
    .await;
    assert_eq!(teams.is_error, Some(false), "{teams:?}");
    let teams: TeamList = typed(&teams);
    assert_eq!(teams.total_teams, 2, "{teams:?}");
    let names: Vec<&str> = teams.teams.iter().map(|team| team.name.as_str()).collect();
    assert_eq!(names, ["backend", "frontend"]);

    let sent: CallToolResult = inspector(
        &target(),
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "send_message",
            "--tool-arg",
            "fromTeam=frontend",
            "toTeam=backend",
            "message=hello from the inspector",
        ],
        marker,
    )
    .await;
    assert_eq!(sent.is_error, Some(false), "{sent:?}");
    let body: MessageOutcome = typed(&sent);
    assert_eq!(body.status, CallerStatus::Completed, "{sent:?}");
    assert_eq!(
        body.answer.as_deref(),
        Some("fake answer #1: hello from the inspector")
    );
    // The text content carries the same result, for clients that read only text.
    let text = &sent.content[0].as_text().unwrap().text;
    assert!(
        text.contains("fake answer #1: hello from the inspector"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_over_http() {
    inspector_build();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-inspector-http-{}", uuid::Uuid::new_v4());
    let config = fake_teams_config(dir.path(), &marker);
    let (mut server, url) = serve_http(&config, dir.path());
    exercise(|| Target::Http(url.clone()), &marker).await;
    assert!(server.terminate().success());
    wait_for("agents and inspector processes gone", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_over_stdio() {
    inspector_build();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-inspector-stdio-{}", uuid::Uuid::new_v4());
    let config = fake_teams_config(dir.path(), &marker);
    // Each inspector run starts its own `iris serve --stdio`; each gets a fresh IRIS_HOME so
    // no run waits for the previous one's database lock (one Iris per database).
    let root = dir.path().to_owned();
    exercise(
        || {
            let home = root.join(uuid::Uuid::new_v4().to_string());
            std::fs::create_dir_all(&home).unwrap();
            Target::Stdio {
                config: config.clone(),
                home,
            }
        },
        &marker,
    )
    .await;
    // The inspector closes the server's stdin when it is done; the server stops its agents.
    wait_for("iris serve --stdio and its agents gone", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}
