//! The MCP surface through real MCP clients (rmcp), over stdio and Streamable HTTP, against
//! the real `iris serve` binary with fake agents.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{assert_contains, call, processes_with_marker, tool_error, typed, wait_for};
use iris::api::{
    CallerStatus, Date, MessageOutcome, MessageView, ReportPage, TeamList, TeamStatusPage,
    Wakefulness,
};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

/// Exercises the tools a caller relies on; the same checks run over both transports.
async fn exercise(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>) {
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<String> = tools.iter().map(|tool| tool.name.to_string()).collect();
    names.sort();
    assert_eq!(names, common::TOOL_NAMES);

    let answer = client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": "hello"}),
        ))
        .await
        .unwrap();
    let body: MessageOutcome = typed(&answer);
    assert_eq!(body.status, CallerStatus::Completed, "{body:?}");
    assert_eq!(body.answer.as_deref(), Some("fake answer #1: hello"));
    assert_eq!(answer.is_error, Some(false));
    assert!(body.session_id.is_some(), "{body:?}");

    // An answer that does not come within `timeout` is `pending`, then followed by id.
    let pending: MessageOutcome = typed(
        &client
            .call_tool(call(
                "ask_message",
                json!({"fromTeam": "frontend", "toTeam": "backend", "message": "[[slow:300]] later", "timeout": 0}),
            ))
            .await
            .unwrap(),
    );
    assert!(
        matches!(pending.status, CallerStatus::Pending | CallerStatus::Queued),
        "{pending:?}"
    );
    let done: MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"messageId": pending.message_id, "timeout": 60000}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(done.status, CallerStatus::Completed, "{done:?}");
    assert_eq!(
        done.answer.as_deref(),
        Some("fake answer #2: [[slow:300]] later")
    );

    let queued: MessageOutcome = typed(
        &client
            .call_tool(call(
                "quick_message",
                json!({"fromTeam": "frontend", "toTeam": "backend", "message": "fyi"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(queued.status, CallerStatus::Queued);

    let unknown = client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "nope", "message": "hi"}),
        ))
        .await
        .unwrap();
    assert_contains(
        &tool_error(&unknown),
        "unknown team 'nope'; known teams: backend, frontend",
    );

    let failed = client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": "[[error]]"}),
        ))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(
        typed::<MessageOutcome>(&failed).status,
        CallerStatus::Failed
    );

    let status: TeamStatusPage = typed(
        &client
            .call_tool(call("team_status", json!({"fromTeam": "frontend"})))
            .await
            .unwrap(),
    );
    let backend = status
        .teams
        .iter()
        .find(|team| team.name.as_str() == "backend")
        .unwrap();
    assert_eq!(backend.status, Wakefulness::Awake);

    let report: ReportPage = typed(
        &client
            .call_tool(call(
                "session_report",
                json!({"fromTeam": "frontend", "team": "backend", "limit": 2}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(report.messages.len(), 2);

    let teams: TeamList = typed(
        &client
            .call_tool(call("list_teams", json!({})))
            .await
            .unwrap(),
    );
    assert_eq!(teams.total_teams, 2);
    let date: Date = typed(&client.call_tool(call("get_date", json!({}))).await.unwrap());
    assert!(date.iso.ends_with('Z'));

    let bad = client
        .call_tool(call("message_status", json!({"messageId": "nope"})))
        .await;
    assert!(bad.is_err(), "a malformed id is a protocol error: {bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-mcp-stdio-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    // Started in the frontend project: the server knows its caller.
    let client = common::stdio_client(&config, dir.path(), &dir.path().join("frontend")).await;
    exercise(&client).await;
    common::assert_caller_is(
        &client,
        "frontend",
        "backend",
        "backend",
        "the stdio server's working directory",
    )
    .await;
    client.cancel().await.unwrap();
    wait_for("agents stopped", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-mcp-http-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    // Stopped by the guard if the test fails half-way.
    let (mut server, url) = common::serve_http(&config, dir.path());
    let health_url = format!("{}/health", server.base());
    let client = ().serve(StreamableHttpClientTransport::from_uri(url.clone())).await.unwrap();
    exercise(&client).await;
    let anonymous = client
        .call_tool(call(
            "quick_message",
            json!({"toTeam": "backend", "message": "x"}),
        ))
        .await
        .unwrap();
    assert_contains(&tool_error(&anonymous), "fromTeam is required");
    client.cancel().await.unwrap();

    // /health answers (plain JSON: the library has no type for it), and a request for
    // another Host is refused (DNS rebinding).
    let health = reqwest::get(&health_url).await.unwrap();
    assert!(health.status().is_success());
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let rebinding = reqwest::Client::new()
        .post(&url)
        .header("Host", "evil.example")
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebinding.status().as_u16(), 403);
    let status_url = format!("{}/status", server.base());
    let rebinding_status = reqwest::Client::new()
        .get(&status_url)
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rebinding_status.status().as_u16(),
        403,
        "/status checks Host too"
    );
    assert!(
        reqwest::get(&status_url)
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let page = |origin: &str| {
        reqwest::Client::new()
            .post(&url)
            .header("Origin", origin)
            .header("Accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
            .send()
    };
    assert_eq!(
        page("http://evil.example").await.unwrap().status().as_u16(),
        403
    );
    assert!(
        page(&format!("http://localhost:{}", server.port()))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let huge = reqwest::Client::new()
        .post(&url)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .body(vec![b' '; iris::mcp::MAX_REQUEST_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 413);

    assert!(server.terminate().success());
    wait_for("agents stopped", || {
        processes_with_marker(&marker, false).is_empty()
    })
    .await;
}

/// A client that declares the tasks extension gets a task for an answer that takes longer
/// than its `timeout`: the task id is the message id, `tasks/get` follows it to the result,
/// `tasks/cancel` cancels the message. A client without tasks gets `pending` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_asks_become_tasks_for_clients_that_support_them() {
    use rmcp::model::{
        CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig, GetTaskParams,
        Implementation, TaskPayload, TaskStatus,
    };
    let mut world = common::World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(iris::mcp::serve_http(
        listener,
        pool.clone(),
        None,
        shutdown.clone(),
        iris::mcp::HttpAccess::default(),
    ));
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("task-client", "1"),
    );
    let client = info
        .serve(StreamableHttpClientTransport::from_uri(url.clone()))
        .await
        .unwrap();
    assert!(
        client
            .peer_info()
            .is_some_and(|server| server.capabilities.supports_tasks()),
        "the server advertises tasks"
    );

    // timeout 0: still running when the wait ends (the agent is not even started).
    let ask = |message: &str| {
        call(
            "ask_message",
            json!({"fromTeam": "frontend", "toTeam": "backend", "message": message, "timeout": 0}),
        )
    };
    let CallToolResponse::Task(created) =
        client.call_tool_once(ask("long question")).await.unwrap()
    else {
        panic!("expected a task")
    };
    assert_eq!(created.task.status, TaskStatus::Working);
    assert_eq!(created.task.poll_interval_ms, Some(1000));
    let task_id = created.task.task_id.clone();
    let mut finished = None;
    common::wait_for_async("the task to complete", async || {
        let task = client
            .get_task(GetTaskParams::new(task_id.clone()))
            .await
            .unwrap()
            .task;
        let done = task.status() == TaskStatus::Completed;
        finished = Some(task);
        done
    })
    .await;
    let TaskPayload::Completed { result } = finished.unwrap().payload else {
        panic!("a completed task carries its result")
    };
    let result: rmcp::model::CallToolResult =
        serde_json::from_value(Value::Object(result)).unwrap();
    let view: MessageView = typed(&result);
    assert_eq!(view.status, CallerStatus::Completed, "{view:?}");
    assert_eq!(view.message_id.to_string(), task_id);
    assert_contains(view.answer.as_deref().unwrap(), "long question");

    // tasks/cancel cancels the message; tasks/get then says cancelled.
    let mut events = pool.subscribe();
    let CallToolResponse::Task(slow) = client
        .call_tool_once(ask("[[slow:600000]] a very long one"))
        .await
        .unwrap()
    else {
        panic!("expected a task")
    };
    let slow_id: iris::store::MessageId = slow.task.task_id.parse().unwrap();
    common::wait_event(
        &mut events,
        "the slow turn to start",
        |event| matches!(event, iris::pool::PoolEvent::TurnStarted { id, .. } if *id == slow_id),
    )
    .await;
    client
        .cancel_task(CancelTaskParams::new(slow.task.task_id.clone()))
        .await
        .unwrap();
    let record = pool
        .wait_message(
            slow_id,
            std::time::Duration::from_secs(60),
            &iris::pool::Viewer::Anyone,
        )
        .await
        .unwrap();
    assert_eq!(record.state, iris::store::MessageState::Cancelled);
    let task = client
        .get_task(GetTaskParams::new(slow.task.task_id.clone()))
        .await
        .unwrap()
        .task;
    assert_eq!(task.status(), TaskStatus::Cancelled);

    let unknown = client
        .get_task(GetTaskParams::new("not-a-task".to_owned()))
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
    client.cancel().await.unwrap();

    // Without the tasks extension: `pending` with the message id (a slow answer: the warm
    // agent would otherwise answer before the wait ends).
    let plain = ().serve(StreamableHttpClientTransport::from_uri(url)).await.unwrap();
    let pending: MessageOutcome = typed(
        &plain
            .call_tool(ask("[[slow:600000]] another"))
            .await
            .unwrap(),
    );
    assert!(
        matches!(pending.status, CallerStatus::Pending | CallerStatus::Queued),
        "{pending:?}"
    );
    pool.cancel(pending.message_id, &iris::pool::Viewer::Anyone)
        .await
        .unwrap();
    plain.cancel().await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
    pool.shutdown().await;
}

/// While an answer is awaited, a caller that gave a progress token gets the answer so far,
/// from its own turn only (another pair's text never reaches it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_caller_gets_the_answer_so_far_as_progress() {
    use rmcp::model::{NumberOrString, ProgressToken, RequestParamsMeta as _};
    let mut world = common::World::new();
    world.team("backend", &[]);
    world.team("other", &[]);
    let pool = world.pool().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(iris::mcp::serve_http(
        listener,
        pool.clone(),
        None,
        shutdown.clone(),
        iris::mcp::HttpAccess::default(),
    ));
    let handler = common::ProgressNotes::default();
    let client = handler
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(url.clone()))
        .await
        .unwrap();
    // Another pair's agent talks at the same time: none of it may reach this caller.
    let noise = pool.pair("someone", "other").unwrap();
    let _noise = common::submit_running(&pool, &noise, "[[say:not yours]] [[slow:600000]]").await;
    let mut params = call(
        "send_message",
        json!({"fromTeam": "frontend", "toTeam": "backend", "timeout": 120_000,
               "message": "[[say:first thoughts]] [[say: and more]] [[slow:600000]] question"}),
    );
    params.set_progress_token(ProgressToken(NumberOrString::Number(7)));
    let peer = client.peer().clone();
    let asked = tokio::spawn(async move { peer.call_tool(params).await });
    wait_for("both pieces of the answer so far", || {
        handler
            .notes
            .lock()
            .unwrap()
            .iter()
            .any(|note| note == "first thoughts and more")
    })
    .await;
    assert_eq!(
        handler.notes.lock().unwrap().clone(),
        ["first thoughts", "first thoughts and more"]
    );
    // End the slow turn: the call returns, cancelled.
    let pair = pool.pair("frontend", "backend").unwrap();
    assert!(pool.interrupt(&pair).await);
    let outcome: MessageOutcome = typed(&asked.await.unwrap().unwrap());
    assert_eq!(outcome.status, CallerStatus::Cancelled, "{outcome:?}");
    client.cancel().await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
    pool.shutdown().await;
}

/// Requests that are not JSON-RPC get JSON-RPC's own errors: `400` with `-32700` (not JSON)
/// or `-32600` (not one JSON-RPC message); a `tools/call` whose `arguments` are not an object
/// gets `-32602` (invalid params), not "method not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_rpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-mcp-malformed-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let (_server, url) = common::serve_http(&config, dir.path());
    let raw = Raw::new(&url);
    let post = |body: String, session: Option<String>| raw.post(body, session);
    for (body, code) in [
        ("{not json".to_owned(), -32700),
        ("[1, 2]".to_owned(), -32600),
        (r#"{"hello": "world"}"#.to_owned(), -32600),
    ] {
        let response = post(body.clone(), None).await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let error = message(response).await;
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert_eq!(error["jsonrpc"], "2.0");
    }
    // In a session: a tools/call with arguments that are not an object.
    let session = raw.open().await.unwrap();
    let bad = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "get_date", "arguments": [1, 2]}})
        .to_string(),
        Some(session),
    )
    .await
    .unwrap();
    let error = message(bad).await;
    assert_eq!(error["id"], 2, "{error}");
    assert_eq!(error["error"]["code"], -32602, "{error}");
    assert_contains(
        error["error"]["message"].as_str().unwrap(),
        "`arguments`, if given, an object",
    );
}

/// MCP over HTTP by hand: requests as JSON-RPC bodies, for what a real client never sends.
struct Raw {
    http: reqwest::Client,
    url: String,
}

impl Raw {
    fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
        }
    }

    /// POSTs `body` to `/mcp`, in `session` if given.
    fn post(
        &self,
        body: String,
        session: Option<String>,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
        let mut request = self
            .http
            .post(&self.url)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(session) = session {
            request = request
                .header("Mcp-Session-Id", session)
                .header("Mcp-Protocol-Version", "2025-11-25");
        }
        request.send()
    }

    /// Opens a session (`initialize`, then `notifications/initialized`) and returns its id,
    /// or the response that refused it.
    async fn open(&self) -> Result<String, reqwest::Response> {
        let initialized = self
            .post(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"}}})
                .to_string(),
                None,
            )
            .await
            .unwrap();
        if !initialized.status().is_success() {
            return Err(initialized);
        }
        let session = initialized
            .headers()
            .get("mcp-session-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        message(initialized).await;
        self.post(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
            Some(session.clone()),
        )
        .await
        .unwrap();
        Ok(session)
    }

    /// `get_date` in `session`: the HTTP status and, on success, the JSON-RPC message.
    async fn get_date(&self, session: &str) -> (u16, Option<Value>) {
        let response = self
            .post(
                json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                       "params": {"name": "get_date", "arguments": {}}})
                .to_string(),
                Some(session.to_owned()),
            )
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 200 {
            (status, Some(message(response).await))
        } else {
            (status, None)
        }
    }

    /// Ends `session` (`DELETE /mcp`).
    async fn close(&self, session: &str) {
        let response = self
            .http
            .delete(&self.url)
            .header("Mcp-Session-Id", session)
            .header("Mcp-Protocol-Version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
}

/// The JSON-RPC message of a response: its JSON body, or the `data:` of its SSE event.
async fn message(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    let json = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("data: ")
                .filter(|data| data.starts_with('{'))
        })
        .unwrap_or(&text);
    serde_json::from_str(json).unwrap_or_else(|error| panic!("{error}: {text}"))
}

/// At `settings.maxHttpSessions` open sessions a new one is refused with `503`, `Retry-After`
/// and a JSON-RPC error naming the setting, while the open ones keep working; closing one
/// makes room. Raising the limit in the file applies without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sessions_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-mcp-cap-{}", uuid::Uuid::new_v4());
    let settings = "  maxHttpSessions: 2\n";
    let config = common::write_fake_config(dir.path(), &marker, &["backend"], settings);
    let (_server, url) = common::serve_http(&config, dir.path());
    let raw = Raw::new(&url);
    let first = raw.open().await.unwrap();
    let second = raw.open().await.unwrap();
    let refused = raw.open().await.unwrap_err();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "10"
    );
    let error = message(refused).await;
    assert_eq!(error["jsonrpc"], "2.0", "{error}");
    assert_contains(
        error["error"]["message"].as_str().unwrap(),
        "settings.maxHttpSessions = 2",
    );
    // The open sessions are not affected.
    for session in [&first, &second] {
        let (status, answer) = raw.get_date(session).await;
        assert_eq!(status, 200);
        assert!(answer.unwrap()["result"]["structuredContent"]["iso"].is_string());
    }
    raw.close(&first).await;
    let third = raw.open().await.unwrap();
    assert_eq!(raw.open().await.unwrap_err().status().as_u16(), 503);
    // A reload raises the limit.
    let yaml = common::fake_config_yaml(
        dir.path(),
        &marker,
        &["backend"],
        "  maxHttpSessions: 3\n",
        &|_| String::new(),
    );
    common::replace_file(&config, &yaml);
    common::wait_for_async("the raised limit to apply", async || {
        match raw.open().await {
            Ok(_) => true,
            Err(refused) => {
                assert_eq!(refused.status().as_u16(), 503);
                false
            }
        }
    })
    .await;
    assert_eq!(raw.get_date(&third).await.0, 200);
}

/// A session left idle for `settings.httpSessionIdleTimeout` is closed: its id is no longer
/// known, and it no longer counts against `settings.maxHttpSessions`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_sessions_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-mcp-idle-{}", uuid::Uuid::new_v4());
    let settings = "  maxHttpSessions: 1\n  httpSessionIdleTimeout: 300ms\n";
    let config = common::write_fake_config(dir.path(), &marker, &["backend"], settings);
    let (_server, url) = common::serve_http(&config, dir.path());
    let raw = Raw::new(&url);
    let idle = raw.open().await.unwrap();
    common::wait_for_async("the idle session to be closed", async || {
        raw.open().await.is_ok()
    })
    .await;
    assert_eq!(raw.get_date(&idle).await.0, 404);
}
