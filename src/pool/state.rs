//! The pool's slot state: which pair holds a process, in what state, and how many slots are
//! taken. The methods of [`State`] are the only code that changes a slot or the live count;
//! everything else reads through them. They run under the pool's lock (a
//! `std::sync::Mutex`, never held across an await), so each transition is atomic.
//!
//! A pair's slot moves through
//!
//! ```text
//!            reserve            spawned            take_idle / take_for_turn
//!   Empty ───────────▶ Spawning ───────▶ Busy ◀──────────────────────────── Idle
//!     ▲                   │               │ ──────────────────────────────▶  │
//!     │  spawn_failed     │               │   back_to_idle / turn_done             │
//!     ├───────────────────┘               ▼                                   ▼
//!     └──────────── release ◀──────── Stopping ◀── stop / evict / stale / evict_over
//! ```
//!
//! Invariant: `live` counts the slots that are `Spawning`, `Idle`, `Busy` or `Stopping`, and
//! a reservation never takes it past the `max` it is given. A slot is freed only by
//! [`State::release`] (after its process exited and was reaped), by [`State::spawn_failed`],
//! or when a process found dead is dropped ([`Take::Dead`]); an eviction hands the victim's
//! slot straight to the pair that needed it ([`State::hand_over`]).
//! Invariant: only `Idle` processes are evicted or stopped for being stale; `Busy` ones are
//! never taken from their turn (only [`State::stop`], an explicit request, stops them).
//! Invariant: every transition that names a process checks its identity
//! ([`Process::id`]), so a late notice about an old process never touches its successor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::reconfigure::LaunchKey;
use super::{Job, Pair, PairState};
use crate::agent::Agent;
use crate::store::{MessageId, SessionRecord};

/// What the state needs to know of a process: who it is, and whether it has ended. The pool
/// uses [`Agent`]; the state's unit tests use a stand-in.
pub(crate) trait Process: Clone {
    /// Unique for the pool's lifetime (pids can be reused; this cannot).
    fn id(&self) -> u64;
    /// Whether the process has ended.
    fn has_exited(&self) -> bool;
}

impl Process for Agent {
    fn id(&self) -> u64 {
        Agent::id(self)
    }

    fn has_exited(&self) -> bool {
        Agent::has_exited(self)
    }
}

/// Why a process stopped (in [`PoolEvent::Exited`](super::PoolEvent::Exited)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// Idle longer than `idleTimeout`.
    Idle,
    /// Stopped to make room for another pair (least recently used idle process).
    Evicted,
    /// Ended on its own.
    Crashed,
    /// Failed a health check, or fell out of step with the pool.
    Unhealthy,
    /// Stopped on request (`team_sleep`, a session reboot or delete).
    Requested,
    /// Iris is shutting down.
    Shutdown,
    /// It ran a session that was since rebooted or deleted.
    SessionReplaced,
    /// Its team was removed from the configuration.
    TeamRemoved,
    /// Settings it was started with changed.
    Reconfigured,
    /// `maxProcesses` was lowered below the number of live processes.
    OverMaxProcesses,
}

impl ExitReason {
    /// How logs and messages say it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Evicted => "evicted",
            Self::Crashed => "crashed",
            Self::Unhealthy => "unhealthy",
            Self::Requested => "requested",
            Self::Shutdown => "shutdown",
            Self::SessionReplaced => "session replaced",
            Self::TeamRemoved => "team removed",
            Self::Reconfigured => "reconfigured",
            Self::OverMaxProcesses => "over maxProcesses",
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A live process and what it was started with.
pub(crate) struct Live<P> {
    /// The process.
    pub(crate) process: P,
    /// Turns it has run.
    pub(crate) turns: u64,
    /// The session it runs (it may lag the pair's after a reboot or delete: such a process
    /// is replaced before its next turn).
    pub(crate) session: Uuid,
    /// What it was started with, to tell whether a config change made it stale.
    pub(crate) launch: LaunchKey,
    /// The config version `launch` was last found current in.
    pub(crate) version: u64,
}

impl<P> Live<P> {
    /// A process that has just started.
    pub(crate) fn new(process: P, session: Uuid, launch: LaunchKey, version: u64) -> Self {
        Self {
            process,
            turns: 0,
            session,
            launch,
            version,
        }
    }
}

/// A pair's process slot. Every variant but `Empty` counts in [`State::live`].
enum Slot<P> {
    Empty,
    Spawning,
    Idle(Live<P>),
    Busy(Live<P>),
    Stopping(Live<P>),
}

impl<P: Process> Slot<P> {
    fn live(&self) -> Option<&Live<P>> {
        match self {
            Self::Idle(live) | Self::Busy(live) | Self::Stopping(live) => Some(live),
            Self::Empty | Self::Spawning => None,
        }
    }

    fn holds(&self, id: u64) -> bool {
        self.live().is_some_and(|live| live.process.id() == id)
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

/// A pair's session as the pool keeps it in memory (the store has the record).
pub(crate) struct Session {
    pub(crate) id: Uuid,
    /// A transcript exists: spawn with `--resume`.
    pub(crate) resumable: bool,
    pub(crate) turns: u64,
    pub(crate) total_cost: f64,
    /// The CLI's cumulative total at the last result (the next process's baseline).
    pub(crate) cli_total: f64,
}

impl From<&SessionRecord> for Session {
    fn from(record: &SessionRecord) -> Self {
        Self {
            id: record.session_id,
            resumable: record.resumable,
            turns: record.turns,
            total_cost: record.total_cost_usd,
            cli_total: record.cli_total_usd,
        }
    }
}

/// Everything the pool keeps for one pair. The slot and its last use are private to this
/// module; the rest (the queue, the session, the running message) belongs to the pair's
/// worker and the pool's requests.
pub(crate) struct PairEntry<P = Agent> {
    slot: Slot<P>,
    /// When its process last finished a turn (or the pair was created): the LRU key.
    last_used: Instant,
    /// The pair's queue (its worker holds the receiver).
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) session: Session,
    /// The message whose turn is running.
    pub(crate) current: Option<MessageId>,
    /// A cancel asked for `current`: its interrupted turn is recorded as `cancelled`.
    pub(crate) cancel_requested: bool,
    /// Wakes the worker to interrupt `current`'s turn. A new one per message, so a cancel
    /// can never reach a later message.
    pub(crate) cancel_signal: Arc<Notify>,
}

impl<P> PairEntry<P> {
    /// A pair's entry: no process yet, its session as stored.
    pub(crate) fn new(jobs: mpsc::Sender<Job>, session: Session, now: Instant) -> Self {
        Self {
            slot: Slot::Empty,
            last_used: now,
            jobs,
            session,
            current: None,
            cancel_requested: false,
            cancel_signal: Arc::new(Notify::new()),
        }
    }
}

/// What [`State::take_for_turn`] found in the pair's slot.
pub(crate) enum Take<P> {
    /// Its idle process, now `Busy`, running `session`.
    Ready { process: P, session: Uuid },
    /// Its idle process must not take a turn (now `Stopping`): stop it, then try again.
    Stale { process: P, reason: ExitReason },
    /// Its idle process had died unnoticed; the slot is freed.
    Dead { process: P },
    /// No process: reserve a slot and spawn one.
    Vacant,
    /// Spawning, busy or stopping: wait for a change.
    Wait,
    /// The pool is closed (or the pair is unknown to it).
    Closed,
}

/// What [`State::reserve`] did.
pub(crate) enum Reserve<P> {
    /// A free slot is the pair's, `Spawning`.
    Reserved,
    /// The pool is full: `victim`'s idle process (the least recently used) is now
    /// `Stopping`; stop it, then [`State::hand_over`] its slot.
    Evict { victim: Pair, process: P },
    /// Full, and no idle process to evict.
    Full,
    /// The pair's slot is not empty (a reservation is only for a pair without a process):
    /// look at it again.
    Occupied,
    /// The pool is closed.
    Closed,
}

/// What [`State::hand_over`] did with an evicted process's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOver {
    /// The slot is the requester's now (`Spawning`); the count did not change.
    HandedOver,
    /// The victim's slot was freed, not handed over: the pool closed, or `max` is now lower.
    Freed { closed: bool },
    /// The victim's slot no longer held that process (released by someone else).
    NotOwned { closed: bool },
}

/// What [`State::spawned`] found when the new process took its slot (`Busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spawned {
    /// It may take its turn.
    Ready,
    /// The pool closed while it started: stop it.
    Closed,
    /// The pair's session was rebooted or deleted while it started: stop it.
    SessionReplaced,
}

/// The target of [`State::take_idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// For a health check.
    Busy,
    /// To be stopped.
    Stopping,
}

/// A pair's slot, as [`State::pairs`] shows it.
pub(crate) struct SlotView<'a, P> {
    pub(crate) state: PairState,
    pub(crate) process: Option<&'a P>,
    pub(crate) process_turns: u64,
    pub(crate) last_used: Instant,
}

/// Every pair's slot and the count of live ones. See the module doc for the transitions.
pub(crate) struct State<P = Agent> {
    pairs: HashMap<Pair, PairEntry<P>>,
    live: usize,
    closed: bool,
    /// Pairs waiting for a process while the pool is full, in arrival order: the first one
    /// is served first (a slot, an eviction, or its own idle process), whatever the order in
    /// which their workers wake up.
    waiting: std::collections::VecDeque<Pair>,
}

impl<P> Default for State<P> {
    fn default() -> Self {
        Self {
            pairs: HashMap::new(),
            live: 0,
            closed: false,
            waiting: std::collections::VecDeque::new(),
        }
    }
}

impl<P: Process> State<P> {
    /// Slots taken: spawning, idle, busy or stopping.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Whether `pair` may be served now: nobody waits, or it is the first in line.
    fn first_in_line(&self, pair: &Pair) -> bool {
        self.waiting.front().is_none_or(|first| first == pair)
    }

    /// Puts `pair` in line (once) for a process.
    fn wait_in_line(&mut self, pair: &Pair) {
        if !self.waiting.contains(pair) {
            self.waiting.push_back(pair.clone());
        }
    }

    /// Whether pairs wait in line for a process.
    pub(crate) fn someone_waits(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Takes `pair` out of the line: it was served, or stopped waiting (a timeout).
    pub(crate) fn leave_line(&mut self, pair: &Pair) {
        self.waiting.retain(|waiting| waiting != pair);
    }

    /// The pairs waiting in line for a process, first first.
    #[cfg(test)]
    fn line(&self) -> Vec<Pair> {
        self.waiting.iter().cloned().collect()
    }

    /// Whether the pool is shutting down.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The pair's entry.
    pub(crate) fn entry(&self, pair: &Pair) -> Option<&PairEntry<P>> {
        self.pairs.get(pair)
    }

    /// The pair's entry, to change what is not its slot.
    pub(crate) fn entry_mut(&mut self, pair: &Pair) -> Option<&mut PairEntry<P>> {
        self.pairs.get_mut(pair)
    }

    /// Adds a pair (no process yet). False when the pool is closed.
    pub(crate) fn insert(&mut self, pair: Pair, entry: PairEntry<P>) -> bool {
        if self.closed {
            return false;
        }
        self.pairs.insert(pair, entry);
        true
    }

    /// Every pair with its slot, in no order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&Pair, &PairEntry<P>, SlotView<'_, P>)> {
        self.pairs.iter().map(|(pair, entry)| {
            let live = entry.slot.live();
            (
                pair,
                entry,
                SlotView {
                    state: entry.slot.state(),
                    process: live.map(|live| &live.process),
                    process_turns: live.map_or(0, |live| live.turns),
                    last_used: entry.last_used,
                },
            )
        })
    }

    /// Closes the pool: nothing is reserved or inserted from now on. Returns every live
    /// process, for the caller to stop.
    pub(crate) fn close(&mut self) -> Vec<(Pair, P)> {
        self.closed = true;
        self.pairs
            .iter()
            .filter_map(|(pair, entry)| {
                entry
                    .slot
                    .live()
                    .map(|live| (pair.clone(), live.process.clone()))
            })
            .collect()
    }

    /// Looks at the pair's slot for a turn: its idle process is taken `Busy` if it is current;
    /// one that runs a replaced session (not `session`) or whose launch `check` finds out of
    /// date is moved to `Stopping`; a dead one frees its slot. `check` runs only when
    /// `version` differs from the one the process was last found current in, so a turn costs
    /// nothing when nothing changed.
    pub(crate) fn take_for_turn(
        &mut self,
        pair: &Pair,
        version: u64,
        check: impl FnOnce(&LaunchKey) -> Option<ExitReason>,
    ) -> Take<P> {
        if self.closed {
            return Take::Closed;
        }
        let Some(entry) = self.pairs.get_mut(pair) else {
            return Take::Closed;
        };
        let session = entry.session.id;
        match std::mem::replace(&mut entry.slot, Slot::Empty) {
            Slot::Idle(mut live) => {
                let mut stale = (live.session != session).then_some(ExitReason::SessionReplaced);
                if stale.is_none() && live.version != version {
                    stale = check(&live.launch);
                    if stale.is_none() {
                        live.version = version;
                    }
                }
                if let Some(reason) = stale {
                    let process = live.process.clone();
                    entry.slot = Slot::Stopping(live);
                    Take::Stale { process, reason }
                } else if live.process.has_exited() {
                    self.live -= 1;
                    Take::Dead {
                        process: live.process,
                    }
                } else if self.waiting.front().is_some_and(|first| first != pair) {
                    // Others waited for a process before this message came: they are served
                    // first, and may take this idle one. This pair waits in line.
                    entry.slot = Slot::Idle(live);
                    self.wait_in_line(pair);
                    Take::Wait
                } else {
                    let process = live.process.clone();
                    entry.slot = Slot::Busy(live);
                    self.leave_line(pair);
                    Take::Ready { process, session }
                }
            }
            Slot::Empty => Take::Vacant,
            other => {
                entry.slot = other;
                Take::Wait
            }
        }
    }

    /// Takes a slot for `pair` (`Spawning`) if fewer than `max` are live; otherwise picks the
    /// least recently used idle process of another pair to evict (moved to `Stopping`). Pairs
    /// are served in the order they started waiting: one that is not first in line waits
    /// (`Full`) and keeps its place.
    pub(crate) fn reserve(&mut self, pair: &Pair, max: usize) -> Reserve<P> {
        if self.closed {
            return Reserve::Closed;
        }
        let Some(entry) = self.pairs.get(pair) else {
            return Reserve::Closed;
        };
        if !matches!(entry.slot, Slot::Empty) {
            return Reserve::Occupied;
        }
        if !self.first_in_line(pair) {
            self.wait_in_line(pair);
            return Reserve::Full;
        }
        if self.live < max {
            if let Some(entry) = self.pairs.get_mut(pair) {
                entry.slot = Slot::Spawning;
                self.live += 1;
            }
            self.leave_line(pair);
            return Reserve::Reserved;
        }
        let victim = self
            .pairs
            .iter()
            .filter(|(other, entry)| *other != pair && matches!(entry.slot, Slot::Idle(_)))
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(victim, _)| victim.clone());
        if let Some(victim) = victim
            && let Some(process) =
                self.move_to_stopping(&victim, |slot| matches!(slot, Slot::Idle(_)))
        {
            self.leave_line(pair);
            return Reserve::Evict { victim, process };
        }
        self.wait_in_line(pair);
        Reserve::Full
    }

    /// Frees `victim`'s slot, which held the evicted process `id`, and gives it to `to` as
    /// `Spawning` without changing the count, unless the pool closed, `max` was lowered or
    /// `to` got a process meanwhile (then the slot is simply freed).
    pub(crate) fn hand_over(&mut self, victim: &Pair, id: u64, to: &Pair, max: usize) -> HandOver {
        let closed = self.closed;
        let owned = self
            .pairs
            .get_mut(victim)
            .filter(|entry| entry.slot.holds(id))
            .map(|entry| entry.slot = Slot::Empty)
            .is_some();
        if !owned {
            return HandOver::NotOwned { closed };
        }
        if !closed
            && self.live <= max
            && let Some(entry) = self.pairs.get_mut(to)
            && matches!(entry.slot, Slot::Empty)
        {
            entry.slot = Slot::Spawning;
            return HandOver::HandedOver;
        }
        self.live -= 1;
        HandOver::Freed { closed }
    }

    /// A reservation whose spawn failed: the slot is freed.
    pub(crate) fn spawn_failed(&mut self, pair: &Pair) {
        if let Some(entry) = self.pairs.get_mut(pair)
            && matches!(entry.slot, Slot::Spawning)
        {
            entry.slot = Slot::Empty;
            self.live -= 1;
        }
    }

    /// The process spawned in the pair's reserved slot takes it, `Busy` (ready for the turn
    /// that asked for it).
    pub(crate) fn spawned(&mut self, pair: &Pair, live: Live<P>) -> Spawned {
        let closed = self.closed;
        let Some(entry) = self.pairs.get_mut(pair) else {
            return Spawned::Closed;
        };
        if !matches!(entry.slot, Slot::Spawning) {
            // Only the pair's own worker reserves and spawns, one at a time: never happens.
            // Refuse rather than count a slot twice.
            return Spawned::Closed;
        }
        let replaced = entry.session.id != live.session;
        entry.slot = Slot::Busy(live);
        if closed {
            Spawned::Closed
        } else if replaced {
            Spawned::SessionReplaced
        } else {
            Spawned::Ready
        }
    }

    /// A turn of process `id` ended: one more turn for it, `Idle` again, used `now`.
    pub(crate) fn turn_done(&mut self, pair: &Pair, id: u64, now: Instant) {
        if let Some(entry) = self.pairs.get_mut(pair) {
            entry.last_used = now;
            if let Slot::Busy(live) = &mut entry.slot
                && live.process.id() == id
            {
                live.turns += 1;
            }
        }
        self.back_to_idle(pair, id, None);
    }

    /// `Busy` process `id` goes back to `Idle`; with `now`, that counts as a use (an LRU
    /// touch); a health check is not one. False when the slot no longer holds it busy.
    pub(crate) fn back_to_idle(&mut self, pair: &Pair, id: u64, now: Option<Instant>) -> bool {
        let Some(entry) = self.pairs.get_mut(pair) else {
            return false;
        };
        if !matches!(&entry.slot, Slot::Busy(live) if live.process.id() == id) {
            return false;
        }
        if let Slot::Busy(live) = std::mem::replace(&mut entry.slot, Slot::Empty) {
            entry.slot = Slot::Idle(live);
        }
        if let Some(now) = now {
            entry.last_used = now;
        }
        true
    }

    /// `Idle` process `id` moves to `next`. False when the slot no longer holds it idle (it
    /// was taken, evicted or replaced meanwhile).
    pub(crate) fn take_idle(&mut self, pair: &Pair, id: u64, next: Next) -> bool {
        let Some(entry) = self.pairs.get_mut(pair) else {
            return false;
        };
        if !matches!(&entry.slot, Slot::Idle(live) if live.process.id() == id) {
            return false;
        }
        if let Slot::Idle(live) = std::mem::replace(&mut entry.slot, Slot::Empty) {
            entry.slot = match next {
                Next::Busy => Slot::Busy(live),
                Next::Stopping => Slot::Stopping(live),
            };
        }
        true
    }

    /// `Busy` process `id` (a failed health check) moves to `Stopping`. False when the slot
    /// no longer holds it busy: a sleep, an eviction or a crash got there first.
    pub(crate) fn busy_to_stopping(&mut self, pair: &Pair, id: u64) -> bool {
        self.move_to_stopping(
            pair,
            |slot| matches!(slot, Slot::Busy(live) if live.process.id() == id),
        )
        .is_some()
    }

    /// Stops the pair's process on request, idle or busy (a running turn then fails):
    /// `Stopping`, returned for the caller to stop.
    pub(crate) fn stop(&mut self, pair: &Pair) -> Option<P> {
        self.move_to_stopping(pair, |slot| matches!(slot, Slot::Idle(_) | Slot::Busy(_)))
    }

    /// If the pair's process is idle and out of date (`check` says why; asked only when
    /// `version` is newer than the one it was last found current in), moves it to
    /// `Stopping` and returns it with the reason.
    pub(crate) fn stale_idle(
        &mut self,
        pair: &Pair,
        version: u64,
        check: impl FnOnce(&LaunchKey) -> Option<ExitReason>,
    ) -> Option<(P, ExitReason)> {
        let entry = self.pairs.get_mut(pair)?;
        let Slot::Idle(live) = &mut entry.slot else {
            return None;
        };
        if live.version == version {
            return None;
        }
        let Some(reason) = check(&live.launch) else {
            live.version = version;
            return None;
        };
        self.move_to_stopping(pair, |slot| matches!(slot, Slot::Idle(_)))
            .map(|process| (process, reason))
    }

    /// While more slots are live than `max` (it was lowered), picks the least recently used
    /// idle process to stop (moved to `Stopping`). Processes already stopping no longer count;
    /// busy and spawning ones are left alone.
    pub(crate) fn evict_over(&mut self, max: usize) -> Option<(Pair, P)> {
        if self.closed || self.live <= max {
            return None;
        }
        let stopping = self
            .pairs
            .values()
            .filter(|entry| matches!(entry.slot, Slot::Stopping(_)))
            .count();
        if self.live.saturating_sub(stopping) <= max {
            return None;
        }
        let oldest = self
            .pairs
            .iter()
            .filter(|(_, entry)| matches!(entry.slot, Slot::Idle(_)))
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(pair, _)| pair.clone())?;
        let process = self.move_to_stopping(&oldest, |slot| matches!(slot, Slot::Idle(_)))?;
        Some((oldest, process))
    }

    /// Frees the slot that holds process `id` (whatever its state), once it has exited.
    /// False when the slot no longer holds it: a late notice never frees a successor.
    pub(crate) fn release(&mut self, pair: &Pair, id: u64) -> bool {
        let Some(entry) = self.pairs.get_mut(pair) else {
            return false;
        };
        if !entry.slot.holds(id) {
            return false;
        }
        entry.slot = Slot::Empty;
        self.live -= 1;
        true
    }

    /// The pair's process if it is idle, with its last use.
    pub(crate) fn idle(&self, pair: &Pair) -> Option<(P, Instant)> {
        let entry = self.pairs.get(pair)?;
        match &entry.slot {
            Slot::Idle(live) => Some((live.process.clone(), entry.last_used)),
            _ => None,
        }
    }

    /// Whether the pair's slot holds process `id`, idle.
    pub(crate) fn is_idle(&self, pair: &Pair, id: u64) -> bool {
        self.pairs
            .get(pair)
            .is_some_and(|entry| matches!(&entry.slot, Slot::Idle(live) if live.process.id() == id))
    }

    /// Moves the pair's slot to `Stopping` if `allowed` accepts it; returns its process.
    fn move_to_stopping(&mut self, pair: &Pair, allowed: impl Fn(&Slot<P>) -> bool) -> Option<P> {
        let entry = self.pairs.get_mut(pair)?;
        if !allowed(&entry.slot) {
            return None;
        }
        match std::mem::replace(&mut entry.slot, Slot::Empty) {
            Slot::Idle(live) | Slot::Busy(live) | Slot::Stopping(live) => {
                let process = live.process.clone();
                entry.slot = Slot::Stopping(live);
                Some(process)
            }
            other => {
                entry.slot = other;
                None
            }
        }
    }

    /// The count of live slots, recomputed (for tests of the invariant).
    #[cfg(test)]
    fn counted(&self) -> usize {
        self.pairs
            .values()
            .filter(|entry| !matches!(entry.slot, Slot::Empty))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TeamConfig, TeamName};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    /// A stand-in process: an id and an exit flag.
    #[derive(Clone, Debug)]
    struct Fake {
        id: u64,
        exited: Arc<AtomicBool>,
    }

    impl Fake {
        fn new() -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(1);
            Self {
                id: NEXT.fetch_add(1, Ordering::Relaxed),
                exited: Arc::new(AtomicBool::new(false)),
            }
        }
    }

    impl Process for Fake {
        fn id(&self) -> u64 {
            self.id
        }

        fn has_exited(&self) -> bool {
            self.exited.load(Ordering::Relaxed)
        }
    }

    fn pair(target: &str) -> Pair {
        Pair::new(
            TeamName::new("caller").unwrap(),
            TeamName::new(target).unwrap(),
        )
    }

    fn launch() -> LaunchKey {
        let config = Config::defaults("/iris-home".into());
        let team = TeamConfig::new(TeamName::new("t").unwrap(), "/code/t".into());
        LaunchKey::of(&config, &team)
    }

    const SESSION: Uuid = Uuid::from_u128(7);

    fn entry(now: Instant) -> PairEntry<Fake> {
        let (jobs, _receiver) = mpsc::channel(1);
        let session = Session {
            id: SESSION,
            resumable: false,
            turns: 0,
            total_cost: 0.0,
            cli_total: 0.0,
        };
        PairEntry::new(jobs, session, now)
    }

    /// A state with the pairs `names`, no processes.
    fn state(names: &[&str], now: Instant) -> State<Fake> {
        let mut state = State::default();
        for name in names {
            assert!(state.insert(pair(name), entry(now)));
        }
        state
    }

    /// Reserves, spawns and idles a process for `target`, last used at `used`.
    fn idle_process(state: &mut State<Fake>, target: &str, max: usize, used: Instant) -> Fake {
        let pair = pair(target);
        assert!(matches!(state.reserve(&pair, max), Reserve::Reserved));
        let process = Fake::new();
        let live = Live::new(process.clone(), SESSION, launch(), 0);
        assert_eq!(state.spawned(&pair, live), Spawned::Ready);
        state.turn_done(&pair, process.id, used);
        process
    }

    fn slot_state(state: &State<Fake>, target: &str) -> PairState {
        state
            .pairs()
            .find(|(pair, _, _)| pair.target.as_str() == target)
            .map(|(_, _, view)| view.state)
            .unwrap()
    }

    #[test]
    fn reservations_stop_at_max_processes() {
        let now = Instant::now();
        let mut state = state(&["a", "b", "c"], now);
        assert!(matches!(state.reserve(&pair("a"), 2), Reserve::Reserved));
        assert!(matches!(state.reserve(&pair("b"), 2), Reserve::Reserved));
        // Both spawning (neither idle): nothing to evict.
        assert!(matches!(state.reserve(&pair("c"), 2), Reserve::Full));
        assert_eq!(state.live(), 2);
        assert_eq!(slot_state(&state, "c"), PairState::Stopped);
        // A failed spawn gives its slot back.
        state.spawn_failed(&pair("a"));
        assert_eq!(state.live(), 1);
        assert!(matches!(state.reserve(&pair("c"), 2), Reserve::Reserved));
        assert_eq!(state.live(), 2);
        assert_eq!(state.counted(), 2);
    }

    #[test]
    fn a_full_pool_evicts_the_least_recently_used_idle_process() {
        let now = Instant::now();
        let earlier = |seconds| now.checked_sub(Duration::from_secs(seconds)).unwrap();
        let mut state = state(&["a", "b", "c", "new"], earlier(600));
        let max = 3;
        idle_process(&mut state, "a", max, earlier(10));
        let b = idle_process(&mut state, "b", max, earlier(60));
        // c is the oldest but busy.
        let c = idle_process(&mut state, "c", max, earlier(120));
        assert!(state.take_idle(&pair("c"), c.id, Next::Busy));
        let Reserve::Evict { victim, process } = state.reserve(&pair("new"), max) else {
            panic!("expected an eviction");
        };
        assert_eq!((victim.clone(), process.id), (pair("b"), b.id));
        assert_eq!(slot_state(&state, "b"), PairState::Stopping);
        // Stopping, it still counts; handing it over keeps the count.
        assert_eq!(state.live(), 3);
        assert_eq!(
            state.hand_over(&victim, b.id, &pair("new"), max),
            HandOver::HandedOver
        );
        assert_eq!(state.live(), 3);
        assert_eq!(state.counted(), 3);
        assert_eq!(slot_state(&state, "b"), PairState::Stopped);
        assert_eq!(slot_state(&state, "new"), PairState::Spawning);
    }

    #[test]
    fn only_a_pair_without_a_process_reserves_a_slot() {
        let now = Instant::now();
        let mut state = state(&["a"], now);
        idle_process(&mut state, "a", 2, now);
        assert!(matches!(state.reserve(&pair("a"), 2), Reserve::Occupied));
        assert_eq!(state.live(), 1);
    }

    #[test]
    fn busy_spawning_and_stopping_processes_are_never_evicted() {
        let now = Instant::now();
        let mut state = state(&["a", "b", "c", "d"], now);
        let a = idle_process(&mut state, "a", 3, now);
        assert!(state.take_idle(&pair("a"), a.id, Next::Busy));
        let b = idle_process(&mut state, "b", 3, now);
        assert!(state.take_idle(&pair("b"), b.id, Next::Stopping));
        assert!(matches!(state.reserve(&pair("c"), 3), Reserve::Reserved));
        assert!(matches!(state.reserve(&pair("d"), 3), Reserve::Full));
        // Released after its exit, the stopping one's slot is free again.
        assert!(state.release(&pair("b"), b.id));
        assert!(matches!(state.reserve(&pair("d"), 3), Reserve::Reserved));
        assert_eq!(state.counted(), state.live());
    }

    #[test]
    fn a_lowered_bound_frees_an_evicted_slot_instead_of_handing_it_over() {
        let now = Instant::now();
        let mut state = state(&["a", "b"], now);
        let a = idle_process(&mut state, "a", 1, now);
        let Reserve::Evict { victim, .. } = state.reserve(&pair("b"), 1) else {
            panic!("expected an eviction");
        };
        // maxProcesses went from 1 to 0 while the victim stopped.
        assert_eq!(
            state.hand_over(&victim, a.id, &pair("b"), 0),
            HandOver::Freed { closed: false }
        );
        assert_eq!(state.live(), 0);
        assert_eq!(slot_state(&state, "b"), PairState::Stopped);
    }

    #[test]
    fn late_notices_about_an_old_process_never_touch_its_successor() {
        let now = Instant::now();
        let mut state = state(&["a"], now);
        let old = idle_process(&mut state, "a", 2, now);
        assert!(state.take_idle(&pair("a"), old.id, Next::Stopping));
        assert!(state.release(&pair("a"), old.id));
        let new = idle_process(&mut state, "a", 2, now);
        assert!(!state.release(&pair("a"), old.id));
        assert!(!state.take_idle(&pair("a"), old.id, Next::Busy));
        assert!(!state.back_to_idle(&pair("a"), old.id, Some(now)));
        assert!(!state.busy_to_stopping(&pair("a"), old.id));
        assert!(state.is_idle(&pair("a"), new.id));
        assert_eq!(state.live(), 1);
    }

    #[test]
    fn a_turn_takes_a_current_idle_process_and_drops_a_dead_or_stale_one() {
        let now = Instant::now();
        let mut state = state(&["a"], now);
        let a = pair("a");
        assert!(matches!(state.take_for_turn(&a, 0, |_| None), Take::Vacant));
        let first = idle_process(&mut state, "a", 1, now);
        let Take::Ready { process, session } = state.take_for_turn(&a, 0, |_| None) else {
            panic!("expected the idle process");
        };
        assert_eq!((process.id, session), (first.id, SESSION));
        assert!(matches!(state.take_for_turn(&a, 0, |_| None), Take::Wait));
        state.turn_done(&a, first.id, now);

        // Died while idle: its slot is freed at once.
        first.exited.store(true, Ordering::Relaxed);
        assert!(matches!(
            state.take_for_turn(&a, 0, |_| None),
            Take::Dead { .. }
        ));
        assert_eq!(state.live(), 0);

        // A config change (a newer version) that made it out of date.
        let second = idle_process(&mut state, "a", 1, now);
        let Take::Stale { process, reason } =
            state.take_for_turn(&a, 1, |_| Some(ExitReason::Reconfigured))
        else {
            panic!("expected a stale process");
        };
        assert_eq!((process.id, reason), (second.id, ExitReason::Reconfigured));
        assert!(state.release(&a, second.id));

        // The check runs once per version: current in version 2, it is not asked again.
        let third = idle_process(&mut state, "a", 1, now);
        assert!(matches!(
            state.take_for_turn(&a, 2, |_| None),
            Take::Ready { .. }
        ));
        state.turn_done(&a, third.id, now);
        assert!(matches!(
            state.take_for_turn(&a, 2, |_| panic!("checked twice")),
            Take::Ready { .. }
        ));
        state.turn_done(&a, third.id, now);

        // The pair's session was rebooted: the process runs the old one.
        state.entry_mut(&a).unwrap().session.id = Uuid::from_u128(8);
        assert!(matches!(
            state.take_for_turn(&a, 2, |_| None),
            Take::Stale {
                reason: ExitReason::SessionReplaced,
                ..
            }
        ));
    }

    #[test]
    fn a_lowered_bound_stops_idle_processes_oldest_first_and_never_busy_ones() {
        let now = Instant::now();
        let earlier = |seconds| now.checked_sub(Duration::from_secs(seconds)).unwrap();
        let mut state = state(&["a", "b", "c"], now);
        let a = idle_process(&mut state, "a", 3, earlier(30));
        idle_process(&mut state, "b", 3, earlier(10));
        let c = idle_process(&mut state, "c", 3, earlier(60));
        assert!(state.take_idle(&pair("c"), c.id, Next::Busy));
        // Down to 1: a (older idle) first, then b; c is busy.
        let (first, process) = state.evict_over(1).unwrap();
        assert_eq!((first, process.id), (pair("a"), a.id));
        let (second, _) = state.evict_over(1).unwrap();
        assert_eq!(second, pair("b"));
        // Both stopping no longer count against the bound: nothing more to stop.
        assert!(state.evict_over(1).is_none());
        assert!(state.evict_over(3).is_none());
    }

    #[test]
    fn a_closed_state_reserves_nothing_and_returns_every_live_process() {
        let now = Instant::now();
        let mut state = state(&["a", "b", "c"], now);
        idle_process(&mut state, "a", 3, now);
        let b = idle_process(&mut state, "b", 3, now);
        assert!(state.take_idle(&pair("b"), b.id, Next::Busy));
        assert!(matches!(state.reserve(&pair("c"), 3), Reserve::Reserved));
        let mut live: Vec<String> = state
            .close()
            .into_iter()
            .map(|(pair, _)| pair.target.to_string())
            .collect();
        live.sort();
        assert_eq!(live, ["a", "b"]);
        assert!(state.is_closed());
        assert!(matches!(state.reserve(&pair("c"), 9), Reserve::Closed));
        assert!(matches!(
            state.take_for_turn(&pair("a"), 0, |_| None),
            Take::Closed
        ));
        assert!(!state.insert(pair("d"), entry(now)));
    }

    /// Pairs waiting for a process are served in the order they came, whoever asks first
    /// when one frees up, and a pair with an idle process of its own waits behind them.
    #[test]
    fn waiting_pairs_are_served_first_come_first_served() {
        let now = Instant::now();
        let mut state = state(&["holder", "first", "second", "third"], now);
        let holder = idle_process(&mut state, "holder", 1, now);
        assert!(state.take_idle(&pair("holder"), holder.id, Next::Busy));
        // Full: first, then second, start waiting.
        assert!(matches!(state.reserve(&pair("first"), 1), Reserve::Full));
        assert!(matches!(state.reserve(&pair("second"), 1), Reserve::Full));
        assert_eq!(state.line(), [pair("first"), pair("second")]);
        // The holder's turn ends; the second asks before the first: it keeps waiting.
        state.turn_done(&pair("holder"), holder.id, now);
        assert!(matches!(state.reserve(&pair("second"), 1), Reserve::Full));
        // The holder's next message waits behind them too, its process left to be evicted.
        assert!(matches!(
            state.take_for_turn(&pair("holder"), 0, |_| None),
            Take::Wait
        ));
        assert_eq!(
            state.line(),
            [pair("first"), pair("second"), pair("holder")]
        );
        assert!(state.is_idle(&pair("holder"), holder.id));
        // The first evicts it and leaves the line; then the second is first.
        let Reserve::Evict { victim, process } = state.reserve(&pair("first"), 1) else {
            panic!("the first in line evicts the idle process");
        };
        assert_eq!((victim.clone(), process.id), (pair("holder"), holder.id));
        assert_eq!(
            state.hand_over(&victim, holder.id, &pair("first"), 1),
            HandOver::HandedOver
        );
        assert_eq!(state.line(), [pair("second"), pair("holder")]);
        // A newcomer gets in line behind, even with a slot free.
        assert!(matches!(state.reserve(&pair("third"), 2), Reserve::Full));
        assert!(matches!(
            state.reserve(&pair("second"), 2),
            Reserve::Reserved
        ));
        assert_eq!(state.line(), [pair("holder"), pair("third")]);
        // One that gives up leaves its place.
        state.leave_line(&pair("holder"));
        assert_eq!(state.line(), [pair("third")]);
        assert_eq!(state.live(), state.counted());
    }

    /// Thousands of random transitions from many pairs: `live` always equals the slots in
    /// use and never exceeds the bound in force when a slot was taken.
    #[test]
    fn the_bound_holds_under_any_sequence_of_transitions() {
        let now = Instant::now();
        let names: Vec<String> = (0..8).map(|index| format!("t{index}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut state = state(&refs, now);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut processes: HashMap<Pair, Fake> = HashMap::new();
        let mut max = 3;
        for step in 0..20_000_u64 {
            let target = pair(&names[usize::try_from(next(8)).unwrap()]);
            let at = now + Duration::from_millis(step);
            match next(9) {
                0 => match state.reserve(&target, max) {
                    Reserve::Reserved => {
                        assert!(state.live() <= max, "step {step}");
                        let process = Fake::new();
                        processes.insert(target.clone(), process.clone());
                        let live = Live::new(process, SESSION, launch(), 0);
                        assert_eq!(state.spawned(&target, live), Spawned::Ready);
                    }
                    Reserve::Evict { victim, process } => {
                        assert_ne!(victim, target);
                        match state.hand_over(&victim, process.id, &target, max) {
                            HandOver::HandedOver => {
                                assert!(state.live() <= max, "step {step}");
                                let process = Fake::new();
                                processes.insert(target.clone(), process.clone());
                                let live = Live::new(process, SESSION, launch(), 0);
                                assert_eq!(state.spawned(&target, live), Spawned::Ready);
                            }
                            HandOver::Freed { .. } | HandOver::NotOwned { .. } => {}
                        }
                    }
                    Reserve::Full => assert!(
                        state.live() >= max || state.line().first() != Some(&target),
                        "step {step}: full with a slot free and this pair first in line"
                    ),
                    Reserve::Occupied => {}
                    Reserve::Closed => unreachable!(),
                },
                1 | 2 => {
                    if let Some(process) = processes.get(&target) {
                        state.turn_done(&target, process.id, at);
                    }
                }
                3 => {
                    if let Some(process) = processes.get(&target) {
                        state.take_idle(&target, process.id, Next::Busy);
                    }
                }
                4 => {
                    if let Some(process) = processes.get(&target) {
                        state.take_idle(&target, process.id, Next::Stopping);
                    }
                }
                5 => {
                    if let Some(process) = processes.get(&target) {
                        state.release(&target, process.id);
                    }
                }
                6 => {
                    state.stop(&target);
                }
                7 => {
                    state.evict_over(max);
                }
                _ => max = usize::try_from(1 + next(4)).unwrap(),
            }
            assert_eq!(state.live(), state.counted(), "step {step}");
            // The count may exceed a bound lowered after its slots were taken (they are
            // stopped as they become idle), never the highest bound ever in force.
            assert!(state.live() <= 4, "step {step}");
        }
    }
}
