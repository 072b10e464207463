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
//! Answers: `{"id":..,"ok":true,...}` with the op's result ([`Answer`] with the types below
//! and in [`crate::api`]), or `{"id":..,"ok":false,"error":"..."}`. With `--events`, pool
//! events are written too, as `{"event":{...}}` ([`Line`]), and `{"lagged":{"missed":N}}`
//! when the console fell behind and missed some.
//! Requests run concurrently; answers come in the order they finish.
//! End of input waits for the requests in flight, then stops every agent.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::api::{Deleted, Done, MessageOutcome, MessageView, Rebooted, ReportPage, WakeAll};
use crate::pool::{
    ForkCommand, PersonDecision, Pool, PoolError, PoolEvent, PoolStatus, TurnOutcome, Viewer,
};
use crate::store::{MessageId, MessageMode, MessageState, Page};

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
    Approvals {
        #[serde(default)]
        id: Value,
    },
    Approve {
        #[serde(default)]
        id: Value,
        approval: String,
        #[serde(default)]
        always: bool,
    },
    Deny {
        #[serde(default)]
        id: Value,
        approval: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

/// One answer line: the request's `id`, `ok`, and the op's fields (`body`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer<T> {
    /// The request's `id`, echoed (`null` when it had none).
    #[serde(default)]
    pub id: Value,
    /// Whether the request worked.
    pub ok: bool,
    /// What the op returns.
    #[serde(flatten)]
    pub body: T,
}

/// `ok: false`: what went wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    /// The error, naming the pair and the cause.
    pub error: String,
}

/// `send`: the turn's structured result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    /// The outcome (answer, cost, usage, transcript...).
    pub outcome: TurnOutcome,
}

/// `wake`: the ready agent's process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Woken {
    /// Its pid.
    pub pid: u32,
}

/// `interrupt`: whether a message was running.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Interrupted {
    /// A message was running and is being interrupted.
    pub interrupted: bool,
}

/// `sleep`: whether a process was stopped.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stopped {
    /// A process was stopped.
    pub stopped: bool,
}

/// `status`: the pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Every pair.
    pub status: PoolStatus,
}

/// `message`: the message as a caller sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// The message.
    pub message: MessageView,
}

/// `cancel`: the message's state once the cancel took effect.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CancelState {
    /// `cancelled`, or the final state it had already reached.
    pub state: MessageState,
}

/// `approvals`: the tool-permission requests that wait for a person, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approvals {
    /// The requests.
    pub approvals: Vec<crate::store::ApprovalRecord>,
}

/// `approve` / `deny`: the request, decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decided {
    /// The request.
    pub approval: crate::store::ApprovalRecord,
}

/// `fork`: the command line, and its parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forked {
    /// As one shell line.
    pub command: String,
    /// Its parts.
    pub fork: ForkCommand,
}

/// A line of `--events` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// A pool event.
    Event(PoolEvent),
    /// The console fell behind and missed events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

fn default_limit() -> usize {
    20
}

fn message_id(text: &str) -> Result<MessageId, PoolError> {
    text.parse().map_err(|_| PoolError::UnknownMessage {
        id: crate::config::cut_echo(text),
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
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            let mut line = line.into_bytes();
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
                            let _ = out.send(line(&Line::Event(event)));
                        }
                        break;
                    }
                };
                match received {
                    Ok(event) => {
                        if out.send(line(&Line::Event(event))).is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        let _ = out.send(line(&Line::Lagged { missed }));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    });

    let mut requests = tokio::task::JoinSet::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let mut limited = tokio::io::AsyncReadExt::take(&mut stdin, MAX_REQUEST_BYTES as u64 + 1);
        let read = tokio::select! {
            () = shutdown.cancelled() => break,
            read = limited.read_until(b'\n', &mut buffer) => read?,
        };
        if read == 0 {
            break;
        }
        if buffer.len() > MAX_REQUEST_BYTES {
            let _ = out_tx.send(refused(
                Value::Null,
                &format!("request line longer than {MAX_REQUEST_BYTES} bytes"),
            ));
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            stdin.read_until(b'\n', &mut rest).await?;
            continue;
        }
        if buffer.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Request>(&buffer) {
            Ok(request) => {
                let pool = pool.clone();
                let out = out_tx.clone();
                requests.spawn(async move {
                    let _ = out.send(handle(&pool, request).await);
                });
            }
            Err(error) => {
                let _ = out_tx.send(refused(Value::Null, &format!("bad request: {error}")));
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

/// One JSON line (without its newline).
fn line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|error| {
        json!({"ok": false, "error": format!("the answer could not be encoded: {error}")})
            .to_string()
    })
}

/// An `ok: true` answer line.
fn answer<T: Serialize>(id: Value, body: T) -> String {
    line(&Answer { id, ok: true, body })
}

/// An `ok: false` answer line.
fn refused(id: Value, error: &dyn std::fmt::Display) -> String {
    line(&Answer {
        id,
        ok: false,
        body: Refused {
            error: error.to_string(),
        },
    })
}

/// The answer line of a person's decision.
fn decided(
    id: Value,
    result: Result<crate::store::ApprovalRecord, crate::pool::ApprovalError>,
) -> String {
    match result {
        Ok(approval) => answer(id, Decided { approval }),
        Err(error) => refused(id, &error),
    }
}

/// The answer line of `result`: its body, or the error.
fn reply<T: Serialize>(id: Value, result: Result<T, PoolError>) -> String {
    match result {
        Ok(body) => answer(id, body),
        Err(error) => refused(id, &error),
    }
}

async fn handle(pool: &Pool, request: Request) -> String {
    match request {
        Request::Approvals { id } => answer(
            id,
            Approvals {
                approvals: pool.pending_approvals(),
            },
        ),
        Request::Approve {
            id,
            approval,
            always,
        } => decided(
            id,
            pool.decide_approval(
                &approval,
                PersonDecision {
                    allow: true,
                    always,
                    reason: None,
                    via: Some("iris console".to_owned()),
                },
            )
            .await,
        ),
        Request::Deny {
            id,
            approval,
            reason,
        } => decided(
            id,
            pool.decide_approval(
                &approval,
                PersonDecision {
                    allow: false,
                    always: false,
                    reason,
                    via: Some("iris console".to_owned()),
                },
            )
            .await,
        ),
        Request::Send {
            id,
            from,
            to,
            message,
        } => {
            let sent = async {
                let pair = pool.pair(&from, &to)?;
                let outcome = pool.send(&pair, message).await?;
                Ok(Sent { outcome })
            };
            reply(id, sent.await)
        }
        Request::Wake { id, from, to } => {
            let woken = async {
                let pair = pool.pair(&from, &to)?;
                Ok(Woken {
                    pid: pool.wake(&pair).await?,
                })
            };
            reply(id, woken.await)
        }
        Request::WakeAll { id, from } => reply(
            id,
            pool.wake_all_from(&from)
                .await
                .map(|results| WakeAll::of(&results)),
        ),
        Request::Interrupt { id, from, to } => {
            let interrupted = async {
                let pair = pool.pair(&from, &to)?;
                Ok(Interrupted {
                    interrupted: pool.interrupt(&pair).await,
                })
            };
            reply(id, interrupted.await)
        }
        Request::Sleep { id, from, to } => {
            let stopped = async {
                let pair = pool.pair(&from, &to)?;
                Ok(Stopped {
                    stopped: pool.sleep(&pair).await,
                })
            };
            reply(id, stopped.await)
        }
        Request::Status { id } => answer(
            id,
            Status {
                status: pool.status(),
            },
        ),
        Request::Tell {
            id,
            from,
            to,
            message,
        } => {
            let told = async {
                let pair = pool.pair(&from, &to)?;
                let message_id = pool.tell(&pair, message, MessageMode::Tell).await?;
                Ok(MessageOutcome::queued(message_id, &pair))
            };
            reply(id, told.await)
        }
        Request::Message {
            id,
            message_id: text,
            wait_ms,
        } => {
            let found = async {
                let record = pool
                    .wait_message(
                        message_id(&text)?,
                        Duration::from_millis(wait_ms),
                        &Viewer::Anyone,
                    )
                    .await?;
                Ok(Message {
                    message: MessageView::from(&record),
                })
            };
            reply(id, found.await)
        }
        Request::Cancel {
            id,
            message_id: text,
        } => {
            let cancelled = async {
                let state = pool.cancel(message_id(&text)?, &Viewer::Anyone).await?;
                Ok(CancelState { state })
            };
            reply(id, cancelled.await)
        }
        Request::Report {
            id,
            from,
            to,
            limit,
            before,
        } => {
            let page = async {
                let before = before.as_deref().map(message_id).transpose()?;
                let pair = pool.pair(&from, &to)?;
                ReportPage::load(pool, &pair, Page { limit, before }, &Viewer::Anyone).await
            };
            reply(id, page.await)
        }
        Request::Reboot { id, from, to } => {
            let rebooted = async {
                let pair = pool.pair(&from, &to)?;
                let (old, new) = pool.reboot(&pair).await?;
                Ok(Rebooted {
                    status: Done::Completed,
                    old_session_id: old,
                    session_id: new,
                })
            };
            reply(id, rebooted.await)
        }
        Request::Delete {
            id,
            from,
            to,
            delete_transcript,
        } => {
            let deleted = async {
                let pair = pool.pair(&from, &to)?;
                let (old, transcript) = pool.delete_session(&pair, delete_transcript).await?;
                Ok(Deleted {
                    status: Done::Completed,
                    deleted_session_id: old,
                    deleted_transcript: transcript,
                })
            };
            reply(id, deleted.await)
        }
        Request::Fork { id, from, to } => {
            let forked = async {
                let pair = pool.pair(&from, &to)?;
                let fork = pool.fork_command(&pair).await?;
                Ok(Forked {
                    command: fork.shell_line(),
                    fork,
                })
            };
            reply(id, forked.await)
        }
    }
}
