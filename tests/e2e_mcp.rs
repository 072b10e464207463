//! End to end through the front door: a real `iris serve` process, real MCP clients (rmcp over
//! Streamable HTTP), and the real Claude Code CLI as every team's agent, offline against the
//! in-process fake Messages API (`docs/fake-api.md`). At most two of these run at once
//! (`.config/nextest.toml`): each real agent takes ~200 MB and ~1 s to start.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
#[path = "e2e/support.rs"]
mod support;

use common::{assert_contains, assert_cost, call, typed, wait_for};
use iris::agent::TranscriptEntry;
use iris::api::{
    CallerStatus, Cancel, CancelStatus, MessageOutcome, MessageView, ReportPage, TeamStatusPage,
};
use iris::config::GrantPermission;
use iris::store::MessageState;
use serde_json::json;
use support::{RealWorld, TURN_COST_USD, ask, connect};

/// Tests 1 and 2: the answer of the fake model, with exactly one model request for a first
/// message (starting the agent costs none); the next message on the pair carries the first
/// exchange; another caller's conversation with the same team does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_over_mcp_keep_each_pair_its_own_conversation() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;

    let first = ask(&client, "frontend", "backend", "the word is ochre").await;
    assert_eq!(first.status, CallerStatus::Completed, "{first:?}");
    assert_eq!(
        first.answer.as_deref(),
        Some("fake answer to: the word is ochre")
    );
    assert!(!first.is_error);
    assert_cost(first.cost_usd.unwrap(), TURN_COST_USD);
    let calls = world.api.messages_calls();
    assert_eq!(
        calls.len(),
        1,
        "one model request, none to start: {calls:#?}"
    );
    assert_eq!(
        calls[0].session_id,
        first.session_id.map(|id| id.to_string()),
        "the request belongs to the pair's session"
    );

    let second = ask(&client, "frontend", "backend", "which word? [[history]]").await;
    assert_eq!(
        second.answer.as_deref(),
        Some("history: the word is ochre | which word? [[history]]")
    );
    assert_eq!(second.session_id, first.session_id);

    let other = ask(&client, "mobile", "backend", "which word? [[history]]").await;
    assert_eq!(
        other.answer.as_deref(),
        Some("history: which word? [[history]]")
    );
    assert_ne!(other.session_id, first.session_id);
    assert_eq!(world.api.messages_calls().len(), 3);

    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;
}

/// Tests 3 and 8: after Iris stops and starts again, the next message resumes the same
/// session (its history reaches the model again), and every message's recorded cost is its
/// own turn's, also after the resume (the CLI restores its cumulative total).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_iris_resumes_the_session_and_costs_stay_per_turn() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let first = ask(&client, "frontend", "backend", "remember teal").await;
    assert_eq!(first.status, CallerStatus::Completed, "{first:?}");
    let second = ask(&client, "frontend", "backend", "and amber").await;
    assert_cost(second.cost_usd.unwrap(), TURN_COST_USD);
    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;

    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let third = ask(
        &client,
        "frontend",
        "backend",
        "what did I say? [[history]]",
    )
    .await;
    assert_eq!(third.status, CallerStatus::Completed, "{third:?}");
    assert_eq!(third.session_id, first.session_id);
    assert_eq!(
        third.answer.as_deref(),
        Some("history: remember teal | and amber | what did I say? [[history]]")
    );
    let resumed = world.api.messages_calls();
    assert_eq!(resumed.len(), 3);
    assert_eq!(
        resumed[2].prompts(),
        ["remember teal", "and amber", "what did I say? [[history]]"]
    );
    assert_cost(third.cost_usd.unwrap(), TURN_COST_USD);
    let fourth = ask(&client, "frontend", "backend", "once more").await;
    assert_cost(fourth.cost_usd.unwrap(), TURN_COST_USD);

    // The report has each message's own cost; the session's total is their sum.
    let report: ReportPage = typed(
        &client
            .call_tool(call(
                "session_report",
                json!({"fromTeam": "frontend", "team": "backend"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(report.messages.len(), 4, "{report:?}");
    for message in &report.messages {
        assert_cost(message.cost_usd.unwrap(), TURN_COST_USD);
    }
    assert_cost(report.total_cost_usd, 4.0 * TURN_COST_USD);

    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;
}

/// Test 4: `session_cancel` interrupts a slowly streaming answer; the message ends
/// `cancelled`, and the next message on the pair works on the same process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cancel_interrupts_a_slow_answer() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let pending: MessageOutcome = typed(
        &client
            .call_tool(call(
                "send_message",
                json!({"fromTeam": "frontend", "toTeam": "backend", "message": "take your time [[slow:60000]]", "timeout": 0}),
            ))
            .await
            .unwrap(),
    );
    let id = pending.message_id;
    // The model has started answering (a slow stream is open) before the cancel.
    wait_for("the slow stream to start", || {
        world.calls_for("[[slow:60000]]") == 1
    })
    .await;
    let cancelled: Cancel = typed(
        &client
            .call_tool(call(
                "session_cancel",
                json!({"fromTeam": "frontend", "team": "backend", "messageId": id}),
            ))
            .await
            .unwrap(),
    );
    assert_ne!(
        cancelled.status,
        CancelStatus::Message(CallerStatus::Failed),
        "{cancelled:?}"
    );
    let status: MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"messageId": id, "timeout": 120_000}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(status.status, CallerStatus::Cancelled, "{status:?}");
    assert_eq!(status.state, MessageState::Cancelled);
    let slow = world
        .api
        .messages_calls()
        .into_iter()
        .find(|request| request.prompt.as_deref() == Some("take your time [[slow:60000]]"))
        .unwrap();
    assert!(slow.client_closed, "the CLI dropped the stream: {slow:?}");

    let next = ask(&client, "frontend", "backend", "still there?").await;
    assert_eq!(next.status, CallerStatus::Completed, "{next:?}");
    assert_eq!(next.answer.as_deref(), Some("fake answer to: still there?"));
    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;
}

/// Test 5: the model asks to run `Bash` (`touch`); Iris answers the CLI's permission
/// request from the team's `grantPermission`: yes → the file exists and the transcript
/// records the allow; no → no file, and the denial is recorded and returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_follow_grant_permission() {
    let mut world = RealWorld::new().await;
    world.team("trusted").grant_permission = GrantPermission::Yes;
    world.team("careful").grant_permission = GrantPermission::No;
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let touch = |file: &str| format!(r#"please [[tool:Bash:{{"command":"touch {file}"}}]]"#);

    let allowed = ask(&client, "lead", "trusted", &touch("made-by-trusted")).await;
    assert_eq!(allowed.status, CallerStatus::Completed, "{allowed:?}");
    assert!(
        world
            .config
            .teams
            .values()
            .any(|team| team.name.as_str() == "trusted"
                && team.path.join("made-by-trusted").exists())
    );
    let denied = ask(&client, "lead", "careful", &touch("made-by-careful")).await;
    assert_eq!(denied.status, CallerStatus::Completed, "{denied:?}");
    // The model saw the denial as the tool's error result, and said so in its answer.
    assert_contains(denied.answer.as_deref().unwrap(), "[tool_error]");
    let careful = world
        .config
        .teams
        .values()
        .find(|team| team.name.as_str() == "careful")
        .unwrap();
    assert!(!careful.path.join("made-by-careful").exists());

    let transcript = |team: &str| {
        let client = &client;
        let team = team.to_owned();
        async move {
            let report: ReportPage = typed(
                &client
                    .call_tool(call(
                        "session_report",
                        json!({"fromTeam": "lead", "team": team}),
                    ))
                    .await
                    .unwrap(),
            );
            report.messages[0].transcript.clone()
        }
    };
    let permission = |transcript: &[TranscriptEntry], allowed: bool| {
        transcript.iter().any(|entry| {
            matches!(entry, TranscriptEntry::Permission { tool, allowed: given, .. }
                if tool == "Bash" && *given == allowed)
        })
    };
    let bash = |transcript: &[TranscriptEntry], command: &str| {
        transcript.iter().any(|entry| {
            matches!(entry, TranscriptEntry::ToolUse { name, input }
                if name == "Bash" && input.contains(command))
        })
    };
    let allowed_transcript = transcript("trusted").await;
    assert!(
        permission(&allowed_transcript, true),
        "{allowed_transcript:?}"
    );
    assert!(
        bash(&allowed_transcript, "touch made-by-trusted"),
        "{allowed_transcript:?}"
    );
    let denied_transcript = transcript("careful").await;
    assert!(
        permission(&denied_transcript, false),
        "{denied_transcript:?}"
    );
    assert!(
        denied_transcript
            .iter()
            .any(|entry| matches!(entry, TranscriptEntry::ToolResult { is_error: true, .. })),
        "{denied_transcript:?}"
    );
    assert!(
        bash(&denied_transcript, "touch made-by-careful"),
        "{denied_transcript:?}"
    );

    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;
}

/// Test 6: A asks B; B's model calls Iris's `send_message` (to C) through the MCP server
/// Iris gave B's process (`--mcp-config`); the call is attributed to B, C answers, and B's
/// answer carries C's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_back_into_iris_as_its_own_team() {
    let mut world = RealWorld::new().await;
    world.team("b");
    world.team("c");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let relay = json!({"toTeam": "c", "message": "what is the status of C?"});
    let answer = ask(
        &client,
        "a",
        "b",
        &format!("ask C for me [[tool:mcp__iris__send_message:{relay}]]"),
    )
    .await;
    assert_eq!(answer.status, CallerStatus::Completed, "{answer:?}");
    // C's structured result, as B's tool call received it (the wire JSON, in B's answer).
    let text = answer.answer.as_deref().unwrap();
    assert_contains(text, "[tool_result]");
    assert_contains(text, r#""fromTeam":"b""#);
    assert_contains(text, r#""toTeam":"c""#);
    assert_contains(text, "fake answer to: what is the status of C?");

    // C's conversation is B's: the pair b -> c exists and holds the message.
    let status: TeamStatusPage = typed(
        &client
            .call_tool(call("team_status", json!({"fromTeam": "b", "team": "c"})))
            .await
            .unwrap(),
    );
    assert_eq!(status.teams[0].session_turns, 1, "{status:?}");
    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;
}

/// Test 7: an API error reaches the caller as a failed message carrying the error text,
/// not as an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_error_is_a_failed_message() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let result = client
        .call_tool(call(
            "ask_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": "[[error:500:the model is down]]", "timeout": 120_000}),
        ))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let body: MessageOutcome = typed(&result);
    assert_eq!(body.status, CallerStatus::Failed, "{body:?}");
    assert!(body.is_error);
    let answer = body.answer.as_deref().unwrap();
    assert_contains(answer, "API Error: 500");
    assert_contains(answer, "the model is down");
    let status: MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"messageId": body.message_id}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(status.state, MessageState::Failed, "{status:?}");
    assert_contains(status.error.as_deref().unwrap(), "API Error: 500");
    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;
}

/// Test 9: `kill -9` of `iris serve` in the middle of a turn leaves no `claude` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_iris_mid_turn_leaves_no_claude_process() {
    let mut world = RealWorld::new().await;
    world.team("backend");
    world.team("infra");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    // One warm idle agent, and one in the middle of a slow answer.
    let warm = ask(&client, "frontend", "infra", "hello").await;
    assert_eq!(warm.status, CallerStatus::Completed, "{warm:?}");
    client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": "long job [[slow:60000]]", "timeout": 0}),
        ))
        .await
        .unwrap();
    wait_for("the slow stream to start", || {
        world.calls_for("[[slow:60000]]") == 1
    })
    .await;
    let agents = world.live_processes();
    assert!(agents.len() >= 2, "two agents are alive: {agents:?}");
    let _ = client.cancel().await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id().cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    server.0.wait().unwrap();
    wait_for("every claude process to be gone", || {
        world.live_processes().is_empty()
    })
    .await;
}

/// A cycle with the real CLI: a asks b, b's agent asks a, a's agent asks b again (the fake
/// Messages API scripts each `mcp__iris__send_message` call). The last call would queue
/// behind the first turn, which waits for it: Iris refuses it at once, naming the cycle, and
/// every turn completes instead of waiting for a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_between_real_agents_is_refused_at_once() {
    let mut world = RealWorld::new().await;
    world.team("a");
    world.team("b");
    // Each prompt holds the next one's text: each request takes its own entry, in order.
    for (matches, directives) in [
        ("ask A", "[[usage:12:5]]".to_owned()),
        (
            "loop back",
            format!(
                "[[tool:mcp__iris__send_message:{}]]",
                json!({"toTeam": "b", "message": "third hop"})
            ),
        ),
    ] {
        world.api.script(iris::testing::fake_api::ScriptEntry {
            matches: Some(matches.to_owned()),
            directives,
        });
    }
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let relay = json!({"toTeam": "a", "message": "loop back"});
    let started = std::time::Instant::now();
    let outcome = ask(
        &client,
        "a",
        "b",
        &format!("ask A [[tool:mcp__iris__send_message:{relay}]]"),
    )
    .await;
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    let answer = outcome.answer.as_deref().unwrap();
    assert_contains(answer, "would deadlock: a → b → a → b");
    assert_eq!(world.calls_for("third hop"), 0, "the third hop never ran");
    eprintln!(
        "the cycle was refused and every turn ended after {:?}",
        started.elapsed()
    );
    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || world.live_processes().is_empty()).await;
}
