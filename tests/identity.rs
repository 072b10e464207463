//! Caller identity: agents call back into Iris through their own URL and are attributed to
//! their team; team bearer tokens identify HTTP callers; a server that must not be open
//! refuses requests without a token. Real `iris serve` processes, fake agents, rmcp clients.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{
    IRIS, World, assert_contains, call, processes_with_marker, tool_error, typed, wait_for,
};
use iris::api::{CallerStatus, MessageOutcome, MessageView, TeamList, TeamStatusPage};
use iris::config::Secret;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const TEAM_A_TOKEN: &str = "token-of-team-a-0123456789";
const SERVER_TOKEN: &str = "server-wide-token-0123456789";

/// Teams a, b and c on the fake agent (see [`common::fake_config_yaml`]; tools allowed; a has
/// a bearer token); `settings` holds more lines of the `settings` section.
fn write_config(dir: &std::path::Path, marker: &str, settings: &str) -> std::path::PathBuf {
    let yaml = common::fake_config_yaml(dir, marker, &["a", "b", "c"], settings, &|team| {
        if team == "a" {
            format!("    token: {TEAM_A_TOKEN}\n")
        } else {
            String::new()
        }
    });
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// The Iris MCP URL of the agent `pid`: in the 0600 file its `--mcp-config` names, never on
/// its command line (which every local user can read).
fn agent_url(pid: u32) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let cmdline =
        String::from_utf8(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).unwrap();
    let file = cmdline
        .split('\0')
        .find_map(|arg| arg.strip_prefix("--mcp-config="))
        .expect("the agent is given --mcp-config");
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{file} is private");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let url = config["mcpServers"]["iris"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = url.rsplit('/').next().unwrap();
    assert!(
        !cmdline.contains(token),
        "the token is not on the command line"
    );
    url
}

/// What a fake agent says to make its turn call an Iris tool through its `--mcp-config`.
fn call_back(tool: &str, arguments: &Value) -> String {
    format!("[[tool:mcp__iris__{tool}:{arguments}]]")
}

/// A → B → C: B's agent calls `send_message` back into Iris without naming itself; Iris
/// attributes the call to B (through B's own URL), C answers, and B's answer carries C's.
async fn chain(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>, from: Option<&str>) {
    let mut arguments = json!({
        "toTeam": "b",
        "message": call_back("send_message", &json!({"toTeam": "c", "message": "relay this"})),
    });
    if let Some(from) = from {
        arguments["fromTeam"] = json!(from);
    }
    let result: MessageOutcome = typed(
        &client
            .call_tool(call("send_message", arguments))
            .await
            .unwrap(),
    );
    assert_eq!(result.status, CallerStatus::Completed, "{result:?}");
    let answer = result.answer.as_deref().unwrap();
    // C's structured result, as B's tool call received it (the wire JSON, in B's answer).
    assert_contains(answer, r#""status":"completed""#);
    assert_contains(answer, r#""fromTeam":"b""#);
    assert_contains(answer, r#""toTeam":"c""#);
    assert_contains(answer, "fake answer #1: relay this");

    // B may not pose as another team.
    let posing: MessageOutcome = typed(
        &client
            .call_tool(call(
                "send_message",
                json!({
                    "fromTeam": from.unwrap_or("a"),
                    "toTeam": "b",
                    "message": call_back("quick_message", &json!({"fromTeam": "a", "toTeam": "c", "message": "x"})),
                }),
            ))
            .await
            .unwrap(),
    );
    assert_contains(
        posing.answer.as_deref().unwrap(),
        "fromTeam 'a' conflicts with the caller's team 'b' (proven by its agent URL)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_call_back_as_their_own_team_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-identity-http-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker, "");
    let (mut server, url) = common::serve_http(&config, dir.path());
    // Team a has a token: calls as a carry it.
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(TEAM_A_TOKEN),
        ))
        .await
        .unwrap();
    chain(&client, Some("a")).await;

    // The agent's URL is in its command line; Iris knows it, and nothing else under /mcp/.
    let status: TeamStatusPage = typed(
        &client
            .call_tool(call("team_status", json!({"fromTeam": "a"})))
            .await
            .unwrap(),
    );
    let pid = status
        .teams
        .iter()
        .find(|team| team.name.as_str() == "b")
        .unwrap()
        .pid
        .unwrap();
    let agent_url = agent_url(pid);
    let agent_url = agent_url.as_str();
    assert!(
        agent_url.starts_with(&format!("{url}/s/")),
        "{agent_url} is under {url}/s/"
    );
    let agent = ()
        .serve(StreamableHttpClientTransport::from_uri(
            agent_url.to_owned(),
        ))
        .await
        .unwrap();
    let implicit: MessageOutcome = typed(
        &agent
            .call_tool(call(
                "quick_message",
                json!({"toTeam": "c", "message": "hi"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(implicit.from_team.as_str(), "b", "{implicit:?}");
    agent.cancel().await.unwrap();

    let post = |url: String| {
        reqwest::Client::new()
            .post(url)
            .header("Accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
    };
    let unknown = post(format!("{url}/s/0123456789abcdef0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_contains(body["error"].as_str().unwrap(), "unknown agent URL");
    let other = post(format!("{url}/other")).await.unwrap();
    assert_eq!(other.status().as_u16(), 404);
    let nested = post(format!("{agent_url}/more")).await.unwrap();
    assert_eq!(nested.status().as_u16(), 404);

    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    wait_for("agents stopped", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_call_back_into_a_stdio_server() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-identity-stdio-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker, "");
    // Started in team a's project: the server knows its caller.
    let client = common::stdio_client(&config, dir.path(), &dir.path().join("a")).await;
    chain(&client, None).await;
    client.cancel().await.unwrap();
    wait_for("agents stopped", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_identify_teams() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-identity-token-{}", uuid::Uuid::new_v4());
    let config = write_config(
        dir.path(),
        &marker,
        &format!("  httpToken: {SERVER_TOKEN}\n"),
    );
    let (mut server, url) = common::serve_http(&config, dir.path());
    let with_token = |token: &str| {
        StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(token),
        )
    };

    // Team a's token: fromTeam may be omitted; a different one is refused.
    let team_a = ().serve(with_token(TEAM_A_TOKEN)).await.unwrap();
    common::assert_caller_is(&team_a, "a", "c", "b", "its bearer token").await;
    team_a.cancel().await.unwrap();

    // The server-wide token lets a client in; it states fromTeam.
    let anyone = ().serve(with_token(SERVER_TOKEN)).await.unwrap();
    let stated: MessageOutcome = typed(
        &anyone
            .call_tool(call(
                "quick_message",
                json!({"fromTeam": "b", "toTeam": "c", "message": "hi"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(stated.from_team.as_str(), "b", "{stated:?}");
    anyone.cancel().await.unwrap();

    // A proven team sees only its own messages: b's message does not exist for team a.
    let team_a = ().serve(with_token(TEAM_A_TOKEN)).await.unwrap();
    let foreign = team_a
        .call_tool(call(
            "message_status",
            json!({"messageId": stated.message_id}),
        ))
        .await
        .unwrap();
    assert_contains(&tool_error(&foreign), "no message with id");
    let own: MessageOutcome = typed(
        &team_a
            .call_tool(call(
                "quick_message",
                json!({"toTeam": "c", "message": "mine"}),
            ))
            .await
            .unwrap(),
    );
    let status: MessageView = typed(
        &team_a
            .call_tool(call("message_status", json!({"messageId": own.message_id})))
            .await
            .unwrap(),
    );
    assert_eq!(status.from_team.as_str(), "a", "{status:?}");
    team_a.cancel().await.unwrap();

    // A team with a token can be acted as only with it, on loopback too: a caller without a
    // token (or with the server's) cannot send as a, see a's messages or reset its session.
    let tokenless = ().serve(StreamableHttpClientTransport::from_uri(url.clone())).await.unwrap();
    for unproven in [
        &tokenless,
        &().serve(with_token(SERVER_TOKEN)).await.unwrap(),
    ] {
        for (tool, arguments) in [
            (
                "quick_message",
                json!({"fromTeam": "a", "toTeam": "c", "message": "as a"}),
            ),
            ("session_report", json!({"fromTeam": "a", "team": "c"})),
            ("session_delete", json!({"fromTeam": "a", "toTeam": "c"})),
        ] {
            let refused = unproven.call_tool(call(tool, arguments)).await.unwrap();
            assert_contains(
                &tool_error(&refused),
                "team 'a' has a token: calls as 'a' must send it",
            );
        }
        let hidden = unproven
            .call_tool(call("message_status", json!({"messageId": own.message_id})))
            .await
            .unwrap();
        assert_contains(&tool_error(&hidden), "no message with id");
        // A team without a token still works as before.
        let open: MessageOutcome = typed(
            &unproven
                .call_tool(call(
                    "quick_message",
                    json!({"fromTeam": "b", "toTeam": "c", "message": "as b"}),
                ))
                .await
                .unwrap(),
        );
        assert_eq!(open.from_team.as_str(), "b");
    }
    tokenless.cancel().await.unwrap();
    // With tokens configured, /status needs one.
    let status_url = format!("{}/status", server.base());
    let refused = reqwest::get(&status_url).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let allowed = reqwest::Client::new()
        .get(&status_url)
        .bearer_auth(SERVER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 200);

    // A wrong token, or a malformed header, is refused outright.
    for header in ["Bearer not-a-configured-token-000", "Basic YTpi"] {
        let refused = reqwest::Client::new()
            .post(&url)
            .header("Authorization", header)
            .header("Accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{header}");
        assert!(refused.headers().contains_key("www-authenticate"));
    }

    // `iris status` sends IRIS_TOKEN.
    let port = server.port().to_string();
    let status = std::process::Command::new(IRIS)
        .args(["status", "--json", "--port", &port])
        .env("IRIS_CONFIG_PATH", &config)
        .env("IRIS_HOME", dir.path())
        .env("IRIS_TOKEN", SERVER_TOKEN)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let wrong = std::process::Command::new(IRIS)
        .args(["status", "--port", &port])
        .env("IRIS_CONFIG_PATH", &config)
        .env("IRIS_HOME", dir.path())
        .env("IRIS_TOKEN", "wrong-token-000000000000")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert_contains(
        &String::from_utf8_lossy(&wrong.stderr),
        "refused with 401 Unauthorized",
    );

    assert!(server.terminate().success());
    wait_for("agents stopped", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}

#[test]
fn a_non_loopback_address_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "unused", "");
    // Without any token the server refuses to start (it never binds).
    let without = dir.path().join("no-token.yaml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("    token: {TEAM_A_TOKEN}\n"), "");
    std::fs::write(&without, text).unwrap();
    let refused = std::process::Command::new(IRIS)
        .args(["serve", "--bind", "0.0.0.0", "--port", "0"])
        .env("IRIS_CONFIG_PATH", &without)
        .env("IRIS_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_contains(
        &String::from_utf8_lossy(&refused.stderr),
        "--bind 0.0.0.0: serving on a non-loopback address needs bearer tokens; set settings.httpToken or a team's token",
    );
}

/// The gate of a server that requires tokens (as on a non-loopback address), in process and
/// bound to loopback: no token → 401; a team token or an agent URL → in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_tokens_admits_only_proven_callers() {
    let mut world = World::new();
    world.team("a", &[]).token = Some(Secret::new(TEAM_A_TOKEN));
    world.team("b", &[]);
    let pool = world.pool().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    pool.set_callback_base(&base);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(iris::mcp::serve_http(
        listener,
        pool.clone(),
        None,
        shutdown.clone(),
        iris::mcp::HttpAccess {
            require_token: true,
            callbacks_only: false,
            agents_only: false,
        },
    ));
    let url = format!("{base}/mcp");
    let bare = reqwest::Client::new()
        .post(&url)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    let body: Value = bare.json().await.unwrap();
    assert_contains(body["error"].as_str().unwrap(), "Authorization: Bearer");
    let status = reqwest::get(format!("{base}/status")).await.unwrap();
    assert_eq!(status.status().as_u16(), 401, "/status needs the token too");
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert!(health.status().is_success(), "/health stays open");

    // Reached under any host name: the token, not the Host header, keeps rebinding out.
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.replace("127.0.0.1", "localhost"))
                .auth_header(TEAM_A_TOKEN),
        ))
        .await
        .unwrap();
    let answer: MessageOutcome = typed(
        &client
            .call_tool(call(
                "send_message",
                json!({"toTeam": "b", "message": "hello"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(answer.status, CallerStatus::Completed, "{answer:?}");
    assert_eq!(answer.from_team.as_str(), "a");
    client.cancel().await.unwrap();

    // b's agent got its own URL: it gets in without a token.
    let pair = pool.pair("a", "b").unwrap();
    let pid = pool
        .status()
        .pairs
        .iter()
        .find(|entry| entry.pair == pair)
        .and_then(|entry| entry.pid)
        .unwrap();
    let agent_url = agent_url(pid);
    let agent = ().serve(StreamableHttpClientTransport::from_uri(agent_url.clone())).await.unwrap();
    let listed: TeamList = typed(
        &agent
            .call_tool(call("list_teams", json!({})))
            .await
            .unwrap(),
    );
    assert_eq!(listed.total_teams, 2);
    agent.cancel().await.unwrap();

    // A reloaded config replaces the tokens at once: the old one is refused, the new one
    // admitted, and the change is reported without the token's value.
    let mut config = (*pool.config()).clone();
    for team in config.teams.values_mut() {
        if team.name.as_str() == "a" {
            team.token = Some(Secret::new("the-new-token-of-team-a"));
        }
    }
    let changes = pool.set_config(config);
    let reported = format!("{changes:?}");
    assert!(!reported.contains("the-new-token"), "{reported}");
    let list = |token: &str| {
        reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .header("Accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
            .send()
    };
    assert_eq!(list(TEAM_A_TOKEN).await.unwrap().status().as_u16(), 401);
    assert!(
        list("the-new-token-of-team-a")
            .await
            .unwrap()
            .status()
            .is_success()
    );

    // Team b removed from the configuration: its agent's URL is dead at once.
    let mut config = (*pool.config()).clone();
    config.teams.retain(|name, _| name.as_str() != "b");
    pool.set_config(config);
    let dead = reqwest::Client::new()
        .post(&agent_url)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status().as_u16(), 404);
    let body: Value = dead.json().await.unwrap();
    assert_contains(body["error"].as_str().unwrap(), "no longer configured");

    shutdown.cancel();
    server.await.unwrap().unwrap();
    pool.shutdown().await;
}

/// A caller proven as one team sees and cancels only its own messages on every surface:
/// `message_status`, `session_cancel`, `tasks/get` and `tasks/cancel` (a task's id is its
/// message id). `tasks/get` used to skip the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_team_cannot_read_or_cancel_another_teams_message_as_a_task() {
    use iris::api::{Cancel, CancelStatus};
    use rmcp::model::{
        CancelTaskParams, ClientCapabilities, ClientConfig, GetTaskParams, Implementation,
    };
    let tasks = || {
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("task-client", "1"),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-identity-tasks-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker, "");
    let (mut server, url) = common::serve_http(&config, dir.path());
    // Team b's message, sent without a token over loopback (it states its team); slow, so
    // it is still on its way when team a looks.
    let anyone = tasks()
        .serve(StreamableHttpClientTransport::from_uri(url.clone()))
        .await
        .unwrap();
    let told: MessageOutcome = typed(
        &anyone
            .call_tool(call(
                "quick_message",
                json!({"fromTeam": "b", "toTeam": "c", "message": "[[slow:600000]] b's plans"}),
            ))
            .await
            .unwrap(),
    );
    let id = told.message_id.to_string();
    let team_a = tasks()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(TEAM_A_TOKEN),
        ))
        .await
        .unwrap();
    let read = team_a.get_task(GetTaskParams::new(id.clone())).await;
    let error = read.expect_err("tasks/get showed team b's message to team a");
    assert_contains(&error.to_string(), &format!("no task '{id}'"));
    let cancel = team_a.cancel_task(CancelTaskParams::new(id.clone())).await;
    let error = cancel.expect_err("tasks/cancel accepted team b's message from team a");
    assert_contains(&error.to_string(), &format!("no task '{id}'"));
    let status = team_a
        .call_tool(call("message_status", json!({"messageId": id})))
        .await
        .unwrap();
    assert_contains(&tool_error(&status), &format!("no message with id {id}"));
    let cancel = team_a
        .call_tool(call(
            "session_cancel",
            json!({"team": "c", "messageId": id}),
        ))
        .await
        .unwrap();
    assert_contains(&tool_error(&cancel), &format!("no message with id {id}"));

    // Nothing happened to it: b (unproven here) still sees it on its way, and cancels it.
    assert!(
        anyone
            .get_task(GetTaskParams::new(id.clone()))
            .await
            .is_ok()
    );
    let view: MessageView = typed(
        &anyone
            .call_tool(call("message_status", json!({"messageId": id})))
            .await
            .unwrap(),
    );
    assert!(view.status.is_waiting(), "{view:?}");
    let cancelled: Cancel = typed(
        &anyone
            .call_tool(call(
                "session_cancel",
                json!({"fromTeam": "b", "team": "c", "messageId": id}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(
        cancelled.status,
        CancelStatus::Message(CallerStatus::Cancelled)
    );
    team_a.cancel().await.unwrap();
    anyone.cancel().await.unwrap();
    assert!(server.terminate().success());
    common::wait_for_no_processes(&marker);
}
