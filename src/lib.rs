//! Iris: a hub that lets the Claude Code agents of different projects ("teams") ask and tell
//! each other, through a warm, bounded pool of long-lived headless `claude` processes.
//!
//! # Layout
//!
//! - [`config`]: Iris-compatible YAML, loaded and validated into a [`config::Config`]; `edit`
//!   changes the file for `iris init`/`add-team`/`remove-team`, `diff` says what a reload
//!   changes.
//! - [`agent`]: the driver for ONE `claude` process in stream-json mode: spawn and readiness
//!   (the `initialize` control request, no model turn), turns, interrupts, permission requests,
//!   health round trips, graceful stop. One actor task owns each process.
//! - [`pool`]: at most one process per (caller → target) pair and `maxProcesses` in all;
//!   per-pair FIFO queues, LRU eviction of idle processes only, idle timeout, health checks,
//!   events and status. `pool/state.rs` is the slot state machine, the only code that changes
//!   a slot or the live count.
//! - [`store`]: the SQLite database of sessions, messages and agent process groups; the only
//!   module that runs SQL, on the caller's thread under a mutex never held across an await.
//! - [`api`]: the typed results every surface returns (MCP tools, console, `iris` client
//!   commands, tests), and the one mapping from a message's state to a caller's status.
//! - [`mcp`]: the MCP server (stdio and Streamable HTTP) with the Iris MCP tools, and the
//!   identity gate that proves who is calling.
//! - [`serve`]: `iris serve` and `iris console` wired together (guard, pool, reload,
//!   transport), with `--port-file`.
//! - [`console`]: `iris console`, a JSON-lines interface to the pool.
//! - [`client`]: the command line's side of a running server (`status`, `ask`, `tell`,
//!   `report`), `doctor`, and `fork` from the database.
//! - [`output`]: what the `iris` command prints (tables, reports, the config check).
//! - [`install`]: `iris install`/`uninstall`: Iris's entry in Claude Code's config.
//! - [`reload`]: config hot reload: watches the config file and applies valid edits to the
//!   running pool.
//! - [`logs`]: the in-memory log ring buffer behind `get_logs`.
//! - [`guard`]: a companion process that stops every agent's process group if Iris dies.
//! - [`process`]: process-group, parent-death-signal and reaping primitives.
//! - [`testing`]: a fake Messages API so tests run the real Claude Code CLI offline.
//!
//! Imports point one way, down: `config` and `process` at the bottom; `agent` (with `guard`);
//! `store` (which keeps the agent's transcript type); `pool` over both; `api` over the pool;
//! `mcp`, `console`, `client` and `output` over `api`; `serve` on top; then the binary.
//!
//! # Theory of operation
//!
//! A message for a pair goes into that pair's queue. The pair's worker takes it, makes sure
//! the pair has a ready agent (taking a pool slot, evicting the least recently used idle agent
//! of another pair when the pool is full, or waiting a bounded time when every agent is busy),
//! writes the message as one stream-json user line and waits for the `result` line. The
//! agent's session id belongs to the pair: the first process starts it with `--session-id`,
//! later ones continue it with `--resume`, so a crash or an eviction never loses the
//! conversation.
//!
//! Every agent leads its own process group. Stopping one closes its stdin, then signals the
//! group with `SIGTERM` and `SIGKILL` after grace periods, then reaps every member. If Iris is
//! killed, the parent-death signal reaches each agent and the guard kills the groups.

pub mod agent;
pub mod api;
pub mod approver;
pub mod bridge;
pub mod client;
pub mod config;
pub mod console;
pub mod daemon;
pub mod dashboard;
pub mod guard;
pub mod install;
pub mod logs;
pub mod mcp;
pub mod metrics;
pub mod output;
pub mod permissions;
pub mod pool;
pub mod process;
pub mod reload;
pub mod remote;
pub mod serve;
pub mod store;
pub mod testing;
