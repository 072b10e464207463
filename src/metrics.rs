//! `/metrics`: Prometheus metrics (the OpenMetrics text format, which Prometheus reads).
//!
//! Counters are counted where things happen — every pool event passes [`Metrics::observe`]
//! before it is broadcast, every decided approval and every MCP tool call is counted as it
//! ends — so no count depends on a subscriber keeping up. Gauges (agents by state, queue
//! depth, pending approvals, open HTTP sessions) are read from the pool when scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pool::{PairState, PoolEvent, PoolStatus};
use crate::store::ApprovalRecord;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Team {
    team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamState {
    team: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamReason {
    team: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decided {
    team: String,
    decision: String,
    by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    tool: String,
    outcome: String,
}

type Seconds = Family<Team, Histogram, fn() -> Histogram>;

fn turn_buckets() -> Histogram {
    // 5 ms to about 20 minutes.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// How an MCP tool call ended, for `iris_mcp_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// A result that is not an error.
    Ok,
    /// A tool error (`isError`: unknown team, refused, failed...).
    ToolError,
    /// A protocol error (bad arguments, unknown tool).
    ProtocolError,
}

impl CallOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::ProtocolError => "protocol_error",
        }
    }
}

/// Iris's metrics. One per pool; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    spawns: Family<Team, Counter>,
    spawn_failures: Family<Team, Counter>,
    evictions: Family<Team, Counter>,
    exits: Family<TeamReason, Counter>,
    unhealthy: Family<Team, Counter>,
    messages_finished: Family<TeamState, Counter>,
    turns: Family<TeamState, Counter>,
    turn_seconds: Seconds,
    cost: Family<Team, Counter<f64, AtomicU64>>,
    approvals_decided: Family<Decided, Counter>,
    mcp_calls: Family<Call, Counter>,
    agents: Family<TeamState, Gauge>,
    queued: Family<Team, Gauge>,
    approvals_pending: Gauge,
    http_sessions: Gauge,
    live: Gauge,
    max_processes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `iris_` prefix.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("iris");
        let metrics = Self {
            spawns: Family::default(),
            spawn_failures: Family::default(),
            evictions: Family::default(),
            exits: Family::default(),
            unhealthy: Family::default(),
            messages_finished: Family::default(),
            turns: Family::default(),
            turn_seconds: Family::new_with_constructor(turn_buckets),
            cost: Family::default(),
            approvals_decided: Family::default(),
            mcp_calls: Family::default(),
            agents: Family::default(),
            queued: Family::default(),
            approvals_pending: Gauge::default(),
            http_sessions: Gauge::default(),
            live: Gauge::default(),
            max_processes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "agent_spawns",
            "Agent processes started, by target team",
            metrics.spawns.clone(),
        );
        registry.register(
            "agent_spawn_failures",
            "Agent processes that could not be started, by target team",
            metrics.spawn_failures.clone(),
        );
        registry.register(
            "agent_evictions",
            "Idle agent processes stopped to make room for another pair, by the stopped pair's target team",
            metrics.evictions.clone(),
        );
        registry.register(
            "agent_exits",
            "Agent processes that ended, by target team and reason (crashed, idle, evicted, unhealthy, ...)",
            metrics.exits.clone(),
        );
        registry.register(
            "agent_health_check_failures",
            "Failed health checks (the process is replaced), by target team",
            metrics.unhealthy.clone(),
        );
        registry.register(
            "messages_finished",
            "Messages that reached a final state, by target team and state",
            metrics.messages_finished.clone(),
        );
        registry.register(
            "turns",
            "Agent turns that ended, by target team and how (ok, error: a result marked is_error, failed: no result)",
            metrics.turns.clone(),
        );
        registry.register(
            "turn_duration_seconds",
            "Wall time of agent turns that ended with a result, by target team",
            metrics.turn_seconds.clone(),
        );
        registry.register(
            "cost_usd",
            "Cost the agents' turns reported, in US dollars, by target team",
            metrics.cost.clone(),
        );
        registry.register(
            "approvals_decided",
            "Tool-permission requests that waited for a person, decided, by team, decision and who decided",
            metrics.approvals_decided.clone(),
        );
        registry.register(
            "mcp_calls",
            "MCP tool calls, by tool and outcome (ok, tool_error, protocol_error)",
            metrics.mcp_calls.clone(),
        );
        registry.register(
            "agents",
            "Agent processes now, by target team and state (spawning, idle, busy, stopping)",
            metrics.agents.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages waiting behind a running one, by target team",
            metrics.queued.clone(),
        );
        registry.register(
            "approvals_pending",
            "Tool-permission requests waiting for a person now",
            metrics.approvals_pending.clone(),
        );
        registry.register(
            "http_sessions",
            "MCP sessions open over Streamable HTTP now",
            metrics.http_sessions.clone(),
        );
        registry.register(
            "agents_live",
            "Process slots in use now (spawning, idle, busy or stopping)",
            metrics.live.clone(),
        );
        registry.register(
            "max_processes",
            "settings.maxProcesses",
            metrics.max_processes.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts what a pool event says happened.
    pub fn observe(&self, event: &PoolEvent) {
        let team = |pair: &crate::pool::Pair| Team {
            team: pair.target.to_string(),
        };
        match event {
            PoolEvent::Spawning { pair, .. } => {
                self.spawns.get_or_create(&team(pair)).inc();
            }
            PoolEvent::SpawnFailed { pair, .. } => {
                self.spawn_failures.get_or_create(&team(pair)).inc();
            }
            PoolEvent::Evicted { pair, .. } => {
                self.evictions.get_or_create(&team(pair)).inc();
            }
            PoolEvent::Exited { pair, reason, .. } => {
                self.exits
                    .get_or_create(&TeamReason {
                        team: pair.target.to_string(),
                        reason: reason.to_string(),
                    })
                    .inc();
            }
            PoolEvent::Unhealthy { pair, .. } => {
                self.unhealthy.get_or_create(&team(pair)).inc();
            }
            PoolEvent::TurnFinished {
                pair,
                is_error,
                cost_usd,
                duration_ms,
            } => {
                let how = if *is_error { "error" } else { "ok" };
                self.turns
                    .get_or_create(&TeamState {
                        team: pair.target.to_string(),
                        state: how.to_owned(),
                    })
                    .inc();
                #[allow(clippy::cast_precision_loss, reason = "milliseconds far below 2^52")]
                let seconds = *duration_ms as f64 / 1000.0;
                self.turn_seconds
                    .get_or_create(&team(pair))
                    .observe(seconds);
                if cost_usd.is_finite() && *cost_usd > 0.0 {
                    self.cost.get_or_create(&team(pair)).inc_by(*cost_usd);
                }
            }
            PoolEvent::TurnFailed { pair, .. } => {
                self.turns
                    .get_or_create(&TeamState {
                        team: pair.target.to_string(),
                        state: "failed".to_owned(),
                    })
                    .inc();
            }
            PoolEvent::MessageFinished { pair, state, .. } => {
                self.messages_finished
                    .get_or_create(&TeamState {
                        team: pair.target.to_string(),
                        state: state.as_str().to_owned(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// Counts a request that waited for a person, now decided.
    pub fn approval_decided(&self, approval: &ApprovalRecord) {
        self.approvals_decided
            .get_or_create(&Decided {
                team: approval.target.to_string(),
                decision: approval
                    .decision
                    .map_or("none", |decision| decision.as_str())
                    .to_owned(),
                by: approval
                    .decided_by
                    .map_or("none", |by| by.as_str())
                    .to_owned(),
            })
            .inc();
    }

    /// Counts an MCP tool call that ended.
    pub fn mcp_call(&self, tool: &str, outcome: CallOutcome) {
        self.mcp_calls
            .get_or_create(&Call {
                tool: tool.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    /// The text a scrape returns, with the gauges read from `status`, the number of
    /// pending approvals and open HTTP sessions.
    #[must_use]
    pub fn render(&self, status: &PoolStatus, pending: usize, http_sessions: usize) -> String {
        self.agents.clear();
        self.queued.clear();
        for pair in &status.pairs {
            let state = match pair.state {
                PairState::Stopped => None,
                PairState::Spawning => Some("spawning"),
                PairState::Idle => Some("idle"),
                PairState::Busy => Some("busy"),
                PairState::Stopping => Some("stopping"),
            };
            let team = pair.pair.target.to_string();
            if let Some(state) = state {
                self.agents
                    .get_or_create(&TeamState {
                        team: team.clone(),
                        state: state.to_owned(),
                    })
                    .inc();
            }
            let queued = i64::try_from(pair.queued).unwrap_or(i64::MAX);
            self.queued.get_or_create(&Team { team }).inc_by(queued);
        }
        self.approvals_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.http_sessions
            .set(i64::try_from(http_sessions).unwrap_or(i64::MAX));
        self.live
            .set(i64::try_from(status.live).unwrap_or(i64::MAX));
        self.max_processes
            .set(i64::try_from(status.max_processes).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}
