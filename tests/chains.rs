//! Call chains between teams, on the fake agent (which calls Iris's MCP tools through its
//! agent URL when a prompt says `[[tool:mcp__iris__send_message:{...}]]`): a message that
//! would wait on its own chain is refused at once naming the cycle, a tell that cannot
//! deadlock goes through, chains stay within `maxCallDepth`, and budgets refuse new messages
//! with the figures. A real `iris serve`, rmcp clients.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{assert_contains, call, typed};
use iris::api::{CallerStatus, MessageOutcome, MessageView, ReportPage, TeamStatusPage};
use iris::store::MessageState;
use rmcp::ServiceExt;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

type Client = RunningService<rmcp::RoleClient, ()>;

/// A server on teams `teams` (fake agents allowed to use tools); `settings` and per-team extra
/// lines as in [`common::fake_config_yaml`].
fn serve(
    dir: &std::path::Path,
    teams: &[&str],
    settings: &str,
    team_extra: &dyn Fn(&str) -> String,
) -> common::Server {
    let marker = format!("iris-chains-{}", uuid::Uuid::new_v4());
    let yaml = common::fake_config_yaml(dir, &marker, teams, settings, team_extra);
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    common::Server::start(Some(&config), &dir.join("home"))
}

async fn connect(server: &common::Server) -> Client {
    ().serve(StreamableHttpClientTransport::from_uri(server.url()))
        .await
        .unwrap()
}

/// A directive that makes the agent call `tool` with `arguments`.
fn calls(tool: &str, arguments: &Value) -> String {
    format!("[[tool:mcp__iris__{tool}:{arguments}]]")
}

/// `from`'s report on its pair with `team`.
async fn report(client: &Client, from: &str, team: &str) -> ReportPage {
    typed(
        &client
            .call_tool(call(
                "session_report",
                json!({"fromTeam": from, "team": team}),
            ))
            .await
            .unwrap(),
    )
}

async fn ask(client: &Client, from: &str, to: &str, message: &str) -> MessageOutcome {
    typed(
        &client
            .call_tool(call(
                "send_message",
                json!({"fromTeam": from, "toTeam": to, "message": message, "timeout": 60_000}),
            ))
            .await
            .unwrap(),
    )
}

/// a asks b; b's agent asks a; a's agent asks b again: the last one would queue behind the
/// first turn, which waits for it. Refused at once, naming the cycle; the chain is recorded
/// and shown. The same loop closed with a tell (`quick_message`) goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_is_refused_at_once_and_a_tell_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["a", "b"], "", &|_| String::new());
    let client = connect(&server).await;
    let third = calls(
        "send_message",
        &json!({"toTeam": "b", "message": "third hop"}),
    );
    let second = calls("send_message", &json!({"toTeam": "a", "message": third}));
    let first = ask(&client, "a", "b", &second).await;
    assert_eq!(first.status, CallerStatus::Completed, "{first:?}");
    let answer = first.answer.unwrap();
    assert_contains(&answer, "would deadlock: a → b → a → b");
    assert_contains(&answer, &first.message_id.to_string());
    // b's message to a was sent during a's message to b, and says so.
    let sent_back = report(&client, "b", "a").await;
    let middle = &sent_back.messages[0];
    assert_eq!(middle.parent_id, Some(first.message_id));
    let view: MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"fromTeam": "b", "messageId": middle.message_id.to_string()}),
            ))
            .await
            .unwrap(),
    );
    let chain: Vec<(String, String)> = view
        .chain
        .iter()
        .map(|link| (link.from_team.to_string(), link.to_team.to_string()))
        .collect();
    assert_eq!(
        chain,
        [
            ("a".to_owned(), "b".to_owned()),
            ("b".to_owned(), "a".to_owned())
        ]
    );
    assert_eq!(view.chain[0].message_id, first.message_id);

    // A tell closing the loop cannot deadlock: it queues behind the first turn and runs after.
    let tell = calls(
        "quick_message",
        &json!({"toTeam": "b", "message": "later, please"}),
    );
    let second = calls("send_message", &json!({"toTeam": "a", "message": tell}));
    let outcome = ask(&client, "a", "b", &second).await;
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    let answer = outcome.answer.unwrap();
    assert!(!answer.contains("deadlock"), "{answer}");
    assert_contains(&answer, "queued");
    common::wait_for_async(
        "the tell delivered after the turn it was sent in",
        async || {
            let page = report(&client, "a", "b").await;
            page.messages.iter().any(|message| {
                message.message == "later, please" && message.state == MessageState::Completed
            })
        },
    )
    .await;
    client.cancel().await.unwrap();
}

/// `maxCallDepth: 2`: a person's message and one hop pass; the next hop is refused, naming
/// the chain and the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_stay_within_max_call_depth() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &["a", "b", "c", "d"],
        "  maxCallDepth: 2\n",
        &|_| String::new(),
    );
    let client = connect(&server).await;
    let deepest = calls(
        "send_message",
        &json!({"toTeam": "d", "message": "too deep"}),
    );
    let middle = calls("send_message", &json!({"toTeam": "c", "message": deepest}));
    let outcome = ask(&client, "a", "b", &middle).await;
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    let answer = outcome.answer.unwrap();
    assert_contains(
        &answer,
        "call chain too deep: a → b → c → d would be 3 messages long, and settings.maxCallDepth is 2",
    );
    client.cancel().await.unwrap();
}

/// Budgets: over `turnsPerHour` or `usdPerDay`, new messages to the team are refused with
/// the figures; `team_status` shows the use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_over_its_budget_refuses_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["counted", "costly"], "", &|team| match team {
        "counted" => "    budget:\n      turnsPerHour: 2\n".to_owned(),
        _ => "    budget: {usdPerDay: 0.5}\n".to_owned(),
    });
    let client = connect(&server).await;
    for n in 0..2 {
        let outcome = ask(&client, "me", "counted", &format!("turn {n}")).await;
        assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    }
    let refused = client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "me", "toTeam": "counted", "message": "one more"}),
        ))
        .await
        .unwrap();
    let error = common::tool_error(&refused);
    assert_contains(
        &error,
        "team 'counted' is over its budget: 2 turns in the last hour (budget.turnsPerHour 2)",
    );
    let spent = ask(&client, "me", "costly", "[[cost:0.6]] big job").await;
    assert_eq!(spent.status, CallerStatus::Completed, "{spent:?}");
    let refused = client
        .call_tool(call(
            "quick_message",
            json!({"fromTeam": "me", "toTeam": "costly", "message": "more"}),
        ))
        .await
        .unwrap();
    assert_contains(
        &common::tool_error(&refused),
        "$0.6000 spent in the last 24 hours (budget.usdPerDay 0.5)",
    );
    let status: TeamStatusPage = typed(
        &client
            .call_tool(call(
                "team_status",
                json!({"fromTeam": "me", "team": "counted"}),
            ))
            .await
            .unwrap(),
    );
    let budget = status.teams[0].budget.clone().unwrap();
    assert_eq!(budget.turns_last_hour, 2);
    assert_eq!(budget.turns_per_hour, Some(2));
    // `iris status` shows them too.
    let shown = common::iris_command(
        Some(&dir.path().join("config.yaml")),
        &dir.path().join("home"),
    )
    .args(["status", "--port", &server.port().to_string()])
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert_contains(
        &text,
        "budget counted: 2 of 2 turns in 1 h — OVER: new messages refused",
    );
    assert_contains(&text, "budget costly: $0.6000 of $0.5 in 24 h — OVER");
    client.cancel().await.unwrap();
}

/// A tell inside a chain breaks the wait: b's turn tells a something and goes on (asking c,
/// slowly); a's agent, answering the tell, asks b. That ask queues behind b's turn, which
/// does not wait for it: not a deadlock, and it is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_below_a_tell_is_not_a_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["a", "b", "c"], "", &|_| String::new());
    let client = connect(&server).await;
    let back = calls(
        "send_message",
        &json!({"toTeam": "b", "message": "and you?"}),
    );
    let tell = calls("quick_message", &json!({"toTeam": "a", "message": back}));
    let slow = calls(
        "send_message",
        &json!({"toTeam": "c", "message": "[[slow:2000]] take your time"}),
    );
    let first = ask(&client, "a", "b", &format!("{tell} {slow}")).await;
    assert_eq!(first.status, CallerStatus::Completed, "{first:?}");
    common::wait_for_async("the tell's turn to finish", async || {
        let page = report(&client, "b", "a").await;
        page.messages.first().is_some_and(|message| {
            message.state.is_final() && {
                let answer = message.answer.clone().unwrap_or_default();
                assert!(!answer.contains("deadlock"), "{answer}");
                assert_eq!(message.parent_id, Some(first.message_id));
                true
            }
        })
    })
    .await;
    client.cancel().await.unwrap();
}
