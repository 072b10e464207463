//! The SQL of approvals and pair rules (see `store/approvals.rs`).

use rusqlite::{OptionalExtension, Row, params};
use serde_json::Value;

use super::{Db, conversion, fail, message_id, now_ms, parse_text, team_name};
use crate::store::StoreError;
use crate::store::approvals::{
    ApprovalDecision, ApprovalQuery, ApprovalRecord, DecidedBy, Decision, PairRuleRecord,
};

const APPROVAL_COLUMNS: &str = "id, message_id, caller, target, tool, input, suggestions, \
     created_at_ms, decided_at_ms, decision, decided_by, who, reason";

const RULE_COLUMNS: &str = "id, caller, target, tool, rule, input, approval_id, created_at_ms";

/// The error text of a request still pending when Iris stopped.
pub(in crate::store) const RESTART_REASON: &str =
    "Iris stopped while this request waited for a decision; the turn that asked was interrupted";

fn json(row: &Row<'_>, index: usize) -> rusqlite::Result<Value> {
    parse_text(row, index, |text| {
        serde_json::from_str(text).map_err(|error| format!("unreadable JSON: {error}"))
    })
}

fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    let message: Option<String> = row.get(1)?;
    let decision: Option<String> = row.get(9)?;
    let decided_by: Option<String> = row.get(10)?;
    Ok(ApprovalRecord {
        id: row.get(0)?,
        message_id: message
            .map(|text| message_id(&text).map_err(|error| conversion(1, error)))
            .transpose()?,
        caller: parse_text(row, 2, team_name)?,
        target: parse_text(row, 3, team_name)?,
        tool: row.get(4)?,
        input: json(row, 5)?,
        suggestions: json(row, 6)?,
        created_at_ms: row.get(7)?,
        decided_at_ms: row.get(8)?,
        decision: decision
            .map(|text| Decision::parse(&text).map_err(|error| conversion(9, error)))
            .transpose()?,
        decided_by: decided_by
            .map(|text| DecidedBy::parse(&text).map_err(|error| conversion(10, error)))
            .transpose()?,
        who: row.get(11)?,
        reason: row.get(12)?,
    })
}

fn rule_from_row(row: &Row<'_>) -> rusqlite::Result<PairRuleRecord> {
    let input: Option<String> = row.get(5)?;
    Ok(PairRuleRecord {
        id: row.get(0)?,
        caller: parse_text(row, 1, team_name)?,
        target: parse_text(row, 2, team_name)?,
        tool: row.get(3)?,
        rule: row.get(4)?,
        input: input
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|error| conversion(5, format!("unreadable JSON: {error}")))
            })
            .transpose()?,
        approval_id: row.get(6)?,
        created_at_ms: row.get(7)?,
    })
}

impl Db {
    pub(in crate::store) fn insert_approval(
        &mut self,
        record: &ApprovalRecord,
    ) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(&format!(
                "INSERT INTO approvals ({APPROVAL_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))
            .and_then(|mut statement| {
                statement.execute(params![
                    record.id,
                    record.message_id.map(|id| id.to_string()),
                    record.caller.as_str(),
                    record.target.as_str(),
                    record.tool,
                    record.input.to_string(),
                    record.suggestions.to_string(),
                    record.created_at_ms,
                    record.decided_at_ms,
                    record.decision.map(Decision::as_str),
                    record.decided_by.map(DecidedBy::as_str),
                    record.who,
                    record.reason,
                ])
            })
            .map_err(fail(&self.path, "insert_approval"))?;
        Ok(())
    }

    pub(in crate::store) fn decide_approval(
        &mut self,
        id: &str,
        decision: &ApprovalDecision,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE approvals SET decision = ?2, decided_by = ?3, who = ?4, reason = ?5,
                                      decided_at_ms = ?6
                 WHERE id = ?1 AND decision IS NULL",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id,
                    decision.decision.as_str(),
                    decision.decided_by.as_str(),
                    decision.who,
                    decision.reason,
                    now_ms(),
                ])
            })
            .map_err(fail(&self.path, "decide_approval"))?;
        if changed == 0 {
            return Ok(None);
        }
        self.approval(id)
    }

    pub(in crate::store) fn approval(
        &mut self,
        id: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        self.connection
            .prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"
            ))
            .and_then(|mut statement| statement.query_row([id], approval_from_row).optional())
            .map_err(fail(&self.path, "approval"))
    }

    pub(in crate::store) fn approvals(
        &mut self,
        query: &ApprovalQuery,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let limit = if query.limit == 0 {
            -1
        } else {
            i64::try_from(query.limit).unwrap_or(i64::MAX)
        };
        let pending = if query.pending_only {
            "AND decision IS NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE (?1 IS NULL OR message_id = ?1) {pending}
             ORDER BY created_at_ms DESC, id DESC LIMIT ?2"
        );
        self.connection
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![query.message.map(|id| id.to_string()), limit],
                        approval_from_row,
                    )?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(fail(&self.path, "approvals"))
    }

    pub(in crate::store) fn insert_pair_rule(
        &mut self,
        rule: &PairRuleRecord,
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                &format!("INSERT INTO approval_rules ({RULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![
                    rule.id,
                    rule.caller.as_str(),
                    rule.target.as_str(),
                    rule.tool,
                    rule.rule,
                    rule.input.as_ref().map(Value::to_string),
                    rule.approval_id,
                    rule.created_at_ms,
                ],
            )
            .map_err(fail(&self.path, "insert_pair_rule"))?;
        Ok(())
    }

    pub(in crate::store) fn pair_rules(&mut self) -> Result<Vec<PairRuleRecord>, StoreError> {
        self.connection
            .prepare_cached(&format!(
                "SELECT {RULE_COLUMNS} FROM approval_rules ORDER BY created_at_ms, id"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map([], rule_from_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(fail(&self.path, "pair_rules"))
    }

    pub(in crate::store) fn forget_pair_rule(&mut self, id: &str) -> Result<bool, StoreError> {
        let deleted = self
            .connection
            .execute("DELETE FROM approval_rules WHERE id = ?1", [id])
            .map_err(fail(&self.path, "forget_pair_rule"))?;
        Ok(deleted > 0)
    }

    /// At start-up (inside recovery's transaction): every pending request expires; how many.
    pub(in crate::store) fn expire_pending_approvals(
        connection: &rusqlite::Connection,
    ) -> rusqlite::Result<usize> {
        connection.execute(
            "UPDATE approvals SET decision = 'expired', decided_by = 'restart', reason = ?1,
                                  decided_at_ms = ?2
             WHERE decision IS NULL",
            params![RESTART_REASON, now_ms()],
        )
    }

    /// Deletes decided requests older than `cutoff` (unix ms); how many.
    pub(in crate::store) fn prune_approvals(
        connection: &rusqlite::Connection,
        cutoff: i64,
    ) -> rusqlite::Result<usize> {
        connection.execute("DELETE FROM approvals WHERE decided_at_ms < ?1", [cutoff])
    }
}
