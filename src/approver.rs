//! The people's side of approvals: an HTTP API on Iris's loopback listener that the `iris`
//! command (and the dashboard) use to list, follow and decide tool-permission requests.
//!
//! It is not MCP, and no MCP tool reaches it: a model cannot approve its own or another
//! agent's request. Every call carries the approver token (header [`APPROVER_HEADER`]), a
//! random secret made at each start and written with the server's address to
//! `$IRIS_HOME/run/approver.json` (mode 0600), which the `iris` command reads.
//!
//! Routes: `GET /approvals` (pending; `?all=1&limit=N` adds decided ones, newest first),
//! `GET /approvals/watch` (JSON lines: the pending ones, then every event as it happens),
//! `POST /approvals/{id}/approve` (`{"always": bool}`), `POST /approvals/{id}/deny`
//! (`{"reason": "..."}`), `GET /approvals/rules`, `DELETE /approvals/rules/{id}`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::pool::{ApprovalError, ApprovalEvent, PersonDecision, Pool};
use crate::store::ApprovalQuery;

/// The header that carries the approver token.
pub const APPROVER_HEADER: &str = "x-iris-approver";

/// Where a running Iris leaves its approver address and token.
#[must_use]
pub fn approver_file(iris_home: &Path) -> PathBuf {
    iris_home.join("run").join("approver.json")
}

/// What [`approver_file`] holds. Its `Debug` leaves the token out.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApproverFile {
    /// `http://127.0.0.1:PORT` of the running Iris.
    pub url: String,
    /// The approver token.
    pub token: String,
    /// The running Iris's pid.
    pub pid: u32,
}

impl std::fmt::Debug for ApproverFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproverFile")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("pid", &self.pid)
            .finish()
    }
}

/// Writes the approver file: readable by this user only (directory 0700, file 0600),
/// written whole then renamed into place.
///
/// # Errors
/// The directory or file cannot be written.
pub fn write_approver_file(iris_home: &Path, file: &ApproverFile) -> std::io::Result<PathBuf> {
    let path = approver_file(iris_home);
    let dir = path.parent().unwrap_or(iris_home);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let temporary = dir.join(format!(".approver.{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(serde_json::to_string(file)?.as_bytes())?;
        std::fs::rename(&temporary, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map(|()| path)
}

/// Removes the approver file if it is this process's.
pub fn remove_approver_file(iris_home: &Path) {
    let path = approver_file(iris_home);
    if read_approver_file(iris_home)
        .ok()
        .flatten()
        .is_some_and(|file| file.pid == std::process::id())
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Reads the approver file of the Iris running for `iris_home`, if there is one.
///
/// # Errors
/// The file exists but cannot be read or is not an approver file.
pub fn read_approver_file(iris_home: &Path) -> std::io::Result<Option<ApproverFile>> {
    let path = approver_file(iris_home);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {error}", path.display()),
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// The address of the Iris running for `iris_home`, from its approver file, if the process
/// that wrote it still runs (a file left by a killed Iris names nobody).
#[must_use]
pub fn running_url(iris_home: &Path) -> Option<String> {
    let file = read_approver_file(iris_home).ok().flatten()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(file.pid).ok()?);
    // Signal 0: only whether the process exists.
    nix::sys::signal::kill(pid, None).ok()?;
    Some(file.url)
}

/// The approval routes, for the HTTP router.
pub fn routes(pool: Pool) -> Router {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/watch", get(watch))
        .route("/approvals/rules", get(rules))
        .route("/approvals/rules/{id}", delete(forget))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
        .with_state(pool)
}

/// A refusal or failure, as JSON `{"error": ...}`.
struct Failed(StatusCode, String);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

impl From<ApprovalError> for Failed {
    fn from(error: ApprovalError) -> Self {
        let status = match error {
            ApprovalError::NotPending { .. } | ApprovalError::NoRule { .. } => {
                StatusCode::NOT_FOUND
            }
            ApprovalError::Ambiguous { .. } => StatusCode::CONFLICT,
            ApprovalError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.to_string())
    }
}

fn check(pool: &Pool, headers: &HeaderMap) -> Result<(), Failed> {
    let offered = headers
        .get(APPROVER_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if offered.is_empty() {
        return Err(Failed(
            StatusCode::UNAUTHORIZED,
            format!(
                "approvals need the approver token in the {APPROVER_HEADER} header; the iris command reads it from {} (only a person's commands should; no MCP tool can approve)",
                approver_file(&pool.config().iris_home).display()
            ),
        ));
    }
    if !pool.approver_token_matches(offered) {
        return Err(Failed(
            StatusCode::UNAUTHORIZED,
            format!(
                "the approver token is not this Iris's (it is made anew at each start; read {})",
                approver_file(&pool.config().iris_home).display()
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct ListQuery {
    /// Decided ones too.
    #[serde(default)]
    all: Option<String>,
    /// At most this many (with `all`).
    #[serde(default)]
    limit: Option<usize>,
}

async fn list(
    State(pool): State<Pool>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, Failed> {
    check(&pool, &headers)?;
    let all = query
        .all
        .as_deref()
        .is_some_and(|all| !matches!(all, "" | "0" | "false"));
    let approvals = if all {
        pool.approvals(ApprovalQuery {
            pending_only: false,
            message: None,
            limit: query.limit.unwrap_or(50),
        })
        .await
        .map_err(|error| Failed(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?
    } else {
        pool.pending_approvals()
    };
    Ok(axum::Json(json!({ "approvals": approvals })).into_response())
}

async fn watch(State(pool): State<Pool>, headers: HeaderMap) -> Result<Response, Failed> {
    check(&pool, &headers)?;
    // Subscribed before the snapshot, so nothing falls between them (an event may repeat a
    // pending one; readers key by id).
    let mut events = pool.subscribe_approvals();
    let snapshot: Vec<ApprovalEvent> = pool
        .pending_approvals()
        .into_iter()
        .map(|approval| ApprovalEvent::Pending { approval })
        .collect();
    let (lines, body) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::spawn(async move {
        for event in snapshot {
            if lines.send(Ok(line(&event))).await.is_err() {
                return;
            }
        }
        loop {
            let event = tokio::select! {
                () = lines.closed() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => {
                    if lines.send(Ok(line(&event))).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    let note = json!({"event": "lagged", "missed": missed}).to_string() + "\n";
                    if lines.send(Ok(note)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|line| (line, body))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn line(event: &ApprovalEvent) -> String {
    let mut text = serde_json::to_string(event)
        .unwrap_or_else(|error| json!({"event": "error", "error": error.to_string()}).to_string());
    text.push('\n');
    text
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApproveBody {
    #[serde(default)]
    always: bool,
    #[serde(default)]
    via: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DenyBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    via: Option<String>,
}

/// A JSON body, or none (an empty body is the defaults).
fn body<T: Default + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Failed> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|error| {
        Failed(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON for this call: {error}"),
        )
    })
}

async fn approve(
    State(pool): State<Pool>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, Failed> {
    check(&pool, &headers)?;
    let request: ApproveBody = body(&bytes)?;
    let decision = PersonDecision {
        allow: true,
        always: request.always,
        reason: None,
        via: request.via,
    };
    decide(&pool, &id, decision).await
}

async fn deny(
    State(pool): State<Pool>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, Failed> {
    check(&pool, &headers)?;
    let request: DenyBody = body(&bytes)?;
    let decision = PersonDecision {
        allow: false,
        always: false,
        reason: request.reason,
        via: request.via,
    };
    decide(&pool, &id, decision).await
}

/// A person's decision, answered with the request as decided.
async fn decide(pool: &Pool, id: &str, decision: PersonDecision) -> Result<Response, Failed> {
    let record = pool.decide_approval(id, decision).await?;
    Ok(axum::Json(record).into_response())
}

async fn rules(State(pool): State<Pool>, headers: HeaderMap) -> Result<Response, Failed> {
    check(&pool, &headers)?;
    Ok(axum::Json(json!({ "rules": pool.approval_rules() })).into_response())
}

async fn forget(
    State(pool): State<Pool>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Failed> {
    check(&pool, &headers)?;
    let rule = pool.forget_approval_rule(&id).await?;
    Ok(axum::Json(rule).into_response())
}
