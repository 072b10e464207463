//! The `iris-fake-api` binary over HTTP: the Messages API shapes it answers, its scripting
//! and its request log (`docs/fake-api.md`).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::process::{Command, Stdio};

use common::{ChildGuard, assert_contains, wait_for};
use serde_json::{Value, json};

const FAKE_API: &str = env!("CARGO_BIN_EXE_iris-fake-api");

struct Server {
    child: ChildGuard,
    base: String,
    dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let child = Command::new(FAKE_API)
        .args([
            "--port",
            "0",
            "--input-tokens",
            "30",
            "--output-tokens",
            "4",
        ])
        .arg("--port-file")
        .arg(&port_file)
        .arg("--log")
        .arg(dir.path().join("requests.jsonl"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = ChildGuard(child);
    wait_for("the port file", || port_file.exists()).await;
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        dir,
    }
}

fn request(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test-1",
        "max_tokens": 128000,
        "stream": stream,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: test"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nignore me\n</system-reminder>\n"},
                {"type": "text", "text": prompt}
            ]},
            {"role": "system", "content": "environment"}
        ],
        "context_management": {"edits": []},
        "some_future_field": true
    })
}

async fn post(server: &Server, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", server.base))
        .header("X-Claude-Code-Session-Id", "s-1")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `(event, data)` pairs of a server-sent-events body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines = block.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_json_and_streams_with_configured_usage() {
    let server = start().await;

    let response = post(&server, &request("hi there", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("request-id"));
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], "claude-test-1");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "fake answer to: hi there"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 30);
    assert_eq!(message["usage"]["output_tokens"], 4);

    let response = post(&server, &request("stream me please", true)).await;
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = events(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = events
        .iter()
        .filter_map(|(_, data)| data.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert_eq!(text, "fake answer to: stream me please");
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 30);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4);

    // HEAD on any path; other unknown routes are 404 in the API's error shape.
    let client = reqwest::Client::new();
    for path in ["/", "/api/hello"] {
        let response = client
            .head(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = client
        .get(format!("{}/v1/nothing", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_round_trips_errors_cuts_and_scripts() {
    let server = start().await;

    // A tool call first, then, once the tool result arrives, an answer quoting it.
    let prompt = r#"list [[tool:Bash:{"command":"ls"}]]"#;
    let first: Value = post(&server, &request(prompt, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["stop_reason"], "tool_use");
    let tool = &first["content"][1];
    assert_eq!(
        (tool["type"].as_str(), tool["name"].as_str()),
        (Some("tool_use"), Some("Bash"))
    );
    assert_eq!(tool["input"], json!({"command": "ls"}));
    let mut body = request(prompt, false);
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool["id"], "content": "a.txt b.txt"}
    ]}));
    let second: Value = post(&server, &body).await.json().await.unwrap();
    assert_eq!(second["stop_reason"], "end_turn");
    assert_contains(
        second["content"][0]["text"].as_str().unwrap(),
        "\n[tool_result] a.txt b.txt",
    );

    // An HTTP error in the API's shape.
    let response = post(&server, &request("[[error:529:too busy]]", true)).await;
    assert_eq!(response.status(), 529);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        error,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "too busy"}})
    );

    // A cut stream ends after message_start.
    let response = post(&server, &request("[[cut]]", true)).await;
    let cut = events(&response.text().await.unwrap());
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].0, "message_start");

    // Scripted answers: used once, by the first request whose prompt matches.
    let client = reqwest::Client::new();
    let queued: Value = client
        .post(format!("{}/script", server.base))
        .json(&json!([{"match": "scripted", "directives": "[[reply:from the script]]"}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queued["queued"], 1);
    let text = |message: Value| message["content"][0]["text"].as_str().unwrap().to_owned();
    let other: Value = post(&server, &request("unrelated", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(text(other), "fake answer to: unrelated");
    for expected in ["from the script", "fake answer to: scripted"] {
        let message: Value = post(&server, &request("scripted", false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(text(message), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_and_logged() {
    let mut server = start().await;
    // A big body (above axum's 2 MiB default; the CLI's grow with the conversation).
    let big = "x".repeat(8 * 1024 * 1024);
    let response = post(&server, &request(&big, false)).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(
        message["content"][0]["text"].as_str().unwrap().len(),
        "fake answer to: ".len() + big.len()
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", server.base))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    post(&server, &request("last one", true))
        .await
        .text()
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let requests: Vec<Value> = client
        .get(format!("{}/requests", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0]["query"], "beta=true");
    assert_eq!(requests[0]["session_id"], "s-1");
    assert_eq!(requests[0]["body"]["model"], "claude-test-1");
    assert_eq!(requests[1]["reply"], "bad_request");
    assert_eq!(requests[2]["prompt"], "last one");
    assert_eq!(requests[2]["stream"], true);
    assert_eq!(requests[2]["completed"], true);
    let log = std::fs::read_to_string(server.dir.path().join("requests.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    let cleared: Value = client
        .delete(format!("{}/requests", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["cleared"], 3);

    assert!(server.child.terminate().success());
}
