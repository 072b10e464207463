//! The task that serves one pair's queue: it takes the next message, makes sure the pair has
//! a ready agent (spawning, evicting or waiting for a slot), runs the turn and answers; while
//! idle it watches for idle timeout, health and an unexpected exit. It also wakes on every
//! configuration change: see `reconfigure.rs` for what it does then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::launch::live_rules;
use super::reconfigure::{LaunchKey, staleness, undeliverable};
use super::state::{HandOver, Live, Next, Reserve, Spawned, Take};
use super::{
    ExitReason, Inner, Job, Launch, Pair, PoolError, PoolEvent, Session, SessionMode, TurnOutcome,
    agent_spec, millis,
};
use crate::agent::{Agent, EventSink, SpawnError, TurnError, TurnResult};
use crate::store::{
    AgentRecord, MessageFinish, MessageId, MessageState, SessionStatus, SessionTurn,
};

/// The task that serves one pair's queue.
pub(super) struct Worker {
    pub(super) pool: Arc<Inner>,
    pub(super) pair: Pair,
}

impl Worker {
    pub(super) async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        let mut versions = self.pool.config_version.subscribe();
        let mut health_period = self.pool.config().settings.health_check_interval;
        let mut health = health_interval(health_period);
        // While the pair's team is removed: until when its queued messages wait for it.
        let mut held: Option<tokio::time::Instant> = None;
        loop {
            let config = self.pool.config();
            if config.settings.health_check_interval != health_period {
                health_period = config.settings.health_check_interval;
                health = health_interval(health_period);
            }
            let idle = self.idle_agent(&config);
            drop(config);
            let idle_deadline = idle.as_ref().map(|(_, deadline)| *deadline);
            tokio::select! {
                biased;
                () = self.pool.cancel.cancelled() => break,
                // Before the next job: a job taken under a config that removed its team
                // would fail without the grace period.
                changed = versions.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.refuse_queued(&mut jobs, &mut held).await;
                    self.retire_stale().await;
                }
                job = jobs.recv(), if held.is_none() => match job {
                    Some(job) => {
                        self.handle_watching(job, &mut jobs, &mut versions, &mut held).await;
                        self.retire_stale().await;
                        // Fewer slots than live processes (maxProcesses was lowered): this
                        // job's process, or an older idle one, makes room.
                        self.pool.trim_to_bound().await;
                    }
                    None => break,
                },
                () = sleep_until(held), if held.is_some() => {
                    self.refuse_queued(&mut jobs, &mut held).await;
                }
                exit = wait_exit(idle.as_ref().map(|(agent, _)| agent.clone())), if idle.is_some() => {
                    // Only a death while idle is ours to clean up; a process that is being
                    // stopped (evicted, put to sleep) is released by whoever stops it.
                    if let Some((agent, _)) = &idle
                        && self.pool.lock().is_idle(&self.pair, agent.id())
                    {
                        self.pool.release(&self.pair, agent, ExitReason::Crashed, exit);
                    }
                }
                () = sleep_until(idle_deadline), if idle.is_some() => {
                    if let Some((agent, _)) = idle {
                        self.stop_if_idle(&agent, ExitReason::Idle).await;
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
                // The message stays queued in the store and is delivered after a restart.
                Job::Turn { reply, .. } => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(PoolError::ShuttingDown));
                    }
                }
                Job::Wake { reply } => {
                    let _ = reply.send(Err(PoolError::ShuttingDown));
                }
            }
        }
    }

    /// Handles `job`, meanwhile following config changes for the jobs queued behind it
    /// ([`Worker::refuse_queued`]; the running turn itself is left to finish).
    async fn handle_watching(
        &self,
        job: Job,
        jobs: &mut mpsc::Receiver<Job>,
        versions: &mut watch::Receiver<u64>,
        held: &mut Option<tokio::time::Instant>,
    ) {
        let handling = self.handle(job);
        tokio::pin!(handling);
        loop {
            tokio::select! {
                biased;
                () = &mut handling => return,
                changed = versions.changed() => {
                    if changed.is_err() {
                        // Never happens (the pool owns the sender): just finish the job.
                        return handling.await;
                    }
                    self.refuse_queued(jobs, held).await;
                }
                () = sleep_until(*held), if held.is_some() => {
                    self.refuse_queued(jobs, held).await;
                }
            }
        }
    }

    /// If the pair's team is no longer configured, answers every queued job with why.
    ///
    /// A removed team's jobs are first held (`held`: until when) for
    /// `settings.removedTeamGracePeriod`: an edit in progress (a file emptied and written
    /// again) must not fail them. If the team is back by then they are delivered; if not,
    /// they are refused when the period ends.
    async fn refuse_queued(
        &self,
        jobs: &mut mpsc::Receiver<Job>,
        held: &mut Option<tokio::time::Instant>,
    ) {
        let config = self.pool.config();
        let Some(error) = undeliverable(&config, &self.pair) else {
            if held.take().is_some() {
                tracing::info!(pair = %self.pair, queued = jobs.len(), "team configured again: its queued messages are delivered");
            }
            return;
        };
        if matches!(error, PoolError::TeamRemoved { .. }) && !jobs.is_empty() {
            let grace = config.settings.removed_team_grace_period;
            let until = *held.get_or_insert_with(|| {
                tracing::info!(pair = %self.pair, queued = jobs.len(), grace = ?grace, "team removed from the configuration: its queued messages wait for it to come back");
                tokio::time::Instant::now() + grace
            });
            if tokio::time::Instant::now() < until {
                return;
            }
        }
        *held = None;
        let mut refused = 0_usize;
        while let Ok(job) = jobs.try_recv() {
            refused += 1;
            match job {
                Job::Turn { id, reply, .. } => {
                    let outcome = self.refuse(id, error.clone()).await;
                    self.pool.lineage.remove(id);
                    if let Some(reply) = reply {
                        let _ = reply.send(outcome);
                    }
                }
                Job::Wake { reply } => {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        if refused > 0 {
            tracing::info!(pair = %self.pair, refused, "team no longer configured: queued messages refused");
        }
    }

    /// Stops the pair's process if it is idle and out of date: its team was removed, or
    /// settings it was started with changed. A busy one is handled after its turn.
    async fn retire_stale(&self) {
        let version = *self.pool.config_version.borrow();
        let config = self.pool.config();
        let stale = self.pool.lock().stale_idle(&self.pair, version, |launch| {
            staleness(&config, &self.pair, launch)
        });
        let Some((agent, reason)) = stale else {
            return;
        };
        tracing::info!(pair = %self.pair, pid = agent.pid(), %reason, "configuration changed: stopping idle agent");
        self.pool.stop_agent(&self.pair, &agent, reason).await;
    }

    /// The pair's agent if it is idle, with the time it should be stopped for idleness.
    fn idle_agent(&self, config: &crate::config::Config) -> Option<(Agent, tokio::time::Instant)> {
        let idle_timeout = config
            .team(self.pair.target.as_str())
            .and_then(|team| team.idle_timeout)
            .unwrap_or(config.settings.idle_timeout);
        let (agent, last_used) = self.pool.lock().idle(&self.pair)?;
        Some((
            agent,
            tokio::time::Instant::from_std(last_used) + idle_timeout,
        ))
    }

    async fn handle(&self, job: Job) {
        match job {
            Job::Turn {
                id,
                text,
                reply,
                progress,
                route,
            } => {
                let outcome = self.run_message(id, text, progress, route).await;
                self.pool.lineage.remove(id);
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            Job::Wake { reply } => {
                let outcome = match self.acquire_agent().await {
                    Ok(acquired) => {
                        self.set_idle(&acquired.agent);
                        Ok(acquired.agent.pid())
                    }
                    Err(error) => Err(error),
                };
                let _ = reply.send(outcome);
            }
        }
    }

    /// Runs one message and records it: `running` right before its turn is written, its
    /// final state when the turn ends. This is the one place where a message changes state
    /// during delivery.
    async fn run_message(
        &self,
        id: MessageId,
        text: String,
        progress: Option<crate::agent::TextStream>,
        route: super::Route,
    ) -> Result<TurnOutcome, PoolError> {
        // Accepted before its team was removed from the configuration.
        if let Some(error) = undeliverable(&self.pool.config(), &self.pair) {
            return self.refuse(id, error).await;
        }
        let Delivery {
            outcome,
            marked_running,
        } = self.deliver(id, text, progress, route).await;
        let (cancel_requested, closed) = {
            let mut state = self.pool.lock();
            let closed = state.is_closed();
            let requested = state.entry_mut(&self.pair).is_some_and(|entry| {
                entry.current = None;
                std::mem::take(&mut entry.cancel_requested)
            });
            (requested, closed)
        };
        // Every turn that ran counts against its team's budget, a failed or timed-out one
        // too (with the cost its result reported, if any).
        if marked_running {
            let cost = outcome
                .as_ref()
                .map_or(0.0, |outcome| outcome.result.cost_usd);
            self.pool
                .lineage
                .turn_done(&self.pair.target, cost, crate::store::now_ms());
        }
        let ending = Ending {
            marked_running,
            cancel_requested,
            closed,
        };
        if let Some(finish) = how_it_ended(&outcome, ending) {
            // A turn that ran is counted in its session in the same transaction.
            let turn = outcome.as_ref().ok().map(|outcome| SessionTurn {
                session_id: outcome.session_id,
                cost_usd: outcome.result.cost_usd,
                cli_total_usd: outcome.result.total_cost_usd,
            });
            self.write_finish(id, finish, turn).await;
        }
        outcome
    }

    /// Records that a message that never started will not be delivered, and why.
    async fn refuse(&self, id: MessageId, error: PoolError) -> Result<TurnOutcome, PoolError> {
        let outcome = Err(error);
        if let Some(finish) = how_it_ended(&outcome, Ending::default()) {
            self.write_finish(id, finish, None).await;
        }
        outcome
    }

    /// Writes a message's final state and announces it. A failed write (locked by another
    /// process, disk full) is tried twice more before the message is left for restart
    /// recovery to mark.
    async fn write_finish(&self, id: MessageId, finish: MessageFinish, turn: Option<SessionTurn>) {
        let state = finish.state;
        let mut written = Ok(());
        for backoff in [
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_secs(1),
        ] {
            // Only before a retry: even a zero sleep waits for the timer's next tick
            // (up to 1 ms), which would be added to every turn.
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            written = match turn {
                Some(turn) => {
                    self.pool
                        .store
                        .finish_counted_turn(id, finish.clone(), turn)
                        .await
                }
                None => self.pool.store.finish_message(id, finish.clone()).await,
            };
            if written.is_ok() {
                break;
            }
        }
        if let Err(error) = written {
            // The caller still gets the outcome; only the record is behind.
            tracing::error!(%id, pair = %self.pair, %error, "cannot record a finished message");
        }
        self.pool.emit(PoolEvent::MessageFinished {
            id,
            pair: self.pair.clone(),
            state,
        });
    }

    /// Delivers a message: an agent, then `running` in the store, then the turn.
    async fn deliver(
        &self,
        id: MessageId,
        text: String,
        progress: Option<crate::agent::TextStream>,
        route: super::Route,
    ) -> Delivery {
        // One retry, only when the message never reached a process (it was gone before the
        // turn was written), so nothing can run twice.
        let mut retried = false;
        let mut marked_running = false;
        let done = |outcome, marked_running| Delivery {
            outcome,
            marked_running,
        };
        loop {
            let Acquired {
                agent,
                cold,
                session: turn_session,
            } = match self.acquire_agent().await {
                Ok(acquired) => acquired,
                Err(error) => return done(Err(error), marked_running),
            };
            if !marked_running {
                // Current before it is marked running, so a cancel that sees it running
                // finds it here.
                let signal = Arc::new(tokio::sync::Notify::new());
                if let Some(entry) = self.pool.lock().entry_mut(&self.pair) {
                    entry.current = Some(id);
                    entry.cancel_requested = false;
                    entry.cancel_signal = signal;
                }
                match self.pool.store.mark_running(id, turn_session).await {
                    Ok(true) => marked_running = true,
                    // Cancelled while it waited in the queue.
                    Ok(false) => {
                        self.set_idle(&agent);
                        return done(Err(PoolError::Cancelled { id }), false);
                    }
                    Err(error) => {
                        self.set_idle(&agent);
                        return done(Err(error.into()), false);
                    }
                }
            }
            let (cancelled, signal) = {
                let state = self.pool.lock();
                let entry = state.entry(&self.pair);
                (
                    entry.is_some_and(|entry| entry.cancel_requested),
                    entry.map(|entry| entry.cancel_signal.clone()),
                )
            };
            if cancelled {
                // Cancelled after it was marked running but before its turn was written.
                self.set_idle(&agent);
                return done(Err(PoolError::Cancelled { id }), marked_running);
            }
            self.pool.emit(PoolEvent::TurnStarted {
                id,
                pair: self.pair.clone(),
                pid: agent.pid(),
            });
            // Read per turn, so a changed responseTimeout applies to running processes too.
            let response_timeout = self.pool.config().settings.response_timeout;
            let approver: Arc<dyn crate::agent::TurnApprover> =
                Arc::new(super::approvals::MessageApprover {
                    pool: Arc::downgrade(&self.pool),
                    message: id,
                    pair: self.pair.clone(),
                    route: route.clone(),
                    progress: progress.clone(),
                });
            self.pool
                .approvals
                .turn_started(&self.pair, id, route.clone(), progress.clone());
            let turn = agent.turn_streaming(
                text.clone(),
                response_timeout,
                progress.clone(),
                Some(approver),
            );
            tokio::pin!(turn);
            let turn_result = loop {
                tokio::select! {
                    biased;
                    // Polled first, so the turn is written before any interrupt is.
                    result = &mut turn => break result,
                    () = wait_signal(signal.as_ref()) => {
                        agent.interrupt().await;
                    }
                }
            };
            self.pool.approvals.turn_ended(&self.pair, id);
            match turn_result {
                Ok(result) => {
                    let outcome = self.after_turn(id, &agent, cold, result, turn_session);
                    return done(Ok(outcome), marked_running);
                }
                Err(TurnError::Gone) if !retried => {
                    retried = true;
                    let exit = agent.exited().await;
                    self.pool
                        .release(&self.pair, &agent, ExitReason::Crashed, exit.status);
                }
                Err(error) => {
                    match &error {
                        TurnError::Exited { exit, .. } => {
                            self.pool.release(
                                &self.pair,
                                &agent,
                                if exit.requested {
                                    ExitReason::Requested
                                } else {
                                    ExitReason::Crashed
                                },
                                exit.status.clone(),
                            );
                            self.note_session_problem(&exit.stderr_tail).await;
                        }
                        TurnError::Gone => {
                            let exit = agent.exited().await;
                            self.pool
                                .release(&self.pair, &agent, ExitReason::Crashed, exit.status);
                        }
                        // The process is alive but out of step with the pool (never expected):
                        // replace it rather than wait on it.
                        TurnError::Busy => {
                            let exit = agent.stop().await;
                            self.pool.release(
                                &self.pair,
                                &agent,
                                ExitReason::Unhealthy,
                                exit.status,
                            );
                        }
                        // The actor interrupts and recovers (or kills) the process itself; the
                        // next turn waits for that inside the actor.
                        TurnError::TimedOut { .. } => self.set_idle(&agent),
                    }
                    // Any turn that was written may have left a transcript behind (in the
                    // session it ran in, if that is still the pair's).
                    if self.session_id() == turn_session {
                        self.mark_resumable(true).await;
                    }
                    let error = self.say_connection_dropped(error);
                    self.pool.emit(PoolEvent::TurnFailed {
                        pair: self.pair.clone(),
                        error: error.to_string(),
                    });
                    return done(
                        Err(PoolError::Turn {
                            pair: self.pair.to_string(),
                            source: error,
                        }),
                        marked_running,
                    );
                }
            }
        }
    }

    /// For a remote team, a turn ended by ssh itself (exit 255: the connection or its master
    /// went away) says so, naming the host: a multiplexed session often ends without a word.
    fn say_connection_dropped(&self, error: TurnError) -> TurnError {
        let config = self.pool.config();
        let Some(remote) = config
            .team(self.pair.target.as_str())
            .and_then(|team| team.remote.as_ref())
        else {
            return error;
        };
        match error {
            // ssh's own exit: 255 with nothing said (a multiplexed session whose master
            // went) or ssh's words about the connection; not an agent that exited 255 and
            // said why.
            TurnError::Exited { mut exit, partial }
                if exit.code == Some(255)
                    && (exit.stderr_tail.trim().is_empty()
                        || [
                            "connection",
                            "closed by",
                            "broken pipe",
                            "timeout",
                            "mux_client",
                        ]
                        .iter()
                        .any(|word| exit.stderr_tail.to_ascii_lowercase().contains(word))) =>
            {
                let said = exit.stderr_tail.trim();
                exit.stderr_tail = format!(
                    "the ssh connection to {} ended{}; the next message connects again",
                    remote.host,
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(" ({said})")
                    }
                );
                TurnError::Exited { exit, partial }
            }
            other => other,
        }
    }

    fn session_id(&self) -> Uuid {
        self.pool
            .lock()
            .entry(&self.pair)
            .map_or_else(Uuid::nil, |entry| entry.session.id)
    }

    /// A turn ended with a result: counts it in the pair's session (in memory; the store
    /// counts it with the message's final state), puts the agent back to idle, and announces
    /// it.
    fn after_turn(
        &self,
        id: MessageId,
        agent: &Agent,
        cold: bool,
        result: TurnResult,
        turn_session: Uuid,
    ) -> TurnOutcome {
        {
            let mut state = self.pool.lock();
            // Entries are never removed while the pool runs, so the worker's entry is there.
            if let Some(entry) = state.entry_mut(&self.pair) {
                // Count the turn in the pair's session only if it ran in it (not in a session
                // rebooted or deleted meanwhile).
                if entry.session.id == turn_session {
                    entry.session.resumable = true;
                    entry.session.turns += 1;
                    entry.session.total_cost += result.cost_usd;
                    if let Some(total) = result.total_cost_usd {
                        entry.session.cli_total = total;
                    }
                }
            }
            state.turn_done(&self.pair, agent.id(), Instant::now());
        }
        self.pool.slot_changed.notify_waiters();
        self.pool.emit(PoolEvent::TurnFinished {
            pair: self.pair.clone(),
            is_error: result.is_error,
            cost_usd: result.cost_usd,
            duration_ms: result.duration_ms,
        });
        TurnOutcome {
            message_id: id,
            pair: self.pair.clone(),
            session_id: turn_session,
            pid: agent.pid(),
            cold,
            result,
        }
    }

    fn set_idle(&self, agent: &Agent) {
        self.pool
            .lock()
            .back_to_idle(&self.pair, agent.id(), Some(Instant::now()));
        self.pool.slot_changed.notify_waiters();
    }

    /// Records whether the session has a transcript to resume, in memory and in the store.
    async fn mark_resumable(&self, resumable: bool) {
        let session_id = {
            let mut state = self.pool.lock();
            let Some(entry) = state.entry_mut(&self.pair) else {
                return;
            };
            if entry.session.resumable == resumable {
                return;
            }
            entry.session.resumable = resumable;
            entry.session.id
        };
        if let Err(error) = self.pool.store.mark_resumable(session_id, resumable).await {
            tracing::error!(pair = %self.pair, %error, "cannot record the session's state");
        }
    }

    /// Learns from a failed process's stderr whether the session id was wrong for the mode.
    async fn note_session_problem(&self, stderr: &str) {
        match session_problem(stderr) {
            Some(SessionProblem::AlreadyExists) => self.mark_resumable(true).await,
            Some(SessionProblem::NotFound) => self.mark_resumable(false).await,
            None => {}
        }
    }

    /// A ready agent, taken `Busy`: the pair's idle one, or a new one in a reserved slot.
    async fn acquire_agent(&self) -> Result<Acquired, PoolError> {
        match self.take_or_reserve().await? {
            Some(acquired) => Ok(acquired),
            None => self.spawn_reserved().await,
        }
    }

    /// The pair's idle agent taken `Busy` (`Some`), or a slot reserved for a new one (`None`),
    /// waiting while the slot is busy, starting or stopping.
    async fn take_or_reserve(&self) -> Result<Option<Acquired>, PoolError> {
        loop {
            let changed = self.pool.slot_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let version = *self.pool.config_version.borrow();
            let config = self.pool.config();
            // Started with settings that have changed since: replace it (checked only once
            // per config version, so a turn costs nothing when nothing changed).
            let (taken, others_wait) = {
                let mut state = self.pool.lock();
                let taken = state.take_for_turn(&self.pair, version, |launch| {
                    staleness(&config, &self.pair, launch)
                });
                (taken, state.someone_waits())
            };
            drop(config);
            // Served: the next in line may be able to go now.
            if others_wait && matches!(taken, Take::Ready { .. }) {
                self.pool.slot_changed.notify_waiters();
            }
            match taken {
                Take::Ready { process, session } => {
                    return Ok(Some(Acquired {
                        agent: process,
                        cold: false,
                        session,
                    }));
                }
                Take::Stale { process, reason } => {
                    self.pool.stop_agent(&self.pair, &process, reason).await;
                    continue;
                }
                Take::Dead { process } => {
                    // Died while idle and not yet noticed: its slot is free; start anew.
                    self.pool.forget_agent(process.pid());
                    let exit = process.exited().await;
                    self.pool.emit(PoolEvent::Exited {
                        pair: self.pair.clone(),
                        pid: process.pid(),
                        reason: ExitReason::Crashed,
                        status: exit.status,
                    });
                    self.pool.slot_changed.notify_waiters();
                    if self.reserve_slot().await? {
                        return Ok(None);
                    }
                    continue;
                }
                Take::Vacant => {
                    if self.reserve_slot().await? {
                        return Ok(None);
                    }
                    continue;
                }
                Take::Closed => return Err(PoolError::ShuttingDown),
                // Starting, or being stopped by an eviction or a sleep: wait until it is done.
                Take::Wait => {}
            }
            tokio::select! {
                () = &mut changed => {}
                () = self.pool.cancel.cancelled() => return Err(PoolError::ShuttingDown),
            }
        }
    }

    /// Starts the pair's agent in the slot it reserved, and takes it `Busy`.
    async fn spawn_reserved(&self) -> Result<Acquired, PoolError> {
        match self.spawn_agent().await {
            Ok(started) => {
                let agent = started.agent.clone();
                let session = started.session;
                let live = Live::new(started.agent, session, started.launch, started.version);
                let taken = self.pool.lock().spawned(&self.pair, live);
                match taken {
                    Spawned::Ready => Ok(Acquired {
                        agent,
                        cold: true,
                        session,
                    }),
                    Spawned::Closed => {
                        self.pool
                            .stop_agent(&self.pair, &agent, ExitReason::Shutdown)
                            .await;
                        Err(PoolError::ShuttingDown)
                    }
                    // Rebooted or deleted while the process started: it runs the old session,
                    // so it must not take a turn.
                    Spawned::SessionReplaced => {
                        self.pool
                            .stop_agent(&self.pair, &agent, ExitReason::SessionReplaced)
                            .await;
                        Box::pin(self.acquire_agent()).await
                    }
                }
            }
            Err(error) => {
                self.pool.lock().spawn_failed(&self.pair);
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
    /// process of another pair when the pool is full, or waiting for one to free up. False
    /// when the pair's own slot is not empty after all: look at it again.
    pub(super) async fn reserve_slot(&self) -> Result<bool, PoolError> {
        let wait = self.pool.config().settings.pool_wait_timeout;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.pool.slot_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Read on every try: a config change may raise or lower the bound meanwhile (and
            // wakes this wait).
            let max = self.pool.config().settings.max_processes;
            let (reserved, others_wait) = {
                let mut state = self.pool.lock();
                let reserved = state.reserve(&self.pair, max);
                (reserved, state.someone_waits())
            };
            // Served: the next in line may be able to go now.
            if others_wait && !matches!(reserved, Reserve::Full) {
                self.pool.slot_changed.notify_waiters();
            }
            match reserved {
                Reserve::Reserved => return Ok(true),
                Reserve::Occupied => return Ok(false),
                Reserve::Closed => return Err(PoolError::ShuttingDown),
                Reserve::Evict { victim, process } => {
                    if self.evict(&victim, &process).await? {
                        return Ok(true);
                    }
                    continue;
                }
                Reserve::Full => {}
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    let busy = {
                        let mut state = self.pool.lock();
                        state.leave_line(&self.pair);
                        state.live()
                    };
                    // The next in line may go now.
                    self.pool.slot_changed.notify_waiters();
                    return Err(PoolError::Saturated { busy, max, waited: wait });
                }
                () = self.pool.cancel.cancelled() => return Err(PoolError::ShuttingDown),
            }
        }
    }

    /// Stops `victim`'s idle `agent` (already `Stopping`) to make room, and takes its slot
    /// straight over, so no one can take it between the victim's exit and this spawn.
    /// Returns whether the slot is this pair's now (not when `maxProcesses` was lowered
    /// meanwhile).
    async fn evict(&self, victim: &Pair, agent: &Agent) -> Result<bool, PoolError> {
        tracing::info!(evicted = %victim, pid = agent.pid(), for_pair = %self.pair, "pool full: evicting least recently used idle agent");
        self.pool.emit(PoolEvent::Evicted {
            pair: victim.clone(),
            pid: agent.pid(),
            for_pair: self.pair.clone(),
        });
        let exit = agent.stop().await;
        let max = self.pool.config().settings.max_processes;
        let handed = self
            .pool
            .lock()
            .hand_over(victim, agent.id(), &self.pair, max);
        if !matches!(handed, HandOver::NotOwned { .. }) {
            self.pool.forget_agent(agent.pid());
        }
        self.pool.slot_changed.notify_waiters();
        self.pool.emit(PoolEvent::Exited {
            pair: victim.clone(),
            pid: agent.pid(),
            reason: ExitReason::Evicted,
            status: exit.status,
        });
        match handed {
            HandOver::HandedOver => Ok(true),
            HandOver::Freed { closed: true } | HandOver::NotOwned { closed: true } => {
                Err(PoolError::ShuttingDown)
            }
            HandOver::Freed { closed: false } | HandOver::NotOwned { closed: false } => Ok(false),
        }
    }

    /// Starts the pair's agent in its reserved slot: `--resume` when the session has a
    /// transcript, `--session-id` otherwise, correcting the choice once if the CLI disagrees.
    async fn spawn_agent(&self) -> Result<Started, PoolError> {
        let mut corrected = false;
        let mut reconnected = false;
        loop {
            // The version first: a change that lands while this spawns makes the process
            // look out of date, and it is checked again, never the other way round.
            let version = *self.pool.config_version.borrow();
            let config = self.pool.config();
            let Some(team) = config.team(self.pair.target.as_str()) else {
                return Err(PoolError::unknown_team(&config, self.pair.target.as_str()));
            };
            let (session_id, mode, baseline) = {
                let state = self.pool.lock();
                let session = state.entry(&self.pair).map(|entry| &entry.session);
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
            let agent_key = Uuid::new_v4().to_string();
            // A remote team's host first: its connection (and tunnel) is made, or found
            // alive, before the agent starts through it.
            let link = match &team.remote {
                Some(remote) => Some(
                    self.pool
                        .remotes
                        .link(team, remote, self.pool.callbacks.tunnel_port())
                        .await
                        .map_err(|error| PoolError::Spawn {
                            pair: self.pair.to_string(),
                            source: SpawnError::Remote(error),
                        })?,
                ),
                None => None,
            };
            // Where the agent works there, resolved by the host (asked once per team).
            let remote_place =
                match (&team.remote, &link) {
                    (Some(remote), Some(link)) => {
                        Some(self.pool.remotes.place(team, remote, link).await.map_err(
                            |error| PoolError::Spawn {
                                pair: self.pair.to_string(),
                                source: SpawnError::Remote(error),
                            },
                        )?)
                    }
                    _ => None,
                };
            let remote_mcp_config = link
                .as_ref()
                .and_then(|link| link.tunnel)
                .and_then(|port| self.pool.callbacks.url_through(&self.pair, port))
                .map(|url| super::callback::mcp_config(&url));
            let mcp_config = self.pool.callbacks.url(&self.pair).filter(|_| team.remote.is_none()).and_then(|url| {
                let dir = super::agent_config_dir(&config.iris_home);
                super::callback::write_agent_config(&dir, &self.pair, &url)
                    .inspect_err(|error| {
                        tracing::warn!(pair = %self.pair, dir = %dir.display(), %error, "cannot write the agent's MCP config; it starts without the Iris MCP server");
                    })
                    .ok()
            });
            // Rules are read at each permission request: an edit applies to this process
            // from its next one, without a restart.
            let pool = Arc::downgrade(&self.pool);
            let rules = live_rules(
                move || pool.upgrade().map(|pool| pool.config()),
                team.name.clone(),
            );
            let spec = agent_spec(
                &config,
                team,
                &self.pair,
                &Launch {
                    session: session_id,
                    mode,
                    cost_baseline: baseline,
                    agent_key: &agent_key,
                    mcp_config: mcp_config.as_deref(),
                    rules,
                    always: Some(self.pool.approvals.always_source(&self.pair)),
                    link: link.as_ref(),
                    remote_mcp_config,
                    remote_place,
                },
            );
            match Agent::spawn(spec, self.sink(), self.pool.guard.clone()).await {
                Ok(agent) => {
                    let record = AgentRecord {
                        pgid: agent.pid(),
                        agent_key,
                        caller: self.pair.caller.clone(),
                        target: self.pair.target.clone(),
                        started_at_ms: crate::store::now_ms(),
                    };
                    if let Err(error) = self.pool.store.agent_started(record).await {
                        tracing::error!(pair = %self.pair, %error, "cannot record a started agent; a crashed Iris could not stop it later");
                    }
                    self.pool.emit(PoolEvent::Ready {
                        pair: self.pair.clone(),
                        pid: agent.pid(),
                        ready_ms: millis(agent.ready_after()),
                    });
                    return Ok(Started {
                        agent,
                        session: session_id,
                        launch: LaunchKey::of(&config, team),
                        version,
                    });
                }
                Err(SpawnError::ExitedEarly { ref exit, .. })
                    if !corrected && session_problem(&exit.stderr_tail).is_some() =>
                {
                    corrected = true;
                    self.correct_session(session_problem(&exit.stderr_tail), session_id)
                        .await?;
                }
                // ssh itself failed through a master that looked alive: it may have been
                // ending (its connection just dropped). Once more, on a new connection.
                Err(SpawnError::ExitedEarly { ref exit, .. })
                    if !reconnected && exit.code == Some(255) && link.is_some() =>
                {
                    reconnected = true;
                    if let (Some(remote), Some(link)) = (&team.remote, &link) {
                        tracing::info!(pair = %self.pair, stderr = %exit.stderr_tail.trim(), "ssh failed through the host's connection; connecting again");
                        self.pool.remotes.replace(remote, link).await;
                    }
                }
                Err(source) => {
                    // A remote wrapper that ended before the agent ran says why.
                    let source = match (&source, &team.remote) {
                        (SpawnError::ExitedEarly { exit, .. }, Some(remote)) => {
                            crate::remote::wrapper_failure(
                                team,
                                remote,
                                exit.code,
                                &exit.stderr_tail,
                            )
                            .map_or(source, SpawnError::Remote)
                        }
                        _ => source,
                    };
                    return Err(PoolError::Spawn {
                        pair: self.pair.to_string(),
                        source,
                    });
                }
            }
        }
    }

    async fn correct_session(
        &self,
        problem: Option<SessionProblem>,
        old: Uuid,
    ) -> Result<(), PoolError> {
        match problem {
            Some(SessionProblem::AlreadyExists) => self.mark_resumable(true).await,
            Some(SessionProblem::NotFound) => {
                // The transcript is gone (deleted by hand, another HOME): the conversation
                // cannot continue, so start a new one rather than fail forever.
                let _sessions = self.pool.sessions.lock().await;
                if self.session_id() != old {
                    // Replaced meanwhile (reboot, delete): the new session is the answer.
                    return Ok(());
                }
                let store = &self.pool.store;
                store.retire_session(old, SessionStatus::Deleted).await?;
                let record = store
                    .create_session(&self.pair.caller, &self.pair.target, Uuid::new_v4())
                    .await?;
                if let Some(entry) = self.pool.lock().entry_mut(&self.pair) {
                    entry.session = Session::from(&record);
                }
                tracing::warn!(pair = %self.pair, %old, new = %record.session_id, "session transcript not found; starting a new session");
                self.pool.emit(PoolEvent::SessionReset {
                    pair: self.pair.clone(),
                    old_session_id: old,
                    session_id: record.session_id,
                });
            }
            None => {}
        }
        Ok(())
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

    async fn stop_if_idle(&self, agent: &Agent, reason: ExitReason) {
        let taken = self
            .pool
            .lock()
            .take_idle(&self.pair, agent.id(), Next::Stopping);
        if taken {
            tracing::info!(pair = %self.pair, pid = agent.pid(), %reason, "stopping idle agent");
            self.pool.stop_agent(&self.pair, agent, reason).await;
        }
    }

    /// A token-free round trip; an agent that fails it is stopped and replaced.
    async fn health_check(&self, agent: &Agent) {
        let taken = self
            .pool
            .lock()
            .take_idle(&self.pair, agent.id(), Next::Busy);
        if !taken {
            return;
        }
        let timeout = self.pool.config().settings.spawn_timeout;
        match agent.health_check(timeout).await {
            Ok(round_trip) => {
                // Back to idle without touching its last use: a health check is not use.
                self.pool.lock().back_to_idle(&self.pair, agent.id(), None);
                self.pool.slot_changed.notify_waiters();
                self.pool.emit(PoolEvent::HealthChecked {
                    pair: self.pair.clone(),
                    pid: agent.pid(),
                    round_trip_ms: millis(round_trip),
                });
            }
            Err(error) => {
                // Only if the slot still holds this agent for the check: a sleep, an eviction
                // or a crash may have taken and released it meanwhile, and must not be undone.
                if !self.pool.lock().busy_to_stopping(&self.pair, agent.id()) {
                    return;
                }
                tracing::warn!(pair = %self.pair, pid = agent.pid(), %error, "agent failed its health check; replacing it");
                self.pool.emit(PoolEvent::Unhealthy {
                    pair: self.pair.clone(),
                    pid: agent.pid(),
                    error: error.to_string(),
                });
                self.pool
                    .stop_agent(&self.pair, agent, ExitReason::Unhealthy)
                    .await;
                match self.acquire_agent().await {
                    Ok(replacement) => self.set_idle(&replacement.agent),
                    Err(error) => {
                        tracing::warn!(pair = %self.pair, %error, "replacing an unhealthy agent failed")
                    }
                }
            }
        }
    }
}

/// An agent [`Worker::acquire_agent`] took for a turn (`Busy`).
struct Acquired {
    agent: Agent,
    /// Started for this turn (not warm).
    cold: bool,
    /// The session it runs.
    session: Uuid,
}

/// What [`Worker::deliver`] did with a message.
struct Delivery {
    outcome: Result<TurnOutcome, PoolError>,
    /// The message was marked `running` in the store (its turn was, or was about to be,
    /// written to an agent).
    marked_running: bool,
}

/// The circumstances a message's delivery ended in, for [`how_it_ended`].
#[derive(Debug, Clone, Copy, Default)]
struct Ending {
    /// It was marked `running` (else it never left the queue).
    marked_running: bool,
    /// A cancel was asked for while it ran.
    cancel_requested: bool,
    /// The pool is shutting down.
    closed: bool,
}

/// A process [`Worker::spawn_agent`] started, with what it was started with.
struct Started {
    agent: Agent,
    /// The session it runs.
    session: Uuid,
    /// Its team's launch settings, to notice when a config change makes them out of date.
    launch: LaunchKey,
    /// The config version they were read in.
    version: u64,
}

fn health_interval(period: Duration) -> tokio::time::Interval {
    let mut health = tokio::time::interval(period);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.reset();
    health
}

/// The final record of a delivered (or undeliverable) message, or `None` when the store
/// already holds its final state (cancelled while queued) or it stays queued (Iris shut down
/// before it started: it is delivered after the restart).
fn how_it_ended(outcome: &Result<TurnOutcome, PoolError>, ending: Ending) -> Option<MessageFinish> {
    let Ending {
        marked_running: started,
        cancel_requested,
        closed,
    } = ending;
    let failure = |state: MessageState, error: String, answer: Option<String>| MessageFinish {
        state,
        answer,
        is_error: true,
        error: Some(error),
        cost_usd: None,
        usage: None,
        duration_ms: None,
        transcript: Arc::default(),
    };
    match outcome {
        Ok(outcome) => {
            let result = &outcome.result;
            // Only a turn that really was interrupted is `cancelled`: a cancel that came as it
            // finished must not relabel a complete answer.
            let state = if result.interrupted {
                MessageState::Cancelled
            } else if result.is_error {
                MessageState::Failed
            } else {
                MessageState::Completed
            };
            let error = result.is_error.then(|| {
                result
                    .errors
                    .clone()
                    .unwrap_or_else(|| result.answer.clone())
            });
            Some(MessageFinish {
                state,
                answer: Some(result.answer.clone()),
                is_error: result.is_error,
                error,
                cost_usd: Some(result.cost_usd),
                usage: result.usage.clone(),
                duration_ms: Some(result.duration_ms),
                transcript: Arc::clone(&result.transcript),
            })
        }
        Err(PoolError::Cancelled { .. }) if !started => None,
        Err(error @ PoolError::Cancelled { .. }) => {
            Some(failure(MessageState::Cancelled, error.to_string(), None))
        }
        Err(PoolError::ShuttingDown) if !started => None,
        Err(
            error @ PoolError::Turn {
                source: TurnError::TimedOut { partial, .. },
                ..
            },
        ) => Some(failure(
            if cancel_requested {
                MessageState::Cancelled
            } else {
                MessageState::TimedOut
            },
            error.to_string(),
            Some(partial.clone()),
        )),
        Err(
            error @ PoolError::Turn {
                source: TurnError::Exited { partial, .. },
                ..
            },
        ) => {
            let state = if cancel_requested {
                MessageState::Cancelled
            } else if closed {
                MessageState::Interrupted
            } else {
                MessageState::Failed
            };
            Some(failure(state, error.to_string(), Some(partial.clone())))
        }
        Err(error) if started && closed => {
            Some(failure(MessageState::Interrupted, error.to_string(), None))
        }
        Err(error) => Some(failure(MessageState::Failed, error.to_string(), None)),
    }
}

/// What a CLI's stderr says about the session id it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionProblem {
    /// `--session-id` named a session that exists: resume it instead.
    AlreadyExists,
    /// `--resume` named a session with no transcript.
    NotFound,
}

pub(super) fn session_problem(stderr: &str) -> Option<SessionProblem> {
    if stderr.contains("is already in use") {
        Some(SessionProblem::AlreadyExists)
    } else if stderr.contains("No conversation found") {
        Some(SessionProblem::NotFound)
    } else {
        None
    }
}

async fn wait_signal(signal: Option<&Arc<tokio::sync::Notify>>) {
    match signal {
        Some(signal) => signal.notified().await,
        None => std::future::pending().await,
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
