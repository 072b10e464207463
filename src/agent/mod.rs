//! The driver for ONE headless Claude Code process.
//!
//! [`Agent::spawn`] starts the process (its own process group, a parent-death signal, piped
//! stdio), sends the `initialize` control request and returns once it is answered: starting
//! an agent costs no model turn. [`Agent`] is a cheap, cloneable handle; a private actor task
//! owns the child, its pipes and its per-process state, and serves one turn at a time.
//!
//! Invariant: only the actor touches the `Child`, its pipes and its pid's process group.
//! Invariant: every turn that was accepted ends, exactly once, with a `TurnResult` or a
//! `TurnError` — also when the process dies, hangs or is stopped.

mod actor;
pub mod lines;
pub mod protocol;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::GrantPermission;
use crate::guard::Guard;
use crate::permissions::{PairRules, Place, Rules, Verdict};
use crate::store::DecidedBy;

/// Everything needed to start one agent process. Built by the pool from the team's config.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// `caller->target`, for logs and error messages.
    pub label: Arc<str>,
    /// The executable: a path, or a bare name looked up on `PATH`.
    pub program: String,
    /// Where `program` came from (`set by teams.<name>.claudePath`, ...), named when it cannot be run.
    pub program_source: String,
    /// Arguments, flags in `--flag=value` form so no value can be read as a flag.
    pub args: Vec<String>,
    /// Working directory: the team's real path (Claude finds sessions by it). For a remote
    /// team, its path on the host (permission rules resolve paths against it).
    pub cwd: PathBuf,
    /// Where the local process runs when `cwd` is on another host (`ssh` for a remote team).
    pub local_dir: Option<PathBuf>,
    /// Written to the process's stdin before anything else (a remote agent's wrapper reads
    /// its MCP config and environment from it).
    pub stdin_preamble: Option<String>,
    /// Environment variables to set on top of Iris's own.
    pub env: Vec<(String, String)>,
    /// Environment variables to remove from what the agent inherits.
    pub env_remove: Vec<String>,
    /// How long the agent may take to answer `initialize`.
    pub spawn_timeout: Duration,
    /// A turn that prints nothing for this long is timed out and interrupted.
    pub response_timeout: Duration,
    /// Grace after closing stdin, and again after SIGTERM, before escalating.
    pub stop_grace: Duration,
    /// Longest stdout line accepted.
    pub max_line_bytes: usize,
    /// How `can_use_tool` requests are answered.
    pub permissions: PermissionPolicy,
    /// The session's cumulative cost before this process, so that the first turn's cost is
    /// its own when the CLI restores the cumulative total on resume.
    pub cost_baseline: f64,
}

/// Where an agent's permission rules come from: `settings.permissions`, then its team's.
/// Called at each request, so a reloaded configuration applies from the next one.
pub type RulesSource = Arc<dyn Fn() -> [Arc<Rules>; 2] + Send + Sync>;

/// What people allowed for good for the agent's pair (`iris approve --always`), read at each
/// request.
pub type AlwaysSource = Arc<dyn Fn() -> Arc<PairRules> + Send + Sync>;

/// How an agent's tool-permission requests are answered: the rules first (deny, then allow,
/// then ask), then the team's `grantPermission`.
#[derive(Clone)]
pub struct PermissionPolicy {
    /// The team's `grantPermission`.
    pub grant: GrantPermission,
    /// The team's name, quoted in denial messages.
    pub team: String,
    /// The rules in force.
    pub rules: RulesSource,
    /// The agent's home directory (its `HOME`), if known: what `~/` in rules and tool paths
    /// means.
    pub home: Option<PathBuf>,
    /// What people allowed for good for this pair, checked after the deny rules, with the
    /// allow rules.
    pub always: Option<AlwaysSource>,
    /// Iris's own directory (`IRIS_HOME`): no rule, person or setting lets the agent touch it
    /// ([`crate::permissions::touches`]).
    pub protected: Option<PathBuf>,
}

impl std::fmt::Debug for PermissionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [defaults, team] = (self.rules)();
        f.debug_struct("PermissionPolicy")
            .field("grant", &self.grant)
            .field("team", &self.team)
            .field("defaults", &defaults)
            .field("rules", &team)
            .finish_non_exhaustive()
    }
}

/// A decision on a tool-permission request: whether the tool may run, who decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Whether the tool may run.
    pub allowed: bool,
    /// Who or what decided.
    pub by: DecidedBy,
    /// Which rule, setting, person or caller, in words.
    pub who: Option<String>,
    /// The denial message the agent gets (when denied), or a note on the allowance.
    pub reason: Option<String>,
    /// The stored approval this decision closed, when a person was asked.
    pub approval: Option<String>,
}

impl Decided {
    fn denied(by: DecidedBy, who: String, reason: String) -> Self {
        Self {
            allowed: false,
            by,
            who: Some(who),
            reason: Some(reason),
            approval: None,
        }
    }

    fn allowed(by: DecidedBy, who: String) -> Self {
        Self {
            allowed: true,
            by,
            who: Some(who),
            reason: None,
            approval: None,
        }
    }
}

/// Why a request needs a person, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// `grantPermission: forward`: the caller's person decides (up the call chain);
    /// otherwise a person at Iris (`iris approve`, the dashboard).
    pub forward: bool,
    /// What sent it to a person: "rule `Edit(src/**)` in permissions.ask",
    /// "grantPermission: ask".
    pub why: String,
}

/// What the policy says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionDecision {
    /// Decided at once by a rule or `grantPermission`.
    Decided(Decided),
    /// A person decides.
    Person(Escalation),
}

impl PermissionDecision {
    /// Whether the tool may run now (a request left to a person may not, yet).
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Decided(decided) if decided.allowed)
    }
}

/// A tool-permission request of a running turn.
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionRequest {
    /// The tool.
    pub tool: String,
    /// Its input.
    pub input: Value,
    /// The CLI's `permission_suggestions` (`Value::Null` when it sent none).
    pub suggestions: Value,
}

/// A decision still to come.
pub type Pending = Pin<Box<dyn Future<Output = Decided> + Send>>;

/// The turn's link to the people who approve: given with a turn ([`Agent::turn_streaming`]),
/// it records every decision and asks a person when the policy says so. Without one, a
/// request that needs a person is denied, saying nobody can be asked.
pub trait TurnApprover: Send + Sync {
    /// Records a decision made at once (by a rule or `grantPermission`). Must not block.
    fn record(&self, request: &PermissionRequest, decided: &Decided);
    /// Asks a person; resolves with their decision, a timeout's or a fallback's. Dropping
    /// the future (the turn ended first) closes the request as expired.
    fn ask(&self, request: PermissionRequest, escalation: Escalation) -> Pending;
}

impl PermissionPolicy {
    /// Decides a request to use `tool` with `input` from an agent working in `cwd` (what
    /// relative paths in rules and tool inputs are relative to): the deny rules, then the
    /// allow rules and what people allowed for good, then the ask rules, then the team's
    /// `grantPermission`.
    #[must_use]
    pub fn decide(&self, tool: &str, input: &Value, cwd: &Path) -> PermissionDecision {
        let [defaults, team] = (self.rules)();
        let always = self.always.as_ref().map(|always| always());
        let place = Place {
            cwd,
            home: self.home.as_deref(),
        };
        if let Some(dir) = &self.protected
            && crate::permissions::touches(tool, input, &place, dir)
        {
            return PermissionDecision::Decided(Decided::denied(
                DecidedBy::Rule,
                format!("Iris's own directory {}", dir.display()),
                format!(
                    "Iris denied {tool}: it reaches into Iris's own directory ({}: its configuration, database and approver token), which no agent may read or change",
                    dir.display()
                ),
            ));
        }
        let empty = Rules::default();
        let pair_rules = always.as_deref().map_or(&empty, |always| &always.rules);
        match Rules::check(&[&defaults, &team, pair_rules], tool, input, &place) {
            Some(Verdict::Deny(rule)) => {
                return PermissionDecision::Decided(Decided::denied(
                    DecidedBy::Rule,
                    format!("rule `{rule}` in permissions.deny"),
                    format!("Iris denied {tool}: rule `{rule}` in permissions.deny"),
                ));
            }
            Some(Verdict::Allow(rule)) => {
                let who = match always.as_deref().and_then(|always| always.source(&rule)) {
                    Some(id) => format!("rule `{rule}` allowed always for this pair ({id})"),
                    None => format!("rule `{rule}` in permissions.allow"),
                };
                return PermissionDecision::Decided(Decided::allowed(DecidedBy::Rule, who));
            }
            verdict => {
                if let Some(id) = always
                    .as_deref()
                    .and_then(|always| always.exact(tool, input))
                {
                    return PermissionDecision::Decided(Decided::allowed(
                        DecidedBy::Rule,
                        format!("this exact {tool} input allowed always for this pair ({id})"),
                    ));
                }
                if let Some(Verdict::Ask(rule)) = verdict {
                    return PermissionDecision::Person(Escalation {
                        forward: self.grant == GrantPermission::Forward,
                        why: format!("rule `{rule}` in permissions.ask"),
                    });
                }
            }
        }
        match self.grant {
            GrantPermission::Yes => PermissionDecision::Decided(Decided::allowed(
                DecidedBy::Grant,
                format!("grantPermission: yes of team '{}'", self.team),
            )),
            GrantPermission::No => PermissionDecision::Decided(Decided::denied(
                DecidedBy::Grant,
                format!("grantPermission: no of team '{}'", self.team),
                format!(
                    "Iris denied {tool}: team '{}' has grantPermission: no",
                    self.team
                ),
            )),
            GrantPermission::Ask | GrantPermission::Forward => {
                PermissionDecision::Person(Escalation {
                    forward: self.grant == GrantPermission::Forward,
                    why: format!(
                        "grantPermission: {} of team '{}'",
                        self.grant.as_str(),
                        self.team
                    ),
                })
            }
        }
    }
}

/// A turn's progress, as it happens: the assistant's text, and the requests that wait for a
/// person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnProgress {
    /// Text the assistant wrote.
    Text(String),
    /// A tool-permission request now waits for a person.
    Waiting {
        /// The approval's id.
        approval: String,
        /// The tool.
        tool: String,
        /// Its input in a few words (`Edit src/api.rs`).
        summary: String,
        /// Who is asked: "a person at Iris (iris approve)", "the caller's person".
        asked: String,
    },
    /// A waiting request was decided.
    Decided {
        /// The approval's id.
        approval: String,
        /// Whether the tool may run.
        allowed: bool,
    },
}

/// Something the agent did during a turn, as it happened. Sent to the sink given to
/// [`Agent::spawn`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent printed the first line of its answer to the running turn (the CLI's
    /// `system/init`): it has the message.
    Answering,
    /// Text the assistant wrote, whole (the answer so far is made of it; the transcript
    /// keeps it cut).
    AssistantText {
        /// The text.
        text: String,
    },
    /// A tool call, a tool result or a permission decision, as the transcript records it.
    Step {
        /// The entry.
        entry: TranscriptEntry,
    },
    /// A stdout line was skipped: too long, not JSON, or of an unknown type.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// Where a turn's progress goes as it happens ([`Agent::turn_streaming`]).
pub type TextStream = mpsc::UnboundedSender<TurnProgress>;

/// Where an agent sends its [`AgentEvent`]s. Called on the actor task: must not block.
pub type EventSink = Arc<dyn Fn(AgentEvent) + Send + Sync>;

/// One entry of a turn's bounded transcript.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TranscriptEntry {
    /// Text the assistant wrote.
    AssistantText {
        /// The text (truncated).
        text: String,
    },
    /// A tool the assistant called.
    ToolUse {
        /// The tool's name.
        name: String,
        /// Its input, as JSON text (truncated).
        input: String,
    },
    /// What a tool returned.
    ToolResult {
        /// The result (truncated).
        content: String,
        /// Whether the tool failed or was denied.
        is_error: bool,
    },
    /// How Iris answered a tool-permission request.
    Permission {
        /// The tool.
        tool: String,
        /// Whether it was allowed.
        allowed: bool,
        /// The denial message, when denied.
        reason: Option<String>,
        /// Who or what decided (absent in transcripts written before approvals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<DecidedBy>,
        /// Which rule, setting, person or caller, in words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        who: Option<String>,
        /// The approval a person decided, when one was asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
    },
}

/// At most this many transcript entries are kept per turn; later ones are counted only.
pub const TRANSCRIPT_MAX_ENTRIES: usize = 256;
/// Each transcript text is cut to this many bytes (on a character boundary).
pub const TRANSCRIPT_MAX_TEXT: usize = 4096;

/// The structured outcome of one turn.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TurnResult {
    /// The `result` text, or all assistant text of the turn when the result has none.
    pub answer: String,
    /// True for API errors, interrupts and other failed turns (`is_error` of the result).
    pub is_error: bool,
    /// The result's subtype (`success`, `error_during_execution`, ...).
    pub subtype: String,
    /// The result's terminal reason (`completed`, `aborted_streaming`, `api_error`, ...).
    pub terminal_reason: Option<String>,
    /// Whether Iris interrupted this turn.
    pub interrupted: bool,
    /// Wall time from writing the message to reading the result, as Iris measured it.
    pub duration_ms: u64,
    /// `duration_ms` as the CLI reported it.
    pub cli_duration_ms: Option<u64>,
    /// Model round trips inside the turn.
    pub num_turns: Option<u64>,
    /// Token usage as reported.
    pub usage: Option<Value>,
    /// The cost of THIS turn in USD (not the CLI's cumulative total).
    pub cost_usd: f64,
    /// The CLI's cumulative `total_cost_usd` after this turn.
    pub total_cost_usd: Option<f64>,
    /// The session id the CLI reported.
    pub session_id: Option<String>,
    /// Error details the CLI gave (`errors`), for error subtypes.
    pub errors: Option<String>,
    /// What happened during the turn, bounded. Shared, not copied, with the message's record.
    pub transcript: Arc<[TranscriptEntry]>,
    /// Transcript entries dropped beyond [`TRANSCRIPT_MAX_ENTRIES`].
    pub transcript_dropped: usize,
}

impl TurnResult {
    /// Whether the turn ended because the model's API failed (the CLI's `terminal_reason`
    /// `api_error`, or its older sign: subtype `success` with `is_error`), as opposed to an
    /// interrupt or a limit.
    #[must_use]
    pub fn is_api_error(&self) -> bool {
        self.is_error
            && !self.interrupted
            && (self.terminal_reason.as_deref() == Some("api_error") || self.subtype == "success")
    }
}

/// How an agent process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// `exit code N`, `killed by signal N (NAME)`, or `unknown`.
    pub status: String,
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal, if it was killed by one.
    pub signal: Option<i32>,
    /// Whether Iris asked it to stop (as opposed to a crash).
    pub requested: bool,
    /// The last lines the process wrote to stderr.
    pub stderr_tail: String,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.status)?;
        if !self.stderr_tail.is_empty() {
            write!(formatter, "; stderr: {}", self.stderr_tail.trim_end())?;
        }
        Ok(())
    }
}

/// Why an agent could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpawnError {
    /// The executable does not exist.
    #[error(
        "claude executable '{program}' not found ({source_key}); install Claude Code, or set the right path in the config"
    )]
    MissingBinary {
        /// What was tried.
        program: String,
        /// The config key that named it.
        source_key: String,
    },
    /// The executable exists but cannot be run.
    #[error("cannot run claude executable '{program}' ({source_key}): {message}")]
    NotExecutable {
        /// What was tried.
        program: String,
        /// The config key that named it.
        source_key: String,
        /// The OS error.
        message: String,
    },
    /// The working directory is missing or not a directory.
    #[error("team directory {path} is not usable: {message}")]
    BadDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The process exited before answering `initialize`.
    #[error("agent {label} exited before it was ready: {exit}")]
    ExitedEarly {
        /// `caller->target`.
        label: Arc<str>,
        /// How it ended.
        exit: ExitInfo,
    },
    /// The process answered `initialize` with an error.
    #[error("agent {label} refused to initialize: {message}")]
    Refused {
        /// `caller->target`.
        label: Arc<str>,
        /// The CLI's error text.
        message: String,
    },
    /// Nothing answered `initialize` within `spawnTimeout`.
    #[error(
        "agent {label} did not answer initialize within {after:?} (spawnTimeout); stderr: {stderr_tail}"
    )]
    Timeout {
        /// `caller->target`.
        label: Arc<str>,
        /// The timeout.
        after: Duration,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// A remote team's host cannot be used (unreachable, no directory, no claude...).
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// Any other failure to start the process.
    #[error("cannot start agent {label}: {message}")]
    Io {
        /// `caller->target`.
        label: Arc<str>,
        /// The OS error.
        message: String,
    },
}

/// Why a turn did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TurnError {
    /// The process exited (crashed or was stopped) before the turn's result.
    #[error("agent process exited during the turn: {exit}")]
    Exited {
        /// How it ended.
        exit: ExitInfo,
        /// Assistant text received before the exit.
        partial: String,
    },
    /// The agent printed nothing for `responseTimeout`; the turn was interrupted.
    #[error("agent was silent for {after:?} (responseTimeout); the turn was interrupted")]
    TimedOut {
        /// The timeout.
        after: Duration,
        /// Assistant text received before the timeout.
        partial: String,
    },
    /// Another turn is running on this process (the pool never does this).
    #[error("agent is busy with another turn")]
    Busy,
    /// The process is gone and can take no more turns.
    #[error("agent process is no longer running")]
    Gone,
}

/// Why a health check failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HealthError {
    /// No answer in time.
    #[error("no answer to a control request within {0:?}")]
    Timeout(Duration),
    /// The process is gone.
    #[error("agent process is no longer running")]
    Gone,
}

/// Commands the actor serves.
enum Command {
    Turn {
        text: String,
        /// `None`: the spec's `response_timeout`.
        response_timeout: Option<Duration>,
        /// Gets the assistant's text of this turn as it is written.
        text_stream: Option<TextStream>,
        /// Asks people and records decisions for this turn.
        approver: Option<Arc<dyn TurnApprover>>,
        reply: oneshot::Sender<Result<TurnResult, TurnError>>,
    },
    Interrupt {
        reply: oneshot::Sender<bool>,
    },
    Health {
        reply: oneshot::Sender<()>,
    },
    Stop,
}

/// A handle to one running agent process. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

struct Shared {
    id: u64,
    pid: u32,
    label: Arc<str>,
    started: Instant,
    ready_after: Duration,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Agent")
            .field("id", &self.shared.id)
            .field("pid", &self.shared.pid)
            .field("label", &self.shared.label)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts the process and returns once it answered `initialize`.
    ///
    /// # Errors
    /// [`SpawnError`]: missing binary, bad directory, early exit (with status and stderr),
    /// refusal, or no answer within `spawn_timeout`. The process is gone when this fails.
    pub async fn spawn(
        spec: AgentSpec,
        sink: EventSink,
        guard: Option<Guard>,
    ) -> Result<Self, SpawnError> {
        actor::spawn(spec, sink, guard).await
    }

    /// A process-unique id for this agent (pids can be reused; this cannot).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The process id (also its process group id).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// When the process was started.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// How long the process took from spawn to answering `initialize`.
    #[must_use]
    pub fn ready_after(&self) -> Duration {
        self.shared.ready_after
    }

    /// `caller->target`.
    #[must_use]
    pub fn label(&self) -> &Arc<str> {
        &self.shared.label
    }

    /// Runs one turn: writes `text` as a user message and waits for the `result`.
    ///
    /// # Errors
    /// [`TurnError`] when the process exits, falls silent for `response_timeout`, is busy or gone.
    pub async fn turn(&self, text: String) -> Result<TurnResult, TurnError> {
        self.run_turn(text, None, None, None).await
    }

    /// [`Agent::turn`] with its own `response_timeout` instead of the spec's, so that a
    /// changed setting applies to the next turn of a process that is already running.
    ///
    /// # Errors
    /// As [`Agent::turn`].
    pub async fn turn_within(
        &self,
        text: String,
        response_timeout: Duration,
    ) -> Result<TurnResult, TurnError> {
        self.run_turn(text, Some(response_timeout), None, None)
            .await
    }

    /// [`Agent::turn_within`] that also sends the turn's progress to `text_stream` as it
    /// happens (only this turn's), and asks `approver` about the requests its rules leave to
    /// a person. While such a request waits, the turn is not timed out for silence.
    ///
    /// # Errors
    /// As [`Agent::turn`].
    pub async fn turn_streaming(
        &self,
        text: String,
        response_timeout: Duration,
        text_stream: Option<TextStream>,
        approver: Option<Arc<dyn TurnApprover>>,
    ) -> Result<TurnResult, TurnError> {
        self.run_turn(text, Some(response_timeout), text_stream, approver)
            .await
    }

    async fn run_turn(
        &self,
        text: String,
        response_timeout: Option<Duration>,
        text_stream: Option<TextStream>,
        approver: Option<Arc<dyn TurnApprover>>,
    ) -> Result<TurnResult, TurnError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Turn {
                text,
                response_timeout,
                text_stream,
                approver,
                reply,
            })
            .await
            .map_err(|_| TurnError::Gone)?;
        answer.await.unwrap_or(Err(TurnError::Gone))
    }

    /// Interrupts the running turn, if any (the `interrupt` control request). The turn then
    /// ends with an error result and the process stays usable. Returns whether a turn was
    /// running.
    pub async fn interrupt(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Interrupt { reply })
            .await
            .is_err()
        {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// A token-free round trip through the CLI's control channel.
    ///
    /// # Errors
    /// [`HealthError`] when no answer comes within `timeout` or the process is gone.
    pub async fn health_check(&self, timeout: Duration) -> Result<Duration, HealthError> {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Health { reply })
            .await
            .map_err(|_| HealthError::Gone)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(_)) => Err(HealthError::Gone),
            Err(_) => Err(HealthError::Timeout(timeout)),
        }
    }

    /// Stops the process gracefully (close stdin, grace, SIGTERM to the group, grace,
    /// SIGKILL), reaps the whole group and returns how it ended.
    pub async fn stop(&self) -> ExitInfo {
        // A closed channel means the actor already ended: the exit is (about to be) known.
        let _ = self.commands.send(Command::Stop).await;
        self.exited().await
    }

    /// Waits until the process has ended and been reaped.
    pub async fn exited(&self) -> ExitInfo {
        let mut exit = self.shared.exit.clone();
        loop {
            if let Some(info) = exit.borrow_and_update().clone() {
                return info;
            }
            if exit.changed().await.is_err() {
                // The actor dropped its sender without publishing: only possible when the
                // runtime is shutting down; the group was killed by the drop guard.
                return ExitInfo {
                    status: "unknown".to_owned(),
                    code: None,
                    signal: None,
                    requested: true,
                    stderr_tail: String::new(),
                };
            }
        }
    }

    /// Whether the process has ended.
    #[must_use]
    pub fn has_exited(&self) -> bool {
        self.shared.exit.borrow().is_some()
    }
}
