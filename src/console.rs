//! `iris console`: drive the pool with JSON lines on stdin and read answers and events as JSON
//! lines on stdout. For scripts, tests and benchmarks; the MCP server is the interface for
//! agents.
//!
//! Requests (one JSON object per line; `id` is echoed back and may be any JSON value):
//! `{"id":1,"op":"send","from":"frontend","to":"backend","message":"..."}`,
//! `{"op":"wake","from":..,"to":..}`, `{"op":"wake_all","from":..}`, `{"op":"interrupt",..}`,
//! `{"op":"sleep",..}`, `{"op":"status"}`; durable messages: `{"op":"tell",..,"message":..}`
//! (answers at once with the message id), `{"op":"message","messageId":..,"waitMs":N}`,
//! `{"op":"cancel","messageId":..}`; sessions: `{"op":"report",..,"limit":N,"before":id}`,
//! `{"op":"reboot",..}`, `{"op":"delete",..,"deleteTranscript":true}`, `{"op":"fork",..}`.
//! Answers: `{"id":..,"ok":true,...}` or `{"id":..,"ok":false,"error":"..."}`. With
//! `--events`, pool events are written too, as `{"event":{...}}`.
//! Requests run concurrently; answers come in the order they finish.
//! End of input waits for the requests in flight, then stops every agent.

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::pool::{Pool, PoolError};
use crate::store::{MessageId, MessageMode, Page};

/// Longest request line accepted on stdin.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Send {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
        message: String,
    },
    Wake {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
    },
    WakeAll {
        #[serde(default)]
        id: Value,
        from: String,
    },
    Interrupt {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
    },
    Sleep {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
    },
    Status {
        #[serde(default)]
        id: Value,
    },
    Tell {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
        message: String,
    },
    Message {
        #[serde(default)]
        id: Value,
        #[serde(rename = "messageId")]
        message_id: String,
        #[serde(default, rename = "waitMs")]
        wait_ms: u64,
    },
    Cancel {
        #[serde(default)]
        id: Value,
        #[serde(rename = "messageId")]
        message_id: String,
    },
    Report {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
        #[serde(default = "default_limit")]
        limit: usize,
        #[serde(default)]
        before: Option<String>,
    },
    Reboot {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
    },
    Delete {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
        #[serde(default, rename = "deleteTranscript")]
        delete_transcript: bool,
    },
    Fork {
        #[serde(default)]
        id: Value,
        from: String,
        to: String,
    },
}

fn default_limit() -> usize {
    20
}

fn message_id(text: &str) -> Result<MessageId, PoolError> {
    text.parse().map_err(|_| PoolError::UnknownMessage {
        id: text.to_owned(),
    })
}

/// Runs the console until stdin ends or `shutdown` is cancelled, then stops the pool.
///
/// # Errors
/// Reading stdin or writing stdout failed.
pub async fn run(
    pool: Pool,
    with_events: bool,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(value) = out_rx.recv().await {
            let mut line = value.to_string().into_bytes();
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    // Stops the event forwarder once the pool is shut down: the pool (and so the event
    // channel) lives on in this function, so the channel never closes before the writer is
    // awaited.
    let events_done = CancellationToken::new();
    let forwarder = with_events.then(|| {
        let mut events = pool.subscribe();
        let out = out_tx.clone();
        let done = events_done.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    biased;
                    received = events.recv() => received,
                    () = done.cancelled() => {
                        // Whatever the shutdown itself reported is still written.
                        while let Ok(event) = events.try_recv() {
                            let _ = out.send(json!({ "event": event }));
                        }
                        break;
                    }
                };
                match received {
                    Ok(event) => {
                        if out.send(json!({ "event": event })).is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        let _ =
                            out.send(json!({ "event": { "type": "lagged", "missed": missed } }));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    });

    let mut requests = tokio::task::JoinSet::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = tokio::io::AsyncReadExt::take(&mut stdin, MAX_REQUEST_BYTES as u64 + 1);
        let read = tokio::select! {
            () = shutdown.cancelled() => break,
            read = limited.read_until(b'\n', &mut line) => read?,
        };
        if read == 0 {
            break;
        }
        if line.len() > MAX_REQUEST_BYTES {
            let _ = out_tx.send(json!({"ok": false, "error": format!("request line longer than {MAX_REQUEST_BYTES} bytes")}));
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            stdin.read_until(b'\n', &mut rest).await?;
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Request>(&line) {
            Ok(request) => {
                let pool = pool.clone();
                let out = out_tx.clone();
                requests.spawn(async move {
                    let _ = out.send(handle(&pool, request).await);
                });
            }
            Err(error) => {
                let _ = out_tx.send(json!({"ok": false, "error": format!("bad request: {error}")}));
            }
        }
        // Reap finished requests as we go so the set does not grow with the session.
        while requests.try_join_next().is_some() {}
    }
    tokio::select! {
        () = async { while requests.join_next().await.is_some() {} } => {}
        () = shutdown.cancelled() => {}
    }
    pool.shutdown().await;
    requests.abort_all();
    events_done.cancel();
    if let Some(forwarder) = forwarder {
        let _ = forwarder.await;
    }
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

async fn handle(pool: &Pool, request: Request) -> Value {
    match request {
        Request::Send {
            id,
            from,
            to,
            message,
        } => {
            let outcome = match pool.pair(&from, &to) {
                Ok(pair) => pool.send(&pair, message).await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(outcome) => json!({"id": id, "ok": true, "outcome": outcome}),
                Err(error) => failure(id, &error),
            }
        }
        Request::Wake { id, from, to } => {
            let pid = match pool.pair(&from, &to) {
                Ok(pair) => pool.wake(&pair).await,
                Err(error) => Err(error),
            };
            match pid {
                Ok(pid) => json!({"id": id, "ok": true, "pid": pid}),
                Err(error) => failure(id, &error),
            }
        }
        Request::WakeAll { id, from } => {
            let config = pool.config();
            let mut pairs = Vec::new();
            for team in config.team_names() {
                match pool.pair(&from, &team) {
                    Ok(pair) => pairs.push(pair),
                    Err(error) => return failure(id, &error),
                }
            }
            let results = pool.wake_all(pairs, config.settings.wake_concurrency).await;
            let teams: Vec<Value> = results
                .into_iter()
                .map(|(pair, result)| match result {
                    Ok(pid) => json!({"team": pair.target, "ok": true, "pid": pid}),
                    Err(error) => {
                        json!({"team": pair.target, "ok": false, "error": error.to_string()})
                    }
                })
                .collect();
            json!({"id": id, "ok": true, "teams": teams})
        }
        Request::Interrupt { id, from, to } => match pool.pair(&from, &to) {
            Ok(pair) => json!({"id": id, "ok": true, "interrupted": pool.interrupt(&pair).await}),
            Err(error) => failure(id, &error),
        },
        Request::Sleep { id, from, to } => match pool.pair(&from, &to) {
            Ok(pair) => json!({"id": id, "ok": true, "stopped": pool.sleep(&pair).await}),
            Err(error) => failure(id, &error),
        },
        Request::Status { id } => json!({"id": id, "ok": true, "status": pool.status()}),
        Request::Tell {
            id,
            from,
            to,
            message,
        } => {
            let accepted = match pool.pair(&from, &to) {
                Ok(pair) => pool.tell(&pair, message, MessageMode::Tell).await,
                Err(error) => Err(error),
            };
            match accepted {
                Ok(message_id) => {
                    json!({"id": id, "ok": true, "messageId": message_id, "status": "queued"})
                }
                Err(error) => failure(id, &error),
            }
        }
        Request::Message {
            id,
            message_id: text,
            wait_ms,
        } => {
            let record = match message_id(&text) {
                Ok(message) => {
                    pool.wait_message(message, Duration::from_millis(wait_ms))
                        .await
                }
                Err(error) => Err(error),
            };
            match record {
                Ok(record) => json!({"id": id, "ok": true, "message": record}),
                Err(error) => failure(id, &error),
            }
        }
        Request::Cancel {
            id,
            message_id: text,
        } => {
            let state = match message_id(&text) {
                Ok(message) => pool.cancel(message).await,
                Err(error) => Err(error),
            };
            match state {
                Ok(state) => json!({"id": id, "ok": true, "state": state}),
                Err(error) => failure(id, &error),
            }
        }
        Request::Report {
            id,
            from,
            to,
            limit,
            before,
        } => {
            let before = match before.as_deref().map(message_id).transpose() {
                Ok(before) => before,
                Err(error) => return failure(id, &error),
            };
            let messages = match pool.pair(&from, &to) {
                Ok(pair) => pool.report(&pair, Page { limit, before }).await,
                Err(error) => Err(error),
            };
            match messages {
                Ok(messages) => json!({"id": id, "ok": true, "messages": messages}),
                Err(error) => failure(id, &error),
            }
        }
        Request::Reboot { id, from, to } => {
            let rebooted = match pool.pair(&from, &to) {
                Ok(pair) => pool.reboot(&pair).await,
                Err(error) => Err(error),
            };
            match rebooted {
                Ok((old, new)) => {
                    json!({"id": id, "ok": true, "oldSessionId": old, "sessionId": new})
                }
                Err(error) => failure(id, &error),
            }
        }
        Request::Delete {
            id,
            from,
            to,
            delete_transcript,
        } => {
            let deleted = match pool.pair(&from, &to) {
                Ok(pair) => pool.delete_session(&pair, delete_transcript).await,
                Err(error) => Err(error),
            };
            match deleted {
                Ok((old, transcript)) => {
                    json!({"id": id, "ok": true, "deletedSessionId": old, "deletedTranscript": transcript})
                }
                Err(error) => failure(id, &error),
            }
        }
        Request::Fork { id, from, to } => {
            let command = match pool.pair(&from, &to) {
                Ok(pair) => pool.fork_command(&pair).await,
                Err(error) => Err(error),
            };
            match command {
                Ok(command) => {
                    json!({"id": id, "ok": true, "command": command.shell_line(), "fork": command})
                }
                Err(error) => failure(id, &error),
            }
        }
    }
}

fn failure(id: Value, error: &PoolError) -> Value {
    json!({"id": id, "ok": false, "error": error.to_string()})
}
