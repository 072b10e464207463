//! Tests of the store: every method, the state rules, limits, recovery, pruning, the released
//! schema fixtures and the faults (corrupt file, newer schema, lock, full disk).
//!
//! Each test opens its own in-memory database or a file in its own temporary directory.
//! Nothing waits for time to pass: old rows are made by backdating them with SQL, a lock is
//! held for the whole attempt, and the database is capped to make it full.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

use super::bounds::cut;
use super::db::{ABANDONED_ASK_ERROR, INTERRUPTED_ERROR, now_ms};
use super::schema::{APPLICATION_ID, MIGRATIONS};
use super::*;
use crate::agent::TranscriptEntry;

// ----------------------------------------------------------------------------------------------
// Helpers.

fn team(name: &str) -> TeamName {
    TeamName::new(name).expect("valid team name")
}

async fn memory() -> Store {
    Store::open(&DatabaseConfig::memory())
        .await
        .expect("open in-memory store")
}

/// A database file in a fresh temporary directory (in a subdirectory that does not exist yet).
struct FileDb {
    _dir: TempDir,
    config: DatabaseConfig,
}

impl FileDb {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DatabaseConfig::file(dir.path().join("data").join("iris.db"));
        Self { _dir: dir, config }
    }

    fn path(&self) -> &Path {
        &self.config.path
    }

    async fn open(&self) -> Store {
        Store::open(&self.config).await.expect("open file store")
    }

    /// Opens with a short busy timeout, so lock tests fail fast.
    async fn open_impatient(&self) -> Result<Store, StoreError> {
        let options = OpenOptions {
            busy_timeout: Duration::from_millis(20),
        };
        Store::open_with(&self.config, options).await
    }
}

fn new_message(caller: &str, target: &str, text: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        caller: team(caller),
        target: team(target),
        session_id: None,
        mode: MessageMode::Ask,
        text: text.to_owned(),
        parent: None,
    }
}

fn finish(state: MessageState) -> MessageFinish {
    MessageFinish {
        state,
        answer: None,
        is_error: false,
        error: None,
        cost_usd: None,
        usage: None,
        duration_ms: None,
        transcript: Vec::new().into(),
    }
}

async fn insert(store: &Store, caller: &str, target: &str, text: &str) -> MessageId {
    let message = new_message(caller, target, text);
    let id = message.id;
    store.insert_message(message).await.expect("insert message");
    id
}

async fn state_of(store: &Store, id: MessageId) -> MessageState {
    store
        .message(id)
        .await
        .expect("read message")
        .expect("message exists")
        .state
}

fn ids(records: &[MessageRecord]) -> Vec<MessageId> {
    records.iter().map(|record| record.id).collect()
}

/// Moves a final message's `finished_at_ms` back by `age`.
async fn backdate(store: &Store, id: MessageId, age: Duration) {
    let finished = now_ms() - i64::try_from(age.as_millis()).expect("small age");
    store
        .with_connection(move |connection| {
            connection.execute(
                "UPDATE messages SET finished_at_ms = ?2 WHERE id = ?1",
                params![id.to_string(), finished],
            )
        })
        .await
        .expect("backdate");
}

// ----------------------------------------------------------------------------------------------
// Values.

#[test]
fn store_handles_are_clone_send_and_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Store>();
    assert_traits::<StoreError>();
}

#[test]
fn message_ids_are_time_ordered_and_round_trip_through_text_and_json() {
    let first = MessageId::new();
    let second = MessageId::new();
    assert!(first < second);
    assert_eq!(first.0.get_version_num(), 7);
    let text = first.to_string();
    assert_eq!(text.parse::<MessageId>(), Ok(first));
    assert_eq!(serde_json::to_value(first).expect("serialize"), json!(text));
    let error = "not-an-id".parse::<MessageId>().expect_err("bad id");
    assert_eq!(error.text, "not-an-id");
    assert!(
        error
            .to_string()
            .starts_with("'not-an-id' is not a message id"),
        "{error}"
    );
}

#[test]
fn enums_are_stored_and_serialized_with_the_same_spelling() {
    for state in MessageState::ALL {
        assert_eq!(
            serde_json::to_value(state).expect("serialize"),
            json!(state.as_str())
        );
        assert_eq!(MessageState::parse(state.as_str()), Some(state));
    }
    let finals: Vec<_> = MessageState::ALL
        .into_iter()
        .filter(|state| state.is_final())
        .map(MessageState::as_str)
        .collect();
    assert_eq!(
        finals,
        [
            "completed",
            "failed",
            "cancelled",
            "timed_out",
            "interrupted"
        ]
    );
    for mode in [MessageMode::Ask, MessageMode::Tell, MessageMode::Quick] {
        assert_eq!(
            serde_json::to_value(mode).expect("mode"),
            json!(mode.as_str())
        );
    }
    for status in [
        SessionStatus::Active,
        SessionStatus::Rebooted,
        SessionStatus::Deleted,
    ] {
        assert_eq!(
            serde_json::to_value(status).expect("status"),
            json!(status.as_str())
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Opening and migrations.

#[tokio::test]
async fn a_new_database_gets_the_current_schema_and_iris_application_id() {
    let db = FileDb::new();
    let store = db.open().await;
    assert_eq!(store.path(), Some(db.path()));
    let (application_id, version, journal) = store
        .with_connection(|connection| {
            Ok((
                connection.query_row("PRAGMA application_id", [], |row| row.get::<_, i64>(0))?,
                connection.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))?,
                connection.query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))?,
            ))
        })
        .await
        .expect("pragmas");
    assert_eq!(application_id, APPLICATION_ID);
    assert_eq!(
        version,
        i64::try_from(MIGRATIONS.len()).expect("few migrations")
    );
    assert_eq!(journal, "wal");
    assert_eq!(memory().await.path(), None);
}

#[tokio::test]
async fn reopening_a_file_keeps_its_data() {
    let db = FileDb::new();
    let store = db.open().await;
    let session = Uuid::new_v4();
    store
        .create_session(&team("a"), &team("b"), session)
        .await
        .expect("create session");
    let id = insert(&store, "a", "b", "kept").await;
    store.close().await.expect("close");

    let store = db.open().await;
    let current = store
        .current_session(&team("a"), &team("b"))
        .await
        .expect("read session")
        .expect("session kept");
    assert_eq!(current.session_id, session);
    let message = store
        .message(id)
        .await
        .expect("read")
        .expect("message kept");
    assert_eq!(message.text, "kept");
}

#[tokio::test]
async fn closing_makes_every_clone_report_closed() {
    let store = memory().await;
    let clone = store.clone();
    store.close().await.expect("close");
    assert!(matches!(clone.sessions().await, Err(StoreError::Closed)));
    assert!(matches!(store.close().await, Err(StoreError::Closed)));
}

#[tokio::test]
async fn an_unusable_path_is_an_open_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("not-a-dir");
    fs::write(&blocker, "a file where a directory should be").expect("write");
    let config = DatabaseConfig::file(blocker.join("iris.db"));
    let error = Store::open(&config).await.expect_err("cannot open");
    match &error {
        StoreError::Open { path, .. } => assert_eq!(path, &config.path),
        other => panic!("expected Open, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains(&config.path.display().to_string())
    );

    // A directory where the file should be.
    let config = DatabaseConfig::file(dir.path().to_path_buf());
    let error = Store::open(&config).await.expect_err("a directory");
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
}

// ----------------------------------------------------------------------------------------------
// Sessions.

#[tokio::test]
async fn sessions_round_trip_through_their_whole_life() {
    let store = memory().await;
    let (a, b, c) = (team("a"), team("b"), team("c"));
    assert!(store.current_session(&a, &b).await.expect("read").is_none());

    let first = Uuid::new_v4();
    let created = store.create_session(&a, &b, first).await.expect("create");
    assert_eq!(created.session_id, first);
    assert_eq!(created.status, SessionStatus::Active);
    assert_eq!(created.turns, 0);
    assert!(created.total_cost_usd.abs() < f64::EPSILON);
    assert!(created.cli_total_usd.abs() < f64::EPSILON);
    assert!(!created.resumable);
    assert_eq!(created.created_at_ms, created.last_used_at_ms);

    store
        .record_turn(first, 0.25, Some(1.5))
        .await
        .expect("turn");
    store.record_turn(first, 0.5, None).await.expect("turn");
    let current = store
        .current_session(&a, &b)
        .await
        .expect("read")
        .expect("active");
    assert_eq!(current.turns, 2);
    assert!((current.total_cost_usd - 0.75).abs() < 1e-9);
    assert!(
        (current.cli_total_usd - 1.5).abs() < 1e-9,
        "kept when not given"
    );
    assert!(current.resumable);
    assert!(current.last_used_at_ms >= created.last_used_at_ms);

    store.mark_resumable(first, false).await.expect("mark");
    let current = store
        .current_session(&a, &b)
        .await
        .expect("read")
        .expect("active");
    assert!(!current.resumable);

    let other = Uuid::new_v4();
    store
        .create_session(&c, &a, other)
        .await
        .expect("create other pair");
    // Listed by caller, then target.
    let listed: Vec<_> = store
        .sessions()
        .await
        .expect("list")
        .into_iter()
        .map(|session| (session.caller.to_string(), session.target.to_string()))
        .collect();
    assert_eq!(
        listed,
        [("a".into(), "b".into()), ("c".to_owned(), "a".to_owned())]
    );

    store
        .retire_session(first, SessionStatus::Rebooted)
        .await
        .expect("retire");
    assert!(store.current_session(&a, &b).await.expect("read").is_none());
    // Retiring again changes nothing.
    store
        .retire_session(first, SessionStatus::Deleted)
        .await
        .expect("retire again");
    let second = Uuid::new_v4();
    store
        .create_session(&a, &b, second)
        .await
        .expect("new session");
    assert_eq!(store.sessions().await.expect("list").len(), 2);

    // The retired row is kept, with the status it was first retired with.
    let kept: String = store
        .with_connection(move |connection| {
            connection.query_row(
                "SELECT status FROM sessions WHERE session_id = ?1",
                [first.to_string()],
                |row| row.get(0),
            )
        })
        .await
        .expect("read retired");
    assert_eq!(kept, "rebooted");
    assert_eq!(store.stats().await.expect("stats").active_sessions, 2);
}

#[tokio::test]
async fn a_second_active_session_for_a_pair_is_rejected() {
    let store = memory().await;
    let (a, b) = (team("a"), team("b"));
    let first = Uuid::new_v4();
    store.create_session(&a, &b, first).await.expect("create");
    let error = store
        .create_session(&a, &b, Uuid::new_v4())
        .await
        .expect_err("second active session");
    match error {
        StoreError::ActiveSessionExists {
            caller,
            target,
            session_id,
        } => {
            assert_eq!((caller, target, session_id), (a.clone(), b.clone(), first));
        }
        other => panic!("expected ActiveSessionExists, got {other:?}"),
    }
    // The partial unique index enforces it even for SQL that skips the check.
    let raw = store
        .with_connection(|connection| {
            connection.execute(
                "INSERT INTO sessions (session_id, caller, target, status, created_at_ms, last_used_at_ms)
                 VALUES ('x', 'a', 'b', 'active', 0, 0)",
                [],
            )
        })
        .await
        .expect_err("unique index");
    assert!(raw.to_string().contains("UNIQUE"), "{raw}");
    // The reverse direction is another pair.
    store
        .create_session(&b, &a, Uuid::new_v4())
        .await
        .expect("reverse pair");
}

#[tokio::test]
async fn session_misuse_is_reported() {
    let store = memory().await;
    let unknown = Uuid::new_v4();
    assert!(matches!(
        store.record_turn(unknown, 1.0, None).await,
        Err(StoreError::SessionNotFound { session_id }) if session_id == unknown
    ));
    assert!(matches!(
        store.mark_resumable(unknown, true).await,
        Err(StoreError::SessionNotFound { .. })
    ));
    assert!(matches!(
        store.retire_session(unknown, SessionStatus::Deleted).await,
        Err(StoreError::SessionNotFound { .. })
    ));
    let session = Uuid::new_v4();
    store
        .create_session(&team("a"), &team("b"), session)
        .await
        .expect("create");
    assert!(matches!(
        store.retire_session(session, SessionStatus::Active).await,
        Err(StoreError::Invalid { .. })
    ));
    store
        .retire_session(session, SessionStatus::Deleted)
        .await
        .expect("retire");
    // A session id is never reused, even by another pair.
    assert!(matches!(
        store.create_session(&team("c"), &team("d"), session).await,
        Err(StoreError::Invalid { .. })
    ));
    // A cost that is not a number does not poison the total.
    let fresh = Uuid::new_v4();
    store
        .create_session(&team("a"), &team("b"), fresh)
        .await
        .expect("create");
    store
        .record_turn(fresh, f64::NAN, Some(f64::INFINITY))
        .await
        .expect("turn");
    let current = store
        .current_session(&team("a"), &team("b"))
        .await
        .expect("read")
        .expect("active");
    assert_eq!(current.turns, 1);
    assert!(current.total_cost_usd.abs() < f64::EPSILON);
}

// ----------------------------------------------------------------------------------------------
// Messages.

#[tokio::test]
async fn a_message_round_trips_every_field() {
    let store = memory().await;
    let session = Uuid::new_v4();
    let message = NewMessage {
        id: MessageId::new(),
        caller: team("front"),
        target: team("back"),
        session_id: Some(session),
        mode: MessageMode::Tell,
        text: "which endpoint? ✓".to_owned(),
        parent: None,
    };
    let id = message.id;
    let before = now_ms();
    store.insert_message(message).await.expect("insert");
    let queued = store.message(id).await.expect("read").expect("exists");
    assert_eq!(queued.id, id);
    assert_eq!(queued.caller, team("front"));
    assert_eq!(queued.target, team("back"));
    assert_eq!(queued.session_id, Some(session));
    assert_eq!(queued.mode, MessageMode::Tell);
    assert_eq!(queued.text, "which endpoint? ✓");
    assert_eq!(queued.state, MessageState::Queued);
    assert!(queued.created_at_ms >= before);
    assert_eq!((queued.started_at_ms, queued.finished_at_ms), (None, None));
    assert!(queued.answer.is_none() && queued.error.is_none() && queued.usage.is_none());
    assert!(queued.transcript.is_empty());
    assert!(!queued.truncated);

    let running_session = Uuid::new_v4();
    assert!(store.mark_running(id, running_session).await.expect("run"));
    let running = store.message(id).await.expect("read").expect("exists");
    assert_eq!(running.state, MessageState::Running);
    assert_eq!(running.session_id, Some(running_session));
    assert!(running.started_at_ms.is_some());

    let transcript = vec![
        TranscriptEntry::AssistantText {
            text: "looking".to_owned(),
        },
        TranscriptEntry::ToolUse {
            name: "Read".to_owned(),
            input: r#"{"file":"api.rs"}"#.to_owned(),
        },
        TranscriptEntry::ToolResult {
            content: "fn plan()".to_owned(),
            is_error: false,
        },
        TranscriptEntry::Permission {
            tool: "Bash".to_owned(),
            allowed: false,
            reason: Some("denied".to_owned()),
            by: Some(DecidedBy::Rule),
            who: Some("rule `Bash` in permissions.deny".to_owned()),
            approval: None,
        },
    ];
    let usage = json!({"input_tokens": 12, "output_tokens": 34});
    store
        .finish_message(
            id,
            MessageFinish {
                state: MessageState::Completed,
                answer: Some("GET /plan".to_owned()),
                is_error: true,
                error: Some("partial".to_owned()),
                cost_usd: Some(0.0123),
                usage: Some(usage.clone()),
                duration_ms: Some(4321),
                transcript: transcript.clone().into(),
            },
        )
        .await
        .expect("finish");
    let done = store.message(id).await.expect("read").expect("exists");
    assert_eq!(done.state, MessageState::Completed);
    assert_eq!(done.answer.as_deref(), Some("GET /plan"));
    assert!(done.is_error);
    assert_eq!(done.error.as_deref(), Some("partial"));
    assert_eq!(done.cost_usd, Some(0.0123));
    assert_eq!(done.usage, Some(usage));
    assert_eq!(done.duration_ms, Some(4321));
    assert_eq!(done.transcript, transcript);
    assert!(done.finished_at_ms >= done.started_at_ms);
    assert!(!done.truncated);
    // The record serializes with the stored spellings.
    let value = serde_json::to_value(&done).expect("serialize");
    assert_eq!(value["state"], "completed");
    assert_eq!(value["mode"], "tell");
    assert_eq!(value["id"], id.to_string());
    assert_eq!(value["transcript"][1]["kind"], "tool_use");

    assert!(
        store
            .message(MessageId::new())
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn mark_running_only_moves_queued_messages() {
    let store = memory().await;
    let id = insert(&store, "a", "b", "hi").await;
    let session = Uuid::new_v4();
    assert!(store.mark_running(id, session).await.expect("run"));
    let started = store.message(id).await.expect("read").expect("exists");
    // Already running: no change, not even the session or start time.
    assert!(!store.mark_running(id, Uuid::new_v4()).await.expect("again"));
    let after = store.message(id).await.expect("read").expect("exists");
    assert_eq!(after.session_id, Some(session));
    assert_eq!(after.started_at_ms, started.started_at_ms);
    store
        .finish_message(id, finish(MessageState::Completed))
        .await
        .expect("finish");
    assert!(!store.mark_running(id, session).await.expect("final"));
    assert_eq!(state_of(&store, id).await, MessageState::Completed);
    assert!(
        !store
            .mark_running(MessageId::new(), session)
            .await
            .expect("unknown")
    );
}

#[tokio::test]
async fn finish_never_rewrites_a_final_message() {
    let store = memory().await;
    let id = insert(&store, "a", "b", "hi").await;
    store.mark_running(id, Uuid::new_v4()).await.expect("run");
    let mut first = finish(MessageState::TimedOut);
    first.error = Some("silent for 120s".to_owned());
    store.finish_message(id, first).await.expect("finish");
    let finished = store.message(id).await.expect("read").expect("exists");

    let mut second = finish(MessageState::Completed);
    second.answer = Some("late answer".to_owned());
    store.finish_message(id, second).await.expect("ignored, Ok");
    let after = store.message(id).await.expect("read").expect("exists");
    assert_eq!(after.state, MessageState::TimedOut);
    assert_eq!(after.answer, None);
    assert_eq!(after.error.as_deref(), Some("silent for 120s"));
    assert_eq!(after.finished_at_ms, finished.finished_at_ms);

    // A queued message can end without running (it failed or Iris shut down).
    let queued = insert(&store, "a", "b", "never ran").await;
    store
        .finish_message(queued, finish(MessageState::Failed))
        .await
        .expect("finish queued");
    let failed = store.message(queued).await.expect("read").expect("exists");
    assert_eq!(failed.state, MessageState::Failed);
    assert!(failed.started_at_ms.is_none() && failed.finished_at_ms.is_some());

    // Misuse.
    let other = insert(&store, "a", "b", "x").await;
    assert!(matches!(
        store
            .finish_message(other, finish(MessageState::Running))
            .await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(state_of(&store, other).await, MessageState::Queued);
    let unknown = MessageId::new();
    assert!(matches!(
        store.finish_message(unknown, finish(MessageState::Failed)).await,
        Err(StoreError::MessageNotFound { id }) if id == unknown
    ));
}

#[tokio::test]
async fn cancel_only_moves_queued_messages() {
    let store = memory().await;
    let queued = insert(&store, "a", "b", "q").await;
    assert!(store.cancel_queued(queued).await.expect("cancel"));
    let cancelled = store.message(queued).await.expect("read").expect("exists");
    assert_eq!(cancelled.state, MessageState::Cancelled);
    assert!(cancelled.finished_at_ms.is_some());
    assert!(!store.cancel_queued(queued).await.expect("again"));

    let running = insert(&store, "a", "b", "r").await;
    store
        .mark_running(running, Uuid::new_v4())
        .await
        .expect("run");
    assert!(!store.cancel_queued(running).await.expect("running"));
    assert_eq!(state_of(&store, running).await, MessageState::Running);

    let done = insert(&store, "a", "b", "d").await;
    store
        .finish_message(done, finish(MessageState::Completed))
        .await
        .expect("finish");
    assert!(!store.cancel_queued(done).await.expect("final"));
    assert_eq!(state_of(&store, done).await, MessageState::Completed);
    assert!(
        !store
            .cancel_queued(MessageId::new())
            .await
            .expect("unknown")
    );
}

#[tokio::test]
async fn a_reused_message_id_is_rejected() {
    let store = memory().await;
    let message = new_message("a", "b", "first");
    let id = message.id;
    store.insert_message(message.clone()).await.expect("insert");
    let mut again = message;
    again.text = "second".to_owned();
    assert!(matches!(
        store.insert_message(again).await,
        Err(StoreError::Invalid { .. })
    ));
    let kept = store.message(id).await.expect("read").expect("exists");
    assert_eq!(kept.text, "first");
}

#[tokio::test]
async fn pair_messages_page_newest_first() {
    let store = memory().await;
    let mut pair = Vec::new();
    for index in 0..5 {
        pair.push(insert(&store, "a", "b", &format!("m{index}")).await);
        // Other pairs, including the reverse direction, interleaved.
        insert(&store, "b", "a", "reverse").await;
        insert(&store, "a", "c", "other").await;
    }
    let (a, b) = (team("a"), team("b"));
    let first = store
        .pair_messages(&a, &b, Page::first(2))
        .await
        .expect("page 1");
    assert_eq!(ids(&first), [pair[4], pair[3]]);
    let second = store
        .pair_messages(
            &a,
            &b,
            Page {
                limit: 2,
                before: Some(pair[3]),
            },
        )
        .await
        .expect("page 2");
    assert_eq!(ids(&second), [pair[2], pair[1]]);
    let last = store
        .pair_messages(
            &a,
            &b,
            Page {
                limit: 2,
                before: Some(pair[1]),
            },
        )
        .await
        .expect("page 3");
    assert_eq!(ids(&last), [pair[0]]);
    let everything = store
        .pair_messages(&a, &b, Page::first(100))
        .await
        .expect("all");
    assert_eq!(everything.len(), 5);
    assert!(
        store
            .pair_messages(&a, &b, Page::first(0))
            .await
            .expect("none")
            .is_empty()
    );
    assert!(
        store
            .pair_messages(&team("x"), &b, Page::first(10))
            .await
            .expect("unknown pair")
            .is_empty()
    );
}

#[tokio::test]
async fn recover_interrupts_running_and_returns_queued_oldest_first() {
    let store = memory().await;
    let running = insert(&store, "a", "b", "running").await;
    let queued_first = store_told(&store, "a", "b", "queued 1").await;
    let abandoned = insert(&store, "a", "b", "an ask nobody waits for any more").await;
    let queued_second = store_told(&store, "c", "b", "queued 2").await;
    let done = insert(&store, "a", "b", "done").await;
    let cancelled = insert(&store, "a", "b", "cancelled").await;
    let other_running = insert(&store, "c", "d", "running 2").await;
    store
        .mark_running(running, Uuid::new_v4())
        .await
        .expect("run");
    store
        .mark_running(other_running, Uuid::new_v4())
        .await
        .expect("run");
    store.mark_running(done, Uuid::new_v4()).await.expect("run");
    let mut completed = finish(MessageState::Completed);
    completed.answer = Some("answer".to_owned());
    store.finish_message(done, completed).await.expect("finish");
    store.cancel_queued(cancelled).await.expect("cancel");

    let recovery = store.recover().await.expect("recover");
    assert_eq!(recovery.interrupted, [running, other_running]);
    assert_eq!(ids(&recovery.queued), [queued_first, queued_second]);
    assert!(
        recovery
            .queued
            .iter()
            .all(|message| message.state == MessageState::Queued)
    );
    for id in [running, other_running] {
        let message = store.message(id).await.expect("read").expect("exists");
        assert_eq!(message.state, MessageState::Interrupted);
        assert_eq!(message.error.as_deref(), Some(INTERRUPTED_ERROR));
        assert!(message.finished_at_ms.is_some());
    }
    let untouched = store.message(done).await.expect("read").expect("exists");
    assert_eq!(untouched.state, MessageState::Completed);
    assert_eq!(untouched.answer.as_deref(), Some("answer"));
    assert_eq!(untouched.error, None);
    assert_eq!(state_of(&store, cancelled).await, MessageState::Cancelled);
    assert_eq!(state_of(&store, queued_first).await, MessageState::Queued);
    // A queued ask's sender is gone with the Iris that stopped: it fails, undelivered.
    let gone = store
        .message(abandoned)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(gone.state, MessageState::Failed);
    assert!(gone.is_error);
    assert_eq!(gone.error.as_deref(), Some(ABANDONED_ASK_ERROR));

    // Nothing left to interrupt the second time.
    let again = store.recover().await.expect("recover again");
    assert!(again.interrupted.is_empty());
    assert_eq!(again.queued.len(), 2);
}

#[tokio::test]
async fn prune_respects_retention_and_never_deletes_queued_or_running() {
    let config = DatabaseConfig {
        retention: Duration::from_secs(24 * 3600),
        ..DatabaseConfig::memory()
    };
    let store = Store::open(&config).await.expect("open");
    let day = Duration::from_secs(24 * 3600);

    let old_done = insert(&store, "a", "b", "old").await;
    store
        .finish_message(old_done, finish(MessageState::Completed))
        .await
        .expect("finish");
    backdate(&store, old_done, 2 * day).await;

    let old_failed = insert(&store, "a", "b", "old failed").await;
    store
        .finish_message(old_failed, finish(MessageState::Failed))
        .await
        .expect("finish");
    backdate(&store, old_failed, 3 * day).await;

    let recent_done = insert(&store, "a", "b", "recent").await;
    store
        .finish_message(recent_done, finish(MessageState::Completed))
        .await
        .expect("finish");
    backdate(&store, recent_done, Duration::from_secs(3600)).await;

    // Queued and running messages with an old timestamp (which a bug could give them) stay.
    let queued = insert(&store, "a", "b", "queued").await;
    backdate(&store, queued, 10 * day).await;
    let running = insert(&store, "a", "b", "running").await;
    store
        .mark_running(running, Uuid::new_v4())
        .await
        .expect("run");
    backdate(&store, running, 10 * day).await;

    assert_eq!(store.prune().await.expect("prune"), 2);
    for gone in [old_done, old_failed] {
        assert!(store.message(gone).await.expect("read").is_none());
    }
    for kept in [recent_done, queued, running] {
        assert!(store.message(kept).await.expect("read").is_some());
    }
    assert_eq!(store.prune().await.expect("prune again"), 0);
}

// ----------------------------------------------------------------------------------------------
// Limits.

#[test]
fn cut_keeps_a_char_boundary_and_states_what_was_cut() {
    assert_eq!(cut("short", 1024), None);
    let long = "é".repeat(1000); // 2000 bytes
    let shorter = cut(&long, 1024).expect("cut");
    assert!(shorter.len() <= 1024, "{}", shorter.len());
    let (kept, marker) = shorter.split_once('…').expect("marker");
    assert!(kept.chars().all(|ch| ch == 'é'));
    assert_eq!(marker, format!(" [cut: {} bytes]", 2000 - kept.len()));
    // Exactly at the limit: untouched.
    assert_eq!(cut(&"x".repeat(1024), 1024), None);
}

#[tokio::test]
async fn stored_sizes_are_bounded_and_marked_truncated() {
    let config = DatabaseConfig {
        max_text_bytes: 1024,
        max_transcript_entries: 2,
        ..DatabaseConfig::memory()
    };
    let store = Store::open(&config).await.expect("open");
    let long = "x".repeat(5000);
    let mut message = new_message("a", "b", &long);
    message.text.push('🦀');
    let id = message.id;
    store.insert_message(message).await.expect("insert");
    let queued = store.message(id).await.expect("read").expect("exists");
    assert!(queued.truncated);
    assert!(queued.text.len() <= 1024);
    assert!(queued.text.ends_with(&format!(
        "[cut: {} bytes]",
        5004 - queued.text.find('…').expect("marker")
    )));

    let entries: Vec<_> = (0..5)
        .map(|index| TranscriptEntry::AssistantText {
            text: format!("entry {index}"),
        })
        .collect();
    store
        .finish_message(
            id,
            MessageFinish {
                answer: Some(long.clone()),
                error: Some(long.clone()),
                usage: Some(json!({ "blob": long })),
                transcript: entries.clone().into(),
                ..finish(MessageState::Completed)
            },
        )
        .await
        .expect("finish");
    let done = store.message(id).await.expect("read").expect("exists");
    assert!(done.truncated);
    assert!(
        done.answer
            .as_deref()
            .is_some_and(|answer| answer.len() <= 1024 && answer.contains("[cut: "))
    );
    assert!(
        done.error
            .as_deref()
            .is_some_and(|error| error.len() <= 1024)
    );
    assert_eq!(done.usage, None, "usage too large to keep");
    assert_eq!(done.transcript, entries[..2]);

    // Within the limits nothing is marked.
    let small = insert(&store, "a", "b", "small").await;
    let mut small_finish = finish(MessageState::Completed);
    small_finish.transcript = entries[..2].into();
    small_finish.answer = Some("fine".to_owned());
    store
        .finish_message(small, small_finish)
        .await
        .expect("finish");
    assert!(
        !store
            .message(small)
            .await
            .expect("read")
            .expect("exists")
            .truncated
    );

    // A long transcript text is cut too.
    let wide = insert(&store, "a", "b", "wide").await;
    let mut wide_finish = finish(MessageState::Completed);
    wide_finish.transcript = vec![TranscriptEntry::ToolResult {
        content: long,
        is_error: false,
    }]
    .into();
    store
        .finish_message(wide, wide_finish)
        .await
        .expect("finish");
    let record = store.message(wide).await.expect("read").expect("exists");
    assert!(record.truncated);
    match &record.transcript[..] {
        [TranscriptEntry::ToolResult { content, .. }] => assert!(content.len() <= 1024),
        other => panic!("unexpected transcript {other:?}"),
    }
}

// ----------------------------------------------------------------------------------------------
// Stats and agents.

#[tokio::test]
async fn stats_count_states_sessions_and_bytes() {
    let store = memory().await;
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.messages_by_state.len(), MessageState::ALL.len());
    assert!(stats.messages_by_state.values().all(|count| *count == 0));
    assert_eq!((stats.active_sessions, stats.file_bytes), (0, 0));

    insert(&store, "a", "b", "1").await;
    insert(&store, "a", "b", "2").await;
    let running = insert(&store, "a", "b", "3").await;
    store
        .mark_running(running, Uuid::new_v4())
        .await
        .expect("run");
    store
        .create_session(&team("a"), &team("b"), Uuid::new_v4())
        .await
        .expect("session");
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.messages_by_state["queued"], 2);
    assert_eq!(stats.messages_by_state["running"], 1);
    assert_eq!(stats.messages_by_state["completed"], 0);
    assert_eq!(stats.active_sessions, 1);

    let db = FileDb::new();
    let file_store = db.open().await;
    insert(&file_store, "a", "b", "on disk").await;
    assert!(file_store.stats().await.expect("stats").file_bytes > 0);
}

#[tokio::test]
async fn agents_are_recorded_until_they_stop() {
    let store = memory().await;
    let first = AgentRecord {
        pgid: 4242,
        agent_key: "a->b#1".to_owned(),
        caller: team("a"),
        target: team("b"),
        started_at_ms: 1000,
    };
    let second = AgentRecord {
        pgid: 77,
        agent_key: "c->d#1".to_owned(),
        caller: team("c"),
        target: team("d"),
        started_at_ms: 2000,
    };
    store.agent_started(first.clone()).await.expect("start");
    store.agent_started(second.clone()).await.expect("start");
    assert_eq!(
        store.agents().await.expect("list"),
        [first.clone(), second.clone()]
    );
    // A reused pgid replaces the stale record.
    let reused = AgentRecord {
        agent_key: "e->f#2".to_owned(),
        started_at_ms: 3000,
        ..first
    };
    store.agent_started(reused.clone()).await.expect("reuse");
    assert_eq!(store.agents().await.expect("list"), [second, reused]);
    store.agent_stopped(77).await.expect("stop");
    store.agent_stopped(77).await.expect("stop twice");
    store.agent_stopped(4242).await.expect("stop");
    assert!(store.agents().await.expect("list").is_empty());
}

// ----------------------------------------------------------------------------------------------
// Released schemas.

/// Every released schema, with its fixture under `tests/fixtures/`.
const RELEASED: &[(&str, i64)] = &[
    ("store-v1.db", 1),
    ("store-v2.db", 2),
    ("store-v3.db", 3),
    ("store-v4.db", 4),
    ("store-v5.db", 5),
];

/// Applies migration `version` (1-based) to the database at `path` as the code of that
/// release did, with its version bump, then `rows`, in one transaction.
fn apply_migration(path: &Path, version: i64, rows: &str) -> rusqlite::Result<()> {
    let mut connection = Connection::open(path)?;
    let transaction = connection.transaction()?;
    let index = usize::try_from(version - 1).expect("a migration number");
    transaction.execute_batch(MIGRATIONS[index])?;
    transaction.pragma_update(None, "user_version", version)?;
    transaction.execute_batch(rows)?;
    transaction.commit()?;
    connection.close().map_err(|(_, error)| error)
}

/// Writes a database with `write` into a temp dir (returned, to be kept while the file is
/// used), and over the checked-in fixture `name` when `IRIS_WRITE_STORE_FIXTURE` is set.
fn generate_fixture(
    name: &str,
    write: fn(&Path) -> rusqlite::Result<()>,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = dir.path().join(name);
    write(&generated).unwrap_or_else(|error| panic!("write {name}: {error}"));
    if std::env::var_os("IRIS_WRITE_STORE_FIXTURE").is_some() {
        fs::create_dir_all(fixture("")).expect("fixture dir");
        fs::copy(&generated, fixture(name)).expect("write fixture");
    }
    (dir, generated)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The session ids and message ids written into the v1 fixture.
const V1_ACTIVE_SESSION: &str = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";
const V1_REBOOTED_SESSION: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const V1_COMPLETED: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const V1_RUNNING: &str = "01890a5d-ac97-774b-bcce-b302099a8058";
const V1_QUEUED: &str = "01890a5d-ac98-774b-bcce-b302099a8059";

/// Writes a schema-1 database with a few rows, by hand-written SQL against migration 1 only,
/// so that it stays a v1 file however the schema moves on.
fn write_v1_database(path: &Path) -> rusqlite::Result<()> {
    apply_migration(
        path,
        1,
        &format!(
            r#"
INSERT INTO sessions VALUES ('{V1_ACTIVE_SESSION}', 'frontend', 'backend', 'active',
    1700000000000, 1700000500000, 3, 0.42, 0.5, 1);
INSERT INTO sessions VALUES ('{V1_REBOOTED_SESSION}', 'frontend', 'backend', 'rebooted',
    1690000000000, 1690000100000, 1, 0.1, 0.1, 1);
INSERT INTO messages VALUES ('{V1_COMPLETED}', 'frontend', 'backend', '{V1_ACTIVE_SESSION}',
    'ask', 'Which endpoint returns the plan?', 'completed', 'GET /plan', 0, NULL, 0.14,
    '{{"input_tokens":10,"output_tokens":5}}', 2500, 1700000100000, 1700000100010,
    1700000102510, '[{{"kind":"assistant_text","text":"GET /plan"}}]', 0);
INSERT INTO messages (id, caller, target, session_id, mode, text, state, created_at_ms,
    started_at_ms)
    VALUES ('{V1_RUNNING}', 'frontend', 'backend', '{V1_ACTIVE_SESSION}', 'tell', 'Deploy',
    'running', 1700000200000, 1700000200010);
INSERT INTO messages (id, caller, target, mode, text, state, created_at_ms, truncated)
    VALUES ('{V1_QUEUED}', 'backend', 'frontend', 'quick', 'Status?', 'queued',
    1700000300000, 0);
INSERT INTO agents VALUES (31337, 'frontend->backend#1', 'frontend', 'backend', 1700000000001);
"#
        ),
    )
}

/// Set `IRIS_WRITE_STORE_FIXTURE=1` to (re)write `tests/fixtures/store-v1.db`. Otherwise this
/// checks that the generator still produces a database that opens.
#[tokio::test]
async fn v1_fixture_generator() {
    let (_dir, generated) = generate_fixture("store-v1.db", write_v1_database);
    let store = Store::open(&DatabaseConfig::file(generated))
        .await
        .expect("generated v1 database opens");
    // The same rows as the checked-in fixture.
    check_v1_rows(&store).await;
}

/// The v1 fixture's rows in a schema-2 database: migration 2 applied by hand-written SQL.
fn write_v2_database(path: &Path) -> rusqlite::Result<()> {
    write_v1_database(path)?;
    apply_migration(path, 2, "")
}

/// Set `IRIS_WRITE_STORE_FIXTURE=1` to (re)write `tests/fixtures/store-v2.db`. Otherwise this
/// checks that the generator still produces a database that opens.
#[tokio::test]
async fn v2_fixture_generator() {
    let (_dir, generated) = generate_fixture("store-v2.db", write_v2_database);
    let store = Store::open(&DatabaseConfig::file(generated))
        .await
        .expect("generated v2 database opens");
    check_v1_rows(&store).await;
}

/// The v2 rows plus a decided and a pending approval and an allow-always rule, in a
/// schema-3 database: migration 3 applied by hand-written SQL.
fn write_v3_database(path: &Path) -> rusqlite::Result<()> {
    write_v2_database(path)?;
    apply_migration(
        path,
        3,
        &format!(
            r#"
INSERT INTO approvals VALUES ('{V3_DECIDED}', '{V1_COMPLETED}', 'frontend', 'backend', 'Bash',
    '{{"command":"cargo test"}}', '[]', 1700000100100, 1700000100200, 'allow', 'rule',
    'rule `Bash(cargo test:*)` in permissions.allow', NULL);
INSERT INTO approvals (id, message_id, caller, target, tool, input, suggestions, created_at_ms)
    VALUES ('{V3_PENDING}', '{V1_RUNNING}', 'frontend', 'backend', 'Edit',
    '{{"file_path":"/srv/api/src/main.rs"}}', '[]', 1700000200100);
INSERT INTO approval_rules VALUES ('{V3_RULE}', 'frontend', 'backend', 'Bash', 'Bash(ls:*)',
    NULL, '{V3_DECIDED}', 1700000100300);
"#
        ),
    )
}

const V3_DECIDED: &str = "0f0e0d0c0b0a09080706050403020100";
const V3_PENDING: &str = "00112233445566778899aabbccddeeff";
const V3_RULE: &str = "ffeeddccbbaa99887766554433221100";

/// Set `IRIS_WRITE_STORE_FIXTURE=1` to (re)write `tests/fixtures/store-v3.db`. Otherwise this
/// checks that the generator still produces a database that opens, and that recovery expires
/// the pending approval.
#[tokio::test]
async fn v3_fixture_generator() {
    let (_dir, generated) = generate_fixture("store-v3.db", write_v3_database);
    let store = Store::open(&DatabaseConfig::file(generated))
        .await
        .expect("generated v3 database opens");
    check_v1_rows(&store).await;
    let rules = store.pair_rules().await.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].rule.as_deref(), Some("Bash(ls:*)"));
    // Recovery (run by `check_v1_rows`) expired the approval that was pending.
    let pending = store
        .approval(V3_PENDING.to_owned())
        .await
        .expect("read")
        .expect("pending approval");
    assert_eq!(pending.decision, Some(Decision::Expired));
    assert_eq!(pending.decided_by, Some(DecidedBy::Restart));
}

/// The v3 rows plus a message sent during another's turn, in a schema-4 database.
fn write_v4_database(path: &Path) -> rusqlite::Result<()> {
    write_v3_database(path)?;
    apply_migration(
        path,
        4,
        &format!(
            r#"
INSERT INTO messages (id, caller, target, mode, text, state, created_at_ms, truncated,
    parent_id)
    VALUES ('{V4_CHILD}', 'backend', 'infra', 'ask', 'Is the queue up?', 'completed',
    1700000100050, 0, '{V1_COMPLETED}');
"#
        ),
    )
}

const V4_CHILD: &str = "01890a5d-ac99-774b-bcce-b302099a805a";

/// Set `IRIS_WRITE_STORE_FIXTURE=1` to (re)write `tests/fixtures/store-v4.db`. Otherwise this
/// checks that the generator still produces a database that opens, with the parent kept.
#[tokio::test]
async fn v4_fixture_generator() {
    let (_dir, generated) = generate_fixture("store-v4.db", write_v4_database);
    let store = Store::open(&DatabaseConfig::file(generated))
        .await
        .expect("generated v4 database opens");
    check_v1_rows(&store).await;
    let child = store
        .message(V4_CHILD.parse().expect("id"))
        .await
        .expect("read")
        .expect("child");
    assert_eq!(child.parent_id, Some(V1_COMPLETED.parse().expect("id")));
}

/// The v4 rows in a schema-5 database (the tables rebuilt by the migration).
fn write_v5_database(path: &Path) -> rusqlite::Result<()> {
    write_v4_database(path)?;
    apply_migration(path, 5, "")
}

/// Set `IRIS_WRITE_STORE_FIXTURE=1` to (re)write `tests/fixtures/store-v5.db`. Otherwise this
/// checks that the migration keeps every row and constraint.
#[tokio::test]
async fn v5_fixture_generator() {
    let (_dir, generated) = generate_fixture("store-v5.db", write_v5_database);
    {
        let connection = Connection::open(&generated).expect("open");
        let count = |table: &str| -> i64 {
            connection
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .expect("count")
        };
        assert_eq!((count("messages"), count("sessions")), (4, 2));
        let indexes: Vec<String> = connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .expect("indexes");
        assert_eq!(
            indexes,
            [
                "approval_rules_pair",
                "approvals_decided",
                "approvals_message",
                "approvals_pending",
                "messages_finished",
                "messages_pair",
                "sessions_active_pair"
            ]
        );
        // The constraints still hold.
        for bad in [
            "UPDATE messages SET state = 'lost'",
            "UPDATE messages SET mode = 'shout'",
            "UPDATE sessions SET status = 'gone'",
            "UPDATE messages SET is_error = 2",
        ] {
            let error = connection.execute(bad, []).expect_err(bad);
            assert!(
                error.to_string().contains("CHECK constraint failed"),
                "{bad}: {error}"
            );
        }
    }
    let store = Store::open(&DatabaseConfig::file(generated))
        .await
        .expect("generated v5 database opens");
    check_v1_rows(&store).await;
    let child = store
        .message(V4_CHILD.parse().expect("id"))
        .await
        .expect("read")
        .expect("child");
    assert_eq!(child.parent_id, Some(V1_COMPLETED.parse().expect("id")));
}

/// What a turn writes (insert, running, finish, the session's count) and a new session run
/// without a temporary b-tree: SQLite builds one for `x IN (three or more values)` in a
/// CHECK, or for `RETURNING`, at every execution.
#[test]
fn a_turns_statements_build_no_temporary_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("iris.db");
    let connection = Connection::open(&path).expect("open");
    for migration in MIGRATIONS {
        connection.execute_batch(migration).expect("migrate");
    }
    let source = include_str!("db.rs");
    let hot = [
        "INSERT INTO messages (id, caller, target, session_id, mode, text, state,",
        "SELECT mode FROM messages WHERE id = ?1 AND state = 'queued'",
        "UPDATE messages SET state = 'running', started_at_ms = ?3, session_id = ?2",
        "UPDATE messages\n                 SET state = ?2, answer = ?3",
        "UPDATE sessions\n             SET turns = turns + 1",
        "INSERT INTO sessions (session_id, caller, target, status, created_at_ms,",
    ];
    for start in hot {
        let at = source
            .find(start)
            .unwrap_or_else(|| panic!("statement not found in db.rs: {start}"));
        let end = at + source[at..].find('"').expect("end of the statement");
        let sql = &source[at..end];
        let mut explain = connection
            .prepare(&format!("EXPLAIN {sql}"))
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        let parameters = explain.parameter_count();
        let opcodes: Vec<String> = explain
            .query_map(
                rusqlite::params_from_iter(std::iter::repeat_n(rusqlite::types::Null, parameters)),
                |row| row.get(1),
            )
            .and_then(Iterator::collect)
            .expect("explain");
        assert!(
            !opcodes.iter().any(|opcode| opcode == "OpenEphemeral"),
            "{sql}: {opcodes:?}"
        );
    }
}

#[tokio::test]
async fn approvals_are_decided_once_listed_and_pruned_with_their_age() {
    let store = memory().await;
    let message = MessageId::new();
    let record = |id: &str, tool: &str| ApprovalRecord {
        id: id.to_owned(),
        message_id: Some(message),
        caller: team("web"),
        target: team("api"),
        tool: tool.to_owned(),
        input: json!({"command": "rm -rf build"}),
        suggestions: json!([{"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "rm:*"}], "behavior": "allow"}]),
        created_at_ms: now_ms(),
        decided_at_ms: None,
        decision: None,
        decided_by: None,
        who: None,
        reason: None,
    };
    store
        .insert_approval(record("a1", "Bash"))
        .await
        .expect("insert");
    store
        .insert_approval(record("a2", "Edit"))
        .await
        .expect("insert");
    let pending = store
        .approvals(ApprovalQuery {
            pending_only: true,
            ..ApprovalQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].suggestions, record("a1", "Bash").suggestions);
    let decision = ApprovalDecision {
        decision: Decision::Deny,
        decided_by: DecidedBy::Person,
        who: Some("a person through the iris command".to_owned()),
        reason: Some("not on main".to_owned()),
    };
    let decided = store
        .decide_approval("a1".to_owned(), decision.clone())
        .await
        .expect("decide")
        .expect("was pending");
    assert_eq!(decided.decision, Some(Decision::Deny));
    assert_eq!(decided.reason.as_deref(), Some("not on main"));
    assert!(decided.decided_at_ms.is_some());
    // The first decision wins.
    assert_eq!(
        store
            .decide_approval("a1".to_owned(), decision)
            .await
            .expect("decide again"),
        None
    );
    let of_message = store
        .approvals(ApprovalQuery {
            message: Some(message),
            ..ApprovalQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(of_message.len(), 2);
    // A restart expires what still waits.
    let recovered = store.recover().await.expect("recover");
    assert_eq!(recovered.expired_approvals, 1);
    let a2 = store
        .approval("a2".to_owned())
        .await
        .expect("read")
        .expect("a2");
    assert_eq!(a2.decision, Some(Decision::Expired));
    // Pruned once older than the retention.
    store
        .with_connection(|connection| {
            connection.execute("UPDATE approvals SET decided_at_ms = 1", [])
        })
        .await
        .expect("backdate");
    store.prune().await.expect("prune");
    assert!(
        store
            .approval("a1".to_owned())
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn allow_always_rules_are_stored_and_forgotten() {
    let store = memory().await;
    let rule = PairRuleRecord {
        id: "r1".to_owned(),
        caller: team("web"),
        target: team("api"),
        tool: "Write".to_owned(),
        rule: None,
        input: Some(json!({"file_path": "/tmp/x", "content": "y"})),
        approval_id: Some("a1".to_owned()),
        created_at_ms: now_ms(),
    };
    store.insert_pair_rule(rule.clone()).await.expect("insert");
    assert_eq!(store.pair_rules().await.expect("list"), vec![rule]);
    assert!(
        store
            .forget_pair_rule("r1".to_owned())
            .await
            .expect("forget")
    );
    assert!(
        !store
            .forget_pair_rule("r1".to_owned())
            .await
            .expect("forget again")
    );
    assert!(store.pair_rules().await.expect("list").is_empty());
}

#[tokio::test]
async fn every_released_schema_still_opens() {
    for (name, version) in RELEASED {
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = dir.path().join(name);
        fs::copy(fixture(name), &copy)
            .unwrap_or_else(|error| panic!("copy fixture {name}: {error}"));
        let found: i64 = Connection::open(&copy)
            .and_then(|connection| {
                connection.query_row("PRAGMA user_version", [], |row| row.get(0))
            })
            .expect("fixture version");
        assert_eq!(found, *version, "{name}");
        let store = Store::open(&DatabaseConfig::file(copy))
            .await
            .unwrap_or_else(|error| panic!("{name} does not open: {error}"));
        check_v1_rows(&store).await;
    }
}

/// The rows of the v1 fixture, read with the current code.
async fn check_v1_rows(store: &Store) {
    let (frontend, backend) = (team("frontend"), team("backend"));
    let sessions = store.sessions().await.expect("sessions");
    assert_eq!(sessions.len(), 1);
    let session = &sessions[0];
    assert_eq!(session.session_id.to_string(), V1_ACTIVE_SESSION);
    assert_eq!(
        (session.caller.as_str(), session.target.as_str()),
        ("frontend", "backend")
    );
    assert_eq!(session.turns, 3);
    assert!((session.total_cost_usd - 0.42).abs() < 1e-9);
    assert!(session.resumable);
    assert_eq!(session.created_at_ms, 1_700_000_000_000);

    let completed_id: MessageId = V1_COMPLETED.parse().expect("id");
    let completed = store
        .message(completed_id)
        .await
        .expect("read")
        .expect("completed message");
    assert_eq!(completed.state, MessageState::Completed);
    assert_eq!(completed.mode, MessageMode::Ask);
    assert_eq!(completed.answer.as_deref(), Some("GET /plan"));
    assert_eq!(
        completed.usage,
        Some(json!({"input_tokens": 10, "output_tokens": 5}))
    );
    assert_eq!(completed.duration_ms, Some(2500));
    assert_eq!(
        completed.transcript,
        [TranscriptEntry::AssistantText {
            text: "GET /plan".to_owned()
        }]
    );
    let pair = store
        .pair_messages(&frontend, &backend, Page::first(10))
        .await
        .expect("pair");
    assert_eq!(ids(&pair), [V1_RUNNING.parse().expect("id"), completed_id]);
    assert_eq!(
        store.agents().await.expect("agents"),
        [AgentRecord {
            pgid: 31337,
            agent_key: "frontend->backend#1".to_owned(),
            caller: frontend,
            target: backend,
            started_at_ms: 1_700_000_000_001,
        }]
    );
    let recovery = store.recover().await.expect("recover");
    assert_eq!(recovery.interrupted, [V1_RUNNING.parse().expect("id")]);
    assert_eq!(ids(&recovery.queued), [V1_QUEUED.parse().expect("id")]);
    assert_eq!(recovery.queued[0].mode, MessageMode::Quick);
}

// ----------------------------------------------------------------------------------------------
// Faults.

#[tokio::test]
async fn a_file_that_is_not_a_database_is_reported_and_left_untouched() {
    let db = FileDb::new();
    fs::create_dir_all(db.path().parent().expect("parent")).expect("dir");
    let garbage: Vec<u8> = (0..4096u32).map(|index| (index * 7 % 251) as u8).collect();
    for contents in [garbage, b"SQLite format 3\0 but short".to_vec()] {
        fs::write(db.path(), &contents).expect("write garbage");
        let error = Store::open(&db.config).await.expect_err("not a database");
        match &error {
            StoreError::Corrupt { path, .. } => assert_eq!(path, db.path()),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let text = error.to_string();
        assert!(text.contains(&db.path().display().to_string()), "{text}");
        assert!(
            text.contains("Iris did not modify it: move it aside"),
            "{text}"
        );
        assert_eq!(fs::read(db.path()).expect("read back"), contents);
        assert!(!sidecar(db.path(), "-wal").exists());
    }
}

#[tokio::test]
async fn a_damaged_database_is_reported_as_corrupt() {
    let db = FileDb::new();
    let store = db.open().await;
    insert(&store, "a", "b", "x").await;
    store.close().await.expect("close");
    // A valid header over a page 1 that is not a b-tree page.
    let mut bytes = fs::read(db.path()).expect("read");
    for byte in &mut bytes[100..] {
        *byte = 0xA5;
    }
    fs::write(db.path(), &bytes).expect("damage");
    let error = Store::open(&db.config).await.expect_err("damaged");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert_eq!(fs::read(db.path()).expect("read back"), bytes);

    // A header that SQLite itself rejects (page size 3): "file is not a database".
    let store_again = FileDb::new();
    let store = store_again.open().await;
    store.close().await.expect("close");
    let mut bytes = fs::read(store_again.path()).expect("read");
    bytes[16..18].copy_from_slice(&[0, 3]);
    fs::write(store_again.path(), &bytes).expect("damage header");
    let error = Store::open(&store_again.config)
        .await
        .expect_err("bad header");
    match &error {
        StoreError::Corrupt { message, .. } => {
            assert!(message.contains("not a database"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(store_again.path()).expect("read back"), bytes);
}

#[tokio::test]
async fn another_programs_database_is_reported_and_left_untouched() {
    let db = FileDb::new();
    fs::create_dir_all(db.path().parent().expect("parent")).expect("dir");
    for setup in [
        "CREATE TABLE notes (body TEXT);",
        "PRAGMA application_id = 42; CREATE TABLE notes (body TEXT);",
    ] {
        let _ = fs::remove_file(db.path());
        let connection = Connection::open(db.path()).expect("create");
        connection.execute_batch(setup).expect("setup");
        connection
            .close()
            .map_err(|(_, error)| error)
            .expect("close");
        let before = fs::read(db.path()).expect("read");
        let error = Store::open(&db.config).await.expect_err("foreign database");
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert_eq!(fs::read(db.path()).expect("read back"), before);
    }
}

#[tokio::test]
async fn a_newer_schema_is_reported_and_the_file_left_unchanged() {
    let db = FileDb::new();
    let store = db.open().await;
    insert(&store, "a", "b", "from the future").await;
    store.close().await.expect("close");
    let connection = Connection::open(db.path()).expect("open raw");
    connection
        .pragma_update(None, "user_version", 999)
        .expect("bump version");
    connection
        .close()
        .map_err(|(_, error)| error)
        .expect("close raw");
    let before = fs::read(db.path()).expect("read");

    let error = Store::open(&db.config).await.expect_err("newer schema");
    match &error {
        StoreError::NewerSchema {
            path,
            found,
            supported,
        } => {
            assert_eq!(path, db.path());
            assert_eq!(*found, 999);
            assert_eq!(*supported, i64::try_from(MIGRATIONS.len()).expect("few"));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "schema 999, this Iris knows up to {}",
            MIGRATIONS.len()
        )) && text.contains("upgrade Iris"),
        "{text}"
    );
    assert_eq!(fs::read(db.path()).expect("read back"), before);
}

#[tokio::test]
async fn a_locked_database_is_reported_naming_the_path() {
    let db = FileDb::new();
    let store = db.open_impatient().await.expect("open");
    let kept = insert(&store, "a", "b", "before the lock").await;

    let holder = Connection::open(db.path()).expect("second connection");
    holder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the lock");

    let error = store
        .insert_message(new_message("a", "b", "while locked"))
        .await
        .expect_err("locked");
    match &error {
        StoreError::Locked { path } => assert_eq!(path, db.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&db.path().display().to_string()) && text.contains("another Iris"),
        "{text}"
    );
    // Readers are not blocked in WAL mode.
    assert!(store.message(kept).await.expect("read").is_some());
    // Neither can a second Iris open it (it would migrate or write).
    assert!(matches!(
        db.open_impatient().await,
        Err(StoreError::Locked { .. })
    ));

    holder.execute_batch("ROLLBACK").expect("release");
    insert(&store, "a", "b", "after the lock").await;
    assert_eq!(
        store
            .pair_messages(&team("a"), &team("b"), Page::first(10))
            .await
            .expect("read")
            .len(),
        2
    );
}

#[tokio::test]
async fn a_full_database_is_reported_and_earlier_rows_stay_readable() {
    let db = FileDb::new();
    let store = db.open().await;
    let pages: i64 = store
        .with_connection(|connection| {
            let pages: i64 = connection.query_row("PRAGMA page_count", [], |row| row.get(0))?;
            connection.query_row(
                &format!("PRAGMA max_page_count = {}", pages + 8),
                [],
                |row| row.get(0),
            )
        })
        .await
        .expect("cap the database");
    assert!(pages > 0);

    let text = "y".repeat(2000);
    let mut inserted = Vec::new();
    let error = loop {
        assert!(inserted.len() < 1000, "the capped database never filled up");
        let message = new_message("a", "b", &text);
        let id = message.id;
        match store.insert_message(message).await {
            Ok(()) => inserted.push(id),
            Err(error) => break error,
        }
    };
    match &error {
        StoreError::DiskFull { path } => assert_eq!(path, db.path()),
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(error.to_string().contains("the change was not saved"));
    assert!(!inserted.is_empty());
    for id in &inserted {
        let message = store.message(*id).await.expect("read").expect("kept");
        assert_eq!(message.text, text);
    }
    assert_eq!(
        store.stats().await.expect("stats").messages_by_state["queued"],
        u64::try_from(inserted.len()).expect("count")
    );
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test]
async fn a_finished_turn_is_recorded_in_message_and_session_together_or_not_at_all() {
    let store = memory().await;
    let session = store
        .create_session(&team("a"), &team("b"), Uuid::new_v4())
        .await
        .expect("session")
        .session_id;
    let id = insert(&store, "a", "b", "hi").await;
    assert!(store.mark_running(id, session).await.expect("running"));
    let turn = SessionTurn {
        session_id: session,
        cost_usd: 0.5,
        cli_total_usd: Some(2.0),
    };
    store
        .finish_counted_turn(id, finish(MessageState::Completed), turn)
        .await
        .expect("finish turn");
    assert_eq!(state_of(&store, id).await, MessageState::Completed);
    let record = store
        .current_session(&team("a"), &team("b"))
        .await
        .expect("read")
        .expect("session");
    assert_eq!(
        (record.turns, record.total_cost_usd, record.cli_total_usd),
        (1, 0.5, 2.0)
    );
    assert!(record.resumable);

    // An unknown session fails the whole transaction: the message stays running.
    let other = insert(&store, "a", "b", "again").await;
    assert!(store.mark_running(other, session).await.expect("running"));
    let unknown = SessionTurn {
        session_id: Uuid::new_v4(),
        ..turn
    };
    assert!(matches!(
        store
            .finish_counted_turn(other, finish(MessageState::Completed), unknown)
            .await,
        Err(StoreError::SessionNotFound { .. })
    ));
    assert_eq!(state_of(&store, other).await, MessageState::Running);
}

// ----------------------------------------------------------------------------------------------
// Group commit and durability.

/// Inserts a told (`quick`) message; returns its id.
async fn store_told(store: &Store, caller: &str, target: &str, text: &str) -> MessageId {
    let message = told(caller, target, text);
    let id = message.id;
    store.insert_message(message).await.expect("insert");
    id
}

fn told(caller: &str, target: &str, text: &str) -> NewMessage {
    NewMessage {
        mode: MessageMode::Quick,
        ..new_message(caller, target, text)
    }
}

#[tokio::test]
async fn a_lone_write_commits_at_once_and_syncs_only_when_asked() {
    let file = FileDb::new();
    let store = file.open().await;
    let before = store.commit_stats();
    // An ask's insert: committed (visible) at once, not synced: its sender waits.
    let ask = new_message("a", "b", "ask");
    let ask_id = ask.id;
    store.insert_message(ask).await.unwrap();
    let after_ask = store.commit_stats();
    assert_eq!(after_ask.writes - before.writes, 1);
    assert_eq!(after_ask.commits - before.commits, 1);
    assert_eq!(after_ask.syncs, before.syncs);
    assert!(store.message(ask_id).await.unwrap().is_some());
    // A told message is acknowledged by its id: synced before the call returns.
    let tell = told("a", "b", "tell");
    let tell_id = tell.id;
    store.insert_message(tell).await.unwrap();
    let after_tell = store.commit_stats();
    assert_eq!(after_tell.commits - after_ask.commits, 1);
    assert_eq!(after_tell.syncs - after_ask.syncs, 1);
    // Marking a told message running comes before its delivery: synced (so it is never
    // delivered twice across a power cut). An ask's is not: a queued ask is not delivered
    // after a restart at all.
    assert!(store.mark_running(tell_id, Uuid::new_v4()).await.unwrap());
    assert_eq!(store.commit_stats().syncs - after_tell.syncs, 1);
    assert!(store.mark_running(ask_id, Uuid::new_v4()).await.unwrap());
    assert_eq!(store.commit_stats().syncs - after_tell.syncs, 1);
    // `sync` makes what came before durable, even with nothing new to commit.
    let before_sync = store.commit_stats();
    store.sync().await.unwrap();
    assert_eq!(store.commit_stats().syncs - before_sync.syncs, 1);
}

#[tokio::test]
async fn a_pairs_first_session_is_not_synced_and_a_replacing_one_is() {
    let file = FileDb::new();
    let store = file.open().await;
    let (a, b) = (team("a"), team("b"));
    let before = store.commit_stats();
    let first = store
        .create_first_session(&a, &b, Uuid::new_v4())
        .await
        .expect("first");
    let after_first = store.commit_stats();
    assert_eq!(after_first.commits - before.commits, 1);
    assert_eq!(
        after_first.syncs, before.syncs,
        "nothing is acknowledged by it"
    );
    assert_eq!(
        store
            .current_session(&a, &b)
            .await
            .expect("read")
            .map(|session| session.session_id),
        Some(first.session_id)
    );
    // A reboot's new session is acknowledged to whoever asked: synced.
    store
        .retire_session(first.session_id, SessionStatus::Rebooted)
        .await
        .expect("retire");
    let before_new = store.commit_stats();
    store
        .create_session(&a, &b, Uuid::new_v4())
        .await
        .expect("new");
    assert_eq!(store.commit_stats().syncs - before_new.syncs, 1);
}

/// Writers that arrive while a commit waits for the connection all join its batch: one
/// transaction and one sync for all of them, each write answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::await_holding_lock,
    reason = "the test holds the connection so that writers queue behind the leader; the writers run on the runtime's workers, not on this thread"
)]
async fn concurrent_writes_share_one_commit_and_one_sync() {
    let file = FileDb::new();
    let store = file.open().await;
    let before = store.commit_stats();
    let held = store.lock();
    let mut writers = Vec::new();
    let mut ids = Vec::new();
    for index in 0..40 {
        let message = told("caller", &format!("t{}", index % 4), &format!("m{index}"));
        ids.push(message.id);
        let store = store.clone();
        writers.push(tokio::spawn(
            async move { store.insert_message(message).await },
        ));
    }
    // The first writer leads and waits for the connection; the others queue behind it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.queued_writes() < 40 {
        assert!(std::time::Instant::now() < deadline, "writers never queued");
        tokio::task::yield_now().await;
    }
    drop(held);
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let after = store.commit_stats();
    assert_eq!(after.writes - before.writes, 40);
    assert_eq!(after.commits - before.commits, 1, "{after:?}");
    assert_eq!(after.syncs - before.syncs, 1, "{after:?}");
    // Every write is there.
    let recovery = store.recover().await.unwrap();
    let mut got: Vec<MessageId> = recovery.queued.iter().map(|record| record.id).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
}

/// One failed write in a batch is rolled back alone; the others are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::await_holding_lock,
    reason = "the test holds the connection so that writers queue behind the leader; the writers run on the runtime's workers, not on this thread"
)]
async fn a_failed_write_in_a_batch_rolls_back_only_itself() {
    let file = FileDb::new();
    let store = file.open().await;
    let first = told("a", "b", "first");
    let duplicate = NewMessage {
        text: "same id again".to_owned(),
        parent: None,
        ..first.clone()
    };
    let second = told("a", "b", "second");
    let (first_id, second_id) = (first.id, second.id);
    store.insert_message(first).await.unwrap();
    let before = store.commit_stats();
    let held = store.lock();
    let writers: Vec<_> = [duplicate, second]
        .into_iter()
        .map(|message| {
            let store = store.clone();
            tokio::spawn(async move { store.insert_message(message).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.queued_writes() < 2 {
        assert!(std::time::Instant::now() < deadline, "writers never queued");
        tokio::task::yield_now().await;
    }
    drop(held);
    let results: Vec<_> = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        matches!(&results[0], Err(StoreError::Invalid { .. })),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    assert_eq!(store.commit_stats().commits - before.commits, 1);
    assert_eq!(
        store.message(first_id).await.unwrap().unwrap().text,
        "first"
    );
    assert!(store.message(second_id).await.unwrap().is_some());
}

#[tokio::test]
async fn writes_to_a_closed_store_are_refused() {
    let store = memory().await;
    store.close().await.unwrap();
    assert!(matches!(
        store.insert_message(told("a", "b", "late")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.sync().await, Err(StoreError::Closed)));
}

/// An ask whose sender was told `pending` becomes a tell, synced: delivered after a restart.
#[tokio::test]
async fn an_acknowledged_ask_becomes_a_synced_tell() {
    let file = FileDb::new();
    let store = file.open().await;
    let ask = new_message("a", "b", "long question");
    let id = ask.id;
    store.insert_message(ask).await.unwrap();
    let before = store.commit_stats();
    assert!(store.acknowledge(id).await.unwrap());
    assert_eq!(store.commit_stats().syncs - before.syncs, 1);
    assert!(!store.acknowledge(id).await.unwrap(), "already a tell");
    assert_eq!(
        store.message(id).await.unwrap().unwrap().mode,
        MessageMode::Tell
    );
    let recovery = store.recover().await.unwrap();
    assert_eq!(ids(&recovery.queued), [id]);
}

/// What SQLite says when a statement meets a page it cannot use.
fn sqlite_corrupt() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some("database disk image is malformed".to_owned()),
    )
}

#[test]
fn damage_met_by_a_running_store_is_not_called_a_bad_file() {
    let path = Path::new("/var/iris/iris.db");
    // Opening: the file is refused, and moving it aside is the advice.
    let at_open = error::classify(&sqlite_corrupt(), path, "open");
    assert!(matches!(at_open, StoreError::Corrupt { .. }), "{at_open:?}");
    // Running: SQLite says the same after a failed read, so no such advice.
    let running = error::classify(&sqlite_corrupt(), path, "message");
    assert!(matches!(running, StoreError::Damaged { .. }), "{running:?}");
    let text = running.to_string();
    assert!(text.contains("during message"), "{text}");
    assert!(text.contains("check the disk"), "{text}");
    assert!(text.contains("`iris doctor`"), "{text}");
    assert!(!text.contains("move it aside"), "{text}");
    assert!(!text.contains("not a valid Iris database"), "{text}");
}

#[tokio::test]
async fn after_an_io_error_damage_is_reported_as_the_io_error() {
    let store = Store::open(&DatabaseConfig::memory()).await.expect("open");
    let path = PathBuf::from("/var/iris/iris.db");
    let damaged = || -> Result<(), StoreError> {
        Err(StoreError::Damaged {
            path: path.clone(),
            operation: "message",
            message: "database disk image is malformed".to_owned(),
        })
    };
    // Before any I/O error, damage is reported as such.
    let before = store.inner.noted(damaged()).expect_err("damaged");
    assert!(matches!(before, StoreError::Damaged { .. }), "{before:?}");
    let io = store
        .inner
        .noted::<()>(Err(StoreError::Io {
            path: path.clone(),
            operation: "commit",
            message: "disk I/O error".to_owned(),
        }))
        .expect_err("io");
    assert!(matches!(io, StoreError::Io { .. }), "{io:?}");
    let after = store.inner.noted(damaged()).expect_err("damaged");
    match &after {
        StoreError::Io {
            operation, message, ..
        } => {
            assert_eq!(*operation, "message");
            assert!(message.contains("after an earlier I/O error"), "{message}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(after.to_string().contains("check `dmesg`"), "{after}");
}

#[tokio::test]
async fn inspecting_checks_every_page_without_changing_the_file() {
    let db = FileDb::new();
    let store = db.open().await;
    let text = "x".repeat(2000);
    for _ in 0..200 {
        insert(&store, "a", "b", &text).await;
    }
    store.close().await.expect("close");
    let inspected = Store::inspect(&db.config)
        .expect("an intact file")
        .expect("a file");
    assert_eq!(inspected.schema, schema::current_version());
    // A page of the messages table overwritten (the rows written last fill the last pages):
    // opening does not read it, the integrity check does.
    let mut bytes = fs::read(db.path()).expect("read");
    let page = 4096;
    assert!(bytes.len() > 40 * page, "{} bytes", bytes.len());
    let last = bytes.len() / page - 1;
    for byte in &mut bytes[(last - 2) * page..(last - 1) * page] {
        *byte = 0xA5;
    }
    fs::write(db.path(), &bytes).expect("damage");
    let error = Store::inspect(&db.config).expect_err("damaged");
    match &error {
        StoreError::Corrupt { message, .. } => {
            assert!(message.starts_with("integrity check: "), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(db.path()).expect("read back"), bytes);
}
