//! What the surfaces return: one set of serde types for the MCP tools, the console, the
//! `iris` client commands and the tests. Field names are the MCP surface's (camelCase, the
//! names Iris MCP used), so a result reads the same wherever it comes from.
//!
//! The mapping from a message's stored state to the status a caller branches on is made
//! here once ([`CallerStatus`]); the rest are plain records built from the pool's and the
//! store's values.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agent::{TranscriptEntry, TurnError};
use crate::config::TeamName;
use crate::logs::LogEntry;
use crate::pool::{Pair, PairState, PairStatus, Pool, PoolError, PoolStatus, TurnOutcome};
use crate::store::{
    ApprovalRecord, MessageId, MessageMode, MessageRecord, MessageState, Page, SessionRecord,
};

/// The status a caller branches on: whether there is an answer, one is still coming, or
/// there will be none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerStatus {
    /// Waiting in its pair's queue.
    Queued,
    /// Running; follow it with `message_status` (or its task).
    Pending,
    /// Answered (the answer may still be an error result: see `isError`).
    Completed,
    /// Cancelled before or while it ran.
    Cancelled,
    /// The agent fell silent for longer than `responseTimeout`.
    TimedOut,
    /// No answer: the turn could not run or broke off (also when Iris stopped while it ran).
    Failed,
}

impl CallerStatus {
    /// The status of a message in `state`.
    #[must_use]
    pub fn of_state(state: MessageState) -> Self {
        match state {
            MessageState::Queued => Self::Queued,
            MessageState::Running => Self::Pending,
            MessageState::Completed => Self::Completed,
            MessageState::Cancelled => Self::Cancelled,
            MessageState::TimedOut => Self::TimedOut,
            MessageState::Failed | MessageState::Interrupted => Self::Failed,
        }
    }

    /// How it is written.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
        }
    }

    /// Whether the message is still on its way (queued or running).
    #[must_use]
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Queued | Self::Pending)
    }
}

impl From<MessageState> for CallerStatus {
    fn from(state: MessageState) -> Self {
        Self::of_state(state)
    }
}

/// A stored message as a caller sees it (`message_status`, `session_report`, a task's
/// result, the console's `message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// What to branch on.
    pub status: CallerStatus,
    /// The stored state (finer than `status`: `interrupted` is `failed` there).
    pub state: MessageState,
    /// Its id.
    pub message_id: MessageId,
    /// The session it ran in.
    pub session_id: Option<Uuid>,
    /// Who sent it.
    pub from_team: TeamName,
    /// Who answers it.
    pub to_team: TeamName,
    /// Whether the sender waited for the answer.
    pub mode: MessageMode,
    /// The message (cut to `database.maxStoredTextBytes`).
    pub message: String,
    /// The answer, once there is one.
    pub answer: Option<String>,
    /// The agent's own `is_error` flag on its result, or a failure.
    pub is_error: bool,
    /// What went wrong.
    pub error: Option<String>,
    /// The turn's own cost.
    pub cost_usd: Option<f64>,
    /// How long the turn took.
    pub duration_ms: Option<u64>,
    /// When it was queued (unix ms).
    pub created_at_ms: i64,
    /// When it ended (unix ms).
    pub finished_at_ms: Option<i64>,
    /// What happened during the turn (bounded).
    pub transcript: Vec<TranscriptEntry>,
    /// Tool-permission requests of its turn that wait for a person now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_approvals: Vec<PendingApproval>,
    /// The message whose turn sent it (an agent calling through its agent URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<MessageId>,
    /// The call chain it ends, root first (`message_status` fills it for a message with a
    /// parent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ChainLink>,
    /// Every tool-permission decision of its turn, oldest first: by whom, when, the input
    /// (`session_report` fills it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
}

/// One message of a call chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainLink {
    /// The message.
    pub message_id: MessageId,
    /// Who sent it.
    pub from_team: TeamName,
    /// Who answers it.
    pub to_team: TeamName,
    /// Its state.
    pub state: MessageState,
}

/// The chain of calls that led to `record`, root first, as far as `viewer` may see it
/// (empty for a message no agent's turn sent).
///
/// # Errors
/// [`crate::store::StoreError`] if the database cannot be read.
pub async fn visible_chain(
    pool: &Pool,
    record: &MessageRecord,
    viewer: &crate::pool::Viewer,
) -> Result<Vec<ChainLink>, crate::store::StoreError> {
    if record.parent_id.is_none() {
        return Ok(Vec::new());
    }
    Ok(pool
        .chain_of(record)
        .await?
        .iter()
        .filter(|link| viewer.may_see(link))
        .map(ChainLink::from)
        .collect())
}

impl From<&MessageRecord> for ChainLink {
    fn from(record: &MessageRecord) -> Self {
        Self {
            message_id: record.id,
            from_team: record.caller.clone(),
            to_team: record.target.clone(),
            state: record.state,
        }
    }
}

/// A tool-permission request that waits for a person, as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// The approval's id (`iris approve ID`; any unique prefix).
    pub id: String,
    /// The message whose turn asks.
    pub message_id: Option<MessageId>,
    /// The team whose agent asks.
    pub team: TeamName,
    /// The tool.
    pub tool: String,
    /// Its input in a few words.
    pub summary: String,
    /// Since when it waits (unix ms).
    pub since_ms: i64,
}

impl From<&ApprovalRecord> for PendingApproval {
    fn from(record: &ApprovalRecord) -> Self {
        Self {
            id: record.id.clone(),
            message_id: record.message_id,
            team: record.target.clone(),
            tool: record.tool.clone(),
            summary: crate::permissions::summarize(&record.tool, &record.input, 160),
            since_ms: record.created_at_ms,
        }
    }
}

impl From<&MessageRecord> for MessageView {
    fn from(record: &MessageRecord) -> Self {
        Self {
            status: record.state.into(),
            state: record.state,
            message_id: record.id,
            session_id: record.session_id,
            from_team: record.caller.clone(),
            to_team: record.target.clone(),
            mode: record.mode,
            message: record.text.clone(),
            answer: record.answer.clone(),
            is_error: record.is_error,
            error: record.error.clone(),
            cost_usd: record.cost_usd,
            duration_ms: record.duration_ms,
            created_at_ms: record.created_at_ms,
            finished_at_ms: record.finished_at_ms,
            transcript: record.transcript.clone(),
            pending_approvals: Vec::new(),
            parent_id: record.parent_id,
            chain: Vec::new(),
            approvals: Vec::new(),
        }
    }
}

/// What `send_message`, `ask_message` and `quick_message` return: the answer, a failure,
/// or where to follow a message that is still on its way (`queued`, `pending`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageOutcome {
    /// What to branch on.
    pub status: CallerStatus,
    /// The message.
    pub message_id: MessageId,
    /// The session it ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// Who sent it.
    pub from_team: TeamName,
    /// Who answers it.
    pub to_team: TeamName,
    /// The answer, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// An error result or a failure.
    #[serde(default)]
    pub is_error: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The turn's own cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// How long the turn took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The answer so far, for a message still running when the caller's wait ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_answer: Option<String>,
    /// What to do next, for a message still on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl MessageOutcome {
    /// A message accepted into its pair's queue, nobody waiting.
    #[must_use]
    pub fn queued(id: MessageId, pair: &Pair) -> Self {
        Self::bare(CallerStatus::Queued, id, pair)
    }

    /// A message still on its way when the caller's wait ended.
    #[must_use]
    pub fn still_running(id: MessageId, pair: &Pair, state: MessageState, partial: String) -> Self {
        Self {
            partial_answer: Some(partial),
            note: Some(
                "still running; call message_status with this messageId (it can wait) for the answer"
                    .to_owned(),
            ),
            ..Self::bare(state.into(), id, pair)
        }
    }

    /// How a turn the caller waited for ended.
    #[must_use]
    pub fn of_turn(id: MessageId, pair: &Pair, result: &Result<TurnOutcome, PoolError>) -> Self {
        match result {
            Ok(outcome) => {
                let turn = &outcome.result;
                let status = if turn.interrupted {
                    CallerStatus::Cancelled
                } else if turn.is_error {
                    CallerStatus::Failed
                } else {
                    CallerStatus::Completed
                };
                Self {
                    session_id: Some(outcome.session_id),
                    answer: Some(turn.answer.clone()),
                    is_error: turn.is_error,
                    cost_usd: Some(turn.cost_usd),
                    duration_ms: Some(turn.duration_ms),
                    ..Self::bare(status, id, pair)
                }
            }
            Err(error) => {
                let status = match error {
                    PoolError::Turn {
                        source: TurnError::TimedOut { .. },
                        ..
                    } => CallerStatus::TimedOut,
                    PoolError::Cancelled { .. } => CallerStatus::Cancelled,
                    _ => CallerStatus::Failed,
                };
                Self {
                    is_error: true,
                    error: Some(error.to_string()),
                    ..Self::bare(status, id, pair)
                }
            }
        }
    }

    fn bare(status: CallerStatus, id: MessageId, pair: &Pair) -> Self {
        Self {
            status,
            message_id: id,
            session_id: None,
            from_team: pair.caller.clone(),
            to_team: pair.target.clone(),
            answer: None,
            is_error: false,
            error: None,
            cost_usd: None,
            duration_ms: None,
            partial_answer: None,
            note: None,
        }
    }

    /// Whether the message has no answer yet (follow it with `message_status`).
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        self.status.is_waiting()
    }
}

impl From<MessageView> for MessageOutcome {
    fn from(view: MessageView) -> Self {
        Self {
            status: view.status,
            message_id: view.message_id,
            session_id: view.session_id,
            from_team: view.from_team,
            to_team: view.to_team,
            answer: view.answer,
            is_error: view.is_error,
            error: view.error,
            cost_usd: view.cost_usd,
            duration_ms: view.duration_ms,
            partial_answer: None,
            note: None,
        }
    }
}

/// A tool that failed before it had a message to speak of (unknown team, bad caller, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Always `failed`.
    pub status: CallerStatus,
    /// Always true.
    pub is_error: bool,
    /// What is wrong, naming where.
    pub error: String,
}

impl Failure {
    /// The failure `error` describes.
    #[must_use]
    pub fn new(error: impl std::fmt::Display) -> Self {
        Self {
            status: CallerStatus::Failed,
            is_error: true,
            error: error.to_string(),
        }
    }
}

/// Whether a caller's agent on a team is running (`team_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wakefulness {
    /// A process is live (starting, idle, busy or stopping).
    Awake,
    /// No process: the next message starts one.
    Asleep,
}

/// One team in [`TeamStatusPage`], from the caller's point of view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamStatus {
    /// The team.
    pub name: TeamName,
    /// Whether the caller's agent on it runs.
    pub status: Wakefulness,
    /// Its process state, once the pair was used.
    pub state: Option<PairState>,
    /// The process.
    pub pid: Option<u32>,
    /// The pair's session.
    pub session_id: Option<Uuid>,
    /// Messages waiting behind the running one.
    pub queued: usize,
    /// Turns in the pair's session.
    pub session_turns: u64,
    /// The session's cost so far.
    pub total_cost_usd: f64,
    /// The team's description.
    pub description: String,
    /// Tool-permission requests of the caller's agent on it that wait for a person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_approvals: Vec<PendingApproval>,
    /// The team's use against its `budget`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::pool::BudgetUse>,
}

impl TeamStatus {
    /// A team, with the caller's pair on it if it was used.
    #[must_use]
    pub fn new(name: TeamName, description: String, pair: Option<&PairStatus>) -> Self {
        Self {
            name,
            status: match pair.map(|pair| pair.state) {
                Some(PairState::Stopped) | None => Wakefulness::Asleep,
                Some(_) => Wakefulness::Awake,
            },
            state: pair.map(|pair| pair.state),
            pid: pair.and_then(|pair| pair.pid),
            session_id: pair.map(|pair| pair.session_id),
            queued: pair.map_or(0, |pair| pair.queued),
            session_turns: pair.map_or(0, |pair| pair.session_turns),
            total_cost_usd: pair.map_or(0.0, |pair| pair.total_cost_usd),
            description,
            pending_approvals: Vec::new(),
            budget: None,
        }
    }
}

/// The pool's use of its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUse {
    /// Live processes.
    pub live: usize,
    /// `maxProcesses`.
    pub max_processes: usize,
}

impl From<&PoolStatus> for PoolUse {
    fn from(status: &PoolStatus) -> Self {
        Self {
            live: status.live,
            max_processes: status.max_processes,
        }
    }
}

/// What `team_status` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamStatusPage {
    /// Every team (or the one asked for).
    pub teams: Vec<TeamStatus>,
    /// The pool.
    pub pool: PoolUse,
}

/// Whether a wake worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeStatus {
    /// The agent is ready.
    Awake,
    /// It could not be started (see `error`).
    Failed,
}

/// One team woken (`team_wake`, `team_launch`, and each of `team_wake_all`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    /// The team.
    pub team: TeamName,
    /// Whether it worked.
    pub status: WakeStatus,
    /// The ready agent's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Wake {
    /// How waking `team` went.
    #[must_use]
    pub fn of(team: TeamName, result: &Result<u32, PoolError>) -> Self {
        match result {
            Ok(pid) => Self {
                team,
                status: WakeStatus::Awake,
                pid: Some(*pid),
                error: None,
            },
            Err(error) => Self {
                team,
                status: WakeStatus::Failed,
                pid: None,
                error: Some(error.to_string()),
            },
        }
    }
}

/// Counts for [`WakeAll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeSummary {
    /// Teams woken or tried.
    pub total: usize,
    /// Those that failed.
    pub failed: usize,
}

/// What `team_wake_all` returns: every team but the caller's own, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeAll {
    /// Each team.
    pub teams: Vec<Wake>,
    /// Counts.
    pub summary: WakeSummary,
}

impl WakeAll {
    /// The results of [`Pool::wake_all_from`](crate::pool::Pool::wake_all_from).
    #[must_use]
    pub fn of(results: &[(Pair, Result<u32, PoolError>)]) -> Self {
        let teams: Vec<Wake> = results
            .iter()
            .map(|(pair, result)| Wake::of(pair.target.clone(), result))
            .collect();
        let failed = teams
            .iter()
            .filter(|wake| wake.status == WakeStatus::Failed)
            .count();
        Self {
            summary: WakeSummary {
                total: teams.len(),
                failed,
            },
            teams,
        }
    }
}

/// Whether `team_sleep` stopped something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SleepStatus {
    /// Its process was stopped.
    Sleeping,
    /// It had none.
    AlreadyAsleep,
}

/// What `team_sleep` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sleep {
    /// The team.
    pub team: TeamName,
    /// What happened.
    pub status: SleepStatus,
}

/// A configured team (`list_teams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamInfo {
    /// Its name.
    pub name: TeamName,
    /// What it is.
    pub description: String,
    /// Its project directory.
    pub path: PathBuf,
    /// Where it runs, if not here.
    pub remote: Option<String>,
}

/// What `list_teams` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamList {
    /// The teams, in name order.
    pub teams: Vec<TeamInfo>,
    /// How many.
    pub total_teams: usize,
}

/// A page of a pair's messages (`session_report`, the console's `report`, `iris report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportPage {
    /// The caller.
    pub from_team: TeamName,
    /// The target.
    pub team: TeamName,
    /// The pair's current session.
    pub session_id: Option<Uuid>,
    /// Its turns.
    pub session_turns: u64,
    /// Its cost so far.
    pub total_cost_usd: f64,
    /// Newest first; page back with the last one's id as `before`.
    pub messages: Vec<MessageView>,
}

impl ReportPage {
    /// Reads a page of `pair`'s messages, with its current session, each message's
    /// permission decisions and, for one sent from another's turn, its call chain.
    ///
    /// # Errors
    /// [`PoolError::Store`].
    pub async fn load(
        pool: &Pool,
        pair: &Pair,
        page: Page,
        viewer: &crate::pool::Viewer,
    ) -> Result<Self, PoolError> {
        let session = pool.session(pair).await?;
        let messages = pool.report(pair, page).await?;
        let mut report = Self::new(pair, session.as_ref(), &messages);
        // Each message sent from another's turn carries its chain (the links `viewer` may
        // see).
        for (view, record) in report.messages.iter_mut().zip(&messages) {
            view.chain = visible_chain(pool, record, viewer).await?;
        }
        // The audit: every permission decision of each message, with who made it, when, and
        // the input (also for turns that failed and kept no transcript).
        for message in &mut report.messages {
            message.approvals = pool
                .approvals(crate::store::ApprovalQuery {
                    message: Some(message.message_id),
                    ..crate::store::ApprovalQuery::default()
                })
                .await?;
            message.approvals.reverse();
        }
        Ok(report)
    }

    /// The page of `pair`'s `messages`, with its current `session`.
    #[must_use]
    pub fn new(pair: &Pair, session: Option<&SessionRecord>, messages: &[MessageRecord]) -> Self {
        Self {
            from_team: pair.caller.clone(),
            team: pair.target.clone(),
            session_id: session.map(|session| session.session_id),
            session_turns: session.map_or(0, |session| session.turns),
            total_cost_usd: session.map_or(0.0, |session| session.total_cost_usd),
            messages: messages.iter().map(MessageView::from).collect(),
        }
    }
}

/// Always `completed`: a session action that has no other outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// It was done.
    Completed,
}

/// What `session_reboot` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rebooted {
    /// Always `completed`.
    pub status: Done,
    /// The session replaced, if there was one.
    pub old_session_id: Option<Uuid>,
    /// The new one.
    pub session_id: Uuid,
}

/// What `session_delete` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    /// Always `completed`.
    pub status: Done,
    /// The session forgotten, if there was one.
    pub deleted_session_id: Option<Uuid>,
    /// Claude's transcript file, if it was deleted.
    pub deleted_transcript: Option<PathBuf>,
}

/// What `session_fork` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    /// Always `completed`.
    pub status: Done,
    /// The shell line that opens the fork.
    pub command: String,
    /// Where it runs.
    pub cwd: PathBuf,
}

/// What `session_cancel` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelStatus {
    /// Asked to cancel the running message, and none was running.
    NoneRunning,
    /// The message's status after the cancel took effect (a finished one keeps its own).
    #[serde(untagged)]
    Message(CallerStatus),
}

/// What `session_cancel` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancel {
    /// What happened.
    pub status: CancelStatus,
    /// The message named, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
}

/// What `get_logs` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Logs {
    /// Oldest first.
    pub logs: Vec<LogEntry>,
    /// How many.
    pub log_count: usize,
}

/// What `get_date` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Date {
    /// Unix milliseconds.
    pub unix_ms: i64,
    /// ISO 8601, UTC.
    pub iso: String,
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from unix milliseconds (civil-from-days, proleptic Gregorian).
#[must_use]
pub fn iso8601(unix_ms: i64) -> String {
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
    fn every_state_has_one_caller_status() {
        let statuses: Vec<&str> = MessageState::ALL
            .into_iter()
            .map(|state| CallerStatus::of_state(state).as_str())
            .collect();
        assert_eq!(
            statuses,
            [
                "queued",
                "pending",
                "completed",
                "failed",
                "cancelled",
                "timed_out",
                "failed"
            ]
        );
        for state in MessageState::ALL {
            let status = CallerStatus::of_state(state);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
            assert_eq!(status.is_waiting(), !state.is_final());
        }
    }

    #[test]
    fn cancel_statuses_read_back() {
        for (status, text) in [
            (CancelStatus::NoneRunning, "none_running"),
            (CancelStatus::Message(CallerStatus::Cancelled), "cancelled"),
            (CancelStatus::Message(CallerStatus::Completed), "completed"),
        ] {
            let written = serde_json::to_value(status).unwrap();
            assert_eq!(written, serde_json::json!(text));
            assert_eq!(
                serde_json::from_value::<CancelStatus>(written).unwrap(),
                status
            );
        }
    }
}
