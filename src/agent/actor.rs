//! The task that owns one agent process: its `Child`, stdin writer, stdout reader, stderr
//! tail and per-process state. Everything else talks to it through [`super::Agent`].

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::lines::{Line, LineReader};
use super::protocol::{self, Incoming};
use super::{
    Agent, AgentEvent, AgentSpec, Command, Decided, EventSink, ExitInfo, PermissionDecision,
    PermissionRequest, Shared, SpawnError, TRANSCRIPT_MAX_ENTRIES, TRANSCRIPT_MAX_TEXT,
    TranscriptEntry, TurnApprover, TurnError, TurnProgress, TurnResult,
};
use crate::guard::Guard;
use crate::process;
use crate::store::DecidedBy;

/// Stderr lines kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept (longer ones are cut).
const STDERR_LINE_MAX: usize = 2048;
/// After the process exited: how long to keep reading stdout for lines it wrote just before.
/// Bounded because a member that escaped the process group could hold the pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Request id of the readiness handshake.
const INITIALIZE_ID: &str = "iris-initialize";
/// How long the next turn waits for the agent to take a failed prompt back
/// ([`Actor::take_back`]) before it is sent anyway.
const REWIND_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_AGENT_ID: AtomicU64 = AtomicU64::new(1);

/// Environment variables a nested `claude` must not inherit: they make it think it runs
/// inside another Claude Code session.
const NESTED_SESSION_VARIABLES: [&str; 3] = [
    "CLAUDECODE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_CODE_SSE_PORT",
];

pub(super) async fn spawn(
    spec: AgentSpec,
    sink: EventSink,
    guard: Option<Guard>,
) -> Result<Agent, SpawnError> {
    let started = Instant::now();
    let program = resolve_program(&spec)?;
    let directory = spec.local_dir.as_ref().unwrap_or(&spec.cwd);
    match std::fs::metadata(directory) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(SpawnError::BadDirectory {
                path: directory.clone(),
                message: "not a directory".to_owned(),
            });
        }
        Err(error) => {
            return Err(SpawnError::BadDirectory {
                path: directory.clone(),
                message: error.to_string(),
            });
        }
    }

    let env_remove: Vec<&str> = NESTED_SESSION_VARIABLES
        .iter()
        .copied()
        .chain(spec.env_remove.iter().map(String::as_str))
        .collect();
    let spawned = process::spawn::spawn(&process::spawn::Spec {
        program: &program,
        args: &spec.args,
        cwd: directory,
        env: &spec.env,
        env_remove: &env_remove,
    })
    .map_err(|error| match error.kind() {
        // `chdir` refused (a directory without search permission passes the check above).
        _ if process::spawn::failed_step(&error) == Some(process::spawn::Step::Directory) => {
            SpawnError::BadDirectory {
                path: directory.clone(),
                message: error.to_string(),
            }
        }
        std::io::ErrorKind::NotFound => SpawnError::MissingBinary {
            program: program.clone(),
            source_key: spec.program_source.clone(),
        },
        std::io::ErrorKind::PermissionDenied => SpawnError::NotExecutable {
            program: program.clone(),
            source_key: spec.program_source.clone(),
            message: error.to_string(),
        },
        _ => SpawnError::Io {
            label: spec.label.clone(),
            message: error.to_string(),
        },
    })?;
    let process::spawn::Spawned {
        child,
        stdin,
        stdout,
        stderr,
    } = spawned;
    let pid = child.id();
    // From here on the group must be killed whatever happens: the drop guard covers panics
    // and cancellation, the actor covers everything else.
    let group = GroupGuard {
        pgid: pid,
        armed: true,
    };
    if let Some(guard) = &guard {
        guard.watch(pid);
    }
    tracing::info!(agent = %spec.label, pid, program = %program, "agent process started");

    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr_task = tokio::spawn(drain_stderr(
        stderr,
        stderr_tail.clone(),
        spec.label.clone(),
        pid,
    ));
    let (writes, pending_writes) = mpsc::unbounded_channel();
    tokio::spawn(write_stdin(stdin, pending_writes, spec.label.clone()));

    let (exit_tx, exit_rx) = watch::channel(None);
    let (command_tx, command_rx) = mpsc::channel(16);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (decided_tx, decided_rx) = mpsc::unbounded_channel();
    let id = NEXT_AGENT_ID.fetch_add(1, Ordering::Relaxed);

    let mut actor = Actor {
        label: spec.label.clone(),
        pid,
        child,
        group,
        guard,
        stdout: LineReader::new(stdout, spec.max_line_bytes),
        stdout_eof: false,
        writes: Some(writes),
        stderr_tail,
        stderr_task: Some(stderr_task),
        commands: command_rx,
        commands_closed: false,
        ready: Some(ready_tx),
        pending_health: HashMap::new(),
        decided_tx,
        decided: decided_rx,
        next_request: 0,
        turn: None,
        recovering: None,
        rewinding: None,
        parked: VecDeque::new(),
        stopping: None,
        cost_baseline: spec.cost_baseline,
        exit: exit_tx,
        sink,
        spec,
    };
    if let Some(preamble) = actor.spec.stdin_preamble.take() {
        actor.write(preamble.into_bytes());
    }
    actor.write(protocol::control_request(INITIALIZE_ID, "initialize"));
    let spawn_timeout = actor.spec.spawn_timeout;
    let label = actor.spec.label.clone();
    let task = tokio::spawn(actor.run());

    let outcome = tokio::time::timeout(spawn_timeout, ready_rx).await;
    let shared = Arc::new(Shared {
        id,
        pid,
        label: label.clone(),
        started,
        ready_after: started.elapsed(),
        exit: exit_rx,
    });
    let agent = Agent {
        shared,
        commands: command_tx,
    };
    match outcome {
        Ok(Ok(Ok(()))) => {
            tracing::info!(agent = %label, pid, ready_ms = agent.ready_after().as_millis(), "agent ready");
            Ok(agent)
        }
        Ok(Ok(Err(message))) => {
            agent.stop().await;
            Err(SpawnError::Refused { label, message })
        }
        Ok(Err(_)) => {
            // The actor dropped the readiness sender: the process ended first.
            let exit = agent.exited().await;
            let _ = task.await;
            Err(SpawnError::ExitedEarly { label, exit })
        }
        Err(_) => {
            let exit = agent.stop().await;
            Err(SpawnError::Timeout {
                label,
                after: spawn_timeout,
                stderr_tail: exit.stderr_tail,
            })
        }
    }
}

/// Finds the executable: a name without `/` is looked up on `PATH` (so a missing one is
/// reported with the config key that chose it, before anything is started).
fn resolve_program(spec: &AgentSpec) -> Result<String, SpawnError> {
    if spec.program.contains('/') {
        return Ok(spec.program.clone());
    }
    which::which(&spec.program)
        .map(|path| path.to_string_lossy().into_owned())
        .map_err(|_| SpawnError::MissingBinary {
            program: spec.program.clone(),
            source_key: spec.program_source.clone(),
        })
}

/// Kills the process group on drop unless disarmed after a clean, reaped exit. A backstop for
/// panics and runtime shutdown; the actor's own stop sequence is the plan.
struct GroupGuard {
    pgid: u32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            process::signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// The running turn.
struct TurnState {
    reply: oneshot::Sender<Result<TurnResult, TurnError>>,
    /// This turn's caller wants its assistant text as it comes.
    text_stream: Option<super::TextStream>,
    /// The agent printed the first line of its answer (it has the message).
    answering: bool,
    started: Instant,
    /// Reset by every line the agent prints during the turn.
    silent_deadline: tokio::time::Instant,
    /// How long the turn may stay silent.
    response_timeout: Duration,
    answer_parts: Vec<String>,
    transcript: Vec<TranscriptEntry>,
    transcript_dropped: usize,
    interrupted: bool,
    /// The `uuid` the prompt was sent with: what a rewind names to take it back.
    prompt_uuid: String,
    /// Asks people and records decisions for this turn.
    approver: Option<Arc<dyn TurnApprover>>,
    /// Permission requests waiting for a person. While any waits the turn is not timed out
    /// for silence.
    waiting: Waiting,
}

/// The permission requests of a turn that wait for a person, by the CLI's request id. When
/// the turn ends they are dropped, and the approver closes them as expired.
#[derive(Default)]
struct Waiting(HashMap<String, WaitingRequest>);

struct WaitingRequest {
    /// The CLI's request (what the answer repeats: the input, the tool use id).
    request: Value,
    tool: String,
    task: tokio::task::AbortHandle,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        for waiting in self.0.values() {
            waiting.task.abort();
        }
    }
}

impl TurnState {
    fn record(&mut self, entry: TranscriptEntry) {
        if self.transcript.len() < TRANSCRIPT_MAX_ENTRIES {
            self.transcript.push(entry);
        } else {
            self.transcript_dropped += 1;
        }
    }

    fn partial(&self) -> String {
        self.answer_parts.concat()
    }
}

/// Where a graceful stop is.
enum StopStage {
    StdinClosed,
    Terminated,
    Killed,
}

struct Stopping {
    stage: StopStage,
    deadline: tokio::time::Instant,
}

struct Actor {
    spec: AgentSpec,
    label: Arc<str>,
    pid: u32,
    child: process::spawn::Child,
    group: GroupGuard,
    guard: Option<Guard>,
    stdout: LineReader<pipe::Receiver>,
    stdout_eof: bool,
    /// Lines for the stdin writer task; `None` once stdin is closed.
    writes: Option<mpsc::UnboundedSender<Vec<u8>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_task: Option<JoinHandle<()>>,
    commands: mpsc::Receiver<Command>,
    commands_closed: bool,
    ready: Option<oneshot::Sender<Result<(), String>>>,
    pending_health: HashMap<String, oneshot::Sender<()>>,
    /// Decisions of people, from the tasks that wait for them: (CLI request id, decision).
    decided_tx: mpsc::UnboundedSender<(String, Decided)>,
    decided: mpsc::UnboundedReceiver<(String, Decided)>,
    next_request: u64,
    turn: Option<TurnState>,
    /// Set after a timed-out turn was interrupted: until its result arrives (or this deadline
    /// passes and the process is killed) no new turn starts.
    recovering: Option<tokio::time::Instant>,
    /// Set while the agent takes back the prompt of a turn that failed with an API error
    /// (the request id and until when it may take): no new turn starts meanwhile.
    rewinding: Option<(String, tokio::time::Instant)>,
    /// Turns and health checks that arrived while recovering or rewinding, served when it
    /// ends.
    parked: VecDeque<Command>,
    stopping: Option<Stopping>,
    /// The CLI's cumulative cost before the running turn.
    cost_baseline: f64,
    exit: watch::Sender<Option<ExitInfo>>,
    sink: EventSink,
}

impl Actor {
    async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                status = self.child.wait() => {
                    self.finish(status).await;
                    return;
                }
                line = self.stdout.next_line(), if !self.stdout_eof => match line {
                    Ok(Some(Line::Data(bytes))) => self.on_line(&bytes),
                    Ok(Some(Line::TooLong { bytes })) => self.skipped(format!("stdout line of {bytes} bytes exceeds maxLineBytes ({})", self.spec.max_line_bytes)),
                    Ok(None) => self.stdout_eof = true,
                    Err(error) => {
                        tracing::warn!(agent = %self.label, %error, "reading agent stdout failed");
                        self.stdout_eof = true;
                    }
                },
                command = self.commands.recv(), if !self.commands_closed => match command {
                    // A turn or health check waits until the interrupted turn has ended or
                    // the failed prompt is taken back; a stop or interrupt is served at once.
                    Some(command @ (Command::Turn { .. } | Command::Health { .. })) if self.recovering.is_some() || self.rewinding.is_some() => {
                        self.parked.push_back(command);
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        // Every handle is gone: nobody can use this process any more.
                        self.commands_closed = true;
                        self.begin_stop();
                    }
                },
                Some((request_id, decided)) = self.decided.recv() => self.on_decided(&request_id, decided),
                () = sleep_until(deadline), if deadline.is_some() => self.on_deadline(),
            }
        }
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        [
            self.turn
                .as_ref()
                .filter(|turn| turn.waiting.0.is_empty())
                .map(|turn| turn.silent_deadline),
            self.recovering,
            self.rewinding.as_ref().map(|(_, deadline)| *deadline),
            self.stopping.as_ref().map(|stopping| stopping.deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn write(&mut self, line: Vec<u8>) {
        if let Some(writes) = &self.writes {
            // A closed writer means stdin broke (the process is dying): the exit path reports it.
            let _ = writes.send(line);
        }
    }

    fn request_id(&mut self, prefix: &str) -> String {
        self.next_request += 1;
        format!("iris-{prefix}-{}", self.next_request)
    }

    fn emit(&self, event: AgentEvent) {
        (self.sink)(event);
    }

    fn skipped(&self, reason: String) {
        tracing::warn!(agent = %self.label, %reason, "agent output skipped");
        self.emit(AgentEvent::Skipped { reason });
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Turn {
                text,
                response_timeout,
                text_stream,
                approver,
                reply,
            } => {
                if self.turn.is_some() || self.stopping.is_some() {
                    let _ = reply.send(Err(if self.stopping.is_some() {
                        TurnError::Gone
                    } else {
                        TurnError::Busy
                    }));
                    return;
                }
                let now = Instant::now();
                let prompt_uuid = uuid::Uuid::new_v4().to_string();
                self.write(protocol::user_message(&text, &prompt_uuid));
                let response_timeout = response_timeout.unwrap_or(self.spec.response_timeout);
                self.turn = Some(TurnState {
                    reply,
                    text_stream,
                    answering: false,
                    started: now,
                    silent_deadline: tokio::time::Instant::now() + response_timeout,
                    response_timeout,
                    answer_parts: Vec::new(),
                    transcript: Vec::new(),
                    transcript_dropped: 0,
                    interrupted: false,
                    prompt_uuid,
                    approver,
                    waiting: Waiting::default(),
                });
            }
            Command::Interrupt { reply } => {
                let running = self.turn.is_some();
                if running {
                    let id = self.request_id("interrupt");
                    self.write(protocol::control_request(&id, "interrupt"));
                    if let Some(turn) = &mut self.turn {
                        turn.interrupted = true;
                    }
                }
                let _ = reply.send(running);
            }
            Command::Health { reply } => {
                let id = self.request_id("health");
                self.write(protocol::control_request(&id, "mcp_status"));
                self.pending_health.insert(id, reply);
            }
            Command::Stop => self.begin_stop(),
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        tracing::debug!(agent = %self.label, pid = self.pid, "stopping agent: closing stdin");
        // Dropping the sender lets the writer flush what is queued, then close the pipe.
        self.writes = None;
        self.stopping = Some(Stopping {
            stage: StopStage::StdinClosed,
            deadline: tokio::time::Instant::now() + self.spec.stop_grace,
        });
    }

    fn on_deadline(&mut self) {
        let now = tokio::time::Instant::now();
        if let Some(stopping) = &mut self.stopping
            && stopping.deadline <= now
        {
            match stopping.stage {
                StopStage::StdinClosed => {
                    tracing::info!(agent = %self.label, pid = self.pid, "agent ignored stdin close; sending SIGTERM to its group");
                    process::signal_group(self.pid, Signal::SIGTERM);
                    stopping.stage = StopStage::Terminated;
                    stopping.deadline = now + self.spec.stop_grace;
                }
                StopStage::Terminated | StopStage::Killed => {
                    tracing::warn!(agent = %self.label, pid = self.pid, "agent ignored SIGTERM; sending SIGKILL to its group");
                    process::signal_group(self.pid, Signal::SIGKILL);
                    stopping.stage = StopStage::Killed;
                    // Nothing survives SIGKILL; re-check rarely in case the exit is slow to show.
                    stopping.deadline = now + Duration::from_secs(1);
                }
            }
        }
        if self
            .rewinding
            .as_ref()
            .is_some_and(|(_, deadline)| *deadline <= now)
        {
            tracing::warn!(agent = %self.label, pid = self.pid, after = ?REWIND_TIMEOUT, "agent did not answer the rewind of a failed prompt; the next turn goes on, and the model may see that prompt again");
            self.rewinding = None;
            self.unpark();
        }
        if self.recovering.is_some_and(|deadline| deadline <= now) {
            tracing::warn!(agent = %self.label, pid = self.pid, "agent did not recover from an interrupt; killing it");
            self.recovering = None;
            process::signal_group(self.pid, Signal::SIGKILL);
            self.stopping = Some(Stopping {
                stage: StopStage::Killed,
                deadline: now + Duration::from_secs(1),
            });
        }
        if self
            .turn
            .as_ref()
            .is_some_and(|turn| turn.waiting.0.is_empty() && turn.silent_deadline <= now)
            && let Some(turn) = self.turn.take()
        {
            let after = turn.response_timeout;
            tracing::warn!(agent = %self.label, ?after, "turn timed out; interrupting");
            let partial = turn.partial();
            let _ = turn.reply.send(Err(TurnError::TimedOut { after, partial }));
            let id = self.request_id("interrupt");
            self.write(protocol::control_request(&id, "interrupt"));
            self.recovering = Some(now + self.spec.stop_grace);
        }
    }

    fn on_line(&mut self, bytes: &[u8]) {
        if let Some(turn) = &mut self.turn {
            turn.silent_deadline = tokio::time::Instant::now() + turn.response_timeout;
        }
        // Three of these per turn, and nothing to do with them: not worth parsing.
        if protocol::is_lifecycle(bytes) {
            return;
        }
        let kind = match protocol::read(bytes) {
            Ok(kind) => kind,
            Err(error) => {
                let preview: String =
                    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
                self.skipped(format!("stdout line is not JSON ({error}): {preview}"));
                return;
            }
        };
        if matches!(
            kind,
            Incoming::System
                | Incoming::Assistant { .. }
                | Incoming::User { .. }
                | Incoming::Result(_)
        ) && let Some(turn) = &mut self.turn
            && !std::mem::replace(&mut turn.answering, true)
        {
            self.emit(AgentEvent::Answering);
        }
        match kind {
            Incoming::ControlResponse {
                request_id,
                outcome,
            } => self.on_control_response(&request_id, outcome),
            Incoming::ControlRequest {
                request_id,
                subtype,
                request,
            } => {
                self.on_control_request(&request_id, &subtype, &request);
            }
            Incoming::ControlCancel { request_id } => self.on_control_cancel(&request_id),
            Incoming::System | Incoming::Lifecycle => {}
            Incoming::Assistant { text, tool_uses } => {
                // Outside a turn (never expected) there is nobody to tell.
                if self.turn.is_none() {
                    return;
                }
                if let Some(text) = text {
                    self.emit(AgentEvent::AssistantText { text: text.clone() });
                    if let Some(turn) = &mut self.turn {
                        if let Some(stream) = &turn.text_stream {
                            // The caller may have stopped listening: the turn goes on.
                            let _ = stream.send(TurnProgress::Text(text.clone()));
                        }
                        turn.record(TranscriptEntry::AssistantText {
                            text: truncate(&text),
                        });
                        turn.answer_parts.push(text);
                    }
                }
                for (name, input) in tool_uses {
                    self.step(TranscriptEntry::ToolUse {
                        name,
                        input: truncate(&input.to_string()),
                    });
                }
            }
            Incoming::User { tool_results } => {
                if self.turn.is_none() {
                    return;
                }
                for (content, is_error) in tool_results {
                    self.step(TranscriptEntry::ToolResult {
                        content: truncate(&content),
                        is_error,
                    });
                }
            }
            Incoming::Result(result) => self.on_result(result),
            Incoming::Unknown(kind) => {
                tracing::debug!(agent = %self.label, kind, "agent line of unknown type");
                self.emit(AgentEvent::Skipped {
                    reason: format!("unknown line type '{kind}'"),
                });
            }
        }
    }

    fn on_control_response(&mut self, request_id: &str, outcome: Result<Value, String>) {
        if request_id == INITIALIZE_ID {
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(outcome.map(|_| ()));
            }
        } else if let Some(reply) = self.pending_health.remove(request_id) {
            // An error answer ("unsupported subtype") is still a full round trip: alive.
            let _ = reply.send(());
        } else if self
            .rewinding
            .as_ref()
            .is_some_and(|(id, _)| id == request_id)
        {
            self.rewinding = None;
            match protocol::rewound(outcome) {
                Ok(()) => {
                    tracing::info!(agent = %self.label, "the failed prompt was taken out of the agent's conversation");
                }
                Err(reason) => {
                    tracing::warn!(agent = %self.label, %reason, "the agent could not take the failed prompt back; the model may see it again with the next one");
                }
            }
            self.unpark();
        }
    }

    /// Serves the turns and health checks that waited, unless the agent is still busy
    /// recovering or rewinding.
    fn unpark(&mut self) {
        while self.recovering.is_none()
            && self.rewinding.is_none()
            && let Some(command) = self.parked.pop_front()
        {
            self.on_command(command);
        }
    }

    /// After a turn failed with an API error, takes its prompt back out of the agent's
    /// conversation. Left in, the CLI sends it again together with the next prompt, and
    /// the model answers a message whose caller was told it failed. Files the turn's
    /// tools changed stay changed. The next turn waits for the answer (at most
    /// [`REWIND_TIMEOUT`]).
    fn take_back(&mut self, prompt_uuid: &str) {
        let id = self.request_id("rewind");
        self.write(protocol::rewind_conversation(&id, prompt_uuid));
        self.rewinding = Some((id, tokio::time::Instant::now() + REWIND_TIMEOUT));
    }

    fn on_control_request(&mut self, request_id: &str, subtype: &str, request: &Value) {
        if subtype != "can_use_tool" {
            tracing::debug!(agent = %self.label, subtype, "unsupported control request from agent");
            self.write(protocol::control_error(
                request_id,
                &format!("Iris does not handle control request '{subtype}'"),
            ));
            return;
        }
        let tool = request
            .get("tool_name")
            .and_then(Value::as_str)
            .unwrap_or("unknown tool")
            .to_owned();
        let input = request.get("input").cloned().unwrap_or(Value::Null);
        let decision = self.spec.permissions.decide(&tool, &input, &self.spec.cwd);
        let approver = self.turn.as_ref().and_then(|turn| turn.approver.clone());
        let permission = PermissionRequest {
            tool: tool.clone(),
            input,
            suggestions: request
                .get("permission_suggestions")
                .cloned()
                .unwrap_or(Value::Null),
        };
        let escalation = match decision {
            PermissionDecision::Decided(decided) => {
                // The answer first: the record is not on the agent's path.
                self.answer_permission(request_id, request, &tool, decided.clone());
                if let Some(approver) = &approver {
                    approver.record(&permission, &decided);
                }
                return;
            }
            PermissionDecision::Person(escalation) => escalation,
        };
        let Some(approver) = approver.filter(|_| self.turn.is_some()) else {
            let decided = Decided {
                allowed: false,
                by: DecidedBy::Fallback,
                who: Some(escalation.why.clone()),
                reason: Some(format!(
                    "Iris denied {tool}: {} leaves it to a person, and this turn has nobody to ask \
                     (it was not sent through a message queue that records approvals)",
                    escalation.why
                )),
                approval: None,
            };
            self.answer_permission(request_id, request, &tool, decided);
            return;
        };
        // A person decides: the answer comes later, from a task, so that other lines (and
        // other requests) are served meanwhile.
        let pending = approver.ask(permission, escalation);
        let decided_tx = self.decided_tx.clone();
        let id = request_id.to_owned();
        let task = tokio::spawn(async move {
            let decided = pending.await;
            let _ = decided_tx.send((id, decided));
        });
        tracing::info!(agent = %self.label, tool, "tool permission waits for a person");
        if let Some(turn) = &mut self.turn {
            turn.waiting.0.insert(
                request_id.to_owned(),
                WaitingRequest {
                    request: request.clone(),
                    tool,
                    task: task.abort_handle(),
                },
            );
        }
    }

    /// The CLI withdrew a request it sent (an interrupt, a sibling tool aborted): a
    /// permission request waiting for a person is dropped, which closes it as expired, and the
    /// turn's silence clock starts again.
    fn on_control_cancel(&mut self, request_id: &str) {
        if let Some(turn) = &mut self.turn
            && turn.waiting.0.remove(request_id).is_some_and(|waiting| {
                waiting.task.abort();
                true
            })
        {
            turn.silent_deadline = tokio::time::Instant::now() + turn.response_timeout;
            tracing::info!(agent = %self.label, request_id, "the agent withdrew a permission request that waited for a person");
        }
    }

    /// A person's decision on a request of the running turn; one of an ended turn is
    /// dropped (the CLI no longer waits for it).
    fn on_decided(&mut self, request_id: &str, decided: Decided) {
        let Some(turn) = &mut self.turn else {
            return;
        };
        let Some(waiting) = turn.waiting.0.remove(request_id) else {
            return;
        };
        // The silence clock starts again from the decision.
        turn.silent_deadline = tokio::time::Instant::now() + turn.response_timeout;
        self.answer_permission(request_id, &waiting.request, &waiting.tool, decided);
    }

    /// Writes the answer to a `can_use_tool` request and records it.
    fn answer_permission(
        &mut self,
        request_id: &str,
        request: &Value,
        tool: &str,
        decided: Decided,
    ) {
        let answer = if decided.allowed {
            protocol::permission_allow(request)
        } else {
            protocol::permission_deny(
                request,
                decided.reason.as_deref().unwrap_or("Iris denied the tool"),
            )
        };
        tracing::info!(agent = %self.label, tool, allowed = decided.allowed, by = decided.by.as_str(), "tool permission answered");
        self.write(protocol::control_success(request_id, answer));
        self.step(TranscriptEntry::Permission {
            tool: tool.to_owned(),
            allowed: decided.allowed,
            reason: if decided.allowed {
                None
            } else {
                decided.reason
            },
            by: Some(decided.by),
            who: decided.who,
            approval: decided.approval,
        });
    }

    /// A tool call, tool result or permission decision: recorded in the running turn's
    /// transcript and told to subscribers as it happens.
    fn step(&mut self, entry: TranscriptEntry) {
        self.emit(AgentEvent::Step {
            entry: entry.clone(),
        });
        if let Some(turn) = &mut self.turn {
            turn.record(entry);
        }
    }

    fn on_result(&mut self, result: protocol::ResultLine) {
        let cost = self.turn_cost(result.total_cost_usd, result.cost_since_last_result);
        if let Some(total) = result.total_cost_usd {
            self.cost_baseline = total;
        }
        if self.recovering.take().is_some() {
            tracing::info!(agent = %self.label, "agent recovered from a timed-out turn");
            self.unpark();
            return;
        }
        let Some(turn) = self.turn.take() else {
            tracing::debug!(agent = %self.label, "result line outside a turn ignored");
            return;
        };
        let answer = match result.text {
            Some(text) if !text.is_empty() => text,
            _ => turn.partial(),
        };
        let outcome = TurnResult {
            answer,
            is_error: result.is_error,
            subtype: result.subtype,
            terminal_reason: result.terminal_reason,
            interrupted: turn.interrupted,
            duration_ms: u64::try_from(turn.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cli_duration_ms: result.duration_ms,
            num_turns: result.num_turns,
            usage: result.usage,
            cost_usd: cost,
            total_cost_usd: result.total_cost_usd,
            session_id: result.session_id,
            errors: result.errors,
            transcript: turn.transcript.into(),
            transcript_dropped: turn.transcript_dropped,
        };
        let api_error = outcome.is_api_error();
        let _ = turn.reply.send(Ok(outcome));
        if api_error {
            self.take_back(&turn.prompt_uuid);
        }
    }

    /// This turn's own cost: the CLI's per-turn figure when it gives one, else the growth of
    /// its cumulative total (which resets if the CLI did not restore it on resume).
    fn turn_cost(&self, total: Option<f64>, since_last: Option<f64>) -> f64 {
        if let Some(cost) = since_last {
            return cost;
        }
        match total {
            Some(total) if total >= self.cost_baseline => total - self.cost_baseline,
            Some(total) => total,
            None => 0.0,
        }
    }

    /// The process exited: collect what it still wrote, kill what is left of its group, reap
    /// everything, and fail whatever was waiting.
    async fn finish(mut self, status: std::io::Result<ExitStatus>) {
        // Leftover members (tools the agent started) hold stdout open and would outlive it.
        process::signal_group(self.pid, Signal::SIGKILL);
        let drain_until = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
        while !self.stdout_eof {
            match tokio::time::timeout_at(drain_until, self.stdout.next_line()).await {
                Ok(Ok(Some(Line::Data(bytes)))) => self.on_line(&bytes),
                Ok(Ok(Some(Line::TooLong { .. }))) => {}
                Ok(Ok(None) | Err(_)) | Err(_) => self.stdout_eof = true,
            }
        }
        process::kill_remaining(self.pid, Duration::from_secs(1)).await;
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        self.group.armed = false;
        if let Some(guard) = &self.guard {
            guard.forget(self.pid);
        }
        let stderr_tail = self
            .stderr_tail
            .lock()
            .map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        let requested = self.stopping.is_some();
        let info = describe_exit(status, requested, stderr_tail);
        if requested {
            tracing::info!(agent = %self.label, pid = self.pid, status = %info.status, "agent stopped");
        } else {
            tracing::warn!(agent = %self.label, pid = self.pid, status = %info.status, stderr = %info.stderr_tail, "agent exited unexpectedly");
        }
        if let Some(turn) = self.turn.take() {
            let partial = turn.partial();
            let _ = turn.reply.send(Err(TurnError::Exited {
                exit: info.clone(),
                partial,
            }));
        }
        // Dropping `ready` and `pending_health` tells their waiters the process is gone.
        self.exit.send_replace(Some(info));
        // Turns that were parked or arrived after the exit get a clear answer too: `Gone`
        // (never written to the process, so the pool may safely retry them).
        self.commands.close();
        let parked: Vec<Command> = self.parked.drain(..).collect();
        for command in parked
            .into_iter()
            .chain(std::iter::from_fn(|| self.commands.try_recv().ok()))
        {
            match command {
                Command::Turn { reply, .. } => {
                    let _ = reply.send(Err(TurnError::Gone));
                }
                Command::Interrupt { reply } => {
                    let _ = reply.send(false);
                }
                Command::Health { .. } | Command::Stop => {}
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn describe_exit(
    status: std::io::Result<ExitStatus>,
    requested: bool,
    stderr_tail: String,
) -> ExitInfo {
    let (status, code, signal) = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (format!("exit code {code}"), Some(code), None),
            (None, Some(signal)) => {
                let name = Signal::try_from(signal).map_or("unknown", Signal::as_str);
                (
                    format!("killed by signal {signal} ({name})"),
                    None,
                    Some(signal),
                )
            }
            (None, None) => ("unknown exit status".to_owned(), None, None),
        },
        Err(error) => (format!("unknown ({error})"), None, None),
    };
    ExitInfo {
        status,
        code,
        signal,
        requested,
        stderr_tail,
    }
}

/// Cuts `text` to [`TRANSCRIPT_MAX_TEXT`] bytes on a character boundary.
fn truncate(text: &str) -> String {
    if text.len() <= TRANSCRIPT_MAX_TEXT {
        return text.to_owned();
    }
    let mut end = TRANSCRIPT_MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Writes queued lines to the agent's stdin, in order. Ends (closing stdin) when the actor
/// drops its sender, or when the pipe breaks because the process died.
async fn write_stdin(
    mut stdin: pipe::Sender,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
    label: Arc<str>,
) {
    while let Some(line) = lines.recv().await {
        if let Err(error) = stdin.write_all(&line).await {
            // EPIPE: the process is gone; its exit is reported by the actor.
            tracing::debug!(agent = %label, %error, "writing to agent stdin failed");
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Reads stderr continuously (so a full pipe never blocks the agent), logs it, and keeps the
/// last lines for error messages.
async fn drain_stderr(
    stderr: impl AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    label: Arc<str>,
    pid: u32,
) {
    let mut lines = LineReader::new(stderr, STDERR_LINE_MAX);
    while let Ok(Some(line)) = lines.next_line().await {
        let text = match line {
            Line::Data(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Line::TooLong { bytes } => format!("[{bytes}-byte line cut]"),
        };
        tracing::debug!(agent = %label, pid, stderr = %text);
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_character_boundaries() {
        let text = "é".repeat(TRANSCRIPT_MAX_TEXT);
        let cut = truncate(&text);
        assert!(cut.len() < text.len());
        assert!(cut.ends_with(&format!("({} bytes)", text.len())));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn describes_exits() {
        let info = describe_exit(Ok(ExitStatus::from_raw(3 << 8)), false, "boom".to_owned());
        assert_eq!((info.status.as_str(), info.code), ("exit code 3", Some(3)));
        let info = describe_exit(Ok(ExitStatus::from_raw(9)), true, String::new());
        assert_eq!(info.status, "killed by signal 9 (SIGKILL)");
        assert_eq!(info.to_string(), "killed by signal 9 (SIGKILL)");
        let info = describe_exit(
            Ok(ExitStatus::from_raw(1 << 8)),
            false,
            "Error: x\n".to_owned(),
        );
        assert_eq!(info.to_string(), "exit code 1; stderr: Error: x");
    }
}
