//! `iris serve --stdio`: the thin bridge between one Claude Code session (MCP lines on
//! stdin and stdout) and the one Iris of its `IRIS_HOME` ([`crate::daemon`]).
//!
//! It connects (starting a daemon when none runs), says hello with its working directory
//! (which names the session's team) and then relays lines both ways untouched: requests,
//! answers, notifications (progress, task status) and the daemon's own requests
//! (elicitation) alike. It reads just enough of each line (`id`, `method`) to know which of
//! the session's requests are unanswered.
//!
//! When the daemon goes away, the bridge answers each unanswered request with an error,
//! tells the session in a log notification (and on stderr), and stays: the session's next
//! line reconnects, starting a new daemon, and replays the session's `initialize` first so
//! the new daemon knows the session as the old one did.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

use crate::daemon::{Connection, DaemonError, Hello, connect_or_start};

/// Where the bridge connects.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// `IRIS_HOME`.
    pub home: PathBuf,
    /// The configuration file (the daemon it starts uses it; a running one must use it too).
    pub config_file: PathBuf,
    /// The session's project (it names its team).
    pub cwd: PathBuf,
}

/// What goes to the session, from the one task that writes its stdout.
enum ToClient {
    /// A line from the daemon.
    FromDaemon(Vec<u8>),
    /// The connection of this generation ended.
    Closed { generation: u64, reason: String },
    /// A line the bridge itself answers.
    Line(Vec<u8>),
}

#[derive(Default)]
struct Shared {
    /// The session's unanswered requests (by their id as JSON text) and the connection
    /// generation each went on.
    pending: HashMap<String, u64>,
    /// The generation of the live connection; `None` once it ended.
    live: Option<u64>,
    /// Ids of replayed `initialize` requests: their answers are the bridge's, not the
    /// session's.
    replayed: HashSet<String>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The two members of a JSON-RPC message the bridge looks at.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
}

fn envelope(line: &[u8]) -> Option<Envelope> {
    serde_json::from_slice(line).ok()
}

/// Relays between stdin/stdout and the daemon until the session closes its input.
///
/// # Errors
/// [`DaemonError`] when the first connection cannot be made (no daemon can be started, or
/// the running one refuses this session). Later failures are told to the session.
pub async fn run(options: BridgeOptions) -> Result<(), DaemonError> {
    let hello = Hello::Bridge {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        cwd: options.cwd.clone(),
        config: options.config_file.clone(),
    };
    let first = connect_or_start(&options.home, &hello, &options.config_file).await?;
    announce(&first);
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let shared = Arc::new(Mutex::new(Shared {
        live: Some(1),
        ..Shared::default()
    }));
    let (to_client, from_daemon) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_to_client(stdout, from_daemon, Arc::clone(&shared)));
    let mut generation = 1;
    let mut upstream = Some(spawn_reader(first, generation, &to_client, &shared));
    let mut saved_initialize: Option<Value> = None;
    let mut stdin = BufReader::with_capacity(64 * 1024, stdin);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            read = stdin.read_until(b'\n', &mut line) => read,
            // The session stopped reading (its stdout closed): nothing left to do.
            _ = &mut writer => break,
        };
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "reading the session's input failed; stopping");
                break;
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let envelope = envelope(&line);
        let method = envelope.as_ref().and_then(|e| e.method.as_deref());
        let is_initialize = method == Some("initialize");
        let request = envelope
            .as_ref()
            .filter(|e| e.method.is_some())
            .and_then(|e| e.id.as_ref())
            .filter(|id| !id.is_null())
            .map(Value::to_string);
        if is_initialize {
            saved_initialize = serde_json::from_slice(&line).ok();
        }
        if let Some(id) = &request {
            lock(&shared).pending.insert(id.clone(), generation);
        }
        let mut tries = 0;
        loop {
            let live = upstream.is_some() && lock(&shared).live == Some(generation);
            if !live {
                upstream = None;
                match connect_or_start(&options.home, &hello, &options.config_file).await {
                    Ok(connection) => {
                        announce(&connection);
                        generation += 1;
                        let mut fresh = spawn_reader(connection, generation, &to_client, &shared);
                        {
                            let mut shared = lock(&shared);
                            if let Some(id) = &request
                                && let Some(on) = shared.pending.get_mut(id)
                            {
                                *on = generation;
                            }
                        }
                        if !is_initialize
                            && let Some(initialize) = &saved_initialize
                            && let Err(error) =
                                replay(&mut fresh, initialize, generation, &shared).await
                        {
                            tracing::warn!(%error, "replaying initialize to the new daemon failed");
                        }
                        upstream = Some(fresh);
                    }
                    Err(error) => {
                        let reason = format!("{error}");
                        tracing::error!("{reason}");
                        if let Some(id) = &request {
                            answer_with_error(&shared, &to_client, id, &reason);
                        }
                        break;
                    }
                }
            }
            let Some(writer) = upstream.as_mut() else {
                break;
            };
            match writer.write_all(&line).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::debug!(%error, "the daemon's connection closed under a write");
                    {
                        let mut shared = lock(&shared);
                        if shared.live == Some(generation) {
                            shared.live = None;
                        }
                    }
                    upstream = None;
                    tries += 1;
                    // Already answered (the connection's end failed it), or tried enough.
                    let still_ours = request
                        .as_ref()
                        .is_none_or(|id| lock(&shared).pending.contains_key(id));
                    if tries >= 2 || !still_ours {
                        if let Some(id) = &request {
                            answer_with_error(
                                &shared,
                                &to_client,
                                id,
                                &format!("the Iris daemon's connection failed: {error}"),
                            );
                        }
                        break;
                    }
                }
            }
        }
    }
    drop(upstream);
    Ok(())
}

fn announce(connection: &Connection) {
    let welcome = &connection.welcome;
    tracing::info!(
        daemon = welcome.pid,
        url = welcome.url,
        team = welcome
            .team
            .as_deref()
            .unwrap_or("(none: calls name fromTeam)"),
        "connected to the Iris daemon"
    );
}

/// Starts the task that reads the daemon's lines of this connection; returns its writer.
fn spawn_reader(
    connection: Connection,
    generation: u64,
    to_client: &mpsc::UnboundedSender<ToClient>,
    shared: &Arc<Mutex<Shared>>,
) -> tokio::net::unix::OwnedWriteHalf {
    let Connection {
        welcome,
        mut reader,
        writer,
    } = connection;
    let to_client = to_client.clone();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let ended = loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) => break "it closed the connection".to_owned(),
                Ok(_) => {
                    if line.last() != Some(&b'\n') {
                        line.push(b'\n');
                    }
                    if to_client.send(ToClient::FromDaemon(line)).is_err() {
                        return;
                    }
                }
                Err(error) => break format!("reading from it failed: {error}"),
            }
        };
        {
            let mut shared = lock(&shared);
            if shared.live == Some(generation) {
                shared.live = None;
            }
        }
        let reason = format!(
            "the Iris daemon (pid {}) went away ({ended}); the next call starts a new one",
            welcome.pid
        );
        let _ = to_client.send(ToClient::Closed { generation, reason });
    });
    writer
}

/// Sends the session's `initialize` (under an id of the bridge's) and `initialized` to a
/// new daemon.
async fn replay(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    initialize: &Value,
    generation: u64,
    shared: &Mutex<Shared>,
) -> std::io::Result<()> {
    let id = Value::String(format!("iris-bridge-replay-{generation}"));
    lock(shared).replayed.insert(id.to_string());
    let mut request = initialize.clone();
    request["id"] = id;
    let mut lines = serde_json::to_vec(&request).map_err(std::io::Error::other)?;
    lines.push(b'\n');
    lines.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n");
    writer.write_all(&lines).await
}

fn answer_with_error(
    shared: &Mutex<Shared>,
    to_client: &mpsc::UnboundedSender<ToClient>,
    id: &str,
    reason: &str,
) {
    if lock(shared).pending.remove(id).is_none() {
        return;
    }
    let _ = to_client.send(ToClient::Line(error_line(id, reason)));
}

fn error_line(id: &str, reason: &str) -> Vec<u8> {
    let id: Value = serde_json::from_str(id).unwrap_or(Value::Null);
    let mut line = serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32603, "message": reason},
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Writes everything the session gets, in order; ends when its stdout closes.
async fn write_to_client<W: AsyncWrite + Unpin>(
    mut stdout: W,
    mut lines: mpsc::UnboundedReceiver<ToClient>,
    shared: Arc<Mutex<Shared>>,
) {
    while let Some(message) = lines.recv().await {
        let written = match message {
            ToClient::FromDaemon(line) => {
                // An answer (an id, no method) settles a request of the session's.
                if let Some(Envelope {
                    id: Some(id),
                    method: None,
                }) = envelope(&line)
                {
                    let key = id.to_string();
                    let mut shared = lock(&shared);
                    if shared.replayed.remove(&key) {
                        continue;
                    }
                    shared.pending.remove(&key);
                }
                stdout.write_all(&line).await
            }
            ToClient::Line(line) => stdout.write_all(&line).await,
            ToClient::Closed { generation, reason } => {
                tracing::error!("{reason}");
                let failed: Vec<String> = {
                    let mut shared = lock(&shared);
                    let failed = shared
                        .pending
                        .iter()
                        .filter(|(_, on)| **on == generation)
                        .map(|(id, _)| id.clone())
                        .collect::<Vec<_>>();
                    for id in &failed {
                        shared.pending.remove(id);
                    }
                    failed
                };
                let mut out = Vec::new();
                for id in &failed {
                    out.extend(error_line(
                        id,
                        &format!("{reason}; this request was not answered"),
                    ));
                }
                if let Ok(mut note) = serde_json::to_vec(&json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/message",
                    "params": {"level": "error", "logger": "iris", "data": reason},
                })) {
                    note.push(b'\n');
                    out.extend(note);
                }
                stdout.write_all(&out).await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_keeps_the_request_id_as_it_was() {
        let line = error_line("\"abc\"", "gone");
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["id"], "abc");
        assert_eq!(value["error"]["message"], "gone");
        let line = error_line("7", "gone");
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["id"], 7);
    }

    #[test]
    fn the_envelope_is_read_from_any_json_rpc_line() {
        let request =
            envelope(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"x":[1,2]}}"#)
                .unwrap();
        assert_eq!(request.id, Some(json!(3)));
        assert_eq!(request.method.as_deref(), Some("tools/call"));
        let answer = envelope(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(answer.method.is_none());
        assert!(envelope(b"not json").is_none());
    }
}
