//! The warm pool: at most one live agent process per (caller → target) pair, at most
//! `maxProcesses` in all, each pair's turns served one at a time in FIFO order.
//!
//! Each pair has a worker task that owns its queue: it takes the next turn, makes sure the
//! pair has a ready agent (spawning it, with `--resume` once the session has a transcript),
//! runs the turn and answers. The shared `State` (one `std::sync::Mutex`, never held across
//! an await) records every pair's slot, so capacity is checked and taken atomically.
//!
//! Invariant: `State::live` counts the slots that are `Spawning`, `Idle`, `Busy` or
//! `Stopping`, and never exceeds `maxProcesses`; a slot is freed only after its process has
//! exited and been reaped.
//! Invariant: only `Idle` agents are evicted; an agent is `Busy` from the moment a turn or a
//! health check takes it until that ends, so eviction never interrupts work.
//! Invariant: every slot transition checks the agent's identity, so a late notice about an
//! old process never touches its successor.

mod launch;

pub use launch::{SessionMode, agent_spec};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::agent::{Agent, AgentEvent, EventSink, SpawnError, TurnError, TurnResult};
use crate::config::{Config, NameError, TeamName};
use crate::guard::Guard;

/// A caller team and a target team: the unit that owns one conversation and one process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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
    #[error("unknown team '{name}'; known teams: {}", if known.is_empty() { "none (add one with `iris add-team`)".to_owned() } else { known.join(", ") })]
    UnknownTeam {
        /// The name given.
        name: String,
        /// The configured teams.
        known: Vec<String>,
    },
    /// The team is remote, which this build does not run yet.
    #[error("team '{team}' is remote ({remote}); remote teams are not supported by this build yet")]
    RemoteUnsupported {
        /// The team.
        team: String,
        /// Its `remote` setting.
        remote: String,
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
    /// The pool is shutting down.
    #[error("iris is shutting down")]
    ShuttingDown,
}

/// A finished turn, with where it ran.
#[derive(Debug, Clone, Serialize)]
pub struct TurnOutcome {
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
#[derive(Debug, Clone, Serialize)]
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
        /// `idle`, `evicted`, `crashed`, `unhealthy`, `requested` or `shutdown`.
        reason: &'static str,
        /// Exit status.
        status: String,
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
    /// The session could not be resumed and a new one was started.
    SessionReset {
        /// The pair.
        pair: Pair,
        /// The lost session.
        old_session_id: Uuid,
        /// The new one.
        session_id: Uuid,
    },
}

/// A pair's process state, as reported by [`Pool::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// `maxProcesses`.
    pub max_processes: usize,
    /// Slots in use (spawning, idle, busy or stopping).
    pub live: usize,
    /// Every pair that was used, in pair order.
    pub pairs: Vec<PairStatus>,
}

/// Options that are not configuration.
#[derive(Debug, Clone, Default)]
pub struct PoolOptions {
    /// The orphan guard that stops agents if Iris is killed.
    pub guard: Option<Guard>,
}

/// The pool. Cheap to clone; all clones are the same pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<Arc<Config>>,
    state: Mutex<State>,
    /// Woken whenever a slot frees up or a process becomes idle (evictable).
    slot_changed: Notify,
    events: broadcast::Sender<PoolEvent>,
    guard: Option<Guard>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct State {
    pairs: HashMap<Pair, PairEntry>,
    live: usize,
    closed: bool,
}

struct PairEntry {
    jobs: mpsc::Sender<Job>,
    slot: Slot,
    session: Session,
    last_used: Instant,
    process_turns: u64,
}

impl PairEntry {
    /// A pair seen for the first time: no process, a new session.
    fn new(jobs: mpsc::Sender<Job>) -> Self {
        Self {
            jobs,
            slot: Slot::Empty,
            session: Session {
                id: Uuid::new_v4(),
                resumable: false,
                turns: 0,
                total_cost: 0.0,
                cli_total: 0.0,
            },
            last_used: Instant::now(),
            process_turns: 0,
        }
    }
}

struct Session {
    id: Uuid,
    /// A transcript exists: spawn with `--resume`.
    resumable: bool,
    turns: u64,
    total_cost: f64,
    /// The CLI's cumulative total at the last result (the next process's baseline).
    cli_total: f64,
}

enum Slot {
    Empty,
    Spawning,
    Idle(Agent),
    Busy(Agent),
    Stopping(Agent),
}

impl Slot {
    fn agent(&self) -> Option<&Agent> {
        match self {
            Self::Idle(agent) | Self::Busy(agent) | Self::Stopping(agent) => Some(agent),
            Self::Empty | Self::Spawning => None,
        }
    }

    fn state(&self) -> PairState {
        match self {
            Self::Empty => PairState::Stopped,
            Self::Spawning => PairState::Spawning,
            Self::Idle(_) => PairState::Idle,
            Self::Busy(_) => PairState::Busy,
            Self::Stopping(_) => PairState::Stopping,
        }
    }
}

enum Job {
    Turn {
        text: String,
        reply: oneshot::Sender<Result<TurnOutcome, PoolError>>,
    },
    Wake {
        reply: oneshot::Sender<Result<u32, PoolError>>,
    },
}

/// A message accepted into a pair's queue; await it for the outcome.
pub struct Ticket {
    answer: oneshot::Receiver<Result<TurnOutcome, PoolError>>,
}

impl Ticket {
    /// Waits for the turn to finish.
    ///
    /// # Errors
    /// [`PoolError`] when the turn could not run or failed.
    pub async fn outcome(self) -> Result<TurnOutcome, PoolError> {
        self.answer.await.unwrap_or(Err(PoolError::ShuttingDown))
    }
}

impl Pool {
    /// A pool serving `config`'s teams. Must be called inside a tokio runtime.
    #[must_use]
    pub fn new(config: Arc<Config>, options: PoolOptions) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                state: Mutex::new(State::default()),
                slot_changed: Notify::new(),
                events,
                guard: options.guard,
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        self.inner.config()
    }

    /// Replaces the configuration: later spawns use the new one; live processes keep theirs.
    pub fn set_config(&self, config: Arc<Config>) {
        if let Ok(mut current) = self.inner.config.write() {
            *current = config;
        }
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
    /// [`PoolError::InvalidName`], [`PoolError::UnknownTeam`] or [`PoolError::RemoteUnsupported`].
    pub fn pair(&self, caller: &str, target: &str) -> Result<Pair, PoolError> {
        let caller = TeamName::new(caller).map_err(|error| PoolError::InvalidName {
            role: "caller",
            source: Arc::new(error),
        })?;
        let config = self.config();
        let Some(team) = config.team(target) else {
            return Err(PoolError::UnknownTeam {
                name: target.to_owned(),
                known: config.team_names(),
            });
        };
        if let Some(remote) = &team.remote {
            return Err(PoolError::RemoteUnsupported {
                team: target.to_owned(),
                remote: remote.clone(),
            });
        }
        Ok(Pair::new(caller, team.name.clone()))
    }

    /// Queues `text` for `pair` and returns at once; the ticket yields the outcome.
    ///
    /// # Errors
    /// [`PoolError::QueueFull`] or [`PoolError::ShuttingDown`].
    pub fn submit(&self, pair: &Pair, text: String) -> Result<Ticket, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(pair, Job::Turn { text, reply })?;
        Ok(Ticket { answer })
    }

    /// Sends `text` to `pair` and waits for the turn's outcome.
    ///
    /// # Errors
    /// Every [`PoolError`]: the queue is full, the pool saturated, the agent could not start,
    /// the turn failed.
    pub async fn send(&self, pair: &Pair, text: String) -> Result<TurnOutcome, PoolError> {
        self.submit(pair, text)?.outcome().await
    }

    /// Makes sure `pair` has a ready process (spawning it if needed). Returns its pid.
    ///
    /// # Errors
    /// As [`Pool::send`], for the spawn.
    pub async fn wake(&self, pair: &Pair) -> Result<u32, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(pair, Job::Wake { reply })?;
        answer.await.unwrap_or(Err(PoolError::ShuttingDown))
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

    /// Interrupts `pair`'s running turn. Returns whether one was running.
    pub async fn interrupt(&self, pair: &Pair) -> bool {
        let agent = {
            let state = self.inner.lock();
            match state.pairs.get(pair).map(|entry| &entry.slot) {
                Some(Slot::Busy(agent)) => Some(agent.clone()),
                _ => None,
            }
        };
        match agent {
            Some(agent) => agent.interrupt().await,
            None => false,
        }
    }

    /// Stops `pair`'s process, whatever it is doing (a running turn fails). The session is
    /// kept: the next message resumes it. Returns whether a process was stopped.
    pub async fn sleep(&self, pair: &Pair) -> bool {
        let agent = {
            let mut state = self.inner.lock();
            let Some(entry) = state.pairs.get_mut(pair) else {
                return false;
            };
            match std::mem::replace(&mut entry.slot, Slot::Empty) {
                Slot::Idle(agent) | Slot::Busy(agent) => {
                    entry.slot = Slot::Stopping(agent.clone());
                    agent
                }
                other => {
                    entry.slot = other;
                    return false;
                }
            }
        };
        self.inner.stop_agent(pair, &agent, "requested").await;
        true
    }

    /// A snapshot of every pair.
    #[must_use]
    pub fn status(&self) -> PoolStatus {
        let max_processes = self.config().settings.max_processes;
        let state = self.inner.lock();
        let now = Instant::now();
        let mut pairs: Vec<PairStatus> = state
            .pairs
            .iter()
            .map(|(pair, entry)| {
                let agent = entry.slot.agent();
                PairStatus {
                    pair: pair.clone(),
                    state: entry.slot.state(),
                    pid: agent.map(Agent::pid),
                    session_id: entry.session.id,
                    uptime_ms: agent.map(|agent| millis(now.duration_since(agent.started()))),
                    process_turns: entry.process_turns,
                    session_turns: entry.session.turns,
                    queued: entry.jobs.max_capacity() - entry.jobs.capacity(),
                    idle_ms: millis(now.duration_since(entry.last_used)),
                    total_cost_usd: entry.session.total_cost,
                }
            })
            .collect();
        pairs.sort_by(|left, right| left.pair.cmp(&right.pair));
        PoolStatus {
            max_processes,
            live: state.live,
            pairs,
        }
    }

    /// Stops every process and worker, failing queued messages with
    /// [`PoolError::ShuttingDown`]. Returns when everything is stopped and reaped.
    pub async fn shutdown(&self) {
        let agents: Vec<(Pair, Agent)> = {
            let mut state = self.inner.lock();
            state.closed = true;
            state
                .pairs
                .iter()
                .filter_map(|(pair, entry)| {
                    entry
                        .slot
                        .agent()
                        .map(|agent| (pair.clone(), agent.clone()))
                })
                .collect()
        };
        self.inner.cancel.cancel();
        self.inner.slot_changed.notify_waiters();
        let mut stops = tokio::task::JoinSet::new();
        for (pair, agent) in agents {
            let inner = self.inner.clone();
            stops.spawn(async move {
                let exit = agent.stop().await;
                inner.emit(PoolEvent::Exited {
                    pair,
                    pid: agent.pid(),
                    reason: "shutdown",
                    status: exit.status,
                });
            });
        }
        while stops.join_next().await.is_some() {}
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn enqueue(&self, pair: &Pair, job: Job) -> Result<(), PoolError> {
        let mut state = self.inner.lock();
        if state.closed {
            return Err(PoolError::ShuttingDown);
        }
        let limit = self.config().settings.max_queue_per_pair;
        let jobs = match state.pairs.get(pair) {
            Some(entry) => entry.jobs.clone(),
            None => {
                let (jobs, receiver) = mpsc::channel(limit.max(1));
                state
                    .pairs
                    .insert(pair.clone(), PairEntry::new(jobs.clone()));
                let worker = Worker {
                    pool: self.inner.clone(),
                    pair: pair.clone(),
                };
                self.inner.tasks.spawn(worker.run(receiver));
                jobs
            }
        };
        drop(state);
        jobs.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => PoolError::QueueFull {
                pair: pair.to_string(),
                limit,
            },
            mpsc::error::TrySendError::Closed(_) => PoolError::ShuttingDown,
        })
    }
}

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
        // A panic while holding the lock cannot leave the counts half-updated (every update
        // is a single statement), so the state is still consistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, event: PoolEvent) {
        let _ = self.events.send(event);
    }

    /// Stops `agent`, which the caller already moved to `Stopping`, then frees its slot.
    async fn stop_agent(&self, pair: &Pair, agent: &Agent, reason: &'static str) {
        let exit = agent.stop().await;
        self.release(pair, agent, reason, exit.status);
    }

    /// Frees the slot that held `agent` (if it still does) and wakes waiters.
    fn release(&self, pair: &Pair, agent: &Agent, reason: &'static str, status: String) {
        let freed = {
            let mut state = self.lock();
            let owned = state
                .pairs
                .get(pair)
                .and_then(|entry| entry.slot.agent())
                .is_some_and(|held| held.id() == agent.id());
            if owned {
                if let Some(entry) = state.pairs.get_mut(pair) {
                    entry.slot = Slot::Empty;
                    entry.process_turns = 0;
                }
                state.live -= 1;
            }
            owned
        };
        if freed {
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

/// The task that serves one pair's queue.
struct Worker {
    pool: Arc<Inner>,
    pair: Pair,
}

impl Worker {
    async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        let mut health = tokio::time::interval(self.pool.config().settings.health_check_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.reset();
        loop {
            let idle = self.idle_agent();
            let idle_deadline = idle.as_ref().map(|(_, deadline)| *deadline);
            tokio::select! {
                biased;
                () = self.pool.cancel.cancelled() => break,
                job = jobs.recv() => match job {
                    Some(job) => self.handle(job).await,
                    None => break,
                },
                exit = wait_exit(idle.as_ref().map(|(agent, _)| agent.clone())), if idle.is_some() => {
                    // Only a death while idle is ours to clean up; a process that is being
                    // stopped (evicted, put to sleep) is released by whoever stops it.
                    if let Some((agent, _)) = &idle
                        && self.slot_is_idle(agent)
                    {
                        self.pool.release(&self.pair, agent, "crashed", exit);
                    }
                }
                () = sleep_until(idle_deadline), if idle.is_some() => {
                    if let Some((agent, _)) = idle {
                        self.stop_if_idle(&agent, "idle").await;
                    }
                }
                _ = health.tick(), if idle.is_some() => {
                    if let Some((agent, _)) = idle {
                        self.health_check(&agent).await;
                    }
                }
            }
        }
        // Shutting down: whoever still waits in the queue gets a clear answer.
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            match job {
                Job::Turn { reply, .. } => {
                    let _ = reply.send(Err(PoolError::ShuttingDown));
                }
                Job::Wake { reply } => {
                    let _ = reply.send(Err(PoolError::ShuttingDown));
                }
            }
        }
    }

    fn slot_is_idle(&self, agent: &Agent) -> bool {
        let state = self.pool.lock();
        state
            .pairs
            .get(&self.pair)
            .is_some_and(|entry| matches!(&entry.slot, Slot::Idle(held) if held.id() == agent.id()))
    }

    /// The pair's agent if it is idle, with the time it should be stopped for idleness.
    fn idle_agent(&self) -> Option<(Agent, tokio::time::Instant)> {
        let config = self.pool.config();
        let idle_timeout = config
            .team(self.pair.target.as_str())
            .and_then(|team| team.idle_timeout)
            .unwrap_or(config.settings.idle_timeout);
        let state = self.pool.lock();
        let entry = state.pairs.get(&self.pair)?;
        match &entry.slot {
            Slot::Idle(agent) => Some((
                agent.clone(),
                tokio::time::Instant::from_std(entry.last_used) + idle_timeout,
            )),
            _ => None,
        }
    }

    async fn handle(&self, job: Job) {
        match job {
            Job::Turn { text, reply } => {
                let outcome = self.run_turn(text).await;
                let _ = reply.send(outcome);
            }
            Job::Wake { reply } => {
                let outcome = match self.acquire_agent().await {
                    Ok((agent, _)) => {
                        self.set_idle(&agent);
                        Ok(agent.pid())
                    }
                    Err(error) => Err(error),
                };
                let _ = reply.send(outcome);
            }
        }
    }

    async fn run_turn(&self, text: String) -> Result<TurnOutcome, PoolError> {
        // One retry, only when the message never reached a process (it was gone before the
        // turn was written), so nothing can run twice.
        let mut retried = false;
        loop {
            let (agent, cold) = self.acquire_agent().await?;
            self.pool.emit(PoolEvent::TurnStarted {
                pair: self.pair.clone(),
                pid: agent.pid(),
            });
            match agent.turn(text.clone()).await {
                Ok(result) => return Ok(self.finish_turn(&agent, cold, result)),
                Err(TurnError::Gone) if !retried => {
                    retried = true;
                    let exit = agent.exited().await;
                    self.pool
                        .release(&self.pair, &agent, "crashed", exit.status);
                }
                Err(error) => {
                    match &error {
                        TurnError::Exited { exit, .. } => {
                            self.pool.release(
                                &self.pair,
                                &agent,
                                if exit.requested {
                                    "requested"
                                } else {
                                    "crashed"
                                },
                                exit.status.clone(),
                            );
                            self.note_session_problem(&exit.stderr_tail);
                        }
                        TurnError::Gone => {
                            let exit = agent.exited().await;
                            self.pool
                                .release(&self.pair, &agent, "crashed", exit.status);
                        }
                        // The process is alive but out of step with the pool (never expected):
                        // replace it rather than wait on it.
                        TurnError::Busy => {
                            let exit = agent.stop().await;
                            self.pool
                                .release(&self.pair, &agent, "unhealthy", exit.status);
                        }
                        // The actor interrupts and recovers (or kills) the process itself; the
                        // next turn waits for that inside the actor.
                        TurnError::TimedOut { .. } => self.set_idle(&agent),
                    }
                    // Any turn that was written may have left a transcript behind.
                    self.mark_resumable();
                    self.pool.emit(PoolEvent::TurnFailed {
                        pair: self.pair.clone(),
                        error: error.to_string(),
                    });
                    return Err(PoolError::Turn {
                        pair: self.pair.to_string(),
                        source: error,
                    });
                }
            }
        }
    }

    fn finish_turn(&self, agent: &Agent, cold: bool, result: TurnResult) -> TurnOutcome {
        let session_id = {
            let mut state = self.pool.lock();
            // Entries are never removed while the pool runs, so the worker's entry is there.
            state
                .pairs
                .get_mut(&self.pair)
                .map_or_else(Uuid::nil, |entry| {
                    entry.session.resumable = true;
                    entry.session.turns += 1;
                    entry.session.total_cost += result.cost_usd;
                    if let Some(total) = result.total_cost_usd {
                        entry.session.cli_total = total;
                    }
                    entry.process_turns += 1;
                    entry.last_used = Instant::now();
                    if matches!(&entry.slot, Slot::Busy(held) if held.id() == agent.id()) {
                        entry.slot = Slot::Idle(agent.clone());
                    }
                    entry.session.id
                })
        };
        self.pool.slot_changed.notify_waiters();
        self.pool.emit(PoolEvent::TurnFinished {
            pair: self.pair.clone(),
            is_error: result.is_error,
            cost_usd: result.cost_usd,
            duration_ms: result.duration_ms,
        });
        TurnOutcome {
            pair: self.pair.clone(),
            session_id,
            pid: agent.pid(),
            cold,
            result,
        }
    }

    fn set_idle(&self, agent: &Agent) {
        {
            let mut state = self.pool.lock();
            if let Some(entry) = state.pairs.get_mut(&self.pair)
                && matches!(&entry.slot, Slot::Busy(held) if held.id() == agent.id())
            {
                entry.slot = Slot::Idle(agent.clone());
                entry.last_used = Instant::now();
            }
        }
        self.pool.slot_changed.notify_waiters();
    }

    fn mark_resumable(&self) {
        if let Some(entry) = self.pool.lock().pairs.get_mut(&self.pair) {
            entry.session.resumable = true;
        }
    }

    /// Learns from a failed process's stderr whether the session id was wrong for the mode.
    fn note_session_problem(&self, stderr: &str) {
        if let Some(entry) = self.pool.lock().pairs.get_mut(&self.pair) {
            match session_problem(stderr) {
                Some(SessionProblem::AlreadyExists) => entry.session.resumable = true,
                Some(SessionProblem::NotFound) => entry.session.resumable = false,
                None => {}
            }
        }
    }

    /// A ready agent, taken `Busy`: the pair's idle one, or a new one in a reserved slot.
    async fn acquire_agent(&self) -> Result<(Agent, bool), PoolError> {
        loop {
            let changed = self.pool.slot_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.pool.lock();
                if state.closed {
                    return Err(PoolError::ShuttingDown);
                }
                let Some(entry) = state.pairs.get_mut(&self.pair) else {
                    return Err(PoolError::ShuttingDown);
                };
                match std::mem::replace(&mut entry.slot, Slot::Empty) {
                    Slot::Idle(agent) if !agent.has_exited() => {
                        entry.slot = Slot::Busy(agent.clone());
                        return Ok((agent, false));
                    }
                    Slot::Idle(_) => {
                        // Died while idle and not yet noticed: free its slot and start anew.
                        state.live -= 1;
                        break;
                    }
                    Slot::Empty => break,
                    // Being stopped by an eviction or a sleep: wait until it is gone.
                    other => entry.slot = other,
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = self.pool.cancel.cancelled() => return Err(PoolError::ShuttingDown),
            }
        }
        self.reserve_slot().await?;
        match self.spawn_agent().await {
            Ok(agent) => {
                let closed = {
                    let mut state = self.pool.lock();
                    if let Some(entry) = state.pairs.get_mut(&self.pair) {
                        entry.slot = Slot::Busy(agent.clone());
                        entry.process_turns = 0;
                    }
                    state.closed
                };
                if closed {
                    self.pool.stop_agent(&self.pair, &agent, "shutdown").await;
                    return Err(PoolError::ShuttingDown);
                }
                Ok((agent, true))
            }
            Err(error) => {
                {
                    let mut state = self.pool.lock();
                    if let Some(entry) = state.pairs.get_mut(&self.pair) {
                        entry.slot = Slot::Empty;
                    }
                    state.live -= 1;
                }
                self.pool.slot_changed.notify_waiters();
                self.pool.emit(PoolEvent::SpawnFailed {
                    pair: self.pair.clone(),
                    error: error.to_string(),
                });
                Err(error)
            }
        }
    }

    /// Takes a slot for this pair (`Spawning`), evicting the least recently used idle
    /// process of another pair when the pool is full, or waiting for one to free up.
    async fn reserve_slot(&self) -> Result<(), PoolError> {
        let config = self.pool.config();
        let max = config.settings.max_processes;
        let wait = config.settings.pool_wait_timeout;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.pool.slot_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let victim = {
                let mut state = self.pool.lock();
                if state.closed {
                    return Err(PoolError::ShuttingDown);
                }
                if state.live < max {
                    state.live += 1;
                    if let Some(entry) = state.pairs.get_mut(&self.pair) {
                        entry.slot = Slot::Spawning;
                    }
                    return Ok(());
                }
                let victim = least_recently_used_idle(
                    state.pairs.iter().map(|(pair, entry)| {
                        (pair, matches!(entry.slot, Slot::Idle(_)), entry.last_used)
                    }),
                    &self.pair,
                );
                victim.and_then(|pair| {
                    let entry = state.pairs.get_mut(&pair)?;
                    let Slot::Idle(agent) = std::mem::replace(&mut entry.slot, Slot::Empty) else {
                        return None;
                    };
                    entry.slot = Slot::Stopping(agent.clone());
                    Some((pair, agent))
                })
            };
            if let Some((victim_pair, agent)) = victim {
                tracing::info!(evicted = %victim_pair, pid = agent.pid(), for_pair = %self.pair, "pool full: evicting least recently used idle agent");
                self.pool.emit(PoolEvent::Evicted {
                    pair: victim_pair.clone(),
                    pid: agent.pid(),
                    for_pair: self.pair.clone(),
                });
                let exit = agent.stop().await;
                // Hand the freed slot straight to this pair, so no one can take it between
                // the victim's exit and this spawn (the count stays the same).
                let (handed_over, closed) = {
                    let mut state = self.pool.lock();
                    let closed = state.closed;
                    let owned = state
                        .pairs
                        .get(&victim_pair)
                        .and_then(|entry| entry.slot.agent())
                        .is_some_and(|held| held.id() == agent.id());
                    if owned {
                        if let Some(entry) = state.pairs.get_mut(&victim_pair) {
                            entry.slot = Slot::Empty;
                            entry.process_turns = 0;
                        }
                        if closed {
                            // Shutting down: give the slot back instead of starting a process.
                            state.live -= 1;
                        } else if let Some(entry) = state.pairs.get_mut(&self.pair) {
                            entry.slot = Slot::Spawning;
                        }
                    }
                    (owned, closed)
                };
                self.pool.slot_changed.notify_waiters();
                self.pool.emit(PoolEvent::Exited {
                    pair: victim_pair,
                    pid: agent.pid(),
                    reason: "evicted",
                    status: exit.status,
                });
                if closed {
                    return Err(PoolError::ShuttingDown);
                }
                if handed_over {
                    return Ok(());
                }
                continue;
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    let busy = self.pool.lock().live;
                    return Err(PoolError::Saturated { busy, max, waited: wait });
                }
                () = self.pool.cancel.cancelled() => return Err(PoolError::ShuttingDown),
            }
        }
    }

    /// Starts the pair's agent in its reserved slot: `--resume` when the session has a
    /// transcript, `--session-id` otherwise, correcting the choice once if the CLI disagrees.
    async fn spawn_agent(&self) -> Result<Agent, PoolError> {
        let mut corrected = false;
        loop {
            let config = self.pool.config();
            let Some(team) = config.team(self.pair.target.as_str()) else {
                return Err(PoolError::UnknownTeam {
                    name: self.pair.target.to_string(),
                    known: config.team_names(),
                });
            };
            let (session_id, mode, baseline) = {
                let state = self.pool.lock();
                let session = state.pairs.get(&self.pair).map(|entry| &entry.session);
                let id = session.map_or_else(Uuid::new_v4, |session| session.id);
                let resumable = session.is_some_and(|session| session.resumable);
                let baseline = session.map_or(0.0, |session| session.cli_total);
                (
                    id,
                    if resumable {
                        SessionMode::Resume
                    } else {
                        SessionMode::New
                    },
                    baseline,
                )
            };
            self.pool.emit(PoolEvent::Spawning {
                pair: self.pair.clone(),
                session_id,
                resume: mode == SessionMode::Resume,
            });
            let spec = agent_spec(&config, team, &self.pair, session_id, mode, baseline);
            match Agent::spawn(spec, self.sink(), self.pool.guard.clone()).await {
                Ok(agent) => {
                    self.pool.emit(PoolEvent::Ready {
                        pair: self.pair.clone(),
                        pid: agent.pid(),
                        ready_ms: millis(agent.ready_after()),
                    });
                    return Ok(agent);
                }
                Err(SpawnError::ExitedEarly { ref exit, .. })
                    if !corrected && session_problem(&exit.stderr_tail).is_some() =>
                {
                    corrected = true;
                    self.correct_session(session_problem(&exit.stderr_tail), session_id);
                }
                Err(source) => {
                    return Err(PoolError::Spawn {
                        pair: self.pair.to_string(),
                        source,
                    });
                }
            }
        }
    }

    fn correct_session(&self, problem: Option<SessionProblem>, old: Uuid) {
        let mut reset = None;
        if let Some(entry) = self.pool.lock().pairs.get_mut(&self.pair) {
            match problem {
                Some(SessionProblem::AlreadyExists) => entry.session.resumable = true,
                Some(SessionProblem::NotFound) => {
                    // The transcript is gone (deleted by hand, another HOME): the conversation
                    // cannot continue, so start a new one rather than fail forever.
                    entry.session.id = Uuid::new_v4();
                    entry.session.resumable = false;
                    entry.session.cli_total = 0.0;
                    reset = Some(entry.session.id);
                }
                None => {}
            }
        }
        if let Some(session_id) = reset {
            tracing::warn!(pair = %self.pair, %old, new = %session_id, "session transcript not found; starting a new session");
            self.pool.emit(PoolEvent::SessionReset {
                pair: self.pair.clone(),
                old_session_id: old,
                session_id,
            });
        }
    }

    fn sink(&self) -> EventSink {
        let events = self.pool.events.clone();
        let pair = self.pair.clone();
        Arc::new(move |event| {
            let _ = events.send(PoolEvent::Agent {
                pair: pair.clone(),
                event,
            });
        })
    }

    /// Moves the pair's slot from `Idle(agent)` to `next(agent)`. False when the slot no
    /// longer holds that agent idle (it was taken, evicted or replaced meanwhile).
    fn take_idle(&self, agent: &Agent, next: fn(Agent) -> Slot) -> bool {
        let mut state = self.pool.lock();
        match state.pairs.get_mut(&self.pair) {
            Some(entry) if matches!(&entry.slot, Slot::Idle(held) if held.id() == agent.id()) => {
                entry.slot = next(agent.clone());
                true
            }
            _ => false,
        }
    }

    async fn stop_if_idle(&self, agent: &Agent, reason: &'static str) {
        let taken = self.take_idle(agent, Slot::Stopping);
        if taken {
            tracing::info!(pair = %self.pair, pid = agent.pid(), reason, "stopping idle agent");
            self.pool.stop_agent(&self.pair, agent, reason).await;
        }
    }

    /// A token-free round trip; an agent that fails it is stopped and replaced.
    async fn health_check(&self, agent: &Agent) {
        let taken = self.take_idle(agent, Slot::Busy);
        if !taken {
            return;
        }
        let timeout = self.pool.config().settings.spawn_timeout;
        match agent.health_check(timeout).await {
            Ok(_) => {
                // Back to idle without touching last_used: a health check is not use.
                let mut state = self.pool.lock();
                if let Some(entry) = state.pairs.get_mut(&self.pair)
                    && matches!(&entry.slot, Slot::Busy(held) if held.id() == agent.id())
                {
                    entry.slot = Slot::Idle(agent.clone());
                }
                drop(state);
                self.pool.slot_changed.notify_waiters();
            }
            Err(error) => {
                // Only if the slot still holds this agent for the check: a sleep, an eviction or a
                // crash may have taken and released it meanwhile, and must not be undone.
                let still_ours = {
                    let mut state = self.pool.lock();
                    match state.pairs.get_mut(&self.pair) {
                        Some(entry) if matches!(&entry.slot, Slot::Busy(held) if held.id() == agent.id()) =>
                        {
                            entry.slot = Slot::Stopping(agent.clone());
                            true
                        }
                        _ => false,
                    }
                };
                if !still_ours {
                    return;
                }
                tracing::warn!(pair = %self.pair, pid = agent.pid(), %error, "agent failed its health check; replacing it");
                self.pool.emit(PoolEvent::Unhealthy {
                    pair: self.pair.clone(),
                    pid: agent.pid(),
                    error: error.to_string(),
                });
                self.pool.stop_agent(&self.pair, agent, "unhealthy").await;
                match self.acquire_agent().await {
                    Ok((replacement, _)) => self.set_idle(&replacement),
                    Err(error) => {
                        tracing::warn!(pair = %self.pair, %error, "replacing an unhealthy agent failed")
                    }
                }
            }
        }
    }
}

/// The eviction rule: among the idle pairs other than `requester`, the one used least
/// recently. Busy, spawning and stopping pairs are never chosen.
fn least_recently_used_idle<'a>(
    candidates: impl Iterator<Item = (&'a Pair, bool, Instant)>,
    requester: &Pair,
) -> Option<Pair> {
    candidates
        .filter(|(pair, idle, _)| *idle && *pair != requester)
        .min_by_key(|(_, _, last_used)| *last_used)
        .map(|(pair, _, _)| pair.clone())
}

/// What a CLI's stderr says about the session id it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionProblem {
    /// `--session-id` named a session that exists: resume it instead.
    AlreadyExists,
    /// `--resume` named a session with no transcript.
    NotFound,
}

fn session_problem(stderr: &str) -> Option<SessionProblem> {
    if stderr.contains("is already in use") {
        Some(SessionProblem::AlreadyExists)
    } else if stderr.contains("No conversation found") {
        Some(SessionProblem::NotFound)
    } else {
        None
    }
}

async fn wait_exit(agent: Option<Agent>) -> String {
    match agent {
        Some(agent) => agent.exited().await.status,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TeamConfig;

    fn pair(caller: &str, target: &str) -> Pair {
        Pair::new(
            TeamName::new(caller).unwrap(),
            TeamName::new(target).unwrap(),
        )
    }

    #[test]
    fn eviction_picks_the_least_recently_used_idle_pair_of_another_pair() {
        let now = Instant::now();
        let (a, b, c, me) = (
            pair("x", "a"),
            pair("x", "b"),
            pair("x", "c"),
            pair("x", "me"),
        );
        let older = now.checked_sub(Duration::from_secs(60)).unwrap();
        let oldest = now.checked_sub(Duration::from_secs(120)).unwrap();
        // c is the oldest but busy; me is idle and old but is the one asking.
        let candidates = [
            (&a, true, now),
            (&b, true, older),
            (&c, false, oldest),
            (&me, true, oldest),
        ];
        assert_eq!(
            least_recently_used_idle(candidates.into_iter(), &me),
            Some(b.clone())
        );
        let all_busy = [(&a, false, now), (&b, false, older)];
        assert_eq!(least_recently_used_idle(all_busy.into_iter(), &me), None);
        let only_me = [(&me, true, now)];
        assert_eq!(least_recently_used_idle(only_me.into_iter(), &me), None);
    }

    /// A pool of one slot held by a spawn that never finishes, and a team whose binary does
    /// not exist (so a message that gets a slot fails at once, without any process).
    fn full_pool() -> (Pool, Pair, Pair) {
        let dir = std::env::temp_dir();
        let mut config = Config::defaults(dir.clone());
        config.settings.max_processes = 1;
        config.settings.pool_wait_timeout = Duration::from_secs(30);
        for name in ["holder", "waiter"] {
            let mut team = TeamConfig::new(TeamName::new(name).unwrap(), dir.clone());
            team.claude_path = Some("/nonexistent/iris-test/claude".to_owned());
            config.teams.insert(team.name.clone(), team);
        }
        let pool = Pool::new(Arc::new(config), PoolOptions::default());
        let holder = pool.pair("x", "holder").unwrap();
        let waiter = pool.pair("x", "waiter").unwrap();
        {
            let (jobs, _receiver) = mpsc::channel(1);
            let mut state = pool.inner.lock();
            let mut entry = PairEntry::new(jobs);
            entry.slot = Slot::Spawning;
            state.pairs.insert(holder.clone(), entry);
            state.live = 1;
        }
        (pool, holder, waiter)
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pool_fails_after_pool_wait_timeout_and_not_before() {
        let (pool, _holder, waiter) = full_pool();
        let started = tokio::time::Instant::now();
        let error = pool.send(&waiter, "hi".to_owned()).await.unwrap_err();
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
        // Virtual time: the wait lasted exactly the configured timeout.
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(pool.status().live, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_message_takes_the_slot_as_soon_as_it_frees_up() {
        let (pool, holder, waiter) = full_pool();
        let started = tokio::time::Instant::now();
        let releaser = {
            let inner = pool.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                {
                    let mut state = inner.lock();
                    if let Some(entry) = state.pairs.get_mut(&holder) {
                        entry.slot = Slot::Empty;
                    }
                    state.live -= 1;
                }
                inner.slot_changed.notify_waiters();
            })
        };
        // It got the slot (then failed to start the missing binary), 10 s in, not 30.
        let error = pool.send(&waiter, "hi".to_owned()).await.unwrap_err();
        assert!(
            matches!(
                &error,
                PoolError::Spawn {
                    source: SpawnError::MissingBinary { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        releaser.await.unwrap();
        // The failed spawn gave its slot back.
        assert_eq!(pool.status().live, 0);
        pool.shutdown().await;
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
