//! MCP over Streamable HTTP (`/mcp`) with `/health`, on one axum router.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::IrisMcp;
use super::identity::{Gate, HttpAccess, admit};
use crate::logs::LogBuffer;
use crate::pool::Pool;

/// Largest request body accepted (413 beyond): long messages fit, a flood does not.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Browser origins allowed to call: loopback pages only. A request with no `Origin` (any
/// non-browser client) passes; a page elsewhere gets 403.
const ALLOWED_ORIGINS: [&str; 4] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "null",
];

/// The HTTP routes: MCP at `/mcp` and at agents' own `/mcp/s/<token>` (one handler per MCP
/// session, all on the same pool), `GET /status` and `GET /health`. Every request but
/// `/health` passes the identity gate ([`HttpAccess`]). Against DNS rebinding, rmcp checks
/// the `Origin` header (loopback pages only) and, unless every request must carry a token,
/// the `Host` header (loopback names only); bodies are capped at [`MAX_REQUEST_BODY_BYTES`].
pub fn router(
    pool: Pool,
    logs: Option<Arc<LogBuffer>>,
    shutdown: &CancellationToken,
    access: HttpAccess,
) -> Router {
    let mcp_pool = pool.clone();
    // The call-back listener of the in-process stdio server serves agents, not people.
    let dashboard = (!access.callbacks_only && !access.agents_only)
        .then(|| crate::dashboard::routes(pool.clone(), logs.clone(), access.require_token));
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_allowed_origins(ALLOWED_ORIGINS)
        .with_max_request_body_bytes(MAX_REQUEST_BODY_BYTES);
    if access.require_token {
        // Reached under the machine's own names; a rebinding page cannot send the token.
        config = config.disable_allowed_hosts();
    }
    let mut session_config = SessionConfig::default();
    session_config.keep_alive = Some(pool.config().settings.http_session_idle_timeout);
    let mut manager = LocalSessionManager::default();
    manager.session_config = session_config;
    let sessions = Arc::new(manager);
    let service = StreamableHttpService::new(
        move || Ok(IrisMcp::new(mcp_pool.clone(), logs.clone())),
        Arc::clone(&sessions),
        config,
    );
    let metrics_sessions = Arc::clone(&sessions);
    let cap = SessionCap {
        sessions,
        pool: pool.clone(),
        opening: Arc::new(tokio::sync::Mutex::new(())),
        reserved: Arc::default(),
    };
    let gate = Gate {
        pool: pool.clone(),
        access,
    };
    let status_pool = pool.clone();
    let metrics_pool = pool.clone();
    let routes = Router::new()
        .nest_service("/mcp", service)
        .merge(crate::approver::routes(pool.clone()))
        .route(
            "/metrics",
            get(move || {
                let pool = metrics_pool.clone();
                let sessions = Arc::clone(&metrics_sessions);
                async move {
                    let open = sessions.sessions.read().await.len();
                    let text =
                        pool.metrics()
                            .render(&pool.status(), pool.pending_approval_count(), open);
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route(
            "/status",
            get(move || {
                let status = status_pool.status();
                async move { axum::Json(status) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let status = pool.status();
                async move {
                    axum::Json(json!({
                        "status": "ok",
                        "server": "iris",
                        "version": env!("CARGO_PKG_VERSION"),
                        "live": status.live,
                        "maxProcesses": status.max_processes,
                    }))
                }
            }),
        );
    // Behind the same gate (Host check, tokens) as every other route.
    let routes = match dashboard {
        Some(dashboard) => routes.merge(dashboard),
        None => routes,
    };
    routes
        .layer(axum::middleware::from_fn_with_state(cap, session_cap))
        .layer(axum::middleware::from_fn(json_rpc_errors))
        .layer(axum::middleware::from_fn_with_state(gate, admit))
}

/// What [`session_cap`] needs: the open MCP sessions, the live settings, and a lock that
/// lets one new session open at a time so the cap is exact under concurrent `initialize`s.
#[derive(Clone)]
struct SessionCap {
    sessions: Arc<LocalSessionManager>,
    pool: Pool,
    opening: Arc<tokio::sync::Mutex<()>>,
    /// Requests that may open a session and are being served.
    reserved: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long a client refused by [`session_cap`] is told to wait before trying again.
const SESSION_RETRY_AFTER_SECONDS: u64 = 10;

/// Bounds the MCP sessions open at once (`settings.maxHttpSessions`, read on every request so
/// a reload applies at once). Every session holds a handler and its buffers until it is
/// closed (`DELETE /mcp`) or sits idle for `settings.httpSessionIdleTimeout`, so a client that
/// opens sessions in a loop would otherwise grow memory without bound. A POST to an MCP
/// endpoint without `Mcp-Session-Id` is the only request that opens one (rmcp refuses it
/// unless it is `initialize`); when the sessions are at the cap it gets `503 Service
/// Unavailable` with `Retry-After` and a JSON-RPC error saying which setting bounds it.
/// Requests within an open session are never refused here.
async fn session_cap(
    axum::extract::State(cap): axum::extract::State<SessionCap>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let is_mcp = path == "/mcp" || path.starts_with("/mcp/");
    let opens_session = request.method() == axum::http::Method::POST
        && is_mcp
        && !request.headers().contains_key("mcp-session-id");
    if !opens_session {
        return next.run(request).await;
    }
    // The count and the reservation are one step (the lock), so concurrent opens cannot
    // exceed the cap; the request itself runs without the lock. Held across the request, it
    // would stall every new session behind a request that takes long: a Claude Code agent's
    // tool call can arrive without a session id and last a whole call chain, and an agent
    // started meanwhile (the chain's next hop) could not connect to Iris at all.
    let reservation = {
        let _one_at_a_time = cap.opening.lock().await;
        let max = cap.pool.config().settings.max_http_sessions;
        let open = cap.sessions.sessions.read().await.len()
            + cap.reserved.load(std::sync::atomic::Ordering::SeqCst);
        if open < max {
            Some(Reservation::new(&cap.reserved))
        } else {
            None
        }
    };
    let Some(_reservation) = reservation else {
        let max = cap.pool.config().settings.max_http_sessions;
        let open = cap.sessions.sessions.read().await.len();
        let message = format!(
            "Iris has {open} MCP sessions open, its limit (settings.maxHttpSessions = {max}); \
             close a session (DELETE /mcp with its Mcp-Session-Id) or retry after an idle one \
             times out (settings.httpSessionIdleTimeout)"
        );
        let error =
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": message}});
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                axum::http::header::RETRY_AFTER,
                SESSION_RETRY_AFTER_SECONDS.to_string(),
            )],
            axum::Json(error),
        )
            .into_response();
    };
    next.run(request).await
}

/// A place taken among the sessions being opened, given back when dropped (the request's
/// response is ready, and its session, if it made one, is in the session map).
struct Reservation(Arc<std::sync::atomic::AtomicUsize>);

impl Reservation {
    fn new(reserved: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        reserved.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(Arc::clone(reserved))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// JSON-RPC's own errors for a POST to an MCP endpoint whose body is not a JSON-RPC message,
/// as the JSON-RPC spec and MCP's transport say, instead of rmcp's `415 Unsupported Media
/// Type`: `400` with `-32700` (parse error) for a body that is not JSON, `400` with `-32600`
/// (invalid request) for JSON that is not one JSON-RPC 2.0 message. A well-formed request
/// whose parameters do not fit its method gets `-32602` from the handler
/// (`IrisMcp::on_custom_request`). The body is read here once, within the size limit.
async fn json_rpc_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_mcp = request.uri().path() == "/mcp" || request.uri().path().starts_with("/mcp/");
    if request.method() != axum::http::Method::POST || !is_mcp {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Payload Too Large: request body exceeds {MAX_REQUEST_BODY_BYTES} bytes"),
        )
            .into_response();
    };
    let refusal = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(error) => Some((
            -32700,
            format!("Parse error: the body is not JSON ({error})"),
        )),
        Ok(serde_json::Value::Object(message)) if message.get("jsonrpc") == Some(&json!("2.0")) => {
            None
        }
        Ok(serde_json::Value::Array(_)) => Some((
            -32600,
            "Invalid Request: send one JSON-RPC message per request (batches are not supported)"
                .to_owned(),
        )),
        Ok(_) => Some((
            -32600,
            "Invalid Request: not a JSON-RPC 2.0 message (an object with \"jsonrpc\": \"2.0\")"
                .to_owned(),
        )),
    };
    if let Some((code, message)) = refusal {
        let error =
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled. Every accepted connection
/// gets `TCP_NODELAY` ([`without_nagle`]).
///
/// # Errors
/// The listener failed.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    pool: Pool,
    logs: Option<Arc<LogBuffer>>,
    shutdown: CancellationToken,
    access: HttpAccess,
) -> std::io::Result<()> {
    let app = router(pool, logs, &shutdown, access);
    axum::serve(without_nagle(listener), app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// `listener`, setting `TCP_NODELAY` on every connection it accepts.
///
/// Why: a response goes out in more than one write (the headers, then each SSE event of the
/// body). With Nagle's algorithm on, the second small write waits until the first is
/// acknowledged, and a keep-alive client that delays its ACKs (most do, by up to 40 ms on
/// Linux) holds every call for that long. axum does not set it by itself.
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(set_nodelay)
}

fn set_nodelay(stream: &mut tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY on an accepted connection; its answers may be delayed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn every_accepted_connection_has_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut listener = without_nagle(listener);
        for _ in 0..3 {
            let client = tokio::net::TcpStream::connect(address).await.unwrap();
            let (accepted, from) = listener.accept().await;
            assert_eq!(from, client.local_addr().unwrap());
            assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is off");
        }
    }
}
