//! Applying a new configuration while the pool runs.
//!
//! [`Pool::set_config`] swaps the configuration, bumps the config version that every worker
//! watches, wakes the pairs waiting for a slot and trims the pool to a lowered
//! `maxProcesses`. The rest happens in each pair's worker, which owns its queue and its
//! process:
//!
//! - a pair whose team is gone holds its queued messages for `removedTeamGracePeriod` (the
//!   team may be back with the next edit), then refuses them ([`PoolError::TeamRemoved`]),
//!   and stops its process when it is idle: a running turn is never cut short, the process
//!   is stopped after it;
//! - a pair whose process was started with settings that have changed since (see
//!   [`LaunchKey`]) stops that process when it is idle, so the next message starts one with
//!   the new settings (resuming the pair's session);
//! - settings read at use (timeouts, `maxProcesses`, `maxQueuePerPair`, `idleTimeout`,
//!   `healthCheckInterval`...) apply from the next time they are read.

use std::sync::Arc;

use super::{ExitReason, Inner, Pair, Pool, PoolError, PoolEvent};
use crate::config::{Config, ConfigChanges, TeamConfig, reconcile};

/// What a process was started with that a configuration change can make out of date: its
/// team's settings that reach the command line, environment or permission answers, and the
/// global `claudePath`. Keys read at use (`token`, `description`, `color`, `idleTimeout`,
/// `spawnTimeout`, `permissions`) are left out, so changing them never restarts a process.
#[derive(Clone, PartialEq)]
pub(crate) struct LaunchKey {
    team: TeamConfig,
    claude_path: Option<String>,
}

impl LaunchKey {
    /// The key of a process of `team` started under `config`.
    pub(crate) fn of(config: &Config, team: &TeamConfig) -> Self {
        let mut team = team.clone();
        team.description = String::new();
        team.color = None;
        team.idle_timeout = None;
        team.spawn_timeout = None;
        // Read per request by the HTTP gate, never given to the process.
        team.token = None;
        // Read per permission request by the agent's actor (see `launch::rules_source`).
        team.permissions = Arc::default();
        Self {
            team,
            claude_path: config.settings.claude_path.clone(),
        }
    }
}

/// Why a process of `pair` started with `launched` must not take another turn under
/// `config`: its team is gone or its settings changed. `None` when it is current.
pub(super) fn staleness(config: &Config, pair: &Pair, launched: &LaunchKey) -> Option<ExitReason> {
    match config.teams.get(pair.target.as_str()) {
        None => Some(ExitReason::TeamRemoved),
        Some(team) if LaunchKey::of(config, team) != *launched => Some(ExitReason::Reconfigured),
        Some(_) => None,
    }
}

/// Why a message to `pair` cannot be delivered under `config`, if it cannot: its team was
/// removed after the message was accepted.
pub(super) fn undeliverable(config: &Config, pair: &Pair) -> Option<PoolError> {
    (!config.teams.contains_key(pair.target.as_str())).then(|| PoolError::TeamRemoved {
        team: pair.target.to_string(),
    })
}

impl Pool {
    /// Replaces the configuration while the pool runs, and returns what changed.
    ///
    /// What only takes effect at start keeps its current value (`settings.httpPort`, the
    /// `database` section, `IRIS_HOME`; listed in [`ConfigChanges::needs_restart`]). The rest
    /// applies at once:
    /// - an added team can be messaged at once;
    /// - a removed team is unknown to new messages; its queued messages wait
    ///   `settings.removedTeamGracePeriod` for it to come back, then fail with
    ///   [`PoolError::TeamRemoved`]; its processes are stopped once their running turn (if
    ///   any) ends, and its sessions stay in the store (adding it again resumes them);
    /// - a team whose settings changed keeps its running processes until they are idle; idle
    ///   ones are stopped, so the next message starts a process with the new settings;
    /// - a lowered `maxProcesses` starts no process beyond the new bound and stops idle
    ///   processes, least recently used first, down to it (busy ones when they become idle);
    ///   a raised one lets waiting messages proceed;
    /// - other settings apply from their next use (the next turn, spawn or queued message).
    ///
    /// Logs what changed at info (team names and keys, never `env` values) and emits
    /// [`PoolEvent::ConfigReloaded`] when anything changed. Returns without waiting for
    /// processes to stop.
    pub fn set_config(&self, config: Config) -> ConfigChanges {
        let (changes, file) = {
            let mut current = self
                .inner
                .config
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (effective, changes) = reconcile(&current, config);
            let file = effective.source.clone();
            *current = Arc::new(effective);
            (changes, file)
        };
        // Announced before the workers hear of it, so the log line and the event come before
        // their effects.
        if changes.applies_anything() {
            let from = file
                .as_ref()
                .map(|file| format!(" from {}", file.display()))
                .unwrap_or_default();
            tracing::info!("configuration reloaded{from}: {changes}");
        }
        if !changes.is_empty() {
            self.inner.emit(PoolEvent::ConfigReloaded {
                file,
                changes: changes.clone(),
            });
        }
        if changes.applies_anything() {
            self.inner
                .config_version
                .send_modify(|version| *version += 1);
            // A raised maxProcesses lets waiters in; a lowered one is enforced below.
            self.inner.slot_changed.notify_waiters();
            let inner = self.inner.clone();
            self.inner
                .tasks
                .spawn(async move { inner.trim_to_bound().await });
        }
        changes
    }

    /// Tells subscribers that an edited config file was refused (the watcher calls this).
    pub(crate) fn config_rejected(&self, file: std::path::PathBuf, error: String) {
        self.inner.emit(PoolEvent::ConfigRejected { file, error });
    }

    /// Cancelled when the pool shuts down.
    pub(crate) fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.inner.cancel.clone()
    }
}

impl Inner {
    /// While more processes are live than `maxProcesses` allows (after it was lowered),
    /// stops idle ones, least recently used first. Busy, spawning and stopping ones are left
    /// alone: a busy one is stopped here once it is idle (its worker calls this after each
    /// job), and one already stopping no longer counts.
    pub(super) async fn trim_to_bound(&self) {
        loop {
            let max = self.config().settings.max_processes;
            // The common case, after every job: within the bound, nothing to pick.
            let Some((pair, agent)) = self.lock().evict_over(max) else {
                return;
            };
            tracing::info!(%pair, pid = agent.pid(), max, "maxProcesses lowered: stopping an idle agent");
            self.stop_agent(&pair, &agent, ExitReason::OverMaxProcesses)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TeamName;
    use std::path::PathBuf;
    use std::time::Duration;

    fn config_with(team: TeamConfig) -> Config {
        let mut config = Config::defaults(PathBuf::from("/iris-home"));
        config.teams.insert(team.name.clone(), team);
        config
    }

    fn team() -> TeamConfig {
        TeamConfig::new(
            TeamName::new("backend").expect("name"),
            PathBuf::from("/code/backend"),
        )
    }

    fn pair() -> Pair {
        Pair::new(
            TeamName::new("caller").expect("name"),
            TeamName::new("backend").expect("name"),
        )
    }

    #[test]
    fn a_process_is_stale_when_its_team_is_gone_or_its_launch_settings_changed() {
        let config = config_with(team());
        let key = LaunchKey::of(&config, &team());
        assert_eq!(staleness(&config, &pair(), &key), None);

        // Keys read at use never make a process stale.
        let mut cosmetic = team();
        cosmetic.description = "new words".to_owned();
        cosmetic.color = Some("#123456".to_owned());
        cosmetic.idle_timeout = Some(Duration::from_secs(5));
        cosmetic.spawn_timeout = Some(Duration::from_secs(5));
        assert_eq!(staleness(&config_with(cosmetic), &pair(), &key), None);

        let mut env = team();
        env.env.insert("TOKEN".to_owned(), "x".to_owned());
        assert_eq!(
            staleness(&config_with(env), &pair(), &key),
            Some(ExitReason::Reconfigured)
        );
        let mut grant = team();
        grant.grant_permission = crate::config::GrantPermission::Yes;
        assert_eq!(
            staleness(&config_with(grant), &pair(), &key),
            Some(ExitReason::Reconfigured)
        );
        let mut global = config.clone();
        global.settings.claude_path = Some("/opt/claude".to_owned());
        assert_eq!(
            staleness(&global, &pair(), &key),
            Some(ExitReason::Reconfigured)
        );
        let mut remote = team();
        remote.remote = Some(crate::config::RemoteConfig::new("host"));
        // Moved to a host: a new process there.
        assert_eq!(
            staleness(&config_with(remote), &pair(), &key),
            Some(ExitReason::Reconfigured)
        );
        let empty = Config::defaults(PathBuf::from("/iris-home"));
        assert_eq!(
            staleness(&empty, &pair(), &key),
            Some(ExitReason::TeamRemoved)
        );
    }

    #[test]
    fn messages_to_a_removed_team_are_undeliverable() {
        let config = config_with(team());
        assert!(undeliverable(&config, &pair()).is_none());
        let empty = Config::defaults(PathBuf::from("/iris-home"));
        let error = undeliverable(&empty, &pair()).expect("removed");
        assert_eq!(
            error.to_string(),
            "team 'backend' was removed from the configuration while the message waited; it was not delivered"
        );
        let mut remote = team();
        remote.remote = Some(crate::config::RemoteConfig::new("host"));
        assert!(undeliverable(&config_with(remote), &pair()).is_none());
    }
}
