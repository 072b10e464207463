//! [`Db`]: the connection, behind the store's mutex, and every SQL statement Iris runs.

mod approvals;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use uuid::Uuid;

use super::bounds::{Limits, bound_transcript, cut_in_place};
use super::error::{IN_MEMORY, classify};
use super::schema::{APPLICATION_ID, MIGRATIONS, current_version};
use super::{
    AgentRecord, MessageFilter, MessageFinish, MessageId, MessageMode, MessageRecord, MessageState,
    NewMessage, OpenOptions, Page, Recovery, SessionRecord, SessionStatus, SessionTurn, StoreError,
    StoreStats, TurnTime,
};
use crate::config::{DatabaseConfig, TeamName};

/// The error text of a message that was running when Iris stopped.
pub(super) const INTERRUPTED_ERROR: &str =
    "iris stopped while this message was running; it was not re-run";

/// The error text of an ask still queued when Iris stopped.
pub(super) const ABANDONED_ASK_ERROR: &str = "iris stopped before this message was delivered, while its sender was waiting for the answer; it was not delivered later (a message sent without waiting, or whose sender was told `pending`, is)";

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The open database. Lives behind the store's mutex.
pub(super) struct Db {
    connection: Connection,
    /// The file, or `:memory:`: for error messages and the size on disk.
    path: PathBuf,
    in_memory: bool,
    limits: Limits,
    retention: Duration,
}

/// Turns a rusqlite error into a [`StoreError`] naming `path` and `operation`.
fn fail<'path>(
    path: &'path Path,
    operation: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'path {
    move |error| classify(&error, path, operation)
}

impl Db {
    /// Opens, checks and migrates the database. Nothing is written to an existing file until
    /// it has been recognised as an Iris database of a schema this build knows.
    pub(super) fn open(config: &DatabaseConfig, options: OpenOptions) -> Result<Db, StoreError> {
        let (connection, path) = if config.in_memory {
            let connection = Connection::open_in_memory()
                .map_err(|error| open_error(&error, Path::new(IN_MEMORY)))?;
            (connection, PathBuf::from(IN_MEMORY))
        } else {
            let path = config.path.clone();
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                fs::create_dir_all(parent).map_err(|error| StoreError::Open {
                    path: path.clone(),
                    message: format!("cannot create directory {}: {error}", parent.display()),
                })?;
            }
            check_header(&path)?;
            let connection = Connection::open(&path).map_err(|error| open_error(&error, &path))?;
            // SQLite quietly falls back to read-only when the file is not writable.
            if connection
                .is_readonly(rusqlite::MAIN_DB)
                .map_err(|error| open_error(&error, &path))?
            {
                return Err(StoreError::Open {
                    path,
                    message: "the file is read-only for this user".to_owned(),
                });
            }
            (connection, path)
        };
        connection
            .busy_timeout(options.busy_timeout)
            .map_err(fail(&path, "open"))?;
        // Room for every statement of `prepare_cached` (about 25), so none of a turn's is
        // evicted by a rarer one and prepared again.
        connection.set_prepared_statement_cache_capacity(64);
        check_identity(&connection, &path)?;
        if !config.in_memory {
            let mode: String = connection
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
                .map_err(fail(&path, "open"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %path.display(), mode, "the database could not be put in WAL mode");
            }
        }
        connection
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(fail(&path, "open"))?;
        if !config.in_memory {
            // Checkpoints (which fsync) normally run on the store's checkpoint thread, off
            // every caller's write. Under writes faster than it can follow, SQLite's own
            // checkpoint at 4096 pages (16 MiB) is the backstop that keeps the log bounded.
            // After a reset the log file is cut back to 4 MiB.
            connection
                .execute_batch(
                    "PRAGMA wal_autocheckpoint = 4096; PRAGMA journal_size_limit = 4194304;",
                )
                .map_err(fail(&path, "open"))?;
        }
        let mut db = Db {
            connection,
            path,
            in_memory: config.in_memory,
            limits: Limits {
                max_text_bytes: config.max_text_bytes,
                max_transcript_entries: config.max_transcript_entries,
            },
            retention: config.retention,
        };
        db.migrate()?;
        tracing::debug!(path = %db.path.display(), "database open");
        Ok(db)
    }

    /// Applies the migrations this database has not had, each in its own transaction with
    /// its version bump. The version is read again inside each transaction, so two processes
    /// migrating at once apply each migration once.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = &self.path;
        loop {
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail(path, "migrate"))?;
            let version = user_version(&transaction).map_err(fail(path, "migrate"))?;
            let Some(migration) = usize::try_from(version)
                .ok()
                .and_then(|index| MIGRATIONS.get(index))
            else {
                if version > current_version() {
                    return Err(StoreError::NewerSchema {
                        path: path.clone(),
                        found: version,
                        supported: current_version(),
                    });
                }
                return Ok(());
            };
            transaction
                .execute_batch(migration)
                .map_err(fail(path, "migrate"))?;
            transaction
                .pragma_update(None, "user_version", version + 1)
                .map_err(fail(path, "migrate"))?;
            transaction.commit().map_err(fail(path, "migrate"))?;
            tracing::info!(path = %path.display(), version = version + 1, "database schema migrated");
        }
    }

    // --------------------------------------------------------------------------------------
    // Group commit (see `commit.rs`): one transaction per batch, a savepoint per write.

    /// Starts a batch's transaction.
    pub(super) fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.run_cached("BEGIN IMMEDIATE")
            .map_err(fail(&self.path, "begin"))
    }

    /// Runs a statement without parameters or rows, prepared once per connection.
    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(|_| ())
    }

    /// Runs one write of the batch in a savepoint: released if it worked, rolled back (alone)
    /// if it failed. `write` gets no connection when the savepoint cannot be made.
    pub(super) fn in_savepoint<D, T>(
        &mut self,
        write: impl FnOnce(Option<&mut Db>) -> (Result<(), StoreError>, D, T),
    ) -> (Result<(), StoreError>, D, T) {
        if let Err(error) = self.run_cached("SAVEPOINT iris_write") {
            let (_, durability, answer) = write(None);
            return (
                Err(classify(&error, &self.path, "savepoint")),
                durability,
                answer,
            );
        }
        let (status, durability, answer) = write(Some(self));
        if self.transaction_lost() {
            return (status, durability, answer);
        }
        let end = if status.is_ok() {
            self.run_cached("RELEASE iris_write")
        } else {
            self.run_cached("ROLLBACK TO iris_write")
                .and_then(|()| self.run_cached("RELEASE iris_write"))
        };
        match end {
            Ok(()) => (status, durability, answer),
            Err(error) => (
                Err(classify(&error, &self.path, "savepoint")),
                durability,
                answer,
            ),
        }
    }

    /// Whether SQLite ended the batch's transaction by itself (it rolls a transaction back on
    /// a full disk or an I/O error).
    pub(super) fn transaction_lost(&self) -> bool {
        self.connection.is_autocommit()
    }

    /// Rolls the batch's transaction back, if SQLite has not already.
    pub(super) fn rollback_batch(&mut self) {
        if !self.connection.is_autocommit() {
            let _ = self.run_cached("ROLLBACK");
        }
    }

    /// Commits the batch's transaction (rolled back if the commit fails).
    pub(super) fn commit_batch(&mut self) -> Result<(), StoreError> {
        match self.run_cached("COMMIT") {
            Ok(()) => Ok(()),
            Err(error) => {
                if !self.connection.is_autocommit() {
                    let _ = self.run_cached("ROLLBACK");
                }
                Err(classify(&error, &self.path, "commit"))
            }
        }
    }

    /// Closes the connection, checkpointing the write-ahead log.
    pub(super) fn close(self) -> Result<(), StoreError> {
        let path = self.path;
        self.connection
            .close()
            .map_err(|(_, error)| classify(&error, &path, "close"))
    }

    // --------------------------------------------------------------------------------------
    // Sessions.

    pub(super) fn current_session(
        &mut self,
        caller: &TeamName,
        target: &TeamName,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.connection
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE caller = ?1 AND target = ?2 AND status = 'active'"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row(params![caller.as_str(), target.as_str()], session_from_row)
                    .optional()
            })
            .map_err(fail(&self.path, "current_session"))
    }

    pub(super) fn create_session(
        &mut self,
        caller: TeamName,
        target: TeamName,
        session_id: Uuid,
    ) -> Result<SessionRecord, StoreError> {
        let path = &self.path;
        let sql = fail(path, "create_session");
        let transaction = self.connection.savepoint().map_err(&sql)?;
        let active: Option<String> = transaction
            .prepare_cached(
                "SELECT session_id FROM sessions
                 WHERE caller = ?1 AND target = ?2 AND status = 'active'",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![caller.as_str(), target.as_str()], |row| row.get(0))
                    .optional()
            })
            .map_err(&sql)?;
        if let Some(active) = active {
            return Err(StoreError::ActiveSessionExists {
                caller,
                target,
                session_id: Uuid::parse_str(&active).unwrap_or_default(),
            });
        }
        let used: bool = transaction
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = ?1)")
            .and_then(|mut statement| {
                statement.query_row([session_id.to_string()], |row| row.get(0))
            })
            .map_err(&sql)?;
        if used {
            return Err(StoreError::Invalid {
                operation: "create_session",
                message: format!("session id {session_id} was already used"),
            });
        }
        let now = now_ms();
        transaction
            .prepare_cached(
                "INSERT INTO sessions (session_id, caller, target, status, created_at_ms, last_used_at_ms)
                 VALUES (?1, ?2, ?3, 'active', ?4, ?4)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    session_id.to_string(),
                    caller.as_str(),
                    target.as_str(),
                    now
                ])
            })
            .map_err(&sql)?;
        transaction.commit().map_err(&sql)?;
        Ok(SessionRecord {
            caller,
            target,
            session_id,
            status: SessionStatus::Active,
            created_at_ms: now,
            last_used_at_ms: now,
            turns: 0,
            total_cost_usd: 0.0,
            cli_total_usd: 0.0,
            resumable: false,
        })
    }

    pub(super) fn record_turn(
        &mut self,
        session_id: Uuid,
        cost_usd: f64,
        cli_total_usd: Option<f64>,
    ) -> Result<(), StoreError> {
        let turn = SessionTurn {
            session_id,
            cost_usd,
            cli_total_usd,
        };
        count_turn(&self.connection, &self.path, turn)
    }

    pub(super) fn mark_resumable(
        &mut self,
        session_id: Uuid,
        resumable: bool,
    ) -> Result<(), StoreError> {
        let changed = self
            .connection
            .execute(
                "UPDATE sessions SET resumable = ?2 WHERE session_id = ?1",
                params![session_id.to_string(), resumable],
            )
            .map_err(fail(&self.path, "mark_resumable"))?;
        if changed == 0 {
            return Err(StoreError::SessionNotFound { session_id });
        }
        Ok(())
    }

    pub(super) fn retire_session(
        &mut self,
        session_id: Uuid,
        status: SessionStatus,
    ) -> Result<(), StoreError> {
        if status == SessionStatus::Active {
            return Err(StoreError::Invalid {
                operation: "retire_session",
                message: "a session is retired as rebooted or deleted, not active".to_owned(),
            });
        }
        let path = &self.path;
        let sql = fail(path, "retire_session");
        let transaction = self.connection.savepoint().map_err(&sql)?;
        let current: Option<String> = transaction
            .query_row(
                "SELECT status FROM sessions WHERE session_id = ?1",
                [session_id.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(&sql)?;
        match current.as_deref() {
            None => return Err(StoreError::SessionNotFound { session_id }),
            Some("active") => {
                transaction
                    .execute(
                        "UPDATE sessions SET status = ?2 WHERE session_id = ?1",
                        params![session_id.to_string(), status.as_str()],
                    )
                    .map_err(&sql)?;
            }
            Some(retired) => {
                tracing::debug!(%session_id, retired, "session already retired; left as it is");
            }
        }
        transaction.commit().map_err(&sql)
    }

    pub(super) fn sessions(&mut self) -> Result<Vec<SessionRecord>, StoreError> {
        self.connection
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE status = 'active' ORDER BY caller, target"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map([], session_from_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(fail(&self.path, "sessions"))
    }

    // --------------------------------------------------------------------------------------
    // Messages.

    pub(super) fn insert_message(&mut self, message: NewMessage) -> Result<(), StoreError> {
        let NewMessage {
            id,
            caller,
            target,
            session_id,
            mode,
            mut text,
            parent,
        } = message;
        let truncated = cut_in_place(&mut text, self.limits.max_text_bytes);
        self.connection
            .prepare_cached(
                "INSERT INTO messages (id, caller, target, session_id, mode, text, state,
                                       created_at_ms, truncated, parent_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id.to_string(),
                    caller.as_str(),
                    target.as_str(),
                    session_id.map(|session_id| session_id.to_string()),
                    mode.as_str(),
                    text,
                    now_ms(),
                    truncated,
                    parent.map(|parent| parent.to_string()),
                ])
            })
            .map_err(|error| {
                if error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                    StoreError::Invalid {
                        operation: "insert_message",
                        message: format!("message id {id} is already used"),
                    }
                } else {
                    classify(&error, &self.path, "insert_message")
                }
            })?;
        Ok(())
    }

    /// Moves a queued message to running; returns its mode (`None` when it was not queued).
    pub(super) fn mark_running(
        &mut self,
        id: MessageId,
        session_id: Uuid,
    ) -> Result<Option<MessageMode>, StoreError> {
        // A read, then the update: both run in the write's savepoint (`commit.rs`), and
        // `RETURNING` would build a temporary table for its one row at every turn.
        let id = id.to_string();
        let sql = fail(&self.path, "mark_running");
        let mode: Option<String> = self
            .connection
            .prepare_cached("SELECT mode FROM messages WHERE id = ?1 AND state = 'queued'")
            .and_then(|mut statement| statement.query_row([&id], |row| row.get(0)).optional())
            .map_err(&sql)?;
        let Some(mode) = mode else {
            return Ok(None);
        };
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE messages SET state = 'running', started_at_ms = ?3, session_id = ?2
                 WHERE id = ?1 AND state = 'queued'",
            )
            .and_then(|mut statement| {
                statement.execute(params![id, session_id.to_string(), now_ms()])
            })
            .map_err(&sql)?;
        Ok(MessageMode::parse(&mode).filter(|_| changed == 1))
    }

    /// The sender of a queued or running ask stopped waiting (it was told `pending`): the
    /// message becomes a tell. Returns whether it was an unfinished ask.
    pub(super) fn acknowledge(&mut self, id: MessageId) -> Result<bool, StoreError> {
        let changed = self
            .connection
            .execute(
                "UPDATE messages SET mode = 'tell'
                 WHERE id = ?1 AND mode = 'ask' AND state IN ('queued', 'running')",
                [id.to_string()],
            )
            .map_err(fail(&self.path, "acknowledge"))?;
        Ok(changed == 1)
    }

    pub(super) fn finish_message(
        &mut self,
        id: MessageId,
        finish: MessageFinish,
        turn: Option<SessionTurn>,
    ) -> Result<(), StoreError> {
        if !finish.state.is_final() {
            return Err(StoreError::Invalid {
                operation: "finish_message",
                message: format!(
                    "{} is not a final state (expected completed, failed, cancelled, timed_out or interrupted)",
                    finish.state.as_str()
                ),
            });
        }
        let MessageFinish {
            state,
            mut answer,
            is_error,
            mut error,
            cost_usd,
            usage,
            duration_ms,
            transcript,
        } = finish;
        let max = self.limits.max_text_bytes;
        let mut truncated = answer
            .as_mut()
            .is_some_and(|answer| cut_in_place(answer, max));
        truncated |= error.as_mut().is_some_and(|error| cut_in_place(error, max));
        let (transcript, cut) = bound_transcript(&transcript, self.limits);
        truncated |= cut;
        let usage = usage.map(|usage| usage.to_string());
        let usage = match usage {
            Some(usage) if usage.len() > max => {
                truncated = true;
                None
            }
            usage => usage,
        };
        let transcript = serde_json::to_string(&transcript).map_err(|error| StoreError::Sql {
            operation: "finish_message",
            message: format!("cannot serialize the transcript: {error}"),
        })?;
        let cost_usd = cost_usd.and_then(|cost| finite(cost, "finish_message cost"));
        let duration_ms = duration_ms.map(|duration| i64::try_from(duration).unwrap_or(i64::MAX));

        let path = &self.path;
        let sql = fail(path, "finish_message");
        // Runs inside the write's savepoint (`commit.rs`): the update and the session's count
        // are kept or rolled back together.
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE messages
                 SET state = ?2, answer = ?3, is_error = ?4, error = ?5, cost_usd = ?6,
                     usage = ?7, duration_ms = ?8, finished_at_ms = ?9, transcript = ?10,
                     truncated = truncated OR ?11
                 WHERE id = ?1 AND state IN ('queued', 'running')",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id.to_string(),
                    state.as_str(),
                    answer,
                    is_error,
                    error,
                    cost_usd,
                    usage,
                    duration_ms,
                    now_ms(),
                    transcript,
                    truncated,
                ])
            })
            .map_err(&sql)?;
        if changed == 0 {
            let current: Option<String> = self
                .connection
                .query_row(
                    "SELECT state FROM messages WHERE id = ?1",
                    [id.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(&sql)?;
            let Some(current) = current else {
                return Err(StoreError::MessageNotFound { id });
            };
            tracing::warn!(%id, current, wanted = state.as_str(), "message already finished; left as it is");
            return Ok(());
        }
        if let Some(turn) = turn {
            count_turn(&self.connection, path, turn)?;
        }
        Ok(())
    }

    pub(super) fn cancel_queued(&mut self, id: MessageId) -> Result<bool, StoreError> {
        let changed = self
            .connection
            .execute(
                "UPDATE messages SET state = 'cancelled', finished_at_ms = ?2
                 WHERE id = ?1 AND state = 'queued'",
                params![id.to_string(), now_ms()],
            )
            .map_err(fail(&self.path, "cancel_queued"))?;
        Ok(changed == 1)
    }

    pub(super) fn message(&mut self, id: MessageId) -> Result<Option<MessageRecord>, StoreError> {
        self.connection
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row([id.to_string()], message_from_row)
                    .optional()
            })
            .map_err(fail(&self.path, "message"))
    }

    pub(super) fn pair_messages(
        &mut self,
        caller: &TeamName,
        target: &TeamName,
        page: Page,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        // Two statements rather than `?3 IS NULL OR id < ?3`, so both use the pair index.
        let result = match page.before {
            None => self
                .connection
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE caller = ?1 AND target = ?2
                     ORDER BY id DESC LIMIT ?3"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(
                            params![caller.as_str(), target.as_str(), limit],
                            message_from_row,
                        )?
                        .collect::<Result<Vec<_>, _>>()
                }),
            Some(before) => self
                .connection
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE caller = ?1 AND target = ?2 AND id < ?3
                     ORDER BY id DESC LIMIT ?4"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(
                            params![caller.as_str(), target.as_str(), before.to_string(), limit],
                            message_from_row,
                        )?
                        .collect::<Result<Vec<_>, _>>()
                }),
        };
        result.map_err(fail(&self.path, "pair_messages"))
    }

    pub(super) fn recover(&mut self) -> Result<Recovery, StoreError> {
        let path = &self.path;
        let sql = fail(path, "recover");
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&sql)?;
        let interrupted = {
            let mut statement = transaction
                .prepare("SELECT id FROM messages WHERE state = 'running' ORDER BY id")
                .map_err(&sql)?;
            statement
                .query_map([], |row| parse_text(row, 0, message_id))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(&sql)?
        };
        transaction
            .execute(
                "UPDATE messages SET state = 'interrupted', error = ?1, finished_at_ms = ?2
                 WHERE state = 'running'",
                params![INTERRUPTED_ERROR, now_ms()],
            )
            .map_err(&sql)?;
        // An ask's sender was waiting for the answer, on a connection gone with the Iris that
        // stopped: delivering it now would run a turn nobody reads (and, after a power cut,
        // one that may already have run). An ask whose sender stopped waiting became a tell.
        let abandoned = transaction
            .execute(
                "UPDATE messages SET state = 'failed', is_error = 1, error = ?1, finished_at_ms = ?2
                 WHERE state = 'queued' AND mode = 'ask'",
                params![ABANDONED_ASK_ERROR, now_ms()],
            )
            .map_err(&sql)?;
        let queued = {
            let mut statement = transaction
                .prepare(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE state = 'queued' ORDER BY created_at_ms, id"
                ))
                .map_err(&sql)?;
            statement
                .query_map([], message_from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(&sql)?
        };
        let expired = Self::expire_pending_approvals(&transaction).map_err(&sql)?;
        transaction.commit().map_err(&sql)?;
        if expired > 0 {
            tracing::warn!(
                expired,
                "tool-permission requests that were waiting for a decision when Iris stopped are marked expired"
            );
        }
        if !interrupted.is_empty() || !queued.is_empty() || abandoned > 0 {
            tracing::info!(
                interrupted = interrupted.len(),
                queued = queued.len(),
                abandoned,
                "recovered messages from the previous run"
            );
        }
        Ok(Recovery {
            interrupted,
            queued,
            expired_approvals: expired,
        })
    }

    pub(super) fn recent_turns(
        &mut self,
        since_ms: i64,
    ) -> Result<Vec<(TeamName, i64, f64)>, StoreError> {
        self.connection
            .prepare(
                "SELECT target, finished_at_ms, COALESCE(cost_usd, 0) FROM messages
                 WHERE finished_at_ms >= ?1 AND started_at_ms IS NOT NULL ORDER BY finished_at_ms",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([since_ms], |row| {
                        Ok((parse_text(row, 0, team_name)?, row.get(1)?, row.get(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(fail(&self.path, "recent_turns"))
    }

    pub(super) fn turn_times(&mut self, since_ms: i64) -> Result<Vec<TurnTime>, StoreError> {
        self.connection
            .prepare(
                "SELECT target, finished_at_ms, COALESCE(duration_ms, 0), COALESCE(cost_usd, 0)
                 FROM messages
                 WHERE finished_at_ms >= ?1 AND started_at_ms IS NOT NULL ORDER BY finished_at_ms",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([since_ms], |row| {
                        let duration: i64 = row.get(2)?;
                        Ok(TurnTime {
                            team: parse_text(row, 0, team_name)?,
                            finished_at_ms: row.get(1)?,
                            duration_ms: u64::try_from(duration).unwrap_or(0),
                            cost_usd: row.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(fail(&self.path, "turn_times"))
    }

    pub(super) fn find_messages(
        &mut self,
        filter: &MessageFilter,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut values: Vec<String> = Vec::new();
        if let Some(team) = &filter.team {
            values.push(team.to_string());
            let n = values.len();
            conditions.push(format!("(caller = ?{n} OR target = ?{n})"));
        }
        if let Some(caller) = &filter.caller {
            values.push(caller.to_string());
            conditions.push(format!("caller = ?{}", values.len()));
        }
        if let Some(target) = &filter.target {
            values.push(target.to_string());
            conditions.push(format!("target = ?{}", values.len()));
        }
        if let Some(state) = filter.state {
            values.push(state.as_str().to_owned());
            conditions.push(format!("state = ?{}", values.len()));
        }
        if let Some(text) = filter.text.as_deref().filter(|text| !text.is_empty()) {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            values.push(format!("%{escaped}%"));
            let n = values.len();
            conditions.push(format!(
                "(text LIKE ?{n} ESCAPE '\\' OR answer LIKE ?{n} ESCAPE '\\' OR error LIKE ?{n} ESCAPE '\\')"
            ));
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages {filter_sql} ORDER BY id DESC LIMIT {limit}"
        );
        self.connection
            .prepare(&sql)
            .and_then(|mut statement| {
                statement
                    .query_map(rusqlite::params_from_iter(values.iter()), message_from_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(fail(&self.path, "find_messages"))
    }

    pub(super) fn prune(&mut self) -> Result<usize, StoreError> {
        let retention = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(retention);
        let deleted = self
            .connection
            .execute(
                "DELETE FROM messages
                 WHERE finished_at_ms < ?1
                   AND state IN ('completed', 'failed', 'cancelled', 'timed_out', 'interrupted')",
                [cutoff],
            )
            .map_err(fail(&self.path, "prune"))?;
        Self::prune_approvals(&self.connection, cutoff).map_err(fail(&self.path, "prune"))?;
        if deleted > 0 {
            tracing::info!(deleted, "pruned old messages");
        }
        Ok(deleted)
    }

    pub(super) fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let path = &self.path;
        let sql = fail(path, "stats");
        let mut messages_by_state: std::collections::BTreeMap<String, u64> = MessageState::ALL
            .iter()
            .map(|state| (state.as_str().to_owned(), 0))
            .collect();
        {
            let mut statement = self
                .connection
                .prepare_cached("SELECT state, COUNT(*) FROM messages GROUP BY state")
                .map_err(&sql)?;
            let counts = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, parse_count(row, 1)?))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(&sql)?;
            messages_by_state.extend(counts);
        }
        let active_sessions = self
            .connection
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE status = 'active'",
                [],
                |row| parse_count(row, 0),
            )
            .map_err(&sql)?;
        let file_bytes = if self.in_memory {
            0
        } else {
            let mut wal = self.path.clone().into_os_string();
            wal.push("-wal");
            [self.path.clone(), PathBuf::from(wal)]
                .iter()
                .filter_map(|file| fs::metadata(file).ok())
                .map(|metadata| metadata.len())
                .sum()
        };
        Ok(StoreStats {
            messages_by_state,
            active_sessions,
            file_bytes,
        })
    }

    // --------------------------------------------------------------------------------------
    // Agents.

    pub(super) fn agent_started(&mut self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO agents (pgid, agent_key, caller, target, started_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    agent.pgid,
                    agent.agent_key,
                    agent.caller.as_str(),
                    agent.target.as_str(),
                    agent.started_at_ms,
                ])
            })
            .map_err(fail(&self.path, "agent_started"))?;
        Ok(())
    }

    pub(super) fn agent_stopped(&mut self, pgid: u32) -> Result<(), StoreError> {
        self.connection
            .prepare_cached("DELETE FROM agents WHERE pgid = ?1")
            .and_then(|mut statement| statement.execute([pgid]))
            .map_err(fail(&self.path, "agent_stopped"))?;
        Ok(())
    }

    pub(super) fn agents(&mut self) -> Result<Vec<AgentRecord>, StoreError> {
        self.connection
            .prepare_cached(
                "SELECT pgid, agent_key, caller, target, started_at_ms FROM agents
                 ORDER BY started_at_ms, pgid",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| {
                        Ok(AgentRecord {
                            pgid: row.get(0)?,
                            agent_key: row.get(1)?,
                            caller: parse_text(row, 2, team_name)?,
                            target: parse_text(row, 3, team_name)?,
                            started_at_ms: row.get(4)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(fail(&self.path, "agents"))
    }

    #[cfg(test)]
    pub(super) fn with_connection<T>(
        &mut self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        work(&self.connection).map_err(fail(&self.path, "test"))
    }
}

// ------------------------------------------------------------------------------------------
// Opening.

/// An error from opening the file: anything SQLite does not classify is an `Open` error.
fn open_error(error: &rusqlite::Error, path: &Path) -> StoreError {
    match classify(error, path, "open") {
        StoreError::Sql { message, .. } => StoreError::Open {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

/// Rejects an existing, non-empty file that does not start with the SQLite header, before
/// SQLite gets to see it. An empty file is a new database.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let open_failed = |error: io::Error| StoreError::Open {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(open_failed(error)),
    };
    let mut header = Vec::with_capacity(100);
    file.take(100)
        .read_to_end(&mut header)
        .map_err(open_failed)?;
    if header.is_empty() || (header.len() == 100 && header.starts_with(SQLITE_HEADER)) {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: path.to_path_buf(),
        message: "the file is not an SQLite database: it does not start with the SQLite header"
            .to_owned(),
    })
}

/// What [`inspect`] found in a database file, read only.
pub(super) struct Inspected {
    pub(super) version: i64,
    pub(super) active_sessions: u64,
}

/// Reads a database file without writing anything (no creation, no migration, no WAL mode
/// change): whether it is an Iris database of a schema this build knows, its schema version
/// and its active sessions. `None` when the file does not exist.
pub(super) fn inspect(path: &Path) -> Result<Option<Inspected>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    check_header(path)?;
    let connection = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| open_error(&error, path))?;
    check_identity(&connection, path)?;
    let read = fail(path, "inspect");
    let version = user_version(&connection).map_err(&read)?;
    let active_sessions = if version == 0 {
        0
    } else {
        connection
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE status = 'active'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_err(&read)?
            .try_into()
            .unwrap_or(0)
    };
    // Every page read and checked (`quick_check`: b-trees and free list, not index
    // contents): damage found here is real, not a failed read of a running Iris.
    let problems: Vec<String> = connection
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect()
        })
        .map_err(|error| match read(error) {
            StoreError::Corrupt { path, message } => StoreError::Corrupt {
                path,
                message: format!("integrity check: {message}"),
            },
            other => other,
        })?;
    if problems != ["ok"] {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            message: format!("integrity check: {}", problems.join("; ")),
        });
    }
    Ok(Some(Inspected {
        version,
        active_sessions,
    }))
}

/// Checks, by reading only, that the database is an Iris database (or a new, empty one) of a
/// schema this build knows.
fn check_identity(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let read = fail(path, "open");
    let application_id: i64 = connection
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(&read)?;
    let version = user_version(connection).map_err(&read)?;
    let objects: i64 = connection
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(&read)?;
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    if application_id != APPLICATION_ID && application_id != 0 {
        return Err(corrupt(format!(
            "it is an SQLite database of another program, application id {application_id:#x}"
        )));
    }
    if application_id == 0 && (version != 0 || objects != 0) {
        return Err(corrupt(
            "it is an SQLite database with tables that Iris did not create".to_owned(),
        ));
    }
    if version < 0 {
        return Err(corrupt(format!("its schema version {version} is invalid")));
    }
    if version > current_version() {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: current_version(),
        });
    }
    Ok(())
}

fn user_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row("PRAGMA user_version", [], |row| row.get(0))
}

// ------------------------------------------------------------------------------------------
// Rows.

const SESSION_COLUMNS: &str = "caller, target, session_id, status, created_at_ms, \
     last_used_at_ms, turns, total_cost_usd, cli_total_usd, resumable";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        caller: parse_text(row, 0, team_name)?,
        target: parse_text(row, 1, team_name)?,
        session_id: parse_text(row, 2, uuid)?,
        status: parse_text(row, 3, |text| {
            SessionStatus::parse(text).ok_or_else(|| format!("unknown session status '{text}'"))
        })?,
        created_at_ms: row.get(4)?,
        last_used_at_ms: row.get(5)?,
        turns: parse_count(row, 6)?,
        total_cost_usd: row.get(7)?,
        cli_total_usd: row.get(8)?,
        resumable: row.get(9)?,
    })
}

const MESSAGE_COLUMNS: &str = "id, caller, target, session_id, mode, text, state, answer, \
     is_error, error, cost_usd, usage, duration_ms, created_at_ms, started_at_ms, \
     finished_at_ms, transcript, truncated, parent_id";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let session_id: Option<String> = row.get(3)?;
    let usage: Option<String> = row.get(11)?;
    let duration_ms: Option<i64> = row.get(12)?;
    Ok(MessageRecord {
        id: parse_text(row, 0, message_id)?,
        caller: parse_text(row, 1, team_name)?,
        target: parse_text(row, 2, team_name)?,
        session_id: session_id
            .map(|text| uuid(&text).map_err(|message| conversion(3, message)))
            .transpose()?,
        mode: parse_text(row, 4, |text| {
            MessageMode::parse(text).ok_or_else(|| format!("unknown message mode '{text}'"))
        })?,
        text: row.get(5)?,
        state: parse_text(row, 6, |text| {
            MessageState::parse(text).ok_or_else(|| format!("unknown message state '{text}'"))
        })?,
        answer: row.get(7)?,
        is_error: row.get(8)?,
        error: row.get(9)?,
        cost_usd: row.get(10)?,
        usage: usage
            .map(|text| {
                serde_json::from_str(&text).map_err(|error| conversion(11, error.to_string()))
            })
            .transpose()?,
        duration_ms: duration_ms
            .map(|duration| {
                u64::try_from(duration)
                    .map_err(|_| conversion(12, format!("negative duration {duration}")))
            })
            .transpose()?,
        created_at_ms: row.get(13)?,
        started_at_ms: row.get(14)?,
        finished_at_ms: row.get(15)?,
        transcript: parse_text(row, 16, |text| {
            serde_json::from_str(text).map_err(|error| format!("unreadable transcript: {error}"))
        })?,
        truncated: row.get(17)?,
        parent_id: row
            .get::<_, Option<String>>(18)?
            .map(|text| message_id(&text).map_err(|error| conversion(18, error)))
            .transpose()?,
    })
}

/// A column error for a value that SQLite returned but Iris cannot read.
fn conversion(index: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, message.into())
}

/// Reads a text column through `parse`.
fn parse_text<T>(
    row: &Row<'_>,
    index: usize,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).map_err(|message| conversion(index, message))
}

/// Reads a count (an integer that is never negative).
fn parse_count(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let count: i64 = row.get(index)?;
    u64::try_from(count).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            Type::Integer,
            format!("negative count {count}").into(),
        )
    })
}

fn team_name(text: &str) -> Result<TeamName, String> {
    TeamName::from_str(text).map_err(|error| error.to_string())
}

fn uuid(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|error| format!("invalid id '{text}': {error}"))
}

fn message_id(text: &str) -> Result<MessageId, String> {
    uuid(text).map(MessageId)
}

// ------------------------------------------------------------------------------------------
// Values.

/// Counts a turn in its session: turns + 1, cost added, the CLI's cumulative total kept,
/// resumable, last used now. On a connection or inside a caller's transaction.
fn count_turn(connection: &Connection, path: &Path, turn: SessionTurn) -> Result<(), StoreError> {
    let cost_usd = finite(turn.cost_usd, "record_turn cost").unwrap_or(0.0);
    let cli_total_usd = turn
        .cli_total_usd
        .and_then(|total| finite(total, "record_turn CLI total"));
    let changed = connection
        .prepare_cached(
            "UPDATE sessions
             SET turns = turns + 1, total_cost_usd = total_cost_usd + ?2,
                 cli_total_usd = COALESCE(?3, cli_total_usd), resumable = 1,
                 last_used_at_ms = ?4
             WHERE session_id = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                turn.session_id.to_string(),
                cost_usd,
                cli_total_usd,
                now_ms()
            ])
        })
        .map_err(fail(path, "record_turn"))?;
    if changed == 0 {
        return Err(StoreError::SessionNotFound {
            session_id: turn.session_id,
        });
    }
    Ok(())
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// `value` if it is a finite number; otherwise `None`, logged (SQLite would store NaN as NULL).
fn finite(value: f64, what: &'static str) -> Option<f64> {
    if value.is_finite() {
        Some(value)
    } else {
        tracing::warn!(what, value, "ignoring a cost that is not a finite number");
        None
    }
}
