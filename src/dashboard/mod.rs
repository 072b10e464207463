//! The dashboard: a page at `/` on the HTTP port to watch and steer every team's agents.
//!
//! Plain HTML, CSS and JavaScript embedded in the binary (`assets/`), no build step and
//! nothing loaded from any other origin. The page reads JSON from `/dashboard/api/...` and
//! stays live over Server-Sent Events (`/dashboard/events`: pool and approval events, on
//! which it reloads what changed).
//!
//! Safety, as for `/mcp`: the identity gate checks the `Host` (loopback names only, unless
//! tokens are required); every state-changing request is a `POST` that must carry this
//! server's CSRF token (`x-iris-csrf`, made anew at each start and written into the page,
//! which another origin cannot read) and, if it has an `Origin`, a loopback one; every
//! answer carries a strict Content-Security-Policy. When tokens are configured (always off
//! loopback) the dashboard needs a login: a configured token, sent once through its login
//! form, after which a random session id rides in an `HttpOnly; SameSite=Strict` cookie
//! (or a bearer token on each request). `dashboard.enabled: false` turns it off.
//!
//! Deciding an approval takes more: a person's login. Any local process can read the page
//! (and so its CSRF token), an agent's shell included, so the page alone must not be able
//! to approve what a person is there to refuse. A person logs in with a one-time link that
//! `iris dashboard` gets with the approver token (as `iris approve` uses it), or with a
//! configured token on the login form.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::MessageView;
use crate::config::Secret;
use crate::logs::LogBuffer;
use crate::pool::{PersonDecision, Pool, PoolEvent, Viewer};
use crate::store::{MessageFilter, MessageId, MessageState};

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The header that carries the CSRF token on every state-changing request.
pub const CSRF_HEADER: &str = "x-iris-csrf";
/// The login cookie.
const COOKIE: &str = "iris_dashboard";

/// What every dashboard answer says about where the page may load from and be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` belongs to the dashboard (it checks its own login).
#[must_use]
pub fn is_dashboard_path(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

#[derive(Clone)]
struct Dashboard {
    pool: Pool,
    logs: Option<Arc<LogBuffer>>,
    csrf: Arc<Secret>,
    /// Login sessions (random ids in the cookie): a person logged in.
    sessions: Arc<Mutex<HashSet<String>>>,
    /// One-time login keys `iris dashboard` asked for, with when they stop working.
    login_keys: Arc<Mutex<Vec<(Secret, std::time::Instant)>>>,
    /// Every request must prove a token (serving off loopback).
    require_token: bool,
    /// The last configuration reload or refusal, as the pool reported it.
    last_reload: Arc<Mutex<Option<Value>>>,
    /// Every event for the pages, serialized once for all of them: (SSE event name, JSON).
    hub: tokio::sync::broadcast::Sender<Arc<(&'static str, String)>>,
}

/// The dashboard's routes, for the HTTP router.
pub fn routes(pool: Pool, logs: Option<Arc<LogBuffer>>, require_token: bool) -> Router {
    let (hub, _) = tokio::sync::broadcast::channel(1024);
    let dashboard = Dashboard {
        pool: pool.clone(),
        logs,
        csrf: Arc::new(Secret::random()),
        sessions: Arc::default(),
        login_keys: Arc::default(),
        require_token,
        last_reload: Arc::default(),
        hub: hub.clone(),
    };
    tokio::spawn(feed_pages(pool.clone(), hub));
    // Keep the last reload's outcome for the config view.
    let last = Arc::clone(&dashboard.last_reload);
    let mut events = pool.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(
                    event @ (PoolEvent::ConfigReloaded { .. } | PoolEvent::ConfigRejected { .. }),
                ) => {
                    let mut value = serde_json::to_value(&event).unwrap_or(Value::Null);
                    value["atMs"] = json!(crate::store::now_ms());
                    *last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(value);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Router::new()
        .route("/", get(index))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/dashboard/login", post(login).get(login_link))
        .route("/dashboard/login-link", post(new_login_link))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/events", get(events_stream))
        .route("/dashboard/api/overview", get(overview))
        .route("/dashboard/api/messages", get(messages))
        .route("/dashboard/api/messages/{id}", get(message))
        .route("/dashboard/api/messages/{id}/cancel", post(cancel))
        .route("/dashboard/api/approvals/{id}/{verdict}", post(decide))
        .route("/dashboard/api/pairs/{action}", post(pair_action))
        .route("/dashboard/api/wake-all", post(wake_all))
        .route("/dashboard/api/fork", get(fork))
        .route("/dashboard/api/logs", get(log_tail))
        .route("/dashboard/api/config", get(config))
        .route("/dashboard/api/charts", get(charts))
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            guard,
        ))
        .with_state(dashboard)
}

/// A refusal, as JSON `{"error": ...}`.
struct Failed(StatusCode, String);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

fn failed(error: impl std::fmt::Display) -> Failed {
    Failed(StatusCode::BAD_REQUEST, error.to_string())
}

/// Is the dashboard on, is the caller logged in (when it must be), does a state-changing
/// request carry the CSRF token and come from a loopback page? Then every answer gets the
/// security headers.
async fn guard(State(dashboard): State<Dashboard>, request: Request, next: Next) -> Response {
    let config = dashboard.pool.config();
    if !config.settings.dashboard_enabled {
        return Failed(
            StatusCode::NOT_FOUND,
            "the dashboard is off (dashboard.enabled: false)".to_owned(),
        )
        .into_response();
    }
    let path = request.uri().path().to_owned();
    let needs_login = dashboard.require_token || config.has_tokens();
    let public = matches!(
        path.as_str(),
        "/dashboard/app.css" | "/dashboard/login" | "/dashboard/app.js" | "/dashboard/login-link"
    ) || path == "/";
    if needs_login && !public && !logged_in(&dashboard, request.headers()) {
        return Failed(
            StatusCode::UNAUTHORIZED,
            "log in on the dashboard's page with a configured token (settings.httpToken or a team's token)".to_owned(),
        )
        .into_response();
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if let Some(origin) = request.headers().get(header::ORIGIN)
            && !loopback_origin(origin)
            && !dashboard.require_token
        {
            return Failed(
                StatusCode::FORBIDDEN,
                format!(
                    "a page of another origin ({}) cannot act on the dashboard",
                    origin.to_str().unwrap_or("?")
                ),
            )
            .into_response();
        }
        if request
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() == b"cross-site")
        {
            return Failed(
                StatusCode::FORBIDDEN,
                "a cross-site request cannot act on the dashboard".to_owned(),
            )
            .into_response();
        }
        // The login form is a POST without the token (it has no page to read it from yet; it
        // changes nothing but the caller's own cookie), and so is `iris dashboard`'s request
        // for a login link (it carries the approver token instead).
        if path != "/dashboard/login" && path != "/dashboard/login-link" {
            let offered = request
                .headers()
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            if !dashboard.csrf.matches(offered) {
                return Failed(
                    StatusCode::FORBIDDEN,
                    format!(
                        "a state-changing request needs this server's CSRF token in {CSRF_HEADER} (the dashboard's page carries it)"
                    ),
                )
                .into_response();
            }
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it a browser sends `Origin: null` on the login form's POST.
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn loopback_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .is_some_and(crate::mcp::loopback_authority)
}

/// Whether the request comes from a person's login session (the cookie).
fn person(dashboard: &Dashboard, headers: &HeaderMap) -> bool {
    session_cookie(headers).is_some_and(|id| {
        dashboard
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
    })
}

fn logged_in(dashboard: &Dashboard, headers: &HeaderMap) -> bool {
    let config = dashboard.pool.config();
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        && crate::mcp::known_token(&config, token.trim())
    {
        return true;
    }
    let Some(id) = session_cookie(headers) else {
        return false;
    };
    dashboard
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&id)
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        })
}

async fn index(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    let config = dashboard.pool.config();
    let needs_login = dashboard.require_token || config.has_tokens();
    let html = if needs_login && !logged_in(&dashboard, &headers) {
        LOGIN.to_owned()
    } else {
        INDEX.replace("{{CSRF}}", dashboard.csrf.expose())
    };
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(dashboard): State<Dashboard>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !crate::mcp::known_token(&dashboard.pool.config(), form.token.trim()) {
        tracing::warn!("a dashboard login with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            LOGIN.replace(
                "<!--error-->",
                "<p class=\"error\">That token is not one of this Iris's.</p>",
            ),
        )
            .into_response();
    }
    logged_in_response(&dashboard)
}

/// A new login session: its cookie, and back to the page.
fn logged_in_response(dashboard: &Dashboard) -> Response {
    let id = Secret::random().expose().to_owned();
    dashboard
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id.clone());
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}

/// How long a login link works.
const LOGIN_LINK_LIFETIME: Duration = Duration::from_secs(120);

/// `iris dashboard`: with the approver token, a one-time login link (valid 2 minutes).
async fn new_login_link(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    let offered = headers
        .get(crate::approver::APPROVER_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !dashboard.pool.approver_token_matches(offered) {
        return Failed(
            StatusCode::UNAUTHORIZED,
            format!(
                "a login link needs the approver token in {} (`iris dashboard` reads it from $IRIS_HOME/run/approver.json)",
                crate::approver::APPROVER_HEADER
            ),
        )
        .into_response();
    }
    let key = Secret::random();
    let mut keys = dashboard
        .login_keys
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = std::time::Instant::now();
    keys.retain(|(_, until)| *until > now);
    let path = format!("/dashboard/login?key={}", key.expose());
    keys.push((key, now + LOGIN_LINK_LIFETIME));
    drop(keys);
    axum::Json(json!({"path": path, "validForSeconds": LOGIN_LINK_LIFETIME.as_secs()}))
        .into_response()
}

#[derive(Deserialize)]
struct LinkQuery {
    key: String,
}

/// Opening a login link: a person's session, once per link.
async fn login_link(
    State(dashboard): State<Dashboard>,
    Query(query): Query<LinkQuery>,
) -> Response {
    let now = std::time::Instant::now();
    let used = {
        let mut keys = dashboard
            .login_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = keys.len();
        keys.retain(|(key, until)| *until > now && !key.matches(&query.key));
        keys.len() < before
    };
    if !used {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            LOGIN.replace(
                "<!--error-->",
                "<p class=\"error\">That login link is used or expired: run <code>iris dashboard</code> again.</p>",
            ),
        )
            .into_response();
    }
    logged_in_response(&dashboard)
}

async fn logout(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        dashboard
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        axum::Json(json!({"ok": true})),
    )
        .into_response()
}

/// Serializes each pool event (but the assistant's text, which comes in many small pieces)
/// and approval event once, for every open page; nothing while no page is open.
async fn feed_pages(pool: Pool, hub: tokio::sync::broadcast::Sender<Arc<(&'static str, String)>>) {
    let mut pool_events = pool.subscribe();
    let mut approvals = pool.subscribe_approvals();
    drop(pool);
    loop {
        let (name, data) = tokio::select! {
            event = pool_events.recv() => match event {
                Ok(PoolEvent::Agent { event: crate::agent::AgentEvent::AssistantText { .. }, .. }) => continue,
                Ok(_) if hub.receiver_count() == 0 => continue,
                Ok(event) => ("pool", serde_json::to_string(&event)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    ("lagged", Ok(json!({"missed": missed}).to_string()))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            event = approvals.recv() => match event {
                Ok(_) if hub.receiver_count() == 0 => continue,
                Ok(event) => ("approval", serde_json::to_string(&event)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    ("lagged", Ok(json!({"missed": missed}).to_string()))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Ok(data) = data {
            let _ = hub.send(Arc::new((name, data)));
        }
    }
}

/// Pool and approval events as `pool` and `approval` SSE events (`lagged` when this page
/// fell behind and should reload everything); the page reloads what they touch.
async fn events_stream(State(dashboard): State<Dashboard>) -> Response {
    let receiver = dashboard.hub.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(event) => Event::default().event(event.0).data(event.1.as_str()),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => Event::default()
                .event("lagged")
                .data(json!({"missed": missed}).to_string()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<Event, Infallible>(event), receiver))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn overview(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    let pool = &dashboard.pool;
    let config = pool.config();
    let teams: Vec<Value> = config
        .teams
        .values()
        .map(|team| {
            json!({
                "name": team.name,
                "path": team.path,
                "description": team.description,
                "color": team.color,
                "remote": team.remote.as_ref().map(|remote| &remote.command),
                "model": team.model,
                "grantPermission": team.grant_permission.as_str(),
            })
        })
        .collect();
    let pending = pool.pending_approvals();
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "teams": teams,
        "status": pool.status(),
        "pendingApprovals": pending,
        "person": person(&dashboard, &headers),
        "nowMs": crate::store::now_ms(),
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
struct MessageQuery {
    team: Option<String>,
    from: Option<String>,
    to: Option<String>,
    state: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
}

fn team_name(
    value: Option<&String>,
    what: &str,
) -> Result<Option<crate::config::TeamName>, Failed> {
    value
        .filter(|value| !value.is_empty())
        .map(|value| {
            crate::config::TeamName::new(value).map_err(|error| failed(format!("{what}: {error}")))
        })
        .transpose()
}

async fn messages(
    State(dashboard): State<Dashboard>,
    Query(query): Query<MessageQuery>,
) -> Result<Response, Failed> {
    let state = match query.state.as_deref().filter(|state| !state.is_empty()) {
        None => None,
        Some(state) => Some(MessageState::parse(state).ok_or_else(|| {
            failed(format!(
                "state '{state}': expected queued, running, completed, failed, cancelled, timed_out or interrupted"
            ))
        })?),
    };
    let filter = MessageFilter {
        team: team_name(query.team.as_ref(), "team")?,
        caller: team_name(query.from.as_ref(), "from")?,
        target: team_name(query.to.as_ref(), "to")?,
        state,
        text: query.q.clone(),
        limit: query.limit.unwrap_or(100).clamp(1, 500),
    };
    let records = dashboard
        .pool
        .store()
        .find_messages(filter)
        .await
        .map_err(|error| Failed(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    let views: Vec<Value> = records
        .iter()
        .map(|record| {
            let mut view = serde_json::to_value(MessageView::from(record)).unwrap_or(Value::Null);
            // The list shows a line per message: the transcript is read when one is opened.
            if let Some(object) = view.as_object_mut() {
                object.remove("transcript");
            }
            view
        })
        .collect();
    Ok(axum::Json(json!({ "messages": views })).into_response())
}

fn message_id(id: &str) -> Result<MessageId, Failed> {
    id.parse()
        .map_err(|_| failed(format!("'{id}' is not a message id")))
}

async fn message(
    State(dashboard): State<Dashboard>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Failed> {
    let id = message_id(&id)?;
    let record = dashboard
        .pool
        .message(id, &Viewer::Anyone)
        .await
        .map_err(|error| Failed(StatusCode::NOT_FOUND, error.to_string()))?;
    let mut view = MessageView::from(&record);
    view.chain = crate::api::visible_chain(&dashboard.pool, &record, &Viewer::Anyone)
        .await
        .map_err(|error| Failed(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    let approvals = dashboard.pool.pending_approvals_of(id);
    Ok(axum::Json(json!({"message": view, "pendingApprovals": approvals})).into_response())
}

async fn cancel(
    State(dashboard): State<Dashboard>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Failed> {
    let id = message_id(&id)?;
    let state = dashboard
        .pool
        .cancel(id, &Viewer::Anyone)
        .await
        .map_err(failed)?;
    Ok(axum::Json(json!({"state": state})).into_response())
}

#[derive(Deserialize, Default)]
struct Verdict {
    #[serde(default)]
    always: bool,
    #[serde(default)]
    reason: Option<String>,
}

async fn decide(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    UrlPath((id, verdict)): UrlPath<(String, String)>,
    body: Option<axum::Json<Verdict>>,
) -> Result<Response, Failed> {
    if !person(&dashboard, &headers) {
        return Err(Failed(
            StatusCode::FORBIDDEN,
            "deciding an approval needs a person's login: run `iris dashboard` and open the link it prints (any local program can read this page, an agent's shell too)".to_owned(),
        ));
    }
    let body = body.map(|axum::Json(body)| body).unwrap_or_default();
    let allow = match verdict.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(Failed(
                StatusCode::NOT_FOUND,
                format!("'{other}': an approval is approved or denied"),
            ));
        }
    };
    let decision = PersonDecision {
        allow,
        always: allow && body.always,
        reason: body.reason.filter(|reason| !reason.trim().is_empty()),
        via: Some("the dashboard".to_owned()),
    };
    let record = dashboard
        .pool
        .decide_approval(&id, decision)
        .await
        .map_err(|error| Failed(StatusCode::NOT_FOUND, error.to_string()))?;
    Ok(axum::Json(json!({"approval": record})).into_response())
}

#[derive(Deserialize)]
struct PairBody {
    from: String,
    to: String,
    #[serde(default, rename = "deleteTranscript")]
    delete_transcript: bool,
}

async fn pair_action(
    State(dashboard): State<Dashboard>,
    UrlPath(action): UrlPath<String>,
    axum::Json(body): axum::Json<PairBody>,
) -> Result<Response, Failed> {
    let pool = &dashboard.pool;
    let pair = pool.pair(&body.from, &body.to).map_err(failed)?;
    let answer = match action.as_str() {
        "wake" => json!({"pid": pool.wake(&pair).await.map_err(failed)?}),
        "sleep" => json!({"stopped": pool.sleep(&pair).await}),
        "reboot" => {
            let (old, new) = pool.reboot(&pair).await.map_err(failed)?;
            json!({"oldSessionId": old, "sessionId": new})
        }
        "delete" => {
            let (old, transcript) = pool
                .delete_session(&pair, body.delete_transcript)
                .await
                .map_err(failed)?;
            json!({"oldSessionId": old, "deletedTranscript": transcript})
        }
        other => {
            return Err(Failed(
                StatusCode::NOT_FOUND,
                format!("'{other}': a pair can be woken, put to sleep, rebooted or deleted"),
            ));
        }
    };
    tracing::info!(pair = %pair, action, "done from the dashboard");
    Ok(axum::Json(answer).into_response())
}

#[derive(Deserialize, Default)]
struct WakeAllBody {
    /// Whose agents: the caller of the pairs (default `user`, a person at the dashboard).
    from: Option<String>,
}

async fn wake_all(
    State(dashboard): State<Dashboard>,
    body: Option<axum::Json<WakeAllBody>>,
) -> Result<Response, Failed> {
    let from = body
        .and_then(|axum::Json(body)| body.from)
        .unwrap_or_else(|| "user".to_owned());
    let results = dashboard.pool.wake_all_from(&from).await.map_err(failed)?;
    Ok(axum::Json(crate::api::WakeAll::of(&results)).into_response())
}

#[derive(Deserialize)]
struct ForkQuery {
    from: String,
    to: String,
}

async fn fork(
    State(dashboard): State<Dashboard>,
    Query(query): Query<ForkQuery>,
) -> Result<Response, Failed> {
    let pair = dashboard
        .pool
        .pair(&query.from, &query.to)
        .map_err(failed)?;
    let command = dashboard.pool.fork_command(&pair).await.map_err(failed)?;
    Ok(axum::Json(json!({"command": command.shell_line()})).into_response())
}

#[derive(Deserialize, Default)]
struct LogQuery {
    level: Option<String>,
    since: Option<i64>,
    limit: Option<usize>,
}

async fn log_tail(
    State(dashboard): State<Dashboard>,
    Query(query): Query<LogQuery>,
) -> Result<Response, Failed> {
    let level = match query.level.as_deref().unwrap_or("info") {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            return Err(failed(format!(
                "level '{other}': expected error, warn, info, debug or trace"
            )));
        }
    };
    let entries = dashboard.logs.as_ref().map_or_else(Vec::new, |logs| {
        logs.recent(query.since, level, query.limit.unwrap_or(500).min(2000))
    });
    Ok(axum::Json(json!({"logs": entries})).into_response())
}

fn set_or_not(value: bool) -> &'static str {
    if value { "(set)" } else { "(not set)" }
}

async fn config(State(dashboard): State<Dashboard>) -> Response {
    let config = dashboard.pool.config();
    let settings = &config.settings;
    let teams: Vec<Value> = config
        .teams
        .values()
        .map(|team| {
            let env: BTreeMap<&str, &str> = team
                .env
                .keys()
                .map(|key| (key.as_str(), "(redacted)"))
                .collect();
            json!({
                "name": team.name,
                "path": team.path,
                "description": team.description,
                "model": team.model,
                "grantPermission": team.grant_permission.as_str(),
                "remote": team.remote.as_ref().map(|remote| &remote.command),
                "color": team.color,
                "allowedTools": team.allowed_tools,
                "disallowedTools": team.disallowed_tools,
                "permissions": team.permissions.counts(),
                "budget": {"usdPerDay": team.budget.usd_per_day, "turnsPerHour": team.budget.turns_per_hour},
                "env": env,
                "token": set_or_not(team.token.is_some()),
            })
        })
        .collect();
    let last = dashboard
        .last_reload
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    axum::Json(json!({
        "file": config.source,
        "irisHome": config.iris_home,
        "database": config.database.path,
        "settings": {
            "maxProcesses": settings.max_processes,
            "idleTimeout": format!("{:?}", settings.idle_timeout),
            "spawnTimeout": format!("{:?}", settings.spawn_timeout),
            "responseTimeout": format!("{:?}", settings.response_timeout),
            "poolWaitTimeout": format!("{:?}", settings.pool_wait_timeout),
            "maxQueuePerPair": settings.max_queue_per_pair,
            "httpPort": settings.http_port,
            "httpToken": set_or_not(settings.http_token.is_some()),
            "maxHttpSessions": settings.max_http_sessions,
            "approvalTimeout": format!("{:?}", settings.approval_timeout),
            "forwardFallback": settings.forward_fallback.as_str(),
            "maxCallDepth": settings.max_call_depth,
            "daemonIdleTimeout": format!("{:?}", settings.daemon_idle_timeout),
            "hotReloadConfig": settings.hot_reload_config,
        },
        "teams": teams,
        "warnings": config.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "lastReload": last,
    }))
    .into_response()
}

/// Per team: turns per minute and p50/p95 turn time over the last hour; cost per day over
/// the last 7 days.
async fn charts(State(dashboard): State<Dashboard>) -> Result<Response, Failed> {
    let now = crate::store::now_ms();
    let week = now - 7 * 24 * 3_600_000;
    let hour = now - 3_600_000;
    let turns = dashboard
        .pool
        .store()
        .turn_times(week)
        .await
        .map_err(|error| Failed(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    let mut per_minute: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut durations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut cost: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for turn in &turns {
        let team = turn.team.to_string();
        let day = usize::try_from((now - turn.finished_at_ms) / 86_400_000).unwrap_or(7);
        if day < 7 {
            cost.entry(team.clone()).or_insert_with(|| vec![0.0; 7])[6 - day] += turn.cost_usd;
        }
        if turn.finished_at_ms >= hour {
            let minute = usize::try_from((now - turn.finished_at_ms) / 60_000).unwrap_or(60);
            if minute < 60 {
                per_minute
                    .entry(team.clone())
                    .or_insert_with(|| vec![0; 60])[59 - minute] += 1;
            }
            durations.entry(team).or_default().push(turn.duration_ms);
        }
    }
    let percentiles: BTreeMap<String, Value> = durations
        .into_iter()
        .map(|(team, mut samples)| {
            samples.sort_unstable();
            let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
            (
                team,
                json!({"p50Ms": at(50), "p95Ms": at(95), "turns": samples.len()}),
            )
        })
        .collect();
    Ok(axum::Json(json!({
        "nowMs": now,
        "turnsPerMinute": per_minute,
        "turnTime": percentiles,
        "costPerDay": cost,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_pages_are_loopback_origins() {
        for good in [
            "http://127.0.0.1:1615",
            "http://localhost:9",
            "http://[::1]:1615",
        ] {
            assert!(loopback_origin(&HeaderValue::from_static(good)), "{good}");
        }
        for bad in [
            "http://evil.example",
            "https://127.0.0.1:1615",
            "http://127.0.0.1.evil.example:80",
            "null",
        ] {
            assert!(!loopback_origin(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; iris_dashboard=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
    }

    #[test]
    fn dashboard_paths() {
        assert!(is_dashboard_path("/"));
        assert!(is_dashboard_path("/dashboard/api/overview"));
        assert!(!is_dashboard_path("/mcp"));
        assert!(!is_dashboard_path("/dashboardx"));
    }
}
