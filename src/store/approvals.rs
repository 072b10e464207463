//! Tool-permission decisions and the rules people allowed for good, as stored.
//!
//! Every `can_use_tool` request of a message's turn becomes an [`ApprovalRecord`]: decided at
//! once by a rule or `grantPermission`, or pending until a person (or a timeout) decides it.
//! [`PairRuleRecord`]s are what `iris approve --always` allowed for one pair.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::commit::Durability;
use super::{MessageId, Store, StoreError};
use crate::config::TeamName;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The tool may run.
    Allow,
    /// The tool may not run.
    Deny,
    /// No decision was made before the turn (or Iris) ended.
    Expired,
}

impl Decision {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Expired => "expired",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            "expired" => Ok(Self::Expired),
            other => Err(format!("unknown decision '{other}'")),
        }
    }
}

/// Who or what decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// A permission rule (`who` names it).
    Rule,
    /// The team's `grantPermission` (`yes` or `no`).
    Grant,
    /// A person, through `iris approve`/`iris deny` or the dashboard (`who` says which).
    Person,
    /// The caller's person, through MCP elicitation on the caller's connection (`who`
    /// names the caller).
    Caller,
    /// Nobody answered within `approvalTimeout`.
    Timeout,
    /// `forwardFallback: deny`: nobody in the call chain could be asked.
    Fallback,
    /// The turn ended (interrupted, timed out, its process gone) before anyone decided.
    Ended,
    /// Iris stopped before anyone decided.
    Restart,
}

impl DecidedBy {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Grant => "grant",
            Self::Person => "person",
            Self::Caller => "caller",
            Self::Timeout => "timeout",
            Self::Fallback => "fallback",
            Self::Ended => "ended",
            Self::Restart => "restart",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "rule" => Self::Rule,
            "grant" => Self::Grant,
            "person" => Self::Person,
            "caller" => Self::Caller,
            "timeout" => Self::Timeout,
            "fallback" => Self::Fallback,
            "ended" => Self::Ended,
            "restart" => Self::Restart,
            other => return Err(format!("unknown decider '{other}'")),
        })
    }
}

/// One tool-permission request and its decision (none yet while pending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// Its id (32 hex digits; commands accept any unique prefix).
    pub id: String,
    /// The message whose turn asked, if the turn had one.
    pub message_id: Option<MessageId>,
    /// The pair's caller.
    pub caller: TeamName,
    /// The pair's target: the team whose agent asked.
    pub target: TeamName,
    /// The tool.
    pub tool: String,
    /// The tool's input, as the agent sent it.
    pub input: Value,
    /// The CLI's `permission_suggestions` (what "allow always" would add).
    pub suggestions: Value,
    /// When the request arrived (unix ms).
    pub created_at_ms: i64,
    /// When it was decided (unix ms).
    pub decided_at_ms: Option<i64>,
    /// The decision; `None` while pending.
    pub decision: Option<Decision>,
    /// Who or what decided.
    pub decided_by: Option<DecidedBy>,
    /// Which rule, person or caller decided, in words.
    pub who: Option<String>,
    /// Why (a denial's reason, given to the agent).
    pub reason: Option<String>,
}

impl ApprovalRecord {
    /// Whether it still waits for a decision.
    #[must_use]
    pub fn is_pending(&self) -> bool {
        self.decision.is_none()
    }
}

/// A decision for [`Store::decide_approval`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// Allow, deny or expired.
    pub decision: Decision,
    /// Who or what decided.
    pub decided_by: DecidedBy,
    /// In words.
    pub who: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// What a person allowed for good for one pair (`iris approve --always`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairRuleRecord {
    /// Its id (what `iris approvals forget` takes; any unique prefix).
    pub id: String,
    /// The pair's caller.
    pub caller: TeamName,
    /// The pair's target.
    pub target: TeamName,
    /// The tool.
    pub tool: String,
    /// A rule in Claude Code's syntax (the CLI's suggestion), or `None` when `input` holds the
    /// exact input allowed.
    pub rule: Option<String>,
    /// The exact input allowed, when there is no rule.
    pub input: Option<Value>,
    /// The approval it came from.
    pub approval_id: Option<String>,
    /// When it was made (unix ms).
    pub created_at_ms: i64,
}

/// Which approvals [`Store::approvals`] lists.
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    /// Only those still pending.
    pub pending_only: bool,
    /// Only those of this message.
    pub message: Option<MessageId>,
    /// At most this many, newest first (0: no limit).
    pub limit: usize,
}

impl Store {
    /// Records a request: pending, or already decided (by a rule, `grantPermission`).
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn insert_approval(&self, record: ApprovalRecord) -> Result<(), StoreError> {
        self.write(Durability::Lazy, move |db| db.insert_approval(&record))
            .await
    }

    /// Decides a pending request; `Ok(None)` if it was no longer pending (another decision
    /// came first), else the decided record.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn decide_approval(
        &self,
        id: String,
        decision: ApprovalDecision,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        self.write(Durability::Lazy, move |db| {
            db.decide_approval(&id, &decision)
        })
        .await
    }

    /// One request.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn approval(&self, id: String) -> Result<Option<ApprovalRecord>, StoreError> {
        self.call(move |db| db.approval(&id)).await
    }

    /// Requests, newest first.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn approvals(&self, query: ApprovalQuery) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.call(move |db| db.approvals(&query)).await
    }

    /// Stores a rule a person allowed for good. Synced: a person's decision survives a power
    /// cut.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn insert_pair_rule(&self, rule: PairRuleRecord) -> Result<(), StoreError> {
        self.write(Durability::Synced, move |db| db.insert_pair_rule(&rule))
            .await
    }

    /// Every stored pair rule, oldest first.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn pair_rules(&self) -> Result<Vec<PairRuleRecord>, StoreError> {
        self.call(super::db::Db::pair_rules).await
    }

    /// Removes a pair rule; whether it existed.
    ///
    /// # Errors
    /// A [`StoreError`] if it cannot be written.
    pub async fn forget_pair_rule(&self, id: String) -> Result<bool, StoreError> {
        self.write(Durability::Synced, move |db| db.forget_pair_rule(&id))
            .await
    }
}
