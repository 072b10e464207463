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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::GrantPermission;
use crate::guard::Guard;
use crate::permissions::{Place, Rules, Verdict};

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
    /// Working directory: the team's real path (Claude finds sessions by it).
    pub cwd: PathBuf,
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

/// A permission decision: whether the tool may run, and why (for the agent when denied, and
/// for the transcript).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDecision {
    /// Whether the tool may run.
    pub allowed: bool,
    /// Why: the rule that decided, or the `grantPermission` that did (when denied).
    pub reason: Option<String>,
}

impl PermissionPolicy {
    /// Decides a request to use `tool` with `input` from an agent working in `cwd` (what
    /// relative paths in rules and tool inputs are relative to).
    #[must_use]
    pub fn decide(&self, tool: &str, input: &Value, cwd: &Path) -> PermissionDecision {
        let [defaults, team] = (self.rules)();
        let place = Place {
            cwd,
            home: self.home.as_deref(),
        };
        let denied = |reason: String| PermissionDecision {
            allowed: false,
            reason: Some(reason),
        };
        match Rules::check(&[&defaults, &team], tool, input, &place) {
            Some(Verdict::Deny(rule)) => {
                return denied(format!(
                    "Iris denied {tool}: rule `{rule}` in permissions.deny"
                ));
            }
            Some(Verdict::Allow(rule)) => {
                return PermissionDecision {
                    allowed: true,
                    reason: Some(format!("allowed by rule `{rule}` in permissions.allow")),
                };
            }
            Some(Verdict::Ask(rule)) => {
                return denied(format!(
                    "Iris denied {tool}: rule `{rule}` in permissions.ask needs a person's \
                     approval, which this Iris version cannot ask for yet"
                ));
            }
            None => {}
        }
        match self.grant {
            GrantPermission::Yes => PermissionDecision {
                allowed: true,
                reason: None,
            },
            GrantPermission::No => denied(format!(
                "Iris denied {tool}: team '{}' has grantPermission: no",
                self.team
            )),
            GrantPermission::Ask | GrantPermission::Forward => denied(format!(
                "Iris denied {tool}: team '{}' has grantPermission: {}, which this Iris version \
                 cannot serve yet (no approver is connected); set grantPermission: yes or \
                 permissions.allow rules to allow tools",
                self.team,
                self.grant.as_str()
            )),
        }
    }
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

/// Where a turn's assistant text goes as it is written ([`Agent::turn_streaming`]).
pub type TextStream = mpsc::UnboundedSender<String>;

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
        self.run_turn(text, None, None).await
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
        self.run_turn(text, Some(response_timeout), None).await
    }

    /// [`Agent::turn_within`] that also sends the assistant's text to `text_stream` as the
    /// agent writes it (for progress: only this turn's text, nothing else).
    ///
    /// # Errors
    /// As [`Agent::turn`].
    pub async fn turn_streaming(
        &self,
        text: String,
        response_timeout: Duration,
        text_stream: Option<TextStream>,
    ) -> Result<TurnResult, TurnError> {
        self.run_turn(text, Some(response_timeout), text_stream)
            .await
    }

    async fn run_turn(
        &self,
        text: String,
        response_timeout: Option<Duration>,
        text_stream: Option<TextStream>,
    ) -> Result<TurnResult, TurnError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Turn {
                text,
                response_timeout,
                text_stream,
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
