//! A scriptable fake of Anthropic's Messages API, enough for the real Claude Code CLI to run
//! offline against it (`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`).
//!
//! It binds loopback only and serves:
//! - `POST /v1/messages` (any query string, bodies up to [`MAX_BODY_BYTES`]): a streamed
//!   (`"stream": true`, server-sent events) or plain JSON answer planned from the request's
//!   conversation and the directives in its last prompt (`[[reply:TEXT]]`, `[[tool:NAME:JSON]]`,
//!   `[[error:STATUS:MESSAGE]]`, ... see `docs/fake-api.md`);
//! - `GET /requests`: every request received, as [`RecordedRequest`]s (`DELETE` clears them);
//! - `POST /script`: queue [`ScriptEntry`]s for prompts whose text cannot carry directives
//!   (`DELETE` clears them);
//! - `HEAD` on any path: 200.
//!
//! [`FakeApi::start`] runs it on the current tokio runtime (tests); the `iris-fake-api`
//! binary runs it as a process.

mod render;
mod script;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::render::Ids;
use self::script::{Block, Plan};

/// Largest request body accepted (413 beyond). The CLI's bodies are ~50 KB and grow with
/// the conversation.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The header the CLI puts its session id in.
pub const SESSION_HEADER: &str = "x-claude-code-session-id";

/// How the fake answers by default.
#[derive(Debug, Clone)]
pub struct FakeApiOptions {
    /// `usage.input_tokens` of every answer (unless `[[usage:IN:OUT]]`). Nonzero, so that
    /// the CLI computes a cost.
    pub input_tokens: u64,
    /// `usage.output_tokens` of every answer (unless `[[usage:IN:OUT]]`).
    pub output_tokens: u64,
    /// A file that gets one JSON line per request received (a [`RecordedRequest`], with
    /// the state it had on arrival).
    pub log: Option<PathBuf>,
}

impl Default for FakeApiOptions {
    fn default() -> Self {
        Self {
            input_tokens: 12,
            output_tokens: 6,
            log: None,
        }
    }
}

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeApiError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The request log could not be opened.
    #[error("cannot open the request log {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 1, 2, ... in arrival order (a reset does not restart the numbering).
    pub index: u64,
    /// `POST`, `HEAD`, ...
    pub method: String,
    /// The path, without the query (`/v1/messages`).
    pub path: String,
    /// The query string (`beta=true`), if any.
    pub query: Option<String>,
    /// The `X-Claude-Code-Session-Id` header.
    pub session_id: Option<String>,
    /// Whether the answer was streamed (`"stream": true`).
    pub stream: bool,
    /// The last prompt of the conversation (user text without `<system-reminder>`s).
    pub prompt: Option<String>,
    /// What was answered: `text`, `tool_use:NAME`, `error:STATUS`, `text+cut`, `head`,
    /// `not_found`, `bad_request`.
    pub reply: String,
    /// Whether the whole answer was handed to the connection.
    pub completed: bool,
    /// Whether the client went away before the end of a streamed answer.
    pub client_closed: bool,
    /// The JSON body (a string if it was not JSON, null if empty).
    pub body: Value,
}

impl RecordedRequest {
    /// Whether this is a Messages API call (`POST /v1/messages`).
    #[must_use]
    pub fn is_messages_call(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }

    /// The text of every user prompt in the body, in order (what [`Self::prompt`] is the
    /// last of).
    #[must_use]
    pub fn prompts(&self) -> Vec<String> {
        script::read_conversation(&self.body).prompts
    }
}

/// A queued answer for a prompt that cannot carry directives itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScriptEntry {
    /// Used only by a request whose last prompt contains this text (any prompt if absent).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// Directives, as they would be written in a prompt: `[[reply:hi]]`, `[[error:529:busy]]`.
    pub directives: String,
}

struct State {
    options: FakeApiOptions,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Requests received since the start (a reset does not restart the numbering).
    received: AtomicU64,
    script: Mutex<VecDeque<ScriptEntry>>,
    next_id: AtomicU64,
    log: Option<Mutex<std::fs::File>>,
    /// Cancelled at shutdown: slow answers end at once.
    stop: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn next_id(&self, prefix: &str) -> String {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_fake{id:06}")
    }

    /// Records a request (and logs it), returning its index.
    fn record(&self, mut request: RecordedRequest) -> u64 {
        let mut requests = lock(&self.requests);
        let index = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        request.index = index;
        if let Some(log) = &self.log
            && let Ok(mut line) = serde_json::to_vec(&request)
        {
            line.push(b'\n');
            if let Err(error) = lock(log).write_all(&line) {
                tracing::warn!(%error, "cannot write the fake API's request log");
            }
        }
        requests.push(request);
        index
    }

    fn update(&self, index: u64, change: impl FnOnce(&mut RecordedRequest)) {
        let mut requests = lock(&self.requests);
        // Recent requests are at the end; a reset may have dropped this one.
        if let Some(request) = requests
            .iter_mut()
            .rev()
            .find(|request| request.index == index)
        {
            change(request);
        }
    }

    /// The first queued entry that applies to `prompt`, removed from the queue.
    fn take_script(&self, prompt: &str) -> Option<ScriptEntry> {
        let mut script = lock(&self.script);
        let position = script.iter().position(|entry| {
            entry
                .matches
                .as_deref()
                .is_none_or(|text| prompt.contains(text))
        })?;
        script.remove(position)
    }
}

/// A running fake Messages API. Dropping it stops it.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<State>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FakeApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeApi {
    /// Starts the fake on 127.0.0.1 and a free port, on the current tokio runtime.
    ///
    /// # Errors
    /// [`FakeApiError`] when the port cannot be bound or the log cannot be opened.
    pub async fn start(options: FakeApiOptions) -> Result<Self, FakeApiError> {
        Self::start_on(0, options).await
    }

    /// Starts the fake on 127.0.0.1:`port` (0: a free port).
    ///
    /// # Errors
    /// [`FakeApiError`] when the port cannot be bound or the log cannot be opened.
    pub async fn start_on(port: u16, options: FakeApiOptions) -> Result<Self, FakeApiError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = match &options.log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| FakeApiError::Log {
                        path: path.clone(),
                        source,
                    })?,
            )),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FakeApiError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| FakeApiError::Bind { addr, source })?;
        let state = Arc::new(State {
            options,
            requests: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
            script: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            log,
            stop: CancellationToken::new(),
        });
        let stop = state.stop.clone();
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        tracing::info!(%addr, "fake Messages API listening");
        Ok(Self {
            addr,
            state,
            task: Some(task),
        })
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`: the CLI's `ANTHROPIC_BASE_URL`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// The Messages API calls (`POST /v1/messages`) received so far, in order.
    #[must_use]
    pub fn messages_calls(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_messages_call)
            .collect()
    }

    /// Queues a scripted answer (see [`ScriptEntry`]).
    pub fn script(&self, entry: ScriptEntry) {
        lock(&self.state.script).push_back(entry);
    }

    /// Forgets the recorded requests and the queued script.
    pub fn reset(&self) {
        lock(&self.state.requests).clear();
        lock(&self.state.script).clear();
    }

    /// Stops serving: slow answers end at once; waits until the listener is closed.
    pub async fn shutdown(mut self) {
        self.state.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the server stops (after [`Self::stop_token`] is cancelled).
    ///
    /// # Errors
    /// The listener failed.
    pub async fn serve_until_stopped(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|error| Err(std::io::Error::other(error))),
            None => Ok(()),
        }
    }

    /// The token that stops the server when cancelled.
    #[must_use]
    pub fn stop_token(&self) -> CancellationToken {
        self.state.stop.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.state.stop.cancel();
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/requests", get(list_requests).delete(clear_requests))
        .route("/script", post(add_script).delete(clear_script))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn base_record(method: &Method, uri: &Uri, headers: &HeaderMap) -> RecordedRequest {
    RecordedRequest {
        index: 0,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        session_id: header_text(headers, SESSION_HEADER),
        stream: false,
        prompt: None,
        reply: String::new(),
        completed: true,
        client_closed: false,
        body: Value::Null,
    }
}

fn json_response(status: StatusCode, request_id: &str, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

async fn messages(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = state.next_id("req");
    let mut record = base_record(&method, &uri, &headers);
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            record.body = Value::String(String::from_utf8_lossy(&body).into_owned());
            record.reply = "bad_request".to_owned();
            state.record(record);
            let message = format!("request body is not JSON: {error}");
            return json_response(
                StatusCode::BAD_REQUEST,
                &request_id,
                &render::error_body(400, &message),
            );
        }
    };
    let conversation = script::read_conversation(&parsed);
    let mut directive_text = conversation.prompt().to_owned();
    if !conversation.continues_turn
        && let Some(entry) = state.take_script(conversation.prompt())
    {
        directive_text.push(' ');
        directive_text.push_str(&entry.directives);
    }
    let directives = script::parse(&directive_text);
    let usage = (state.options.input_tokens, state.options.output_tokens);
    let plan = script::plan(&conversation, &directives, usage);
    record.stream = conversation.stream;
    record.prompt = conversation.prompts.last().cloned();
    record.reply = plan.describe(conversation.stream);
    record.completed = false;
    record.body = parsed;
    let index = state.record(record);

    let reply = match plan {
        Plan::Error { status, message } => {
            state.update(index, |record| record.completed = true);
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(code, &request_id, &render::error_body(status, &message));
        }
        Plan::Reply(reply) => reply,
    };
    let ids = Ids {
        message: state.next_id("msg"),
        tools: reply
            .blocks
            .iter()
            .filter(|block| matches!(block, Block::ToolUse { .. }))
            .map(|_| state.next_id("toolu"))
            .collect(),
    };
    if !conversation.stream {
        if let Some(pause) = reply.slow_ms {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(pause)) => {}
                () = state.stop.cancelled() => {}
            }
        }
        state.update(index, |record| record.completed = true);
        return json_response(
            StatusCode::OK,
            &request_id,
            &render::message(&reply, &ids, &conversation.model),
        );
    }
    let events = render::events(&reply, &ids, &conversation.model);
    let pause = reply.slow_ms.map(Duration::from_millis);
    let (sender, receiver) = mpsc::channel::<Bytes>(8);
    tokio::spawn(stream_events(state, index, events, pause, sender));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", value);
    }
    response
}

/// Feeds a streamed answer's events to the response body, pausing where a slow answer
/// asks; stops when the client goes away or the server stops.
async fn stream_events(
    state: Arc<State>,
    index: u64,
    events: Vec<render::Event>,
    pause: Option<Duration>,
    sender: mpsc::Sender<Bytes>,
) {
    for event in events {
        if let Some(pause) = pause.filter(|_| event.pause_before) {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = sender.closed() => {
                    state.update(index, |record| record.client_closed = true);
                    return;
                }
                () = state.stop.cancelled() => return,
            }
        }
        if sender.send(Bytes::from(event.to_bytes())).await.is_err() {
            state.update(index, |record| record.client_closed = true);
            return;
        }
    }
    state.update(index, |record| record.completed = true);
}

async fn list_requests(
    AxumState(state): AxumState<Arc<State>>,
) -> axum::Json<Vec<RecordedRequest>> {
    axum::Json(lock(&state.requests).clone())
}

async fn clear_requests(AxumState(state): AxumState<Arc<State>>) -> axum::Json<Value> {
    let mut requests = lock(&state.requests);
    let cleared = requests.len();
    requests.clear();
    axum::Json(json!({"cleared": cleared}))
}

/// `POST /script`: one [`ScriptEntry`] or an array of them.
async fn add_script(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    let entries = serde_json::from_slice::<Vec<ScriptEntry>>(&body)
        .or_else(|_| serde_json::from_slice::<ScriptEntry>(&body).map(|entry| vec![entry]));
    match entries {
        Ok(entries) => {
            let mut script = lock(&state.script);
            script.extend(entries);
            axum::Json(json!({"queued": script.len()})).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            axum::Json(render::error_body(
                400,
                &format!("expected {{\"match\"?: text, \"directives\": text}} or an array of them: {error}"),
            )),
        )
            .into_response(),
    }
}

async fn clear_script(AxumState(state): AxumState<Arc<State>>) -> axum::Json<Value> {
    let mut script = lock(&state.script);
    let cleared = script.len();
    script.clear();
    axum::Json(json!({"cleared": cleared}))
}

/// `HEAD` on any path answers 200 (the CLI may probe the base URL); anything else is 404.
async fn fallback(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut record = base_record(&method, &uri, &headers);
    if method == Method::HEAD {
        record.reply = "head".to_owned();
        state.record(record);
        return StatusCode::OK.into_response();
    }
    record.reply = "not_found".to_owned();
    state.record(record);
    let message = format!(
        "the fake Messages API does not serve {method} {}",
        uri.path()
    );
    (
        StatusCode::NOT_FOUND,
        axum::Json(render::error_body(404, &message)),
    )
        .into_response()
}
