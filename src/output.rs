//! What the `iris` command prints: tables and reports made from the typed results of
//! [`crate::api`], the configuration check and the start hints. Plain strings, so the binary
//! only prints them and tests can read them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::api::{MessageOutcome, ReportPage};
use crate::client::Check;
use crate::config::Config;
use crate::pool::{ApprovalEvent, PairState, PoolStatus};
use crate::store::{ApprovalRecord, DecidedBy, Decision, PairRuleRecord};

/// What `iris` alone prints: the configuration in use (or how to make one) and the commands.
#[must_use]
pub fn start_hints(config: &Config) -> String {
    let mut out = match &config.source {
        Some(path) => format!(
            "iris: configuration {} ({} teams)\n",
            path.display(),
            config.teams.len()
        ),
        None => "iris: no configuration file; running on embedded defaults with no teams.\n\
             Start with `iris init` and `iris add-team NAME PATH`, or create $IRIS_HOME/config.yaml\n\
             (IRIS_HOME defaults to ~/.iris) with a `teams:` map, e.g.\n\n\
             teams:\n  backend:\n    path: ~/code/backend\n    description: The API server\n    grantPermission: yes\n\n"
            .to_owned(),
    };
    out.push_str(
        "\nCommands: `iris serve` serves the MCP tools; `iris check` validates the configuration;\n\
         `iris console` drives the agent pool; `iris fork TEAM --from CALLER` opens a pair's\n\
         conversation interactively. Run `iris --help` for more.\n",
    );
    out
}

/// `iris check --json`: the configuration as it resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The file, if there is one.
    pub source: Option<std::path::PathBuf>,
    /// `IRIS_HOME`.
    pub iris_home: std::path::PathBuf,
    /// `settings.maxProcesses`.
    pub max_processes: usize,
    /// The teams, in name order.
    pub teams: Vec<CheckedTeam>,
    /// Keys accepted with a warning.
    pub warnings: Vec<String>,
}

/// One team of [`CheckReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckedTeam {
    /// Its name.
    pub name: String,
    /// Its directory, resolved.
    pub path: std::path::PathBuf,
    /// Its description.
    pub description: String,
    /// How its permission requests are answered (`yes`, `no`, `ask`, `forward`).
    pub grant_permission: String,
    /// Where it runs, if not here.
    pub remote: Option<String>,
}

impl CheckReport {
    /// The report of `config`.
    #[must_use]
    pub fn of(config: &Config) -> Self {
        Self {
            source: config.source.clone(),
            iris_home: config.iris_home.clone(),
            max_processes: config.settings.max_processes,
            teams: config
                .teams
                .values()
                .map(|team| CheckedTeam {
                    name: team.name.to_string(),
                    path: team.path.clone(),
                    description: team.description.clone(),
                    grant_permission: team.grant_permission.as_str().to_owned(),
                    remote: team.remote.as_ref().map(|remote| remote.command.clone()),
                })
                .collect(),
            warnings: config.warnings.iter().map(ToString::to_string).collect(),
        }
    }
}

/// `iris check`: the configuration as it resolves, for a person.
#[must_use]
pub fn check(config: &Config) -> String {
    let mut out = String::new();
    match &config.source {
        Some(path) => {
            let _ = writeln!(out, "configuration: {}", path.display());
        }
        None => out.push_str("configuration: none (embedded defaults)\n"),
    }
    let _ = writeln!(out, "IRIS_HOME: {}", config.iris_home.display());
    let _ = writeln!(out, "maxProcesses: {}", config.settings.max_processes);
    if config.teams.is_empty() {
        out.push_str("teams: none\n");
    }
    for team in config.teams.values() {
        let place = team
            .remote
            .as_ref()
            .map_or_else(String::new, |remote| format!(" on {}", remote.command));
        let _ = writeln!(
            out,
            "team {}: {}{} (grantPermission: {}{})",
            team.name,
            team.path.display(),
            place,
            team.grant_permission.as_str(),
            rule_counts(&team.permissions)
                .map_or_else(String::new, |counts| format!("; rules: {counts}"))
        );
    }
    if let Some(counts) = rule_counts(&config.settings.permissions) {
        let _ = writeln!(out, "rules for every team: {counts}");
    }
    for warning in &config.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// `1 allow, 0 ask, 2 deny`, or `None` without rules.
fn rule_counts(rules: &crate::permissions::Rules) -> Option<String> {
    (!rules.is_empty()).then(|| rules.counts())
}

/// `iris status`: one line per pair.
#[must_use]
pub fn status_table(status: &PoolStatus) -> String {
    let mut out = format!("processes: {}/{}\n", status.live, status.max_processes);
    for budget in &status.budgets {
        let mut parts = Vec::new();
        if let Some(limit) = budget.usd_per_day {
            parts.push(format!("${:.4} of ${limit} in 24 h", budget.usd_last_24h));
        }
        if let Some(limit) = budget.turns_per_hour {
            parts.push(format!(
                "{} of {limit} turns in 1 h",
                budget.turns_last_hour
            ));
        }
        let over = if budget.over().is_some() {
            " — OVER: new messages refused"
        } else {
            ""
        };
        let _ = writeln!(out, "budget {}: {}{over}", budget.team, parts.join(", "));
    }
    let _ = writeln!(
        out,
        "sessions (iris serve --stdio): {} connected",
        status.bridges.len()
    );
    for bridge in &status.bridges {
        let _ = writeln!(
            out,
            "  pid {:<8} {:<16} {}  (connected {})",
            bridge
                .pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            bridge.team.as_deref().unwrap_or("(no team)"),
            bridge.cwd.display(),
            human_duration(bridge.connected_ms)
        );
    }
    if status.pairs.is_empty() {
        out.push_str("no conversations yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<30} {:<9} {:>8} {:>6} {:>6} {:>10}  SESSION",
        "PAIR", "STATE", "PID", "TURNS", "QUEUE", "COST $"
    );
    for pair in &status.pairs {
        let state = match pair.state {
            PairState::Stopped => "asleep",
            PairState::Spawning => "starting",
            PairState::Idle => "idle",
            PairState::Busy => "busy",
            PairState::Stopping => "stopping",
        };
        let _ = writeln!(
            out,
            "{:<30} {:<9} {:>8} {:>6} {:>6} {:>10.4}  {}",
            pair.pair.to_string(),
            state,
            pair.pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            pair.session_turns,
            pair.queued,
            pair.total_cost_usd,
            pair.session_id
        );
    }
    out
}

/// `5s`, `3m 20s`, `2h 5m`.
fn human_duration(millis: u64) -> String {
    let seconds = millis / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// What `iris install` adds about the other way to register Iris.
pub const INSTALL_WAYS: &str = "Two ways to connect Claude Code to Iris:\n  \
     - user scope, over HTTP (this one): every project's sessions reach the `iris serve` you run\n    \
       (start it yourself; serving off loopback needs tokens, sent as IRIS_TOKEN);\n  \
     - project scope, over stdio: `iris install --project` in a project writes its .mcp.json with\n    \
       `iris serve --stdio`; its directory names its team, no token needed, and every session\n    \
       shares one Iris daemon that starts when needed and stops unused (`iris stop` stops it).";

/// `iris report`: the pair's session, then each message with its answer, newest first.
#[must_use]
pub fn report(page: &ReportPage) -> String {
    let session = page
        .session_id
        .map_or_else(|| "none".to_owned(), |id| id.to_string());
    let mut out = format!(
        "{}->{}: session {session} ({} turns, ${:.4})\n",
        page.from_team, page.team, page.session_turns, page.total_cost_usd
    );
    for message in &page.messages {
        let answer = message
            .answer
            .as_deref()
            .or(message.error.as_deref())
            .unwrap_or("(no answer yet)");
        let _ = write!(
            out,
            "\n[{}] {} {}\n> {}\n{answer}\n",
            message.status.as_str(),
            message.mode.as_str(),
            message.message_id,
            message.message,
        );
        if let Some(parent) = message.parent_id {
            let _ = writeln!(out, "  sent during the turn of message {parent}");
        }
        for entry in &message.transcript {
            if let crate::agent::TranscriptEntry::Permission {
                tool,
                allowed,
                reason,
                by,
                who,
                approval,
            } = entry
            {
                let verdict = if *allowed { "allowed" } else { "denied" };
                let by = who
                    .as_deref()
                    .or(by.map(DecidedBy::as_str))
                    .unwrap_or("Iris");
                let approval = approval
                    .as_deref()
                    .map(|id| format!(" (approval {})", id.get(..8).unwrap_or(id)))
                    .unwrap_or_default();
                let why = reason
                    .as_deref()
                    .filter(|_| !*allowed)
                    .map(|reason| format!(": {reason}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  permission: {tool} {verdict} by {by}{approval}{why}");
            }
        }
    }
    out
}

/// `iris approvals`: one line per request (pending ones first say how to decide).
#[must_use]
pub fn approvals(list: &[ApprovalRecord], all: bool) -> String {
    if list.is_empty() {
        return if all {
            "no tool-permission requests recorded\n".to_owned()
        } else {
            "no tool-permission request waits for a person\n".to_owned()
        };
    }
    let mut out = String::new();
    for record in list {
        let _ = writeln!(out, "{}", approval_line(record));
    }
    if list.iter().any(ApprovalRecord::is_pending) {
        out.push_str("\ndecide with `iris approve ID [--always]` or `iris deny ID [--reason TEXT]` (the id, or a unique prefix of 4+ characters)\n");
    }
    out
}

/// One request: id, age, pair, what it wants, and its decision if it has one.
#[must_use]
pub fn approval_line(record: &ApprovalRecord) -> String {
    let id = record.id.get(..8).unwrap_or(&record.id);
    let summary = crate::permissions::summarize(&record.tool, &record.input, 100);
    let state = match (record.decision, record.decided_by) {
        (None, _) => format!("pending {}", age(record.created_at_ms)),
        (Some(decision), by) => {
            let by = by.map_or("", DecidedBy::as_str);
            let who = record.who.as_deref().unwrap_or(by);
            format!("{} by {who}", decision.as_str())
        }
    };
    format!(
        "{id}  {}->{}  {summary}  [{state}]",
        record.caller, record.target
    )
}

/// `iris approvals --watch`: one event.
#[must_use]
pub fn approval_event(event: &ApprovalEvent) -> String {
    match event {
        ApprovalEvent::Pending { approval } => format!("waiting: {}", approval_line(approval)),
        ApprovalEvent::Decided { approval } => format!("decided: {}", approval_line(approval)),
    }
}

/// `iris approve` / `iris deny`: what was decided.
#[must_use]
pub fn approval_decided(record: &ApprovalRecord, always: bool) -> String {
    let summary = crate::permissions::summarize(&record.tool, &record.input, 100);
    let verb = match record.decision {
        Some(Decision::Allow) if always => "allowed (and from now on for this pair)",
        Some(Decision::Allow) => "allowed",
        Some(Decision::Deny) => "denied",
        Some(Decision::Expired) => "expired",
        None => "still pending",
    };
    format!(
        "{verb}: {summary} for {}->{} (approval {})",
        record.caller, record.target, record.id
    )
}

/// `iris approvals rules`.
#[must_use]
pub fn approval_rules(rules: &[PairRuleRecord]) -> String {
    if rules.is_empty() {
        return "no allow-always rules (`iris approve ID --always` makes one)\n".to_owned();
    }
    let mut out = String::new();
    for rule in rules {
        let _ = writeln!(out, "{}", approval_rule_line(rule));
    }
    out.push_str("\nremove one with `iris approvals forget ID`\n");
    out
}

/// One allow-always rule.
#[must_use]
pub fn approval_rule_line(rule: &PairRuleRecord) -> String {
    let id = rule.id.get(..8).unwrap_or(&rule.id);
    let what = match (&rule.rule, &rule.input) {
        (Some(text), _) => format!("rule `{text}`"),
        (None, Some(input)) => format!(
            "exactly {}",
            crate::permissions::summarize(&rule.tool, input, 100)
        ),
        (None, None) => rule.tool.clone(),
    };
    format!("{id}  {}->{}  {what}", rule.caller, rule.target)
}

/// How long ago `ms` (unix ms) was, roughly.
fn age(ms: i64) -> String {
    let seconds = (crate::store::now_ms() - ms).max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        _ => format!("{}h", seconds / 3600),
    }
}

/// `iris ask`: the answer to print on stdout, or the error to print on stderr.
///
/// # Errors
/// The turn ended with an error result: its text.
pub fn answer(outcome: &MessageOutcome) -> Result<String, String> {
    let text = outcome
        .answer
        .clone()
        .or_else(|| outcome.error.clone())
        .unwrap_or_default();
    if outcome.is_error {
        let error = outcome.error.clone().unwrap_or(text);
        return Err(if error.is_empty() {
            "failed".to_owned()
        } else {
            error
        });
    }
    Ok(text)
}

/// `iris doctor`: one line per check, and whether all passed.
#[must_use]
pub fn doctor(checks: &[Check]) -> (String, bool) {
    let mut out = String::new();
    for check in checks {
        let _ = writeln!(
            out,
            "{} {}: {}",
            if check.ok { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    (out, checks.iter().all(|check| check.ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CallerStatus, MessageView};
    use crate::config::TeamName;
    use crate::store::{MessageId, MessageMode, MessageState};

    fn name(text: &str) -> TeamName {
        TeamName::new(text).unwrap()
    }

    #[test]
    fn a_report_lists_each_message_with_its_answer_or_error() {
        let id = MessageId::new();
        let view = |state: MessageState, answer: Option<&str>, error: Option<&str>| MessageView {
            status: state.into(),
            state,
            message_id: id,
            session_id: None,
            from_team: name("web"),
            to_team: name("api"),
            mode: MessageMode::Ask,
            message: "which endpoint?".to_owned(),
            answer: answer.map(str::to_owned),
            is_error: error.is_some(),
            error: error.map(str::to_owned),
            cost_usd: None,
            duration_ms: None,
            created_at_ms: 0,
            finished_at_ms: None,
            transcript: Vec::new(),
            pending_approvals: Vec::new(),
            parent_id: None,
            chain: Vec::new(),
            approvals: Vec::new(),
        };
        let page = ReportPage {
            from_team: name("web"),
            team: name("api"),
            session_id: None,
            session_turns: 2,
            total_cost_usd: 0.5,
            messages: vec![
                view(MessageState::Completed, Some("GET /plan"), None),
                view(MessageState::Interrupted, None, Some("iris stopped")),
                view(MessageState::Queued, None, None),
            ],
        };
        let text = report(&page);
        assert!(text.starts_with("web->api: session none (2 turns, $0.5000)\n"));
        assert!(text.contains(&format!(
            "[completed] ask {id}\n> which endpoint?\nGET /plan\n"
        )));
        assert!(text.contains("[failed] ask"));
        assert!(text.contains("iris stopped\n"));
        assert!(text.contains("[queued] ask"));
        assert!(text.contains("(no answer yet)"));
    }

    #[test]
    fn an_error_result_is_printed_as_an_error() {
        let pair = crate::pool::Pair::new(name("web"), name("api"));
        let mut outcome = MessageOutcome::queued(MessageId::new(), &pair);
        outcome.status = CallerStatus::Completed;
        outcome.answer = Some("plan".to_owned());
        assert_eq!(answer(&outcome), Ok("plan".to_owned()));
        outcome.is_error = true;
        outcome.answer = Some("API Error: 529 overloaded".to_owned());
        assert_eq!(
            answer(&outcome),
            Err("API Error: 529 overloaded".to_owned())
        );
    }
}
