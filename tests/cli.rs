//! Black-box tests of the `iris` binary: the console, the orphan guard, and config errors.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{
    Console, Server, assert_contains, fake_config_yaml, iris_command, processes_with_marker,
    reap_children, wait_for_blocking, wait_for_no_processes, write_fake_config,
};
use iris::api::{MessageOutcome, WakeAll, WakeStatus};
use iris::console::{Answer, Forked, Message, Refused, Sent, Status};
use iris::pool::PoolStatus;
use iris::store::MessageState;
use serde_json::json;

/// The settings of every config here (`iris status` shows the bound).
const SETTINGS: &str = "  maxProcesses: 4\n";

/// `dir/config.yaml` with `teams` on the fake agent, each with `env_lines` (more `env`
/// entries, indented six spaces) at the end of its block.
fn write_config_with_env(dir: &Path, marker: &str, teams: &[&str], env_lines: &str) -> PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        fake_config_yaml(dir, marker, teams, SETTINGS, &|_| env_lines.to_owned()),
    )
    .unwrap();
    file
}

/// An answer line read as `T` (failing with the line itself when it is not one).
fn answer<T: serde::de::DeserializeOwned>(line: serde_json::Value) -> Answer<T> {
    serde_json::from_value(line.clone())
        .unwrap_or_else(|error| panic!("unexpected console answer ({error}): {line}"))
}

#[test]
fn console_answers_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-cli-{}", uuid::Uuid::new_v4());
    let config = write_fake_config(dir.path(), &marker, &["backend"], SETTINGS);
    let mut console = Console::start(Some(&config), dir.path(), false);
    let sent: Answer<Sent> = answer(console.request(
        json!({"id": 1, "op": "send", "from": "frontend", "to": "backend", "message": "hi"}),
    ));
    assert_eq!(sent.id, 1);
    assert!(sent.ok);
    assert_eq!(sent.body.outcome.result.answer, "fake answer #1: hi");
    let error = console
        .refused(json!({"id": 2, "op": "send", "from": "frontend", "to": "nope", "message": "hi"}));
    assert_contains(&error, "unknown team 'nope'; known teams: backend");
    // A request that does not parse is refused with no id (it has none to echo).
    console.write_line(&json!({"id": 3, "op": "launch"}).to_string());
    let unknown: Answer<Refused> = answer(console.next_answer());
    assert!(!unknown.ok && unknown.id.is_null(), "{unknown:?}");
    assert_contains(&unknown.body.error, "bad request: unknown variant `launch`");
    console.write_line("not json");
    console.write_line(&json!({"id": 4, "op": "status"}).to_string());
    // The bad line got its own error answer first.
    let bad: Answer<Refused> = answer(console.next_answer());
    assert!(!bad.ok && bad.id.is_null(), "{bad:?}");
    let status: Answer<Status> = answer(console.next_answer());
    assert_eq!(status.id, 4);
    assert_eq!(status.body.status.live, 1);
    console.stop();
    wait_for_no_processes(&marker);
}

#[test]
fn sigkill_of_iris_leaves_no_agent_process_behind() {
    // As subreaper, this test adopts the orphans, so it can check that none is left even as
    // a zombie (it reaps them), instead of leaving them to a PID 1 that may never reap.
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-kill-{}", uuid::Uuid::new_v4());
    let knobs = "      FAKE_AGENT_IGNORE_SIGTERM: \"1\"\n      FAKE_AGENT_GRANDCHILDREN: \"2\"\n";
    let config = write_config_with_env(dir.path(), &marker, &["a", "b", "c"], knobs);
    let mut console = Console::start(Some(&config), dir.path(), false);
    let woken: WakeAll = console.ok(json!({"op": "wake_all", "from": "caller"}));
    for team in &woken.teams {
        assert_eq!(team.status, WakeStatus::Awake, "{team:?}");
    }
    // A turn in flight that ignores stdin close and interrupts, with a grandchild of its own.
    let _: Sent =
        console.ok(json!({"op": "send", "from": "caller", "to": "a", "message": "[[grandchild]]"}));
    console.write_line(
        &json!({"id": "hang", "op": "send", "from": "caller", "to": "b", "message": "[[hang]]"})
            .to_string(),
    );
    // 3 agents x (1 + 2 grandchildren) + 1 extra grandchild.
    wait_for_blocking("agents running", || {
        processes_with_marker(&marker, false).len() >= 10
    });

    sigkill(console.child.id());
    console.child.wait().unwrap();
    wait_for_no_processes(&marker);
}

#[test]
fn bad_config_is_reported_with_file_key_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "settings:\n  maxProcesess: 3\nteams:\n  backend:\n    path: /definitely/not/here\n",
    )
    .unwrap();
    let output = iris_command(Some(&config), dir.path())
        .arg("check")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_contains(&stderr, &config.display().to_string());
    assert_contains(
        &stderr,
        "settings.maxProcesess: unknown key; did you mean 'maxProcesses'?",
    );
    assert_contains(&stderr, "teams.backend.path");
    assert_contains(&stderr, "/definitely/not/here");
}

#[test]
fn no_config_runs_on_defaults_and_explains_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = iris_command(None, dir.path()).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_contains(
        &stdout,
        "no configuration file; running on embedded defaults with no teams",
    );
    assert_contains(&stdout, "teams:");
    let output = iris_command(None, dir.path())
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: iris::output::CheckReport = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report.teams.is_empty());
    assert_eq!(report.max_processes, 10);
}

/// Children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            list.split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok()),
        );
    }
    found
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn after_kill_9_queued_tells_are_delivered_once_and_the_running_one_is_interrupted() {
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-restart-{}", uuid::Uuid::new_v4());
    let log = dir.path().join("agent.log");
    let knobs = format!("      FAKE_AGENT_LOG: {}\n", log.display());
    let config = write_config_with_env(dir.path(), &marker, &["backend"], &knobs);
    let mut console = Console::start(Some(&config), dir.path(), false);
    let tell = |console: &mut Console, text: &str| {
        let told: MessageOutcome =
            console.ok(json!({"op": "tell", "from": "frontend", "to": "backend", "message": text}));
        told.message_id.to_string()
    };
    let running = tell(&mut console, "[[slow:600000]] long");
    let first = tell(&mut console, "queued one");
    let second = tell(&mut console, "queued two");
    wait_for_blocking("long message running", || {
        common::deliveries(&log, "long") == 1
    });
    sigkill(console.child.id());
    console.child.wait().unwrap();
    wait_for_no_processes(&marker);

    let mut console = Console::start(Some(&config), dir.path(), false);
    for id in [&first, &second] {
        let found: Message = console.ok(json!({"op": "message", "messageId": id, "waitMs": 60000}));
        assert_eq!(found.message.state, MessageState::Completed, "{found:?}");
    }
    let found: Message = console.ok(json!({"op": "message", "messageId": running}));
    assert_eq!(found.message.state, MessageState::Interrupted, "{found:?}");
    assert_contains(found.message.error.as_deref().unwrap(), "not re-run");
    assert_eq!(common::deliveries(&log, "queued one"), 1);
    assert_eq!(common::deliveries(&log, "queued two"), 1);
    assert_eq!(common::deliveries(&log, "long"), 1);
    let error = console.refused(json!({"op": "message", "messageId": "not-an-id"}));
    assert_contains(&error, "no message with id not-an-id");
    console.stop();
    wait_for_no_processes(&marker);
}

#[test]
fn a_restarted_iris_stops_agents_a_dead_iris_and_guard_left_behind() {
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-leftover-{}", uuid::Uuid::new_v4());
    // Agents that ignore SIGTERM (so the parent-death signal alone does not end them).
    let knobs = "      FAKE_AGENT_IGNORE_SIGTERM: \"1\"\n      FAKE_AGENT_GRANDCHILDREN: \"1\"\n";
    let config = write_config_with_env(dir.path(), &marker, &["a", "b"], knobs);
    let mut console = Console::start(Some(&config), dir.path(), false);
    let _: WakeAll = console.ok(json!({"op": "wake_all", "from": "caller"}));
    wait_for_blocking("agents running", || {
        processes_with_marker(&marker, false).len() >= 4
    });
    // Both die at once: iris frozen first (so it cannot start a new guard), the guard killed,
    // then iris.
    let guard = guard_of(console.child.id()).expect("guard process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(console.child.id().cast_signed()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    sigkill(guard);
    sigkill(console.child.id());
    console.child.wait().unwrap();
    // The agents end on their own when their stdin closes (as claude does), but the tools
    // they started (the grandchildren, ignoring SIGTERM) are left behind.
    reap_children();
    assert!(
        processes_with_marker(&marker, false).len() >= 2,
        "the agents' tools should have survived"
    );

    // The next Iris finds them by their recorded process groups and keys, and stops them.
    let mut console = Console::start(Some(&config), dir.path(), false);
    let _: Status = console.ok(json!({"op": "status"}));
    wait_for_no_processes(&marker);
    console.stop();
}

/// The guard process of the iris `pid` (its child running `iris-guard`, or `iris guard`).
fn guard_of(pid: u32) -> Option<u32> {
    children(pid).into_iter().find(|child| {
        std::fs::read(format!("/proc/{child}/cmdline"))
            .unwrap_or_default()
            .split(|&byte| byte == 0)
            .any(|arg| arg == b"guard" || arg.ends_with(b"/iris-guard"))
    })
}

/// A guard killed while Iris runs is replaced at once, and the new one knows the agents: a
/// later `kill -9` of Iris leaves nothing behind, without waiting for a restart.
#[test]
fn a_killed_guard_is_replaced_and_still_stops_the_agents() {
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-guard-again-{}", uuid::Uuid::new_v4());
    let knobs = "      FAKE_AGENT_IGNORE_SIGTERM: \"1\"\n      FAKE_AGENT_GRANDCHILDREN: \"1\"\n";
    let config = write_config_with_env(dir.path(), &marker, &["a", "b"], knobs);
    let mut console = Console::start(Some(&config), dir.path(), false);
    let _: WakeAll = console.ok(json!({"op": "wake_all", "from": "caller"}));
    wait_for_blocking("agents running", || {
        processes_with_marker(&marker, false).len() >= 4
    });
    let first = guard_of(console.child.id()).expect("guard process");
    sigkill(first);
    let mut second = None;
    wait_for_blocking("a new guard", || {
        reap_children();
        second = guard_of(console.child.id()).filter(|pid| *pid != first);
        second.is_some()
    });
    console.logs.wait_for(
        "the new guard registered the agents",
        "a new orphan guard watches the agents",
    );
    sigkill(console.child.id());
    console.child.wait().unwrap();
    // The new guard saw iris die and stopped every group, grandchildren included.
    wait_for_no_processes(&marker);
}

#[test]
fn a_corrupt_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-corrupt-{}", uuid::Uuid::new_v4());
    let config = write_fake_config(dir.path(), &marker, &["backend"], SETTINGS);
    let database = dir.path().join("data").join("iris.db");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    let garbage = b"this is not a sqlite database, but somebody's data".repeat(100);
    std::fs::write(&database, &garbage).unwrap();
    let output = iris_command(Some(&config), dir.path())
        .arg("console")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_contains(&stderr, &database.display().to_string());
    assert_contains(&stderr, "not a valid Iris database");
    assert_eq!(std::fs::read(&database).unwrap(), garbage);
}

#[test]
fn fork_prints_the_command_for_a_pairs_session() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-fork-{}", uuid::Uuid::new_v4());
    let config = write_fake_config(dir.path(), &marker, &["backend"], SETTINGS);
    let fork = |args: &[&str]| {
        iris_command(Some(&config), dir.path())
            .arg("fork")
            .args(args)
            .output()
            .unwrap()
    };
    let output = fork(&["backend", "--from", "frontend"]);
    assert!(!output.status.success());
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "frontend has no conversation with backend yet",
    );
    let output = fork(&["nope", "--from", "frontend"]);
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "unknown team 'nope'; known teams: backend",
    );

    let mut console = Console::start(Some(&config), dir.path(), false);
    let sent: Sent =
        console.ok(json!({"op": "send", "from": "frontend", "to": "backend", "message": "hi"}));
    let session = sent.outcome.session_id;
    // While that Iris runs, fork reads the same database.
    let output = fork(&["backend", "--from", "frontend"]);
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8_lossy(&output.stdout);
    assert_contains(&line, &format!("--resume={session} --fork-session"));
    assert_contains(
        &line,
        &format!("cd {}", dir.path().join("backend").display()),
    );
    let forked: Forked = console.ok(json!({"op": "fork", "from": "frontend", "to": "backend"}));
    assert_eq!(forked.command.trim(), line.trim());
    console.stop();
    wait_for_no_processes(&marker);
}

#[test]
fn status_ask_tell_and_doctor_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-cli-serve-{}", uuid::Uuid::new_v4());
    let config = write_fake_config(dir.path(), &marker, &["backend"], SETTINGS);
    let mut server = Server::start(Some(&config), dir.path());
    let port = server.port();
    let port_text = port.to_string();
    let run = |args: &[&str]| {
        iris_command(Some(&config), dir.path())
            .args(args)
            .args(["--port", &port_text])
            .output()
            .unwrap()
    };

    let output = run(&["ask", "backend", "hello", "--from", "frontend"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "fake answer #1: hello"
    );
    let output = run(&[
        "ask",
        "backend",
        "[[slow:1500]] slow one",
        "--from",
        "frontend",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "fake answer #2: [[slow:1500]] slow one"
    );
    let output = run(&["ask", "nope", "hello"]);
    assert!(!output.status.success());
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "unknown team 'nope'; known teams: backend",
    );
    let output = run(&["tell", "backend", "fyi", "--from", "frontend"]);
    assert!(output.status.success(), "{output:?}");
    assert_contains(
        &String::from_utf8_lossy(&output.stdout),
        "queued for backend: message ",
    );

    let output = run(&["report", "backend", "--from", "frontend", "--limit", "1"]);
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8_lossy(&output.stdout);
    assert_contains(&report, "frontend->backend: session ");
    // Newest first, one message: the tell (its answer may still be on its way).
    assert_contains(&report, "> fyi");
    assert!(!report.contains("slow one"), "limit 1: {report}");

    let output = run(&["status"]);
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert_contains(&table, "processes: 1/4");
    assert_contains(&table, "frontend->backend");
    let output = run(&["status", "--json"]);
    let status: PoolStatus = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status.pairs[0].pair.target.as_str(), "backend");

    // doctor: the fake agent's version, the team, the database, and this server on the port.
    let doctor_config = dir.path().join("doctor.yaml");
    std::fs::write(
        &doctor_config,
        std::fs::read_to_string(&config).unwrap().replacen(
            "settings:\n",
            &format!("settings:\n  httpPort: {port}\n"),
            1,
        ),
    )
    .unwrap();
    let output = iris_command(Some(&doctor_config), dir.path())
        .arg("doctor")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert_contains(&report, "2.1.332 (Claude Code)");
    assert_contains(&report, "ok   team backend");
    assert_contains(
        &report,
        &format!("an Iris serves at http://127.0.0.1:{port}"),
    );

    assert!(server.terminate().success());
    wait_for_no_processes(&marker);

    let output = iris_command(Some(&config), dir.path())
        .args(["status", "--port", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "no Iris answers at http://127.0.0.1:1/status",
    );
}

#[test]
fn doctor_reports_a_missing_claude() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    std::fs::write(
        &config,
        format!(
            "settings:\n  claudePath: /nonexistent/claude\nteams:\n  b:\n    path: {}\n",
            dir.path().join("b").display()
        ),
    )
    .unwrap();
    let output = iris_command(Some(&config), dir.path())
        .arg("doctor")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    assert_contains(
        &report,
        "FAIL claude (settings.claudePath): '/nonexistent/claude' not found",
    );
    // A doctor changes nothing: no database is created, none is migrated.
    let database = dir.path().join("data").join("iris.db");
    assert_contains(
        &report,
        &format!(
            "ok   database: {} does not exist yet: `iris serve` creates it",
            database.display()
        ),
    );
    assert!(!database.exists());
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.db");
    std::fs::copy(&fixture, &database).unwrap();
    let output = iris_command(Some(&config), dir.path())
        .arg("doctor")
        .output()
        .unwrap();
    assert_contains(
        &String::from_utf8_lossy(&output.stdout),
        "(schema 1, migrated at the next start; 1 active sessions)",
    );
    assert_eq!(
        std::fs::read(&database).unwrap(),
        std::fs::read(&fixture).unwrap(),
        "the doctor changed the database"
    );
    let files: Vec<_> = std::fs::read_dir(database.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(files, ["iris.db"], "no WAL or lock file left behind");
}

#[test]
fn init_add_team_and_remove_team_work_on_a_fresh_machine() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let iris_here = |args: &[&str]| {
        iris_command(None, home.path())
            .args(args)
            .current_dir(project.path())
            .output()
            .unwrap()
    };
    let output = iris_here(&["init"]);
    assert!(output.status.success(), "{output:?}");
    let file = home.path().join("config.yaml");
    assert!(file.exists());
    let output = iris_here(&["init"]);
    assert!(!output.status.success());
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "already exists; edit it, or use --force",
    );

    // The current directory is the default path.
    let output = iris_here(&["add-team", "backend", "-d", "The API"]);
    assert!(output.status.success(), "{output:?}");
    let output = iris_here(&["check", "--json"]);
    let report: iris::output::CheckReport = serde_json::from_slice(&output.stdout).unwrap();
    let team = &report.teams[0];
    assert_eq!(team.name, "backend");
    assert_eq!(team.description, "The API");
    assert_eq!(team.path, std::fs::canonicalize(project.path()).unwrap());
    let output = iris_here(&["add-team", "backend"]);
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "team 'backend' already exists",
    );
    let output = iris_here(&["add-team", "a;b"]);
    assert!(!output.status.success());
    let output = iris_here(&["add-team", "other", "/definitely/not/here"]);
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "team directory /definitely/not/here",
    );

    let output = iris_here(&["remove-team", "backend"]);
    assert!(output.status.success(), "{output:?}");
    let output = iris_here(&["remove-team", "backend"]);
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "no team 'backend'",
    );
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("# maxProcesses: 10")
    );
}

#[test]
fn install_and_uninstall_edit_claude_json_keeping_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let claude_json = dir.path().join(".claude.json");
    std::fs::write(
        &claude_json,
        r#"{"numStartups":3,"mcpServers":{"other":{"type":"stdio","command":"x"}},"projects":{}}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        iris_command(None, dir.path())
            .args(args)
            .env("CLAUDE_CONFIG_DIR", dir.path())
            .output()
            .unwrap()
    };
    // `.claude.json` is Claude Code's file, not an Iris type: it is read as raw JSON.
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&claude_json).unwrap()).unwrap()
    };
    let output = run(&["install", "--no-claude"]);
    assert!(output.status.success(), "{output:?}");
    let value = read();
    assert_eq!(
        value["mcpServers"]["iris"],
        json!({"type": "http", "url": "http://127.0.0.1:1615/mcp"})
    );
    assert_eq!(value["mcpServers"]["other"]["command"], "x");
    assert_eq!(value["numStartups"], 3);
    let output = run(&["uninstall", "--no-claude"]);
    assert!(output.status.success(), "{output:?}");
    let value = read();
    assert!(value["mcpServers"].get("iris").is_none());
    assert_eq!(value["mcpServers"]["other"]["command"], "x");
    let output = run(&["uninstall", "--no-claude"]);
    assert_contains(
        &String::from_utf8_lossy(&output.stdout),
        "Iris was not registered",
    );
}

/// `iris report --json | head -c 10`: when the reader closes the pipe, the command ends
/// quietly (exit 0), never with a panic.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    // Nobody reads: every write gets EPIPE.
    drop(reader);
    let child = iris_command(None, dir.path())
        .args(["check", "--json"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}

/// A problem in the config file blocks neither the commands that only talk to a running
/// server (they need its address) nor the edits that do not make it worse: removing a team
/// whose directory is gone, adding another.
#[test]
fn a_config_with_problems_blocks_neither_client_commands_nor_edits() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-cli-broken-{}", uuid::Uuid::new_v4());
    let config = write_fake_config(dir.path(), &marker, &["backend", "gone"], SETTINGS);
    let mut server = Server::start(Some(&config), dir.path());
    // The file goes bad under the running server (which keeps the config it has): a team's
    // directory is deleted.
    std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
    let port = server.port().to_string();
    let run = |args: &[&str]| {
        iris_command(Some(&config), dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let asked = run(&[
        "ask",
        "backend",
        "still there?",
        "--from",
        "me",
        "--port",
        &port,
    ]);
    assert!(asked.status.success(), "{asked:?}");
    assert_contains(
        &String::from_utf8_lossy(&asked.stdout),
        "fake answer #1: still there?",
    );
    assert_contains(
        &String::from_utf8_lossy(&asked.stderr),
        "the configuration has problems; going on with the defaults",
    );
    let status = run(&["status", "--json", "--port", &port]);
    assert!(status.status.success(), "{status:?}");
    let doctor = run(&["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert_contains(&report, "FAIL configuration:");
    assert_contains(&report, "teams.gone.path");
    assert_contains(&report, "database:");
    // Edits that fix the file, or leave its problems as they were, go through.
    let project = tempfile::tempdir().unwrap();
    let added = run(&["add-team", "newteam", project.path().to_str().unwrap()]);
    assert!(added.status.success(), "{added:?}");
    let removed = run(&["remove-team", "gone"]);
    assert!(removed.status.success(), "{removed:?}");
    let check = run(&["check"]);
    assert!(check.status.success(), "{check:?}");
    assert_contains(&String::from_utf8_lossy(&check.stdout), "team newteam:");
    // An edit that adds a problem is still refused.
    let bad = run(&["add-team", "bad/name", project.path().to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(server.terminate().success());
    wait_for_no_processes(&marker);
}
