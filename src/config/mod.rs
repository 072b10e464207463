//! Configuration: Iris-compatible YAML (`settings`, `teams.<name>`, `database`, `dashboard`),
//! loaded and validated once into a [`Config`] whose types encode what has been checked.
//!
//! Where the file is: `$IRIS_CONFIG_PATH`, else `$IRIS_HOME/config.yaml` (or `config.yml`),
//! with `IRIS_HOME` defaulting to `~/.iris`. No file at all is not an error: Iris then runs on
//! embedded defaults with no teams.
//!
//! A running Iris re-reads the file when it changes ([`crate::reload`]); [`reconcile`] says
//! what changed and which of the changes can apply without a restart.
//!
//! Invariant: every `TeamConfig::path` of a local team is an absolute, canonical (realpath)
//! directory that existed when the config was loaded; every [`TeamName`] passed validation;
//! every [`RemoteConfig`] is `ssh [options] host` with options ssh knows, none of those that
//! would keep ssh from running the agent over its stdin and stdout, and the host last.

mod diff;
pub mod edit;
mod load;
mod name;
#[cfg(test)]
mod tests;

pub use diff::{ConfigChanges, SettingChange, TeamChange, diff, reconcile};
pub(crate) use load::process_env;
pub use load::{
    ConfigError, ConfigWarning, Position, Problem, load, load_from_path, load_from_str, locate,
};
pub(crate) use name::cut_echo;
pub use name::{NameError, TeamName};

/// The configured team that `name` (not one of them) is most likely a typo of. Names shorter
/// than three characters get no suggestion: every short name is a typo of another.
pub(crate) fn nearest_team<'c>(config: &'c Config, name: &str) -> Option<&'c str> {
    if name.chars().count() < 3 {
        return None;
    }
    load::nearest(name, config.teams.keys().map(TeamName::as_str)).filter(|near| *near != name)
}

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::permissions::Rules;
use std::time::Duration;

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from; `None` when running on embedded defaults.
    pub source: Option<PathBuf>,
    /// `$IRIS_HOME` (absolute): where the database and other state live.
    pub iris_home: PathBuf,
    /// Global settings, defaults filled in.
    pub settings: Settings,
    /// Teams by name, in name order.
    pub teams: BTreeMap<TeamName, TeamConfig>,
    /// Where the database lives.
    pub database: DatabaseConfig,
    /// Keys that were accepted but have no effect here, or that deserve a word (one each).
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Embedded defaults: no teams, every setting at its default, `IRIS_HOME` as given.
    #[must_use]
    pub fn defaults(iris_home: PathBuf) -> Self {
        let database = DatabaseConfig::file(iris_home.join("data").join("iris.db"));
        Self {
            source: None,
            iris_home,
            settings: Settings::default(),
            teams: BTreeMap::new(),
            database,
            warnings: Vec::new(),
        }
    }

    /// The team called `name`, if configured.
    #[must_use]
    pub fn team(&self, name: &str) -> Option<&TeamConfig> {
        self.teams
            .iter()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, team)| team)
    }

    /// Names of all configured teams, for error messages that list them.
    #[must_use]
    pub fn team_names(&self) -> Vec<String> {
        self.teams
            .keys()
            .map(|name| name.as_str().to_owned())
            .collect()
    }

    /// The teams that have a token of their own (`teams.<name>.token`).
    #[must_use]
    pub fn teams_with_tokens(&self) -> Vec<TeamName> {
        self.teams
            .values()
            .filter(|team| team.token.is_some())
            .map(|team| team.name.clone())
            .collect()
    }

    /// Whether any token is configured (`settings.httpToken` or a team's).
    #[must_use]
    pub fn has_tokens(&self) -> bool {
        self.settings.http_token.is_some() || self.teams.values().any(|team| team.token.is_some())
    }
}

/// A secret from the configuration (a bearer token): never printed, also not by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A new random secret (256 bits, hex): the approver token, the dashboard's CSRF token
    /// and login sessions.
    #[must_use]
    pub fn random() -> Self {
        Self(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// The secret itself, for the one place that must hand it on (a 0600 file). Never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this secret, compared in time independent of where they differ.
    #[must_use]
    pub fn matches(&self, offered: &str) -> bool {
        let (expected, offered) = (self.0.as_bytes(), offered.as_bytes());
        if expected.len() != offered.len() {
            return false;
        }
        expected
            .iter()
            .zip(offered)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `settings`: global knobs. Durations are written in the file as milliseconds (numbers, as in
/// Iris MCP) or as strings with a unit (`"30s"`, `"500ms"`, `"5m"`, `"1h"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `spawnTimeout`: how long a new agent may take to answer `initialize`. Default 20 s.
    pub spawn_timeout: Duration,
    /// `responseTimeout`: a running turn that prints nothing for this long is timed out. Default 120 s.
    pub response_timeout: Duration,
    /// `idleTimeout`: an agent idle this long is stopped. Default 1 h.
    pub idle_timeout: Duration,
    /// `maxProcesses`: hard bound on live agent processes. Default 10, at least 1.
    pub max_processes: usize,
    /// `healthCheckInterval`: how often idle agents get a token-free round trip. Default 30 s.
    pub health_check_interval: Duration,
    /// `httpPort`: the MCP HTTP port. Default 1615.
    pub http_port: u16,
    /// `claudePath`: the claude executable for teams that set none. Default: `claude` on `PATH`.
    pub claude_path: Option<String>,
    /// `maxQueuePerPair`: turns that may wait behind the running one on a pair. Default 100.
    pub max_queue_per_pair: usize,
    /// `poolWaitTimeout`: how long a message waits for a free slot when every agent is busy,
    /// before failing with "pool saturated". Default 30 s.
    pub pool_wait_timeout: Duration,
    /// `stopGracePeriod`: after closing an agent's stdin, and again after SIGTERM, how long to
    /// wait before escalating. Default 5 s.
    pub stop_grace_period: Duration,
    /// `wakeConcurrency`: how many agents `team_wake_all` starts at once. Default 4.
    pub wake_concurrency: usize,
    /// `maxLineBytes`: longest stdout line accepted from an agent; longer lines are skipped
    /// and logged. Default 16 MiB.
    pub max_line_bytes: usize,
    /// `hotReloadConfig`: while `iris serve` or `iris console` runs, watch the config file and
    /// apply valid edits (see [`crate::reload`]). Default true.
    pub hot_reload_config: bool,
    /// `httpToken`: a bearer token that lets HTTP clients in without naming a team (they state
    /// `fromTeam`). Required, or a team `token`, to serve on a non-loopback address.
    pub http_token: Option<Secret>,
    /// `maxHttpSessions`: MCP sessions open at once over HTTP; a new one beyond it is refused
    /// (503, `Retry-After`). Default 100.
    pub max_http_sessions: usize,
    /// `httpSessionIdleTimeout`: an MCP session over HTTP unused this long is closed (the
    /// client starts a new one). Applies from the next start. Default 5 minutes.
    pub http_session_idle_timeout: Duration,
    /// `removedTeamGracePeriod`: when an edit removes a team, its queued messages wait this
    /// long for it to come back (an edit in progress) before they fail. Default 30 seconds.
    pub removed_team_grace_period: Duration,
    /// `permissions`: rules every team's agents are checked against before their own
    /// (`{allow, ask, deny}` lists in Claude Code's syntax; see [`crate::permissions`]).
    /// Applies to running agents from their next request.
    pub permissions: Arc<Rules>,
    /// `approvalTimeout`: how long a tool-permission request waits for a person before it
    /// is denied (teams may set their own). Default 10 minutes.
    pub approval_timeout: Duration,
    /// `forwardFallback`: what a `grantPermission: forward` request does when nobody in the
    /// call chain can be asked (no connection that declared elicitation). Default `ask`.
    pub forward_fallback: ForwardFallback,
    /// `maxCallDepth`: how many messages a call chain may hold (a person's message is 1, the
    /// one its agent sends is 2, ...); a deeper one is refused. Default 4.
    pub max_call_depth: usize,
    /// `daemonIdleTimeout`: the Iris daemon that `iris serve --stdio` bridges start stops
    /// after this long with no bridge, no HTTP request and no work (0: as soon as the last
    /// bridge leaves). Default 30 minutes. A foreground `iris serve` does not stop.
    pub daemon_idle_timeout: Duration,
    /// `dashboard.enabled` (Iris MCP's key, in its own section): the dashboard at `/` on the
    /// HTTP port. Default true; read per request, so a reload applies at once.
    pub dashboard_enabled: bool,
}

/// `teams.<name>.budget`: spending limits; over one, new messages to the team are refused.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Budget {
    /// `usdPerDay`: cost of the team's turns in the last 24 hours.
    pub usd_per_day: Option<f64>,
    /// `turnsPerHour`: the team's turns in the last hour.
    pub turns_per_hour: Option<u64>,
}

/// `settings.forwardFallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardFallback {
    /// A person at Iris decides (`iris approve`, the dashboard).
    #[default]
    Ask,
    /// Denied at once.
    Deny,
}

impl ForwardFallback {
    /// The config spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::Deny => "deny",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            spawn_timeout: Duration::from_secs(20),
            response_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(3600),
            max_processes: 10,
            health_check_interval: Duration::from_secs(30),
            http_port: 1615,
            claude_path: None,
            max_queue_per_pair: 100,
            pool_wait_timeout: Duration::from_secs(30),
            stop_grace_period: Duration::from_secs(5),
            wake_concurrency: 4,
            max_line_bytes: 16 * 1024 * 1024,
            hot_reload_config: true,
            http_token: None,
            max_http_sessions: 100,
            http_session_idle_timeout: Duration::from_secs(300),
            removed_team_grace_period: Duration::from_secs(30),
            permissions: Arc::default(),
            approval_timeout: Duration::from_secs(600),
            forward_fallback: ForwardFallback::Ask,
            max_call_depth: 4,
            daemon_idle_timeout: Duration::from_secs(30 * 60),
            dashboard_enabled: true,
        }
    }
}

/// `database`: where the SQLite store lives and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Absolute path of the SQLite file (relative paths in the file resolve against `IRIS_HOME`).
    /// Default `$IRIS_HOME/data/iris.db`.
    pub path: PathBuf,
    /// `inMemory`: use an in-memory database (tests); `path` is then unused. Default false.
    pub in_memory: bool,
    /// `retentionDays`: finished messages older than this are pruned (queued and running ones
    /// never are). Written as a positive number of days. Default 30 days.
    pub retention: Duration,
    /// `maxStoredTextBytes`: a message's text, answer and error are each cut to this many bytes
    /// (on a character boundary, marker included) before they are stored. Default 256 KiB, at
    /// least 1024.
    pub max_text_bytes: usize,
    /// `maxTranscriptEntries`: transcript entries kept per message; later ones are dropped.
    /// Default 200.
    pub max_transcript_entries: usize,
}

impl DatabaseConfig {
    /// Default of `retention` (`retentionDays: 30`).
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
    /// Default of `max_text_bytes` (`maxStoredTextBytes: 262144`).
    pub const DEFAULT_MAX_TEXT_BYTES: usize = 256 * 1024;
    /// Smallest accepted `max_text_bytes`, so that a cut text still has room for its marker.
    pub const MIN_MAX_TEXT_BYTES: usize = 1024;
    /// Default of `max_transcript_entries` (`maxTranscriptEntries: 200`).
    pub const DEFAULT_MAX_TRANSCRIPT_ENTRIES: usize = 200;

    /// A database file at `path` with every other key at its default.
    #[must_use]
    pub fn file(path: PathBuf) -> Self {
        Self {
            path,
            in_memory: false,
            retention: Self::DEFAULT_RETENTION,
            max_text_bytes: Self::DEFAULT_MAX_TEXT_BYTES,
            max_transcript_entries: Self::DEFAULT_MAX_TRANSCRIPT_ENTRIES,
        }
    }

    /// An in-memory database (tests) with every other key at its default.
    #[must_use]
    pub fn memory() -> Self {
        Self {
            in_memory: true,
            ..Self::file(PathBuf::new())
        }
    }
}

/// How a team answers the tool-permission requests of its agent (`grantPermission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantPermission {
    /// Allow every tool use.
    Yes,
    /// Deny every tool use that needs permission.
    No,
    /// A person at Iris decides (`iris approve`/`iris deny`, the dashboard).
    Ask,
    /// The caller's person decides, through MCP elicitation on the caller's connection (up
    /// the call chain); `settings.forwardFallback` when nobody there can be asked.
    Forward,
}

impl GrantPermission {
    /// The config spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Ask => "ask",
            Self::Forward => "forward",
        }
    }
}

/// How Iris reaches a remote team's host: `remote`, `remoteOptions`, `enableReverseMcp` and
/// `reverseMcpPort` of `teams.<name>` (a change of any of them is a change of `remote` for
/// [`diff()`]).
///
/// The loader refuses, in `remote` and in `extraSshArgs`, the ssh options that make no sense
/// for an agent's connection: `-N`, `-f`, `-n`, `-s`, `-W` (no remote command, or not over
/// ssh's stdin and stdout), `-t` (a tty), `-M`, `-S`, `-O` (Iris manages the control socket
/// itself), `-G`, `-Q`, `-V` (ssh exits without connecting), and the `-o` keys
/// `ControlMaster`, `ControlPath`, `ControlPersist`, `RequestTTY`, `RemoteCommand`,
/// `SessionType`, `ForkAfterAuthentication` and `StdinNull`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// `remote` as written (after `${VAR}` interpolation): `ssh [options] host`.
    pub command: String,
    /// The words of `remote` after `ssh`, split as a POSIX shell splits them (single and
    /// double quotes, backslashes; an unquoted `~` or `~/...` starting a word is this
    /// machine's home directory), the host last: `["-J", "bastion", "deploy@app"]`. Nothing
    /// else is expanded: the loader refuses unquoted `$`, `` ` ``, `;`, `|`, `&`, `<`, `>`,
    /// `(`, `)` and line breaks.
    pub ssh_args: Vec<String>,
    /// The host word of `remote` (its last word): an alias of the user's ssh config or
    /// `[user@]host`. Never empty, never with whitespace.
    pub host: String,
    /// `remoteOptions.identity`: `-i <file>`, a file on this machine (`~` expanded, relative
    /// to the config file's directory; a missing file is a warning, not an error).
    pub identity: Option<PathBuf>,
    /// `remoteOptions.port`: `-p <port>`.
    pub port: Option<u16>,
    /// `remoteOptions.strictHostKeyChecking`: `-o StrictHostKeyChecking=yes|no` when set.
    pub strict_host_key_checking: Option<bool>,
    /// `remoteOptions.connectTimeout` (milliseconds as a number, or a duration such as `10s`):
    /// `-o ConnectTimeout=<seconds, at least 1>`. Default 10 s.
    pub connect_timeout: Duration,
    /// `remoteOptions.serverAliveInterval` (as `connectTimeout`): default 15 s.
    pub server_alive_interval: Duration,
    /// `remoteOptions.serverAliveCountMax`: default 3, at least 1.
    pub server_alive_count_max: u32,
    /// `remoteOptions.compression`: `-C`.
    pub compression: bool,
    /// `remoteOptions.forwardAgent`: `-A`.
    pub forward_agent: bool,
    /// `remoteOptions.extraSshArgs`: passed to `ssh` as they are, one word each, before the
    /// words of `remote`. Only options and their values (no host); checked like `remote`'s.
    pub extra_ssh_args: Vec<String>,
    /// `enableReverseMcp` (default on): a tunnel from the host's loopback to Iris, so the
    /// remote agent can call Iris's MCP tools as its team.
    pub reverse_mcp: bool,
    /// `reverseMcpPort`: the tunnel's port on the host; `None` (the default) lets the host's
    /// sshd pick a free one, so tunnels never collide.
    pub reverse_mcp_port: Option<u16>,
}

impl RemoteConfig {
    /// A remote of `ssh <host>` with every option at its default.
    #[must_use]
    pub fn new(host: &str) -> Self {
        Self {
            command: format!("ssh {host}"),
            ssh_args: vec![host.to_owned()],
            host: host.to_owned(),
            identity: None,
            port: None,
            strict_host_key_checking: None,
            connect_timeout: Duration::from_secs(10),
            server_alive_interval: Duration::from_secs(15),
            server_alive_count_max: 3,
            compression: false,
            forward_agent: false,
            extra_ssh_args: Vec::new(),
            reverse_mcp: true,
            reverse_mcp_port: None,
        }
    }
}

/// `teams.<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamConfig {
    /// The team's name (the map key).
    pub name: TeamName,
    /// Absolute real path of the project directory (for remote teams: the path on the host, as written).
    pub path: PathBuf,
    /// Free text shown in listings.
    pub description: String,
    /// `claudePath`: executable for this team's agent; `~` expanded for local teams.
    pub claude_path: Option<String>,
    /// `idleTimeout` override.
    pub idle_timeout: Option<Duration>,
    /// `spawnTimeout` override.
    pub spawn_timeout: Option<Duration>,
    /// `model`: passed as `--model=<m>`.
    pub model: Option<String>,
    /// `allowedTools`: a list, or a string separated by commas or spaces.
    pub allowed_tools: Vec<String>,
    /// `disallowedTools`: same forms.
    pub disallowed_tools: Vec<String>,
    /// `appendSystemPrompt`: passed as `--append-system-prompt=<text>`.
    pub append_system_prompt: Option<String>,
    /// `permissionMode`: one of `default`, `acceptEdits`, `plan`, `dontAsk`, `bypassPermissions`, `manual`, `auto`.
    pub permission_mode: Option<String>,
    /// `grantPermission`: default `ask`.
    pub grant_permission: GrantPermission,
    /// `env`: extra environment variables for the agent process (values are strings).
    pub env: BTreeMap<String, String>,
    /// `remote` and its options: the team runs on another host, reached with the system `ssh`.
    pub remote: Option<RemoteConfig>,
    /// `color`: `#rrggbb` for the dashboard.
    pub color: Option<String>,
    /// `token`: a bearer token that identifies this team over HTTP (`Authorization: Bearer`).
    pub token: Option<Secret>,
    /// `permissions`: the team's own rules, checked after `settings.permissions` (a deny in
    /// either wins). Applies to running agents from their next request.
    pub permissions: Arc<Rules>,
    /// `approvalTimeout` override.
    pub approval_timeout: Option<Duration>,
    /// `budget`: spending limits (none by default).
    pub budget: Budget,
}

impl TeamConfig {
    /// A local team at `path` (taken as given: canonicalize it first) with every optional key
    /// at its default, as the loader would produce for a team that sets only `path`.
    #[must_use]
    pub fn new(name: TeamName, path: PathBuf) -> Self {
        Self {
            name,
            path,
            description: String::new(),
            claude_path: None,
            idle_timeout: None,
            spawn_timeout: None,
            model: None,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            append_system_prompt: None,
            permission_mode: None,
            grant_permission: GrantPermission::Ask,
            env: BTreeMap::new(),
            remote: None,
            color: None,
            token: None,
            permissions: Arc::default(),
            approval_timeout: None,
            budget: Budget::default(),
        }
    }
}
