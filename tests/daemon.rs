//! Many Claude Code sessions, one Iris: `iris serve --stdio` is a bridge to the daemon of its
//! `IRIS_HOME`. Ten bridges starting at once make one daemon, each call attributed to its
//! bridge's directory; a killed daemon is reported and the next call starts a new one; `iris
//! stop` and `iris status`; elicitation crosses the bridge; a daemon stops when idle.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{assert_contains, call, iris_command, typed, wait_for};
use iris::api::{CallerStatus, MessageOutcome};
use iris::pool::PoolStatus;
use rmcp::RoleClient;
#[allow(
    deprecated,
    reason = "log notifications are how the bridge tells a session"
)]
use rmcp::model::LoggingMessageNotificationParam;
use rmcp::model::{
    ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability,
    ErrorData,
};
use rmcp::service::{NotificationContext, RequestContext};
use serde_json::json;

/// The pids of the daemons (`iris serve --daemon`) of `home`.
fn daemons_of(home: &Path) -> Vec<u32> {
    let wanted = format!("IRIS_HOME={}", home.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if !args
            .windows(2)
            .any(|w| w == [b"serve".as_slice(), b"--daemon"])
        {
            continue;
        }
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.contains(") Z") {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|variable| variable == wanted.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// The pid the owner of `home` wrote into its lock.
fn owner_pid(home: &Path) -> Option<u32> {
    std::fs::read_to_string(home.join("run/daemon.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn status(config: &Path, home: &Path) -> PoolStatus {
    let output = iris_command(Some(config), home)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn iris(config: &Path, home: &Path, args: &[&str]) -> String {
    let output = iris_command(Some(config), home)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "iris {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A session's client: keeps the log notifications it gets, answers elicitation with
/// `allow` and keeps the questions.
#[derive(Clone, Default)]
struct Session {
    logs: Arc<Mutex<Vec<String>>>,
    questions: Arc<Mutex<Vec<String>>>,
}

impl rmcp::ClientHandler for Session {
    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.capabilities.elicitation = Some(ElicitationCapability::default());
        info
    }

    #[allow(
        deprecated,
        reason = "log notifications are how the bridge tells a session"
    )]
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let text = params
            .data
            .as_str()
            .map_or_else(|| params.data.to_string(), str::to_owned);
        self.logs.lock().unwrap().push(text);
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = request {
            self.questions.lock().unwrap().push(message);
        }
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"decision": "allow"})))
    }
}

/// Ten sessions in the directories of five teams start at once: exactly one daemon, every
/// bridge connected to it, every call attributed to its directory's team; `iris status`
/// lists them; the daemon stops once the last one leaves (`daemonIdleTimeout: 0s`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sessions_share_one_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let teams = ["t0", "t1", "t2", "t3", "t4"];
    let config = common::write_fake_config(dir.path(), &marker, &teams, "");
    let home = dir.path().join("home");
    // Each team's directory and a directory inside it.
    let sessions: Vec<(PathBuf, &str)> = teams
        .iter()
        .flat_map(|team| {
            let root = dir.path().join(team);
            let inner = root.join("src");
            std::fs::create_dir_all(&inner).unwrap();
            [(root, *team), (inner, *team)]
        })
        .collect();
    let started = sessions.iter().map(|(cwd, _)| {
        let (config, home, cwd) = (config.clone(), home.clone(), cwd.clone());
        tokio::spawn(async move { common::stdio_client(&config, &home, &cwd).await })
    });
    let mut clients = Vec::new();
    for client in futures_util::future::join_all(started).await {
        clients.push(client.unwrap());
    }
    assert_eq!(daemons_of(&home).len(), 1, "one daemon for ten sessions");
    for (client, (_, team)) in clients.iter().zip(&sessions) {
        let other = if *team == "t0" { "t1" } else { "t0" };
        common::assert_caller_is(
            client,
            team,
            other,
            other,
            "the stdio server's working directory",
        )
        .await;
    }
    let listed = status(&config, &home);
    assert_eq!(listed.bridges.len(), 10, "{listed:?}");
    let mut seen: Vec<(String, PathBuf)> = listed
        .bridges
        .iter()
        .map(|bridge| (bridge.team.clone().unwrap(), bridge.cwd.clone()))
        .collect();
    seen.sort();
    let mut expected: Vec<(String, PathBuf)> = sessions
        .iter()
        .map(|(cwd, team)| ((*team).to_owned(), cwd.clone()))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    let table = iris(&config, &home, &["status"]);
    assert_contains(&table, "sessions (iris serve --stdio): 10 connected");
    let line = format!("{:<16} {}", "t3", dir.path().join("t3/src").display());
    assert_contains(&table, &line);

    let daemon = daemons_of(&home)[0];
    for client in clients {
        client.cancel().await.unwrap();
    }
    wait_for("the idle daemon gone", || daemons_of(&home).is_empty()).await;
    assert!(
        !Path::new(&format!("/proc/{daemon}")).exists()
            || std::fs::read_to_string(format!("/proc/{daemon}/stat"))
                .unwrap_or_default()
                .contains(") Z")
    );
    wait_for("its agents stopped", || {
        common::processes_with_marker(&marker, false).is_empty()
    })
    .await;
    assert!(
        !home.join("run/iris.sock").exists(),
        "the socket is removed"
    );
}

/// The daemon killed under a connected session: the session is told, a call in flight is
/// answered with an error, and the next call starts a new daemon (which knows the session:
/// the bridge replays its `initialize`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_daemon_is_reported_and_the_next_call_starts_another() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let session = Session::default();
    let client = common::stdio_client_with(
        session.clone(),
        &config,
        &home,
        &dir.path().join("frontend"),
    )
    .await;
    let first = owner_pid(&home).unwrap();
    assert_eq!(daemons_of(&home), [first]);
    // A call that will not be answered before the daemon dies.
    let peer = client.peer().clone();
    let in_flight = tokio::spawn(async move {
        peer.call_tool(call(
            "send_message",
            json!({"toTeam": "backend", "message": "[[slow:600000]] never", "timeout": 600_000}),
        ))
        .await
    });
    wait_for("the slow turn running", || {
        !common::processes_with_marker(&marker, false).is_empty()
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let failed = in_flight.await.unwrap();
    let error = failed.expect_err("the call in flight fails");
    assert_contains(&error.to_string(), "went away");
    wait_for("the session told", || {
        session
            .logs
            .lock()
            .unwrap()
            .iter()
            .any(|log| log.contains(&format!("the Iris daemon (pid {first}) went away")))
    })
    .await;
    assert_contains(
        &session.logs.lock().unwrap().join("\n"),
        "the next call starts a new one",
    );

    // The next call: a new daemon, the same session (its team still proven).
    let outcome: MessageOutcome = typed(
        &client
            .call_tool(call(
                "send_message",
                json!({"toTeam": "backend", "message": "after the restart"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.from_team.as_str(), "frontend");
    let second = owner_pid(&home).unwrap();
    assert_ne!(first, second);
    assert_eq!(daemons_of(&home), [second]);
    client.cancel().await.unwrap();
    wait_for("the idle daemon gone", || daemons_of(&home).is_empty()).await;
    wait_for("no agent left", || {
        common::processes_with_marker(&marker, false).is_empty()
    })
    .await;
}

/// A daemon whose last session left while a tell it accepted still runs keeps running until
/// the turn is done (`daemonIdleTimeout: 0s` counts from the end of the work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_finishes_its_work_before_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let client = common::stdio_client(&config, &home, &dir.path().join("frontend")).await;
    let told: MessageOutcome = typed(
        &client
            .call_tool(call(
                "quick_message",
                json!({"toTeam": "backend", "message": "[[slow:500]] finish me"}),
            ))
            .await
            .unwrap(),
    );
    client.cancel().await.unwrap();
    wait_for("the daemon gone once its work is done", || {
        daemons_of(&home).is_empty()
    })
    .await;
    // A new session (a new daemon) reads how the tell ended.
    let client = common::stdio_client(&config, &home, &dir.path().join("frontend")).await;
    let view: iris::api::MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"messageId": told.message_id.to_string()}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(view.status, iris::api::CallerStatus::Completed, "{view:?}");
    client.cancel().await.unwrap();
    wait_for("the idle daemon gone", || daemons_of(&home).is_empty()).await;
}

/// `iris stop` stops the daemon a session started (its session is told); `iris stop` with
/// none running says so. A daemon outlives its session while its idle timeout runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iris_stop_stops_the_shared_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    // Outlives its sessions (the test configs say 0s).
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("daemonIdleTimeout: 0s", "daemonIdleTimeout: 30m");
    std::fs::write(&config, text).unwrap();
    let home = dir.path().join("home");
    let session = Session::default();
    let client =
        common::stdio_client_with(session.clone(), &config, &home, &dir.path().join("backend"))
            .await;
    let daemon = owner_pid(&home).unwrap();
    client.cancel().await.unwrap();
    // The session left; the daemon stays, and a new session finds it.
    let again =
        common::stdio_client_with(session.clone(), &config, &home, &dir.path().join("backend"))
            .await;
    assert_eq!(owner_pid(&home), Some(daemon));
    assert_eq!(daemons_of(&home), [daemon]);
    let said = iris(&config, &home, &["stop"]);
    assert_contains(&said, &format!("stopped Iris (pid {daemon})"));
    assert!(daemons_of(&home).is_empty());
    wait_for("the session told", || {
        session
            .logs
            .lock()
            .unwrap()
            .iter()
            .any(|log| log.contains("went away"))
    })
    .await;
    again.cancel().await.unwrap();
    assert_contains(&iris(&config, &home, &["stop"]), "no Iris runs for");
}

/// A `grantPermission: forward` request crosses the bridge: the daemon asks the session's
/// person by elicitation through it, and the answer comes back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elicitation_crosses_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let yaml = common::fake_config_yaml(dir.path(), &marker, &["lead", "backend"], "", &|_| {
        String::new()
    })
    .replace("grantPermission: yes", "grantPermission: forward");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let home = dir.path().join("home");
    let session = Session::default();
    let client =
        common::stdio_client_with(session.clone(), &config, &home, &dir.path().join("lead")).await;
    let outcome: MessageOutcome = typed(
        &client
            .call_tool(call(
                "send_message",
                json!({"toTeam": "backend", "message": r#"[[tool:Bash:{"command":"touch made-by-bridge"}]]"#}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert!(dir.path().join("backend/made-by-bridge").exists());
    let questions = session.questions.lock().unwrap().clone();
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert_contains(&questions[0], "Team 'backend'");
    client.cancel().await.unwrap();
    wait_for("the idle daemon gone", || daemons_of(&home).is_empty()).await;
}

/// The daemon's HTTP port taken by someone else: it serves HTTP on another port and says
/// where, and `iris status` finds it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_port_is_taken_serves_http_elsewhere() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let config = common::write_fake_config(
        dir.path(),
        &marker,
        &["backend"],
        &format!("  httpPort: {port}\n"),
    );
    let home = dir.path().join("home");
    let client = common::stdio_client(&config, &home, &dir.path().join("backend")).await;
    let approver = iris::approver::read_approver_file(&home).unwrap().unwrap();
    assert_ne!(approver.url, format!("http://127.0.0.1:{port}"));
    let listed = status(&config, &home);
    assert_eq!(listed.bridges.len(), 1);
    let log = std::fs::read_to_string(home.join("run/daemon.log")).unwrap();
    assert_contains(
        &log,
        &format!("127.0.0.1:{port} is in use (settings.httpPort)"),
    );
    client.cancel().await.unwrap();
    wait_for("the idle daemon gone", || daemons_of(&home).is_empty()).await;
    drop(taken);
}

/// A session on another configuration file than the running daemon's is refused, saying
/// which and what to do; a daemon that cannot start says why.
#[test]
fn a_session_that_cannot_be_served_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(common::stdio_client(
        &config,
        &home,
        &dir.path().join("backend"),
    ));
    let other = dir.path().join("other.yaml");
    std::fs::copy(&config, &other).unwrap();
    let refused = iris_command(Some(&other), &home)
        .args(["serve", "--stdio"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_contains(&said, "the Iris daemon refused this session");
    assert_contains(&said, &format!("this session asks for {}", other.display()));
    assert_contains(&said, "iris stop");
    runtime.block_on(async { client.cancel().await.unwrap() });
    runtime.block_on(wait_for("the idle daemon gone", || {
        daemons_of(&home).is_empty()
    }));

    // A configuration the daemon cannot start with: the bridge says what it said.
    std::fs::write(&other, "settings:\n  maxProcesses: lots\n").unwrap();
    let failed = iris_command(Some(&other), &home)
        .args(["serve", "--stdio"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let said = String::from_utf8_lossy(&failed.stderr);
    assert_contains(&said, "the Iris daemon did not start");
    assert_contains(&said, "settings.maxProcesses");
    assert!(daemons_of(&home).is_empty());
}

/// `iris install --project` writes the project's `.mcp.json` with the stdio command (and the
/// IRIS_HOME of this shell), keeping other servers.
#[test]
fn install_project_writes_the_stdio_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-daemon-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let project = dir.path().join("backend");
    std::fs::write(
        project.join(".mcp.json"),
        r#"{"mcpServers":{"db":{"command":"db-mcp"}}}"#,
    )
    .unwrap();
    let output = iris_command(Some(&config), &home)
        .args(["install", "--project"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_contains(&String::from_utf8_lossy(&output.stdout), "(project scope)");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.join(".mcp.json")).unwrap()).unwrap();
    assert_eq!(written["mcpServers"]["db"]["command"], "db-mcp");
    let iris_entry = &written["mcpServers"]["iris"];
    assert_eq!(iris_entry["command"], common::IRIS);
    assert_eq!(iris_entry["args"], json!(["serve", "--stdio"]));
    assert_eq!(iris_entry["env"]["IRIS_HOME"], home.display().to_string());
    assert_eq!(
        iris_entry["env"]["IRIS_CONFIG_PATH"],
        config.display().to_string()
    );
}
