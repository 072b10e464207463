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
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{DEFAULT_WAIT, MAX_WAIT, ProvenCaller};
use crate::agent::TurnProgress;
use crate::api::{
    CallerStatus, Cancel, CancelStatus, Date, Deleted, Done, Failure, Fork, Logs, MessageOutcome,
    MessageView, PendingApproval, Rebooted, ReportPage, Sleep, SleepStatus, TeamInfo, TeamList,
    TeamStatus, TeamStatusPage, Wake, WakeAll, iso8601,
};
use crate::logs::LogBuffer;
use crate::pool::{Pair, Pool, PoolError, Viewer};
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

    /// The same handler, for a connection that proves its caller as a whole (the stdio
    /// server started in a team's directory: see
    /// [`stdio_caller`](super::identity::stdio_caller)).
    #[must_use]
    pub fn with_identity(mut self, caller: Option<ProvenCaller>) -> Self {
        self.identity = caller;
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
        Ok(self.send(args, &context).await)
    }

    #[tool(
        description = "Ask another team's agent a question and wait for the answer (same as send_message)."
    )]
    async fn ask_message(
        &self,
        Parameters(args): Parameters<SendArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(self.send(args, &context).await)
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
                let route =
                    super::elicit::route(&context, self.proven(&context), pair.caller.as_str());
                let id = self
                    .pool
                    .submit_routed(&pair, args.message, MessageMode::Quick, route)
                    .await?
                    .id();
                Ok(MessageOutcome::queued(id, &pair))
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
        let found = self
            .pool
            .wait_message(id, wait, &self.viewer(&context))
            .await;
        let view = match found {
            Ok(record) => {
                let mut view = MessageView::from(&record);
                view.pending_approvals = self
                    .pool
                    .pending_approvals_of(record.id)
                    .iter()
                    .map(PendingApproval::from)
                    .collect();
                // Only the links this caller may see (a proven team: the messages it sent).
                match crate::api::visible_chain(&self.pool, &record, &self.viewer(&context)).await {
                    Ok(chain) => view.chain = chain,
                    Err(error) => return Ok(reply::<MessageView>(Err(error.into()))),
                }
                Ok(view)
            }
            Err(error) => Err(error),
        };
        Ok(reply(view))
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
            let pending = self.pool.pending_approvals();
            let budgets = status.budgets.clone();
            let teams = config
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
                    let mut status =
                        TeamStatus::new(team.name.clone(), team.description.clone(), pair);
                    status.pending_approvals = pending
                        .iter()
                        .filter(|record| {
                            record.caller.as_str() == from && record.target == team.name
                        })
                        .map(PendingApproval::from)
                        .collect();
                    status.budget = budgets
                        .iter()
                        .find(|budget| budget.team == team.name)
                        .cloned();
                    status
                })
                .collect();
            Ok(TeamStatusPage {
                teams,
                pool: (&status).into(),
            })
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
                Ok(Sleep {
                    team: pair.target,
                    status: if stopped {
                        SleepStatus::Sleeping
                    } else {
                        SleepStatus::AlreadyAsleep
                    },
                })
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
                let from = self.caller(&context, args.from_team.as_deref())?;
                let results = self.pool.wake_all_from(&from).await?;
                Ok(WakeAll::of(&results))
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
        let teams: Vec<TeamInfo> = config
            .teams
            .values()
            .map(|team| TeamInfo {
                name: team.name.clone(),
                description: team.description.clone(),
                path: team.path.clone(),
                remote: team.remote.as_ref().map(|remote| remote.command.clone()),
            })
            .collect();
        Ok(structured(
            &TeamList {
                total_teams: teams.len(),
                teams,
            },
            false,
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
                ReportPage::load(&self.pool, &pair, page, &self.viewer(&context)).await
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
                Ok(Rebooted {
                    status: Done::Completed,
                    old_session_id: old,
                    session_id: new,
                })
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
                Ok(Deleted {
                    status: Done::Completed,
                    deleted_session_id: old,
                    deleted_transcript: transcript,
                })
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
                Ok(Fork {
                    status: Done::Completed,
                    command: command.shell_line(),
                    cwd: command.cwd,
                })
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
                    return Ok(Cancel {
                        status: if running {
                            CancelStatus::Message(CallerStatus::Cancelled)
                        } else {
                            CancelStatus::NoneRunning
                        },
                        message_id: None,
                    });
                };
                // The message must be this pair's (and, for a proven caller, its own).
                let viewer = self.viewer(&context);
                let record = self.pool.message(id, &viewer).await?;
                if record.caller != pair.caller || record.target != pair.target {
                    return Err(PoolError::UnknownMessage { id: text });
                }
                let state = self.pool.cancel(id, &viewer).await?;
                Ok(Cancel {
                    status: CancelStatus::Message(state.into()),
                    message_id: Some(id),
                })
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
        let logs = self
            .logs
            .as_ref()
            .map(|logs| logs.recent(args.logs_since, level, limit))
            .unwrap_or_default();
        Ok(structured(
            &Logs {
                log_count: logs.len(),
                logs,
            },
            false,
        ))
    }

    #[tool(description = "The current date and time (UTC).")]
    async fn get_date(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let now = crate::store::now_ms();
        Ok(structured(
            &Date {
                unix_ms: now,
                iso: iso8601(now),
            },
            false,
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

    /// Every tool call, through the router, counted in `/metrics` by tool and outcome.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let tool = request.name.clone();
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let answered = self.tool_router.call(call).await;
        let outcome = match &answered {
            Ok(rmcp::model::CallToolResponse::Complete(result))
                if result.is_error == Some(true) =>
            {
                crate::metrics::CallOutcome::ToolError
            }
            Ok(_) => crate::metrics::CallOutcome::Ok,
            Err(_) => crate::metrics::CallOutcome::ProtocolError,
        };
        // Only the tools this server has are labels (an unknown name is one "unknown").
        let known = self.tool_router.has_route(&tool);
        self.pool
            .metrics()
            .mcp_call(if known { &tool } else { "unknown" }, outcome);
        answered
    }

    /// A request rmcp could not read as any method it knows. For an MCP method, that means
    /// its parameters do not fit (`tools/call` with `arguments` that are not an object, say):
    /// `-32602` (invalid params), not "method not found".
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        const KNOWN: [&str; 8] = [
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "tasks/get",
            "tasks/cancel",
            "tasks/list",
            "tasks/result",
        ];
        let method = crate::config::cut_echo(&request.method);
        if KNOWN.contains(&request.method.as_str()) {
            let hint = if request.method == "tools/call" {
                ": `name` must be a string and `arguments`, if given, an object"
            } else {
                ""
            };
            return Err(ErrorData::invalid_params(
                format!("the params of {method} do not fit its schema{hint}"),
                None,
            ));
        }
        Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
            None,
        ))
    }

    /// `tasks/get`: a long `send_message`/`ask_message` is a task whose id is its message id.
    /// A proven caller sees only its own messages' tasks, as with `message_status`.
    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let id = task_id(&request.task_id)?;
        let record = self
            .pool
            .message(id, &self.viewer(&context))
            .await
            .map_err(|error| task_error(&request.task_id, &error))?;
        let retention = self.pool.config().database.retention;
        let mut task = detailed_task(&record, retention);
        // A turn that waits for a person says so, as message_status does.
        if let Some(waiting) = self.pool.pending_approvals_of(record.id).first() {
            task.task.status_message = Some(format!(
                "waiting for approval: {} (approval {})",
                PendingApproval::from(waiting).summary,
                short(&waiting.id)
            ));
        }
        Ok(GetTaskResult::new(task))
    }

    /// `tasks/cancel`: cancels the message (queued: removed; running: interrupted). Answers
    /// at once; `tasks/get` shows the cancellation when it has happened.
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = task_id(&request.task_id)?;
        let viewer = self.viewer(&context);
        // Refused at once for a task the caller may not see; the cancel itself goes on.
        self.pool
            .message(id, &viewer)
            .await
            .map_err(|error| task_error(&request.task_id, &error))?;
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(error) = pool.cancel(id, &viewer).await {
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

    /// Which messages the caller may see: a proven team only its own.
    fn viewer(&self, context: &RequestContext<RoleServer>) -> Viewer {
        match self
            .proven(context)
            .and_then(|known| crate::config::TeamName::new(&known.team).ok())
        {
            Some(team) => Viewer::Team(team),
            None => Viewer::Unproven {
                protected: self.pool.config().teams_with_tokens(),
            },
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
            // A team with a token of its own can be acted as only with that token (or
            // through its agent URL), on loopback too.
            (None, Some(stated))
                if self
                    .pool
                    .config()
                    .team(stated)
                    .is_some_and(|team| team.token.is_some()) =>
            {
                Err(PoolError::Caller {
                    message: format!(
                        "team '{stated}' has a token: calls as '{stated}' must send it (`Authorization: Bearer`; the iris command sends IRIS_TOKEN) or come through its agent URL"
                    ),
                })
            }
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
    async fn send(&self, args: SendArgs, context: &RequestContext<RoleServer>) -> CallToolResponse {
        let pair = match self.pair(context, args.from_team.as_deref(), &args.to_team) {
            Ok(pair) => pair,
            Err(error) => return failure(&error).into(),
        };
        let wait = wait_for(args.timeout, DEFAULT_WAIT);
        // The caller waits for the answer: an ask, whichever of the two tools it used.
        let route = super::elicit::route(context, self.proven(context), pair.caller.as_str());
        let mut ticket = match self
            .pool
            .submit_routed(&pair, args.message, MessageMode::Ask, route)
            .await
        {
            Ok(ticket) => ticket,
            Err(error) => return failure(&error).into(),
        };
        let id = ticket.id();
        let progress = context.meta.get_progress_token();
        let mut texts = ticket.take_progress();
        let mut partial = String::new();
        let outcome = ticket.outcome();
        tokio::pin!(outcome);
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        let mut step = 0_u32;
        loop {
            tokio::select! {
                biased;
                result = &mut outcome => {
                    let answer = MessageOutcome::of_turn(id, &pair, &result);
                    let is_error = answer.is_error;
                    return structured(&answer, is_error).into();
                }
                () = &mut deadline => break,
                () = context.ct.cancelled() => break,
                text = next_text(texts.as_mut()) => match text {
                    Some(progressed) => {
                        let message = match progressed {
                            TurnProgress::Text(text) => {
                                partial.push_str(&text);
                                tail(&partial, 200)
                            }
                            TurnProgress::Waiting { approval, summary, asked, .. } => {
                                format!("waiting for approval: {summary} (approval {}; asked: {asked})", short(&approval))
                            }
                            TurnProgress::Decided { approval, allowed } => format!(
                                "approval {} {}",
                                short(&approval),
                                if allowed { "allowed" } else { "denied" }
                            ),
                        };
                        if let Some(token) = progress.clone() {
                            step += 1;
                            let note = ProgressNotificationParam::new(token, f64::from(step))
                                .with_message(message);
                            let _ = context.peer.notify_progress(note).await;
                        }
                    }
                    // The turn ended (its outcome is next) or never started.
                    None => texts = None,
                },
            }
        }
        // Still running: the turn goes on; the caller follows it by task or message_status,
        // so the id it gets must survive power loss.
        let record = self.pool.acknowledge(id).await;
        let tasks = context
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks());
        if tasks && let Ok(record) = &record {
            let retention = self.pool.config().database.retention;
            return CallToolResponse::Task(CreateTaskResult::new(task_of(record, retention)));
        }
        let state = record.map_or(MessageState::Running, |record| record.state);
        structured(
            &MessageOutcome::still_running(id, &pair, state, partial),
            false,
        )
        .into()
    }

    async fn wake(
        &self,
        context: &RequestContext<RoleServer>,
        from: Option<&str>,
        team: &str,
    ) -> Result<Wake, PoolError> {
        let pair = self.pair(context, from, team)?;
        let result = self.pool.wake(&pair).await;
        match result {
            Ok(_) => Ok(Wake::of(pair.target, &result)),
            Err(error) => Err(error),
        }
    }
}

/// A typed result as a tool result: its JSON as structured content (and as text, for
/// clients that read only that).
fn structured<T: Serialize>(value: &T, is_error: bool) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(body) if is_error => CallToolResult::structured_error(body),
        Ok(body) => CallToolResult::structured(body),
        Err(error) => failure(&format!("the result could not be encoded: {error}")),
    }
}

/// A tool's answer: its typed result on success, a tool error naming the cause on failure.
fn reply<T: Serialize>(result: Result<T, PoolError>) -> CallToolResult {
    match result {
        Ok(value) => structured(&value, false),
        Err(error) => failure(&error),
    }
}

fn failure(error: &dyn std::fmt::Display) -> CallToolResult {
    CallToolResult::structured_error(
        serde_json::to_value(Failure::new(error))
            .unwrap_or_else(|_| json!({"status": "failed", "isError": true})),
    )
}

fn task_id(text: &str) -> Result<MessageId, ErrorData> {
    text.parse().map_err(|_| {
        ErrorData::invalid_params(
            format!(
                "taskId '{}' is not an Iris task id",
                crate::config::cut_echo(text)
            ),
            None,
        )
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
    .with_status_message(CallerStatus::of_state(record.state).as_str())
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
            let is_error = record.state != MessageState::Completed || record.is_error;
            let result = structured(&MessageView::from(record), is_error);
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
        ErrorData::invalid_params(
            format!(
                "messageId '{}' is not a message id",
                crate::config::cut_echo(text)
            ),
            None,
        )
    })
}

fn wait_for(timeout_ms: Option<u32>, default: Duration) -> Duration {
    timeout_ms
        .map_or(default, |ms| Duration::from_millis(u64::from(ms)))
        .min(MAX_WAIT)
}

/// The next piece of the answer, or `None` once the stream ended; never ready without one.
async fn next_text(
    texts: Option<&mut tokio::sync::mpsc::UnboundedReceiver<TurnProgress>>,
) -> Option<TurnProgress> {
    match texts {
        Some(texts) => texts.recv().await,
        None => std::future::pending().await,
    }
}

/// The first 8 characters of an approval id: what people type (any unique prefix works).
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(max)).collect()
}
