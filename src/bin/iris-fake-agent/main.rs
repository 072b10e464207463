//! `iris-fake-agent`: a fault-injection stand-in for headless Claude Code (`claude` 2.1.332).
//!
//! It speaks the long-lived stream-json mode (`--print --input-format stream-json
//! --output-format stream-json --verbose`) and the stdin/stdout control protocol closely
//! enough that a driver written for the real CLI works unchanged, and it injects faults on
//! request: directives such as `[[slow:MS]]` or `[[crash]]` inside user text, and
//! `FAKE_AGENT_*` environment variables. `docs/fake-agent.md` is the reference.
//!
//! Structure: the main thread validates the command line and the session, then starts a
//! stdin reader thread and becomes the turn worker. The reader answers control requests
//! itself (so they are served while a turn runs) and queues user messages; the worker runs
//! queued turns one at a time. Both share [`Shared`] (a mutex-protected [`State`] plus a
//! condition variable).

mod args;
mod directives;
mod output;
mod session;
mod turn;

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use crate::output::{emit, exit_now, log_event, new_uuid};

/// The Claude Code version the fake claims to be.
pub(crate) const VERSION: &str = "2.1.332";

/// Hidden first argument that turns the binary into a sleeper (used for grandchildren).
const SLEEP_FLAG: &str = "--fake-agent-sleep";

/// Cost of a turn without `[[cost:…]]` (USD), unless `FAKE_AGENT_TURN_COST` says otherwise.
const DEFAULT_TURN_COST: f64 = 0.0001;

/// Tools listed in `system/init` (the 2.1.332 default set), minus `--disallowedTools`.
const TOOLS: &[&str] = &[
    "Task",
    "AskUserQuestion",
    "Bash",
    "CronCreate",
    "CronDelete",
    "CronList",
    "Edit",
    "EnterPlanMode",
    "EnterWorktree",
    "ExitPlanMode",
    "ExitWorktree",
    "ListAgents",
    "Monitor",
    "NotebookEdit",
    "Read",
    "ReportFindings",
    "ScheduleWakeup",
    "SendMessage",
    "Skill",
    "TaskStop",
    "ToolSearch",
    "WebFetch",
    "WebSearch",
    "Workflow",
    "Write",
];

/// Set by `[[hang:deaf]]`: the reader stops consuming stdin.
pub(crate) static DEAF: AtomicBool = AtomicBool::new(false);

/// A user message waiting for (or in) its turn.
pub(crate) struct UserMsg {
    /// Concatenated text blocks.
    pub text: String,
    /// The message's `uuid`, if the host sent one.
    pub uuid: Option<String>,
    /// The `message` object as received (for `--replay-user-messages`).
    pub message: Value,
}

/// Mutable state shared by the reader and the worker.
pub(crate) struct State {
    /// User messages not yet started.
    pub queue: VecDeque<UserMsg>,
    /// Stdin reached end of file.
    pub eof: bool,
    /// Number of turns started by this process.
    pub started: u64,
    /// Sequence number of the running turn.
    pub running: Option<u64>,
    /// Sequence number of the turn an `interrupt` aborts.
    pub interrupt_target: Option<u64>,
    /// Outstanding `can_use_tool` requests: request id → host reply once it arrived.
    pub permission_replies: HashMap<String, Option<Value>>,
    /// Current permission mode (changed by `set_permission_mode`).
    pub permission_mode: String,
    /// Current model (changed by `set_model`).
    pub model: String,
    /// Cumulative cost, including what a resume restored.
    pub total_cost: f64,
    /// The `uuid`s of the user messages this process read (what `rewind_conversation`
    /// may name).
    pub prompt_uuids: Vec<String>,
}

/// Settings fixed at startup.
pub(crate) struct Config {
    /// Session id used in every line.
    pub session_id: String,
    /// Working directory (realpath).
    pub cwd: String,
    /// Model given by `--model` (the `set_model` default).
    pub default_model: String,
    /// `--permission-prompt-tool stdio` was given.
    pub prompt_via_stdio: bool,
    /// `--allowedTools` rules.
    pub allowed_tools: Vec<String>,
    /// `--disallowedTools` rules.
    pub disallowed_tools: Vec<String>,
    /// Tools listed in `system/init`.
    pub tools: Vec<String>,
    /// `mcp_servers` for `system/init` and `mcp_status`.
    pub mcp_servers: Vec<Value>,
    /// HTTP MCP servers from `--mcp-config`: name → URL (tools `mcp__<name>__<tool>` call them).
    pub mcp_urls: Vec<(String, String)>,
    /// `--replay-user-messages`.
    pub replay_user_messages: bool,
    /// `CLAUDE_CODE_SDK_READS_SESSION_STATE=1`.
    pub emit_session_state: bool,
    /// `FAKE_AGENT_NO_INIT=1`.
    pub no_init: bool,
    /// `FAKE_AGENT_CRASH_AT_TURN`.
    pub crash_at_turn: Option<u64>,
    /// Cost of a turn without `[[cost:…]]`.
    pub turn_cost: f64,
}

/// State and configuration shared between threads.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled whenever `state` changes.
    pub cv: Condvar,
    /// Startup configuration.
    pub cfg: Config,
}

impl Shared {
    /// Locks the state (a poisoned lock is still usable: state stays consistent).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on the condition variable for at most `timeout`.
    pub(crate) fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        match timeout {
            None => self.cv.wait(guard).unwrap_or_else(PoisonError::into_inner),
            Some(t) => {
                self.cv
                    .wait_timeout(guard, t)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        }
    }
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.get(1).map(String::as_str) == Some(SLEEP_FLAG) {
        sleep_mode(argv.get(2));
    }
    let args = match args::parse(argv.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(1);
        }
    };
    if args.version {
        println!("{VERSION} (Claude Code)");
        return;
    }

    let cwd_path = std::env::current_dir()
        .and_then(|p| p.canonicalize())
        .unwrap_or_else(|_| PathBuf::from("."));
    let cwd = cwd_path.to_string_lossy().into_owned();
    let pid = std::process::id();

    output::init_log();
    log_event(&json!({
        "event": "start",
        "pid": pid,
        "pgid": nix::unistd::getpgrp().as_raw(),
        "argv": argv,
        "cwd": cwd,
    }));

    if let Some(v) = env_set("FAKE_AGENT_EXIT_AT_START") {
        eprintln!("fake agent: exiting at start");
        exit_now(v.trim().parse().unwrap_or(1), "exit-at-start");
    }
    if env_set("FAKE_AGENT_IGNORE_SIGTERM").is_some_and(|v| v != "0") {
        ignore_sigterm();
    }
    if let Some(n) = env_set("FAKE_AGENT_GRANDCHILDREN").and_then(|v| v.trim().parse::<u32>().ok())
    {
        for _ in 0..n {
            let _ = spawn_sleeper(None);
        }
    }

    if args.print && args.output_format.as_deref() == Some("stream-json") && !args.verbose {
        eprintln!("Error: When using --print, --output-format=stream-json requires --verbose");
        exit_now(1, "usage");
    }

    let (shared, store, restored) = setup_session(&args, cwd);
    let shared = Arc::new(shared);

    if let Some(ms) = env_set("FAKE_AGENT_SPAWN_DELAY_MS").and_then(|v| v.trim().parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    let reader_shared = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || reader_loop(&reader_shared));
    if let Err(e) = spawned {
        eprintln!("fake agent: cannot start the stdin reader: {e}");
        exit_now(1, "thread");
    }

    let mut worker = turn::Worker::new(Arc::clone(&shared), store, &restored);
    loop {
        let msg = {
            let mut st = shared.lock();
            loop {
                if let Some(m) = st.queue.pop_front() {
                    st.started += 1;
                    st.running = Some(st.started);
                    break m;
                }
                if st.eof {
                    drop(st);
                    exit_now(0, "stdin-closed");
                }
                st = shared.wait(st, None);
            }
        };
        worker.run(msg);
        let mut st = shared.lock();
        if let Some(seq) = st.running.take()
            && st.interrupt_target == Some(seq)
        {
            st.interrupt_target = None;
        }
    }
}

/// Resolves `--session-id` / `--resume` / `--continue` / `--fork-session`; exits 1 like the
/// real CLI when the id is in use or unknown.
fn setup_session(
    args: &args::Args,
    cwd: String,
) -> (Shared, session::SessionStore, session::Restored) {
    let dir = match session::state_dir(&cwd) {
        Ok(d) => d,
        Err(msg) => {
            eprintln!("{msg}");
            exit_now(1, "no-state-dir");
        }
    };
    let file_of = |id: &str| dir.join(format!("{id}.jsonl"));
    let mut copy_from = None;
    let mut restored = session::Restored::default();

    let resume_id = if let Some(r) = &args.resume {
        Some(r.clone())
    } else if args.continue_last {
        match session::newest_session(&dir) {
            Some(id) => Some(id),
            None => {
                eprintln!("No conversation found to continue");
                exit_now(1, "no-conversation");
            }
        }
    } else {
        None
    };

    let session_id = if let Some(r) = resume_id {
        let path = file_of(&r);
        if uuid::Uuid::parse_str(&r).is_err() || !path.is_file() {
            eprintln!("No conversation found with session ID: {r}");
            exit_now(1, "no-conversation");
        }
        restored = match session::load(&path) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("fake agent: cannot read {}: {e}", path.display());
                exit_now(1, "session-read");
            }
        };
        if args.fork_session {
            copy_from = Some(path);
            let id = args.session_id.clone().unwrap_or_else(new_uuid);
            check_new_session_id(&id, &file_of(&id));
            id
        } else {
            r
        }
    } else {
        let id = args.session_id.clone().unwrap_or_else(new_uuid);
        check_new_session_id(&id, &file_of(&id));
        id
    };

    let model = args.model.clone().unwrap_or_else(|| "fake-model".into());
    let permission_mode = match args.permission_mode.as_deref() {
        None | Some("manual") => "default".to_string(),
        Some(m) => m.to_string(),
    };
    let cfg = Config {
        session_id: session_id.clone(),
        cwd: cwd.clone(),
        default_model: model.clone(),
        prompt_via_stdio: args.permission_prompt_tool.as_deref() == Some("stdio"),
        allowed_tools: args.allowed_tools.clone(),
        disallowed_tools: args.disallowed_tools.clone(),
        tools: TOOLS
            .iter()
            .filter(|t| !args.disallowed_tools.iter().any(|d| d == *t))
            .map(|t| (*t).to_string())
            .collect(),
        mcp_servers: mcp_servers(&args.mcp_config),
        mcp_urls: mcp_urls(&args.mcp_config),
        replay_user_messages: args.replay_user_messages,
        emit_session_state: env_set("CLAUDE_CODE_SDK_READS_SESSION_STATE").as_deref() == Some("1"),
        no_init: env_set("FAKE_AGENT_NO_INIT").is_some_and(|v| v != "0"),
        crash_at_turn: env_set("FAKE_AGENT_CRASH_AT_TURN").and_then(|v| v.trim().parse().ok()),
        turn_cost: env_set("FAKE_AGENT_TURN_COST")
            .and_then(|v| v.trim().parse().ok())
            .filter(|c: &f64| c.is_finite() && *c >= 0.0)
            .unwrap_or(DEFAULT_TURN_COST),
    };
    let state = State {
        queue: VecDeque::new(),
        eof: false,
        started: 0,
        running: None,
        interrupt_target: None,
        permission_replies: HashMap::new(),
        permission_mode,
        model,
        total_cost: output::round_usd(restored.cost),
        prompt_uuids: Vec::new(),
    };
    let store = session::SessionStore::new(
        file_of(&session_id),
        session_id,
        cwd,
        !args.no_session_persistence,
        copy_from,
        restored.last_uuid.clone(),
    );
    let shared = Shared {
        state: Mutex::new(state),
        cv: Condvar::new(),
        cfg,
    };
    (shared, store, restored)
}

fn check_new_session_id(id: &str, path: &Path) {
    if uuid::Uuid::parse_str(id).is_err() {
        eprintln!("Error: Invalid session ID. Must be a valid UUID.");
        exit_now(1, "bad-session-id");
    }
    if path.exists() {
        eprintln!("Error: Session ID {id} is already in use.");
        exit_now(1, "session-in-use");
    }
}

/// Server names from `--mcp-config` values (inline JSON or file paths), reported as
/// connected. No server is started.
fn mcp_servers(configs: &[String]) -> Vec<Value> {
    mcp_entries(configs)
        .into_iter()
        .map(|(name, _)| json!({"name": name, "status": "connected", "source": "dynamic"}))
        .collect()
}

/// The HTTP servers among `--mcp-config`'s, with their URLs.
fn mcp_urls(configs: &[String]) -> Vec<(String, String)> {
    mcp_entries(configs)
        .into_iter()
        .filter_map(|(name, server)| Some((name, server.get("url")?.as_str()?.to_owned())))
        .collect()
}

/// Every server of every `--mcp-config` value (inline JSON or a file path), by name.
fn mcp_entries(configs: &[String]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for c in configs {
        let text = if c.trim_start().starts_with('{') {
            c.clone()
        } else {
            std::fs::read_to_string(c).unwrap_or_default()
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(servers) = v.get("mcpServers").and_then(Value::as_object) {
            for (name, server) in servers {
                out.push((name.clone(), server.clone()));
            }
        }
    }
    out
}

/// `FAKE_AGENT_IGNORE_SIGTERM=1`: SIG_IGN for SIGTERM. Children inherit it across exec
/// (std only resets SIGPIPE and the signal mask), so grandchildren ignore SIGTERM too.
#[allow(unsafe_code)]
fn ignore_sigterm() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_IGN installs no handler code, so there is no async-signal-safety
    // concern; this runs before any other thread exists.
    if let Err(e) = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) } {
        eprintln!("fake agent: cannot ignore SIGTERM: {e}");
    }
}

/// Spawns a sleeping grandchild: this binary re-executed in sleep mode, in our process
/// group, with our stdout and stderr and a null stdin. `None` sleeps forever.
pub(crate) fn spawn_sleeper(secs: Option<u64>) -> Option<u32> {
    let mut cmd = match std::env::current_exe() {
        Ok(exe) if exe.is_file() => {
            let mut c = Command::new(exe);
            c.arg(SLEEP_FLAG);
            if let Some(s) = secs {
                c.arg(s.to_string());
            }
            c
        }
        _ => {
            let mut c = Command::new("sleep");
            c.arg(secs.map_or_else(|| "infinity".to_string(), |s| s.to_string()));
            c
        }
    };
    match cmd.stdin(Stdio::null()).spawn() {
        Ok(child) => {
            let pid = child.id();
            log_event(&json!({"event": "grandchild", "pid": pid}));
            Some(pid)
        }
        Err(e) => {
            eprintln!("fake agent: cannot spawn a grandchild: {e}");
            None
        }
    }
}

/// The grandchild program: sleep `secs` (default: forever), print nothing.
fn sleep_mode(secs: Option<&String>) -> ! {
    match secs.and_then(|s| s.parse::<u64>().ok()) {
        Some(s) => {
            std::thread::sleep(Duration::from_secs(s));
            std::process::exit(0)
        }
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

/// Reads stdin lines until end of file, dispatching each; then marks `eof`.
fn reader_loop(sh: &Shared) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("fake agent: stdin read error: {e}");
                break;
            }
        }
        if DEAF.load(Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
        let line = buf.trim_ascii();
        log_event(&json!({"event": "stdin", "line": String::from_utf8_lossy(line)}));
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => dispatch(sh, &v),
            Err(e) => {
                eprintln!(
                    "Error parsing streaming input line (type=unknown, {} chars): SyntaxError: {e}",
                    line.len()
                );
                exit_now(1, "malformed-input");
            }
        }
    }
    sh.lock().eof = true;
    sh.cv.notify_all();
}

fn dispatch(sh: &Shared, v: &Value) {
    match v.get("type").and_then(Value::as_str) {
        Some("user") => {
            let message = v.get("message").cloned().unwrap_or(Value::Null);
            let uuid = v.get("uuid").and_then(Value::as_str).map(str::to_string);
            let msg = UserMsg {
                text: text_of(message.get("content")),
                uuid: uuid.clone(),
                message,
            };
            let mut st = sh.lock();
            st.queue.push_back(msg);
            if let Some(u) = uuid {
                emit(&turn::lifecycle(&sh.cfg, &u, "queued"));
                st.prompt_uuids.push(u);
            }
            drop(st);
            sh.cv.notify_all();
        }
        Some("control_request") => control_request(sh, v),
        Some("control_response") => {
            let resp = v.get("response").cloned().unwrap_or(Value::Null);
            let Some(id) = resp.get("request_id").and_then(Value::as_str) else {
                return;
            };
            let mut st = sh.lock();
            if let Some(slot) = st.permission_replies.get_mut(id) {
                *slot = Some(resp.clone());
                drop(st);
                sh.cv.notify_all();
            }
        }
        // control_cancel_request, keep_alive, update_environment_variables, unknown: ignored.
        _ => {}
    }
}

/// The text of a user `content` (a string, or the `text` blocks of a list joined by `\n`).
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn success(id: &Value, response: Value) -> Value {
    json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": id, "response": response},
    })
}

fn failure(id: &Value, error: &str, code: Option<&str>) -> Value {
    let mut r = json!({"subtype": "error", "request_id": id, "error": error});
    if let Some(c) = code {
        r["error_code"] = json!(c);
    }
    json!({"type": "control_response", "response": r})
}

/// Answers a host → agent control request. Runs on the reader thread, holding the state
/// lock while writing, so that a reply is on stdout before the worker can act on it.
fn control_request(sh: &Shared, v: &Value) {
    let id = v.get("request_id").cloned().unwrap_or(Value::Null);
    let req = v.get("request").cloned().unwrap_or(Value::Null);
    let subtype = req.get("subtype").and_then(Value::as_str).unwrap_or("");
    if subtype == "initialize"
        && let Some(gate) = env_set("FAKE_AGENT_INIT_WAIT_FILE")
    {
        // A barrier for tests: hold the answer until the file exists.
        while !std::path::Path::new(&gate).exists() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let mut st = sh.lock();
    match subtype {
        "initialize" => {
            if sh.cfg.no_init {
                return;
            }
            emit(&success(
                &id,
                json!({
                    "commands": [],
                    "agents": [],
                    "output_style": "default",
                    "available_output_styles": ["default"],
                    "models": [],
                    "account": {"tokenSource": "none", "apiKeySource": "none", "apiProvider": "firstParty"},
                    "pid": std::process::id(),
                    "claude_code_version": VERSION,
                    "current_permission_mode": st.permission_mode,
                    "session_state": if st.running.is_some() { "running" } else { "idle" },
                    "capabilities": [],
                    "pending_permission_requests": [],
                    "pending_user_dialog_requests": [],
                }),
            ));
        }
        "interrupt" => {
            let cancel_queued = req.get("cancel_queued").and_then(Value::as_bool) == Some(true);
            st.interrupt_target = match st.running {
                Some(seq) => Some(seq),
                None if !st.queue.is_empty() => Some(st.started + 1),
                None => None,
            };
            let mut cancelled = Vec::new();
            if cancel_queued {
                // Keep the head if it is the (not yet started) interrupt target.
                let keep = usize::from(st.running.is_none() && st.interrupt_target.is_some());
                let keep = keep.min(st.queue.len());
                cancelled = st.queue.split_off(keep).into();
            }
            let still: Vec<&str> = st.queue.iter().filter_map(|m| m.uuid.as_deref()).collect();
            emit(&success(&id, json!({"still_queued": still})));
            for m in &cancelled {
                if let Some(u) = &m.uuid {
                    emit(&turn::lifecycle(&sh.cfg, u, "cancelled"));
                }
            }
            drop(st);
            sh.cv.notify_all();
        }
        "set_permission_mode" => match req.get("mode").and_then(Value::as_str) {
            Some(mode) => {
                let mode = if mode == "manual" { "default" } else { mode };
                st.permission_mode = mode.to_string();
                emit(&success(&id, json!({"mode": mode})));
                emit(&json!({
                    "type": "system",
                    "subtype": "status",
                    "status": null,
                    "permissionMode": mode,
                    "uuid": new_uuid(),
                    "session_id": sh.cfg.session_id,
                }));
            }
            None => emit(&failure(&id, "set_permission_mode requires a mode", None)),
        },
        "set_model" => {
            st.model = req
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| *m != "default")
                .map_or_else(|| sh.cfg.default_model.clone(), str::to_string);
            emit(&success(&id, json!({})));
        }
        "set_max_thinking_tokens" => emit(&success(&id, json!({}))),
        "rewind_conversation" => {
            // The fake keeps no conversation: it only says whether it knows the prompt.
            let target = req
                .get("target_message_uuid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if st.prompt_uuids.iter().any(|u| u == target) {
                emit(&success(
                    &id,
                    json!({"rewound": true, "targetMessageUuid": target}),
                ));
            } else {
                emit(&success(
                    &id,
                    json!({"rewound": false, "error": "target not found", "reason": "target_not_found"}),
                ));
            }
        }
        "mcp_status" => emit(&success(&id, json!({"mcpServers": sh.cfg.mcp_servers}))),
        "get_session_cost" => emit(&success(
            &id,
            json!({"total_cost_usd": st.total_cost, "session_id": sh.cfg.session_id}),
        )),
        other => emit(&failure(
            &id,
            &format!("Unsupported control request subtype: {other}"),
            Some("unsupported_request"),
        )),
    }
}
