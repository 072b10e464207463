//! MCP over Streamable HTTP (`/mcp`) with `/health`, on one axum router.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::IrisMcp;
use crate::logs::LogBuffer;
use crate::pool::Pool;

/// How `iris serve` listens.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Where to listen; loopback only in this build.
    pub bind: SocketAddr,
}

/// The HTTP routes: MCP at `/mcp` (one handler per MCP session, all on the same pool) and
/// `GET /health`. rmcp checks the `Host` header (loopback names only), which guards against
/// DNS rebinding.
pub fn router(pool: Pool, logs: Option<Arc<LogBuffer>>, shutdown: &CancellationToken) -> Router {
    let mcp_pool = pool.clone();
    let service = StreamableHttpService::new(
        move || Ok(IrisMcp::new(mcp_pool.clone(), logs.clone())),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
    );
    Router::new().nest_service("/mcp", service).route(
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
    )
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// The listener failed.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    pool: Pool,
    logs: Option<Arc<LogBuffer>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(pool, logs, &shutdown);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
