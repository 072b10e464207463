//! The MCP surface: one handler, [`IrisMcp`], serving the Iris MCP tools over stdio and over
//! Streamable HTTP. Each tool is a thin call into [`Pool`](crate::pool::Pool); results are structured JSON with
//! a `status` a caller can branch on (`completed`, `pending`, `queued`, `failed`,
//! `timed_out`, `cancelled`).
//!
//! Invariant: the handler holds no state of its own beyond the pool handle and the log
//! buffer; tool names and argument names are Iris MCP's, so its users can switch.

mod elicit;
mod http;
mod identity;
mod tools;

pub use http::{MAX_REQUEST_BODY_BYTES, router, serve_http, without_nagle};
pub use identity::{HttpAccess, ProvenCaller, stdio_caller};
pub(crate) use identity::{known_token, loopback_authority};
pub use tools::IrisMcp;

use std::time::Duration;

/// What a waiting tool (`send_message`, `ask_message`) waits by default before answering
/// `pending`: below the ~60 s an MCP client such as Claude Code gives a tool call.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(50);

/// The longest wait a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
