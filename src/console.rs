//! `iris console`: drive the pool with JSON lines on stdin and read answers and events as JSON
//! lines on stdout. For scripts, tests and benchmarks; the MCP server is the interface for
//! agents.
//!
//! Requests (one JSON object per line; `id` is echoed back and may be any JSON value):
//! `{"id":1,"op":"send","from":"frontend","to":"backend","message":"..."}`,
//! `{"op":"wake","from":..,"to":..}`, `{"op":"wake_all","from":..}`, `{"op":"interrupt",..}`,
//! `{"op":"sleep",..}`, `{"op":"status"}`.
//! Answers: `{"id":..,"ok":true,...}` or `{"id":..,"ok":false,"error":"..."}`. With
//! `--events`, pool events are written too, as `{"event":{...}}`.
//! Requests run concurrently; answers come in the order they finish.
//! End of input waits for the requests in flight, then stops every agent.

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pool::Pool;

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
    if with_events {
        let mut events = pool.subscribe();
        let out = out_tx.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
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
        });
    }

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
    }
}

fn failure(id: Value, error: &crate::pool::PoolError) -> Value {
    json!({"id": id, "ok": false, "error": error.to_string()})
}
