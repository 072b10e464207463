//! How a team's agent is launched: the command line and environment built from its config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::Pair;
use crate::agent::{AgentSpec, AlwaysSource, PermissionPolicy, RulesSource};
use crate::config::{Config, TeamConfig, TeamName};
use crate::remote::{self, Link};

/// Whether a spawn starts the pair's session or continues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// `--session-id=<uuid>`: nothing of this session exists yet.
    New,
    /// `--resume=<uuid>`: the session has a transcript to continue.
    Resume,
}

/// The fixed flags of every agent: headless, stream-json both ways, permissions asked on stdio.
const BASE_ARGS: [&str; 5] = [
    "--print",
    "--verbose",
    "--input-format=stream-json",
    "--output-format=stream-json",
    "--permission-prompt-tool=stdio",
];

/// The environment variable that carries an agent's unique key: a restarted Iris stops a
/// leftover process group only if its processes carry the key it recorded.
pub const AGENT_KEY_VARIABLE: &str = "IRIS_AGENT_KEY";

/// How one agent process starts: which session, and what it is given.
#[derive(Clone)]
pub struct Launch<'a> {
    /// The session to start or continue.
    pub session: Uuid,
    /// Start it or continue it.
    pub mode: SessionMode,
    /// The CLI's cumulative cost at the end of the session's last turn (a resumed process
    /// starts its running total there).
    pub cost_baseline: f64,
    /// Goes into the agent's environment as `IRIS_AGENT_KEY`.
    pub agent_key: &'a str,
    /// The file holding the agent's own Iris MCP config (see
    /// [`agent_config_dir`](super::agent_config_dir)), passed as `--mcp-config`; `None`
    /// gives it no Iris MCP server.
    pub mcp_config: Option<&'a std::path::Path>,
    /// Where its permission rules come from (`live_rules` in the pool, [`fixed_rules`]
    /// elsewhere).
    pub rules: RulesSource,
    /// What people allowed for good for the pair (`iris approve --always`), if anyone can.
    pub always: Option<AlwaysSource>,
    /// For a remote team: the connection to its host (`None`: ssh connects on its own).
    pub link: Option<&'a Link>,
    /// For a remote team: the agent's MCP config (one line of JSON, its URL through the
    /// tunnel), handed to the wrapper on stdin; `None` gives it no Iris MCP server.
    pub remote_mcp_config: Option<String>,
    /// For a remote team: its directory and HOME as the host resolved them (permission
    /// rules are checked against them); `None`: the path as written, and no HOME.
    pub remote_place: Option<remote::Place>,
}

/// Builds the spec that starts `team`'s agent for `pair`.
#[must_use]
pub fn agent_spec(
    config: &Config,
    team: &TeamConfig,
    pair: &Pair,
    launch: &Launch<'_>,
) -> AgentSpec {
    let settings = &config.settings;
    let (program, program_source) = program(config, team);
    let mut args: Vec<String> = BASE_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
    args.push(match launch.mode {
        SessionMode::New => format!("--session-id={}", launch.session),
        SessionMode::Resume => format!("--resume={}", launch.session),
    });
    if let (Some(file), None) = (launch.mcp_config, &team.remote) {
        args.push(format!("--mcp-config={}", file.display()));
    }
    if let Some(model) = &team.model {
        args.push(format!("--model={model}"));
    }
    if !team.allowed_tools.is_empty() {
        args.push(format!("--allowedTools={}", team.allowed_tools.join(",")));
    }
    if !team.disallowed_tools.is_empty() {
        args.push(format!(
            "--disallowedTools={}",
            team.disallowed_tools.join(",")
        ));
    }
    if let Some(prompt) = &team.append_system_prompt {
        args.push(format!("--append-system-prompt={prompt}"));
    }
    if let Some(mode) = &team.permission_mode {
        args.push(format!("--permission-mode={mode}"));
    }
    let mut env: Vec<(String, String)> = vec![
        ("IRIS_TEAM".to_owned(), pair.target.to_string()),
        ("IRIS_CALLER".to_owned(), pair.caller.to_string()),
        (AGENT_KEY_VARIABLE.to_owned(), launch.agent_key.to_owned()),
    ];
    env.extend(
        team.env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    // `~/` in rules is the agent's home: its team's HOME if it sets one (on a host, only
    // then: the host's own HOME is not known here).
    let home = env
        .iter()
        .rev()
        .find(|(key, _)| key == "HOME")
        .map(|(_, home)| PathBuf::from(home))
        .or_else(|| match &team.remote {
            None => std::env::var_os("HOME").map(PathBuf::from),
            Some(_) => launch.remote_place.as_ref().map(|place| place.home.clone()),
        });
    let cwd = launch
        .remote_place
        .as_ref()
        .filter(|_| team.remote.is_some())
        .map_or_else(|| team.path.clone(), |place| place.directory.clone());
    let (program, program_source, args, env, local_dir, stdin_preamble) = match &team.remote {
        None => (program, program_source, args, env, None, None),
        Some(remote) => {
            // Only the agent key goes into the local ssh's environment (a restarted Iris
            // recognises a leftover ssh by it); the rest travels on stdin to the host.
            let local_env = vec![(AGENT_KEY_VARIABLE.to_owned(), launch.agent_key.to_owned())];
            let remote_env: Vec<(String, String)> = env
                .into_iter()
                .filter(|(name, _)| {
                    remote::shell::is_variable_name(name)
                        && !name.starts_with(remote::WRAPPER_PREFIX)
                })
                .collect();
            let preamble = remote::preamble(&remote_env, launch.remote_mcp_config.as_deref());
            let command = remote::agent_command(team, &program, &args);
            (
                "ssh".to_owned(),
                format!(
                    "the system ssh client, for remote team {} (its claude on the host: {program}, {program_source})",
                    team.name
                ),
                remote::session_args(remote, launch.link, &command),
                local_env,
                Some(config.iris_home.clone()),
                Some(preamble),
            )
        }
    };
    AgentSpec {
        label: Arc::from(pair.to_string()),
        program,
        program_source,
        args,
        cwd,
        local_dir,
        stdin_preamble,
        env,
        env_remove: Vec::new(),
        spawn_timeout: team.spawn_timeout.unwrap_or(settings.spawn_timeout),
        response_timeout: settings.response_timeout,
        stop_grace: settings.stop_grace_period,
        max_line_bytes: settings.max_line_bytes,
        permissions: PermissionPolicy {
            grant: team.grant_permission,
            team: team.name.to_string(),
            rules: launch.rules.clone(),
            home,
            always: launch.always.clone(),
            protected: Some(
                std::fs::canonicalize(&config.iris_home)
                    .unwrap_or_else(|_| config.iris_home.clone()),
            ),
        },
        cost_baseline: launch.cost_baseline,
    }
}

/// The rules of `config` for `team`, as they are now (the pool gives its agents
/// `live_rules` instead, so that a reload applies to running agents).
#[must_use]
pub fn fixed_rules(config: &Config, team: &TeamConfig) -> RulesSource {
    let rules = [
        config.settings.permissions.clone(),
        team.permissions.clone(),
    ];
    Arc::new(move || rules.clone())
}

/// The rules for `team` in whatever configuration `config` returns when asked: at each
/// permission request, so an edit applies from the next one. A team that is gone has none
/// of its own (its agent stops after its turn).
pub(super) fn live_rules(
    config: impl Fn() -> Option<Arc<Config>> + Send + Sync + 'static,
    team: TeamName,
) -> RulesSource {
    Arc::new(move || match config() {
        Some(config) => [
            config.settings.permissions.clone(),
            config
                .teams
                .get(&team)
                .map(|team| team.permissions.clone())
                .unwrap_or_default(),
        ],
        None => [Arc::default(), Arc::default()],
    })
}

/// The program that runs `team`'s agent and the config key that chose it.
fn program(config: &Config, team: &TeamConfig) -> (String, String) {
    match (&team.claude_path, &config.settings.claude_path) {
        (Some(path), _) => (
            path.clone(),
            format!("set by teams.{}.claudePath", team.name),
        ),
        // `settings.claudePath` is a path on this machine, not on a team's host.
        (None, _) if team.remote.is_some() => (
            "claude".to_owned(),
            format!(
                "looked up on the host's PATH: teams.{}.claudePath is not set",
                team.name
            ),
        ),
        (None, Some(path)) => (path.clone(), "set by settings.claudePath".to_owned()),
        (None, None) => (
            "claude".to_owned(),
            "looked up on PATH: no settings.claudePath or teams.<name>.claudePath is set"
                .to_owned(),
        ),
    }
}

/// Where Claude Code keeps the transcript of `session` for `team`:
/// `<claude dir>/projects/<escaped real path>/<session>.jsonl`, where the claude dir is
/// `CLAUDE_CONFIG_DIR`, else `$HOME/.claude` (the team's `env` first, then Iris's).
#[must_use]
pub fn transcript_path(team: &TeamConfig, session: Uuid) -> PathBuf {
    let variable = |name: &str| {
        team.env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|value| !value.is_empty())
    };
    let claude_dir = variable("CLAUDE_CONFIG_DIR").map_or_else(
        || PathBuf::from(variable("HOME").unwrap_or_default()).join(".claude"),
        PathBuf::from,
    );
    claude_dir
        .join("projects")
        .join(project_dir_name(&team.path))
        .join(format!("{session}.jsonl"))
}

/// Claude Code's name for a project directory: every character outside `[A-Za-z0-9]`
/// becomes `-`; a name over 200 characters is cut to 200 and gets `-<base36 hash>`.
#[must_use]
pub fn project_dir_name(path: &Path) -> String {
    let text = path.to_string_lossy();
    let escaped: String = text
        .encode_utf16()
        .map(|unit| match char::from_u32(u32::from(unit)) {
            Some(character) if character.is_ascii_alphanumeric() => character,
            _ => '-',
        })
        .collect();
    if escaped.len() <= 200 {
        return escaped;
    }
    // JavaScript's 31-multiplier string hash over UTF-16 units, as a signed 32-bit value.
    let hash = text.encode_utf16().fold(0_i32, |hash, unit| {
        hash.wrapping_mul(31)
            .wrapping_add(i32::from(unit.cast_signed()))
    });
    let mut magnitude = hash.unsigned_abs();
    let mut digits = Vec::new();
    loop {
        let digit = u8::try_from(magnitude % 36).unwrap_or(0);
        digits.push(if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        });
        magnitude /= 36;
        if magnitude == 0 {
            break;
        }
    }
    digits.reverse();
    format!("{}-{}", &escaped[..200], String::from_utf8_lossy(&digits))
}

/// How to open a pair's conversation interactively, as a fork.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForkCommand {
    /// The team's directory.
    pub cwd: PathBuf,
    /// The claude executable.
    pub program: String,
    /// `--resume=<id>` and `--fork-session` (for a remote team: `ssh`'s arguments, the
    /// last one the command run on the host).
    pub args: Vec<String>,
    /// Whether this is `ssh -t <host> 'cd <path> && claude ...'` for a remote team (then
    /// `cwd` is only where to run it).
    #[serde(default)]
    pub remote: bool,
}

impl ForkCommand {
    /// The command as one shell line, every part quoted.
    #[must_use]
    pub fn shell_line(&self) -> String {
        let mut line = if self.remote {
            shell_quote(&self.program)
        } else {
            format!(
                "cd {} && {}",
                shell_quote(&self.cwd.to_string_lossy()),
                shell_quote(&self.program)
            )
        };
        for arg in &self.args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        line
    }
}

/// The fork command for `team`'s session `session`; for a remote team, `ssh -t` to its host
/// running it there.
#[must_use]
pub fn fork_command(config: &Config, team: &TeamConfig, session: Uuid) -> ForkCommand {
    let program = program(config, team).0;
    let args = vec![format!("--resume={session}"), "--fork-session".to_owned()];
    match &team.remote {
        None => ForkCommand {
            cwd: team.path.clone(),
            program,
            args,
            remote: false,
        },
        Some(remote) => ForkCommand {
            cwd: config.iris_home.clone(),
            args: remote::fork_args(team, remote, &program, &args),
            program: "ssh".to_owned(),
            remote: true,
        },
    }
}

use remote::shell::quote as shell_quote;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_dir_names_follow_claude_code() {
        // Examples measured with the real CLI (reference/claude-cli.md, section 5).
        assert_eq!(project_dir_name(Path::new("/srv/cc-work")), "-srv-cc-work");
        assert_eq!(
            project_dir_name(Path::new("/srv/cc esc/a.b_c-d~e+f@g")),
            "-srv-cc-esc-a-b-c-d-e-f-g"
        );
        let long = format!("/{}", "x".repeat(300));
        let name = project_dir_name(Path::new(&long));
        assert!(name.starts_with(&format!("-{}", "x".repeat(199))));
        assert_eq!(name.as_bytes()[200], b'-');
        assert!(
            name[201..]
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
    }

    #[test]
    fn a_remote_agent_runs_ssh_with_its_environment_on_stdin() {
        use crate::config::{GrantPermission, RemoteConfig};
        let mut config = Config::defaults(PathBuf::from("/iris-home"));
        config.settings.claude_path = Some("/local/only/claude".to_owned());
        let name = TeamName::new("far").expect("name");
        let mut team = TeamConfig::new(name.clone(), PathBuf::from("~/my app"));
        team.grant_permission = GrantPermission::Yes;
        team.remote = Some(RemoteConfig::new("box"));
        team.env
            .insert("API_KEY".to_owned(), "s3cret value".to_owned());
        let pair = Pair::new(TeamName::new("home").expect("name"), name);
        let link = Link {
            socket: PathBuf::from("/iris-home/run/ssh/00"),
            tunnel: Some(4000),
            master: 7,
        };
        let spec = agent_spec(
            &config,
            &team,
            &pair,
            &Launch {
                session: Uuid::nil(),
                mode: SessionMode::New,
                cost_baseline: 0.0,
                agent_key: "key-1",
                mcp_config: Some(Path::new("/iris-home/run/agents/home@far.json")),
                rules: fixed_rules(&config, &team),
                always: None,
                link: Some(&link),
                remote_mcp_config: Some("{\"mcpServers\":{}}".to_owned()),
                remote_place: None,
            },
        );
        assert_eq!(spec.program, "ssh");
        assert_eq!(&spec.args[..2], ["-S", "/iris-home/run/ssh/00"]);
        let command = spec.args.last().expect("the remote command");
        assert!(command.starts_with("exec sh -c "), "{command}");
        // `settings.claudePath` is this machine's: the host's PATH is used instead.
        assert!(command.contains("command -v claude"), "{command}");
        assert!(command.contains("--session-id=00000000-0000-0000-0000-000000000000"));
        // Nothing secret or local on the command line: the local config file is not passed
        // (the wrapper gets the tunnel's config on stdin), nor the environment.
        assert!(!command.contains("/iris-home/run/agents"), "{command}");
        assert!(!spec.args.iter().any(|arg| arg.contains("s3cret")));
        assert_eq!(
            spec.env,
            [("IRIS_AGENT_KEY".to_owned(), "key-1".to_owned())]
        );
        assert_eq!(spec.local_dir.as_deref(), Some(Path::new("/iris-home")));
        assert_eq!(spec.cwd, Path::new("~/my app"));
        let preamble = spec.stdin_preamble.expect("a preamble");
        let mut lines = preamble.lines();
        assert_eq!(lines.next(), Some("{\"mcpServers\":{}}"));
        let rest: Vec<&str> = lines.collect();
        assert!(rest.contains(&"API_KEY=s3cret value"), "{rest:?}");
        assert!(rest.contains(&"IRIS_TEAM=far"), "{rest:?}");
        // `-` travels as `\055`: no printf format starts like an option.
        assert!(rest.contains(&"IRIS_AGENT_KEY=key\\0551"), "{rest:?}");
        assert_eq!(rest.last(), Some(&"."));
    }

    #[test]
    fn fork_command_is_quoted_for_the_shell() {
        let command = ForkCommand {
            cwd: PathBuf::from("/srv/it's here"),
            program: "claude".to_owned(),
            args: vec!["--resume=0000".to_owned(), "--fork-session".to_owned()],
            remote: false,
        };
        assert_eq!(
            command.shell_line(),
            "cd '/srv/it'\\''s here' && claude --resume=0000 --fork-session"
        );
    }
}
