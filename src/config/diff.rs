//! What changed between two configurations, and which of the changes a running Iris can
//! apply: [`reconcile`] is the pure half of hot reload (the pool applies its result).
//!
//! Changes name keys, never values of team `env` (they often hold secrets); settings are shown
//! with their old and new values. Settings that only take effect at start (`settings.httpPort`,
//! `settings.httpSessionIdleTimeout` and every `database` key) are reported in [`ConfigChanges::needs_restart`] and keep their
//! old values in the configuration to apply.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, Settings, TeamConfig, TeamName};

/// What changed between the configuration in force and a newly loaded one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanges {
    /// Teams that are new, in name order.
    pub teams_added: Vec<TeamName>,
    /// Teams that are gone, in name order.
    pub teams_removed: Vec<TeamName>,
    /// Teams whose settings changed, in name order.
    pub teams_changed: Vec<TeamChange>,
    /// Settings that changed and apply while Iris runs.
    pub settings_changed: Vec<SettingChange>,
    /// Settings that changed but apply only when Iris starts: their old values stay in force.
    pub needs_restart: Vec<SettingChange>,
}

impl ConfigChanges {
    /// Whether nothing changed (a comment or layout edit, or the same file saved again).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.teams_added.is_empty()
            && self.teams_removed.is_empty()
            && self.teams_changed.is_empty()
            && self.settings_changed.is_empty()
            && self.needs_restart.is_empty()
    }

    /// Whether anything changed that the running Iris applies (everything but
    /// [`ConfigChanges::needs_restart`]).
    #[must_use]
    pub fn applies_anything(&self) -> bool {
        !(self.teams_added.is_empty()
            && self.teams_removed.is_empty()
            && self.teams_changed.is_empty()
            && self.settings_changed.is_empty())
    }

    /// The change of `key` (such as `settings.maxProcesses`), applied or not.
    #[must_use]
    pub fn setting(&self, key: &str) -> Option<&SettingChange> {
        self.settings_changed
            .iter()
            .chain(&self.needs_restart)
            .find(|change| change.key == key)
    }
}

/// One line per kind of change, joined with `; `: `teams added: a, b; team c changed: path,
/// env; settings.maxProcesses: 4 -> 2; settings.httpPort: 1615 -> 1616 (needs a restart)`.
impl fmt::Display for ConfigChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |teams: &[TeamName]| {
            teams
                .iter()
                .map(TeamName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.teams_added.is_empty() {
            parts.push(format!("teams added: {}", names(&self.teams_added)));
        }
        if !self.teams_removed.is_empty() {
            parts.push(format!("teams removed: {}", names(&self.teams_removed)));
        }
        for team in &self.teams_changed {
            parts.push(format!(
                "team {} changed: {}",
                team.team,
                team.keys.join(", ")
            ));
        }
        for setting in &self.settings_changed {
            parts.push(setting.to_string());
        }
        for setting in &self.needs_restart {
            parts.push(format!("{setting} (needs a restart)"));
        }
        if parts.is_empty() {
            f.write_str("nothing changed")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// A team whose settings changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamChange {
    /// The team.
    pub team: TeamName,
    /// The keys that changed, as written in the file (`path`, `env`, `grantPermission`...),
    /// never their values.
    pub keys: Vec<String>,
}

/// A setting whose value changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingChange {
    /// The dotted key, such as `settings.maxProcesses` or `database.path`.
    pub key: String,
    /// The old value, as it would be written.
    pub from: String,
    /// The new value.
    pub to: String,
}

impl fmt::Display for SettingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.from, self.to)
    }
}

/// The configuration to apply in place of `old`, and what changed from `old` to `new`.
///
/// The result is `new`, except that what only takes effect at start keeps its value from
/// `old`: `settings.httpPort`, `settings.httpSessionIdleTimeout`, the whole `database`
/// section and `IRIS_HOME`. Those changes are
/// listed in [`ConfigChanges::needs_restart`].
#[must_use]
pub fn reconcile(old: &Config, new: Config) -> (Config, ConfigChanges) {
    let changes = diff(old, &new);
    let mut effective = new;
    effective.settings.http_port = old.settings.http_port;
    effective.settings.http_session_idle_timeout = old.settings.http_session_idle_timeout;
    effective.database = old.database.clone();
    effective.iris_home = old.iris_home.clone();
    (effective, changes)
}

/// What changed from `old` to `new` (see [`ConfigChanges`]).
#[must_use]
pub fn diff(old: &Config, new: &Config) -> ConfigChanges {
    let mut changes = ConfigChanges::default();
    for (name, team) in &new.teams {
        match old.teams.get(name) {
            None => changes.teams_added.push(name.clone()),
            Some(before) => {
                let keys = team_keys(before, team);
                if !keys.is_empty() {
                    changes.teams_changed.push(TeamChange {
                        team: name.clone(),
                        keys,
                    });
                }
            }
        }
    }
    changes.teams_removed = old
        .teams
        .keys()
        .filter(|name| !new.teams.contains_key(*name))
        .cloned()
        .collect();
    changes.settings_changed = settings_changes(&old.settings, &new.settings);
    let (old_port, new_port) = (old.settings.http_port, new.settings.http_port);
    push(
        &mut changes.needs_restart,
        "settings.httpPort",
        &old_port,
        &new_port,
    );
    push_duration(
        &mut changes.needs_restart,
        "settings.httpSessionIdleTimeout",
        old.settings.http_session_idle_timeout,
        new.settings.http_session_idle_timeout,
    );
    let (before, after) = (&old.database, &new.database);
    push(
        &mut changes.needs_restart,
        "database.path",
        &before.path.display(),
        &after.path.display(),
    );
    push(
        &mut changes.needs_restart,
        "database.inMemory",
        &before.in_memory,
        &after.in_memory,
    );
    push(
        &mut changes.needs_restart,
        "database.retentionDays",
        &days(before.retention),
        &days(after.retention),
    );
    push(
        &mut changes.needs_restart,
        "database.maxStoredTextBytes",
        &before.max_text_bytes,
        &after.max_text_bytes,
    );
    push(
        &mut changes.needs_restart,
        "database.maxTranscriptEntries",
        &before.max_transcript_entries,
        &after.max_transcript_entries,
    );
    changes
}

/// The keys of a team that differ, in the order of the config reference.
fn team_keys(old: &TeamConfig, new: &TeamConfig) -> Vec<String> {
    let checks: [(&'static str, bool); 18] = [
        ("path", old.path == new.path),
        ("description", old.description == new.description),
        ("claudePath", old.claude_path == new.claude_path),
        ("idleTimeout", old.idle_timeout == new.idle_timeout),
        ("spawnTimeout", old.spawn_timeout == new.spawn_timeout),
        ("model", old.model == new.model),
        ("allowedTools", old.allowed_tools == new.allowed_tools),
        (
            "disallowedTools",
            old.disallowed_tools == new.disallowed_tools,
        ),
        (
            "appendSystemPrompt",
            old.append_system_prompt == new.append_system_prompt,
        ),
        ("permissionMode", old.permission_mode == new.permission_mode),
        (
            "grantPermission",
            old.grant_permission == new.grant_permission,
        ),
        ("env", old.env == new.env),
        // The whole `RemoteConfig`: `remoteOptions`, `enableReverseMcp` and `reverseMcpPort`
        // count as `remote`.
        ("remote", old.remote == new.remote),
        ("color", old.color == new.color),
        ("token", old.token == new.token),
        ("permissions", old.permissions == new.permissions),
        (
            "approvalTimeout",
            old.approval_timeout == new.approval_timeout,
        ),
        ("budget", old.budget == new.budget),
    ];
    checks
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(key, _)| key.to_owned())
        .collect()
}

fn settings_changes(old: &Settings, new: &Settings) -> Vec<SettingChange> {
    let mut changes = Vec::new();
    let list = &mut changes;
    let program = |path: &Option<String>| {
        path.clone()
            .unwrap_or_else(|| "(claude on PATH)".to_owned())
    };
    push_duration(
        list,
        "settings.spawnTimeout",
        old.spawn_timeout,
        new.spawn_timeout,
    );
    push_duration(
        list,
        "settings.responseTimeout",
        old.response_timeout,
        new.response_timeout,
    );
    push_duration(
        list,
        "settings.idleTimeout",
        old.idle_timeout,
        new.idle_timeout,
    );
    push(
        list,
        "settings.maxProcesses",
        &old.max_processes,
        &new.max_processes,
    );
    push_duration(
        list,
        "settings.healthCheckInterval",
        old.health_check_interval,
        new.health_check_interval,
    );
    push(
        list,
        "settings.claudePath",
        &program(&old.claude_path),
        &program(&new.claude_path),
    );
    push(
        list,
        "settings.maxQueuePerPair",
        &old.max_queue_per_pair,
        &new.max_queue_per_pair,
    );
    push_duration(
        list,
        "settings.poolWaitTimeout",
        old.pool_wait_timeout,
        new.pool_wait_timeout,
    );
    push_duration(
        list,
        "settings.stopGracePeriod",
        old.stop_grace_period,
        new.stop_grace_period,
    );
    push(
        list,
        "settings.wakeConcurrency",
        &old.wake_concurrency,
        &new.wake_concurrency,
    );
    push(
        list,
        "settings.maxLineBytes",
        &old.max_line_bytes,
        &new.max_line_bytes,
    );
    push(
        list,
        "settings.hotReloadConfig",
        &old.hot_reload_config,
        &new.hot_reload_config,
    );
    push(
        list,
        "settings.maxHttpSessions",
        &old.max_http_sessions,
        &new.max_http_sessions,
    );
    push_duration(
        list,
        "settings.removedTeamGracePeriod",
        old.removed_team_grace_period,
        new.removed_team_grace_period,
    );
    push_duration(
        list,
        "settings.approvalTimeout",
        old.approval_timeout,
        new.approval_timeout,
    );
    push(
        list,
        "dashboard.enabled",
        &old.dashboard_enabled,
        &new.dashboard_enabled,
    );
    push_duration(
        list,
        "settings.daemonIdleTimeout",
        old.daemon_idle_timeout,
        new.daemon_idle_timeout,
    );
    push(
        list,
        "settings.maxCallDepth",
        &old.max_call_depth,
        &new.max_call_depth,
    );
    push(
        list,
        "settings.forwardFallback",
        &old.forward_fallback.as_str(),
        &new.forward_fallback.as_str(),
    );
    if old.permissions != new.permissions {
        push(
            list,
            "settings.permissions",
            &old.permissions.counts(),
            &new.permissions.counts(),
        );
    }
    // A secret: only whether it is set is shown.
    let set = |token: &Option<super::Secret>| if token.is_some() { "(set)" } else { "(none)" };
    if old.http_token != new.http_token {
        push(
            list,
            "settings.httpToken",
            &set(&old.http_token),
            &if new.http_token.is_some() && old.http_token.is_some() {
                "(changed)"
            } else {
                set(&new.http_token)
            },
        );
    }
    changes
}

fn push_duration(
    changes: &mut Vec<SettingChange>,
    key: &'static str,
    from: Duration,
    to: Duration,
) {
    push(changes, key, &show_duration(from), &show_duration(to));
}

fn push(
    changes: &mut Vec<SettingChange>,
    key: &'static str,
    from: &dyn fmt::Display,
    to: &dyn fmt::Display,
) {
    let (from, to) = (from.to_string(), to.to_string());
    if from != to {
        changes.push(SettingChange {
            key: key.to_owned(),
            from,
            to,
        });
    }
}

/// A duration as it could be written in the file: `1h`, `5m`, `30s` or `250ms`.
fn show_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0ms".to_owned(),
        _ if millis.is_multiple_of(3_600_000) => format!("{}h", millis / 3_600_000),
        _ if millis.is_multiple_of(60_000) => format!("{}m", millis / 60_000),
        _ if millis.is_multiple_of(1_000) => format!("{}s", millis / 1_000),
        _ => format!("{millis}ms"),
    }
}

fn days(duration: Duration) -> String {
    format!("{}", duration.as_secs_f64() / 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn name(text: &str) -> TeamName {
        TeamName::new(text).expect("valid name")
    }

    fn config(teams: &[&str]) -> Config {
        let mut config = Config::defaults(PathBuf::from("/iris-home"));
        for team in teams {
            let team = TeamConfig::new(name(team), PathBuf::from(format!("/code/{team}")));
            config.teams.insert(team.name.clone(), team);
        }
        config
    }

    #[test]
    fn identical_configs_have_no_changes() {
        let old = config(&["a", "b"]);
        let (effective, changes) = reconcile(&old, old.clone());
        assert!(changes.is_empty(), "{changes:?}");
        assert!(!changes.applies_anything());
        assert_eq!(changes.to_string(), "nothing changed");
        assert_eq!(effective.teams, old.teams);
        assert_eq!(effective.settings, old.settings);
    }

    #[test]
    fn teams_added_removed_and_changed_are_named_without_values() {
        let old = config(&["a", "b", "c"]);
        let mut new = config(&["b", "c", "d"]);
        let c = new.teams.get_mut("c").expect("team c");
        c.env
            .insert("API_TOKEN".to_owned(), "s3cr3t-value".to_owned());
        c.model = Some("opus".to_owned());
        c.path = PathBuf::from("/elsewhere");
        let changes = diff(&old, &new);
        assert_eq!(changes.teams_added, [name("d")]);
        assert_eq!(changes.teams_removed, [name("a")]);
        assert_eq!(
            changes.teams_changed,
            [TeamChange {
                team: name("c"),
                keys: ["path", "model", "env"].map(str::to_owned).to_vec(),
            }]
        );
        assert!(changes.settings_changed.is_empty());
        assert!(changes.needs_restart.is_empty());
        let shown = changes.to_string();
        assert_eq!(
            shown,
            "teams added: d; teams removed: a; team c changed: path, model, env"
        );
        let json = serde_json::to_string(&changes).expect("serializes");
        assert!(
            !shown.contains("s3cr3t") && !json.contains("s3cr3t"),
            "{json}"
        );
        assert!(!json.contains("API_TOKEN"), "{json}");
    }

    #[test]
    fn every_team_key_is_compared() {
        let old = config(&["t"]);
        let mut new = old.clone();
        let team = new.teams.get_mut("t").expect("team t");
        team.description = "x".to_owned();
        team.claude_path = Some("/bin/claude".to_owned());
        team.idle_timeout = Some(Duration::from_secs(1));
        team.spawn_timeout = Some(Duration::from_secs(1));
        team.allowed_tools = vec!["Read".to_owned()];
        team.disallowed_tools = vec!["Bash".to_owned()];
        team.append_system_prompt = Some("be brief".to_owned());
        team.permission_mode = Some("plan".to_owned());
        team.grant_permission = crate::config::GrantPermission::Yes;
        team.remote = Some(crate::config::RemoteConfig::new("host"));
        team.color = Some("#ffffff".to_owned());
        let changes = diff(&old, &new);
        assert_eq!(
            changes.teams_changed[0].keys,
            [
                "description",
                "claudePath",
                "idleTimeout",
                "spawnTimeout",
                "allowedTools",
                "disallowedTools",
                "appendSystemPrompt",
                "permissionMode",
                "grantPermission",
                "remote",
                "color"
            ]
        );
    }

    #[test]
    fn a_change_of_any_remote_option_is_a_change_of_remote() {
        use crate::config::RemoteConfig;
        let mut old = config(&["t"]);
        old.teams.get_mut("t").expect("team t").remote = Some(RemoteConfig::new("host"));
        let edits: [fn(&mut RemoteConfig); 14] = [
            |remote| remote.command = "ssh  host".to_owned(),
            |remote| remote.ssh_args = vec!["-C".to_owned(), "host".to_owned()],
            |remote| remote.host = "other".to_owned(),
            |remote| remote.identity = Some(PathBuf::from("/k")),
            |remote| remote.port = Some(2222),
            |remote| remote.strict_host_key_checking = Some(true),
            |remote| remote.connect_timeout = Duration::from_secs(1),
            |remote| remote.server_alive_interval = Duration::from_secs(1),
            |remote| remote.server_alive_count_max = 9,
            |remote| remote.compression = true,
            |remote| remote.forward_agent = true,
            |remote| remote.extra_ssh_args = vec!["-4".to_owned()],
            |remote| remote.reverse_mcp = false,
            |remote| remote.reverse_mcp_port = Some(17000),
        ];
        for (index, edit) in edits.into_iter().enumerate() {
            let mut new = old.clone();
            edit(
                new.teams
                    .get_mut("t")
                    .and_then(|team| team.remote.as_mut())
                    .expect("remote"),
            );
            let changes = diff(&old, &new);
            assert_eq!(
                changes.to_string(),
                "team t changed: remote",
                "edit {index}"
            );
        }
    }

    #[test]
    fn live_settings_are_applied_with_their_values_shown() {
        let old = config(&[]);
        let mut new = old.clone();
        new.settings.max_processes = 2;
        new.settings.response_timeout = Duration::from_millis(1500);
        new.settings.idle_timeout = Duration::from_secs(300);
        new.settings.claude_path = Some("/opt/claude".to_owned());
        let (effective, changes) = reconcile(&old, new);
        assert_eq!(effective.settings.max_processes, 2);
        assert_eq!(
            effective.settings.response_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            changes
                .settings_changed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "settings.responseTimeout: 2m -> 1500ms",
                "settings.idleTimeout: 1h -> 5m",
                "settings.maxProcesses: 10 -> 2",
                "settings.claudePath: (claude on PATH) -> /opt/claude",
            ]
        );
        assert!(changes.needs_restart.is_empty());
        assert!(changes.applies_anything());
        assert_eq!(
            changes
                .setting("settings.maxProcesses")
                .map(|c| c.to.as_str()),
            Some("2")
        );
    }

    #[test]
    fn start_only_settings_keep_their_old_values_and_need_a_restart() {
        let old = config(&["a"]);
        let mut new = old.clone();
        new.settings.http_port = 1616;
        new.settings.http_session_idle_timeout = Duration::from_secs(60);
        new.database.path = PathBuf::from("/elsewhere/iris.db");
        new.database.retention = Duration::from_secs(86_400 * 7);
        new.database.max_transcript_entries = 5;
        new.iris_home = PathBuf::from("/other-home");
        let (effective, changes) = reconcile(&old, new);
        assert_eq!(effective.settings.http_port, 1615);
        assert_eq!(
            effective.settings.http_session_idle_timeout,
            Duration::from_secs(300)
        );
        assert_eq!(effective.database, old.database);
        assert_eq!(effective.iris_home, old.iris_home);
        assert!(!changes.applies_anything());
        assert!(!changes.is_empty());
        assert_eq!(
            changes.to_string(),
            "settings.httpPort: 1615 -> 1616 (needs a restart); \
             settings.httpSessionIdleTimeout: 5m -> 1m (needs a restart); \
             database.path: /iris-home/data/iris.db -> /elsewhere/iris.db (needs a restart); \
             database.retentionDays: 30 -> 7 (needs a restart); \
             database.maxTranscriptEntries: 200 -> 5 (needs a restart)"
        );
    }

    #[test]
    fn durations_are_shown_in_the_largest_exact_unit() {
        assert_eq!(show_duration(Duration::ZERO), "0ms");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::from_secs(300)), "5m");
        assert_eq!(show_duration(Duration::from_secs(7200)), "2h");
    }
}
