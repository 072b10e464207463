//! The end-to-end harness: Iris pools whose teams run the real Claude Code CLI (the pinned
//! one `scripts/install-claude` installs), talking to the in-process fake Messages API, each
//! test with its own HOME, CLAUDE_CODE_TMPDIR, team directories and database file.

#![allow(
    dead_code,
    reason = "each test binary that includes this file uses part of it"
)]

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use iris::config::{Config, GrantPermission, TeamConfig, TeamName};
use iris::pool::{Pool, PoolOptions};
use iris::testing::fake_api::{FakeApi, FakeApiOptions};
use tempfile::TempDir;

use crate::common;

/// The per-turn cost the CLI computes for the fake's default usage (12 input and 6 output
/// tokens of its default model): `total_cost_usd` of a one-turn session.
pub const TURN_COST_USD: f64 = 0.000_168;

/// One test's world: the fake API, a short temp dir under /tmp (the CLI's messaging socket
/// lives under CLAUDE_CODE_TMPDIR and its path may not exceed 103 bytes), and a config whose
/// teams run the real CLI.
pub struct RealWorld {
    /// Holds `home/`, `tmp/`, `teams/`, `iris/` and `iris.db`.
    pub dir: TempDir,
    /// The fake Messages API every agent of this world talks to.
    pub api: FakeApi,
    /// The configuration pools of this world start with.
    pub config: Config,
    /// Put in every agent's environment (as `FAKE_AGENT_MARKER`) to find its processes.
    pub marker: String,
}

impl RealWorld {
    /// Starts the fake API and prepares the directories; no team yet.
    pub async fn new() -> Self {
        announce_isolation();
        let claude = common::real_claude();
        let dir = tempfile::Builder::new()
            .prefix("iris-e2e-")
            .tempdir_in("/tmp")
            .expect("temp dir under /tmp");
        for sub in ["home", "tmp", "teams", "iris"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("world directories");
        }
        let api = FakeApi::start(FakeApiOptions::default())
            .await
            .expect("the fake Messages API starts");
        let mut config = Config::defaults(dir.path().join("iris"));
        config.settings.claude_path = Some(claude.display().to_string());
        // Generous bounds: they only limit a broken test, never decide a passing one.
        config.settings.spawn_timeout = Duration::from_secs(60);
        config.settings.response_timeout = Duration::from_secs(60);
        config.database.in_memory = false;
        config.database.path = dir.path().join("iris.db");
        Self {
            dir,
            api,
            config,
            marker: format!("iris-e2e-{}", uuid::Uuid::new_v4()),
        }
    }

    /// The HOME every agent of this world gets.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Adds a team run by the real CLI: allowed to use tools, pointed at the fake API,
    /// nothing reachable but loopback.
    pub fn team(&mut self, name: &str) -> &mut TeamConfig {
        let path = self.dir.path().join("teams").join(name);
        std::fs::create_dir_all(&path).expect("team dir");
        let path = std::fs::canonicalize(path).expect("canonical team dir");
        let home = self.home();
        let tmp = self.dir.path().join("tmp");
        let mut team = TeamConfig::new(TeamName::new(name).expect("team name"), path);
        team.description = format!("e2e team {name}");
        team.grant_permission = GrantPermission::Yes;
        let env = [
            ("ANTHROPIC_BASE_URL", self.api.base_url()),
            ("ANTHROPIC_API_KEY", "sk-ant-fake".to_owned()),
            // Only the Messages API calls, to ANTHROPIC_BASE_URL: no bootstrap, no telemetry.
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
            ("DISABLE_AUTOUPDATER", "1".to_owned()),
            ("DISABLE_TELEMETRY", "1".to_owned()),
            ("DISABLE_ERROR_REPORTING", "1".to_owned()),
            // An API error fails the turn at once instead of after minutes of retries.
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_owned()),
            // Never another provider, whatever the test runner's environment says.
            ("CLAUDE_CODE_USE_BEDROCK", "0".to_owned()),
            ("CLAUDE_CODE_USE_VERTEX", "0".to_owned()),
            ("CLAUDE_CODE_USE_FOUNDRY", "0".to_owned()),
            ("HOME", home.display().to_string()),
            (
                "CLAUDE_CONFIG_DIR",
                home.join(".claude").display().to_string(),
            ),
            ("CLAUDE_CODE_TMPDIR", tmp.display().to_string()),
            ("FAKE_AGENT_MARKER", self.marker.clone()),
        ];
        team.env = env
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        let name = team.name.clone();
        self.config.teams.insert(name.clone(), team);
        self.config.teams.get_mut(&name).expect("just inserted")
    }

    /// Adds a team on the "remote" host `remote` (`ssh [options] host`): its directory
    /// `dir` there (created by the caller), the real CLI by its absolute path, the same
    /// environment as [`Self::team`] but the host's own HOME (sshd sets it).
    pub fn remote_team(&mut self, name: &str, remote: &str, dir: &str) -> &mut TeamConfig {
        let claude = common::real_claude();
        let team = self.team(name);
        team.path = PathBuf::from(dir);
        team.claude_path = Some(claude.display().to_string());
        team.env.remove("HOME");
        team.env.remove("CLAUDE_CONFIG_DIR");
        let words: Vec<String> = remote
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect();
        let mut config = iris::config::RemoteConfig::new(words.last().expect("a host"));
        config.command = remote.to_owned();
        config.ssh_args = words;
        team.remote = Some(config);
        team
    }

    /// A pool on this world's config and database file.
    pub async fn pool(&self) -> Pool {
        Pool::start(Arc::new(self.config.clone()), PoolOptions::default())
            .await
            .expect("pool starts")
    }

    /// Live processes of this world's agents.
    pub fn live_processes(&self) -> Vec<u32> {
        common::processes_with_marker(&self.marker, false)
    }

    /// The fake API's Messages calls whose last prompt contains `needle`.
    pub fn calls_for(&self, needle: &str) -> usize {
        self.api
            .messages_calls()
            .iter()
            .filter(|call| {
                call.prompt
                    .as_deref()
                    .is_some_and(|text| text.contains(needle))
            })
            .count()
    }
}

/// Says once per test binary how the network is isolated: a loopback-only namespace
/// (`scripts/test` runs the suite under `unshare -n` when it can) or, without one, only the
/// CLI's environment (`CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`, a loopback base URL).
fn announce_isolation() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // /proc/net/dev lists the interfaces of this process's network namespace (/sys
        // shows the namespace it was mounted in).
        let interfaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, _)| name.trim().to_owned())
            .collect();
        if interfaces == ["lo"] {
            eprintln!("e2e: network isolation: loopback-only network namespace");
        } else {
            eprintln!(
                "e2e: network isolation: environment only (interfaces {interfaces:?}); \
                 scripts/test runs the suite under `unshare -n` where it can"
            );
        }
    });
}

impl RealWorld {
    /// This world's config as a YAML file, for an `iris serve` process: the same teams,
    /// settings and database. Values are written as JSON strings, which YAML reads as is.
    pub fn write_config(&self) -> PathBuf {
        let quote = |text: &str| serde_json::to_string(text).expect("a JSON string");
        let settings = &self.config.settings;
        let mut yaml = format!(
            "settings:\n  claudePath: {}\n  spawnTimeout: {}ms\n  responseTimeout: {}ms\n  stopGracePeriod: 2s\n  healthCheckInterval: {}ms\n  approvalTimeout: {}ms\n  forwardFallback: {}\ndatabase:\n  path: {}\nteams:\n",
            quote(settings.claude_path.as_deref().expect("claudePath")),
            settings.spawn_timeout.as_millis(),
            settings.response_timeout.as_millis(),
            settings.health_check_interval.as_millis(),
            settings.approval_timeout.as_millis(),
            settings.forward_fallback.as_str(),
            quote(&self.config.database.path.display().to_string()),
        );
        for team in self.config.teams.values() {
            yaml.push_str(&format!(
                "  {}:\n    path: {}\n    grantPermission: {}\n",
                team.name,
                quote(&team.path.display().to_string()),
                team.grant_permission.as_str(),
            ));
            if let Some(remote) = &team.remote {
                yaml.push_str(&format!("    remote: {}\n", quote(&remote.command)));
                if let Some(claude) = &team.claude_path {
                    yaml.push_str(&format!("    claudePath: {}\n", quote(claude)));
                }
                if let Some(port) = remote.reverse_mcp_port {
                    yaml.push_str(&format!("    reverseMcpPort: {port}\n"));
                }
                if remote.compression {
                    yaml.push_str("    remoteOptions:\n      compression: true\n");
                }
            }
            if let Some(timeout) = team.approval_timeout {
                yaml.push_str(&format!("    approvalTimeout: {}ms\n", timeout.as_millis()));
            }
            if !team.permissions.is_empty() {
                yaml.push_str("    permissions:\n");
                for (list, rules) in [
                    ("allow", &team.permissions.allow),
                    ("ask", &team.permissions.ask),
                    ("deny", &team.permissions.deny),
                ] {
                    let rules: Vec<String> =
                        rules.iter().map(|rule| quote(&rule.to_string())).collect();
                    yaml.push_str(&format!("      {list}: [{}]\n", rules.join(", ")));
                }
            }
            yaml.push_str("    env:\n");
            for (key, value) in &team.env {
                yaml.push_str(&format!("      {key}: {}\n", quote(value)));
            }
        }
        let file = self.dir.path().join("config.yaml");
        std::fs::write(&file, yaml).expect("write config");
        file
    }

    /// Starts `iris serve` on a free loopback port with this world's config (written anew);
    /// returns the process (stopped when dropped) and its MCP URL.
    pub fn serve(&self) -> (common::ChildGuard, String) {
        let config = self.write_config();
        let home = self.dir.path().join("iris");
        let (common::Server { child, .. }, url) = common::serve_http(&config, &home);
        (child, url)
    }
}

/// An MCP client of a real `iris serve` (Streamable HTTP).
pub type Client = rmcp::service::RunningService<rmcp::RoleClient, ()>;

/// Connects an MCP client to `url`.
pub async fn connect(url: &str) -> Client {
    use rmcp::ServiceExt as _;
    ().serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
        url.to_owned(),
    ))
    .await
    .expect("an MCP client connects")
}

/// `ask_message` from `from` to `to`, waiting for the answer.
pub async fn ask(
    client: &Client,
    from: &str,
    to: &str,
    message: &str,
) -> iris::api::MessageOutcome {
    common::typed(
        &client
            .call_tool(common::call(
                "ask_message",
                serde_json::json!({"fromTeam": from, "toTeam": to, "message": message, "timeout": 120_000}),
            ))
            .await
            .expect("ask_message answers"),
    )
}

/// `message_status` of message `id`, as `from` sees it.
pub async fn message(client: &Client, from: &str, id: &str) -> iris::api::MessageView {
    common::typed(
        &client
            .call_tool(common::call(
                "message_status",
                serde_json::json!({"fromTeam": from, "messageId": id}),
            ))
            .await
            .expect("message_status answers"),
    )
}

/// Permission rules that allow `allow` and deny `deny` (Claude Code's rule syntax).
pub fn rules(allow: &[&str], deny: &[&str]) -> Arc<iris::permissions::Rules> {
    let parse = |list: &[&str]| -> Vec<iris::permissions::Rule> {
        list.iter()
            .map(|text| iris::permissions::Rule::parse(text).expect("a valid rule"))
            .collect()
    };
    Arc::new(iris::permissions::Rules {
        allow: parse(allow),
        ask: Vec::new(),
        deny: parse(deny),
    })
}
