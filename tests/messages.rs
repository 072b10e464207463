//! Durable messages and sessions: every turn is recorded, tells survive restarts, messages
//! can be read, awaited and cancelled by id, and sessions can be reported, rebooted, deleted
//! and forked. Real processes (the fake agent), real SQLite files.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{World, assert_contains, wait_event, wait_for};
use iris::pool::{PoolError, PoolEvent};
use iris::store::{MessageMode, MessageState, Page};

/// A world whose store is a file, so a second pool can open it.
fn file_world() -> World {
    let mut world = World::new();
    world.config.database.in_memory = false;
    world.config.database.path = world.path().join("iris.db");
    world
}

/// User lines containing `needle` that the fake agents of `team` received, over all processes.
fn deliveries(world: &World, team: &str, needle: &str) -> usize {
    common::deliveries(&world.log_path(team), needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_is_recorded_with_its_outcome() {
    let mut world = World::new();
    world.team("backend", &[]);
    world.config.settings.response_timeout = Duration::from_millis(300);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();

    let done = pool.send(&pair, "hello".to_owned()).await.unwrap();
    let record = pool
        .message(done.message_id, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::Completed);
    assert_eq!(record.mode, MessageMode::Ask);
    assert_eq!(record.text, "hello");
    assert_eq!(record.answer.as_deref(), Some("fake answer #1: hello"));
    assert!(!record.is_error);
    assert_eq!(record.session_id, Some(done.session_id));
    assert!(record.cost_usd.unwrap() > 0.0);
    assert!(record.usage.is_some());
    assert!(record.started_at_ms.is_some() && record.finished_at_ms.is_some());
    assert!(!record.transcript.is_empty());

    let failed = pool.send(&pair, "[[error]]".to_owned()).await.unwrap();
    let record = pool
        .message(failed.message_id, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::Failed);
    assert!(record.is_error);
    assert_contains(record.error.as_deref().unwrap(), "API Error");
    // The agent is asked to take the failed prompt back, and answers before the next turn
    // (the real CLI's behaviour is tested in tests/e2e.rs).
    let after = pool.send(&pair, "after".to_owned()).await.unwrap();
    assert!(!after.result.is_error);
    let stdin: Vec<serde_json::Value> = world
        .log("backend")
        .into_iter()
        .filter(|entry| entry["event"] == "stdin")
        .filter_map(|entry| serde_json::from_str(entry["line"].as_str()?).ok())
        .filter(|line: &serde_json::Value| {
            line["type"] == "user" || line["request"]["subtype"] == "rewind_conversation"
        })
        .collect();
    let failed_at = stdin
        .iter()
        .position(|line| line["message"]["content"] == "[[error]]")
        .unwrap();
    let uuid = stdin[failed_at]["uuid"].as_str().unwrap();
    assert_eq!(
        stdin[failed_at + 1]["request"]["target_message_uuid"],
        uuid,
        "{stdin:#?}"
    );
    assert_eq!(stdin[failed_at + 2]["message"]["content"], "after");
    assert_eq!(
        stdin.len(),
        failed_at + 3,
        "one rewind, after the API error only"
    );

    let mut events = pool.subscribe();
    let crashed = pool
        .submit(&pair, "[[crash]]".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let crashed_id = crashed.id();
    assert!(crashed.outcome().await.is_err());
    wait_event(
        &mut events,
        "crash recorded",
        |event| matches!(event, PoolEvent::MessageFinished { id, .. } if *id == crashed_id),
    )
    .await;
    let record = pool
        .message(crashed_id, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::Failed);
    assert_contains(record.error.as_deref().unwrap(), "exit code 3");

    let silent = pool
        .submit(&pair, "[[slow:600000]]".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let silent_id = silent.id();
    assert!(silent.outcome().await.is_err());
    let record = pool
        .wait_message(
            silent_id,
            Duration::from_secs(30),
            &iris::pool::Viewer::Anyone,
        )
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::TimedOut);
    assert_contains(record.error.as_deref().unwrap(), "responseTimeout");

    let session = pool.session(&pair).await.unwrap().unwrap();
    assert!(session.turns >= 2);
    assert!(session.total_cost_usd > 0.0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_are_accepted_when_written_and_delivered_in_order() {
    let mut world = World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut ids = Vec::new();
    for index in 0..5 {
        let id = pool
            .tell(&pair, format!("note {index}"), MessageMode::Quick)
            .await
            .unwrap();
        // Accepted means written: the store knows it at once.
        let record = pool.message(id, &iris::pool::Viewer::Anyone).await.unwrap();
        assert!(matches!(
            record.state,
            MessageState::Queued | MessageState::Running | MessageState::Completed
        ));
        assert_eq!(record.mode, MessageMode::Quick);
        ids.push(id);
    }
    for (index, id) in ids.iter().enumerate() {
        let record = pool
            .wait_message(*id, Duration::from_secs(60), &iris::pool::Viewer::Anyone)
            .await
            .unwrap();
        assert_eq!(record.state, MessageState::Completed);
        assert_eq!(
            record.answer.unwrap(),
            format!("fake answer #{}: note {index}", index + 1)
        );
    }
    let error = pool
        .message(iris::store::MessageId::new(), &iris::pool::Viewer::Anyone)
        .await
        .unwrap_err();
    assert!(matches!(error, PoolError::UnknownMessage { .. }));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_and_running_messages_can_be_cancelled() {
    let mut world = World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut events = pool.subscribe();
    let running = pool
        .tell(&pair, "[[slow:600000]] long".to_owned(), MessageMode::Tell)
        .await
        .unwrap();
    let queued = pool
        .submit(&pair, "never delivered".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let queued_id = queued.id();
    wait_event(&mut events, "the agent answering", |event| {
        matches!(
            event,
            PoolEvent::Agent {
                event: iris::agent::AgentEvent::Answering,
                ..
            }
        )
    })
    .await;

    // Waiting briefly on a running message returns its current state, not an error.
    let record = pool
        .wait_message(running, Duration::ZERO, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::Running);

    assert_eq!(
        pool.cancel(queued_id, &iris::pool::Viewer::Anyone)
            .await
            .unwrap(),
        MessageState::Cancelled
    );
    assert_eq!(
        pool.cancel(running, &iris::pool::Viewer::Anyone)
            .await
            .unwrap(),
        MessageState::Cancelled
    );
    assert!(matches!(
        queued.outcome().await,
        Err(PoolError::Cancelled { .. })
    ));
    // A cancelled message stays cancelled.
    assert_eq!(
        pool.cancel(running, &iris::pool::Viewer::Anyone)
            .await
            .unwrap(),
        MessageState::Cancelled
    );

    let next = pool.send(&pair, "after".to_owned()).await.unwrap();
    assert!(!next.result.is_error);
    assert_eq!(deliveries(&world, "backend", "never delivered"), 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_pages_newest_first() {
    let mut world = World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let other = pool.pair("mobile", "backend").unwrap();
    for index in 0..5 {
        pool.send(&pair, format!("m{index}")).await.unwrap();
    }
    pool.send(&other, "not mine".to_owned()).await.unwrap();
    let first = pool
        .report(
            &pair,
            Page {
                limit: 3,
                before: None,
            },
        )
        .await
        .unwrap();
    let texts: Vec<_> = first.iter().map(|record| record.text.as_str()).collect();
    assert_eq!(texts, ["m4", "m3", "m2"]);
    let rest = pool
        .report(
            &pair,
            Page {
                limit: 3,
                before: Some(first[2].id),
            },
        )
        .await
        .unwrap();
    let texts: Vec<_> = rest.iter().map(|record| record.text.as_str()).collect();
    assert_eq!(texts, ["m1", "m0"]);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_and_delete_start_new_sessions_and_keep_history() {
    let mut world = World::new();
    let claude_home = world.path().join("claude-home");
    let home = claude_home.display().to_string();
    world.team("backend", &[("HOME", home.as_str())]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let first = pool.send(&pair, "one".to_owned()).await.unwrap();
    pool.send(&pair, "two".to_owned()).await.unwrap();

    let (old, new) = pool.reboot(&pair).await.unwrap();
    assert_eq!(old, Some(first.session_id));
    assert_ne!(new, first.session_id);
    let after = pool.send(&pair, "three".to_owned()).await.unwrap();
    assert_eq!(after.session_id, new);
    assert_eq!(
        after.result.answer, "fake answer #1: three",
        "a rebooted pair starts a new conversation"
    );
    assert!(
        world
            .starts("backend")
            .last()
            .unwrap()
            .contains(&format!("--session-id={new}"))
    );
    // History is kept, with the session each message belonged to.
    let history = pool
        .report(
            &pair,
            Page {
                limit: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].session_id, Some(first.session_id));

    // Delete also removes Claude's transcript of the old session.
    let team = pool.config().team("backend").unwrap().clone();
    let transcript = iris::pool::transcript_path(&team, new);
    assert!(transcript.starts_with(&claude_home));
    std::fs::create_dir_all(transcript.parent().unwrap()).unwrap();
    std::fs::write(&transcript, b"{}\n").unwrap();
    let (deleted, file) = pool.delete_session(&pair, true).await.unwrap();
    assert_eq!(deleted, Some(new));
    assert_eq!(file.as_deref(), Some(transcript.as_path()));
    assert!(!transcript.exists());
    let fresh = pool.session(&pair).await.unwrap().unwrap();
    assert_ne!(fresh.session_id, new);

    let fork = pool.fork_command(&pair).await.unwrap();
    let line = fork.shell_line();
    assert_contains(&line, &format!("--resume={}", fresh.session_id));
    assert_contains(&line, "--fork-session");
    assert_contains(&line, &team.path.display().to_string());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_interrupts_running_messages_and_delivers_queued_ones_once() {
    let mut world = file_world();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    pool.send(&pair, "before".to_owned()).await.unwrap();
    let mut events = pool.subscribe();
    let running = pool
        .tell(&pair, "[[slow:600000]] long".to_owned(), MessageMode::Tell)
        .await
        .unwrap();
    let first = pool
        .tell(&pair, "queued one".to_owned(), MessageMode::Quick)
        .await
        .unwrap();
    let second = pool
        .tell(&pair, "queued two".to_owned(), MessageMode::Quick)
        .await
        .unwrap();
    // An ask whose sender waits, and one whose sender was told `pending` (it holds the id).
    let waited = pool
        .submit(&pair, "a waited ask".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let handed_out = pool
        .submit(&pair, "a pending ask".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let acknowledged = pool.acknowledge(handed_out.id()).await.unwrap();
    assert_eq!(acknowledged.mode, MessageMode::Tell);
    wait_event(&mut events, "the agent answering", |event| {
        matches!(
            event,
            PoolEvent::Agent {
                event: iris::agent::AgentEvent::Answering,
                ..
            }
        )
    })
    .await;
    let waited_id = waited.id();
    pool.shutdown().await;
    // The waiting sender is told at once.
    assert!(matches!(
        waited.outcome().await,
        Err(PoolError::ShuttingDown)
    ));
    drop(pool);

    let pool = world.pool().await;
    assert_eq!(
        pool.message(running, &iris::pool::Viewer::Anyone)
            .await
            .unwrap()
            .state,
        MessageState::Interrupted
    );
    for id in [first, second, handed_out.id()] {
        let record = pool
            .wait_message(id, Duration::from_secs(60), &iris::pool::Viewer::Anyone)
            .await
            .unwrap();
        assert_eq!(record.state, MessageState::Completed, "{record:?}");
    }
    // The ask whose sender was waiting is not run for nobody after the restart.
    let abandoned = pool
        .message(waited_id, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(abandoned.state, MessageState::Failed, "{abandoned:?}");
    assert_contains(
        abandoned.error.as_deref().unwrap(),
        "it was not delivered later",
    );
    assert_eq!(deliveries(&world, "backend", "a waited ask"), 0);
    assert_eq!(deliveries(&world, "backend", "a pending ask"), 1);
    // The conversation went on across the restart (resumed session, numbering continues).
    let record = pool
        .message(second, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_contains(record.answer.as_deref().unwrap(), "queued two");
    assert_eq!(deliveries(&world, "backend", "queued one"), 1);
    assert_eq!(deliveries(&world, "backend", "queued two"), 1);
    assert_eq!(
        deliveries(&world, "backend", "long"),
        1,
        "an interrupted message is never re-run"
    );
    pool.shutdown().await;
    wait_for("no agent left", || world.live_processes().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_stored_cut_is_not_delivered_after_a_restart() {
    let mut world = file_world();
    world.team("backend", &[]);
    world.config.database.max_text_bytes = 1024;
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut events = pool.subscribe();
    pool.tell(&pair, "[[slow:600000]] long".to_owned(), MessageMode::Tell)
        .await
        .unwrap();
    let huge = pool
        .tell(
            &pair,
            format!("huge {}", "x".repeat(4000)),
            MessageMode::Quick,
        )
        .await
        .unwrap();
    wait_event(&mut events, "the agent answering", |event| {
        matches!(
            event,
            PoolEvent::Agent {
                event: iris::agent::AgentEvent::Answering,
                ..
            }
        )
    })
    .await;
    let stored = pool
        .message(huge, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert!(stored.truncated);
    assert!(stored.text.len() <= 1024);
    pool.shutdown().await;
    drop(pool);

    let pool = world.pool().await;
    let record = pool
        .wait_message(huge, Duration::from_secs(60), &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::Failed);
    assert_contains(record.error.as_deref().unwrap(), "maxStoredTextBytes");
    assert_eq!(deliveries(&world, "backend", "huge"), 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_iris_per_database() {
    let mut world = file_world();
    world.team("backend", &[]);
    let first = world.pool().await;
    let config = std::sync::Arc::new(world.config.clone());
    let Err(error) =
        iris::pool::Pool::start(config.clone(), iris::pool::PoolOptions::default()).await
    else {
        panic!("a second pool on the same database started");
    };
    assert!(matches!(error, PoolError::Instance { .. }), "{error:?}");
    let text = error.to_string();
    assert_contains(&text, "iris.db.lock");
    assert_contains(
        &text,
        &format!(
            "another Iris (pid {}) is already using this database",
            std::process::id()
        ),
    );
    first.shutdown().await;
    drop(first);
    let second = iris::pool::Pool::start(config, iris::pool::PoolOptions::default())
        .await
        .unwrap();
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_while_the_process_starts_moves_the_message_to_the_new_session() {
    let mut world = World::new();
    let gate = world.path().join("gate");
    world.team(
        "backend",
        &[("FAKE_AGENT_INIT_WAIT_FILE", gate.to_str().unwrap())],
    );
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let ticket = pool
        .submit(&pair, "hello".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    // The first process has started (with the old session) and waits at the barrier.
    wait_for("first process started", || {
        world.starts("backend").len() == 1
    })
    .await;
    let old = world.starts("backend")[0]
        .iter()
        .find(|arg| arg.starts_with("--session-id="))
        .cloned()
        .unwrap();
    let (_, new) = pool.reboot(&pair).await.unwrap();
    std::fs::write(&gate, b"open").unwrap();
    let outcome = ticket.outcome().await.unwrap();
    assert_eq!(
        outcome.session_id, new,
        "the message ran in the new session"
    );
    assert_eq!(outcome.result.answer, "fake answer #1: hello");
    let starts = world.starts("backend");
    assert_eq!(
        starts.len(),
        2,
        "the process of the old session was replaced"
    );
    assert_ne!(format!("--session-id={new}"), old);
    assert!(
        starts[1].contains(&format!("--session-id={new}")),
        "{:?}",
        starts[1]
    );
    let session = pool.session(&pair).await.unwrap().unwrap();
    assert_eq!((session.session_id, session.turns), (new, 1));
    pool.shutdown().await;
}

/// 64 callers tell their teams at once, each ten messages in a row: every message is
/// accepted (written and synced: the writes of concurrent callers share commits), reaches
/// its team in the order its caller sent it, and is in the database after the pool stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_are_all_written_and_delivered_in_per_pair_order() {
    let mut world = file_world();
    for team in 0..8 {
        world.team(&format!("t{team}"), &[]);
    }
    world.config.settings.max_processes = 64;
    let pool = world.pool().await;
    let before = pool.store().commit_stats();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..64 {
        let pool = pool.clone();
        callers.spawn(async move {
            let pair = pool
                .pair(&format!("c{caller}"), &format!("t{}", caller % 8))
                .unwrap();
            let mut ids = Vec::new();
            for index in 0..10 {
                let id = pool
                    .tell(&pair, format!("c{caller} note {index}"), MessageMode::Quick)
                    .await
                    .unwrap();
                ids.push(id);
            }
            (caller, ids)
        });
    }
    let mut accepted = Vec::new();
    while let Some(joined) = callers.join_next().await {
        accepted.push(joined.unwrap());
    }
    assert_eq!(accepted.len(), 64);
    for (caller, ids) in &accepted {
        for (index, id) in ids.iter().enumerate() {
            let record = pool
                .wait_message(*id, Duration::from_secs(60), &iris::pool::Viewer::Anyone)
                .await
                .unwrap();
            // The fake agent numbers the turns of its process: the nth answer of the pair
            // is to its caller's nth message.
            assert_eq!(
                record.answer.as_deref(),
                Some(format!("fake answer #{}: c{caller} note {index}", index + 1).as_str()),
            );
        }
    }
    let stats = pool.store().commit_stats();
    // Accept + running mark are synced for each of the 640 messages; concurrent writes share.
    assert!(stats.syncs - before.syncs <= 2 * 640, "{stats:?}");
    pool.shutdown().await;
    // Written means on disk: a new store on the same file has them all, finished.
    let store = iris::store::Store::open(&world.config.database)
        .await
        .unwrap();
    for (_, ids) in &accepted {
        for id in ids {
            let record = store.message(*id).await.unwrap().unwrap();
            assert_eq!(record.state, MessageState::Completed);
        }
    }
    store.close().await.unwrap();
}
