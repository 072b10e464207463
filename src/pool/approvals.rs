//! Tool-permission requests that wait for a person, and the rules people allowed for good.
//!
//! Every request of a message's turn is recorded (the `approvals` table). One that the rules
//! leave to a person ([`crate::agent::Escalation`]) is *pending* here until one decision
//! closes it, whichever comes first: a person through the `iris` command or the dashboard
//! ([`Pool::decide_approval`]), the caller's person through MCP elicitation
//! (`grantPermission: forward`, walking up the call chain to the first connection that can
//! elicit), `approvalTimeout`, or the end of the turn. No MCP tool reaches this: a model
//! cannot approve anything.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::{Inner, Pair, Pool};
use crate::agent::{
    AlwaysSource, Decided, Escalation, Pending, PermissionRequest, TextStream, TurnApprover,
    TurnProgress,
};
use crate::config::ForwardFallback;
use crate::permissions::{PairRules, Rule, suggested_rules, summarize};
use crate::store::{
    ApprovalDecision, ApprovalQuery, ApprovalRecord, DecidedBy, Decision, MessageId,
    PairRuleRecord, Store, StoreError, now_ms,
};

/// How long a forwarded question may walk up a call chain (agents calling agents).
const MAX_CHAIN: usize = 32;
/// The shortest id prefix that names a request (or a rule).
const MIN_PREFIX: usize = 4;
/// Longest input summary shown to people.
const SUMMARY_CHARS: usize = 160;

/// A person who can be asked on a connection: the MCP client of a caller that declared
/// elicitation (implemented by the MCP layer).
pub trait Elicitor: Send + Sync {
    /// Who it is, for records: "team 'web''s MCP connection".
    fn describe(&self) -> String;
    /// Whether the connection is gone (then it is skipped).
    fn is_closed(&self) -> bool;
    /// Asks; `Err` when the question could not be put (the connection refused or broke).
    fn ask(&self, question: Question) -> ElicitFuture;
}

/// What [`Elicitor::ask`] returns.
pub type ElicitFuture = Pin<Box<dyn Future<Output = Result<ElicitAnswer, String>> + Send>>;

/// What a person is asked about.
#[derive(Debug, Clone)]
pub struct Question {
    /// The approval's id.
    pub approval: String,
    /// The team whose agent asks.
    pub team: String,
    /// Who that agent works for (the pair's caller).
    pub caller: String,
    /// The tool.
    pub tool: String,
    /// The input in a few words.
    pub summary: String,
    /// The input.
    pub input: Value,
}

impl Question {
    /// The question in words.
    #[must_use]
    pub fn text(&self) -> String {
        format!(
            "Team '{}' (working for '{}') wants to use {}:\n{}\nAllow it?",
            self.team, self.caller, self.tool, self.summary
        )
    }
}

/// A person's answer through elicitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElicitAnswer {
    /// Allow this once.
    Allow,
    /// Allow, and the same request of this pair from now on.
    AllowAlways,
    /// Deny, with the person's reason if they gave one.
    Deny(Option<String>),
}

/// Who a message's turn asks about `grantPermission: forward` requests.
#[derive(Clone, Default)]
pub enum Route {
    /// Nobody (a headless caller, a connection without elicitation, a recovered message).
    #[default]
    Nobody,
    /// The caller's own connection.
    Person(Arc<dyn Elicitor>),
    /// The caller is the agent of `pair`: whoever may decide for `message`, the message that
    /// agent was running when it called, decides — while it still runs it.
    Agent {
        /// The calling agent's pair.
        pair: Pair,
        /// The message its turn was serving (filled in by the pool when the message is
        /// accepted).
        message: Option<MessageId>,
    },
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nobody => f.write_str("Nobody"),
            Self::Person(person) => write!(f, "Person({})", person.describe()),
            Self::Agent { pair, message } => write!(f, "Agent({pair}, {message:?})"),
        }
    }
}

/// A person's decision, through the `iris` command or the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PersonDecision {
    /// Allow (else deny).
    pub allow: bool,
    /// With `allow`: the same request of this pair is allowed from now on.
    #[serde(default)]
    pub always: bool,
    /// With a denial: why (the agent reads it).
    #[serde(default)]
    pub reason: Option<String>,
    /// Where it came from: "the iris command", "the dashboard".
    #[serde(default)]
    pub via: Option<String>,
}

/// What happened to an approval, as it happens ([`Pool::subscribe_approvals`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ApprovalEvent {
    /// A request now waits for a person.
    Pending {
        /// The request.
        approval: ApprovalRecord,
    },
    /// A pending request was decided (or expired).
    Decided {
        /// The request, decided.
        approval: ApprovalRecord,
    },
}

/// Why a person's decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No pending request has this id (or prefix).
    #[error(
        "no pending approval '{id}' (decided already, expired, or never made; `iris approvals` lists the pending ones)"
    )]
    NotPending {
        /// The id given.
        id: String,
    },
    /// The prefix names more than one.
    #[error("'{id}' names {count} pending approvals; give more of the id")]
    Ambiguous {
        /// The prefix given.
        id: String,
        /// How many it names.
        count: usize,
    },
    /// No rule has this id (or prefix).
    #[error("no allow-always rule '{id}' (`iris approvals rules` lists them)")]
    NoRule {
        /// The id given.
        id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Waiting {
    record: ApprovalRecord,
    answer: oneshot::Sender<Decided>,
    progress: Option<TextStream>,
    /// The question put to the caller's person, if one was: withdrawn when the request is
    /// decided another way.
    asking: Option<tokio::task::AbortHandle>,
    /// The callers up the chain, told too.
    upstream: Vec<TextStream>,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Waiting>,
    /// The message each pair's agent is running, and its route (for forwarding up a chain).
    running: HashMap<Pair, (MessageId, Route)>,
    /// The progress stream of each running message's waiting caller (told about requests
    /// that wait for a person further down its chain).
    progress: HashMap<MessageId, TextStream>,
    /// What people allowed for good, per pair.
    rules: HashMap<Pair, Arc<PairRules>>,
    records: Vec<PairRuleRecord>,
}

/// The approvals of one pool.
pub(crate) struct Approvals {
    store: Store,
    /// What people's commands prove themselves with (made anew at each start).
    token: crate::config::Secret,
    state: Mutex<State>,
    events: broadcast::Sender<ApprovalEvent>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Approvals {
    /// Loads the stored allow-always rules.
    pub(crate) async fn open(
        store: Store,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, StoreError> {
        let records = store.pair_rules().await?;
        let mut state = State::default();
        for record in records {
            add_rule(&mut state, record);
        }
        let (events, _) = broadcast::channel(64);
        let token = crate::config::Secret::random();
        Ok(Self {
            store,
            metrics,
            token,
            state: Mutex::new(state),
            events,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What people allowed for good for `pair`, read at each request.
    pub(crate) fn always_source(self: &Arc<Self>, pair: &Pair) -> AlwaysSource {
        let approvals = Arc::downgrade(self);
        let pair = pair.clone();
        Arc::new(move || {
            approvals
                .upgrade()
                .and_then(|approvals| approvals.lock().rules.get(&pair).cloned())
                .unwrap_or_default()
        })
    }

    /// The message `pair`'s agent now runs, and who decides for it.
    pub(crate) fn turn_started(
        &self,
        pair: &Pair,
        id: MessageId,
        route: Route,
        progress: Option<TextStream>,
    ) {
        let mut state = self.lock();
        state.running.insert(pair.clone(), (id, route));
        if let Some(progress) = progress {
            state.progress.insert(id, progress);
        }
    }

    /// The progress streams of the callers up the chain from `route` (the messages whose
    /// turns wait, through agents, for this one), nearest first.
    fn up_the_chain(&self, route: &Route) -> Vec<TextStream> {
        let state = self.lock();
        let mut found = Vec::new();
        let mut route = route.clone();
        for _ in 0..MAX_CHAIN {
            let Route::Agent { pair, message } = route else {
                break;
            };
            let Some((running, next)) = state.running.get(&pair) else {
                break;
            };
            if message.is_some_and(|message| message != *running) {
                break;
            }
            if let Some(progress) = state.progress.get(running) {
                found.push(progress.clone());
            }
            route = next.clone();
        }
        found
    }

    /// The message `pair`'s agent is running a turn for, if any.
    pub(crate) fn running_message(&self, pair: &Pair) -> Option<MessageId> {
        self.lock().running.get(pair).map(|(id, _)| *id)
    }

    pub(crate) fn turn_ended(&self, pair: &Pair, id: MessageId) {
        let mut state = self.lock();
        if state
            .running
            .get(pair)
            .is_some_and(|(running, _)| *running == id)
        {
            state.running.remove(pair);
        }
        state.progress.remove(&id);
    }

    /// The first connection up the chain from `route` that can be asked.
    fn elicitor(&self, route: &Route) -> Option<Arc<dyn Elicitor>> {
        let state = self.lock();
        let mut route = route.clone();
        for _ in 0..MAX_CHAIN {
            match route {
                Route::Nobody => return None,
                Route::Person(person) => return (!person.is_closed()).then_some(person),
                Route::Agent { pair, message } => {
                    let (running, next) = state.running.get(&pair)?;
                    // That agent has moved on to another message: its caller is not ours.
                    if message.is_some_and(|message| message != *running) {
                        return None;
                    }
                    route = next.clone();
                }
            }
        }
        None
    }

    fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }

    fn pending(&self) -> Vec<ApprovalRecord> {
        let mut list: Vec<ApprovalRecord> = self
            .lock()
            .pending
            .values()
            .map(|waiting| waiting.record.clone())
            .collect();
        list.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        list
    }

    fn pending_of(&self, message: MessageId) -> Vec<ApprovalRecord> {
        self.pending()
            .into_iter()
            .filter(|record| record.message_id == Some(message))
            .collect()
    }

    /// The one pending id that `id` names (whole, or a unique prefix).
    fn resolve(&self, id: &str) -> Result<String, ApprovalError> {
        let id = id.trim();
        let state = self.lock();
        if state.pending.contains_key(id) {
            return Ok(id.to_owned());
        }
        // A prefix names one request only if it is long enough not to hit another by chance.
        let matches: Vec<&String> = if id.len() < MIN_PREFIX {
            Vec::new()
        } else {
            state
                .pending
                .keys()
                .filter(|key| key.starts_with(id))
                .collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ApprovalError::NotPending { id: id.to_owned() }),
            many => Err(ApprovalError::Ambiguous {
                id: id.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// Takes a pending request out of the pending ones: whoever gets it is the one decision
    /// that closes it (`None`: it was closed already). A question still open at the caller's
    /// is withdrawn.
    fn claim(&self, id: &str) -> Option<Waiting> {
        let waiting = self.lock().pending.remove(id)?;
        if let Some(asking) = &waiting.asking {
            asking.abort();
        }
        Some(waiting)
    }

    /// Closes a pending request with `decided` (the first decision wins; `None` if it was
    /// closed already).
    async fn close(
        &self,
        id: &str,
        decision: ApprovalDecision,
        decided: Decided,
    ) -> Option<ApprovalRecord> {
        let waiting = self.claim(id)?;
        Some(self.finish(waiting, decision, decided).await)
    }

    /// Closes a claimed request: tells the turn, the caller's progress and subscribers, then
    /// records it.
    async fn finish(
        &self,
        waiting: Waiting,
        decision: ApprovalDecision,
        decided: Decided,
    ) -> ApprovalRecord {
        let mut record = waiting.record;
        let id = record.id.clone();
        let id = id.as_str();
        record.decision = Some(decision.decision);
        record.decided_by = Some(decision.decided_by);
        record.who.clone_from(&decision.who);
        record.reason.clone_from(&decision.reason);
        record.decided_at_ms = Some(now_ms());
        for progress in waiting.progress.iter().chain(&waiting.upstream) {
            let _ = progress.send(TurnProgress::Decided {
                approval: id.to_owned(),
                allowed: decided.allowed,
            });
        }
        let _ = waiting.answer.send(decided);
        self.metrics.approval_decided(&record);
        let _ = self.events.send(ApprovalEvent::Decided {
            approval: record.clone(),
        });
        tracing::info!(
            approval = id,
            decision = decision.decision.as_str(),
            by = decision.decided_by.as_str(),
            "tool permission decided"
        );
        if let Err(error) = self.store.decide_approval(id.to_owned(), decision).await {
            tracing::error!(approval = id, %error, "cannot record an approval's decision");
        }
        record
    }

    /// Stores what "allow always" allows for the request's pair: the rules the CLI
    /// suggested, else the exact tool and input.
    async fn remember(&self, record: &ApprovalRecord) -> Result<Vec<PairRuleRecord>, StoreError> {
        let rules: Vec<Rule> = suggested_rules(&record.suggestions);
        let made = now_ms();
        let new = |rule: Option<String>, input: Option<Value>| PairRuleRecord {
            id: new_id(),
            caller: record.caller.clone(),
            target: record.target.clone(),
            tool: record.tool.clone(),
            rule,
            input,
            approval_id: Some(record.id.clone()),
            created_at_ms: made,
        };
        let records: Vec<PairRuleRecord> = if rules.is_empty() {
            vec![new(None, Some(record.input.clone()))]
        } else {
            rules
                .iter()
                .map(|rule| new(Some(rule.to_string()), None))
                .collect()
        };
        for rule in &records {
            self.store.insert_pair_rule(rule.clone()).await?;
            add_rule(&mut self.lock(), rule.clone());
        }
        Ok(records)
    }
}

fn add_rule(state: &mut State, record: PairRuleRecord) {
    let pair = Pair::new(record.caller.clone(), record.target.clone());
    let mut rules = state
        .rules
        .get(&pair)
        .map(|rules| (**rules).clone())
        .unwrap_or_default();
    match (&record.rule, &record.input) {
        (Some(text), _) => match Rule::parse(text) {
            Ok(rule) => rules.add_rule(rule, record.id.clone()),
            Err(error) => {
                tracing::warn!(rule = %text, id = %record.id, %error, "a stored allow-always rule no longer parses; it is ignored");
            }
        },
        (None, Some(input)) => {
            rules.add_exact(record.tool.clone(), input.clone(), record.id.clone())
        }
        (None, None) => {}
    }
    state.rules.insert(pair, Arc::new(rules));
    state.records.push(record);
}

fn rebuild_rules(state: &mut State) {
    let records = std::mem::take(&mut state.records);
    state.rules.clear();
    for record in records {
        add_rule(state, record);
    }
}

/// A new id: 32 hex digits, random.
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The approver of one message's turn ([`TurnApprover`]).
pub(crate) struct MessageApprover {
    pub(crate) pool: Weak<Inner>,
    pub(crate) message: MessageId,
    pub(crate) pair: Pair,
    pub(crate) route: Route,
    pub(crate) progress: Option<TextStream>,
}

impl TurnApprover for MessageApprover {
    fn record(&self, request: &PermissionRequest, decided: &Decided) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let record = ApprovalRecord {
            decision: Some(if decided.allowed {
                Decision::Allow
            } else {
                Decision::Deny
            }),
            decided_by: Some(decided.by),
            who: decided.who.clone(),
            reason: decided.reason.clone(),
            decided_at_ms: Some(now_ms()),
            ..self.new_record(request)
        };
        let store = pool.store.clone();
        // Off the agent's task: the answer does not wait for the record.
        pool.tasks.spawn(async move {
            if let Err(error) = store.insert_approval(record).await {
                tracing::error!(%error, "cannot record a tool-permission decision");
            }
        });
    }

    fn ask(&self, request: PermissionRequest, escalation: Escalation) -> Pending {
        let pool = self.pool.clone();
        let record = self.new_record(&request);
        let route = self.route.clone();
        let progress = self.progress.clone();
        Box::pin(async move {
            let Some(inner) = pool.upgrade() else {
                return ended(&record.tool, "Iris is shutting down");
            };
            ask(&inner, record, route, progress, &escalation).await
        })
    }
}

impl MessageApprover {
    fn new_record(&self, request: &PermissionRequest) -> ApprovalRecord {
        ApprovalRecord {
            id: new_id(),
            message_id: Some(self.message),
            caller: self.pair.caller.clone(),
            target: self.pair.target.clone(),
            tool: request.tool.clone(),
            input: request.input.clone(),
            suggestions: request.suggestions.clone(),
            created_at_ms: now_ms(),
            decided_at_ms: None,
            decision: None,
            decided_by: None,
            who: None,
            reason: None,
        }
    }
}

fn ended(tool: &str, why: &str) -> Decided {
    Decided {
        allowed: false,
        by: DecidedBy::Ended,
        who: None,
        reason: Some(format!("Iris denied {tool}: {why}")),
        approval: None,
    }
}

/// Expires a pending request whose turn ended (its future was dropped) before a decision:
/// in memory and in the store, or only in the store if it was dropped while being written.
struct ExpireOnDrop {
    inner: Weak<Inner>,
    id: String,
    /// Set once a decision arrived: nothing to expire.
    decided: bool,
}

impl Drop for ExpireOnDrop {
    fn drop(&mut self) {
        if self.decided {
            return;
        }
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let id = std::mem::take(&mut self.id);
        let decision = ApprovalDecision {
            decision: Decision::Expired,
            decided_by: DecidedBy::Ended,
            who: None,
            reason: Some(
                "the agent withdrew the request, or its turn ended, before anyone decided"
                    .to_owned(),
            ),
        };
        // Claimed now, so that no decision taken from here on is reported as made.
        let claimed = inner.approvals.claim(&id);
        let owner = inner.clone();
        inner.tasks.spawn(async move {
            if let Some(waiting) = claimed {
                let decided = ended("the tool", "the turn ended before anyone decided");
                owner.approvals.finish(waiting, decision, decided).await;
            } else if let Err(error) = owner.approvals.store.decide_approval(id, decision).await {
                tracing::error!(%error, "cannot record that a tool-permission request expired");
            }
        });
    }
}

async fn ask(
    inner: &Arc<Inner>,
    record: ApprovalRecord,
    route: Route,
    progress: Option<TextStream>,
    escalation: &Escalation,
) -> Decided {
    let approvals = &inner.approvals;
    let config = inner.config();
    let tool = record.tool.clone();
    let summary = summarize(&tool, &record.input, SUMMARY_CHARS);
    let elicitor = if escalation.forward {
        approvals.elicitor(&route)
    } else {
        None
    };
    if escalation.forward
        && elicitor.is_none()
        && config.settings.forward_fallback == ForwardFallback::Deny
    {
        let reason = format!(
            "Iris denied {tool}: {} forwards it to the caller, nobody in the call chain can be asked (no connection that declared elicitation), and settings.forwardFallback is deny",
            escalation.why
        );
        let decided = Decided {
            allowed: false,
            by: DecidedBy::Fallback,
            who: Some("settings.forwardFallback: deny".to_owned()),
            reason: Some(reason),
            approval: Some(record.id.clone()),
        };
        let record = ApprovalRecord {
            decision: Some(Decision::Deny),
            decided_by: Some(DecidedBy::Fallback),
            who: decided.who.clone(),
            reason: decided.reason.clone(),
            decided_at_ms: Some(now_ms()),
            ..record
        };
        if let Err(error) = approvals.store.insert_approval(record).await {
            tracing::error!(%error, "cannot record a tool-permission decision");
        }
        return decided;
    }
    let timeout = config
        .team(record.target.as_str())
        .and_then(|team| team.approval_timeout)
        .unwrap_or(config.settings.approval_timeout);
    let id = record.id.clone();
    // Armed before the record is written: a turn that ends meanwhile leaves no request
    // pending in the store.
    let mut guard = ExpireOnDrop {
        inner: Arc::downgrade(inner),
        id: id.clone(),
        decided: false,
    };
    if let Err(error) = approvals.store.insert_approval(record.clone()).await {
        // Still asked: the decision is what matters; its record is behind.
        tracing::error!(approval = %id, %error, "cannot record a pending tool-permission request");
    }
    let (answer, decision) = oneshot::channel();
    let upstream = approvals.up_the_chain(&route);
    let asked = match &elicitor {
        Some(person) => format!("the caller's person ({})", person.describe()),
        None => "a person at Iris (iris approvals; iris approve|deny ID)".to_owned(),
    };
    approvals.lock().pending.insert(
        id.clone(),
        Waiting {
            record: record.clone(),
            answer,
            progress: progress.clone(),
            asking: None,
            upstream: upstream.clone(),
        },
    );
    tracing::info!(approval = %id, pair = %format!("{}->{}", record.caller, record.target), tool, why = %escalation.why, asked, "tool permission waits for a person");
    let _ = approvals.events.send(ApprovalEvent::Pending {
        approval: record.clone(),
    });
    if let Some(progress) = &progress {
        let _ = progress.send(TurnProgress::Waiting {
            approval: id.clone(),
            tool: tool.clone(),
            summary: summary.clone(),
            asked: asked.clone(),
        });
    }
    // The callers further up the chain wait for this too.
    for progress in &upstream {
        let _ = progress.send(TurnProgress::Waiting {
            approval: id.clone(),
            tool: tool.clone(),
            summary: format!("team '{}' (down your call chain): {summary}", record.target),
            asked: asked.clone(),
        });
    }
    if let Some(person) = elicitor {
        let question = Question {
            approval: id.clone(),
            team: record.target.to_string(),
            caller: record.caller.to_string(),
            tool: tool.clone(),
            summary,
            input: record.input.clone(),
        };
        let inner = Arc::downgrade(inner);
        let fallback = config.settings.forward_fallback;
        let asking = person.ask(question);
        let describe = person.describe();
        let question_id = id.clone();
        let task = tokio::spawn(async move {
            let answer = asking.await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            elicited(&inner, &question_id, &describe, answer, fallback).await;
        });
        if let Some(waiting) = approvals.lock().pending.get_mut(&id) {
            waiting.asking = Some(task.abort_handle());
        }
    }
    let mut decision = decision;
    if let Ok(answer) = tokio::time::timeout(timeout, &mut decision).await {
        guard.decided = true;
        return answer.unwrap_or_else(|_| ended(&tool, "the request was dropped"));
    }
    let reason = format!(
        "Iris denied {tool}: no one answered the approval request within {} (approvalTimeout)",
        humantime(timeout)
    );
    let timed_out = ApprovalDecision {
        decision: Decision::Deny,
        decided_by: DecidedBy::Timeout,
        who: Some("approvalTimeout".to_owned()),
        reason: Some(reason.clone()),
    };
    let decided = Decided {
        allowed: false,
        by: DecidedBy::Timeout,
        who: Some("approvalTimeout".to_owned()),
        reason: Some(reason),
        approval: Some(record.id.clone()),
    };
    approvals.close(&record.id, timed_out, decided).await;
    guard.decided = true;
    // Ours, or a decision that came at the same moment: whichever closed it sent its answer.
    decision
        .await
        .unwrap_or_else(|_| ended(&tool, "the request was dropped"))
}

/// Applies the caller's answer through elicitation (or, if it could not be asked, the
/// fallback).
async fn elicited(
    inner: &Arc<Inner>,
    id: &str,
    describe: &str,
    answer: Result<ElicitAnswer, String>,
    fallback: ForwardFallback,
) {
    let approvals = &inner.approvals;
    let Some(record) = approvals
        .lock()
        .pending
        .get(id)
        .map(|waiting| waiting.record.clone())
    else {
        return;
    };
    let tool = record.tool.clone();
    let who = Some(describe.to_owned());
    let (allow, always, reason) = match answer {
        Ok(ElicitAnswer::Allow) => (true, false, None),
        Ok(ElicitAnswer::AllowAlways) => (true, true, None),
        Ok(ElicitAnswer::Deny(reason)) => (false, false, reason),
        Err(error) => {
            if fallback == ForwardFallback::Deny {
                let reason = format!(
                    "Iris denied {tool}: the caller could not be asked ({error}), and settings.forwardFallback is deny"
                );
                let decision = ApprovalDecision {
                    decision: Decision::Deny,
                    decided_by: DecidedBy::Fallback,
                    who: Some("settings.forwardFallback: deny".to_owned()),
                    reason: Some(reason.clone()),
                };
                let decided = Decided {
                    allowed: false,
                    by: DecidedBy::Fallback,
                    who: decision.who.clone(),
                    reason: Some(reason),
                    approval: Some(id.to_owned()),
                };
                approvals.close(id, decision, decided).await;
            } else {
                tracing::warn!(approval = id, %error, "the caller could not be asked; the request waits for a person at Iris (forwardFallback: ask)");
                // The caller was told its person is asked: it is not any more.
                let note = approvals.lock().pending.get(id).and_then(|waiting| {
                    waiting
                        .progress
                        .clone()
                        .map(|progress| (progress, waiting.record.clone()))
                });
                if let Some((progress, record)) = note {
                    let _ = progress.send(TurnProgress::Waiting {
                        approval: id.to_owned(),
                        tool: record.tool.clone(),
                        summary: summarize(&record.tool, &record.input, SUMMARY_CHARS),
                        asked: format!(
                            "a person at Iris (the caller could not be asked: {error}; iris approve|deny ID)"
                        ),
                    });
                }
            }
            return;
        }
    };
    decide(inner, id, allow, always, reason, DecidedBy::Caller, who).await;
}

/// Closes `id` with a person's (or the caller's) decision, and stores the allow-always rule.
async fn decide(
    inner: &Arc<Inner>,
    id: &str,
    allow: bool,
    always: bool,
    reason: Option<String>,
    by: DecidedBy,
    who: Option<String>,
) -> Option<ApprovalRecord> {
    let approvals = &inner.approvals;
    // Claimed first: only the decision that closes the request has effects (an
    // allow-always rule included).
    let waiting = approvals.claim(id)?;
    let record = waiting.record.clone();
    let tool = &record.tool;
    let by_whom = who.clone().unwrap_or_else(|| "a person".to_owned());
    let message = if allow {
        None
    } else {
        Some(
            match reason
                .as_deref()
                .map(str::trim)
                .filter(|reason| !reason.is_empty())
            {
                Some(reason) => format!("{by_whom} denied {tool}: {reason}"),
                None => format!("{by_whom} denied {tool}"),
            },
        )
    };
    // Stored before the turn goes on, so the next request already sees it.
    let remembered = if allow && always {
        match approvals.remember(&record).await {
            Ok(_) => Some("allowed always for this pair".to_owned()),
            Err(error) => {
                tracing::error!(approval = id, %error, "cannot store an allow-always rule; the request is allowed this once");
                Some(format!(
                    "allowed this once: the allow-always rule could not be stored ({error})"
                ))
            }
        }
    } else {
        None
    };
    let decision = ApprovalDecision {
        decision: if allow {
            Decision::Allow
        } else {
            Decision::Deny
        },
        decided_by: by,
        who: who.clone(),
        reason: if allow { remembered } else { message.clone() },
    };
    let decided = Decided {
        allowed: allow,
        by,
        who,
        reason: message,
        approval: Some(id.to_owned()),
    };
    Some(approvals.finish(waiting, decision, decided).await)
}

fn humantime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else if seconds > 0 && duration.subsec_millis() == 0 {
        format!("{seconds}s")
    } else {
        format!("{}ms", duration.as_millis())
    }
}

impl Pool {
    /// The approver token of this Iris: what a person's command sends to decide requests
    /// (see [`crate::approver`]). Made anew at each start; never given to an agent.
    #[must_use]
    pub fn approver_token(&self) -> String {
        self.inner.approvals.token.expose().to_owned()
    }

    /// Whether `offered` is this Iris's approver token (compared in constant time).
    #[must_use]
    pub fn approver_token_matches(&self, offered: &str) -> bool {
        self.inner.approvals.token.matches(offered)
    }

    /// The requests that wait for a person, oldest first.
    #[must_use]
    pub fn pending_approvals(&self) -> Vec<ApprovalRecord> {
        self.inner.approvals.pending()
    }

    /// How many requests wait for a person (no copy of them).
    #[must_use]
    pub fn pending_approval_count(&self) -> usize {
        self.inner.approvals.pending_count()
    }

    /// The requests of one message that wait for a person.
    #[must_use]
    pub fn pending_approvals_of(&self, message: MessageId) -> Vec<ApprovalRecord> {
        self.inner.approvals.pending_of(message)
    }

    /// Recorded requests and decisions, newest first.
    ///
    /// # Errors
    /// A [`StoreError`] if the database cannot be read.
    pub async fn approvals(&self, query: ApprovalQuery) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.inner.store.approvals(query).await
    }

    /// A person's decision on the pending request `id` (whole, or a unique prefix). Only
    /// people reach this: the `iris` command and the dashboard, through the approver's
    /// token; no MCP tool does.
    ///
    /// # Errors
    /// [`ApprovalError`] when `id` names no pending request, or more than one.
    pub async fn decide_approval(
        &self,
        id: &str,
        decision: PersonDecision,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let id = self.inner.approvals.resolve(id)?;
        let via = decision
            .via
            .as_deref()
            .map(str::trim)
            .filter(|via| !via.is_empty())
            .unwrap_or("the iris command");
        let who = format!("a person through {via}");
        decide(
            &self.inner,
            &id,
            decision.allow,
            decision.allow && decision.always,
            decision.reason,
            DecidedBy::Person,
            Some(who),
        )
        .await
        .ok_or(ApprovalError::NotPending { id })
    }

    /// The allow-always rules people made, oldest first.
    #[must_use]
    pub fn approval_rules(&self) -> Vec<PairRuleRecord> {
        self.inner.approvals.lock().records.clone()
    }

    /// Removes an allow-always rule (`id` whole or a unique prefix); returns it.
    ///
    /// # Errors
    /// [`ApprovalError`] when `id` names no rule, or more than one.
    pub async fn forget_approval_rule(&self, id: &str) -> Result<PairRuleRecord, ApprovalError> {
        let id = id.trim();
        let found: Vec<PairRuleRecord> = self
            .approval_rules()
            .into_iter()
            .filter(|rule| rule.id == id || (id.len() >= MIN_PREFIX && rule.id.starts_with(id)))
            .collect();
        let rule = match found.as_slice() {
            [one] => one.clone(),
            [] => return Err(ApprovalError::NoRule { id: id.to_owned() }),
            many => {
                return Err(ApprovalError::Ambiguous {
                    id: id.to_owned(),
                    count: many.len(),
                });
            }
        };
        self.inner.store.forget_pair_rule(rule.id.clone()).await?;
        let mut state = self.inner.approvals.lock();
        state.records.retain(|record| record.id != rule.id);
        rebuild_rules(&mut state);
        Ok(rule)
    }

    /// Approval events as they happen. A slow subscriber misses events (`Lagged`).
    #[must_use]
    pub fn subscribe_approvals(&self) -> broadcast::Receiver<ApprovalEvent> {
        self.inner.approvals.events.subscribe()
    }
}
