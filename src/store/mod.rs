//! The SQLite store: sessions, messages and agent process groups, in one database file under
//! `$IRIS_HOME` (`database.path`), or in memory (`database.inMemory`, for tests).
//!
//! This is the only module that runs SQL.
//!
//! # Theory of operation
//!
//! [`Store`] is a cheap, cloneable handle to one `rusqlite::Connection` behind a
//! `std::sync::Mutex`. Each method runs its unit of work on the caller's thread, alone, in
//! one transaction where it has more than one statement, and returns after the commit; the
//! lock is never held across an await. Statements take microseconds (WAL, `synchronous =
//! NORMAL`), far less than handing them to a thread of their own would cost (~90 µs per
//! call measured on a 2-core machine); the exception is a lock held by another process,
//! which can make a statement wait up to the busy timeout.
//!
//! Opening never damages an existing file: a file that is not an SQLite database, an SQLite
//! database of another program, or one written by a newer Iris is reported
//! ([`StoreError::Corrupt`], [`StoreError::NewerSchema`]) before anything is written to it.
//! A file database is put in WAL mode with `synchronous=NORMAL`, a busy timeout of 5 s and
//! foreign keys on. The schema is migrated forward only (`schema.rs`).
//!
//! # What is stored
//!
//! - **Sessions**: the Claude Code session of each (caller → target) pair, with its turn count
//!   and costs. At most one is `active` per pair (a partial unique index); retired sessions
//!   (`rebooted`, `deleted`) are kept.
//! - **Messages**: every ask, tell and quick message with its state, answer, error, cost,
//!   usage, times and a bounded transcript. Texts are cut to `database.maxStoredTextBytes`
//!   and transcripts to `database.maxTranscriptEntries` (the record says `truncated`).
//!   [`Store::prune`] deletes finished messages older than `database.retentionDays`, never a
//!   queued or running one.
//! - **Agents**: the process groups Iris started and has not seen stop, so that a restarted
//!   Iris can stop what a crashed one left behind.
//!
//! After a restart, [`Store::recover`] marks every message that was running as `interrupted`
//! (it is not re-run) and hands back the queued ones.

mod approvals;
mod bounds;
mod commit;
mod db;
mod error;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use approvals::{
    ApprovalDecision, ApprovalQuery, ApprovalRecord, DecidedBy, Decision, PairRuleRecord,
};
pub use commit::CommitStats;
pub use db::now_ms;
pub use error::StoreError;

use self::commit::{Durability, Job};

use self::db::Db;
use crate::agent::TranscriptEntry;
use crate::config::{DatabaseConfig, TeamName};

// ------------------------------------------------------------------------------------------
// Values.

/// A message's id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// A fresh id, ordered after every id made before it by this process.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for MessageId {
    /// Same as [`MessageId::new`]: a fresh id.
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), formatter)
    }
}

/// Text that is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{text}' is not a message id: expected a UUID such as 0190a5d2-7c1e-7b3a-9f00-5e1d2c3b4a59"
)]
pub struct MessageIdError {
    /// The text that was given.
    pub text: String,
}

impl FromStr for MessageId {
    type Err = MessageIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text.trim())
            .map(Self)
            .map_err(|_| MessageIdError {
                text: crate::config::cut_echo(text),
            })
    }
}

/// How a message was sent. Every mode goes through the pair's queue and into the pair's
/// conversation alike; the mode only records whether the sender waited, and how it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageMode {
    /// The caller waits for the answer: `send_message`, `ask_message`, `iris ask`, the
    /// console's `send`.
    Ask,
    /// The caller does not wait; the answer is kept for later: the console's `tell`.
    Tell,
    /// The caller does not wait: `quick_message` (and `iris tell`, which calls it).
    Quick,
}

impl MessageMode {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::Tell => "tell",
            Self::Quick => "quick",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Ask, Self::Tell, Self::Quick]
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

/// Where a message is in its life. `Queued` → `Running` → one final state; a queued message
/// can also end directly (cancelled, or failed before it ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Waiting in its pair's queue.
    Queued,
    /// Written to an agent; its turn has not ended.
    Running,
    /// The turn ended with a result (which may itself be an error result: see `is_error`).
    Completed,
    /// The turn could not run or broke off (the agent crashed, could not start, ...).
    Failed,
    /// Cancelled while queued, or interrupted on request while running.
    Cancelled,
    /// The turn was silent for longer than `responseTimeout`.
    TimedOut,
    /// Iris stopped while the message was running; it was not re-run.
    Interrupted,
}

impl MessageState {
    /// Every state, in life order.
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
        Self::Interrupted,
    ];

    /// The stored spelling (as serialized).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the message has ended: neither queued nor running. A final state never changes.
    #[must_use]
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// The state named `text` (`queued`, `running`, `completed`, ...).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// Whether a session is the pair's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// The pair's current session (at most one per pair).
    Active,
    /// Replaced by a fresh session on request.
    Rebooted,
    /// Deleted on request.
    Deleted,
}

impl SessionStatus {
    /// The stored spelling (as serialized).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Rebooted => "rebooted",
            Self::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Rebooted, Self::Deleted]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// A message to record as queued ([`Store::insert_message`]).
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Its id ([`MessageId::new`]).
    pub id: MessageId,
    /// The sending team.
    pub caller: TeamName,
    /// The receiving team.
    pub target: TeamName,
    /// The pair's session, when already known.
    pub session_id: Option<Uuid>,
    /// How it was sent.
    pub mode: MessageMode,
    /// The message text; stored cut to `database.maxStoredTextBytes`.
    pub text: String,
    /// The message whose turn sent it, when an agent sent it.
    pub parent: Option<MessageId>,
}

/// How a message ended ([`Store::finish_message`]).
#[derive(Debug, Clone)]
pub struct MessageFinish {
    /// A final state ([`MessageState::is_final`]).
    pub state: MessageState,
    /// The answer, if the turn produced one; stored cut to `database.maxStoredTextBytes`.
    pub answer: Option<String>,
    /// The agent's own `is_error` flag on its result.
    pub is_error: bool,
    /// What went wrong, if anything; stored cut to `database.maxStoredTextBytes`.
    pub error: Option<String>,
    /// This turn's own cost in US dollars.
    pub cost_usd: Option<f64>,
    /// The token usage as the agent reported it; dropped if its JSON is longer than
    /// `database.maxStoredTextBytes`.
    pub usage: Option<serde_json::Value>,
    /// How long the turn took.
    pub duration_ms: Option<u64>,
    /// What happened during the turn; the first `database.maxTranscriptEntries` are stored.
    /// Shared with the turn's result.
    pub transcript: Arc<[TranscriptEntry]>,
}

/// Which messages [`Store::find_messages`] returns (every condition given must hold).
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Sent by or to this team.
    pub team: Option<TeamName>,
    /// Sent by this team.
    pub caller: Option<TeamName>,
    /// Sent to this team.
    pub target: Option<TeamName>,
    /// In this state.
    pub state: Option<MessageState>,
    /// This text in the message, its answer or its error (case-insensitive for ASCII).
    pub text: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// One finished turn, for charts.
#[derive(Debug, Clone, Serialize)]
pub struct TurnTime {
    /// The team that answered.
    pub team: TeamName,
    /// When it finished (unix ms).
    pub finished_at_ms: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// What it cost (0 when not reported).
    pub cost_usd: f64,
}

/// A stored message.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    /// Its id.
    pub id: MessageId,
    /// The sending team.
    pub caller: TeamName,
    /// The receiving team.
    pub target: TeamName,
    /// The session it ran in (set when it started running, or when inserted).
    pub session_id: Option<Uuid>,
    /// How it was sent.
    pub mode: MessageMode,
    /// The text (possibly cut: see `truncated`).
    pub text: String,
    /// Where it is in its life.
    pub state: MessageState,
    /// The answer, once finished with one.
    pub answer: Option<String>,
    /// The agent's `is_error` flag on its result.
    pub is_error: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The turn's own cost in US dollars.
    pub cost_usd: Option<f64>,
    /// The token usage as the agent reported it.
    pub usage: Option<serde_json::Value>,
    /// How long the turn took.
    pub duration_ms: Option<u64>,
    /// When it was queued (unix milliseconds).
    pub created_at_ms: i64,
    /// When it started running.
    pub started_at_ms: Option<i64>,
    /// When it reached its final state.
    pub finished_at_ms: Option<i64>,
    /// What happened during the turn (bounded).
    pub transcript: Vec<TranscriptEntry>,
    /// Whether the text, answer, error, usage or transcript was cut before it was stored. A
    /// queued message with this set has lost part of its text and cannot be re-run faithfully.
    pub truncated: bool,
    /// The message whose turn sent it, when an agent sent it.
    #[serde(default)]
    pub parent_id: Option<MessageId>,
}

/// A stored session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// The calling team.
    pub caller: TeamName,
    /// The target team.
    pub target: TeamName,
    /// The Claude Code session id.
    pub session_id: Uuid,
    /// Whether it is the pair's current session.
    pub status: SessionStatus,
    /// When it was created (unix milliseconds).
    pub created_at_ms: i64,
    /// When a turn last ended in it.
    pub last_used_at_ms: i64,
    /// Turns recorded in it.
    pub turns: u64,
    /// Sum of the recorded turns' own costs, in US dollars.
    pub total_cost_usd: f64,
    /// The session total the CLI last reported, in US dollars.
    pub cli_total_usd: f64,
    /// Whether the CLI has a transcript for it (`--resume` can continue it).
    pub resumable: bool,
}

/// An agent process group that Iris started and has not seen stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    /// The process group id (the agent's pid).
    pub pgid: u32,
    /// The pool's key for the agent.
    pub agent_key: String,
    /// The calling team.
    pub caller: TeamName,
    /// The target team.
    pub target: TeamName,
    /// When it was started (unix milliseconds).
    pub started_at_ms: i64,
}

/// Which messages [`Store::pair_messages`] returns: at most `limit`, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Most messages returned.
    pub limit: usize,
    /// Only messages strictly older than this one (the last id of the previous page).
    pub before: Option<MessageId>,
}

impl Page {
    /// The newest `limit` messages.
    #[must_use]
    pub fn first(limit: usize) -> Self {
        Self {
            limit,
            before: None,
        }
    }
}

/// What [`Store::recover`] found at start-up.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Messages that were running when Iris stopped; they are now `interrupted`.
    pub interrupted: Vec<MessageId>,
    /// Messages still queued, oldest first.
    pub queued: Vec<MessageRecord>,
    /// Tool-permission requests that were waiting for a decision; now `expired`.
    pub expired_approvals: usize,
}

/// What [`Store::inspect`] found in a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Its schema version.
    pub schema: i64,
    /// Whether the next start migrates it (an older schema).
    pub needs_migration: bool,
    /// Active sessions in it.
    pub active_sessions: u64,
}

/// Counts for status displays.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStats {
    /// Messages per state (every state is present, with 0 when none).
    pub messages_by_state: BTreeMap<String, u64>,
    /// Sessions with status `active`.
    pub active_sessions: u64,
    /// Bytes on disk: the database file plus its write-ahead log (0 in memory).
    pub file_bytes: u64,
}

// ------------------------------------------------------------------------------------------
// The handle.

/// How the store opens its database; tests shorten the busy timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenOptions {
    /// How long a statement waits for another connection's lock before failing with
    /// [`StoreError::Locked`].
    pub(crate) busy_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A handle to the store. Cheap to clone; every clone uses the same connection. The
/// database is closed when the last clone is dropped or on [`Store::close`].
///
/// Every statement runs on the caller's thread, under a `std::sync::Mutex` that is never
/// held across an await: a statement takes microseconds, while handing it to a thread of
/// its own and back cost about 90 µs per call on a 2-core machine (measured). The one
/// exception is a lock held by another process, which makes a statement wait up to the
/// busy timeout (5 s) before failing with [`StoreError::Locked`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed.
    db: Mutex<Option<Db>>,
    /// Writes waiting for their batch's commit (`commit.rs`).
    commits: Mutex<commit::Queue>,
    /// Counts of writes, commits and syncs.
    stats: CommitCounters,
    /// Dropping it stops the checkpoint thread (after a last checkpoint) and waits for it.
    /// `None` in memory.
    _checkpointer: Option<Checkpointer>,
    /// `None` in memory.
    path: Option<PathBuf>,
    /// An I/O error has been met: SQLite then reports pages it could not read as "malformed",
    /// which [`Inner::noted`] reports as the I/O error it follows.
    io_failed: std::sync::atomic::AtomicBool,
}

/// [`CommitStats`] as they are counted.
#[derive(Default)]
struct CommitCounters {
    writes: std::sync::atomic::AtomicU64,
    commits: std::sync::atomic::AtomicU64,
    syncs: std::sync::atomic::AtomicU64,
}

impl Inner {
    /// `result`, as the store's caller should see it: after an I/O error on this database,
    /// "damaged" is the I/O error's doing (SQLite distrusts its pages after a failed read or
    /// write), so it is reported as an I/O error.
    fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Err(StoreError::Io { .. }) => {
                self.io_failed.store(true, Ordering::Relaxed);
                result
            }
            Err(StoreError::Damaged {
                path,
                operation,
                message,
            }) if self.io_failed.load(Ordering::Relaxed) => Err(StoreError::Io {
                path,
                operation,
                message: format!("{message}, after an earlier I/O error on this database"),
            }),
            other => other,
        }
    }

    fn lock_db(&self) -> std::sync::MutexGuard<'_, Option<Db>> {
        // A panic inside a statement rolls its transaction back (rusqlite drops it), so the
        // connection is still consistent: keep using it.
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every commit so far survive power loss: `fdatasync` of the write-ahead log
    /// (committed pages live there until a checkpoint, which syncs what it copies). Nothing
    /// to do in memory.
    fn sync_log(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let wal = wal_path(path);
        match std::fs::File::open(&wal).and_then(|file| file.sync_data()) {
            Ok(()) => Ok(()),
            // No log: everything committed is in the database file, synced by the
            // checkpoint that emptied the log.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StoreError::Io {
                path: wal,
                operation: "sync",
                message: error.to_string(),
            }),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating it and its directory if needed) and migrates the database.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file or directory cannot be created or read,
    /// [`StoreError::Corrupt`] when the file is not an Iris database, [`StoreError::NewerSchema`]
    /// when a newer Iris wrote it, [`StoreError::Locked`] when another process holds it,
    /// [`StoreError::DiskFull`] when a migration cannot be written. In every case the file is
    /// left as it was.
    pub async fn open(database: &DatabaseConfig) -> Result<Store, StoreError> {
        Self::open_with(database, OpenOptions::default()).await
    }

    /// [`Store::open`] with explicit options.
    pub(crate) async fn open_with(
        database: &DatabaseConfig,
        options: OpenOptions,
    ) -> Result<Store, StoreError> {
        let path = (!database.in_memory).then(|| database.path.clone());
        let db = Db::open(database, options)?;
        let checkpointer = path
            .clone()
            .map(|path| start_checkpointer(path, options.busy_timeout));
        Ok(Store {
            inner: Arc::new(Inner {
                db: Mutex::new(Some(db)),
                commits: Mutex::new(commit::Queue::default()),
                stats: CommitCounters::default(),
                _checkpointer: checkpointer,
                path,
                io_failed: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Reads the database file of `database` without changing anything (no file created, no
    /// migration): for `iris doctor`. `None` when there is no file yet (or it is in memory).
    ///
    /// # Errors
    /// As [`Store::open`] would report the file: not an Iris database, a newer schema, or
    /// unreadable; and [`StoreError::Corrupt`] when SQLite's integrity check (`quick_check`,
    /// every page read) finds damage.
    pub fn inspect(database: &DatabaseConfig) -> Result<Option<Inspection>, StoreError> {
        if database.in_memory {
            return Ok(None);
        }
        Ok(db::inspect(&database.path)?.map(|found| Inspection {
            schema: found.version,
            needs_migration: found.version < schema::current_version(),
            active_sessions: found.active_sessions,
        }))
    }

    /// The database file; `None` in memory.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Closes the database (checkpointing the write-ahead log) and returns once it is closed.
    /// Every later call, on any clone, fails with [`StoreError::Closed`].
    ///
    /// # Errors
    /// [`StoreError::Closed`] if it was already closed; an SQLite error from closing.
    pub async fn close(&self) -> Result<(), StoreError> {
        let db = self.lock().take();
        db.map_or(Err(StoreError::Closed), Db::close)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Db>> {
        self.inner.lock_db()
    }

    /// Runs `work` as one write of the next group commit (see `commit.rs`) and returns its
    /// result once its batch is committed, and with [`Durability::Synced`] on disk.
    async fn write<T, F>(&self, durability: Durability, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_deciding(move |db| work(db).map(|value| (value, durability)))
            .await
    }

    /// [`Store::write`] whose work decides how durable it must be from what it found.
    async fn write_deciding<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<(T, Durability), StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        commit::submit(&self.inner, Job::new(work, reply));
        self.inner
            .noted(answer.await.unwrap_or(Err(StoreError::Closed)))
    }

    /// Makes every write so far survive power loss (one sync of the write-ahead log, shared
    /// with concurrent writers).
    ///
    /// # Errors
    /// A [`StoreError`] if the log cannot be synced.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.write(Durability::Synced, |_| Ok(())).await
    }

    /// Writes waiting for a commit (tests).
    #[cfg(test)]
    fn queued_writes(&self) -> usize {
        commit::queued(&self.inner)
    }

    /// Writes, commits and syncs so far.
    #[must_use]
    pub fn commit_stats(&self) -> CommitStats {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.inner.stats;
        CommitStats {
            writes: stats.writes.load(Relaxed),
            commits: stats.commits.load(Relaxed),
            syncs: stats.syncs.load(Relaxed),
        }
    }

    /// Runs `work` on the connection and returns its result.
    #[expect(
        clippy::unused_async,
        reason = "async so callers stay the same if statements ever move off the caller's thread"
    )]
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Db) -> Result<T, StoreError>,
    {
        let mut db = self.lock();
        self.inner
            .noted(db.as_mut().map_or(Err(StoreError::Closed), work))
    }

    // --------------------------------------------------------------------------------------
    // Sessions.

    /// The pair's active session, if any.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn current_session(
        &self,
        caller: &TeamName,
        target: &TeamName,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let (caller, target) = (caller.clone(), target.clone());
        self.call(move |db| db.current_session(&caller, &target))
            .await
    }

    /// Records a new active session for the pair: no turns, no cost, not yet resumable.
    /// Synced: a session that replaces another (a reboot, a delete) is acknowledged to
    /// whoever asked for it.
    ///
    /// # Errors
    /// [`StoreError::ActiveSessionExists`] if the pair already has an active session (retire
    /// it first); [`StoreError::Invalid`] if `session_id` was used before.
    pub async fn create_session(
        &self,
        caller: &TeamName,
        target: &TeamName,
        session_id: Uuid,
    ) -> Result<SessionRecord, StoreError> {
        self.insert_session(caller, target, session_id, Durability::Synced)
            .await
    }

    /// [`Store::create_session`] for a pair's first message, not synced: nothing is
    /// acknowledged by it. A message that must survive power loss syncs it with its own
    /// insert (the log is synced in order), and an ask is acknowledged by its answer alone;
    /// a session lost with a power cut is created anew by the next Iris.
    ///
    /// # Errors
    /// As [`Store::create_session`].
    pub async fn create_first_session(
        &self,
        caller: &TeamName,
        target: &TeamName,
        session_id: Uuid,
    ) -> Result<SessionRecord, StoreError> {
        self.insert_session(caller, target, session_id, Durability::Lazy)
            .await
    }

    async fn insert_session(
        &self,
        caller: &TeamName,
        target: &TeamName,
        session_id: Uuid,
        durability: Durability,
    ) -> Result<SessionRecord, StoreError> {
        let (caller, target) = (caller.clone(), target.clone());
        self.write(durability, move |db| {
            db.create_session(caller, target, session_id)
        })
        .await
    }

    /// Records a finished turn: one more turn, `cost_usd` added to the total, the CLI's
    /// session total if given, resumable, last used now.
    ///
    /// # Errors
    /// [`StoreError::SessionNotFound`] for an unknown session.
    pub async fn record_turn(
        &self,
        session_id: Uuid,
        cost_usd: f64,
        cli_total_usd: Option<f64>,
    ) -> Result<(), StoreError> {
        self.write(Durability::Lazy, move |db| {
            db.record_turn(session_id, cost_usd, cli_total_usd)
        })
        .await
    }

    /// Sets whether the session can be continued with `--resume`.
    ///
    /// # Errors
    /// [`StoreError::SessionNotFound`] for an unknown session.
    pub async fn mark_resumable(
        &self,
        session_id: Uuid,
        resumable: bool,
    ) -> Result<(), StoreError> {
        self.write(Durability::Lazy, move |db| {
            db.mark_resumable(session_id, resumable)
        })
        .await
    }

    /// Retires an active session as `Rebooted` or `Deleted`; the row is kept. Retiring a
    /// session that is already retired changes nothing.
    ///
    /// # Errors
    /// [`StoreError::SessionNotFound`] for an unknown session; [`StoreError::Invalid`] for
    /// `status` `Active`.
    pub async fn retire_session(
        &self,
        session_id: Uuid,
        status: SessionStatus,
    ) -> Result<(), StoreError> {
        self.write(Durability::Synced, move |db| {
            db.retire_session(session_id, status)
        })
        .await
    }

    /// Every active session, by caller then target.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.call(Db::sessions).await
    }

    // --------------------------------------------------------------------------------------
    // Messages.

    /// Records a message as queued, created now.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if the id is already used; [`StoreError::DiskFull`],
    /// [`StoreError::Locked`] and others if it cannot be written.
    pub async fn insert_message(&self, message: NewMessage) -> Result<(), StoreError> {
        // A message nobody waits for is acknowledged by its id: it must survive power loss.
        // One whose sender waits is made durable when it is marked running (before it is
        // delivered) or when its id is handed out (`Store::sync`).
        let durability = match message.mode {
            MessageMode::Ask => Durability::Lazy,
            MessageMode::Tell | MessageMode::Quick => Durability::Synced,
        };
        self.write(durability, move |db| db.insert_message(message))
            .await
    }

    /// Moves a queued message to running in `session_id`, started now. Returns false, and
    /// changes nothing, if it was not queued (or does not exist).
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn mark_running(&self, id: MessageId, session_id: Uuid) -> Result<bool, StoreError> {
        // Synced before the turn is written, so a message delivered before a power cut is
        // never delivered again after it. An ask needs no sync: after a restart a queued ask
        // is not delivered (its sender is gone), so a lost `running` mark cannot make it run
        // twice.
        self.write_deciding(move |db| {
            let mode = db.mark_running(id, session_id)?;
            let durability = match mode {
                Some(MessageMode::Tell | MessageMode::Quick) => Durability::Synced,
                Some(MessageMode::Ask) | None => Durability::Lazy,
            };
            Ok((mode.is_some(), durability))
        })
        .await
    }

    /// The sender of an unfinished ask stopped waiting for it (it was told `pending` and
    /// holds the id): from now on the message is a tell (delivered after a restart if still
    /// queued) and it is synced, with everything written before it. Returns whether it was an
    /// unfinished ask.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written or synced.
    pub async fn acknowledge(&self, id: MessageId) -> Result<bool, StoreError> {
        self.write(Durability::Synced, move |db| db.acknowledge(id))
            .await
    }

    /// Moves a queued or running message to its final state, finished now. A message that is
    /// already final is never changed: that is logged and `Ok`.
    ///
    /// # Errors
    /// [`StoreError::MessageNotFound`] for an unknown id; [`StoreError::Invalid`] if
    /// `finish.state` is not final.
    pub async fn finish_message(
        &self,
        id: MessageId,
        finish: MessageFinish,
    ) -> Result<(), StoreError> {
        self.write(Durability::Lazy, move |db| {
            db.finish_message(id, finish, None)
        })
        .await
    }

    /// [`Store::finish_message`] and [`Store::record_turn`] in one transaction: a completed
    /// turn is recorded in its message and counted in its session together, or not at all.
    ///
    /// # Errors
    /// As the two of them.
    pub async fn finish_counted_turn(
        &self,
        id: MessageId,
        finish: MessageFinish,
        turn: SessionTurn,
    ) -> Result<(), StoreError> {
        self.write(Durability::Lazy, move |db| {
            db.finish_message(id, finish, Some(turn))
        })
        .await
    }

    /// Moves a queued message to cancelled. Returns false, and changes nothing, if it was not
    /// queued.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn cancel_queued(&self, id: MessageId) -> Result<bool, StoreError> {
        self.write(Durability::Synced, move |db| db.cancel_queued(id))
            .await
    }

    /// One message.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>, StoreError> {
        self.call(move |db| db.message(id)).await
    }

    /// A pair's messages, newest first, one page at a time.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn pair_messages(
        &self,
        caller: &TeamName,
        target: &TeamName,
        page: Page,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let (caller, target) = (caller.clone(), target.clone());
        self.call(move |db| db.pair_messages(&caller, &target, page))
            .await
    }

    /// The turns that ran and finished since `since_ms` (unix ms), failed ones included: each
    /// one's team, end and cost (0 when none was reported), for budgets.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn recent_turns(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(TeamName, i64, f64)>, StoreError> {
        self.call(move |db| db.recent_turns(since_ms)).await
    }

    /// The turns that ran and finished since `since_ms`: team, end, duration and cost (for
    /// the dashboard's charts).
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn turn_times(&self, since_ms: i64) -> Result<Vec<TurnTime>, StoreError> {
        self.call(move |db| db.turn_times(since_ms)).await
    }

    /// Messages of every pair, newest first, that match `filter`.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn find_messages(
        &self,
        filter: MessageFilter,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.call(move |db| db.find_messages(&filter)).await
    }

    /// At start-up, in one transaction: every running message becomes `interrupted` (it is
    /// not re-run), and the queued ones are returned, oldest first.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written; then nothing changed.
    pub async fn recover(&self) -> Result<Recovery, StoreError> {
        self.call(Db::recover).await
    }

    /// Deletes the final messages that finished more than `database.retentionDays` ago and
    /// returns how many. Queued and running messages are never deleted.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written; then nothing changed.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        self.call(Db::prune).await
    }

    /// Message counts per state, active sessions and the size on disk.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.call(|db| db.stats()).await
    }

    // --------------------------------------------------------------------------------------
    // Agent process groups.

    /// Records a started agent's process group (replacing a stale record of the same pgid).
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn agent_started(&self, agent: AgentRecord) -> Result<(), StoreError> {
        self.write(Durability::Lazy, move |db| db.agent_started(&agent))
            .await
    }

    /// Forgets a stopped agent's process group; an unknown pgid is not an error.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn agent_stopped(&self, pgid: u32) -> Result<(), StoreError> {
        self.write(Durability::Lazy, move |db| db.agent_stopped(pgid))
            .await
    }

    /// Every recorded agent process group, oldest first.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.call(|db| db.agents()).await
    }

    /// Runs `work` on the store's connection (tests only: backdating rows, capping the size).
    #[cfg(test)]
    pub(crate) async fn with_connection<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call(move |db| db.with_connection(work)).await
    }
}

/// A turn to count in its session (see [`Store::finish_counted_turn`]).
#[derive(Debug, Clone, Copy)]
pub struct SessionTurn {
    /// The session.
    pub session_id: Uuid,
    /// This turn's cost.
    pub cost_usd: f64,
    /// The CLI's cumulative total after it, if reported.
    pub cli_total_usd: Option<f64>,
}

/// How often the checkpoint thread looks at the write-ahead log.
const CHECKPOINT_POLL: Duration = Duration::from_millis(100);
/// A checkpoint runs at least this often while anything was written...
const CHECKPOINT_PERIOD: Duration = Duration::from_secs(1);
/// ...and as soon as the log is larger than this.
const WAL_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

fn wal_path(path: &std::path::Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// The checkpoint thread. Dropping it stops the thread and waits until its last checkpoint
/// is done and its connection closed, so nothing touches the database files after the last
/// handle of the store is gone (a caller may then remove them).
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the thread that checkpoints the WAL with its own connection, so the fsync a
/// checkpoint needs normally happens off every caller's write. A passive checkpoint waits
/// for nobody and blocks nobody. Stops, after a last checkpoint, when the sender is dropped.
fn start_checkpointer(path: PathBuf, busy_timeout: Duration) -> Checkpointer {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("iris-store-checkpoint".to_owned())
        .spawn(move || {
            let connection = match rusqlite::Connection::open(&path) {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot open the database for checkpoints; the write-ahead log will grow");
                    return;
                }
            };
            let _ = connection.busy_timeout(busy_timeout);
            let mut last_checkpoint = std::time::Instant::now();
            loop {
                let last = !matches!(
                    stopped.recv_timeout(CHECKPOINT_POLL),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                let wal_bytes = std::fs::metadata(wal_path(&path)).map_or(0, |meta| meta.len());
                let due = last_checkpoint.elapsed() >= CHECKPOINT_PERIOD && wal_bytes > 0;
                if !last && !due && wal_bytes <= WAL_CHECKPOINT_BYTES {
                    continue;
                }
                last_checkpoint = std::time::Instant::now();
                let mode = if last { "TRUNCATE" } else { "PASSIVE" };
                if let Err(error) = connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
                    tracing::warn!(path = %path.display(), %error, "checkpoint failed");
                }
                if last {
                    return;
                }
            }
        });
    let thread = spawned
        .map_err(|error| {
            tracing::error!(%error, "cannot start the checkpoint thread; the write-ahead log will grow");
        })
        .ok();
    Checkpointer {
        stop: Some(stop),
        thread,
    }
}
