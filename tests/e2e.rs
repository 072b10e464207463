//! End to end with the real Claude Code CLI (the pinned version `scripts/install-claude`
//! installs), offline: Iris pools drive real `claude` processes that talk to the in-process
//! fake Messages API (`iris::testing::fake_api`, `docs/fake-api.md`). Each real process
//! takes ~200 MB and ~1 s to start, so these tests are few, and nextest runs at most two of
//! them at once (`.config/nextest.toml`).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
#[path = "e2e/support.rs"]
mod support;

use std::process::Command;

use common::{IRIS, assert_contains, assert_cost, real_claude, wait_event};
use iris::agent::TranscriptEntry;
use iris::config::GrantPermission;
use iris::pool::{PoolEvent, transcript_path};
use iris::store::{MessageMode, MessageState, Store};
use support::{RealWorld, TURN_COST_USD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_gets_the_fake_models_answer_with_one_api_call() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();

    let first = pool.send(&pair, "hello from e2e".to_owned()).await.unwrap();
    assert!(first.cold);
    let result = &first.result;
    assert_eq!(result.answer, "fake answer to: hello from e2e");
    assert!(!result.is_error, "{result:?}");
    assert_eq!(result.subtype, "success");
    assert_eq!(result.terminal_reason.as_deref(), Some("completed"));
    assert_eq!(result.session_id, Some(first.session_id.to_string()));
    // The CLI's own usage object, kept as it reported it.
    assert_eq!(result.usage.as_ref().unwrap()["input_tokens"], 12);
    assert_cost(result.cost_usd, TURN_COST_USD);

    // Starting the process cost no model turn: the fake saw exactly this message's call.
    let calls = world.api.messages_calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call.prompt.as_deref(), Some("hello from e2e"));
    assert_eq!(call.session_id, Some(first.session_id.to_string()));
    assert_eq!(call.query.as_deref(), Some("beta=true"));
    assert!(call.stream && call.completed);
    // Nothing but Messages calls (and, at most, HEAD probes) reached the fake.
    for request in world.api.requests() {
        assert!(
            request.is_messages_call() || request.method == "HEAD",
            "unexpected request {} {}",
            request.method,
            request.path
        );
    }

    // A warm second turn with a tool call: Iris grants the permission, the CLI runs Bash
    // for real, and the fake model quotes the tool result.
    let second = pool
        .send(
            &pair,
            r#"run it [[tool:Bash:{"command":"touch e2e-made-this && echo e2e-tool-ran","description":"make a file"}]]"#
                .to_owned(),
        )
        .await
        .unwrap();
    assert!(!second.cold);
    assert_eq!(second.pid, first.pid);
    assert!(!second.result.is_error, "{:?}", second.result);
    assert_contains(&second.result.answer, "[tool_result] e2e-tool-ran");
    let transcript = &second.result.transcript;
    assert!(
        transcript.iter().any(|entry| matches!(
            entry,
            TranscriptEntry::Permission { tool, allowed: true, .. } if tool == "Bash"
        )),
        "{transcript:?}"
    );
    assert!(
        transcript.iter().any(|entry| matches!(
            entry,
            TranscriptEntry::ToolResult { content, is_error: false } if content.contains("e2e-tool-ran")
        )),
        "{transcript:?}"
    );
    let team_dir = &world.config.team("backend").unwrap().path;
    assert!(team_dir.join("e2e-made-this").exists());
    // Two calls for the tool round trip; the conversation carries the first exchange.
    let calls = world.api.messages_calls();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[2].prompts()[0], "hello from e2e");
    assert_cost(second.result.cost_usd, 2.0 * TURN_COST_USD);

    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

/// The transcript's permission decision for `tool` in `result`: (allowed, who decided and
/// the denial's reason).
fn permission_of(result: &iris::agent::TurnResult, tool: &str) -> (bool, String) {
    result
        .transcript
        .iter()
        .find_map(|entry| match entry {
            TranscriptEntry::Permission {
                tool: name,
                allowed,
                reason,
                who,
                ..
            } if name == tool => Some((
                *allowed,
                format!(
                    "{} {}",
                    who.as_deref().unwrap_or_default(),
                    reason.as_deref().unwrap_or_default()
                ),
            )),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no permission decision for {tool}: {result:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_rules_decide_before_grant_permission_and_apply_on_reload() {
    let mut world = RealWorld::new().await;
    let rules = support::rules;
    let team = world.team("backend");
    team.grant_permission = GrantPermission::No;
    team.permissions = rules(&["Write(notes/**)"], &["Write(notes/secret*)"]);
    let dir = team.path.clone();
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let write = |path: &std::path::Path| {
        format!(
            r#"write it [[tool:Write:{{"file_path":"{}","content":"from e2e"}}]]"#,
            path.display()
        )
    };

    // An allow rule: written, nothing asked although grantPermission is no.
    let allowed = pool
        .send(&pair, write(&dir.join("notes/a.md")))
        .await
        .unwrap();
    assert!(dir.join("notes/a.md").exists(), "{:?}", allowed.result);
    let (ok, reason) = permission_of(&allowed.result, "Write");
    assert!(ok);
    assert_contains(&reason, "Write(notes/**)");

    // A deny rule beats an allow rule that also matches.
    let denied = pool
        .send(&pair, write(&dir.join("notes/secret.txt")))
        .await
        .unwrap();
    assert!(!dir.join("notes/secret.txt").exists());
    let (ok, reason) = permission_of(&denied.result, "Write");
    assert!(!ok);
    assert_contains(&reason, "rule `Write(notes/secret*)` in permissions.deny");
    // The model was told why, in the tool result of its next request.
    assert_contains(&denied.result.answer, "permissions.deny");

    // No rule: grantPermission decides.
    let outside = pool
        .send(&pair, write(&dir.join("src/x.rs")))
        .await
        .unwrap();
    assert!(!dir.join("src/x.rs").exists());
    let (ok, reason) = permission_of(&outside.result, "Write");
    assert!(!ok);
    assert_contains(&reason, "grantPermission: no");

    // An edited rule applies to the running agent from its next request, without a restart.
    let mut config = world.config.clone();
    config.teams.get_mut("backend").unwrap().permissions = rules(&["Write(src/**)"], &[]);
    let changes = pool.set_config(config);
    assert_eq!(changes.teams_changed[0].keys, ["permissions"]);
    let after = pool
        .send(&pair, write(&dir.join("src/y.rs")))
        .await
        .unwrap();
    assert_eq!(after.pid, allowed.pid, "the same process");
    assert!(dir.join("src/y.rs").exists(), "{:?}", after.result);
    assert!(permission_of(&after.result, "Write").0);

    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_error_fails_the_message_and_its_prompt_is_never_seen_again() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let before = pool
        .send(&pair, "before the error".to_owned())
        .await
        .unwrap();
    assert!(!before.result.is_error);

    let ticket = pool
        .submit(&pair, "[[error:500:boom]]".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let id = ticket.id();
    let outcome = ticket.outcome().await.unwrap();
    let result = &outcome.result;
    assert!(result.is_error, "{result:?}");
    assert_eq!(result.terminal_reason.as_deref(), Some("api_error"));
    assert_contains(&result.answer, "API Error: 500");
    assert_eq!(world.calls_for("[[error:500:boom]]"), 1);

    let record = pool.message(id, &iris::pool::Viewer::Anyone).await.unwrap();
    assert_eq!(record.state, MessageState::Failed);
    assert!(record.is_error);
    assert_contains(record.error.as_deref().unwrap(), "API Error: 500");

    // The process survives an API error and answers the next message. Left alone, the CLI
    // would keep the unanswered prompt and send it again together with the next one, so
    // the model would answer a message reported as failed: Iris has the agent take it back.
    let next = pool
        .send(&pair, "after the error".to_owned())
        .await
        .unwrap();
    assert_eq!(next.pid, outcome.pid);
    assert_eq!(next.result.answer, "fake answer to: after the error");
    assert!(!next.result.is_error);
    let calls = world.api.messages_calls();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[2].prompts(), ["before the error", "after the error"]);

    // Nor does it come back from the session file when a restarted pool resumes.
    pool.shutdown().await;
    drop(pool);
    assert!(world.live_processes().is_empty());
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let resumed = pool
        .send(&pair, "after a restart".to_owned())
        .await
        .unwrap();
    assert!(resumed.cold);
    assert_eq!(resumed.session_id, next.session_id);
    assert!(!resumed.result.is_error);
    let calls = world.api.messages_calls();
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert_eq!(
        calls[3].prompts(),
        ["before the error", "after the error", "after a restart"]
    );

    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_is_retried_and_a_running_message_can_be_cancelled() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();

    // A stream cut after message_start: the CLI asks again without streaming.
    let cut = pool
        .send(&pair, "cut short [[cut]]".to_owned())
        .await
        .unwrap();
    assert_eq!(cut.result.answer, "fake answer to: cut short [[cut]]");
    assert!(!cut.result.is_error);
    let calls = world.api.messages_calls();
    let kinds: Vec<(bool, &str)> = calls
        .iter()
        .map(|call| (call.stream, call.reply.as_str()))
        .collect();
    assert_eq!(kinds, [(true, "text+cut"), (false, "text")]);

    // A turn whose answer streams forever is interrupted by a cancel; the CLI drops the
    // stream, and the process takes the next message.
    let ticket = pool
        .submit(
            &pair,
            "endless [[slow:600000]]".to_owned(),
            MessageMode::Ask,
        )
        .await
        .unwrap();
    let id = ticket.id();
    common::wait_for("the endless call", || world.calls_for("endless") == 1).await;
    assert_eq!(
        pool.cancel(id, &iris::pool::Viewer::Anyone).await.unwrap(),
        MessageState::Cancelled
    );
    let outcome = ticket.outcome().await.unwrap();
    assert!(outcome.result.interrupted && outcome.result.is_error);
    assert_eq!(
        outcome.result.terminal_reason.as_deref(),
        Some("aborted_streaming")
    );
    common::wait_for("the client to drop the endless stream", || {
        world
            .api
            .messages_calls()
            .iter()
            .any(|call| call.client_closed)
    })
    .await;
    let next = pool.send(&pair, "still there?".to_owned()).await.unwrap();
    assert_eq!(next.pid, outcome.pid);
    assert_eq!(next.result.answer, "fake answer to: still there?");
    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_answered_without_a_model_turn() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    world.config.settings.health_check_interval = std::time::Duration::from_millis(50);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut events = pool.subscribe();
    let first = pool.send(&pair, "one".to_owned()).await.unwrap();
    for _ in 0..3 {
        let event = wait_event(&mut events, "a passed health check", |event| {
            matches!(event, PoolEvent::HealthChecked { pid, .. } if *pid == first.pid)
                || matches!(event, PoolEvent::Unhealthy { .. })
        })
        .await;
        assert!(
            matches!(event, PoolEvent::HealthChecked { .. }),
            "{event:?}"
        );
    }
    // The checks cost no model call, and the same process takes the next turn.
    assert_eq!(world.api.messages_calls().len(), 1);
    let next = pool.send(&pair, "two".to_owned()).await.unwrap();
    assert_eq!(next.pid, first.pid);
    assert!(!next.cold);
    assert_eq!(next.result.answer, "fake answer to: two");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pool_resumes_the_conversation() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let first = pool
        .send(&pair, "remember the word ochre".to_owned())
        .await
        .unwrap();
    assert!(!first.result.is_error);
    pool.shutdown().await;
    drop(pool);
    assert!(world.live_processes().is_empty());

    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut events = pool.subscribe();
    let second = pool
        .send(&pair, "which word? [[history]]".to_owned())
        .await
        .unwrap();
    let spawning = wait_event(&mut events, "the spawn", |event| {
        matches!(event, PoolEvent::Spawning { .. })
    })
    .await;
    assert!(
        matches!(spawning, PoolEvent::Spawning { resume: true, session_id, .. } if session_id == first.session_id),
        "{spawning:?}"
    );
    assert!(second.cold);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(
        second.result.answer,
        "history: remember the word ochre | which word? [[history]]"
    );
    // The request the fake saw carries the first exchange, under the same session.
    let calls = world.api.messages_calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(
        calls[1].prompts(),
        ["remember the word ochre", "which word? [[history]]"]
    );
    assert_eq!(calls[1].session_id, Some(first.session_id.to_string()));
    // The CLI restores its cumulative total on resume; Iris still reports this turn's cost.
    assert_cost(second.result.cost_usd, TURN_COST_USD);
    assert_cost(second.result.total_cost_usd.unwrap(), 2.0 * TURN_COST_USD);
    let session = pool.session(&pair).await.unwrap().unwrap();
    assert_eq!(session.turns, 2);
    assert_cost(session.total_cost_usd, 2.0 * TURN_COST_USD);
    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_problems_at_spawn_are_corrected() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let first = pool.send(&pair, "first".to_owned()).await.unwrap();
    pool.shutdown().await;
    drop(pool);

    // The store forgets that the session has a transcript (as after a crash between the
    // turn and its record): the CLI refuses `--session-id` at startup ("already in use"),
    // and the pool resumes instead.
    let store = Store::open(&world.config.database).await.unwrap();
    store.mark_resumable(first.session_id, false).await.unwrap();
    store.close().await.unwrap();
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let second = pool
        .send(&pair, "second [[history]]".to_owned())
        .await
        .unwrap();
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(second.result.answer, "history: first | second [[history]]");
    pool.shutdown().await;
    drop(pool);

    // The transcript is gone: the CLI refuses `--resume` at startup ("No conversation
    // found"), and the pool starts a new session instead of failing forever.
    let team = world.config.team("backend").unwrap();
    std::fs::remove_file(transcript_path(team, first.session_id)).unwrap();
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut events = pool.subscribe();
    let third = pool
        .send(&pair, "third [[history]]".to_owned())
        .await
        .unwrap();
    let reset = wait_event(&mut events, "the session reset", |event| {
        matches!(event, PoolEvent::SessionReset { .. })
    })
    .await;
    assert!(
        matches!(reset, PoolEvent::SessionReset { old_session_id, session_id, .. }
            if old_session_id == first.session_id && session_id == third.session_id),
        "{reset:?}"
    );
    assert_ne!(third.session_id, first.session_id);
    assert_eq!(third.result.answer, "history: third [[history]]");
    assert!(!third.result.is_error);
    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

#[test]
fn doctor_reports_the_real_cli_version() {
    let claude = real_claude();
    let dir = tempfile::tempdir().unwrap();
    let team = dir.path().join("backend");
    std::fs::create_dir_all(&team).unwrap();
    let doctor = |claude_path: Option<&std::path::Path>, path_env: String| {
        let config = dir.path().join("config.yaml");
        let mut text = "settings:\n  httpPort: 1\n".to_owned();
        if let Some(claude_path) = claude_path {
            text.push_str(&format!("  claudePath: {}\n", claude_path.display()));
        }
        text.push_str(&format!(
            "teams:\n  backend:\n    path: {}\n",
            team.display()
        ));
        std::fs::write(&config, text).unwrap();
        let output = Command::new(IRIS)
            .arg("doctor")
            .env("IRIS_CONFIG_PATH", &config)
            .env("IRIS_HOME", dir.path().join("iris"))
            .env("HOME", dir.path())
            .env("PATH", path_env)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // As settings.claudePath.
    let report = doctor(Some(&claude), std::env::var("PATH").unwrap_or_default());
    assert_contains(
        &report,
        &format!(
            "ok   claude (settings.claudePath): {} (2.1.332 (Claude Code))",
            claude.display()
        ),
    );
    // Found on PATH.
    let bin_dir = claude.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let report = doctor(None, path);
    assert_contains(&report, "ok   claude (settings.claudePath): ");
    assert_contains(&report, "(2.1.332 (Claude Code))");
    // A version below the minimum is flagged (a stand-in: the pinned CLI is recent enough).
    let old = dir.path().join("old-claude");
    std::fs::write(&old, "#!/bin/sh\necho '2.0.5 (Claude Code)'\n").unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let report = doctor(Some(&old), std::env::var("PATH").unwrap_or_default());
    assert_contains(
        &report,
        &format!(
            "FAIL claude (settings.claudePath): {} is 2.0.5 (Claude Code), older than 2.1.0",
            old.display()
        ),
    );
}

/// `iris install` with the real `claude` on PATH registers Iris through `claude mcp add`
/// (user scope, HTTP), and `claude mcp` then knows it; `iris uninstall` removes it again.
#[test]
fn install_registers_iris_through_the_real_claude_mcp_add() {
    let claude = real_claude();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // Other settings in ~/.claude.json are the user's: they must survive.
    std::fs::write(
        home.join(".claude.json"),
        r#"{"userKey": "kept", "projects": {"/x": {"allowedTools": ["Bash"]}}}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        claude.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |program: &std::path::Path, args: &[&str]| {
        let output = Command::new(program)
            .args(args)
            .env("HOME", &home)
            .env("PATH", &path)
            .env("IRIS_HOME", dir.path().join("iris"))
            .env_remove("IRIS_CONFIG_PATH")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env_remove("CLAUDE_CONFIG_DIR")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{args:?} failed: {text}");
        text
    };
    let installed = run(
        std::path::Path::new(IRIS),
        &["install", "--url", "http://127.0.0.1:1/mcp"],
    );
    assert_contains(
        &installed,
        "with `claude mcp add --scope user --transport http iris http://127.0.0.1:1/mcp`",
    );
    // Claude Code's own settings file, as `claude mcp add` wrote it.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join(".claude.json")).unwrap()).unwrap();
    assert_eq!(config["mcpServers"]["iris"]["type"], "http");
    assert_eq!(
        config["mcpServers"]["iris"]["url"],
        "http://127.0.0.1:1/mcp"
    );
    assert_eq!(config["userKey"], "kept");
    assert_eq!(config["projects"]["/x"]["allowedTools"][0], "Bash");
    let listed = run(&claude, &["mcp", "get", "iris"]);
    assert_contains(&listed, "http://127.0.0.1:1/mcp");

    let removed = run(std::path::Path::new(IRIS), &["uninstall"]);
    assert_contains(&removed, "claude mcp remove --scope user iris");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join(".claude.json")).unwrap()).unwrap();
    assert!(config["mcpServers"].get("iris").is_none(), "{config}");
    assert_eq!(config["userKey"], "kept");
    // Again: nothing to remove, said so, and no error.
    let again = run(std::path::Path::new(IRIS), &["uninstall"]);
    assert_contains(&again, "Iris was not registered");
}
