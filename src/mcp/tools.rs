//! The Iris MCP tools. Descriptions are short on purpose: every tool's schema costs the
//! caller's context on every turn.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResponse, CallToolResult, CancelTaskParams, CreateTaskResult, DetailedTask,
    GetTaskParams, GetTaskResult, Implementation, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Task, TaskPayload, TaskStatus,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{DEFAULT_WAIT, MAX_WAIT, ProvenCaller};
use crate::agent::AgentEvent;
use crate::logs::LogBuffer;
use crate::pool::{Pair, Pool, PoolError, PoolEvent, TurnOutcome};
use crate::store::{MessageId, MessageMode, MessageRecord, MessageState, Page};

/// The MCP handler: the Iris MCP tools over a [`Pool`].
#[derive(Clone)]
pub struct IrisMcp {
    pool: Pool,
    logs: Option<Arc<LogBuffer>>,
    /// The caller's team when the whole connection proves it (stdio started in a team's
    /// directory); a `fromTeam` that disagrees is refused.
    identity: Option<ProvenCaller>,
    tool_router: ToolRouter<Self>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct SendArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// The team whose agent answers.
    to_team: String,
    /// The message.
    message: String,
    /// Milliseconds to wait for the answer before returning `pending` (default 50000).
    #[serde(default)]
    timeout: Option<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct QuickArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// The team that receives it.
    to_team: String,
    /// The message.
    message: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct StatusArgs {
    /// A message id from send_message, ask_message or quick_message.
    message_id: String,
    /// Milliseconds to wait for it to finish (default 0: answer at once).
    #[serde(default)]
    timeout: Option<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TeamArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// The other team.
    team: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TeamStatusArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// Only this team (default: all).
    #[serde(default)]
    team: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FromArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct PairArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// The other team.
    to_team: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct DeleteArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// The other team.
    to_team: String,
    /// Also delete Claude's transcript file of the session.
    #[serde(default)]
    delete_transcript: bool,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ReportArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// The other team.
    team: String,
    /// How many messages, newest first (default 10).
    #[serde(default)]
    limit: Option<u32>,
    /// A message id: only messages older than it (next page).
    #[serde(default)]
    before: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct CancelArgs {
    /// Your team; optional if the connection identifies you.
    from_team: Option<String>,
    /// The other team.
    team: String,
    /// The message to cancel (default: the running one).
    #[serde(default)]
    message_id: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct LogsArgs {
    /// Only entries after this unix time in milliseconds.
    #[serde(default)]
    logs_since: Option<i64>,
    /// Minimum level: error, warn, info, debug or trace (default info).
    #[serde(default)]
    level: Option<String>,
    /// At most this many, newest (default 200).
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct NoArgs {}

#[tool_router]
impl IrisMcp {
    /// A handler over `pool`; `logs` serves `get_logs` when given.
    #[must_use]
    pub fn new(pool: Pool, logs: Option<Arc<LogBuffer>>) -> Self {
        Self {
            pool,
            logs,
            identity: None,
            tool_router: Self::tool_router(),
        }
    }

    /// The same handler, for a connection known to come from `team`.
    #[must_use]
    pub fn with_identity(mut self, team: Option<String>) -> Self {
        self.identity = team.map(|team| ProvenCaller {
            team,
            proof: "the stdio server's working directory",
        });
        self
    }

    #[tool(
        description = "Send a message to another team's agent and wait for its answer (up to `timeout`, then `pending` with a messageId)."
    )]
    async fn send_message(
        &self,
        Parameters(args): Parameters<SendArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(self.send(args, MessageMode::Tell, &context).await)
    }

    #[tool(
        description = "Ask another team's agent a question and wait for the answer (same as send_message)."
    )]
    async fn ask_message(
        &self,
        Parameters(args): Parameters<SendArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(self.send(args, MessageMode::Ask, &context).await)
    }

    #[tool(
        description = "Queue a message for another team without waiting; returns its messageId (delivered in order, also after a restart)."
    )]
    async fn quick_message(
        &self,
        Parameters(args): Parameters<QuickArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            async {
                let pair = self.pair(&context, args.from_team.as_deref(), &args.to_team)?;
                let id = self
                    .pool
                    .tell(&pair, args.message, MessageMode::Quick)
                    .await?;
                Ok(json!({
                    "status": "queued",
                    "messageId": id,
                    "fromTeam": pair.caller,
                    "toTeam": pair.target,
                }))
            }
            .await,
        ))
    }

    #[tool(
        description = "A message's state and answer by messageId; can wait up to `timeout` ms for it to finish."
    )]
    async fn message_status(
        &self,
        Parameters(args): Parameters<StatusArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = message_id(&args.message_id)?;
        let wait = wait_for(args.timeout, Duration::ZERO);
        Ok(reply(
            async {
                // Only a proven caller is limited to its own messages: no extra read for
                // anyone else.
                if self.proven(&context).is_some() {
                    self.own_message(&context, id).await?;
                }
                self.pool
                    .wait_message(id, wait)
                    .await
                    .map(|record| record_json(&record))
            }
            .await,
        ))
    }

    #[tool(
        description = "Status of your agents on other teams: awake or asleep, pid, session, queue, cost."
    )]
    async fn team_status(
        &self,
        Parameters(args): Parameters<TeamStatusArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply((|| {
            let config = self.pool.config();
            let from = self.caller(&context, args.from_team.as_deref())?;
            if let Some(team) = &args.team {
                self.pool.pair(&from, team)?;
            }
            let status = self.pool.status();
            let teams: Vec<Value> = config
                .teams
                .values()
                .filter(|team| {
                    args.team
                        .as_deref()
                        .is_none_or(|only| only == team.name.as_str())
                })
                .map(|team| {
                    let pair = status.pairs.iter().find(|pair| {
                        pair.pair.caller.as_str() == from && pair.pair.target == team.name
                    });
                    json!({
                        "name": team.name,
                        "status": match pair.map(|pair| pair.state) {
                            Some(crate::pool::PairState::Stopped) | None => "asleep",
                            Some(_) => "awake",
                        },
                        "state": pair.map(|pair| pair.state),
                        "pid": pair.and_then(|pair| pair.pid),
                        "sessionId": pair.map(|pair| pair.session_id),
                        "queued": pair.map_or(0, |pair| pair.queued),
                        "sessionTurns": pair.map_or(0, |pair| pair.session_turns),
                        "totalCostUsd": pair.map_or(0.0, |pair| pair.total_cost_usd),
                        "description": team.description,
                    })
                })
                .collect();
            Ok(json!({
                "teams": teams,
                "pool": {"live": status.live, "maxProcesses": status.max_processes},
            }))
        })()))
    }

    #[tool(description = "Start your agent on a team now, so the first message is warm.")]
    async fn team_wake(
        &self,
        Parameters(args): Parameters<TeamArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            self.wake(&context, args.from_team.as_deref(), &args.team)
                .await,
        ))
    }

    #[tool(description = "Same as team_wake.")]
    async fn team_launch(
        &self,
        Parameters(args): Parameters<TeamArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            self.wake(&context, args.from_team.as_deref(), &args.team)
                .await,
        ))
    }

    #[tool(
        description = "Stop your agent on a team; its conversation resumes with the next message."
    )]
    async fn team_sleep(
        &self,
        Parameters(args): Parameters<TeamArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            async {
                let pair = self.pair(&context, args.from_team.as_deref(), &args.team)?;
                let stopped = self.pool.sleep(&pair).await;
                Ok(json!({
                    "team": pair.target,
                    "status": if stopped { "sleeping" } else { "already_asleep" },
                }))
            }
            .await,
        ))
    }

    #[tool(description = "Start your agents on every other team, in parallel.")]
    async fn team_wake_all(
        &self,
        Parameters(args): Parameters<FromArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            async {
                let config = self.pool.config();
                let from = self.caller(&context, args.from_team.as_deref())?;
                let mut pairs = Vec::new();
                for team in config.team_names() {
                    // Never the caller's own team: an agent waking itself would recurse.
                    if team != from {
                        pairs.push(self.pool.pair(&from, &team)?);
                    }
                }
                let results = self
                    .pool
                    .wake_all(pairs, config.settings.wake_concurrency)
                    .await;
                let failed = results.iter().filter(|(_, result)| result.is_err()).count();
                let teams: Vec<Value> = results
                    .into_iter()
                    .map(|(pair, result)| match result {
                        Ok(pid) => json!({"team": pair.target, "status": "awake", "pid": pid}),
                        Err(error) => {
                            json!({"team": pair.target, "status": "failed", "error": error.to_string()})
                        }
                    })
                    .collect();
                Ok(json!({
                    "teams": teams,
                    "summary": {"total": teams.len(), "failed": failed},
                }))
            }
            .await,
        ))
    }

    #[tool(description = "The configured teams.")]
    async fn list_teams(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let config = self.pool.config();
        let teams: Vec<Value> = config
            .teams
            .values()
            .map(|team| {
                json!({
                    "name": team.name,
                    "description": team.description,
                    "path": team.path,
                    "remote": team.remote,
                })
            })
            .collect();
        Ok(CallToolResult::structured(
            json!({"teams": teams, "totalTeams": teams.len()}),
        ))
    }

    #[tool(
        description = "Your recent messages with a team, newest first, with answers and transcripts (page with `before`)."
    )]
    async fn session_report(
        &self,
        Parameters(args): Parameters<ReportArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let pair = self.pair(&context, args.from_team.as_deref(), &args.team);
        // A malformed id is a protocol error, but an unknown team is reported first.
        let before = match &pair {
            Ok(_) => args.before.as_deref().map(message_id).transpose()?,
            Err(_) => None,
        };
        Ok(reply(
            async {
                let pair = pair?;
                let page = Page {
                    limit: args.limit.map_or(10, |limit| limit.clamp(1, 200) as usize),
                    before,
                };
                let session = self.pool.session(&pair).await?;
                let messages = self.pool.report(&pair, page).await?;
                Ok(json!({
                    "fromTeam": pair.caller,
                    "team": pair.target,
                    "sessionId": session.as_ref().map(|session| session.session_id),
                    "sessionTurns": session.as_ref().map_or(0, |session| session.turns),
                    "totalCostUsd": session.as_ref().map_or(0.0, |session| session.total_cost_usd),
                    "messages": messages.iter().map(record_json).collect::<Vec<_>>(),
                }))
            }
            .await,
        ))
    }

    #[tool(
        description = "Start your conversation with a team over: new session, old history kept."
    )]
    async fn session_reboot(
        &self,
        Parameters(args): Parameters<PairArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            async {
                let pair = self.pair(&context, args.from_team.as_deref(), &args.to_team)?;
                let (old, new) = self.pool.reboot(&pair).await?;
                Ok(json!({"status": "completed", "oldSessionId": old, "sessionId": new}))
            }
            .await,
        ))
    }

    #[tool(
        description = "Forget your session with a team (optionally deleting Claude's transcript file)."
    )]
    async fn session_delete(
        &self,
        Parameters(args): Parameters<DeleteArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            async {
                let pair = self.pair(&context, args.from_team.as_deref(), &args.to_team)?;
                let (old, transcript) = self
                    .pool
                    .delete_session(&pair, args.delete_transcript)
                    .await?;
                Ok(json!({
                    "status": "completed", "deletedSessionId": old, "deletedTranscript": transcript,
                }))
            }
            .await,
        ))
    }

    #[tool(
        description = "The command that opens your conversation with a team in an interactive claude, as a fork."
    )]
    async fn session_fork(
        &self,
        Parameters(args): Parameters<PairArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(reply(
            async {
                let pair = self.pair(&context, args.from_team.as_deref(), &args.to_team)?;
                let command = self.pool.fork_command(&pair).await?;
                Ok(json!({
                    "status": "completed", "command": command.shell_line(), "cwd": command.cwd,
                }))
            }
            .await,
        ))
    }

    #[tool(description = "Cancel a message to a team (by messageId, or the running one).")]
    async fn session_cancel(
        &self,
        Parameters(args): Parameters<CancelArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let pair = self.pair(&context, args.from_team.as_deref(), &args.team);
        // A malformed id is a protocol error, but an unknown team is reported first.
        let id = match (&pair, args.message_id.as_deref()) {
            (Ok(_), Some(text)) => Some((message_id(text)?, text.to_owned())),
            _ => None,
        };
        Ok(reply(
            async {
                let pair = pair?;
                let Some((id, text)) = id else {
                    let running = self.pool.interrupt(&pair).await;
                    return Ok(
                        json!({"status": if running { "cancelled" } else { "none_running" }}),
                    );
                };
                let record = self.pool.message(id).await?;
                if record.caller != pair.caller || record.target != pair.target {
                    return Err(PoolError::UnknownMessage { id: text });
                }
                let state = self.pool.cancel(id).await?;
                Ok(json!({"status": status_of(state), "messageId": id}))
            }
            .await,
        ))
    }

    #[tool(description = "Recent Iris log entries.")]
    async fn get_logs(
        &self,
        Parameters(args): Parameters<LogsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let level = match args
            .level
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("info") => tracing::Level::INFO,
            Some("error") => tracing::Level::ERROR,
            Some("warn" | "warning") => tracing::Level::WARN,
            Some("debug") => tracing::Level::DEBUG,
            Some("trace") => tracing::Level::TRACE,
            Some(other) => {
                return Err(ErrorData::invalid_params(
                    format!("level '{other}' is not one of error, warn, info, debug, trace"),
                    None,
                ));
            }
        };
        let limit = args
            .limit
            .map_or(200, |limit| limit.clamp(1, 2000) as usize);
        let entries = self
            .logs
            .as_ref()
            .map(|logs| logs.recent(args.logs_since, level, limit))
            .unwrap_or_default();
        Ok(CallToolResult::structured(
            json!({"logs": entries, "logCount": entries.len()}),
        ))
    }

    #[tool(description = "The current date and time (UTC).")]
    async fn get_date(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let now = crate::store::now_ms();
        Ok(CallToolResult::structured(
            json!({"unixMs": now, "iso": iso8601(now)}),
        ))
    }
}

/// What the server tells clients at `initialize`.
const INSTRUCTIONS: &str = "Iris connects you to the Claude Code agents of other projects (teams). Use send_message/ask_message to ask and wait, quick_message to tell without waiting, message_status to follow a pending message.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for IrisMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("iris", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS.to_owned())
    }

    /// `tasks/get`: a long `send_message`/`ask_message` is a task whose id is its message id.
    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let id = task_id(&request.task_id)?;
        let record = self
            .pool
            .message(id)
            .await
            .map_err(|error| task_error(&request.task_id, &error))?;
        let retention = self.pool.config().database.retention;
        Ok(GetTaskResult::new(detailed_task(&record, retention)))
    }

    /// `tasks/cancel`: cancels the message (queued: removed; running: interrupted). Answers
    /// at once; `tasks/get` shows the cancellation when it has happened.
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = task_id(&request.task_id)?;
        self.own_message(&context, id)
            .await
            .map_err(|error| task_error(&request.task_id, &error))?;
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(error) = pool.cancel(id).await {
                tracing::warn!(%id, %error, "tasks/cancel could not cancel the message");
            }
        });
        Ok(())
    }
}

impl IrisMcp {
    /// The team the connection proved: the stdio server's, or the HTTP request's (an agent's
    /// own URL or a team's bearer token, recorded by the gate).
    fn proven<'a>(&'a self, context: &'a RequestContext<RoleServer>) -> Option<&'a ProvenCaller> {
        self.identity.as_ref().or_else(|| {
            context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<ProvenCaller>())
        })
    }

    /// The message `id`, if the caller may see it: a caller whose team is proven sees only
    /// the messages it sent; to any other team the message does not exist.
    async fn own_message(
        &self,
        context: &RequestContext<RoleServer>,
        id: MessageId,
    ) -> Result<MessageRecord, PoolError> {
        let record = self.pool.message(id).await?;
        match self.proven(context) {
            Some(known) if record.caller.as_str() != known.team => {
                Err(PoolError::UnknownMessage { id: id.to_string() })
            }
            _ => Ok(record),
        }
    }

    /// The caller: the proven team, or the stated `fromTeam`, never two different ones.
    fn caller(
        &self,
        context: &RequestContext<RoleServer>,
        stated: Option<&str>,
    ) -> Result<String, PoolError> {
        match (self.proven(context), stated) {
            (Some(known), Some(stated)) if known.team != stated => Err(PoolError::Caller {
                message: format!(
                    "fromTeam '{stated}' conflicts with the caller's team '{}' (proven by {}); omit fromTeam",
                    known.team, known.proof
                ),
            }),
            (Some(known), _) => Ok(known.team.clone()),
            (None, Some(stated)) => Ok(stated.to_owned()),
            (None, None) => Err(PoolError::Caller {
                message: "fromTeam is required: this connection is not tied to a team".to_owned(),
            }),
        }
    }

    fn pair(
        &self,
        context: &RequestContext<RoleServer>,
        stated: Option<&str>,
        target: &str,
    ) -> Result<Pair, PoolError> {
        self.pool.pair(&self.caller(context, stated)?, target)
    }

    /// Submits and waits up to the caller's `timeout`. Still running then: a client that
    /// declared the tasks extension gets a task (its id is the message id; `tasks/get` and
    /// `tasks/cancel` follow it), any other gets `pending` with the message id.
    async fn send(
        &self,
        args: SendArgs,
        mode: MessageMode,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResponse {
        let pair = match self.pair(context, args.from_team.as_deref(), &args.to_team) {
            Ok(pair) => pair,
            Err(error) => return failure(&error).into(),
        };
        let wait = wait_for(args.timeout, DEFAULT_WAIT);
        let mut events = self.pool.subscribe();
        let ticket = match self.pool.submit(&pair, args.message, mode).await {
            Ok(ticket) => ticket,
            Err(error) => return failure(&error).into(),
        };
        let id = ticket.id();
        let progress = context.meta.get_progress_token();
        let mut partial = String::new();
        let outcome = ticket.outcome();
        tokio::pin!(outcome);
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        let mut mine = false;
        let mut step = 0_u32;
        loop {
            tokio::select! {
                biased;
                result = &mut outcome => return outcome_result(id, &pair, result).into(),
                () = &mut deadline => break,
                () = context.ct.cancelled() => break,
                event = events.recv() => match event {
                    Ok(PoolEvent::TurnStarted { id: started, .. }) if started == id => mine = true,
                    Ok(PoolEvent::Agent { pair: from, event: AgentEvent::Output { line } }) if mine && from == pair => {
                        if let Some(text) = crate::agent::protocol::assistant_text(&line) {
                            partial.push_str(&text);
                            if let Some(token) = progress.clone() {
                                step += 1;
                                let note = ProgressNotificationParam::new(token, f64::from(step))
                                    .with_message(tail(&partial, 200));
                                let _ = context.peer.notify_progress(note).await;
                            }
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        // Still running: the turn goes on; the caller follows it by task or message_status.
        let record = self.pool.message(id).await;
        let tasks = context
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks());
        if tasks && let Ok(record) = &record {
            let retention = self.pool.config().database.retention;
            return CallToolResponse::Task(CreateTaskResult::new(task_of(record, retention)));
        }
        let state = record.map_or(MessageState::Running, |record| record.state);
        CallToolResult::structured(json!({
            "status": status_of(state),
            "messageId": id,
            "fromTeam": pair.caller,
            "toTeam": pair.target,
            "partialAnswer": partial,
            "note": "still running; call message_status with this messageId (it can wait) for the answer",
        }))
        .into()
    }

    async fn wake(
        &self,
        context: &RequestContext<RoleServer>,
        from: Option<&str>,
        team: &str,
    ) -> Result<Value, PoolError> {
        let pair = self.pair(context, from, team)?;
        let pid = self.pool.wake(&pair).await?;
        Ok(json!({"team": pair.target, "status": "awake", "pid": pid}))
    }
}

fn outcome_result(
    id: MessageId,
    pair: &Pair,
    result: Result<TurnOutcome, PoolError>,
) -> CallToolResult {
    match result {
        Ok(outcome) => {
            let turn = &outcome.result;
            let status = if turn.interrupted {
                "cancelled"
            } else if turn.is_error {
                "failed"
            } else {
                "completed"
            };
            let body = json!({
                "status": status,
                "messageId": id,
                "sessionId": outcome.session_id,
                "fromTeam": pair.caller,
                "toTeam": pair.target,
                "answer": turn.answer,
                "isError": turn.is_error,
                "costUsd": turn.cost_usd,
                "durationMs": turn.duration_ms,
            });
            if turn.is_error {
                CallToolResult::structured_error(body)
            } else {
                CallToolResult::structured(body)
            }
        }
        Err(error) => {
            let status = match &error {
                PoolError::Turn {
                    source: crate::agent::TurnError::TimedOut { .. },
                    ..
                } => "timed_out",
                PoolError::Cancelled { .. } => "cancelled",
                _ => "failed",
            };
            CallToolResult::structured_error(json!({
                "status": status,
                "messageId": id,
                "fromTeam": pair.caller,
                "toTeam": pair.target,
                "isError": true,
                "error": error.to_string(),
            }))
        }
    }
}

fn record_json(record: &MessageRecord) -> Value {
    json!({
        "status": status_of(record.state),
        "state": record.state,
        "messageId": record.id,
        "sessionId": record.session_id,
        "fromTeam": record.caller,
        "toTeam": record.target,
        "mode": record.mode,
        "message": record.text,
        "answer": record.answer,
        "isError": record.is_error,
        "error": record.error,
        "costUsd": record.cost_usd,
        "durationMs": record.duration_ms,
        "createdAtMs": record.created_at_ms,
        "finishedAtMs": record.finished_at_ms,
        "transcript": record.transcript,
    })
}

/// The status a caller branches on, from a message's state.
fn status_of(state: MessageState) -> &'static str {
    match state {
        MessageState::Queued => "queued",
        MessageState::Running => "pending",
        MessageState::Completed => "completed",
        MessageState::Cancelled => "cancelled",
        MessageState::TimedOut => "timed_out",
        MessageState::Failed | MessageState::Interrupted => "failed",
    }
}

/// A tool's answer: its JSON on success, a tool error naming the cause on failure.
fn reply(result: Result<Value, PoolError>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::structured(value),
        Err(error) => failure(&error),
    }
}

fn failure(error: &PoolError) -> CallToolResult {
    CallToolResult::structured_error(
        json!({"status": "failed", "isError": true, "error": error.to_string()}),
    )
}

fn task_id(text: &str) -> Result<MessageId, ErrorData> {
    text.parse().map_err(|_| {
        ErrorData::invalid_params(format!("taskId '{text}' is not an Iris task id"), None)
    })
}

fn task_error(task: &str, error: &PoolError) -> ErrorData {
    match error {
        PoolError::UnknownMessage { .. } => {
            ErrorData::invalid_params(format!("no task '{task}' (unknown or pruned)"), None)
        }
        other => ErrorData::internal_error(other.to_string(), None),
    }
}

/// A message as a task: its id, state and times; the poll interval suits model turns.
fn task_of(record: &MessageRecord, retention: Duration) -> Task {
    let updated = record
        .finished_at_ms
        .or(record.started_at_ms)
        .unwrap_or(record.created_at_ms);
    let status = match record.state {
        MessageState::Queued | MessageState::Running => TaskStatus::Working,
        MessageState::Cancelled => TaskStatus::Cancelled,
        MessageState::Completed
        | MessageState::Failed
        | MessageState::TimedOut
        | MessageState::Interrupted => TaskStatus::Completed,
    };
    Task::new(
        record.id.to_string(),
        status,
        iso8601(record.created_at_ms),
        iso8601(updated),
    )
    .with_status_message(status_of(record.state))
    .with_ttl_ms(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
    .with_poll_interval_ms(TASK_POLL_INTERVAL_MS)
}

/// How often a task client should poll: a model turn takes seconds.
const TASK_POLL_INTERVAL_MS: u64 = 1000;

/// A message as a task with its outcome: a finished message's result is the tool result
/// `message_status` would give (an error result unless it completed).
fn detailed_task(record: &MessageRecord, retention: Duration) -> DetailedTask {
    let payload = match record.state {
        MessageState::Queued | MessageState::Running => TaskPayload::Working,
        MessageState::Cancelled => TaskPayload::Cancelled,
        MessageState::Completed
        | MessageState::Failed
        | MessageState::TimedOut
        | MessageState::Interrupted => {
            let body = record_json(record);
            let result = if record.state == MessageState::Completed && !record.is_error {
                CallToolResult::structured(body)
            } else {
                CallToolResult::structured_error(body)
            };
            match serde_json::to_value(result) {
                Ok(Value::Object(result)) => TaskPayload::Completed { result },
                _ => TaskPayload::Failed {
                    error: serde_json::Map::from_iter([(
                        "message".to_owned(),
                        json!("the result could not be encoded"),
                    )]),
                },
            }
        }
    };
    DetailedTask::new(task_of(record, retention), payload)
}

fn message_id(text: &str) -> Result<MessageId, ErrorData> {
    text.parse().map_err(|_| {
        ErrorData::invalid_params(format!("messageId '{text}' is not a message id"), None)
    })
}

fn wait_for(timeout_ms: Option<u32>, default: Duration) -> Duration {
    timeout_ms
        .map_or(default, |ms| Duration::from_millis(u64::from(ms)))
        .min(MAX_WAIT)
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(max)).collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from unix milliseconds (civil-from-days, proleptic Gregorian).
fn iso8601(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_796_083_200_000), "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn statuses_cover_every_state() {
        for state in MessageState::ALL {
            assert!(
                [
                    "queued",
                    "pending",
                    "completed",
                    "cancelled",
                    "timed_out",
                    "failed"
                ]
                .contains(&status_of(state))
            );
        }
    }
}
