//! Black-box tests of the `iris` binary: the console, the orphan guard, and config errors.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use common::{IRIS, assert_contains, processes_with_marker, reap_children, wait_for};

/// A config file with teams run by the fake agent.
fn write_config(
    dir: &std::path::Path,
    marker: &str,
    teams: &[&str],
    knobs: &str,
) -> std::path::PathBuf {
    let mut yaml =
        String::from("settings:\n  stopGracePeriod: 300ms\n  maxProcesses: 4\n  claudePath: ");
    yaml.push_str(common::FAKE_AGENT);
    yaml.push_str("\nteams:\n");
    for team in teams {
        let path = dir.join(team);
        std::fs::create_dir_all(&path).unwrap();
        let state = dir.join("state").join(team);
        std::fs::create_dir_all(&state).unwrap();
        yaml.push_str(&format!(
            "  {team}:\n    path: {}\n    grantPermission: yes\n    env:\n      FAKE_AGENT_STATE_DIR: {}\n      FAKE_AGENT_MARKER: {marker}\n{knobs}",
            path.display(),
            state.display()
        ));
    }
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

fn iris(config: &std::path::Path, home: &std::path::Path) -> Command {
    let mut command = Command::new(IRIS);
    command
        .env("IRIS_CONFIG_PATH", config)
        .env("IRIS_HOME", home)
        .env_remove("RUST_LOG");
    command
}

struct Console {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Console {
    fn drop(&mut self) {
        // A test that failed half-way must not leave its Iris running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Console {
    fn start(config: &std::path::Path, home: &std::path::Path) -> Self {
        let mut child = iris(config, home)
            .arg("console")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin: Some(stdin),
            stdout,
        }
    }

    fn request(&mut self, request: &serde_json::Value) -> serde_json::Value {
        let stdin = self.stdin.as_mut().expect("console input open");
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("bad console output {line:?}: {error}"))
    }
}

#[test]
fn console_answers_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-cli-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker, &["backend"], "");
    let mut console = Console::start(&config, dir.path());
    let answer = console.request(&serde_json::json!({"id": 1, "op": "send", "from": "frontend", "to": "backend", "message": "hi"}));
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["outcome"]["result"]["answer"], "fake answer #1: hi");
    let answer = console.request(&serde_json::json!({"id": 2, "op": "send", "from": "frontend", "to": "nope", "message": "hi"}));
    assert_eq!(answer["ok"], false);
    assert_contains(
        answer["error"].as_str().unwrap(),
        "unknown team 'nope'; known teams: backend",
    );
    let answer = console.request(&serde_json::json!({"id": 3, "op": "launch"}));
    assert_contains(
        answer["error"].as_str().unwrap(),
        "bad request: unknown variant `launch`",
    );
    writeln!(console.stdin.as_mut().unwrap(), "not json").unwrap();
    let answer = console.request(&serde_json::json!({"id": 4, "op": "status"}));
    // The bad line got its own error answer first.
    assert_eq!(answer["ok"], false);
    let answer = {
        let mut line = String::new();
        console.stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(answer["id"], 4);
    assert_eq!(answer["status"]["live"], 1);
    console.stdin.take();
    let status = console.child.wait().unwrap();
    assert!(status.success());
    wait_for_no_processes(&marker);
}

fn wait_for_no_processes(marker: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(wait_for("no agent process left", || {
        reap_children();
        processes_with_marker(marker, true).is_empty()
    }));
}

#[test]
fn sigkill_of_iris_leaves_no_agent_process_behind() {
    // As subreaper, this test adopts the orphans, so it can check that none is left even as
    // a zombie (it reaps them), instead of leaving them to a PID 1 that may never reap.
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-kill-{}", uuid::Uuid::new_v4());
    let knobs = "      FAKE_AGENT_IGNORE_SIGTERM: \"1\"\n      FAKE_AGENT_GRANDCHILDREN: \"2\"\n";
    let config = write_config(dir.path(), &marker, &["a", "b", "c"], knobs);
    let mut console = Console::start(&config, dir.path());
    let woken = console.request(&serde_json::json!({"id": 1, "op": "wake_all", "from": "caller"}));
    assert_eq!(woken["ok"], true, "{woken}");
    for team in woken["teams"].as_array().unwrap() {
        assert_eq!(team["status"], "awake", "{team}");
    }
    // A turn in flight that ignores stdin close and interrupts, with a grandchild of its own.
    let answer = console.request(&serde_json::json!({"id": 2, "op": "send", "from": "caller", "to": "a", "message": "[[grandchild]]"}));
    assert_eq!(answer["ok"], true, "{answer}");
    writeln!(console.stdin.as_mut().unwrap(), "{}", serde_json::json!({"id": 3, "op": "send", "from": "caller", "to": "b", "message": "[[hang]]"})).unwrap();
    console.stdin.as_mut().unwrap().flush().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 3 agents x (1 + 2 grandchildren) + 1 extra grandchild.
    runtime.block_on(wait_for("agents running", || {
        processes_with_marker(&marker, false).len() >= 10
    }));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(console.child.id().cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
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
    let output = iris(&config, dir.path()).arg("check").output().unwrap();
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
    let output = Command::new(IRIS)
        .env_remove("IRIS_CONFIG_PATH")
        .env("IRIS_HOME", dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_contains(
        &stdout,
        "no configuration file; running on embedded defaults with no teams",
    );
    assert_contains(&stdout, "teams:");
    let output = Command::new(IRIS)
        .args(["check", "--json"])
        .env_remove("IRIS_CONFIG_PATH")
        .env("IRIS_HOME", dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["teams"], serde_json::json!([]));
    assert_eq!(json["maxProcesses"], 10);
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

fn user_lines_containing(log: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["event"] == "stdin")
        .filter(|entry| {
            entry["line"]
                .as_str()
                .is_some_and(|line| line.contains("\"type\":\"user\"") && line.contains(needle))
        })
        .count()
}

#[test]
fn after_kill_9_queued_tells_are_delivered_once_and_the_running_one_is_interrupted() {
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-restart-{}", uuid::Uuid::new_v4());
    let log = dir.path().join("agent.log");
    let knobs = format!("      FAKE_AGENT_LOG: {}\n", log.display());
    let config = write_config(dir.path(), &marker, &["backend"], &knobs);
    let mut console = Console::start(&config, dir.path());
    let tell = |console: &mut Console, text: &str| {
        let answer = console.request(&serde_json::json!({"op": "tell", "from": "frontend", "to": "backend", "message": text}));
        assert_eq!(answer["ok"], true, "{answer}");
        answer["messageId"].as_str().unwrap().to_owned()
    };
    let running = tell(&mut console, "[[slow:600000]] long");
    let first = tell(&mut console, "queued one");
    let second = tell(&mut console, "queued two");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(wait_for("long message running", || {
        user_lines_containing(&log, "long") == 1
    }));
    sigkill(console.child.id());
    console.child.wait().unwrap();
    wait_for_no_processes(&marker);

    let mut console = Console::start(&config, dir.path());
    for id in [&first, &second] {
        let answer = console
            .request(&serde_json::json!({"op": "message", "messageId": id, "waitMs": 60000}));
        assert_eq!(answer["message"]["state"], "completed", "{answer}");
    }
    let answer = console.request(&serde_json::json!({"op": "message", "messageId": running}));
    assert_eq!(answer["message"]["state"], "interrupted", "{answer}");
    assert_contains(answer["message"]["error"].as_str().unwrap(), "not re-run");
    assert_eq!(user_lines_containing(&log, "queued one"), 1);
    assert_eq!(user_lines_containing(&log, "queued two"), 1);
    assert_eq!(user_lines_containing(&log, "long"), 1);
    let answer = console.request(&serde_json::json!({"op": "message", "messageId": "not-an-id"}));
    assert_contains(
        answer["error"].as_str().unwrap(),
        "no message with id not-an-id",
    );
    console.stdin.take();
    assert!(console.child.wait().unwrap().success());
    wait_for_no_processes(&marker);
}

#[test]
fn a_restarted_iris_stops_agents_a_dead_iris_and_guard_left_behind() {
    iris::process::become_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-leftover-{}", uuid::Uuid::new_v4());
    // Agents that ignore SIGTERM (so the parent-death signal alone does not end them).
    let knobs = "      FAKE_AGENT_IGNORE_SIGTERM: \"1\"\n      FAKE_AGENT_GRANDCHILDREN: \"1\"\n";
    let config = write_config(dir.path(), &marker, &["a", "b"], knobs);
    let mut console = Console::start(&config, dir.path());
    let woken = console.request(&serde_json::json!({"op": "wake_all", "from": "caller"}));
    assert_eq!(woken["ok"], true, "{woken}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(wait_for("agents running", || {
        processes_with_marker(&marker, false).len() >= 4
    }));
    // Kill the guard first (the child of this iris running `iris guard`), then iris.
    let guard = children(console.child.id())
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|&byte| byte == 0)
                .any(|arg| arg == b"guard")
        })
        .expect("guard process");
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
    let mut console = Console::start(&config, dir.path());
    let status = console.request(&serde_json::json!({"op": "status"}));
    assert_eq!(status["ok"], true);
    wait_for_no_processes(&marker);
    console.stdin.take();
    assert!(console.child.wait().unwrap().success());
}

#[test]
fn a_corrupt_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-corrupt-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker, &["backend"], "");
    let database = dir.path().join("data").join("iris.db");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    let garbage = b"this is not a sqlite database, but somebody's data".repeat(100);
    std::fs::write(&database, &garbage).unwrap();
    let output = iris(&config, dir.path())
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
    let config = write_config(dir.path(), &marker, &["backend"], "");
    let output = iris(&config, dir.path())
        .args(["fork", "backend", "--from", "frontend"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "frontend has no conversation with backend yet",
    );
    let output = iris(&config, dir.path())
        .args(["fork", "nope", "--from", "frontend"])
        .output()
        .unwrap();
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "unknown team 'nope'; known teams: backend",
    );

    let mut console = Console::start(&config, dir.path());
    let answer = console.request(
        &serde_json::json!({"op": "send", "from": "frontend", "to": "backend", "message": "hi"}),
    );
    let session = answer["outcome"]["session_id"].as_str().unwrap().to_owned();
    // While that Iris runs, fork reads the same database.
    let output = iris(&config, dir.path())
        .args(["fork", "backend", "--from", "frontend"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8_lossy(&output.stdout);
    assert_contains(&line, &format!("--resume={session} --fork-session"));
    assert_contains(
        &line,
        &format!("cd {}", dir.path().join("backend").display()),
    );
    let forked =
        console.request(&serde_json::json!({"op": "fork", "from": "frontend", "to": "backend"}));
    assert_eq!(forked["command"].as_str().unwrap().trim(), line.trim());
    console.stdin.take();
    assert!(console.child.wait().unwrap().success());
    wait_for_no_processes(&marker);
}

/// `iris serve --port 0` on `config`; returns the child and its port.
fn serve(config: &std::path::Path, home: &std::path::Path) -> (common::ChildGuard, u16) {
    let mut server = iris(config, home)
        .args(["serve", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "iris serve ended before listening"
        );
        if let Some(rest) = line.split("serving MCP on http://127.0.0.1:").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});
    (common::ChildGuard(server), port)
}

#[test]
fn status_ask_tell_and_doctor_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-cli-serve-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker, &["backend"], "");
    let (mut server, port) = serve(&config, dir.path());
    let port_text = port.to_string();
    let run = |args: &[&str]| {
        let mut command = iris(&config, dir.path());
        command.args(args).args(["--port", &port_text]);
        command.output().unwrap()
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
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["pairs"][0]["pair"]["target"], "backend");

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
    let output = iris(&doctor_config, dir.path())
        .arg("doctor")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert_contains(&report, "2.1.332 (Claude Code)");
    assert_contains(&report, "ok   team backend");
    assert_contains(&report, &format!("an Iris serves on port {port}"));

    assert!(server.terminate().success());
    wait_for_no_processes(&marker);

    let output = iris(&config, dir.path())
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
    let output = iris(&config, dir.path()).arg("doctor").output().unwrap();
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    assert_contains(
        &report,
        "FAIL claude (settings.claudePath): '/nonexistent/claude' not found",
    );
}

#[test]
fn init_add_team_and_remove_team_work_on_a_fresh_machine() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let iris_here = |args: &[&str]| {
        Command::new(IRIS)
            .args(args)
            .env_remove("IRIS_CONFIG_PATH")
            .env("IRIS_HOME", home.path())
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
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["teams"][0]["name"], "backend");
    assert_eq!(json["teams"][0]["description"], "The API");
    assert_eq!(
        json["teams"][0]["path"].as_str().unwrap(),
        std::fs::canonicalize(project.path())
            .unwrap()
            .to_str()
            .unwrap()
    );
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
        Command::new(IRIS)
            .args(args)
            .env_remove("IRIS_CONFIG_PATH")
            .env("IRIS_HOME", dir.path())
            .env("CLAUDE_CONFIG_DIR", dir.path())
            .output()
            .unwrap()
    };
    let output = run(&["install", "--no-claude"]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&claude_json).unwrap()).unwrap();
    assert_eq!(
        value["mcpServers"]["iris"],
        serde_json::json!({"type": "http", "url": "http://127.0.0.1:1615/mcp"})
    );
    assert_eq!(value["mcpServers"]["other"]["command"], "x");
    assert_eq!(value["numStartups"], 3);
    let output = run(&["uninstall", "--no-claude"]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&claude_json).unwrap()).unwrap();
    assert!(value["mcpServers"].get("iris").is_none());
    assert_eq!(value["mcpServers"]["other"]["command"], "x");
    let output = run(&["uninstall", "--no-claude"]);
    assert_contains(
        &String::from_utf8_lossy(&output.stdout),
        "Iris was not registered",
    );
}
