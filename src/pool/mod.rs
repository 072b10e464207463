//! The warm pool: at most one live agent process per (caller → target) pair, at most
//! `maxProcesses` in all, each pair's turns served one at a time in FIFO order.
//!
//! Each pair has a worker task that owns its queue: it takes the next turn, makes sure the
//! pair has a ready agent (spawning it, with `--resume` once the session has a transcript),
//! runs the turn and answers. The shared `State` (`state.rs`, one `std::sync::Mutex`, never
//! held across an await) records every pair's slot; its methods are the only way to change a
//! slot or the live count, so capacity is checked and taken atomically.
//!
//! Invariant: `State::live` counts the slots that are `Spawning`, `Idle`, `Busy` or
//! `Stopping`, and never exceeds `maxProcesses`; a slot is freed only after its process has
//! exited and been reaped.
//! Invariant: only `Idle` agents are evicted; an agent is `Busy` from the moment a turn or a
//! health check takes it until that ends, so eviction never interrupts work.
//! Invariant: every slot transition checks the agent's identity, so a late notice about an
//! old process never touches its successor.
//!
//! The configuration can be replaced while the pool runs ([`Pool::set_config`], see
//! `reconfigure.rs`): workers wake on every change, refuse messages to a team that is gone
//! and replace idle processes that were started with settings that changed.

mod approvals;
mod callback;
mod clients;
mod launch;
mod lineage;
mod reconfigure;
mod recovery;
mod state;
mod worker;

pub use approvals::{
    ApprovalError, ApprovalEvent, ElicitAnswer, ElicitFuture, Elicitor, PersonDecision, Question,
    Route,
};
pub use callback::{CALLBACK_PREFIX, agent_config_dir};
pub use clients::{BridgeHandle, BridgeStatus};
pub use launch::{
    AGENT_KEY_VARIABLE, ForkCommand, Launch, SessionMode, agent_spec, fixed_rules, fork_command,
    transcript_path,
};
pub use lineage::BudgetUse;
pub use state::ExitReason;

use state::{PairEntry, Session, State};
use worker::Worker;
#[cfg(test)]
use worker::{SessionProblem, session_problem};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::agent::{Agent, AgentEvent, SpawnError, TurnError, TurnResult};
use crate::config::{Config, ConfigChanges, NameError, TeamName};
use crate::guard::Guard;
use crate::store::{
    MessageId, MessageMode, MessageRecord, MessageState, NewMessage, Page, SessionRecord,
    SessionStatus, Store, StoreError, now_ms,
};

/// A caller team and a target team: the unit that owns one conversation and one process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct Pair {
    /// Who sends.
    pub caller: TeamName,
    /// Whose agent answers.
    pub target: TeamName,
}

impl Pair {
    /// A pair from two names.
    #[must_use]
    pub fn new(caller: TeamName, target: TeamName) -> Self {
        Self { caller, target }
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}->{}", self.caller, self.target)
    }
}

/// What went wrong with a pool request. Every variant names the pair or team concerned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// A name is not a valid team name.
    #[error("invalid {role} name: {source}")]
    InvalidName {
        /// `caller` or `target`.
        role: &'static str,
        /// What is wrong with it.
        #[source]
        source: Arc<NameError>,
    },
    /// The target is not a configured team.
    #[error("unknown team '{name}'; {}known teams: {}", suggestion.as_ref().map(|near| format!("did you mean '{near}'? ")).unwrap_or_default(), if known.is_empty() { "none (add one with `iris add-team`)".to_owned() } else { known.join(", ") })]
    UnknownTeam {
        /// The name given.
        name: String,
        /// The configured team it is most likely a typo of.
        suggestion: Option<String>,
        /// The configured teams.
        known: Vec<String>,
    },
    /// The pair's queue is full.
    #[error("queue for {pair} is full ({limit} messages waiting; maxQueuePerPair)")]
    QueueFull {
        /// The pair.
        pair: String,
        /// The bound.
        limit: usize,
    },
    /// Every process is busy and none freed up in time.
    #[error(
        "pool saturated ({busy}/{max} busy); no agent process became free within {waited:?} (poolWaitTimeout)"
    )]
    Saturated {
        /// Processes that were busy (or starting, or stopping).
        busy: usize,
        /// `maxProcesses`.
        max: usize,
        /// How long the request waited.
        waited: Duration,
    },
    /// The pair's agent could not be started.
    #[error("cannot start agent for {pair}: {source}")]
    Spawn {
        /// The pair.
        pair: String,
        /// Why.
        #[source]
        source: SpawnError,
    },
    /// The turn failed (process exited, timed out).
    #[error("turn on {pair} failed: {source}")]
    Turn {
        /// The pair.
        pair: String,
        /// Why.
        #[source]
        source: TurnError,
    },
    /// The pool is shutting down (a queued message stays queued and is delivered when Iris
    /// starts again).
    #[error("iris is shutting down")]
    ShuttingDown,
    /// The message store failed.
    #[error("message store: {source}")]
    Store {
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Another Iris already uses this database, or its lock file cannot be used.
    #[error("{}: {message}", path.display())]
    Instance {
        /// The lock file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Who is calling is unknown or contradictory.
    #[error("caller: {message}")]
    Caller {
        /// What is wrong.
        message: String,
    },
    /// No message has this id.
    #[error("no message with id {id}")]
    UnknownMessage {
        /// The id given.
        id: String,
    },
    /// The message was cancelled before it ran.
    #[error("message {id} was cancelled")]
    Cancelled {
        /// The message.
        id: MessageId,
    },
    /// The message would wait on a turn that waits for it: refused at once.
    #[error(
        "would deadlock: {chain}; the first turn ({first}) is waiting for this one, and this one would queue behind it"
    )]
    WouldDeadlock {
        /// The teams of the cycle: `a → b → a → b`.
        chain: String,
        /// The message whose turn waits.
        first: MessageId,
    },
    /// The chain of calls is longer than `settings.maxCallDepth`.
    #[error(
        "call chain too deep: {chain} would be {depth} messages long, and settings.maxCallDepth is {max}"
    )]
    TooDeep {
        /// The teams of the chain.
        chain: String,
        /// Its length with this message.
        depth: usize,
        /// `settings.maxCallDepth`.
        max: usize,
    },
    /// The target team is over its budget.
    #[error(
        "team '{team}' is over its budget: {detail}; new messages to it are refused until it is under again"
    )]
    OverBudget {
        /// The team.
        team: String,
        /// What is over, with the figures.
        detail: String,
    },
    /// The target team was removed from the configuration while the
    /// message waited in its queue: it was not delivered.
    #[error(
        "team '{team}' was removed from the configuration while the message waited; it was not delivered"
    )]
    TeamRemoved {
        /// The team.
        team: String,
    },
}

impl PoolError {
    /// `name` is not a team of `config`.
    pub(crate) fn unknown_team(config: &Config, name: &str) -> Self {
        Self::UnknownTeam {
            name: crate::config::cut_echo(name),
            suggestion: crate::config::nearest_team(config, name).map(str::to_owned),
            known: config.team_names(),
        }
    }
}

impl From<StoreError> for PoolError {
    fn from(source: StoreError) -> Self {
        Self::Store { source }
    }
}

/// Who asks to see or act on a message ([`Pool::message`], [`Pool::wait_message`],
/// [`Pool::cancel`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// Iris itself and its local operator (the console): every message.
    Anyone,
    /// A caller whose team is not proven (it states `fromTeam`, over loopback or with the
    /// server-wide token): every message but those of the teams that have a token of their
    /// own (`protected`), which only their token or agent URL may see.
    Unproven {
        /// The teams with a token.
        protected: Vec<TeamName>,
    },
    /// A caller whose team is proven (an agent URL, a team token, the stdio server's
    /// directory): only the messages that team sent.
    Team(TeamName),
}

impl Viewer {
    /// Whether it may see `record`.
    #[must_use]
    pub fn may_see(&self, record: &MessageRecord) -> bool {
        match self {
            Self::Anyone => true,
            Self::Unproven { protected } => !protected.contains(&record.caller),
            Self::Team(team) => record.caller == *team,
        }
    }
}

/// A finished turn, with where it ran.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TurnOutcome {
    /// The message.
    pub message_id: MessageId,
    /// The pair.
    pub pair: Pair,
    /// The pair's session.
    pub session_id: Uuid,
    /// The agent's pid.
    pub pid: u32,
    /// Whether this turn had to start the process first.
    pub cold: bool,
    /// The turn itself.
    pub result: TurnResult,
}

/// What the pool reports as it works (for logs, dashboards and tests).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PoolEvent {
    /// A process is being started.
    Spawning {
        /// The pair.
        pair: Pair,
        /// Its session.
        session_id: Uuid,
        /// Whether it resumes the session.
        resume: bool,
    },
    /// A process answered `initialize`.
    Ready {
        /// The pair.
        pair: Pair,
        /// The process.
        pid: u32,
        /// Spawn to ready.
        ready_ms: u64,
    },
    /// A process could not be started.
    SpawnFailed {
        /// The pair.
        pair: Pair,
        /// Why.
        error: String,
    },
    /// A turn was written to the agent.
    TurnStarted {
        /// The message.
        id: MessageId,
        /// The pair.
        pair: Pair,
        /// The process.
        pid: u32,
    },
    /// Something the agent did during a turn.
    Agent {
        /// The pair.
        pair: Pair,
        /// What.
        event: AgentEvent,
    },
    /// A turn ended with a result.
    TurnFinished {
        /// The pair.
        pair: Pair,
        /// The result's `is_error`.
        is_error: bool,
        /// This turn's cost.
        cost_usd: f64,
        /// Wall time.
        duration_ms: u64,
    },
    /// A turn ended without a result.
    TurnFailed {
        /// The pair.
        pair: Pair,
        /// Why.
        error: String,
    },
    /// An idle process was stopped to make room for another pair.
    Evicted {
        /// The pair whose process was stopped.
        pair: Pair,
        /// The process.
        pid: u32,
        /// The pair that needed the slot.
        for_pair: Pair,
    },
    /// A process ended.
    Exited {
        /// The pair.
        pair: Pair,
        /// The process.
        pid: u32,
        /// Why.
        reason: ExitReason,
        /// Exit status.
        status: String,
    },
    /// An idle process answered its health check (a control round trip, no model turn).
    HealthChecked {
        /// The pair.
        pair: Pair,
        /// The process.
        pid: u32,
        /// How long the round trip took.
        round_trip_ms: u64,
    },
    /// A health check failed; the process is replaced.
    Unhealthy {
        /// The pair.
        pair: Pair,
        /// The process.
        pid: u32,
        /// Why.
        error: String,
    },
    /// A message was accepted (written to the store and queued).
    MessageQueued {
        /// The message.
        id: MessageId,
        /// The pair.
        pair: Pair,
        /// ask, tell or quick.
        mode: MessageMode,
    },
    /// A message reached its final state.
    MessageFinished {
        /// The message.
        id: MessageId,
        /// The pair.
        pair: Pair,
        /// Its final state.
        state: MessageState,
    },
    /// The session could not be resumed and a new one was started.
    SessionReset {
        /// The pair.
        pair: Pair,
        /// The lost session.
        old_session_id: Uuid,
        /// The new one.
        session_id: Uuid,
    },
    /// A new configuration is in force ([`Pool::set_config`]; the config file was edited).
    ConfigReloaded {
        /// The file it came from (`None`: set by a program, not read from a file).
        file: Option<std::path::PathBuf>,
        /// What changed (team `env` values are never included).
        changes: ConfigChanges,
    },
    /// An edited config file was not valid: the configuration in force stays.
    ConfigRejected {
        /// The file.
        file: std::path::PathBuf,
        /// Why, as the loader says it: one problem per line, each with file, line and column.
        error: String,
    },
}

/// A pair's process state, as reported by [`Pool::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairState {
    /// No process.
    Stopped,
    /// Being started.
    Spawning,
    /// Ready for a turn.
    Idle,
    /// Running a turn (or a health check).
    Busy,
    /// Being stopped.
    Stopping,
}

/// One pair in [`PoolStatus`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PairStatus {
    /// The pair.
    pub pair: Pair,
    /// Its process state.
    pub state: PairState,
    /// The process, if one is live.
    pub pid: Option<u32>,
    /// The pair's session.
    pub session_id: Uuid,
    /// Since the process started.
    pub uptime_ms: Option<u64>,
    /// Turns this process has run.
    pub process_turns: u64,
    /// Turns on this session, over all processes.
    pub session_turns: u64,
    /// Messages waiting behind the running one.
    pub queued: usize,
    /// Since the last turn ended (or the pair was created).
    pub idle_ms: u64,
    /// The session's total cost so far.
    pub total_cost_usd: f64,
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// `maxProcesses`.
    pub max_processes: usize,
    /// Slots in use (spawning, idle, busy or stopping).
    pub live: usize,
    /// Every pair that was used, in pair order.
    pub pairs: Vec<PairStatus>,
    /// The teams with a `budget`: their use against it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetUse>,
    /// The `iris serve --stdio` bridges connected to this Iris (Claude Code sessions).
    #[serde(default)]
    pub bridges: Vec<BridgeStatus>,
}

/// Options that are not configuration.
#[derive(Debug, Clone, Default)]
pub struct PoolOptions {
    /// The orphan guard that stops agents if Iris is killed.
    pub guard: Option<Guard>,
    /// Where Iris serves MCP over HTTP, when it is known before the pool starts (see
    /// [`Pool::set_callback_base`]): then even the agents that deliver messages queued before
    /// a restart get their Iris MCP server.
    pub callback_base: Option<String>,
    /// The port of a loopback listener that serves agent URLs only, which remote teams'
    /// tunnels lead to (see [`Pool::set_tunnel_port`]); without one, remote agents start
    /// without Iris's MCP server.
    pub tunnel_port: Option<u16>,
}

/// The pool. Cheap to clone; all clones are the same pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: RwLock<Arc<Config>>,
    /// Bumped by every configuration change that applies; workers watch it.
    config_version: watch::Sender<u64>,
    state: Mutex<State>,
    /// Woken whenever a slot frees up or a process becomes idle (evictable).
    slot_changed: Notify,
    events: broadcast::Sender<PoolEvent>,
    guard: Option<Guard>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    store: Store,
    /// Serializes loading and replacing sessions (rare; never held by a turn).
    sessions: tokio::sync::Mutex<()>,
    /// Per-agent MCP URLs and the teams they identify.
    callbacks: callback::Callbacks,
    /// The ssh connections to remote teams' hosts.
    remotes: crate::remote::Remotes,
    /// Tool-permission requests waiting for people, and what people allowed for good.
    approvals: Arc<approvals::Approvals>,
    /// Which message's turn sent which; what each team's turns cost lately.
    lineage: lineage::Lineage,
    /// The bridges connected, and when a client was last seen.
    clients: Arc<clients::Clients>,
    /// What `/metrics` reports.
    metrics: Arc<crate::metrics::Metrics>,
    /// Held while the pool exists: one Iris per database.
    _instance: recovery::InstanceLock,
}

pub(crate) enum Job {
    Turn {
        id: MessageId,
        text: String,
        /// `None` for messages nobody waits on (recovered after a restart).
        reply: Option<oneshot::Sender<Result<TurnOutcome, PoolError>>>,
        /// Where the turn's progress goes as it happens (the ticket's).
        progress: Option<crate::agent::TextStream>,
        /// Who decides the turn's forwarded permission requests.
        route: Route,
    },
    Wake {
        reply: oneshot::Sender<Result<u32, PoolError>>,
    },
}

/// A message accepted into a pair's queue (and written to the store); await it for the
/// outcome.
pub struct Ticket {
    id: MessageId,
    answer: oneshot::Receiver<Result<TurnOutcome, PoolError>>,
    progress: Option<mpsc::UnboundedReceiver<crate::agent::TurnProgress>>,
}

impl Ticket {
    /// The message's id, valid in the store at once.
    #[must_use]
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// This message's turn as it happens: the assistant's text piece by piece (the answer so
    /// far), and the permission requests that wait for a person. Taken once; the stream ends
    /// with the turn.
    pub fn take_progress(&mut self) -> Option<mpsc::UnboundedReceiver<crate::agent::TurnProgress>> {
        self.progress.take()
    }

    /// Waits for the turn to finish.
    ///
    /// # Errors
    /// [`PoolError`] when the turn could not run or failed.
    pub async fn outcome(self) -> Result<TurnOutcome, PoolError> {
        self.answer.await.unwrap_or(Err(PoolError::ShuttingDown))
    }
}

impl Pool {
    /// Opens the store and starts the pool: messages left `running` by a previous Iris are
    /// marked `interrupted` (never re-run), `queued` ones are queued again in order, old
    /// messages are pruned, and agent processes a previous Iris left behind are stopped.
    ///
    /// # Errors
    /// [`PoolError::Store`] when the database cannot be opened or recovered.
    pub async fn start(config: Arc<Config>, options: PoolOptions) -> Result<Self, PoolError> {
        let instance = recovery::lock_instance(&config.database)?;
        let store = Store::open(&config.database).await?;
        let recovery = store.recover().await?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let approvals =
            Arc::new(approvals::Approvals::open(store.clone(), Arc::clone(&metrics)).await?);
        let lineage = lineage::Lineage::default();
        for (team, at_ms, cost_usd) in store.recent_turns(now_ms() - 24 * 3_600_000).await? {
            lineage.turn_done(&team, cost_usd, at_ms);
        }
        if !recovery.interrupted.is_empty() {
            tracing::warn!(
                count = recovery.interrupted.len(),
                "messages that were running when Iris stopped are marked interrupted"
            );
        }
        let pruned = store.prune().await?;
        if pruned > 0 {
            tracing::info!(pruned, "old messages pruned");
        }
        recovery::stop_leftover_agents(&store, config.settings.stop_grace_period).await?;
        callback::clear_agent_configs(&callback::agent_config_dir(&config.iris_home));
        let (events, _) = broadcast::channel(4096);
        let remotes = crate::remote::Remotes::new(&config.iris_home, options.guard.clone());
        let callbacks = callback::Callbacks::with_base(options.callback_base.as_deref());
        if let Some(port) = options.tunnel_port {
            callbacks.set_tunnel_port(port);
        }
        let pool = Self {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                config_version: watch::Sender::new(0),
                state: Mutex::new(State::default()),
                slot_changed: Notify::new(),
                events,
                guard: options.guard,
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
                store,
                sessions: tokio::sync::Mutex::new(()),
                callbacks,
                remotes,
                approvals,
                lineage,
                clients: Arc::default(),
                metrics,
                _instance: instance,
            }),
        };
        if let Err(error) = pool.requeue(recovery.queued).await {
            // Do not leave a half-started pool (workers, the instance lock) behind.
            pool.shutdown().await;
            return Err(error);
        }
        pool.inner
            .tasks
            .spawn(prune_periodically(pool.inner.clone()));
        Ok(pool)
    }

    /// The message store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        self.inner.config()
    }

    /// Where Iris serves MCP over HTTP (`http://127.0.0.1:PORT`): agents started from now on
    /// get a URL of their own under it (`--mcp-config`), so their calls back are attributed
    /// to their team. Without it agents get no Iris MCP server.
    pub fn set_callback_base(&self, base: &str) {
        self.inner.callbacks.set_base(base);
    }

    /// The loopback port of a listener that serves agent URLs only (`/mcp/s/<token>`):
    /// remote teams' tunnels lead there, so whoever else can reach a tunnel's port on a
    /// host finds nothing but the agent URLs, whose tokens it does not know. Without it
    /// remote agents get no tunnel.
    pub fn set_tunnel_port(&self, port: u16) {
        self.inner.callbacks.set_tunnel_port(port);
    }

    /// The pair of the agent that holds the call-back `token` (the last segment of its
    /// `/mcp/s/<token>` URL; the agent's team is the pair's target); `None` for a token this
    /// Iris never gave out.
    #[must_use]
    pub fn callback_pair(&self, token: &str) -> Option<Pair> {
        self.inner.callbacks.pair(token)
    }

    /// Events as they happen. A slow subscriber misses events (it sees `Lagged`), never
    /// slows the pool.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.inner.events.subscribe()
    }

    /// Checks the names: the caller must be a valid name, the target a configured team.
    ///
    /// # Errors
    /// [`PoolError::InvalidName`] or [`PoolError::UnknownTeam`].
    pub fn pair(&self, caller: &str, target: &str) -> Result<Pair, PoolError> {
        let caller = TeamName::new(caller).map_err(|error| PoolError::InvalidName {
            role: "caller",
            source: Arc::new(error),
        })?;
        let config = self.config();
        let Some(team) = config.team(target) else {
            return Err(PoolError::unknown_team(&config, target));
        };
        // A caller need not be a team (a person, a script), but a name one typo away from a
        // team is almost surely that team misspelt: it would silently start a new pair.
        if config.team(caller.as_str()).is_none()
            && caller.as_str().chars().count() >= 4
            && let Some(near) = crate::config::nearest_team(&config, caller.as_str())
        {
            return Err(PoolError::Caller {
                message: format!(
                    "unknown caller '{caller}'; did you mean '{near}'? (a caller that is not a team may use any name not this close to a team's)"
                ),
            });
        }
        Ok(Pair::new(caller, team.name.clone()))
    }

    /// Writes `text` to the store and queues it for `pair`; returns as soon as it is
    /// written (accepted = written). The ticket yields the outcome.
    ///
    /// # Errors
    /// [`PoolError::QueueFull`], [`PoolError::Store`] or [`PoolError::ShuttingDown`].
    pub async fn submit(
        &self,
        pair: &Pair,
        text: String,
        mode: MessageMode,
    ) -> Result<Ticket, PoolError> {
        self.submit_routed(pair, text, mode, Route::Nobody).await
    }

    /// [`Pool::submit`] that names who decides the turn's `grantPermission: forward`
    /// requests: the caller's connection, or (for an agent calling) up its call chain.
    ///
    /// # Errors
    /// As [`Pool::submit`].
    pub async fn submit_routed(
        &self,
        pair: &Pair,
        text: String,
        mode: MessageMode,
        route: Route,
    ) -> Result<Ticket, PoolError> {
        let parent = self.check_chain(pair, mode, &route)?;
        // The route names the turn it came from, so a question is never put to the caller of
        // a later message of the same agent.
        let route = match route {
            Route::Agent { pair: agent, .. } => Route::Agent {
                pair: agent,
                message: parent,
            },
            route => route,
        };
        self.check_budget(&pair.target)?;
        let jobs = self.ensure_pair(pair, 0).await?;
        // Take the queue place first, so a full queue refuses before anything is written.
        let permit = self.reserve_queue_place(pair, jobs)?;
        let id = MessageId::new();
        let session_id = self.inner.lock().entry(pair).map(|entry| entry.session.id);
        self.inner
            .store
            .insert_message(NewMessage {
                id,
                caller: pair.caller.clone(),
                target: pair.target.clone(),
                session_id,
                mode,
                text: text.clone(),
                parent,
            })
            .await?;
        self.inner
            .lineage
            .add(id, pair, parent, mode == MessageMode::Ask);
        let (reply, answer) = oneshot::channel();
        let (progress_sender, progress) = mpsc::unbounded_channel();
        permit.send(Job::Turn {
            id,
            text,
            reply: Some(reply),
            progress: Some(progress_sender),
            route,
        });
        self.inner.emit(PoolEvent::MessageQueued {
            id,
            pair: pair.clone(),
            mode,
        });
        Ok(Ticket {
            id,
            answer,
            progress: Some(progress),
        })
    }

    /// The message whose turn sends this one (when an agent calls through its agent URL),
    /// after checking that the chain stays within `settings.maxCallDepth` and that an ask
    /// would not wait on its own chain: the pair it goes to running a turn that waits,
    /// through the chain, for it.
    fn check_chain(
        &self,
        pair: &Pair,
        mode: MessageMode,
        route: &Route,
    ) -> Result<Option<MessageId>, PoolError> {
        let Route::Agent { pair: agent, .. } = route else {
            return Ok(None);
        };
        let Some(parent) = self.inner.approvals.running_message(agent) else {
            return Ok(None);
        };
        let chain = self.inner.lineage.chain(parent, agent);
        let max = self.config().settings.max_call_depth;
        let depth = self.inner.lineage.depth(parent) + 1;
        if depth > max {
            return Err(PoolError::TooDeep {
                chain: lineage::describe(&chain, pair),
                depth,
                max,
            });
        }
        // A deadlock only if the turn running on the target pair waits, link by link, for
        // this message: every message after it in the chain, and this one, waited for.
        if mode == MessageMode::Ask
            && let Some(running) = self.inner.approvals.running_message(pair)
            && let Some(at) = chain.iter().position(|step| step.id == running)
            && chain[at + 1..].iter().all(|step| step.waited_for)
        {
            return Err(PoolError::WouldDeadlock {
                chain: lineage::describe(&chain[at..], pair),
                first: running,
            });
        }
        Ok(Some(parent))
    }

    /// Refuses a message to a team over its `budget`.
    fn check_budget(&self, team: &TeamName) -> Result<(), PoolError> {
        let config = self.config();
        let Some(budget) = config
            .team(team.as_str())
            .map(|team| team.budget)
            .filter(|budget| budget.usd_per_day.is_some() || budget.turns_per_hour.is_some())
        else {
            return Ok(());
        };
        match self.inner.lineage.budget_use(team, budget).over() {
            Some(detail) => Err(PoolError::OverBudget {
                team: team.to_string(),
                detail,
            }),
            None => Ok(()),
        }
    }

    /// Every team with a `budget`: its use against it.
    #[must_use]
    pub fn budgets(&self) -> Vec<BudgetUse> {
        let config = self.config();
        config
            .teams
            .values()
            .filter(|team| {
                team.budget.usd_per_day.is_some() || team.budget.turns_per_hour.is_some()
            })
            .map(|team| self.inner.lineage.budget_use(&team.name, team.budget))
            .collect()
    }

    /// The chain of calls that ends with message `id`, root first, from the store (each
    /// message's `parent_id`): at most 64 messages.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn chain_of(&self, record: &MessageRecord) -> Result<Vec<MessageRecord>, StoreError> {
        let mut chain = vec![record.clone()];
        let mut next = record.parent_id;
        while let Some(parent) = next {
            if chain.len() >= 64 || chain.iter().any(|seen| seen.id == parent) {
                break;
            }
            let Some(found) = self.inner.store.message(parent).await? else {
                break;
            };
            next = found.parent_id;
            chain.push(found);
        }
        chain.reverse();
        Ok(chain)
    }

    /// Fire and forget: writes and queues `text`, returning its id at once. The message is
    /// delivered in order, also after a restart of Iris.
    ///
    /// # Errors
    /// As [`Pool::submit`].
    pub async fn tell(
        &self,
        pair: &Pair,
        text: String,
        mode: MessageMode,
    ) -> Result<MessageId, PoolError> {
        Ok(self.submit(pair, text, mode).await?.id())
    }

    /// A message's record (state, answer, transcript...), if `viewer` may see it: a team
    /// whose identity is proven sees only the messages it sent; to it, any other message
    /// does not exist.
    ///
    /// # Errors
    /// [`PoolError::UnknownMessage`] or [`PoolError::Store`].
    pub async fn message(
        &self,
        id: MessageId,
        viewer: &Viewer,
    ) -> Result<MessageRecord, PoolError> {
        self.inner
            .store
            .message(id)
            .await?
            .filter(|record| viewer.may_see(record))
            .ok_or_else(|| PoolError::UnknownMessage { id: id.to_string() })
    }

    /// The record of a message whose id is handed to a caller that stopped waiting for its
    /// answer (`pending`): from then on the id is an acknowledgement. An unfinished ask
    /// becomes a tell (so it is delivered after a restart, if still queued) and is synced to
    /// disk first (an ask is written without a sync while its sender waits).
    ///
    /// # Errors
    /// As [`Pool::message`], or [`PoolError::Store`] if the write fails.
    pub async fn acknowledge(&self, id: MessageId) -> Result<MessageRecord, PoolError> {
        self.inner.lineage.not_waited_for(id);
        self.inner.store.acknowledge(id).await?;
        self.message(id, &Viewer::Anyone).await
    }

    /// Waits up to `timeout` for a message to reach a final state, then returns its record
    /// (final or not), if `viewer` may see it (as [`Pool::message`]).
    ///
    /// # Errors
    /// As [`Pool::message`].
    pub async fn wait_message(
        &self,
        id: MessageId,
        timeout: Duration,
        viewer: &Viewer,
    ) -> Result<MessageRecord, PoolError> {
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let record = self.message(id, viewer).await?;
            if record.state.is_final() {
                return Ok(record);
            }
            let finished = async {
                loop {
                    match events.recv().await {
                        Ok(PoolEvent::MessageFinished { id: done, .. }) if done == id => return,
                        // Missed events: look at the store again.
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                        Ok(_) => {}
                    }
                }
            };
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return self.message(id, viewer).await;
            }
        }
    }

    /// Cancels a message: a queued one is removed from its queue, a running one is
    /// interrupted. Either way it ends `cancelled`. Returns the message's state after the
    /// cancel took effect (a message that had already finished keeps its state). `viewer`
    /// may cancel only what it may see ([`Pool::message`]).
    ///
    /// # Errors
    /// As [`Pool::message`].
    pub async fn cancel(&self, id: MessageId, viewer: &Viewer) -> Result<MessageState, PoolError> {
        let record = self.message(id, viewer).await?;
        match record.state {
            MessageState::Queued if self.inner.store.cancel_queued(id).await? => {
                self.inner.emit(PoolEvent::MessageFinished {
                    id,
                    pair: Pair::new(record.caller, record.target),
                    state: MessageState::Cancelled,
                });
                return Ok(MessageState::Cancelled);
            }
            state if state.is_final() => return Ok(state),
            _ => {}
        }
        // Running (or started between the read and the cancel): the pair's worker interrupts
        // the turn once it is written, or skips it if it is not yet.
        let pair = Pair::new(record.caller, record.target);
        if let Some(entry) = self.inner.lock().entry_mut(&pair)
            && entry.current == Some(id)
        {
            entry.cancel_requested = true;
            entry.cancel_signal.notify_one();
        }
        let grace = self.config().settings.stop_grace_period;
        Ok(self.wait_message(id, grace * 3, viewer).await?.state)
    }

    /// The pair's recent messages, newest first (`before` pages back).
    ///
    /// # Errors
    /// [`PoolError::Store`].
    pub async fn report(&self, pair: &Pair, page: Page) -> Result<Vec<MessageRecord>, PoolError> {
        Ok(self
            .inner
            .store
            .pair_messages(&pair.caller, &pair.target, page)
            .await?)
    }

    /// The pair's current session, if it has one.
    ///
    /// # Errors
    /// [`PoolError::Store`].
    pub async fn session(&self, pair: &Pair) -> Result<Option<SessionRecord>, PoolError> {
        Ok(self
            .inner
            .store
            .current_session(&pair.caller, &pair.target)
            .await?)
    }

    /// Starts the pair over: stops its process and gives it a new session. The old session's
    /// history stays in the store, marked `rebooted`. Returns the old and new session ids.
    ///
    /// # Errors
    /// [`PoolError::Store`].
    pub async fn reboot(&self, pair: &Pair) -> Result<(Option<Uuid>, Uuid), PoolError> {
        self.replace_session(pair, SessionStatus::Rebooted).await
    }

    /// Forgets the pair's session: stops its process, marks the session `deleted` (its
    /// messages stay), starts a new one for the next message, and with `delete_transcript`
    /// also deletes Claude's transcript file of the old session. Returns the old session id
    /// and the transcript path if one was deleted.
    ///
    /// # Errors
    /// [`PoolError::Store`]; a transcript that cannot be deleted is logged, not an error.
    pub async fn delete_session(
        &self,
        pair: &Pair,
        delete_transcript: bool,
    ) -> Result<(Option<Uuid>, Option<std::path::PathBuf>), PoolError> {
        let (old, _) = self.replace_session(pair, SessionStatus::Deleted).await?;
        let mut deleted = None;
        if let (Some(old), true) = (old, delete_transcript) {
            let config = self.config();
            if let Some(team) = config.team(pair.target.as_str())
                && let Some(remote) = &team.remote
            {
                // On the host, through its connection: found by the session's id.
                let script = crate::remote::delete_transcript_script(team, old);
                match self
                    .inner
                    .remotes
                    .run(
                        team,
                        remote,
                        self.inner.callbacks.tunnel_port(),
                        &script,
                        Duration::from_secs(30),
                    )
                    .await
                {
                    Ok(output) if output.status.success() => {
                        deleted = String::from_utf8_lossy(&output.stdout)
                            .lines()
                            .next()
                            .map(std::path::PathBuf::from);
                    }
                    Ok(output) => {
                        tracing::warn!(session = %old, status = %output.status, stderr = %String::from_utf8_lossy(&output.stderr).trim(), "cannot delete the session's transcript on the host");
                    }
                    Err(error) => {
                        tracing::warn!(%error, session = %old, "cannot delete the session's transcript on the host");
                    }
                }
            } else if let Some(team) = config.team(pair.target.as_str()) {
                let path = launch::transcript_path(team, old);
                match std::fs::remove_file(&path) {
                    Ok(()) => deleted = Some(path),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "cannot delete session transcript")
                    }
                }
            }
        }
        Ok((old, deleted))
    }

    /// The command that opens the pair's conversation interactively in a fork:
    /// `claude --resume=<id> --fork-session` in the team's directory.
    ///
    /// # Errors
    /// [`PoolError::Store`], or [`PoolError::UnknownMessage`]-free: a pair with no session yet
    /// gets its new session's id (nothing to fork: the CLI will say so).
    pub async fn fork_command(&self, pair: &Pair) -> Result<launch::ForkCommand, PoolError> {
        self.ensure_pair(pair, 0).await?;
        let session_id = self
            .inner
            .lock()
            .entry(pair)
            .map_or_else(Uuid::nil, |entry| entry.session.id);
        let config = self.config();
        let team = config
            .team(pair.target.as_str())
            .ok_or_else(|| PoolError::unknown_team(&config, pair.target.as_str()))?;
        Ok(launch::fork_command(&config, team, session_id))
    }

    async fn replace_session(
        &self,
        pair: &Pair,
        status: SessionStatus,
    ) -> Result<(Option<Uuid>, Uuid), PoolError> {
        self.ensure_pair(pair, 0).await?;
        let _sessions = self.inner.sessions.lock().await;
        let old = self
            .inner
            .store
            .current_session(&pair.caller, &pair.target)
            .await?;
        if let Some(old) = &old {
            self.inner
                .store
                .retire_session(old.session_id, status)
                .await?;
        }
        let new = self
            .inner
            .store
            .create_session(&pair.caller, &pair.target, Uuid::new_v4())
            .await?;
        if let Some(entry) = self.inner.lock().entry_mut(pair) {
            entry.session = Session::from(&new);
        }
        // The process still runs the old session: stop it (a running turn fails).
        self.sleep(pair).await;
        Ok((old.map(|old| old.session_id), new.session_id))
    }

    /// Sends `text` to `pair` and waits for the turn's outcome.
    ///
    /// # Errors
    /// Every [`PoolError`]: the queue is full, the pool saturated, the agent could not start,
    /// the turn failed.
    pub async fn send(&self, pair: &Pair, text: String) -> Result<TurnOutcome, PoolError> {
        self.submit(pair, text, MessageMode::Ask)
            .await?
            .outcome()
            .await
    }

    /// Makes sure `pair` has a ready process (spawning it if needed). Returns its pid.
    ///
    /// # Errors
    /// As [`Pool::send`], for the spawn.
    pub async fn wake(&self, pair: &Pair) -> Result<u32, PoolError> {
        let jobs = self.ensure_pair(pair, 0).await?;
        let (reply, answer) = oneshot::channel();
        self.reserve_queue_place(pair, jobs)?
            .send(Job::Wake { reply });
        answer.await.unwrap_or(Err(PoolError::ShuttingDown))
    }

    /// A place in the pair's queue, if fewer than `maxQueuePerPair` jobs wait there (read
    /// now, so a changed setting applies at once). Two callers racing for the last place may
    /// both be refused, never both accepted.
    fn reserve_queue_place(
        &self,
        pair: &Pair,
        jobs: mpsc::Sender<Job>,
    ) -> Result<mpsc::OwnedPermit<Job>, PoolError> {
        let limit = self.config().settings.max_queue_per_pair;
        let full = || PoolError::QueueFull {
            pair: pair.to_string(),
            limit,
        };
        let probe = jobs.clone();
        let permit = jobs.try_reserve_owned().map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => full(),
            mpsc::error::TrySendError::Closed(_) => PoolError::ShuttingDown,
        })?;
        // Jobs waiting, this place included (the running one has left the queue).
        let waiting = probe.max_capacity() - probe.capacity();
        if waiting > limit {
            return Err(full());
        }
        Ok(permit)
    }

    /// Wakes every pair, at most `concurrency` spawns at a time. Results in input order.
    pub async fn wake_all(
        &self,
        pairs: Vec<Pair>,
        concurrency: usize,
    ) -> Vec<(Pair, Result<u32, PoolError>)> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for (index, pair) in pairs.into_iter().enumerate() {
            let pool = self.clone();
            let permits = permits.clone();
            set.spawn(async move {
                let outcome = match permits.acquire_owned().await {
                    Ok(_permit) => pool.wake(&pair).await,
                    Err(_) => Err(PoolError::ShuttingDown),
                };
                (index, pair, outcome)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(result) = joined {
                results.push(result);
            }
        }
        results.sort_by_key(|(index, _, _)| *index);
        results
            .into_iter()
            .map(|(_, pair, outcome)| (pair, outcome))
            .collect()
    }

    /// Wakes `caller`'s agent on every configured team but its own (an agent waking itself
    /// would start a process for a pair with itself), at most `wakeConcurrency` spawns at a
    /// time. Results in team name order; a team that cannot be woken (its host unreachable, a
    /// missing directory...) has its error.
    ///
    /// # Errors
    /// [`PoolError::InvalidName`] when `caller` is not a valid name.
    pub async fn wake_all_from(
        &self,
        caller: &str,
    ) -> Result<Vec<(Pair, Result<u32, PoolError>)>, PoolError> {
        let caller = TeamName::new(caller).map_err(|error| PoolError::InvalidName {
            role: "caller",
            source: Arc::new(error),
        })?;
        let config = self.config();
        let mut wake = Vec::new();
        let mut refused = Vec::new();
        for team in config.teams.values().filter(|team| team.name != caller) {
            match self.pair(caller.as_str(), team.name.as_str()) {
                Ok(pair) => wake.push(pair),
                Err(error) => {
                    refused.push((Pair::new(caller.clone(), team.name.clone()), Err(error)));
                }
            }
        }
        let mut results = self.wake_all(wake, config.settings.wake_concurrency).await;
        results.extend(refused);
        results.sort_by(|(left, _), (right, _)| left.target.cmp(&right.target));
        Ok(results)
    }

    /// Interrupts `pair`'s running message (its turn ends `cancelled`, the process stays).
    /// Returns whether a message was running. The pair's worker sends the interrupt once the
    /// turn is written, or skips the turn if it is not yet, so a turn that is just starting
    /// is not missed.
    #[expect(
        clippy::unused_async,
        reason = "part of the async pool API; callers await it"
    )]
    pub async fn interrupt(&self, pair: &Pair) -> bool {
        let mut state = self.inner.lock();
        match state.entry_mut(pair) {
            Some(entry) if entry.current.is_some() => {
                entry.cancel_requested = true;
                entry.cancel_signal.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Stops `pair`'s process, whatever it is doing (a running turn fails). The session is
    /// kept: the next message resumes it. Returns whether a process was stopped.
    pub async fn sleep(&self, pair: &Pair) -> bool {
        let Some(agent) = self.inner.lock().stop(pair) else {
            return false;
        };
        self.inner
            .stop_agent(pair, &agent, ExitReason::Requested)
            .await;
        true
    }

    /// A snapshot of every pair.
    #[must_use]
    pub fn status(&self) -> PoolStatus {
        let max_processes = self.config().settings.max_processes;
        let state = self.inner.lock();
        let now = Instant::now();
        let mut pairs: Vec<PairStatus> = state
            .pairs()
            .map(|(pair, entry, slot)| PairStatus {
                pair: pair.clone(),
                state: slot.state,
                pid: slot.process.map(Agent::pid),
                session_id: entry.session.id,
                uptime_ms: slot
                    .process
                    .map(|agent| millis(now.duration_since(agent.started()))),
                process_turns: slot.process_turns,
                session_turns: entry.session.turns,
                queued: entry.jobs.max_capacity() - entry.jobs.capacity(),
                idle_ms: millis(now.duration_since(slot.last_used)),
                total_cost_usd: entry.session.total_cost,
            })
            .collect();
        pairs.sort_by(|left, right| left.pair.cmp(&right.pair));
        let live = state.live();
        drop(state);
        PoolStatus {
            max_processes,
            live,
            pairs,
            budgets: self.budgets(),
            bridges: self.inner.clients.bridges(),
        }
    }

    /// Lists a bridge (a Claude Code session's `iris serve --stdio`) until the handle drops.
    #[must_use]
    pub fn connect_bridge(
        &self,
        pid: Option<u32>,
        cwd: std::path::PathBuf,
        team: Option<String>,
    ) -> BridgeHandle {
        self.inner.clients.connect(pid, cwd, team)
    }

    /// An HTTP client asked something just now (it keeps an idle daemon up).
    pub fn client_seen(&self) {
        self.inner.clients.touch();
    }

    /// Whether a turn runs or is being started, a message waits, or a tool-permission
    /// request waits for a person.
    #[must_use]
    pub fn has_work(&self) -> bool {
        let busy = self.inner.lock().pairs().any(|(_, entry, slot)| {
            matches!(slot.state, PairState::Spawning | PairState::Busy)
                || entry.jobs.capacity() < entry.jobs.max_capacity()
        });
        busy || self.pending_approval_count() > 0
    }

    /// Since when this pool has had no bridge, no HTTP request and no work: `None` while it
    /// has any. The moment is the later of the last client and now-if-working, so a daemon
    /// counts its idle time from when it last had something to do.
    #[must_use]
    pub fn quiet_since(&self) -> Option<Instant> {
        let since = self.inner.clients.quiet_since()?;
        if self.has_work() {
            self.inner.clients.touch();
            return None;
        }
        Some(since)
    }

    /// The pool's metrics (`/metrics`).
    #[must_use]
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Whether a bridge ever connected to this pool.
    #[must_use]
    pub fn ever_bridged(&self) -> bool {
        self.inner.clients.ever_bridged()
    }

    /// Resolves when a bridge leaves or an HTTP request comes (`enable` it before looking).
    pub fn clients_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.clients.changed()
    }

    /// Stops every process and worker, failing queued messages with
    /// [`PoolError::ShuttingDown`]. Returns when everything is stopped and reaped.
    pub async fn shutdown(&self) {
        let agents = self.inner.lock().close();
        self.inner.cancel.cancel();
        self.inner.slot_changed.notify_waiters();
        let mut stops = tokio::task::JoinSet::new();
        for (pair, agent) in agents {
            let inner = self.inner.clone();
            stops.spawn(async move {
                let exit = agent.stop().await;
                if let Err(error) = inner.store.agent_stopped(agent.pid()).await {
                    tracing::warn!(pid = agent.pid(), %error, "cannot record that an agent stopped");
                }
                inner.emit(PoolEvent::Exited {
                    pair,
                    pid: agent.pid(),
                    reason: ExitReason::Shutdown,
                    status: exit.status,
                });
            });
        }
        while stops.join_next().await.is_some() {}
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        // The agents on remote hosts are gone: their connections can go too.
        self.inner.remotes.close().await;
        // Their tokens die with this pool.
        callback::clear_agent_configs(&callback::agent_config_dir(&self.config().iris_home));
    }

    /// The pair's queue, creating its entry (with its stored session, or a new one) and its
    /// worker on first use. The channel's own bound is far above any `maxQueuePerPair`, which
    /// is checked when a job is queued ([`Pool::reserve_queue_place`]) so that a change of the
    /// setting applies at once; `min_capacity` lets recovery queue more than that.
    async fn ensure_pair(
        &self,
        pair: &Pair,
        min_capacity: usize,
    ) -> Result<mpsc::Sender<Job>, PoolError> {
        {
            let state = self.inner.lock();
            if state.is_closed() {
                return Err(PoolError::ShuttingDown);
            }
            if let Some(entry) = state.entry(pair) {
                return Ok(entry.jobs.clone());
            }
        }
        let _sessions = self.inner.sessions.lock().await;
        if let Some(entry) = self.inner.lock().entry(pair) {
            return Ok(entry.jobs.clone());
        }
        let record = match self
            .inner
            .store
            .current_session(&pair.caller, &pair.target)
            .await?
        {
            Some(record) => record,
            None => {
                self.inner
                    .store
                    .create_first_session(&pair.caller, &pair.target, Uuid::new_v4())
                    .await?
            }
        };
        let bound = QUEUE_CHANNEL_BOUND
            .max(self.config().settings.max_queue_per_pair)
            .max(min_capacity);
        let (jobs, receiver) = mpsc::channel(bound);
        let entry = PairEntry::new(jobs.clone(), Session::from(&record), Instant::now());
        if !self.inner.lock().insert(pair.clone(), entry) {
            return Err(PoolError::ShuttingDown);
        }
        let worker = Worker {
            pool: self.inner.clone(),
            pair: pair.clone(),
        };
        self.inner.tasks.spawn(worker.run(receiver));
        Ok(jobs)
    }

    /// Queues again, in their original order, the messages a previous Iris accepted but
    /// never started.
    async fn requeue(&self, queued: Vec<MessageRecord>) -> Result<(), PoolError> {
        let mut per_pair: HashMap<Pair, usize> = HashMap::new();
        for record in &queued {
            *per_pair
                .entry(Pair::new(record.caller.clone(), record.target.clone()))
                .or_default() += 1;
        }
        for record in queued {
            let pair = Pair::new(record.caller.clone(), record.target.clone());
            // Only the stored (possibly cut) text survived the restart: delivering a cut
            // message would send something the caller never wrote.
            let refusal = if self.config().team(pair.target.as_str()).is_none() {
                Some(format!("team '{}' is no longer configured", pair.target))
            } else if record.truncated {
                Some("the message was longer than database.maxStoredTextBytes, so only a cut copy survived the restart; it was not delivered".to_owned())
            } else {
                None
            };
            if let Some(refusal) = refusal {
                self.inner
                    .store
                    .finish_message(
                        record.id,
                        crate::store::MessageFinish {
                            state: MessageState::Failed,
                            answer: None,
                            is_error: true,
                            error: Some(refusal),
                            cost_usd: None,
                            usage: None,
                            duration_ms: None,
                            transcript: Arc::default(),
                        },
                    )
                    .await?;
                continue;
            }
            let jobs = self
                .ensure_pair(&pair, per_pair.get(&pair).copied().unwrap_or(0))
                .await?;
            tracing::info!(id = %record.id, %pair, "delivering a message queued before the restart");
            jobs.try_send(Job::Turn {
                id: record.id,
                text: record.text,
                reply: None,
                progress: None,
                route: Route::Nobody,
            })
            .map_err(|_| PoolError::QueueFull {
                pair: pair.to_string(),
                limit: per_pair.get(&pair).copied().unwrap_or(0),
            })?;
        }
        Ok(())
    }
}

/// Prunes old messages every hour while the pool runs (also once at start, in `start`).
async fn prune_periodically(inner: Arc<Inner>) {
    let period = Duration::from_secs(3600);
    loop {
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match inner.store.prune().await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "old messages pruned"),
            Err(error) => tracing::warn!(%error, "pruning old messages failed"),
        }
    }
}

/// The bound of every pair's job channel: a ceiling far above any sensible
/// `maxQueuePerPair`, which is what really bounds a queue. Costs nothing: the channel
/// allocates as jobs arrive.
const QUEUE_CHANNEL_BOUND: usize = 1 << 20;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    fn config(&self) -> Arc<Config> {
        self.config.read().map_or_else(
            |poisoned| poisoned.into_inner().clone(),
            |config| config.clone(),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counts half-updated (the state's
        // transitions neither index nor unwrap), so the state is still consistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, event: PoolEvent) {
        self.metrics.observe(&event);
        let _ = self.events.send(event);
    }

    /// Drops an ended agent from the store's list of live agents.
    fn forget_agent(&self, pgid: u32) {
        let store = self.store.clone();
        self.tasks.spawn(async move {
            if let Err(error) = store.agent_stopped(pgid).await {
                tracing::warn!(pgid, %error, "cannot record that an agent stopped");
            }
        });
    }

    /// Stops `agent`, which the caller already moved to `Stopping`, then frees its slot.
    async fn stop_agent(&self, pair: &Pair, agent: &Agent, reason: ExitReason) {
        let exit = agent.stop().await;
        self.release(pair, agent, reason, exit.status);
    }

    /// Frees the slot that held `agent` (if it still does) and wakes waiters.
    fn release(&self, pair: &Pair, agent: &Agent, reason: ExitReason, status: String) {
        let freed = self.lock().release(pair, agent.id());
        if freed {
            self.forget_agent(agent.pid());
            self.slot_changed.notify_waiters();
            self.emit(PoolEvent::Exited {
                pair: pair.clone(),
                pid: agent.pid(),
                reason,
                status,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TeamConfig;

    fn assert_within_a_tick(elapsed: Duration, expected: Duration) {
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(1),
            "waited {elapsed:?}, expected {expected:?}"
        );
    }

    fn empty_entry() -> PairEntry {
        let (jobs, _receiver) = mpsc::channel(1);
        PairEntry::new(
            jobs,
            Session {
                id: Uuid::new_v4(),
                resumable: false,
                turns: 0,
                total_cost: 0.0,
                cli_total: 0.0,
            },
            Instant::now(),
        )
    }

    /// A pool of one slot held by a spawn that never finishes, and the worker of another
    /// pair that wants a slot. Set up with the real clock (the store runs on its own thread,
    /// which paused time would race); the tests pause afterwards.
    async fn full_pool() -> (Pool, Pair, Worker) {
        let dir = std::env::temp_dir();
        let mut config = Config::defaults(dir.clone());
        config.database.in_memory = true;
        config.settings.max_processes = 1;
        config.settings.pool_wait_timeout = Duration::from_secs(30);
        for name in ["holder", "waiter"] {
            let team = TeamConfig::new(TeamName::new(name).unwrap(), dir.clone());
            config.teams.insert(team.name.clone(), team);
        }
        let pool = Pool::start(Arc::new(config), PoolOptions::default())
            .await
            .unwrap();
        let holder = pool.pair("x", "holder").unwrap();
        let waiter = pool.pair("x", "waiter").unwrap();
        {
            let mut state = pool.inner.lock();
            assert!(state.insert(holder.clone(), empty_entry()));
            assert!(state.insert(waiter.clone(), empty_entry()));
            assert!(matches!(
                state.reserve(&holder, 1),
                state::Reserve::Reserved
            ));
        }
        let worker = Worker {
            pool: pool.inner.clone(),
            pair: waiter,
        };
        (pool, holder, worker)
    }

    #[tokio::test]
    async fn a_full_pool_fails_after_pool_wait_timeout_and_not_before() {
        let (pool, _holder, worker) = full_pool().await;
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let error = worker.reserve_slot().await.unwrap_err();
        assert!(
            matches!(
                error,
                PoolError::Saturated {
                    busy: 1,
                    max: 1,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "pool saturated (1/1 busy); no agent process became free within 30s (poolWaitTimeout)"
        );
        // Virtual time: the wait lasted the configured timeout, to the timer's 1 ms tick.
        assert_within_a_tick(started.elapsed(), Duration::from_secs(30));
        assert_eq!(pool.status().live, 1);
    }

    #[tokio::test]
    async fn a_waiting_message_takes_the_slot_as_soon_as_it_frees_up() {
        let (pool, holder, worker) = full_pool().await;
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let releaser = {
            let inner = pool.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                inner.lock().spawn_failed(&holder);
                inner.slot_changed.notify_waiters();
            })
        };
        // It gets the slot when it frees up, 10 s in, not at the 30 s timeout.
        assert!(worker.reserve_slot().await.unwrap());
        assert_within_a_tick(started.elapsed(), Duration::from_secs(10));
        releaser.await.unwrap();
        let state = pool.inner.lock();
        assert_eq!(state.live(), 1);
        let waiting = state.pairs().find(|(pair, _, _)| **pair == worker.pair);
        assert!(matches!(
            waiting.map(|(_, _, slot)| slot.state),
            Some(PairState::Spawning)
        ));
    }

    #[test]
    fn recognizes_session_problems() {
        assert_eq!(
            session_problem("Error: Session ID 1234 is already in use."),
            Some(SessionProblem::AlreadyExists)
        );
        assert_eq!(
            session_problem("No conversation found with session ID: 1234"),
            Some(SessionProblem::NotFound)
        );
        assert_eq!(session_problem("something else"), None);
    }
}
