//! Finding, reading, interpolating and validating the config file.
//!
//! Pipeline: read the file; parse it as one YAML 1.2 document into a positioned tree
//! (`tree`); walk that tree with the schema below, interpolating `${VAR}` in each scalar as it
//! is read (`interpolate`) and converting the text to the type the key expects; collect every
//! problem on the way. The result is either a [`Config`] (plus warnings) or a
//! [`ConfigError::Invalid`] listing all problems, one per line.
//!
//! Values that are null, or text that is empty after interpolation, count as "not set" for
//! optional keys, so `maxProcesses: ${IRIS_MAX_PROCESSES:-}` falls back to the default.
//! Keys are never interpolated. Keys of Iris MCP that have no effect here are accepted with one
//! [`ConfigWarning`] each and their values are not evaluated. Top-level keys starting with `x-`
//! are ignored, so that they can hold YAML anchors (`x-defaults: &defaults {...}`) which teams
//! merge with `<<: *defaults`.
//!
//! A team whose `remote` is set (not null or empty after interpolation) runs on another host
//! (`ssh`): `remote` is split and checked by `ssh`, its `path` and `claudePath` are kept as
//! written (they are the host's), and `remoteOptions`, `enableReverseMcp` and
//! `reverseMcpPort` are read; on a local team those three are a warning each and not read.

mod interpolate;
mod ssh;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::interpolate::interpolate;
use self::tree::{Entry, Kind, Node};
use super::{
    Budget, Config, DatabaseConfig, ForwardFallback, GrantPermission, RemoteConfig, Secret,
    Settings, TeamConfig, TeamName,
};
use crate::permissions::{Rule, Rules};

/// Where something is in the config file (1-based, in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, such as `teams.backend.path` (empty for the document itself). Keys that
    /// are not plain words are quoted: `teams."v1.2".path`.
    pub key: String,
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// What is wrong, lowercase, without the key.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// A key that was accepted but has no effect in this build, or that otherwise deserves a word.
/// The file it refers to is [`Config::source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted key path, such as `settings.sessionInitTimeout`.
    pub key: String,
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// Why the key deserves a word.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why no [`Config`] could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `IRIS_HOME` is unset and the home directory for its default `~/.iris` is unknown.
    #[error(
        "cannot find the home directory for the default IRIS_HOME (~/.iris): set HOME or IRIS_HOME"
    )]
    NoHome,
    /// `IRIS_CONFIG_PATH` names a file that does not exist.
    #[error("config file {} (from IRIS_CONFIG_PATH) does not exist", .path.display())]
    NotFound {
        /// The absolute path IRIS_CONFIG_PATH resolved to.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, not UTF-8, a directory, ...).
    #[error("cannot read config file {}: {error}", .path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error, already part of the message (so it is not also a `source`).
        error: io::Error,
    },
    /// The file is not valid YAML.
    #[error("{}{}: invalid YAML: {message}", .path.display(), at(.position))]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// Where the parser stopped.
        position: Option<Position>,
        /// The parser's message.
        message: String,
    },
    /// The file is valid YAML but breaks the schema; every problem found is listed.
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem, in document order.
        problems: Vec<Problem>,
    },
}

fn at(position: &Option<Position>) -> String {
    position
        .map(|position| format!(":{position}"))
        .unwrap_or_default()
}

/// One problem per line, each as `<file>:<line>:<column>: <key>: <message>`.
fn render_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("{}{}: {problem}", path.display(), at(&problem.position)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads the config the way `iris` does at startup, from the process environment.
///
/// The file is `$IRIS_CONFIG_PATH` (made absolute) if set, else `$IRIS_HOME/config.yaml`, else
/// `$IRIS_HOME/config.yml`; `IRIS_HOME` defaults to `~/.iris`. When neither default file
/// exists, this returns [`Config::defaults`] (no teams): not an error.
///
/// # Errors
/// [`ConfigError::NotFound`] when `IRIS_CONFIG_PATH` names a missing file, and every error of
/// [`load_from_path`].
pub fn load() -> Result<Config, ConfigError> {
    load_with_env(&process_env())
}

/// Where the configuration file is (or would be created) and `IRIS_HOME`, without reading it:
/// `$IRIS_CONFIG_PATH`, else an existing `$IRIS_HOME/config.yaml` or `config.yml`, else
/// `$IRIS_HOME/config.yaml`.
///
/// # Errors
/// [`ConfigError::NoHome`] when neither `IRIS_HOME` nor a home directory is known.
pub fn locate() -> Result<(PathBuf, PathBuf), ConfigError> {
    let env = process_env();
    let (home, iris_home) = homes(&env)?;
    if let Some(path) = env
        .get("IRIS_CONFIG_PATH")
        .filter(|value| !value.is_empty())
    {
        return Ok((
            make_absolute(&expand_home_prefix(path, home.as_deref())),
            iris_home,
        ));
    }
    let yml = iris_home.join("config.yml");
    let file = if !iris_home.join("config.yaml").exists() && yml.exists() {
        yml
    } else {
        iris_home.join("config.yaml")
    };
    Ok((file, iris_home))
}

/// The user's home (if known) and `IRIS_HOME` (`$IRIS_HOME`, else `~/.iris`), absolute.
fn homes(env: &HashMap<String, String>) -> Result<(Option<PathBuf>, PathBuf), ConfigError> {
    let home = home_dir(env);
    let iris_home = match env.get("IRIS_HOME").filter(|value| !value.is_empty()) {
        Some(dir) => make_absolute(&expand_home_prefix(dir, home.as_deref())),
        None => home.as_ref().ok_or(ConfigError::NoHome)?.join(".iris"),
    };
    Ok((home, iris_home))
}

/// [`load`] with the environment given explicitly (tests must not mutate the process's).
pub(crate) fn load_with_env(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let (home, iris_home) = homes(env)?;
    if let Some(path) = env
        .get("IRIS_CONFIG_PATH")
        .filter(|value| !value.is_empty())
    {
        let path = make_absolute(&expand_home_prefix(path, home.as_deref()));
        return match path.try_exists() {
            Ok(true) => load_file(&path, &iris_home, env),
            Ok(false) => Err(ConfigError::NotFound { path }),
            Err(error) => Err(ConfigError::Read { path, error }),
        };
    }
    for name in ["config.yaml", "config.yml"] {
        let path = iris_home.join(name);
        match path.try_exists() {
            Ok(true) => return load_file(&path, &iris_home, env),
            Ok(false) => {}
            Err(error) => return Err(ConfigError::Read { path, error }),
        }
    }
    Ok(Config::defaults(iris_home))
}

/// Loads and validates the config file at `path`, interpolating from the process environment.
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Syntax`] for invalid
/// YAML, [`ConfigError::Invalid`] listing every schema problem.
pub fn load_from_path(path: &Path, iris_home: &Path) -> Result<Config, ConfigError> {
    load_file(path, iris_home, &process_env())
}

fn load_file(
    path: &Path,
    iris_home: &Path,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let path = make_absolute(path);
    let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
        path: path.clone(),
        error,
    })?;
    load_from_str(&text, &path, iris_home, env)
}

/// Validates config `text`.
///
/// `origin` is the file the text came from: it names the file in messages and its directory is
/// the base for relative team paths. `env` supplies `${VAR}` values (and `HOME` for `~`, falling
/// back to the system's home directory).
///
/// # Errors
/// [`ConfigError::Syntax`] for invalid YAML, [`ConfigError::Invalid`] listing every schema
/// problem.
pub fn load_from_str(
    text: &str,
    origin: &Path,
    iris_home: &Path,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let origin = make_absolute(origin);
    let iris_home = make_absolute(iris_home);
    let root = tree::parse(text).map_err(|error| ConfigError::Syntax {
        path: origin.clone(),
        position: error.position,
        message: error.message,
    })?;
    let mut loader = Loader {
        source: text,
        env,
        home: home_dir(env),
        base_dir: origin.parent().map_or_else(PathBuf::new, Path::to_path_buf),
        iris_home: &iris_home,
        problems: Vec::new(),
        warnings: Vec::new(),
        tokens: Vec::new(),
    };
    let (settings, teams, database) = loader.document(&root);
    if !loader.problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: origin,
            problems: loader.problems,
        });
    }
    Ok(Config {
        source: Some(origin),
        warnings: loader.warnings,
        iris_home,
        settings,
        teams,
        database,
    })
}

/// The process environment, skipping variables that are not UTF-8 (they cannot be referenced).
pub(crate) fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

fn home_dir(env: &HashMap<String, String>) -> Option<PathBuf> {
    env.get("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(std::env::home_dir)
}

/// `~` and `~/...` in an environment variable (a quoted shell assignment leaves them as is).
fn expand_home_prefix(value: &str, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') => home.join(&rest[1..]),
        _ => PathBuf::from(value),
    }
}

fn make_absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

// ------------------------------------------------------------------------------------------
// The schema.

const TOP_KEYS: &[&str] = &["settings", "teams", "database", "dashboard"];

const SETTINGS_KEYS: &[&str] = &[
    "spawnTimeout",
    "responseTimeout",
    "idleTimeout",
    "maxProcesses",
    "healthCheckInterval",
    "httpPort",
    "claudePath",
    "maxQueuePerPair",
    "poolWaitTimeout",
    "stopGracePeriod",
    "wakeConcurrency",
    "maxLineBytes",
    "hotReloadConfig",
    "httpToken",
    "maxHttpSessions",
    "httpSessionIdleTimeout",
    "removedTeamGracePeriod",
    "permissions",
    "approvalTimeout",
    "forwardFallback",
    "maxCallDepth",
    "daemonIdleTimeout",
];

const NO_SESSION_INIT: &str = "Iris creates sessions without a one-shot `claude --print` run, so there is nothing to time out";
const NO_SESSION_MCP_FILE: &str = "Iris writes each agent's MCP config itself (a private file under $IRIS_HOME/run/agents, naming the agent's own Iris URL), so this key has no effect";

const SETTINGS_IGNORED: &[(&str, &str)] = &[
    ("sessionInitTimeout", NO_SESSION_INIT),
    (
        "defaultTransport",
        "the transport is chosen on the command line: `iris serve` (HTTP) or `iris serve --stdio`",
    ),
    (
        "wonderLoggerConfig",
        "Iris logs through tracing; choose the level with RUST_LOG",
    ),
    ("sessionMcpEnabled", NO_SESSION_MCP_FILE),
    ("sessionMcpPath", NO_SESSION_MCP_FILE),
    (
        "permissionTimeout",
        "Iris MCP never read it (its timeout was always 30 s); Iris's is settings.approvalTimeout",
    ),
];

const DATABASE_KEYS: &[&str] = &[
    "path",
    "inMemory",
    "retentionDays",
    "maxStoredTextBytes",
    "maxTranscriptEntries",
];

/// Longest accepted `database.retentionDays`: a century, far beyond any real use, and small
/// enough that the duration in milliseconds fits every integer type the store uses.
const MAX_RETENTION_DAYS: f64 = 36_500.0;

const NO_DASHBOARD_SETTINGS: &str = "the dashboard is served on the MCP HTTP port (settings.httpPort) and has no settings of its own";

const DASHBOARD_KEYS: &[&str] = &["enabled"];

const DASHBOARD_IGNORED: &[(&str, &str)] = &[
    ("host", NO_DASHBOARD_SETTINGS),
    ("http", NO_DASHBOARD_SETTINGS),
    ("https", NO_DASHBOARD_SETTINGS),
    ("selfsigned", NO_DASHBOARD_SETTINGS),
    ("certPath", NO_DASHBOARD_SETTINGS),
    ("keyPath", NO_DASHBOARD_SETTINGS),
];

const BUDGET_KEYS: &[&str] = &["usdPerDay", "turnsPerHour"];

const TEAM_KEYS: &[&str] = &[
    "path",
    "description",
    "claudePath",
    "idleTimeout",
    "spawnTimeout",
    "model",
    "allowedTools",
    "disallowedTools",
    "appendSystemPrompt",
    "permissionMode",
    "grantPermission",
    "env",
    "remote",
    "color",
    "token",
    "permissions",
    "approvalTimeout",
    "budget",
    "remoteOptions",
    "enableReverseMcp",
    "reverseMcpPort",
    "allowHttp",
    "ssh2",
];

const TEAM_IGNORED: &[(&str, &str)] = &[
    ("sessionInitTimeout", NO_SESSION_INIT),
    ("sessionMcpEnabled", NO_SESSION_MCP_FILE),
    ("sessionMcpPath", NO_SESSION_MCP_FILE),
    ("mcpConfigScript", NO_SESSION_MCP_FILE),
];

const REMOTE_OPTION_KEYS: &[&str] = &[
    "identity",
    "port",
    "strictHostKeyChecking",
    "connectTimeout",
    "serverAliveInterval",
    "serverAliveCountMax",
    "compression",
    "forwardAgent",
    "extraSshArgs",
    "passphrase",
];

/// `remoteOptions`, `enableReverseMcp` and `reverseMcpPort` of a team without `remote`.
const NEEDS_REMOTE: &str = "has no effect without remote";
const NO_PASSPHRASE: &str =
    "is ignored: ssh reads passphrases from your ssh agent (ssh-add); Iris never stores one";
const NO_ALLOW_HTTP: &str =
    "has no effect: the tunnel carries plain HTTP on the host's loopback; allowHttp is not needed";
const NO_SSH2: &str = "has no effect: remote teams always use the system ssh client";

/// The keys of a `permissions` mapping.
const PERMISSION_LISTS: &[&str] = &["allow", "ask", "deny"];

/// The shortest bearer token accepted.
const MIN_TOKEN_CHARS: usize = 16;

/// Values of `permissionMode`, as `claude --permission-mode` accepts them.
const PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "dontAsk",
    "bypassPermissions",
    "manual",
    "auto",
];

const DURATION_FORMS: &str =
    "a duration: milliseconds, or a whole number with a unit ms, s, m or h, such as \"30s\"";

/// Walks the tree once, collecting problems and warnings.
struct Loader<'a> {
    /// The YAML text, to quote numbers as written.
    source: &'a str,
    env: &'a HashMap<String, String>,
    /// For `~`; `None` when unknown (then `~` is an error where it is used).
    home: Option<PathBuf>,
    /// The config file's directory: base of relative team paths.
    base_dir: PathBuf,
    /// Base of a relative `database.path`.
    iris_home: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<ConfigWarning>,
    /// Every bearer token read, with its key and position: no two may be the same.
    tokens: Vec<(String, Option<Position>, Secret)>,
}

/// A scalar, interpolated, with how to show it in a message.
struct Scalar {
    kind: ScalarKind,
    /// The text: interpolated for strings, as written for numbers and booleans.
    text: String,
    /// For messages: `"abc"`, `"abc" (from "${X}")`, or a number as written.
    shown: String,
}

enum ScalarKind {
    Bool(bool),
    Int(i128),
    Float,
    Text,
}

impl Loader<'_> {
    fn problem(&mut self, key: &str, position: Option<Position>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            position,
            message: message.into(),
        });
    }

    fn warn(&mut self, key: &str, position: Option<Position>, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            key: key.to_owned(),
            position,
            message: message.into(),
        });
    }

    fn document(
        &mut self,
        root: &Node,
    ) -> (Settings, BTreeMap<TeamName, TeamConfig>, DatabaseConfig) {
        let mut settings = Settings::default();
        let mut teams = BTreeMap::new();
        let mut database = DatabaseConfig::file(self.iris_home.join("data").join("iris.db"));
        let mut dashboard_enabled = None;
        let expected = "a mapping with 'settings', 'teams', 'database' or 'dashboard'";
        for entry in self.mapping(root, "", expected) {
            match entry.key.as_str() {
                "settings" => settings = self.settings(&entry.value),
                "teams" => teams = self.teams(&entry.value),
                "database" => database = self.database(&entry.value, database),
                "dashboard" => dashboard_enabled = self.dashboard(&entry.value),
                // Docker Compose's convention: a place for YAML anchors shared by teams.
                key if key.starts_with("x-") => {}
                _ => self.other_key(&child("", &entry.key), entry, TOP_KEYS, &[]),
            }
        }
        if let Some(enabled) = dashboard_enabled {
            settings.dashboard_enabled = enabled;
        }
        self.distinct_tokens();
        (settings, teams, database)
    }

    fn settings(&mut self, node: &Node) -> Settings {
        let mut settings = Settings::default();
        for entry in self.mapping(node, "settings", "a mapping of settings") {
            let key = child("settings", &entry.key);
            let value = &entry.value;
            match entry.key.as_str() {
                "spawnTimeout" => set(&mut settings.spawn_timeout, self.duration(value, &key)),
                "responseTimeout" => {
                    set(&mut settings.response_timeout, self.duration(value, &key));
                }
                "idleTimeout" => set(&mut settings.idle_timeout, self.duration(value, &key)),
                "maxProcesses" => set(&mut settings.max_processes, self.count(value, &key, 1)),
                "healthCheckInterval" => {
                    set(
                        &mut settings.health_check_interval,
                        self.duration(value, &key),
                    );
                }
                "httpPort" => set(&mut settings.http_port, self.port(value, &key)),
                "claudePath" => {
                    settings.claude_path = self
                        .string(value, &key)
                        .and_then(|raw| self.program_path(raw, &key, value.position));
                }
                "maxQueuePerPair" => {
                    set(&mut settings.max_queue_per_pair, self.count(value, &key, 1));
                }
                "poolWaitTimeout" => {
                    set(&mut settings.pool_wait_timeout, self.duration(value, &key));
                }
                "stopGracePeriod" => {
                    set(&mut settings.stop_grace_period, self.duration(value, &key));
                }
                "wakeConcurrency" => {
                    set(&mut settings.wake_concurrency, self.count(value, &key, 1));
                }
                "maxLineBytes" => {
                    set(&mut settings.max_line_bytes, self.count(value, &key, 1024));
                }
                "hotReloadConfig" => {
                    set(&mut settings.hot_reload_config, self.boolean(value, &key));
                }
                "httpToken" => settings.http_token = self.token(value, &key),
                "maxHttpSessions" => {
                    set(&mut settings.max_http_sessions, self.count(value, &key, 1));
                }
                "httpSessionIdleTimeout" => set(
                    &mut settings.http_session_idle_timeout,
                    self.duration(value, &key),
                ),
                "removedTeamGracePeriod" => set(
                    &mut settings.removed_team_grace_period,
                    self.duration(value, &key),
                ),
                "permissions" => settings.permissions = Arc::new(self.permissions(value, &key)),
                "approvalTimeout" => {
                    set(&mut settings.approval_timeout, self.duration(value, &key));
                }
                "forwardFallback" => {
                    set(&mut settings.forward_fallback, self.fallback(value, &key));
                }
                "maxCallDepth" => set(&mut settings.max_call_depth, self.count(value, &key, 1)),
                "daemonIdleTimeout" => {
                    set(
                        &mut settings.daemon_idle_timeout,
                        self.duration_or_zero(value, &key),
                    );
                }
                _ => self.other_key(&key, entry, SETTINGS_KEYS, SETTINGS_IGNORED),
            }
        }
        settings
    }

    fn database(&mut self, node: &Node, mut database: DatabaseConfig) -> DatabaseConfig {
        for entry in self.mapping(node, "database", "a mapping of database settings") {
            let key = child("database", &entry.key);
            let value = &entry.value;
            match entry.key.as_str() {
                "path" => {
                    let Some(raw) = self.string(value, &key) else {
                        continue;
                    };
                    match self.expand_tilde(&raw) {
                        Ok(path) => database.path = self.iris_home.join(path),
                        Err(message) => self.problem(&key, value.position, message),
                    }
                }
                "inMemory" => set(&mut database.in_memory, self.boolean(value, &key)),
                "retentionDays" => set(&mut database.retention, self.days(value, &key)),
                "maxStoredTextBytes" => {
                    let min = DatabaseConfig::MIN_MAX_TEXT_BYTES as u64;
                    set(&mut database.max_text_bytes, self.count(value, &key, min));
                }
                "maxTranscriptEntries" => {
                    set(
                        &mut database.max_transcript_entries,
                        self.count(value, &key, 0),
                    );
                }
                _ => self.other_key(&key, entry, DATABASE_KEYS, &[]),
            }
        }
        database
    }

    /// `dashboard.enabled`, if given; Iris MCP's other dashboard keys are warned about.
    fn dashboard(&mut self, node: &Node) -> Option<bool> {
        let mut enabled = None;
        for entry in self.mapping(node, "dashboard", "a mapping of dashboard settings") {
            let key = child("dashboard", &entry.key);
            match entry.key.as_str() {
                "enabled" => enabled = self.boolean(&entry.value, &key).or(enabled),
                _ => self.other_key(&key, entry, DASHBOARD_KEYS, DASHBOARD_IGNORED),
            }
        }
        enabled
    }

    fn teams(&mut self, node: &Node) -> BTreeMap<TeamName, TeamConfig> {
        let mut teams = BTreeMap::new();
        for entry in self.mapping(node, "teams", "a mapping of team name to team settings") {
            let key = child("teams", &entry.key);
            let name = match TeamName::new(&entry.key) {
                Ok(name) => Some(name),
                Err(error) => {
                    self.problem(&key, entry.position, error.to_string());
                    None
                }
            };
            if let Some(team) = self.team(&key, entry, name) {
                teams.insert(team.name.clone(), team);
            }
        }
        teams
    }

    /// Validates one team's body even when its name is invalid, so all problems show at once.
    fn team(&mut self, key: &str, entry: &Entry, name: Option<TeamName>) -> Option<TeamConfig> {
        let expected = "a mapping of team settings (at least 'path')";
        match entry.value.kind {
            Kind::Map(_) => {}
            Kind::Null => {
                let position = entry.value.position.or(entry.position);
                self.problem(key, position, format!("expected {expected}, got nothing"));
                return None;
            }
            _ => {
                // Reports the wrong kind; a missing `path` would only repeat it.
                self.mapping(&entry.value, key, expected);
                return None;
            }
        }
        let mut path: Option<(String, String, Option<Position>)> = None;
        // What to report when `path` ends up without a value.
        let mut path_problem = Some((
            child(key, "path"),
            entry.position,
            "missing required key: the team's project directory",
        ));
        let mut claude_path: Option<(String, String, Option<Position>)> = None;
        // Whether the team runs on another host, known before its keys are read so that the
        // keys that depend on it are read (and their problems reported) in document order.
        let remote_written = self.remote_written(&entry.value);
        let mut remote: Option<RemoteConfig> = None;
        // `remoteOptions`, `enableReverseMcp` and `reverseMcpPort`, read into the defaults.
        let mut remote_settings = RemoteConfig::new("");
        let mut reverse_port_position = None;
        let mut team = TeamDraft::default();
        for field in self.mapping(&entry.value, key, expected) {
            let field_key = child(key, &field.key);
            let value = &field.value;
            match field.key.as_str() {
                "path" => {
                    let reported = self.problems.len();
                    path = self
                        .string(value, &field_key)
                        .map(|raw| (raw, field_key.clone(), value.position));
                    // Null or empty; a wrong type or a failed interpolation is already reported.
                    let message = if value.source_text(self.source) == Some("~") {
                        "is null: a bare ~ means null in YAML; write \"~\" for the home directory"
                    } else {
                        "must not be empty: it is the team's project directory"
                    };
                    path_problem = (path.is_none() && self.problems.len() == reported).then_some((
                        field_key,
                        value.position,
                        message,
                    ));
                }
                "description" => team.description = self.string(value, &field_key),
                "claudePath" => {
                    claude_path = self
                        .string(value, &field_key)
                        .map(|raw| (raw, field_key, value.position));
                }
                "idleTimeout" => team.idle_timeout = self.duration(value, &field_key),
                "spawnTimeout" => team.spawn_timeout = self.duration(value, &field_key),
                "model" => team.model = self.string(value, &field_key),
                "allowedTools" => team.allowed_tools = self.tools(value, &field_key),
                "disallowedTools" => team.disallowed_tools = self.tools(value, &field_key),
                "appendSystemPrompt" => team.append_system_prompt = self.string(value, &field_key),
                "permissionMode" => team.permission_mode = self.permission_mode(value, &field_key),
                "grantPermission" => team.grant_permission = self.grant(value, &field_key),
                "env" => team.env = self.env_map(value, &field_key),
                "remote" => remote = self.remote(value, &field_key),
                "remoteOptions" | "enableReverseMcp" | "reverseMcpPort" if !remote_written => {
                    if !matches!(value.kind, Kind::Null) {
                        self.warn(&field_key, field.position, NEEDS_REMOTE);
                    }
                }
                "remoteOptions" => self.remote_options(value, &field_key, &mut remote_settings),
                "enableReverseMcp" => {
                    set(
                        &mut remote_settings.reverse_mcp,
                        self.boolean(value, &field_key),
                    );
                }
                "reverseMcpPort" => {
                    remote_settings.reverse_mcp_port = self.port(value, &field_key);
                    reverse_port_position = Some((field_key, field.position));
                }
                "allowHttp" => self.warn(&field_key, field.position, NO_ALLOW_HTTP),
                "ssh2" => self.warn(&field_key, field.position, NO_SSH2),
                "color" => team.color = self.color(value, &field_key),
                "token" => team.token = self.token(value, &field_key),
                "permissions" => team.permissions = self.permissions(value, &field_key),
                "approvalTimeout" => team.approval_timeout = self.duration(value, &field_key),
                "budget" => team.budget = self.budget(value, &field_key),
                _ => self.other_key(&field_key, field, TEAM_KEYS, TEAM_IGNORED),
            }
        }
        if let Some((port_key, position)) = reverse_port_position
            && remote_settings.reverse_mcp_port.is_some()
            && !remote_settings.reverse_mcp
        {
            self.warn(
                &port_key,
                position,
                "has no effect with enableReverseMcp: false",
            );
        }
        let Some((raw_path, path_key, path_position)) = path else {
            if let Some((path_key, position, message)) = path_problem {
                self.problem(&path_key, position, message);
            }
            return None;
        };
        let claude_path = match claude_path {
            Some((raw, _, _)) if remote_written => Some(raw),
            Some((raw, claude_key, position)) => self.program_path(raw, &claude_key, position),
            None => None,
        };
        // A remote path lives on the remote host: keep it as written.
        let path = if remote_written {
            PathBuf::from(raw_path)
        } else {
            self.local_dir(&raw_path, &path_key, path_position)?
        };
        Some(TeamConfig {
            name: name?,
            path,
            description: team.description.unwrap_or_default(),
            claude_path,
            idle_timeout: team.idle_timeout,
            spawn_timeout: team.spawn_timeout,
            model: team.model,
            allowed_tools: team.allowed_tools,
            disallowed_tools: team.disallowed_tools,
            append_system_prompt: team.append_system_prompt,
            permission_mode: team.permission_mode,
            grant_permission: team.grant_permission.unwrap_or(GrantPermission::Ask),
            env: team.env,
            remote: remote.map(|remote| RemoteConfig {
                command: remote.command,
                ssh_args: remote.ssh_args,
                host: remote.host,
                ..remote_settings
            }),
            color: team.color,
            token: team.token,
            permissions: Arc::new(team.permissions),
            approval_timeout: team.approval_timeout,
            budget: team.budget,
        })
    }

    // --------------------------------------------------------------------------------------
    // Keys.

    /// The entries of a mapping, first occurrence of each key, in document order. Null is an
    /// empty mapping; duplicates and other kinds are reported.
    fn mapping<'n>(&mut self, node: &'n Node, key: &str, expected: &str) -> Vec<&'n Entry> {
        match &node.kind {
            Kind::Null => Vec::new(),
            Kind::Map(entries) => {
                let mut first_seen: HashMap<&str, Option<Position>> = HashMap::new();
                let mut unique = Vec::with_capacity(entries.len());
                for entry in entries {
                    if let Some(first) = first_seen.get(entry.key.as_str()) {
                        let line = first
                            .map(|position| format!(" (first written on line {})", position.line))
                            .unwrap_or_default();
                        self.problem(
                            &child(key, &entry.key),
                            entry.position,
                            format!("duplicate key{line}"),
                        );
                    } else {
                        first_seen.insert(&entry.key, entry.position);
                        unique.push(entry);
                    }
                }
                unique
            }
            _ => {
                let shown = self.describe(node);
                self.problem(
                    key,
                    node.position,
                    format!("expected {expected}, got {shown}"),
                );
                Vec::new()
            }
        }
    }

    /// A key that is not in the match: an accepted Iris MCP key without effect (a warning) or
    /// an unknown key (an error, with the nearest known key when one is close).
    fn other_key(&mut self, key: &str, entry: &Entry, known: &[&str], ignored: &[(&str, &str)]) {
        if let Some((_, reason)) = ignored.iter().find(|(name, _)| *name == entry.key) {
            self.warn(
                key,
                entry.position,
                format!("has no effect in this build: {reason}"),
            );
            return;
        }
        let accepted = known
            .iter()
            .copied()
            .chain(ignored.iter().map(|(name, _)| *name));
        let message = match nearest(&entry.key, accepted) {
            Some(suggestion) => format!("unknown key; did you mean '{suggestion}'?"),
            None => {
                let listed: Vec<&str> = if known.is_empty() {
                    ignored.iter().map(|(name, _)| *name).collect()
                } else {
                    known.to_vec()
                };
                format!("unknown key (known keys: {})", listed.join(", "))
            }
        };
        self.problem(key, entry.position, message);
    }

    // --------------------------------------------------------------------------------------
    // Scalars.

    /// Reads a scalar and interpolates it. `None` for null, and for other kinds or failed
    /// interpolation (both reported).
    fn scalar(&mut self, node: &Node, key: &str, expected: &str) -> Option<Scalar> {
        let source = self.source;
        let as_written = |fallback: String| {
            node.source_text(source)
                .filter(|text| {
                    !text.is_empty()
                        && !text.starts_with(['"', '\'', '!', '&', '*'])
                        && !text.contains(char::is_whitespace)
                })
                .map_or(fallback, str::to_owned)
        };
        let (kind, text) = match &node.kind {
            Kind::Null => return None,
            Kind::Str(raw) => {
                return match interpolate(raw, self.env) {
                    Ok(None) => Some(Scalar {
                        kind: ScalarKind::Text,
                        shown: format!("{raw:?}"),
                        text: raw.clone(),
                    }),
                    Ok(Some(value)) => Some(Scalar {
                        kind: ScalarKind::Text,
                        shown: format!("{value:?} (from {raw:?})"),
                        text: value,
                    }),
                    Err(error) => {
                        self.problem(key, node.position, error.to_string());
                        None
                    }
                };
            }
            Kind::Bool(value) => (ScalarKind::Bool(*value), as_written(value.to_string())),
            Kind::Int(value) => (ScalarKind::Int(*value), as_written(value.to_string())),
            Kind::Float(value) => (ScalarKind::Float, as_written(value.to_string())),
            Kind::Seq(_) | Kind::Map(_) => {
                let shown = self.describe(node);
                self.problem(
                    key,
                    node.position,
                    format!("expected {expected}, got {shown}"),
                );
                return None;
            }
        };
        Some(Scalar {
            kind,
            shown: text.clone(),
            text,
        })
    }

    /// How a node reads in a "got ..." message (before interpolation).
    fn describe(&self, node: &Node) -> String {
        match &node.kind {
            Kind::Null => "nothing (null)".to_owned(),
            Kind::Str(text) => format!("{text:?}"),
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => node
                .source_text(self.source)
                .unwrap_or("a scalar")
                .to_owned(),
        }
    }

    /// A string; numbers and booleans are taken as written. Empty counts as not set.
    fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        let scalar = self.scalar(node, key, "a string")?;
        (!scalar.text.is_empty()).then_some(scalar.text)
    }

    /// A whole number >= 0, from a YAML integer or from text holding one.
    fn unsigned(&mut self, node: &Node, key: &str, expected: &str) -> Option<u64> {
        let scalar = self.scalar(node, key, expected)?;
        let parsed = match scalar.kind {
            ScalarKind::Int(value) => u64::try_from(value).ok(),
            ScalarKind::Text => {
                let text = scalar.text.trim();
                if text.is_empty() {
                    return None;
                }
                text.bytes()
                    .all(|byte| byte.is_ascii_digit())
                    .then(|| text.parse().ok())
                    .flatten()
            }
            ScalarKind::Bool(_) | ScalarKind::Float => None,
        };
        if parsed.is_none() {
            self.problem(
                key,
                node.position,
                format!("expected {expected}, got {}", scalar.shown),
            );
        }
        parsed
    }

    fn count(&mut self, node: &Node, key: &str, min: u64) -> Option<usize> {
        let value = self.unsigned(node, key, "a positive integer")?;
        if value < min {
            self.problem(
                key,
                node.position,
                format!("must be at least {min}, got {value}"),
            );
            return None;
        }
        let count = usize::try_from(value).ok();
        if count.is_none() {
            self.problem(key, node.position, format!("{value} is too large"));
        }
        count
    }

    fn port(&mut self, node: &Node, key: &str) -> Option<u16> {
        let expected = "a port number from 1 to 65535";
        let value = self.unsigned(node, key, expected)?;
        let port = u16::try_from(value).ok().filter(|&port| port > 0);
        if port.is_none() {
            self.problem(
                key,
                node.position,
                format!("expected {expected}, got {value}"),
            );
        }
        port
    }

    /// `true` or `false` (any YAML 1.2 spelling), also as interpolated text. Nothing else.
    fn boolean(&mut self, node: &Node, key: &str) -> Option<bool> {
        let scalar = self.scalar(node, key, "true or false")?;
        let value = match scalar.kind {
            ScalarKind::Bool(value) => Some(value),
            ScalarKind::Text => match scalar.text.trim() {
                "" => return None,
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            ScalarKind::Int(_) | ScalarKind::Float => None,
        };
        if value.is_none() {
            self.problem(
                key,
                node.position,
                format!("expected true or false, got {}", scalar.shown),
            );
        }
        value
    }

    fn duration(&mut self, node: &Node, key: &str) -> Option<Duration> {
        self.duration_from(node, key, false)
    }

    /// A duration that may be 0 (`daemonIdleTimeout: 0`: at once).
    fn duration_or_zero(&mut self, node: &Node, key: &str) -> Option<Duration> {
        self.duration_from(node, key, true)
    }

    fn duration_from(&mut self, node: &Node, key: &str, zero: bool) -> Option<Duration> {
        let scalar = self.scalar(node, key, DURATION_FORMS)?;
        let parsed = match scalar.kind {
            ScalarKind::Int(millis) => u64::try_from(millis)
                .map(Duration::from_millis)
                .map_err(|_| format!("expected {DURATION_FORMS}, got {}", scalar.shown)),
            ScalarKind::Text if scalar.text.trim().is_empty() => return None,
            ScalarKind::Text => parse_duration(scalar.text.trim())
                .ok_or_else(|| format!("expected {DURATION_FORMS}, got {}", scalar.shown)),
            ScalarKind::Bool(_) | ScalarKind::Float => {
                Err(format!("expected {DURATION_FORMS}, got {}", scalar.shown))
            }
        };
        match parsed {
            Ok(duration) if duration.is_zero() && !zero => {
                self.problem(
                    key,
                    node.position,
                    format!("must be greater than 0, got {}", scalar.shown),
                );
                None
            }
            Ok(duration) => Some(duration),
            Err(message) => {
                self.problem(key, node.position, message);
                None
            }
        }
    }

    /// A positive number of days (`7`, `0.5`, also as text), at most [`MAX_RETENTION_DAYS`].
    fn days(&mut self, node: &Node, key: &str) -> Option<Duration> {
        let expected = "a positive number of days, such as 30 or 0.5";
        let scalar = self.scalar(node, key, expected)?;
        let text = scalar.text.trim();
        if matches!(scalar.kind, ScalarKind::Text) && text.is_empty() {
            return None;
        }
        let days = match scalar.kind {
            // Precision lost beyond 2^53 days does not matter: such values are rejected.
            ScalarKind::Int(days) => Some(days as f64),
            ScalarKind::Float | ScalarKind::Text => {
                text.parse::<f64>().ok().filter(|days| days.is_finite())
            }
            ScalarKind::Bool(_) => None,
        };
        let Some(days) = days else {
            self.problem(
                key,
                node.position,
                format!("expected {expected}, got {}", scalar.shown),
            );
            return None;
        };
        if days <= 0.0 || days > MAX_RETENTION_DAYS {
            self.problem(
                key,
                node.position,
                format!(
                    "must be greater than 0 and at most {MAX_RETENTION_DAYS} days, got {}",
                    scalar.shown
                ),
            );
            return None;
        }
        Some(Duration::from_secs_f64(days * 86_400.0))
    }

    // --------------------------------------------------------------------------------------
    // Team values.

    fn budget(&mut self, node: &Node, key: &str) -> Budget {
        let mut budget = Budget::default();
        let expected = "a mapping with usdPerDay and/or turnsPerHour";
        for entry in self.mapping(node, key, expected) {
            let field = child(key, &entry.key);
            match entry.key.as_str() {
                "usdPerDay" => budget.usd_per_day = self.dollars(&entry.value, &field),
                "turnsPerHour" => {
                    budget.turns_per_hour = self
                        .count(&entry.value, &field, 1)
                        .and_then(|turns| u64::try_from(turns).ok());
                }
                _ => self.other_key(&field, entry, BUDGET_KEYS, &[]),
            }
        }
        budget
    }

    fn dollars(&mut self, node: &Node, key: &str) -> Option<f64> {
        let expected = "a positive number of US dollars, such as 5 or 0.5";
        let scalar = self.scalar(node, key, expected)?;
        let text = scalar.text.trim();
        #[allow(clippy::cast_precision_loss, reason = "dollar amounts are small")]
        let value = match scalar.kind {
            ScalarKind::Int(value) => Some(value as f64),
            ScalarKind::Float | ScalarKind::Text => {
                text.parse::<f64>().ok().filter(|value| value.is_finite())
            }
            ScalarKind::Bool(_) => None,
        };
        match value {
            Some(value) if value > 0.0 => Some(value),
            _ => {
                self.problem(
                    key,
                    node.position,
                    format!("expected {expected}, got {}", scalar.shown),
                );
                None
            }
        }
    }

    fn fallback(&mut self, node: &Node, key: &str) -> Option<ForwardFallback> {
        let scalar = self.scalar(node, key, "ask or deny")?;
        match scalar.text.as_str() {
            "ask" => Some(ForwardFallback::Ask),
            "deny" => Some(ForwardFallback::Deny),
            _ => {
                self.problem(
                    key,
                    node.position,
                    format!("expected ask or deny, got {}", scalar.shown),
                );
                None
            }
        }
    }

    fn grant(&mut self, node: &Node, key: &str) -> Option<GrantPermission> {
        let scalar = self.scalar(node, key, "yes, no, ask or forward")?;
        let grant = match scalar.text.as_str() {
            "" => return None,
            "yes" => Some(GrantPermission::Yes),
            "no" => Some(GrantPermission::No),
            "ask" => Some(GrantPermission::Ask),
            "forward" => Some(GrantPermission::Forward),
            _ => None,
        };
        if grant.is_none() {
            self.problem(
                key,
                node.position,
                format!(
                    "expected one of yes, no, ask, forward, got {}",
                    scalar.shown
                ),
            );
        }
        grant
    }

    fn permission_mode(&mut self, node: &Node, key: &str) -> Option<String> {
        let scalar = self.scalar(node, key, "a permission mode")?;
        if scalar.text.is_empty() {
            return None;
        }
        if PERMISSION_MODES.contains(&scalar.text.as_str()) {
            return Some(scalar.text);
        }
        let hint = nearest(&scalar.text, PERMISSION_MODES.iter().copied())
            .map(|mode| format!("; did you mean '{mode}'?"))
            .unwrap_or_default();
        self.problem(
            key,
            node.position,
            format!(
                "expected one of {}, got {}{hint}",
                PERMISSION_MODES.join(", "),
                scalar.shown
            ),
        );
        None
    }

    fn color(&mut self, node: &Node, key: &str) -> Option<String> {
        let scalar = self.scalar(node, key, "a color like \"#336699\"")?;
        if scalar.text.is_empty() {
            return None;
        }
        let valid = scalar
            .text
            .strip_prefix('#')
            .is_some_and(|hex| hex.len() == 6 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()));
        if !valid {
            self.problem(
                key,
                node.position,
                format!(
                    "expected a color like \"#336699\" (#rrggbb), got {}",
                    scalar.shown
                ),
            );
            return None;
        }
        Some(scalar.text)
    }

    /// A bearer token: a string of at least [`MIN_TOKEN_CHARS`] characters, without spaces.
    fn token(&mut self, node: &Node, key: &str) -> Option<Secret> {
        let scalar = self.scalar(node, key, "a token string")?;
        let text = scalar.text;
        let problem = if text.chars().count() < MIN_TOKEN_CHARS {
            Some(format!(
                "is too short ({} characters): a bearer token needs at least {MIN_TOKEN_CHARS} random characters (e.g. from `openssl rand -hex 24`)",
                text.chars().count()
            ))
        } else if !text.chars().all(|c| c.is_ascii_graphic()) {
            Some("may hold only printable ASCII characters without spaces (it travels in an HTTP header)".to_owned())
        } else {
            None
        };
        if let Some(message) = problem {
            self.problem(key, node.position, message);
            return None;
        }
        let secret = Secret::new(text);
        self.tokens
            .push((key.to_owned(), node.position, secret.clone()));
        Some(secret)
    }

    /// Two keys with the same token could not tell their callers apart.
    fn distinct_tokens(&mut self) {
        let tokens = std::mem::take(&mut self.tokens);
        for (index, (key, position, secret)) in tokens.iter().enumerate() {
            if let Some((first, _, _)) =
                tokens[..index].iter().find(|(_, _, other)| other == secret)
            {
                self.problem(
                    key,
                    *position,
                    format!("is the same token as {first}: every token must be different, it is what identifies the caller"),
                );
            }
        }
    }

    /// A list of tool names, or one string of names separated by commas or whitespace (a
    /// space inside parentheses, as in `Bash(git log:*)`, does not separate).
    fn tools(&mut self, node: &Node, key: &str) -> Vec<String> {
        let Kind::Seq(items) = &node.kind else {
            return self
                .scalar(node, key, "a list of tool names or a string of them")
                .map(|scalar| split_tools(&scalar.text))
                .unwrap_or_default();
        };
        let mut tools = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{index}]");
            match self.scalar(item, &item_key, "a tool name") {
                Some(scalar) if scalar.text.trim().is_empty() => {
                    self.problem(&item_key, item.position, "empty tool name");
                }
                Some(scalar) => tools.push(scalar.text.trim().to_owned()),
                // Other kinds and interpolation failures are reported by `scalar`.
                None if matches!(item.kind, Kind::Null) => {
                    self.problem(&item_key, item.position, "empty tool name");
                }
                None => {}
            }
        }
        tools
    }

    /// `permissions: {allow: [...], ask: [...], deny: [...]}`: each rule parsed, each bad
    /// one reported with its key (`...permissions.allow[2]`) and position.
    fn permissions(&mut self, node: &Node, key: &str) -> Rules {
        let mut rules = Rules::default();
        let expected = "a mapping with allow, ask and deny lists of rules";
        for entry in self.mapping(node, key, expected) {
            let list_key = child(key, &entry.key);
            let list = match entry.key.as_str() {
                "allow" => &mut rules.allow,
                "ask" => &mut rules.ask,
                "deny" => &mut rules.deny,
                _ => {
                    self.other_key(&list_key, entry, PERMISSION_LISTS, &[]);
                    continue;
                }
            };
            let items: Vec<&Node> = match &entry.value.kind {
                Kind::Seq(items) => items.iter().collect(),
                Kind::Null => Vec::new(),
                _ => {
                    self.problem(
                        &list_key,
                        entry.value.position.or(entry.position),
                        "expected a list of rules, such as [Read, \"Edit(src/**)\", \"Bash(git status:*)\"]",
                    );
                    continue;
                }
            };
            for (index, item) in items.into_iter().enumerate() {
                let item_key = format!("{list_key}[{index}]");
                let Some(scalar) = self.scalar(item, &item_key, "a rule") else {
                    if matches!(item.kind, Kind::Null) {
                        self.problem(&item_key, item.position, "empty rule");
                    }
                    continue;
                };
                match Rule::parse(&scalar.text) {
                    Ok(rule) => list.push(rule),
                    Err(message) => self.problem(&item_key, item.position, message),
                }
            }
        }
        rules
    }

    fn env_map(&mut self, node: &Node, key: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let expected = "a mapping of environment variable names to values";
        for entry in self.mapping(node, key, expected) {
            let var_key = child(key, &entry.key);
            if !is_env_name(&entry.key) {
                self.problem(
                    &var_key,
                    entry.position,
                    format!(
                        "invalid environment variable name {:?} (use letters, digits and '_', not starting with a digit)",
                        entry.key
                    ),
                );
            } else if entry.key.starts_with(crate::remote::WRAPPER_PREFIX) {
                self.problem(
                    &var_key,
                    entry.position,
                    format!(
                        "names starting with {:?} are reserved for the wrapper that runs a remote team's agent",
                        crate::remote::WRAPPER_PREFIX
                    ),
                );
            }
            if matches!(entry.value.kind, Kind::Null) {
                self.problem(
                    &var_key,
                    entry.value.position.or(entry.position),
                    "expected a value, got nothing (write \"\" for an empty value)",
                );
                continue;
            }
            let Some(scalar) = self.scalar(&entry.value, &var_key, "a string, number or boolean")
            else {
                continue;
            };
            if scalar.text.contains('\0') {
                self.problem(
                    &var_key,
                    entry.value.position,
                    "value contains a NUL character",
                );
                continue;
            }
            env.insert(entry.key.clone(), scalar.text);
        }
        env
    }

    /// Whether `team` (a mapping) sets `remote`: to anything but null or text that is empty
    /// after interpolation (`remote: ${HOST:-}` leaves a team local). A value that fails to
    /// interpolate counts as set; it is reported where `remote` is read.
    fn remote_written(&self, team: &Node) -> bool {
        let Kind::Map(entries) = &team.kind else {
            return false;
        };
        entries
            .iter()
            .find(|entry| entry.key == "remote")
            .is_some_and(|entry| match &entry.value.kind {
                Kind::Null => false,
                Kind::Str(raw) => match interpolate(raw, self.env) {
                    Ok(Some(value)) => !value.is_empty(),
                    Ok(None) => !raw.is_empty(),
                    Err(_) => true,
                },
                _ => true,
            })
    }

    /// `remote`: `ssh [options] host`, split as a shell would (see [`ssh`]). The result has
    /// every other field at its default.
    fn remote(&mut self, node: &Node, key: &str) -> Option<RemoteConfig> {
        let text = self.string(node, key)?;
        match ssh::check_remote(&text, self.home.as_deref()) {
            Ok(command) => Some(RemoteConfig {
                command: text,
                ssh_args: command.args,
                ..RemoteConfig::new(&command.host)
            }),
            Err(message) => {
                self.problem(key, node.position, message);
                None
            }
        }
    }

    /// `remoteOptions` of a remote team, read into `remote`.
    fn remote_options(&mut self, node: &Node, key: &str, remote: &mut RemoteConfig) {
        let expected = "a mapping of ssh options (identity, port, connectTimeout, extraSshArgs...)";
        for entry in self.mapping(node, key, expected) {
            let field = child(key, &entry.key);
            let value = &entry.value;
            match entry.key.as_str() {
                "identity" => remote.identity = self.identity(value, &field),
                "port" => remote.port = self.port(value, &field),
                "strictHostKeyChecking" => {
                    remote.strict_host_key_checking = self.boolean(value, &field);
                }
                "connectTimeout" => set(&mut remote.connect_timeout, self.duration(value, &field)),
                "serverAliveInterval" => {
                    set(
                        &mut remote.server_alive_interval,
                        self.duration(value, &field),
                    );
                }
                "serverAliveCountMax" => {
                    let count = self.count(value, &field, 1).and_then(|count| {
                        let fits = u32::try_from(count).ok();
                        if fits.is_none() {
                            self.problem(&field, value.position, format!("{count} is too large"));
                        }
                        fits
                    });
                    set(&mut remote.server_alive_count_max, count);
                }
                "compression" => set(&mut remote.compression, self.boolean(value, &field)),
                "forwardAgent" => set(&mut remote.forward_agent, self.boolean(value, &field)),
                "extraSshArgs" => remote.extra_ssh_args = self.extra_ssh_args(value, &field),
                // Never evaluated, so the value can appear nowhere.
                "passphrase" => self.warn(&field, entry.position, NO_PASSPHRASE),
                _ => self.other_key(&field, entry, REMOTE_OPTION_KEYS, &[]),
            }
        }
    }

    /// `remoteOptions.identity`: a private key file on this machine, `~` expanded, relative
    /// to the config file's directory. A file that is not there is a warning (ssh goes on
    /// without it), an empty value an error.
    fn identity(&mut self, node: &Node, key: &str) -> Option<PathBuf> {
        let scalar = self.scalar(node, key, "the path of an ssh private key")?;
        if scalar.text.is_empty() {
            self.problem(
                key,
                node.position,
                "must not be empty: it is the path of an ssh private key (leave the key out to use ssh's own)",
            );
            return None;
        }
        if scalar.text.contains('\0') {
            self.problem(key, node.position, "contains a NUL character");
            return None;
        }
        let path = match self.expand_tilde(&scalar.text) {
            Ok(path) => self.base_dir.join(path),
            Err(message) => {
                self.problem(key, node.position, message);
                return None;
            }
        };
        let missing = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => None,
            Ok(_) => Some("is not a file"),
            Err(_) => Some("does not exist"),
        };
        if let Some(missing) = missing {
            self.warn(
                key,
                node.position,
                format!(
                    "{} {missing}: ssh goes on without it, with your other keys",
                    path.display()
                ),
            );
        }
        Some(path)
    }

    /// `remoteOptions.extraSshArgs`: a list of ssh arguments, each one word passed as is;
    /// options and their values only (see [`ssh::check_extra_args`]).
    fn extra_ssh_args(&mut self, node: &Node, key: &str) -> Vec<String> {
        let items = match &node.kind {
            Kind::Seq(items) => items,
            Kind::Null => return Vec::new(),
            _ => {
                let shown = self.describe(node);
                self.problem(
                    key,
                    node.position,
                    format!(
                        "expected a list of ssh arguments, one word each, such as [\"-o\", \"IdentitiesOnly=yes\"], got {shown}"
                    ),
                );
                return Vec::new();
            }
        };
        let mut args = Vec::with_capacity(items.len());
        // Where each of `args` was written.
        let mut places = Vec::with_capacity(items.len());
        let mut all_read = true;
        for (index, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{index}]");
            let problem = match self.scalar(item, &item_key, "an ssh argument") {
                Some(scalar) if scalar.text.is_empty() => Some("empty argument"),
                Some(scalar) if scalar.text.contains('\0') => Some("contains a NUL character"),
                Some(scalar) => {
                    args.push(scalar.text);
                    places.push((item_key, item.position));
                    continue;
                }
                None if matches!(item.kind, Kind::Null) => Some("empty argument"),
                // Reported by `scalar`.
                None => None,
            };
            if let Some(problem) = problem {
                self.problem(&item_key, item.position, problem);
            }
            all_read = false;
        }
        // With an argument missing, options and values would pair up wrongly.
        if all_read && let Err((index, message)) = ssh::check_extra_args(&args) {
            let (item_key, position) = &places[index];
            self.problem(item_key, *position, message);
        }
        args
    }

    // --------------------------------------------------------------------------------------
    // Paths.

    /// `~` and `~/...` expand to the home directory; `~user` is refused.
    fn expand_tilde(&self, raw: &str) -> Result<PathBuf, String> {
        let Some(rest) = raw.strip_prefix('~') else {
            return Ok(PathBuf::from(raw));
        };
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(format!(
                "{raw:?}: '~user' paths are not supported; write the full path"
            ));
        }
        let home = self.home.as_ref().ok_or_else(|| {
            format!("cannot expand '~' in {raw:?}: the home directory is unknown (HOME is not set)")
        })?;
        Ok(home.join(rest.trim_start_matches('/')))
    }

    /// An executable: `~` expanded, otherwise as written (a bare name is looked up on `PATH`
    /// when the agent starts).
    fn program_path(
        &mut self,
        raw: String,
        key: &str,
        position: Option<Position>,
    ) -> Option<String> {
        let program = if raw.starts_with('~') {
            let expanded = match self.expand_tilde(&raw) {
                Ok(path) => path,
                Err(message) => {
                    self.problem(key, position, message);
                    return None;
                }
            };
            match expanded.into_os_string().into_string() {
                Ok(path) => path,
                Err(_) => {
                    self.problem(key, position, "the expanded path is not valid UTF-8");
                    return None;
                }
            }
        } else {
            raw
        };
        // Not an error: it may be installed before the first message. But say so now, not at
        // the first message.
        if let Some(why) = program_problem(&program) {
            self.warn(
                key,
                position,
                format!("{why}: messages to the teams that use it fail until it is fixed"),
            );
        }
        Some(program)
    }

    /// A local project directory: `~` expanded, relative to the config file's directory, must
    /// exist and be a directory; returned canonical (symlinks resolved).
    fn local_dir(&mut self, raw: &str, key: &str, position: Option<Position>) -> Option<PathBuf> {
        let expanded = match self.expand_tilde(raw) {
            Ok(path) => path,
            Err(message) => {
                self.problem(key, position, message);
                return None;
            }
        };
        let absolute = self.base_dir.join(expanded);
        let written = if absolute.as_os_str() == raw {
            String::new()
        } else {
            format!(" (written as {raw:?})")
        };
        let shown = absolute.display();
        let message = match std::fs::canonicalize(&absolute) {
            Ok(real) if real.is_dir() => return Some(real),
            Ok(_) => format!("not a directory: {shown}{written}"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                format!("directory does not exist: {shown}{written}")
            }
            Err(error) if error.kind() == io::ErrorKind::NotADirectory => {
                format!("not a directory: {shown}{written}")
            }
            Err(error) => format!("cannot resolve {shown}{written}: {error}"),
        };
        self.problem(key, position, message);
        None
    }
}

/// Team fields that need no cross-checking, gathered while walking the team's keys.
#[derive(Default)]
struct TeamDraft {
    description: Option<String>,
    idle_timeout: Option<Duration>,
    spawn_timeout: Option<Duration>,
    approval_timeout: Option<Duration>,
    budget: Budget,
    model: Option<String>,
    allowed_tools: Vec<String>,
    disallowed_tools: Vec<String>,
    append_system_prompt: Option<String>,
    permission_mode: Option<String>,
    grant_permission: Option<GrantPermission>,
    env: BTreeMap<String, String>,
    color: Option<String>,
    token: Option<Secret>,
    permissions: Rules,
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// `parent.key`, quoting keys that are not plain words.
fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    let segment = if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        segment
    } else {
        format!("{parent}.{segment}")
    }
}

/// `30000` (milliseconds), `500ms`, `30s`, `5m`, `1h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number: u64 = text[..digits].parse().ok()?;
    let millis = match text[digits..].trim_start() {
        "" | "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => None,
    }?;
    Some(Duration::from_millis(millis))
}

fn split_tools(text: &str) -> Vec<String> {
    let mut tools = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for ch in text.chars() {
        match ch {
            '(' => {
                depth += 1;
                current.push(ch);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                current.push(ch);
            }
            _ if depth == 0 && (ch == ',' || ch.is_whitespace()) => {
                if !current.is_empty() {
                    tools.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(ch),
        }
    }
    if !current.is_empty() {
        tools.push(current);
    }
    tools
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first == b'_' || first.is_ascii_alphabetic())
        && bytes.all(|byte| byte == b'_' || byte.is_ascii_alphanumeric())
}

/// The known key closest to `unknown`, if close enough to be a likely typo. Case, `_` and `-`
/// are ignored (`max_processes` finds `maxProcesses`).
pub(crate) fn nearest<'k>(unknown: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let normalize = |key: &str| -> Vec<char> {
        key.chars()
            .filter(|ch| *ch != '_' && *ch != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let unknown = normalize(unknown);
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        let normalized = normalize(candidate);
        let limit = match normalized.len() {
            0..=3 => 1,
            4..=8 => 2,
            _ => 3,
        };
        let distance = edit_distance(&unknown, &normalized);
        if distance <= limit && best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// What is wrong with `program` as an executable to start (a path, or a name looked up on
/// `PATH`), if anything.
pub(crate) fn program_problem(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    if !program.contains('/') {
        return which::which(program)
            .is_err()
            .then(|| format!("'{program}' is not on PATH"));
    }
    match std::fs::metadata(program) {
        Err(_) => Some(format!("{program} does not exist")),
        Ok(meta) if !meta.is_file() => Some(format!("{program} is not a file")),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Some(format!("{program} is not executable"))
        }
        Ok(_) => None,
    }
}

/// Levenshtein distance (insertions, deletions, substitutions), one row at a time.
fn edit_distance(left: &[char], right: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (i, left_char) in left.iter().enumerate() {
        current[0] = i + 1;
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != right_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[right.len()]
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        let chars = |text: &str| text.chars().collect::<Vec<_>>();
        assert_eq!(edit_distance(&chars(""), &chars("abc")), 3);
        assert_eq!(edit_distance(&chars("kitten"), &chars("sitting")), 3);
        assert_eq!(
            edit_distance(&chars("grantPermision"), &chars("grantPermission")),
            1
        );
        assert_eq!(edit_distance(&chars("same"), &chars("same")), 0);
    }

    #[test]
    fn nearest_suggests_close_keys_only() {
        let keys = ["maxProcesses", "httpPort", "path", "env"];
        assert_eq!(
            nearest("maxProcess", keys.into_iter()),
            Some("maxProcesses")
        );
        assert_eq!(
            nearest("max_processes", keys.into_iter()),
            Some("maxProcesses")
        );
        assert_eq!(nearest("HTTPPORT", keys.into_iter()), Some("httpPort"));
        assert_eq!(nearest("pth", keys.into_iter()), Some("path"));
        assert_eq!(nearest("colour", keys.into_iter()), None);
        assert_eq!(nearest("xyz", keys.into_iter()), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30000"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30 s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in [
            "",
            "s",
            "1.5s",
            "-1",
            "10d",
            "1h30m",
            "99999999999999999999",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tool_strings_split_outside_parentheses() {
        assert_eq!(split_tools("Read, Edit"), ["Read", "Edit"]);
        assert_eq!(
            split_tools("Bash(git log:*) Edit,Write"),
            ["Bash(git log:*)", "Edit", "Write"]
        );
        assert_eq!(split_tools("  "), Vec::<String>::new());
    }

    #[test]
    fn key_paths_quote_odd_keys() {
        assert_eq!(child("", "teams"), "teams");
        assert_eq!(child("teams", "back-end_2"), "teams.back-end_2");
        assert_eq!(child("teams", "v1.2"), "teams.\"v1.2\"");
        assert_eq!(child("teams", "a b"), "teams.\"a b\"");
    }
}
