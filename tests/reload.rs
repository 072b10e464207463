//! Config hot reload: the pool applying a new configuration (with real fake-agent processes),
//! and the `iris` binary picking up edits of its config file without a restart.
//!
//! Every wait is for an event, an answer or a log line, never for a fixed time.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    Console, Server, World, assert_contains, fake_config_yaml, iris_command, replace_file,
    submit_running, wait_event, wait_for, wait_for_no_processes, write_fake_config,
};
use iris::agent::TurnError;
use iris::config::{ConfigChanges, SettingChange, TeamName};
use iris::console::Status;
use iris::pool::{ExitReason, PairState, PoolError, PoolEvent};
use iris::store::{MessageMode, MessageState};
use serde_json::json;

// ------------------------------------------------------------------------------------------
// The pool.

/// A long turn running on `pair`, and an ask and a tell queued behind it.
async fn queue_behind_a_running_turn(
    pool: &iris::pool::Pool,
    pair: &iris::pool::Pair,
) -> (
    iris::pool::Ticket,
    iris::pool::Ticket,
    iris::store::MessageId,
) {
    let running = submit_running(pool, pair, "[[slow:600000]] long").await;
    let queued = pool
        .submit(pair, "queued ask".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let told = pool
        .tell(pair, "queued tell".to_owned(), MessageMode::Tell)
        .await
        .unwrap();
    (running, queued, told)
}

fn exited(event: &PoolEvent, team: &str, why: ExitReason) -> bool {
    matches!(event, PoolEvent::Exited { pair, reason, .. } if pair.target.as_str() == team && *reason == why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_team_can_be_messaged_at_once() {
    let mut world = World::new();
    world.team("a", &[]);
    let pool = world.pool().await;
    let mut events = pool.subscribe();
    let error = pool.pair("me", "b").unwrap_err();
    assert_eq!(error.to_string(), "unknown team 'b'; known teams: a");

    world.team("b", &[]);
    let changes = pool.set_config(world.config.clone());
    assert_eq!(changes.teams_added, [TeamName::new("b").unwrap()]);
    assert!(changes.teams_removed.is_empty() && changes.teams_changed.is_empty());
    let event = wait_event(&mut events, "config reloaded", |event| {
        matches!(event, PoolEvent::ConfigReloaded { .. })
    })
    .await;
    let PoolEvent::ConfigReloaded { changes: seen, .. } = event else {
        unreachable!()
    };
    assert_eq!(seen, changes);

    let pair = pool.pair("me", "b").unwrap();
    let outcome = pool.send(&pair, "hello".to_owned()).await.unwrap();
    assert_eq!(outcome.result.answer, "fake answer #1: hello");
    // The same configuration again changes nothing and says nothing.
    assert!(pool.set_config(world.config.clone()).is_empty());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_team_refuses_queued_messages_and_its_process_stops_after_its_turn() {
    let mut world = World::new();
    world.team("a", &[]);
    world.team("b", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("me", "a").unwrap();
    let first = pool.send(&pair, "hello".to_owned()).await.unwrap();
    let mut events = pool.subscribe();
    let (running, queued, told) = queue_behind_a_running_turn(&pool, &pair).await;

    let mut config = world.config.clone();
    config.teams.remove("a");
    config.settings.removed_team_grace_period = Duration::from_millis(200);
    let changes = pool.set_config(config);
    assert_eq!(changes.teams_removed, std::slice::from_ref(&pair.target));

    // Queued messages fail when the grace period ends, with the reason, while the running
    // turn goes on.
    let error = queued.outcome().await.unwrap_err();
    assert!(matches!(error, PoolError::TeamRemoved { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "team 'a' was removed from the configuration while the message waited; it was not delivered"
    );
    let record = pool
        .wait_message(told, Duration::from_secs(60), &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::Failed);
    assert_contains(record.error.as_deref().unwrap(), "team 'a' was removed");
    // New messages: unknown team.
    let error = pool.pair("me", "a").unwrap_err();
    assert_eq!(error.to_string(), "unknown team 'a'; known teams: b");
    let status = pool.status();
    let entry = status
        .pairs
        .iter()
        .find(|entry| entry.pair == pair)
        .unwrap();
    assert_eq!(
        entry.state,
        PairState::Busy,
        "the running turn is not cut short"
    );
    assert_eq!(entry.pid, Some(first.pid));

    // Once the turn ends, its process is stopped.
    assert!(pool.interrupt(&pair).await);
    let outcome = running.outcome().await.unwrap();
    assert!(outcome.result.interrupted);
    wait_event(&mut events, "the removed team's process stopped", |event| {
        exited(event, "a", ExitReason::TeamRemoved)
    })
    .await;
    assert_eq!(pool.status().live, 0);
    assert!(world.live_processes().is_empty());

    // Its session stayed in the store: adding the team back resumes it.
    let session = pool.session(&pair).await.unwrap().unwrap();
    assert_eq!(session.session_id, first.session_id);
    pool.set_config(world.config.clone());
    let pair = pool.pair("me", "a").unwrap();
    let again = pool.send(&pair, "back".to_owned()).await.unwrap();
    assert_eq!(again.session_id, first.session_id);
    assert_eq!(again.result.answer, "fake answer #3: back");
    pool.shutdown().await;
}

/// An edit that removes a team and one that brings it back (a file rewritten in two steps):
/// the messages queued to it meanwhile wait, and are delivered, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_to_a_team_removed_and_added_back_are_delivered() {
    let mut world = World::new();
    world.team("a", &[]);
    world.team("b", &[]);
    world.config.settings.removed_team_grace_period = Duration::from_secs(3600);
    let pool = world.pool().await;
    let pair = pool.pair("me", "a").unwrap();
    let mut events = pool.subscribe();
    let (running, queued, told) = queue_behind_a_running_turn(&pool, &pair).await;

    let mut without = world.config.clone();
    without.teams.remove("a");
    assert_eq!(pool.set_config(without).teams_removed.len(), 1);
    // Meanwhile the team is unknown to new messages.
    assert_eq!(
        pool.pair("me", "a").unwrap_err().to_string(),
        "unknown team 'a'; known teams: b"
    );
    // The running turn ends while the team is away: the queued ones still wait.
    assert!(pool.interrupt(&pair).await);
    assert!(running.outcome().await.unwrap().result.interrupted);
    wait_event(&mut events, "the removed team's process stopped", |event| {
        exited(event, "a", ExitReason::TeamRemoved)
    })
    .await;
    let waiting = pool
        .message(told, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(waiting.state, MessageState::Queued);

    assert_eq!(
        pool.set_config(world.config.clone()).teams_added,
        std::slice::from_ref(&pair.target)
    );
    let answer = queued.outcome().await.unwrap();
    assert_eq!(answer.result.answer, "fake answer #2: queued ask");
    let record = pool
        .wait_message(told, Duration::from_secs(60), &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    assert_eq!(record.state, MessageState::Completed, "{record:?}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_team_gets_a_new_process_with_its_new_settings() {
    let mut world = World::new();
    world.team("a", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("me", "a").unwrap();
    let first = pool.send(&pair, "one".to_owned()).await.unwrap();
    let mut events = pool.subscribe();

    // A key read at use (the description) leaves the process alone.
    world.config.teams.get_mut("a").unwrap().description = "new words".to_owned();
    let changes = pool.set_config(world.config.clone());
    assert_eq!(changes.teams_changed[0].keys, ["description"]);
    let second = pool.send(&pair, "two".to_owned()).await.unwrap();
    assert_eq!(second.pid, first.pid);
    assert!(!second.cold);

    // A key that reaches the command line: the idle process is stopped at once...
    world.config.teams.get_mut("a").unwrap().model = Some("fake-model-2".to_owned());
    let changes = pool.set_config(world.config.clone());
    assert_eq!(changes.teams_changed[0].keys, ["model"]);
    wait_event(&mut events, "the idle process was replaced", |event| {
        exited(event, "a", ExitReason::Reconfigured)
    })
    .await;
    // ...and the next message starts one with the new settings, in the same session.
    let third = pool.send(&pair, "three".to_owned()).await.unwrap();
    assert!(third.cold);
    assert_ne!(third.pid, first.pid);
    assert_eq!(third.session_id, first.session_id);
    assert_eq!(third.result.answer, "fake answer #3: three");
    let starts = world.starts("a");
    assert_eq!(starts.len(), 2);
    assert!(!starts[0].iter().any(|arg| arg.starts_with("--model")));
    assert!(
        starts[1].iter().any(|arg| arg == "--model=fake-model-2"),
        "{:?}",
        starts[1]
    );
    assert!(starts[1].iter().any(|arg| arg.starts_with("--resume=")));

    // A busy process keeps its settings until its turn ends.
    let running = submit_running(&pool, &pair, "[[slow:600000]]").await;
    world.config.teams.get_mut("a").unwrap().grant_permission = iris::config::GrantPermission::No;
    pool.set_config(world.config.clone());
    wait_event(&mut events, "the config applied", |event| {
        matches!(event, PoolEvent::ConfigReloaded { .. })
    })
    .await;
    let status = pool.status();
    assert_eq!(status.pairs[0].state, PairState::Busy);
    assert_eq!(status.pairs[0].pid, Some(third.pid));
    assert!(pool.interrupt(&pair).await);
    assert!(running.outcome().await.unwrap().result.interrupted);
    wait_event(
        &mut events,
        "the busy process was replaced after its turn",
        |event| exited(event, "a", ExitReason::Reconfigured),
    )
    .await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_max_processes_stops_idle_processes_but_never_busy_ones() {
    let mut world = World::new();
    for team in ["a", "b", "c"] {
        world.team(team, &[]);
    }
    world.config.settings.max_processes = 3;
    let pool = world.pool().await;
    let pairs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|team| pool.pair("me", team).unwrap())
        .collect();
    for pair in &pairs {
        pool.send(pair, "warm".to_owned()).await.unwrap();
    }
    assert_eq!(pool.status().live, 3);
    let mut events = pool.subscribe();
    let busy = submit_running(&pool, &pairs[2], "[[slow:600000]]").await;

    world.config.settings.max_processes = 1;
    let changes = pool.set_config(world.config.clone());
    assert_eq!(
        changes
            .setting("settings.maxProcesses")
            .unwrap()
            .to_string(),
        "settings.maxProcesses: 3 -> 1"
    );
    // The two idle ones go (in any order); the busy one stays.
    let mut stopped = Vec::new();
    while stopped.len() < 2 {
        let event = wait_event(&mut events, "an idle process stopped", |event| {
            matches!(event, PoolEvent::Exited { reason, .. } if *reason == ExitReason::OverMaxProcesses)
        })
        .await;
        if let PoolEvent::Exited { pair, .. } = event {
            stopped.push(pair.target.to_string());
        }
    }
    stopped.sort();
    assert_eq!(stopped, ["a", "b"]);
    let status = pool.status();
    assert_eq!((status.live, status.max_processes), (1, 1));
    assert!(
        status
            .pairs
            .iter()
            .any(|entry| entry.pair == pairs[2] && entry.state == PairState::Busy)
    );
    assert!(pool.interrupt(&pairs[2]).await);
    busy.outcome().await.unwrap();
    // Within the bound: the process that was busy stays, idle; the next pair takes its slot.
    let outcome = pool.send(&pairs[0], "again".to_owned()).await.unwrap();
    assert!(outcome.cold);
    assert_eq!(pool.status().live, 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_max_processes_lets_a_waiting_message_proceed() {
    let mut world = World::new();
    world.team("a", &[]);
    world.team("b", &[]);
    world.config.settings.max_processes = 1;
    world.config.settings.pool_wait_timeout = Duration::from_secs(600);
    let pool = world.pool().await;
    let (a, b) = (pool.pair("me", "a").unwrap(), pool.pair("me", "b").unwrap());
    let _busy = submit_running(&pool, &a, "[[slow:600000]]").await;
    let waiting = pool
        .submit(&b, "waiting".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    // Its worker took it from the queue: it waits for a slot (poolWaitTimeout is 10 minutes).
    wait_for("b's message taken from its queue", || {
        pool.status()
            .pairs
            .iter()
            .any(|entry| entry.pair == b && entry.queued == 0)
    })
    .await;
    world.config.settings.max_processes = 2;
    pool.set_config(world.config.clone());
    let outcome = waiting.outcome().await.unwrap();
    assert_eq!(outcome.result.answer, "fake answer #1: waiting");
    assert_eq!(pool.status().live, 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_response_timeout_applies_to_the_next_turn_of_a_running_process() {
    let mut world = World::new();
    world.team("a", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("me", "a").unwrap();
    let first = pool.send(&pair, "warm".to_owned()).await.unwrap();
    world.config.settings.response_timeout = Duration::from_millis(300);
    pool.set_config(world.config.clone());
    let error = pool
        .send(&pair, "[[slow:600000]]".to_owned())
        .await
        .unwrap_err();
    let PoolError::Turn {
        source: TurnError::TimedOut { after, .. },
        ..
    } = error
    else {
        panic!("expected a timeout, got {error:?}");
    };
    assert_eq!(after, Duration::from_millis(300));
    // The same process served it (no restart was needed for a timeout).
    assert_eq!(world.starts("a").len(), 1);
    let status = pool.status();
    assert_eq!(status.pairs[0].pid, Some(first.pid));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_keep_their_old_values() {
    let mut world = World::new();
    world.team("a", &[]);
    let pool = world.pool().await;
    let mut config = world.config.clone();
    config.settings.http_port = 1700;
    config.database.in_memory = false;
    config.database.path = world.path().join("elsewhere.db");
    config.settings.max_queue_per_pair = 1;
    let changes = pool.set_config(config);
    let restart: Vec<_> = changes
        .needs_restart
        .iter()
        .map(|change| change.key.as_str())
        .collect();
    assert_eq!(
        restart,
        ["settings.httpPort", "database.path", "database.inMemory"]
    );
    let applied = pool.config();
    assert_eq!(applied.settings.http_port, 1615);
    assert!(applied.database.in_memory);
    assert!(!world.path().join("elsewhere.db").exists());
    // maxQueuePerPair applies at once, to a pair that already exists too.
    assert_eq!(applied.settings.max_queue_per_pair, 1);
    let pair = pool.pair("me", "a").unwrap();
    let _running = submit_running(&pool, &pair, "[[slow:600000]]").await;
    let _one = pool
        .submit(&pair, "one".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let Err(error) = pool.submit(&pair, "two".to_owned(), MessageMode::Ask).await else {
        panic!("a second queued message was accepted with maxQueuePerPair: 1");
    };
    assert!(
        matches!(error, PoolError::QueueFull { limit: 1, .. }),
        "{error:?}"
    );
    let mut raised = pool.config().as_ref().clone();
    raised.settings.max_queue_per_pair = 2;
    pool.set_config(raised);
    pool.submit(&pair, "two".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    pool.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// The binary.

/// No lines to add to a team in [`fake_config_yaml`].
fn no_extra(_team: &str) -> String {
    String::new()
}

/// The next `config_reloaded` event: the file it came from and what changed.
fn config_reloaded(console: &mut Console) -> (Option<PathBuf>, ConfigChanges) {
    match console.event("config reloaded", |event| {
        matches!(event, PoolEvent::ConfigReloaded { .. })
    }) {
        PoolEvent::ConfigReloaded { file, changes } => (file, changes),
        _ => unreachable!(),
    }
}

/// The next `config_rejected` event's error.
fn config_rejected(console: &mut Console) -> String {
    match console.event("config rejected", |event| {
        matches!(event, PoolEvent::ConfigRejected { .. })
    }) {
        PoolEvent::ConfigRejected { error, .. } => error,
        _ => unreachable!(),
    }
}

/// The next `exited` event not looked at yet (of `team`'s pair, or of any), and why the
/// process ended.
fn exited_event(console: &mut Console, what: &str, team: Option<&str>) -> ExitReason {
    match console.event(what, |event| {
        matches!(event, PoolEvent::Exited { pair, .. }
            if team.is_none_or(|team| pair.target.as_str() == team))
    }) {
        PoolEvent::Exited { reason, .. } => reason,
        _ => unreachable!(),
    }
}

#[test]
fn console_applies_valid_edits_and_keeps_the_old_config_on_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-reload-{}", uuid::Uuid::new_v4());
    let settings = "  maxProcesses: 4\n";
    let file = write_fake_config(dir.path(), &marker, &["a", "c"], settings);
    let mut console = Console::start(Some(&file), dir.path(), true);
    console.logs.wait_for(
        "the watcher started",
        "for config changes (settings.hotReloadConfig)",
    );
    for team in ["a", "c"] {
        console.send(team, "hi");
    }

    // Add a team: usable without a restart.
    let valid = fake_config_yaml(dir.path(), &marker, &["a", "b", "c"], settings, &no_extra);
    replace_file(&file, &valid);
    let (from, changes) = config_reloaded(&mut console);
    assert_eq!(changes.teams_added, [TeamName::new("b").unwrap()]);
    assert_eq!(from.as_deref(), Some(file.as_path()));
    let outcome = console.send("b", "hello b");
    assert_eq!(outcome.result.answer, "fake answer #1: hello b");
    console
        .logs
        .wait_for("the reload is logged", "configuration reloaded from");
    assert_contains(&console.logs.text(), "teams added: b");

    // Invalid YAML: refused with file, line and column; the old config stays.
    replace_file(&file, &format!("{valid}  broken: [\n"));
    let error = config_rejected(&mut console);
    assert_contains(&error, &format!("{}:", file.display()));
    assert_contains(&error, "invalid YAML");
    console.logs.wait_for(
        "the refusal is logged",
        "not applied; the configuration in force stays",
    );
    let shown_at = format!("{}:", file.display());
    assert!(
        console
            .logs
            .text()
            .lines()
            .any(|line| line.starts_with(&shown_at)
                && line[shown_at.len()..].starts_with(|c: char| c.is_ascii_digit())),
        "stderr names file:line:\n{}",
        console.logs.text()
    );
    for team in ["a", "b"] {
        console.send(team, "still here");
    }

    // A team whose directory does not exist: refused, naming the key and its line.
    let missing = valid.replace(
        &format!("path: {}\n", dir.path().join("c").display()),
        &format!("path: {}\n", dir.path().join("nowhere").display()),
    );
    replace_file(&file, &missing);
    let error = config_rejected(&mut console);
    let line = missing
        .lines()
        .position(|line| line.contains("nowhere"))
        .unwrap()
        + 1;
    assert_contains(&error, &format!("{}:{line}:", file.display()));
    assert_contains(&error, "teams.c.path: directory does not exist");
    console.logs.wait_for(
        "the path error is logged",
        "teams.c.path: directory does not exist",
    );
    console.send("c", "still configured");

    // Remove a team: new messages to it fail with the unknown-team error; its process stops.
    replace_file(
        &file,
        &fake_config_yaml(dir.path(), &marker, &["a", "c"], settings, &no_extra),
    );
    let (_, changes) = config_reloaded(&mut console);
    assert_eq!(changes.teams_removed, [TeamName::new("b").unwrap()]);
    let error =
        console.refused(json!({"op": "send", "from": "me", "to": "b", "message": "anyone?"}));
    assert_contains(&error, "unknown team 'b'; known teams: a, c");
    let reason = exited_event(&mut console, "b's process stopped", Some("b"));
    assert_eq!(reason, ExitReason::TeamRemoved);

    // Lower maxProcesses: idle processes are stopped down to the bound.
    replace_file(
        &file,
        &fake_config_yaml(
            dir.path(),
            &marker,
            &["a", "c"],
            "  maxProcesses: 1\n",
            &no_extra,
        ),
    );
    let (_, changes) = config_reloaded(&mut console);
    assert_eq!(
        changes.settings_changed,
        [SettingChange {
            key: "settings.maxProcesses".to_owned(),
            from: "4".to_owned(),
            to: "1".to_owned(),
        }]
    );
    let reason = exited_event(&mut console, "an idle process stopped", None);
    assert_eq!(reason, ExitReason::OverMaxProcesses);
    let status: Status = console.ok(json!({"op": "status"}));
    assert_eq!(status.status.max_processes, 1);
    assert_eq!(status.status.live, 1);

    // No team env value ever reached the logs.
    assert!(
        !console.logs.text().contains("hunter2"),
        "a team env value was logged"
    );
    console.stop();
    wait_for_no_processes(&marker);
}

/// A config file emptied in place (an editor or a script about to write it again) is never
/// read as "remove every team": it is refused, and the teams work on.
#[test]
fn an_emptied_config_file_removes_no_team() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-reload-empty-{}", uuid::Uuid::new_v4());
    let file = write_fake_config(dir.path(), &marker, &["a"], "");
    let original = std::fs::read_to_string(&file).unwrap();
    let mut console = Console::start(Some(&file), dir.path(), true);
    console.logs.wait_for(
        "the watcher started",
        "for config changes (settings.hotReloadConfig)",
    );
    console.send("a", "before");
    std::fs::write(&file, "").unwrap();
    let error = config_rejected(&mut console);
    assert_contains(&error, "the file is empty");
    assert_contains(&error, "`teams: {}`");
    console
        .logs
        .wait_for("the warning", "is empty; the configuration in force stays");
    let outcome = console.send("a", "while empty");
    assert_eq!(outcome.result.answer, "fake answer #2: while empty");
    // Only comments is empty too.
    std::fs::write(&file, "# rewriting\n").unwrap();
    assert_contains(&config_rejected(&mut console), "the file is empty");
    // The file written again: nothing changed.
    std::fs::write(&file, &original).unwrap();
    console.logs.wait_for(
        "the file re-read",
        "re-read: nothing that Iris uses changed",
    );
    assert!(
        !console.logs.text().contains("teams removed"),
        "{}",
        console.logs.text()
    );
    console.stop();
    wait_for_no_processes(&marker);
}

#[test]
fn a_config_file_created_after_start_applies_to_a_running_server() {
    let home = tempfile::tempdir().unwrap();
    let marker = format!("iris-reload-serve-{}", uuid::Uuid::new_v4());
    let mut server = Server::start(None, home.path());
    let file = home.path().join("config.yaml");
    // Without a file, the server says how to add teams.
    server
        .logs
        .wait_for("the hint", "running on embedded defaults with no teams");
    assert_contains(
        &server.logs.text(),
        "`iris init` and `iris add-team NAME PATH`",
    );
    server.logs.wait_for(
        "the watcher started",
        &format!(
            "watching {} or {} for config changes",
            file.display(),
            home.path().join("config.yml").display()
        ),
    );
    let port = server.port().to_string();
    let ask = |team: &str| {
        iris_command(None, home.path())
            .args(["ask", team, "hello", "--from", "me", "--port", &port])
            .output()
            .unwrap()
    };
    let output = ask("backend");
    assert!(!output.status.success());
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "unknown team 'backend'; known teams: none",
    );

    replace_file(
        &file,
        &fake_config_yaml(home.path(), &marker, &["backend"], "", &no_extra),
    );
    server
        .logs
        .wait_for("the new file is applied", "teams added: backend");
    let output = ask("backend");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "fake answer #1: hello"
    );
    assert!(server.terminate().success());
    wait_for_no_processes(&marker);
    assert!(
        !server.logs.text().contains("hunter2"),
        "a team env value was logged"
    );
}

#[test]
fn hot_reload_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-reload-off-{}", uuid::Uuid::new_v4());
    let file = write_fake_config(dir.path(), &marker, &["a"], "  hotReloadConfig: true\n");
    let mut console = Console::start(Some(&file), dir.path(), true);
    console.logs.wait_for(
        "the watcher started",
        "for config changes (settings.hotReloadConfig)",
    );
    // Turning it off is the last edit applied.
    replace_file(
        &file,
        &fake_config_yaml(
            dir.path(),
            &marker,
            &["a", "b"],
            "  hotReloadConfig: false\n",
            &no_extra,
        ),
    );
    let (_, changes) = config_reloaded(&mut console);
    assert_eq!(changes.teams_added, [TeamName::new("b").unwrap()]);
    console.logs.wait_for(
        "the watcher stopped",
        "settings.hotReloadConfig is now false: no longer watching",
    );
    console.send("b", "hi");
    console.stop();

    // Off from the start: no watcher.
    let mut console = Console::start(Some(&file), dir.path(), true);
    console.send("a", "hi");
    console.logs.wait_for(
        "the watcher is off",
        "settings.hotReloadConfig is false: edits of the config file apply after a restart",
    );
    console.stop();
    wait_for_no_processes(&marker);
}
