//! Call chains and team budgets: which message's turn sent which (an agent calling another
//! team through its agent URL), so that a message that would wait on its own chain is refused
//! at once and chains stay within `settings.maxCallDepth`; and what each team's turns cost
//! lately, against its `budget`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::Pair;
use crate::config::{Budget, TeamName};
use crate::store::{MessageId, now_ms};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Messages being delivered, each with its pair and the message whose turn sent it.
#[derive(Default)]
pub(crate) struct Lineage {
    links: Mutex<HashMap<MessageId, Link>>,
    usage: Mutex<HashMap<TeamName, VecDeque<(i64, f64)>>>,
}

struct Link {
    pair: Pair,
    parent: Option<MessageId>,
    /// How many messages the chain holds up to this one (a person's message is 1): kept
    /// with the link, so a parent's turn that ended does not shorten its children's chains.
    depth: usize,
    /// Whether its sender waits for it (an ask nobody told `pending`): only then can a turn
    /// up the chain be waiting for what comes below it.
    waited_for: bool,
}

/// One message of a running chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainStep {
    pub(crate) id: MessageId,
    pub(crate) pair: Pair,
    pub(crate) waited_for: bool,
}

/// What a team's turns cost lately, against its budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetUse {
    /// The team.
    pub team: TeamName,
    /// `budget.usdPerDay`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    /// What its turns cost in the last 24 hours.
    pub usd_last_24h: f64,
    /// `budget.turnsPerHour`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns_per_hour: Option<u64>,
    /// Its turns in the last hour.
    pub turns_last_hour: u64,
    /// Its messages accepted and not finished yet (they count against `turnsPerHour`).
    #[serde(default)]
    pub in_flight: u64,
}

impl BudgetUse {
    /// Why a new message is refused, if the team is over a limit.
    #[must_use]
    pub fn over(&self) -> Option<String> {
        if let Some(limit) = self.usd_per_day
            && self.usd_last_24h >= limit
        {
            return Some(format!(
                "${:.4} spent in the last 24 hours (budget.usdPerDay {limit})",
                self.usd_last_24h
            ));
        }
        if let Some(limit) = self.turns_per_hour
            && self.turns_last_hour + self.in_flight >= limit
        {
            return Some(if self.in_flight == 0 {
                format!(
                    "{} turns in the last hour (budget.turnsPerHour {limit})",
                    self.turns_last_hour
                )
            } else {
                format!(
                    "{} turns in the last hour and {} accepted not finished (budget.turnsPerHour {limit})",
                    self.turns_last_hour, self.in_flight
                )
            });
        }
        None
    }
}

impl Lineage {
    pub(crate) fn add(
        &self,
        id: MessageId,
        pair: &Pair,
        parent: Option<MessageId>,
        waited_for: bool,
    ) {
        if let Ok(mut links) = self.links.lock() {
            let depth = parent
                .and_then(|parent| links.get(&parent))
                .map_or(1, |link| link.depth)
                + usize::from(parent.is_some());
            links.insert(
                id,
                Link {
                    pair: pair.clone(),
                    parent,
                    depth,
                    waited_for,
                },
            );
        }
    }

    /// Its sender stopped waiting (it was told `pending`): nothing up the chain waits on it.
    pub(crate) fn not_waited_for(&self, id: MessageId) {
        if let Ok(mut links) = self.links.lock()
            && let Some(link) = links.get_mut(&id)
        {
            link.waited_for = false;
        }
    }

    /// How many messages the chain holds up to `id` (1 for one nobody sent from a turn).
    pub(crate) fn depth(&self, id: MessageId) -> usize {
        self.links
            .lock()
            .ok()
            .and_then(|links| links.get(&id).map(|link| link.depth))
            .unwrap_or(1)
    }

    /// Messages to `team` accepted and not finished.
    fn in_flight(&self, team: &TeamName) -> u64 {
        self.links.lock().map_or(0, |links| {
            links
                .values()
                .filter(|link| link.pair.target == *team)
                .count() as u64
        })
    }

    pub(crate) fn remove(&self, id: MessageId) {
        if let Ok(mut links) = self.links.lock() {
            links.remove(&id);
        }
    }

    /// The part of the chain ending with `id` (running on `pair`) whose messages are still
    /// being delivered, root first.
    pub(crate) fn chain(&self, id: MessageId, pair: &Pair) -> Vec<ChainStep> {
        let step = |id, link: Option<&Link>| ChainStep {
            id,
            pair: link.map_or_else(|| pair.clone(), |link| link.pair.clone()),
            waited_for: link.is_some_and(|link| link.waited_for),
        };
        let Ok(links) = self.links.lock() else {
            return vec![step(id, None)];
        };
        let mut chain = vec![step(id, links.get(&id))];
        let mut next = links.get(&id).and_then(|link| link.parent);
        // Bounded: a chain is never longer than maxCallDepth, but a bad link must not loop.
        while let Some(parent) = next {
            if chain.len() > 64 || chain.iter().any(|seen| seen.id == parent) {
                break;
            }
            let Some(link) = links.get(&parent) else {
                break;
            };
            chain.push(step(parent, Some(link)));
            next = link.parent;
        }
        chain.reverse();
        chain
    }

    /// Counts a finished turn of `team` that cost `cost_usd`.
    pub(crate) fn turn_done(&self, team: &TeamName, cost_usd: f64, at_ms: i64) {
        if let Ok(mut usage) = self.usage.lock() {
            let turns = usage.entry(team.clone()).or_default();
            turns.push_back((at_ms, cost_usd));
            // Kept for a day only, also for teams without a budget.
            while turns.front().is_some_and(|(at, _)| *at < at_ms - DAY_MS) {
                turns.pop_front();
            }
        }
    }

    /// `team`'s use against `budget` now.
    pub(crate) fn budget_use(&self, team: &TeamName, budget: Budget) -> BudgetUse {
        let now = now_ms();
        let (mut usd, mut turns) = (0.0, 0_u64);
        if let Ok(mut usage) = self.usage.lock()
            && let Some(turns_done) = usage.get_mut(team)
        {
            while turns_done.front().is_some_and(|(at, _)| *at < now - DAY_MS) {
                turns_done.pop_front();
            }
            for (at, cost) in turns_done.iter() {
                usd += cost;
                if *at >= now - HOUR_MS {
                    turns += 1;
                }
            }
        }
        BudgetUse {
            team: team.clone(),
            usd_per_day: budget.usd_per_day,
            usd_last_24h: usd,
            turns_per_hour: budget.turns_per_hour,
            turns_last_hour: turns,
            in_flight: self.in_flight(team),
        }
    }
}

/// The teams of a chain of pairs ending in `last`: `a → b → a → b`.
pub(crate) fn describe(chain: &[ChainStep], last: &Pair) -> String {
    let mut teams: Vec<&str> = chain
        .first()
        .map(|step| step.pair.caller.as_str())
        .into_iter()
        .collect();
    teams.extend(chain.iter().map(|step| step.pair.target.as_str()));
    if teams.is_empty() {
        teams.push(last.caller.as_str());
    }
    teams.push(last.target.as_str());
    teams.join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(caller: &str, target: &str) -> Pair {
        Pair::new(
            TeamName::new(caller).expect("name"),
            TeamName::new(target).expect("name"),
        )
    }

    #[test]
    fn chains_are_followed_root_first_and_named() {
        let lineage = Lineage::default();
        let (m1, m2) = (MessageId::new(), MessageId::new());
        lineage.add(m1, &pair("a", "b"), None, true);
        lineage.add(m2, &pair("b", "a"), Some(m1), true);
        let chain = lineage.chain(m2, &pair("b", "a"));
        assert_eq!(
            chain.iter().map(|step| step.id).collect::<Vec<_>>(),
            [m1, m2]
        );
        assert_eq!(describe(&chain, &pair("a", "b")), "a → b → a → b");
        assert_eq!(lineage.depth(m2), 2);
        lineage.remove(m1);
        assert_eq!(lineage.chain(m2, &pair("b", "a")).len(), 1);
        // The depth stays with the link when the parent's turn is over.
        assert_eq!(lineage.depth(m2), 2);
    }

    #[test]
    fn budgets_count_the_last_day_and_hour() {
        let lineage = Lineage::default();
        let team = TeamName::new("api").expect("name");
        let now = now_ms();
        lineage.turn_done(&team, 1.0, now - 2 * DAY_MS);
        lineage.turn_done(&team, 0.5, now - 2 * HOUR_MS);
        lineage.turn_done(&team, 0.25, now);
        let budget = Budget {
            usd_per_day: Some(1.0),
            turns_per_hour: Some(2),
        };
        let used = lineage.budget_use(&team, budget);
        assert!((used.usd_last_24h - 0.75).abs() < 1e-9);
        assert_eq!(used.turns_last_hour, 1);
        assert_eq!(used.over(), None);
        lineage.turn_done(&team, 0.25, now);
        let used = lineage.budget_use(&team, budget);
        assert_eq!(
            used.over().as_deref(),
            Some("$1.0000 spent in the last 24 hours (budget.usdPerDay 1)")
        );
    }
}
