//! Shared test support: configs that point teams at the fake agent, condition waits, and a
//! process-table scan for leftover processes.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iris::config::{Config, GrantPermission, TeamConfig, TeamName};
use iris::pool::{Pool, PoolEvent, PoolOptions};
use tempfile::TempDir;

pub const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_iris-fake-agent");
pub const IRIS: &str = env!("CARGO_BIN_EXE_iris");

/// The pinned real Claude Code CLI that `scripts/install-claude` installs into
/// `<repo>/.tools/claude` (or its native binary, if the wrapper was not linked). Panics,
/// naming the fix, when it is missing: real-CLI tests never skip silently.
pub fn real_claude() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/claude/node_modules");
    let wrapper = tools.join(".bin/claude");
    if wrapper.is_file() {
        return wrapper;
    }
    let native = tools.join("@anthropic-ai/claude-code-linux-x64/claude");
    if native.is_file() {
        return native;
    }
    panic!(
        "the real Claude Code CLI is not installed at {}: run scripts/install-claude \
         (scripts/test does it before running the tests)",
        wrapper.display()
    );
}

/// A test world: a temp dir holding team directories, agent state, logs and IRIS_HOME.
pub struct World {
    pub dir: TempDir,
    pub config: Config,
    /// A unique token put in every agent's environment, to find its processes.
    pub marker: String,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("iris-home");
        std::fs::create_dir_all(&home).expect("iris home");
        let mut config = Config::defaults(home);
        config.settings.stop_grace_period = Duration::from_millis(500);
        config.settings.spawn_timeout = Duration::from_secs(20);
        config.database.in_memory = true;
        let marker = format!("iris-test-{}", uuid::Uuid::new_v4());
        Self {
            dir,
            config,
            marker,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a team run by the fake agent, with extra environment knobs.
    pub fn team(&mut self, name: &str, knobs: &[(&str, &str)]) -> &mut TeamConfig {
        let path = self.dir.path().join("teams").join(name);
        std::fs::create_dir_all(&path).expect("team dir");
        let path = std::fs::canonicalize(path).expect("canonical");
        let state = self.dir.path().join("agent-state").join(name);
        std::fs::create_dir_all(&state).expect("state dir");
        let mut env = BTreeMap::new();
        env.insert(
            "FAKE_AGENT_STATE_DIR".to_owned(),
            state.display().to_string(),
        );
        env.insert("FAKE_AGENT_MARKER".to_owned(), self.marker.clone());
        env.insert(
            "FAKE_AGENT_LOG".to_owned(),
            self.log_path(name).display().to_string(),
        );
        for (key, value) in knobs {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let team_name = TeamName::new(name).expect("team name");
        let mut team = TeamConfig::new(team_name.clone(), path);
        team.description = format!("test team {name}");
        team.claude_path = Some(FAKE_AGENT.to_owned());
        team.grant_permission = GrantPermission::Yes;
        team.env = env;
        self.config.teams.insert(team_name.clone(), team);
        self.config
            .teams
            .get_mut(&team_name)
            .expect("just inserted")
    }

    pub fn log_path(&self, team: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{team}.log"))
    }

    /// The fake agent's log for `team`: one JSON value per line.
    pub fn log(&self, team: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log_path(team))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The argv of every process started for `team`, in order.
    pub fn starts(&self, team: &str) -> Vec<Vec<String>> {
        self.log(team)
            .into_iter()
            .filter(|entry| entry["event"] == "start")
            .map(|entry| {
                entry["argv"]
                    .as_array()
                    .map(|argv| {
                        argv.iter()
                            .filter_map(|arg| arg.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// A pool on this world's config (an in-memory store unless the test chose a file).
    pub async fn pool(&self) -> Pool {
        Pool::start(Arc::new(self.config.clone()), PoolOptions::default())
            .await
            .expect("pool starts")
    }

    /// Pids of live (non-zombie) processes carrying this world's marker.
    pub fn live_processes(&self) -> Vec<u32> {
        processes_with_marker(&self.marker, false)
    }
}

/// Processes whose environment holds `marker`; zombies are included only if asked.
pub fn processes_with_marker(marker: &str, include_zombies: bool) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let has_marker = environ
            .split(|&byte| byte == 0)
            .any(|var| var == format!("FAKE_AGENT_MARKER={marker}").as_bytes());
        // A zombie's environ is empty; recognise our zombies by their parent's children list
        // instead: the caller reaps them (subreaper) before asking.
        if has_marker && (!zombie || include_zombies) {
            found.push(pid);
        }
    }
    found
}

/// Polls `condition` until it holds, failing the test after a generous deadline. The
/// deadline only bounds a broken test; passing never depends on timing.
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(2);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Receives events until one matches.
pub async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<PoolEvent>,
    what: &str,
    mut matches: impl FnMut(&PoolEvent) -> bool,
) -> PoolEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if matches(&event) => return event,
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(error)) => panic!("event channel closed while waiting for {what}: {error}"),
            Err(_) => panic!("timed out waiting for event: {what}"),
        }
    }
}

/// Zombie processes whose parent is this test process (children nobody reaped).
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let parent = fields.next().and_then(|field| field.parse::<u32>().ok());
        if state == Some("Z") && parent == Some(me) {
            found.push(pid);
        }
    }
    found
}

/// Reaps any exited children of this (subreaper) test process.
pub fn reap_children() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in {haystack:?}"
    );
}

/// A child process that is stopped (SIGTERM, then reaped) when dropped, so a failing test
/// never leaves its server running.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id().cast_signed()),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.0.wait().expect("wait for child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// Like [`wait_for`], for a condition that has to await (a request, say).
pub async fn wait_for_async(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(2);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A config file with teams `backend` and `frontend` on the fake agent, every agent carrying
/// `marker` (see [`processes_with_marker`]).
pub fn fake_teams_config(dir: &Path, marker: &str) -> PathBuf {
    let mut yaml =
        format!("settings:\n  stopGracePeriod: 300ms\n  claudePath: {FAKE_AGENT}\nteams:\n");
    for team in ["backend", "frontend"] {
        let path = dir.join(team);
        std::fs::create_dir_all(&path).unwrap();
        let state = dir.join("state").join(team);
        std::fs::create_dir_all(&state).unwrap();
        yaml.push_str(&format!(
            "  {team}:\n    path: {}\n    description: the {team}\n    grantPermission: yes\n    env:\n      FAKE_AGENT_STATE_DIR: {}\n      FAKE_AGENT_MARKER: {marker}\n",
            path.display(),
            state.display()
        ));
    }
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// Starts `iris serve --port 0` (HTTP) on `config` and `home`; returns the server, stopped
/// when dropped, and its MCP URL (`http://127.0.0.1:PORT/mcp`) once it printed it.
pub fn serve_http(config: &Path, home: &Path) -> (ChildGuard, String) {
    use std::io::BufRead as _;
    let server = std::process::Command::new(IRIS)
        .args(["serve", "--port", "0"])
        .env("IRIS_CONFIG_PATH", config)
        .env("IRIS_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = ChildGuard(server);
    let mut stderr = std::io::BufReader::new(server.0.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "iris serve ended before listening"
        );
        if let Some(rest) = line.split("serving MCP on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep reading stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    (server, url)
}

/// A Node tool installed by `scripts/install-node-tools` under `.tools/node/node_modules`;
/// fails the test, saying how to install it, when it is missing.
pub fn node_tool(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/node/node_modules")
        .join(relative);
    assert!(
        path.exists(),
        "{} is not installed: run scripts/install-node-tools (scripts/test runs it before the tests)",
        path.display()
    );
    path
}

/// A `tools/call` request for `name` with `arguments` (a JSON object).
pub fn call(name: &str, arguments: serde_json::Value) -> rmcp::model::CallToolRequestParams {
    let serde_json::Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    rmcp::model::CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

/// A tool result's structured content (every Iris tool answers with one).
pub fn structured(result: &rmcp::model::CallToolResult) -> serde_json::Value {
    result
        .structured_content
        .clone()
        .expect("structured content")
}

/// Checks that `client`'s connection proves team `team`: a `quick_message` to `to` without
/// `fromTeam` is sent as `team`, and one posing as `posing_as` is refused, naming `proof`.
pub async fn assert_caller_is(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    team: &str,
    to: &str,
    posing_as: &str,
    proof: &str,
) {
    let implicit = structured(
        &client
            .call_tool(call(
                "quick_message",
                serde_json::json!({"toTeam": to, "message": "who am I"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(implicit["fromTeam"], team, "{implicit}");
    let posing = client
        .call_tool(call(
            "quick_message",
            serde_json::json!({"fromTeam": posing_as, "toTeam": to, "message": "x"}),
        ))
        .await
        .unwrap();
    assert_eq!(posing.is_error, Some(true));
    assert_contains(
        structured(&posing)["error"].as_str().unwrap(),
        &format!(
            "fromTeam '{posing_as}' conflicts with the caller's team '{team}' (proven by {proof})"
        ),
    );
}

/// The 17 Iris MCP tools, sorted.
pub const TOOL_NAMES: [&str; 17] = [
    "ask_message",
    "get_date",
    "get_logs",
    "list_teams",
    "message_status",
    "quick_message",
    "send_message",
    "session_cancel",
    "session_delete",
    "session_fork",
    "session_reboot",
    "session_report",
    "team_launch",
    "team_sleep",
    "team_status",
    "team_wake",
    "team_wake_all",
];

/// An rmcp client of `iris serve --stdio` started in `cwd` (its directory names the caller's
/// team) on `config` and `home`; the server ends with the client.
pub async fn stdio_client(
    config: &Path,
    home: &Path,
    cwd: &Path,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    use rmcp::ServiceExt as _;
    use rmcp::transport::{ConfigureCommandExt as _, TokioChildProcess};
    let command = tokio::process::Command::new(IRIS).configure(|command| {
        command
            .args(["serve", "--stdio"])
            .env("IRIS_CONFIG_PATH", config)
            .env("IRIS_HOME", home)
            .env_remove("RUST_LOG")
            .current_dir(cwd);
    });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ().serve(transport).await.unwrap()
}
