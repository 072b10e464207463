//! Approvals through the front door, on the fake agent (fast; the real CLI's side is in
//! `tests/e2e_approvals.rs`): the approver API needs the approver token and no MCP tool can
//! approve; `iris approvals --watch` follows requests and decisions; a waiting caller is told
//! what waits; `iris serve --stdio` takes decisions on its own listener too.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{
    ChildGuard, ProgressNotes, assert_contains, call, iris_command, typed, wait_for,
    wait_for_blocking,
};
use iris::api::{CallerStatus, MessageOutcome, MessageView};
use iris::approver::{APPROVER_HEADER, read_approver_file};
use iris::store::{ApprovalRecord, DecidedBy, Decision};
use rmcp::ServiceExt;
use rmcp::model::{NumberOrString, ProgressToken, RequestParamsMeta as _};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

/// Team `backend` on the fake agent, every `Bash` use left to a person by an `ask` rule.
fn write_config(dir: &Path, marker: &str) -> PathBuf {
    let yaml = common::fake_config_yaml(dir, marker, &["backend"], "", &|_| {
        "    permissions:\n      ask: [Bash]\n".to_owned()
    });
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

fn touch(file: &str) -> String {
    format!(r#"[[tool:Bash:{{"command":"touch {file}"}}]]"#)
}

/// A person's approval over HTTP, which must succeed.
async fn approve(base: &str, token: &str, id: &str) {
    let response = reqwest::Client::new()
        .post(format!("{base}/approvals/{id}/approve"))
        .header(APPROVER_HEADER, token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

async fn pending(base: &str, token: &str) -> Vec<ApprovalRecord> {
    let page: Value = reqwest::Client::new()
        .get(format!("{base}/approvals"))
        .header(APPROVER_HEADER, token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    serde_json::from_value(page["approvals"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_person_with_the_approver_token_decides() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let server = common::Server::start(Some(&config), &home);
    let base = server.base();
    let file = read_approver_file(&home).unwrap().expect("approver file");
    assert_eq!(file.url, base);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(iris::approver::approver_file(&home))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let client = ().serve(StreamableHttpClientTransport::from_uri(server.url())).await.unwrap();
    // No MCP tool approves, denies or lists approvals.
    let tools = client.list_all_tools().await.unwrap();
    assert!(
        tools.iter().all(|tool| !tool.name.contains("approv")),
        "{:?}",
        tools
            .iter()
            .map(|tool| tool.name.clone())
            .collect::<Vec<_>>()
    );
    // A request waits.
    let queued: MessageOutcome = typed(
        &client
            .call_tool(call(
                "quick_message",
                json!({"fromTeam": "lead", "toTeam": "backend", "message": touch("never-made")}),
            ))
            .await
            .unwrap(),
    );
    let mut waiting = Vec::new();
    wait_for_async_pending(&base, &file.token, &mut waiting).await;
    let request = waiting.pop().unwrap();
    assert_eq!(request.message_id, Some(queued.message_id));
    // Without the token, or with another, nothing is listed or decided.
    let http = reqwest::Client::new();
    for token in [None, Some("not-the-token")] {
        for (method, path) in [
            (reqwest::Method::GET, "/approvals".to_owned()),
            (reqwest::Method::GET, "/approvals/rules".to_owned()),
            (
                reqwest::Method::POST,
                format!("/approvals/{}/approve", request.id),
            ),
        ] {
            let mut call = http.request(method.clone(), format!("{base}{path}"));
            if let Some(token) = token {
                call = call.header(APPROVER_HEADER, token);
            }
            let response = call.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let body: Value = response.json().await.unwrap();
            assert_contains(body["error"].as_str().unwrap(), "approver.json");
        }
    }
    // An MCP bearer token is not an approver token either.
    let response = http
        .post(format!("{base}/approvals/{}/approve", request.id))
        .bearer_auth(&file.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(pending(&base, &file.token).await.len(), 1, "still pending");

    // `iris approvals --watch` shows it, then the decision.
    let mut watch = ChildGuard(
        iris_command(Some(&config), &home)
            .args(["approvals", "--watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "pending");
    assert_eq!(first["approval"]["id"], json!(request.id));
    let denied = iris_command(Some(&config), &home)
        .args(["deny", &request.id[..6], "--reason", "not today"])
        .output()
        .unwrap();
    assert!(denied.status.success(), "{denied:?}");
    let next: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(next["event"], "decided");
    let decided: ApprovalRecord = serde_json::from_value(next["approval"].clone()).unwrap();
    assert_eq!(decided.decision, Some(Decision::Deny));
    assert_eq!(decided.decided_by, Some(DecidedBy::Person));
    assert_contains(decided.reason.as_deref().unwrap(), "not today");
    watch.terminate();

    let view: MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"fromTeam": "lead", "messageId": queued.message_id.to_string(), "timeout": 30_000}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(view.status, CallerStatus::Completed, "{view:?}");
    assert!(!dir.path().join("backend/never-made").exists());
    client.cancel().await.unwrap();
}

async fn wait_for_async_pending(base: &str, token: &str, into: &mut Vec<ApprovalRecord>) {
    common::wait_for_async("a pending approval", async || {
        *into = pending(base, token).await;
        into.len() == 1
    })
    .await;
}

/// The caller waiting in `send_message` is told, by progress notification, what waits for a
/// person and when it is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_caller_is_told_what_waits_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let server = common::Server::start(Some(&config), &home);
    let token = read_approver_file(&home).unwrap().unwrap().token;
    let notes = ProgressNotes::default();
    let client = notes
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(server.url()))
        .await
        .unwrap();
    let mut params = call(
        "send_message",
        json!({"fromTeam": "lead", "toTeam": "backend", "timeout": 60_000, "message": touch("made-when-allowed")}),
    );
    params.set_progress_token(ProgressToken(NumberOrString::Number(1)));
    let peer = client.peer().clone();
    let asked = tokio::spawn(async move { peer.call_tool(params).await });
    wait_for("a note that the call waits for approval", || {
        notes
            .all()
            .iter()
            .any(|note| note.starts_with("waiting for approval: Bash touch made-when-allowed"))
    })
    .await;
    let request = pending(&server.base(), &token).await.pop().unwrap();
    let note = notes
        .all()
        .into_iter()
        .find(|note| note.starts_with("waiting for approval"))
        .unwrap();
    assert_contains(&note, &request.id[..8]);
    approve(&server.base(), &token, &request.id).await;
    let outcome: MessageOutcome = typed(&asked.await.unwrap().unwrap());
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert!(dir.path().join("backend/made-when-allowed").exists());
    assert!(
        notes
            .all()
            .iter()
            .any(|note| note == &format!("approval {} allowed", &request.id[..8])),
        "{:?}",
        notes.all()
    );
    client.cancel().await.unwrap();
}

/// `iris serve --stdio --in-process` takes a person's decisions on the loopback listener its
/// agents call back on (the shared daemon of `iris serve --stdio` serves HTTP in full).
#[test]
fn the_stdio_server_takes_decisions_too() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let mut stdio = ChildGuard(
        iris_command(Some(&config), &home)
            .args(["serve", "--stdio", "--in-process"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_blocking("the stdio server's approver file", || {
        read_approver_file(&home).ok().flatten().is_some()
    });
    let listed = iris_command(Some(&config), &home)
        .args(["approvals"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert_contains(
        &String::from_utf8_lossy(&listed.stdout),
        "no tool-permission request waits for a person",
    );
    // Its listener refuses MCP but at agents' own URLs.
    let url = read_approver_file(&home).unwrap().unwrap().url;
    let status =
        common::block_on(async { reqwest::get(format!("{url}/mcp")).await.unwrap().status() });
    assert_eq!(status, 404);
    drop(stdio.0.stdin.take());
    stdio.terminate();
    wait_for_blocking("the approver file removed at exit", || {
        read_approver_file(&home).ok().flatten().is_none()
    });
}

/// `iris console` takes a person's decisions too (`approvals`, `approve`, `deny` ops): it
/// has no HTTP listener, and its requests run side by side, so a `send` waiting for a
/// person does not hold up the `approve` that frees it.
#[test]
fn the_console_lists_and_decides() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker);
    let mut console = common::Console::start(Some(&config), &dir.path().join("home"), false);
    console.write_line(
        &json!({"id": "asked", "op": "send", "from": "lead", "to": "backend", "message": touch("made-by-console")})
            .to_string(),
    );
    let mut waiting: Vec<ApprovalRecord> = Vec::new();
    wait_for_blocking("a request listed by the console", || {
        let listed: iris::console::Approvals = console.ok(json!({"op": "approvals"}));
        waiting = listed.approvals;
        waiting.len() == 1
    });
    let refused = console.refused(json!({"op": "approve", "approval": "nope"}));
    assert_contains(&refused, "no pending approval 'nope'");
    console
        .write_line(&json!({"id": "yes", "op": "approve", "approval": waiting[0].id}).to_string());
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 2 {
        let answer = console.next_answer();
        answers.insert(answer["id"].as_str().unwrap().to_owned(), answer);
    }
    let approved: iris::console::Answer<iris::console::Decided> =
        serde_json::from_value(answers["yes"].clone()).unwrap();
    assert_eq!(approved.body.approval.decision, Some(Decision::Allow));
    assert_contains(
        approved.body.approval.who.as_deref().unwrap(),
        "a person through iris console",
    );
    let sent: iris::console::Answer<iris::console::Sent> =
        serde_json::from_value(answers["asked"].clone()).unwrap();
    assert!(sent.ok);
    assert!(dir.path().join("backend/made-by-console").exists());
    console.stop();
}

/// `grantPermission: forward` with nobody to ask and `forwardFallback: deny`: denied at once,
/// saying why, and recorded as the fallback's decision.
#[test]
fn forward_with_nobody_to_ask_falls_back_to_deny() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let yaml = common::fake_config_yaml(
        dir.path(),
        &marker,
        &["backend"],
        "  forwardFallback: deny\n",
        &|_| "    permissions:\n      ask: [Bash]\n".to_owned(),
    )
    .replace("grantPermission: yes", "grantPermission: forward");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut console = common::Console::start(Some(&config), &dir.path().join("home"), false);
    let outcome = console.send("backend", &touch("never-made"));
    assert!(!dir.path().join("backend/never-made").exists());
    let decision = outcome
        .result
        .transcript
        .iter()
        .find_map(|entry| match entry {
            iris::agent::TranscriptEntry::Permission {
                allowed,
                reason,
                by,
                ..
            } => Some((*allowed, reason.clone().unwrap_or_default(), *by)),
            _ => None,
        })
        .expect("a permission decision");
    assert!(!decision.0);
    assert_contains(&decision.1, "settings.forwardFallback is deny");
    assert_eq!(decision.2, Some(DecidedBy::Fallback));
    let listed: iris::console::Approvals = console.ok(json!({"op": "approvals"}));
    assert!(listed.approvals.is_empty());
    console.stop();
}

/// A turn interrupted while a request of it waits for a person: the agent withdraws the
/// request, nothing is left pending, and the record says it expired.
#[test]
fn an_interrupted_turn_leaves_no_request_pending() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let mut console = common::Console::start(Some(&config), &home, false);
    console.write_line(
        &json!({"id": "asked", "op": "send", "from": "lead", "to": "backend", "message": touch("never-made")})
            .to_string(),
    );
    let mut waiting: Vec<ApprovalRecord> = Vec::new();
    wait_for_blocking("a request waiting for a person", || {
        let listed: iris::console::Approvals = console.ok(json!({"op": "approvals"}));
        waiting = listed.approvals;
        waiting.len() == 1
    });
    let message = waiting[0].message_id.unwrap().to_string();
    console.write_line(&json!({"id": "stop", "op": "cancel", "messageId": message}).to_string());
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 2 {
        let answer = console.next_answer();
        answers.insert(answer["id"].as_str().unwrap().to_owned(), answer);
    }
    assert_eq!(answers["stop"]["ok"], json!(true), "{answers:?}");
    wait_for_blocking("nothing pending", || {
        let listed: iris::console::Approvals = console.ok(json!({"op": "approvals"}));
        listed.approvals.is_empty()
    });
    console.stop();
    assert!(!dir.path().join("backend/never-made").exists());
    let store = common::block_on(iris::store::Store::open(
        &iris::config::DatabaseConfig::file(home.join("data/iris.db")),
    ))
    .unwrap();
    let records = common::block_on(store.approvals(iris::store::ApprovalQuery::default())).unwrap();
    let record = records
        .iter()
        .find(|record| record.id == waiting[0].id)
        .unwrap();
    assert_eq!(record.decision, Some(Decision::Expired), "{record:?}");
    assert_eq!(record.decided_by, Some(DecidedBy::Ended));
}

/// The approval commands refuse to run inside an agent Iris started (its environment
/// carries `IRIS_AGENT_KEY`), before reading the approver file.
#[test]
fn approval_commands_refuse_inside_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["approvals"],
        vec!["approve", "abcd1234"],
        vec!["deny", "abcd1234"],
    ] {
        let output = iris_command(None, dir.path())
            .args(&args)
            .env("IRIS_AGENT_KEY", "some-agent")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert_contains(
            &String::from_utf8_lossy(&output.stderr),
            "approvals come only from a person",
        );
    }
}

/// A caller that follows its message as an MCP task is told, by the task's status message,
/// that the turn waits for approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_says_it_waits_for_approval() {
    use rmcp::model::{
        CallToolResponse, ClientCapabilities, ClientConfig, GetTaskParams, Implementation,
        TaskStatus,
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let config = write_config(dir.path(), &marker);
    let home = dir.path().join("home");
    let server = common::Server::start(Some(&config), &home);
    let token = read_approver_file(&home).unwrap().unwrap().token;
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("task-client", "1"),
    );
    let client = info
        .serve(StreamableHttpClientTransport::from_uri(server.url()))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = client
        .call_tool_once(call(
            "ask_message",
            json!({"fromTeam": "lead", "toTeam": "backend", "message": touch("made-by-task"), "timeout": 0}),
        ))
        .await
        .unwrap()
    else {
        panic!("expected a task")
    };
    let task_id = created.task.task_id.clone();
    let mut said = String::new();
    common::wait_for_async("the task to say it waits for approval", async || {
        let task = client
            .get_task(GetTaskParams::new(task_id.clone()))
            .await
            .unwrap()
            .task;
        said = task.task.status_message.clone().unwrap_or_default();
        said.starts_with("waiting for approval: Bash touch made-by-task")
    })
    .await;
    let request = pending(&server.base(), &token).await.pop().unwrap();
    assert_contains(&said, &request.id[..8]);
    approve(&server.base(), &token, &request.id).await;
    common::wait_for_async("the task to complete", async || {
        let task = client
            .get_task(GetTaskParams::new(task_id.clone()))
            .await
            .unwrap()
            .task;
        task.status() == TaskStatus::Completed
    })
    .await;
    assert!(dir.path().join("backend/made-by-task").exists());
    client.cancel().await.unwrap();
}

/// A request that waits for a person further down a call chain (a asks b, b's agent asks c,
/// c's agent wants a tool) is told to the caller at the top too, not only to b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_up_the_chain_is_told_what_waits_below() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-approvals-{}", uuid::Uuid::new_v4());
    let yaml = common::fake_config_yaml(dir.path(), &marker, &["b", "c"], "", &|team| {
        if team == "c" {
            "    permissions:\n      ask: [Bash]\n".to_owned()
        } else {
            String::new()
        }
    });
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let home = dir.path().join("home");
    let server = common::Server::start(Some(&config), &home);
    let token = read_approver_file(&home).unwrap().unwrap().token;
    let notes = ProgressNotes::default();
    let client = notes
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(server.url()))
        .await
        .unwrap();
    let relay = json!({"toTeam": "c", "message": touch("made-down-the-chain")});
    let mut params = call(
        "send_message",
        json!({"fromTeam": "a", "toTeam": "b", "timeout": 60_000,
               "message": format!("[[tool:mcp__iris__send_message:{relay}]]")}),
    );
    params.set_progress_token(ProgressToken(NumberOrString::Number(3)));
    let peer = client.peer().clone();
    let asked = tokio::spawn(async move { peer.call_tool(params).await });
    wait_for("a note about the request two hops down", || {
        notes.all().iter().any(|note| {
            note.starts_with(
                "waiting for approval: team 'c' (down your call chain): Bash touch made-down-the-chain",
            )
        })
    })
    .await;
    let request = pending(&server.base(), &token).await.pop().unwrap();
    approve(&server.base(), &token, &request.id).await;
    let outcome: MessageOutcome = typed(&asked.await.unwrap().unwrap());
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert!(dir.path().join("c/made-down-the-chain").exists());
    assert!(
        notes
            .all()
            .iter()
            .any(|note| note == &format!("approval {} allowed", &request.id[..8])),
        "{:?}",
        notes.all()
    );
    client.cancel().await.unwrap();
}
