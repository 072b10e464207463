//! Tests of the config loader: discovery, interpolation, validation and messages.
//!
//! Every test works in its own temporary directory and passes the environment explicitly, so
//! nothing depends on (or changes) the process environment or the machine's home directory.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::load::load_with_env;
use super::*;

/// A temporary tree: `<root>/home` (HOME), `<root>/iris-home` (IRIS_HOME), `<root>/conf/config.yaml`
/// (the config file's place) and project directories created on demand.
struct Fixture {
    _dir: TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        // Canonical, so expected paths match what the loader's realpath returns.
        let root = fs::canonicalize(dir.path()).expect("canonical temp dir");
        fs::create_dir_all(root.join("home")).expect("create home");
        fs::create_dir_all(root.join("conf")).expect("create conf");
        Self { _dir: dir, root }
    }

    fn dir(&self, relative: &str) -> PathBuf {
        let path = self.root.join(relative);
        fs::create_dir_all(&path).expect("create project dir");
        path
    }

    fn file(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.root.join(relative);
        fs::create_dir_all(path.parent().expect("file has a parent")).expect("create parent");
        fs::write(&path, contents).expect("write file");
        path
    }

    fn config_path(&self) -> PathBuf {
        self.root.join("conf").join("config.yaml")
    }

    fn iris_home(&self) -> PathBuf {
        self.root.join("iris-home")
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    fn env(&self, vars: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        env.entry("HOME".to_owned())
            .or_insert_with(|| self.home().display().to_string());
        env
    }

    fn load_with(&self, yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_from_str(
            yaml,
            &self.config_path(),
            &self.iris_home(),
            &self.env(vars),
        )
    }

    fn load(&self, yaml: &str) -> Config {
        match self.load_with(yaml, &[]) {
            Ok(config) => config,
            Err(error) => panic!("config should load, got:\n{error}"),
        }
    }

    /// The problems, each as `key: message` (the file and position are checked elsewhere).
    fn problems_with(&self, yaml: &str, vars: &[(&str, &str)]) -> Vec<String> {
        match self.load_with(yaml, vars) {
            Err(ConfigError::Invalid { path, problems }) => {
                assert_eq!(path, self.config_path());
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => panic!("expected schema problems, got: {other}"),
            Ok(config) => panic!("expected schema problems, got a config: {config:?}"),
        }
    }

    fn problems(&self, yaml: &str) -> Vec<String> {
        self.problems_with(yaml, &[])
    }

    /// The one problem `yaml` has.
    fn problem(&self, yaml: &str) -> String {
        let problems = self.problems(yaml);
        assert_eq!(
            problems.len(),
            1,
            "expected exactly one problem, got {problems:#?}"
        );
        problems.into_iter().next().expect("one problem")
    }

    fn error_text(&self, yaml: &str) -> String {
        self.load_with(yaml, &[])
            .expect_err("config should be rejected")
            .to_string()
    }
}

fn team<'c>(config: &'c Config, name: &str) -> &'c TeamConfig {
    config
        .team(name)
        .unwrap_or_else(|| panic!("team {name} missing"))
}

fn warning_keys(config: &Config) -> Vec<&str> {
    config
        .warnings
        .iter()
        .map(|warning| warning.key.as_str())
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Defaults and discovery.

#[test]
fn empty_or_comment_only_file_gives_defaults() {
    let fixture = Fixture::new();
    for yaml in [
        "",
        "# nothing here\n",
        "---\n",
        "settings:\nteams:\n# team list goes here\n",
    ] {
        let config = fixture.load(yaml);
        let defaults = Config::defaults(fixture.iris_home());
        assert_eq!(config.settings, defaults.settings, "{yaml:?}");
        assert_eq!(config.database, defaults.database);
        assert!(config.teams.is_empty());
        assert!(config.warnings.is_empty());
        assert_eq!(
            config.source.as_deref(),
            Some(fixture.config_path().as_path())
        );
        assert_eq!(config.iris_home, fixture.iris_home());
    }
}

#[test]
fn default_settings_match_the_documented_values() {
    let settings = Settings::default();
    assert_eq!(settings.spawn_timeout, Duration::from_secs(20));
    assert_eq!(settings.response_timeout, Duration::from_secs(120));
    assert_eq!(settings.idle_timeout, Duration::from_secs(3600));
    assert_eq!(settings.max_processes, 10);
    assert_eq!(settings.health_check_interval, Duration::from_secs(30));
    assert_eq!(settings.http_port, 1615);
    assert_eq!(settings.claude_path, None);
    assert_eq!(settings.max_queue_per_pair, 100);
    assert_eq!(settings.pool_wait_timeout, Duration::from_secs(30));
    assert_eq!(settings.stop_grace_period, Duration::from_secs(5));
    assert_eq!(settings.wake_concurrency, 4);
    assert_eq!(settings.max_line_bytes, 16 * 1024 * 1024);
    assert!(settings.hot_reload_config);
    assert_eq!(settings.max_http_sessions, 100);
    assert_eq!(settings.http_session_idle_timeout, Duration::from_secs(300));
    assert_eq!(settings.removed_team_grace_period, Duration::from_secs(30));
    assert_eq!(settings.approval_timeout, Duration::from_secs(600));
    assert_eq!(settings.forward_fallback, ForwardFallback::Ask);
    let config = Config::defaults(PathBuf::from("/srv/iris"));
    assert_eq!(config.database.path, Path::new("/srv/iris/data/iris.db"));
    assert!(!config.database.in_memory);
    assert_eq!(
        config.database.retention,
        Duration::from_secs(30 * 24 * 3600)
    );
    assert_eq!(config.database.max_text_bytes, 262_144);
    assert_eq!(config.database.max_transcript_entries, 200);
    assert_eq!(config.source, None);
}

#[test]
fn load_without_any_file_runs_on_defaults() {
    let fixture = Fixture::new();
    let iris_home = fixture.iris_home().display().to_string();
    let config = load_with_env(&fixture.env(&[("IRIS_HOME", &iris_home)])).expect("defaults");
    assert_eq!(config.source, None);
    assert_eq!(config.iris_home, fixture.iris_home());
    assert!(config.teams.is_empty());
    assert_eq!(config.settings, Settings::default());
    assert_eq!(
        config.database.path,
        fixture.iris_home().join("data/iris.db")
    );
}

#[test]
fn iris_home_defaults_to_dot_iris_in_home() {
    let fixture = Fixture::new();
    let config = load_with_env(&fixture.env(&[])).expect("defaults");
    assert_eq!(config.iris_home, fixture.home().join(".iris"));
    assert_eq!(config.source, None);

    fixture.file("home/.iris/config.yaml", "settings: {maxProcesses: 3}\n");
    let config = load_with_env(&fixture.env(&[])).expect("config in ~/.iris");
    assert_eq!(config.settings.max_processes, 3);
    assert_eq!(
        config.source,
        Some(fixture.home().join(".iris/config.yaml"))
    );
}

#[test]
fn load_finds_config_yaml_then_config_yml() {
    let fixture = Fixture::new();
    let iris_home = fixture.iris_home().display().to_string();
    let env = fixture.env(&[("IRIS_HOME", &iris_home)]);

    let yml = fixture.file("iris-home/config.yml", "settings: {maxProcesses: 2}\n");
    let config = load_with_env(&env).expect("config.yml");
    assert_eq!(config.source, Some(yml));
    assert_eq!(config.settings.max_processes, 2);

    let yaml = fixture.file("iris-home/config.yaml", "settings: {maxProcesses: 5}\n");
    let config = load_with_env(&env).expect("config.yaml wins");
    assert_eq!(config.source, Some(yaml));
    assert_eq!(config.settings.max_processes, 5);
}

#[test]
fn iris_config_path_is_used_and_must_exist() {
    let fixture = Fixture::new();
    let iris_home = fixture.iris_home().display().to_string();
    fixture.file("iris-home/config.yaml", "settings: {maxProcesses: 5}\n");
    let elsewhere = fixture.file("elsewhere/iris.yaml", "settings: {maxProcesses: 7}\n");

    let elsewhere_text = elsewhere.display().to_string();
    let env = fixture.env(&[
        ("IRIS_HOME", &iris_home),
        ("IRIS_CONFIG_PATH", &elsewhere_text),
    ]);
    let config = load_with_env(&env).expect("IRIS_CONFIG_PATH");
    assert_eq!(config.source, Some(elsewhere.clone()));
    assert_eq!(config.settings.max_processes, 7);
    assert_eq!(config.iris_home, fixture.iris_home());

    let missing = fixture.root.join("nowhere/config.yaml");
    let missing_text = missing.display().to_string();
    let env = fixture.env(&[
        ("IRIS_HOME", &iris_home),
        ("IRIS_CONFIG_PATH", &missing_text),
    ]);
    let error = load_with_env(&env).expect_err("missing IRIS_CONFIG_PATH file");
    assert!(matches!(&error, ConfigError::NotFound { path } if *path == missing));
    assert_eq!(
        error.to_string(),
        format!(
            "config file {} (from IRIS_CONFIG_PATH) does not exist",
            missing.display()
        )
    );
}

#[test]
fn load_from_path_reads_the_file_and_reports_read_errors() {
    let fixture = Fixture::new();
    let project = fixture.dir("project");
    let path = fixture.file(
        "conf/config.yaml",
        "teams:\n  alpha:\n    path: ../project\n",
    );
    let config = load_from_path(&path, &fixture.iris_home()).expect("load file");
    assert_eq!(team(&config, "alpha").path, project);

    let directory = fixture.dir("a-directory");
    let error = load_from_path(&directory, &fixture.iris_home()).expect_err("a directory");
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error.to_string().starts_with(&format!(
            "cannot read config file {}: ",
            directory.display()
        )),
        "{error}"
    );
}

// ----------------------------------------------------------------------------------------------
// The full schema.

#[test]
fn full_example_with_every_key() {
    let fixture = Fixture::new();
    let backend = fixture.dir("projects/backend");
    fixture.dir("projects/web");
    let yaml = r##"
settings:
  spawnTimeout: 15000
  responseTimeout: 2m
  idleTimeout: 1h
  maxProcesses: 6
  healthCheckInterval: 45s
  httpPort: 1700
  claudePath: /opt/claude/bin/claude
  maxQueuePerPair: 50
  poolWaitTimeout: 500ms
  stopGracePeriod: "3s"
  wakeConcurrency: 2
  maxLineBytes: 1048576
  hotReloadConfig: false
  maxHttpSessions: 20
  httpSessionIdleTimeout: 90s
  removedTeamGracePeriod: 2m
database:
  path: state/iris.sqlite
  inMemory: false
  retentionDays: 7
  maxStoredTextBytes: 4096
  maxTranscriptEntries: 20
teams:
  backend:
    path: ../projects/backend
    description: The API server
    claudePath: ~/bin/claude
    idleTimeout: 10m
    spawnTimeout: 30000
    model: sonnet
    allowedTools: [Read, "Bash(git log:*)"]
    disallowedTools: WebFetch, WebSearch
    appendSystemPrompt: Answer briefly.
    permissionMode: acceptEdits
    grantPermission: yes
    env:
      RUST_LOG: debug
      RETRIES: 3
      VERSION: 1.10
      VERBOSE: true
    color: "#336699"
  web:
    path: ../projects/web
    grantPermission: no
  remote-box:
    path: /srv/app
    remote: ssh -J bastion deploy@app.internal
    claudePath: ~/.local/bin/claude
"##;
    let config = fixture.load(yaml);
    let settings = &config.settings;
    assert_eq!(settings.spawn_timeout, Duration::from_secs(15));
    assert_eq!(settings.response_timeout, Duration::from_secs(120));
    assert_eq!(settings.idle_timeout, Duration::from_secs(3600));
    assert_eq!(settings.max_processes, 6);
    assert_eq!(settings.health_check_interval, Duration::from_secs(45));
    assert_eq!(settings.http_port, 1700);
    assert_eq!(
        settings.claude_path.as_deref(),
        Some("/opt/claude/bin/claude")
    );
    assert_eq!(settings.max_queue_per_pair, 50);
    assert_eq!(settings.pool_wait_timeout, Duration::from_millis(500));
    assert_eq!(settings.stop_grace_period, Duration::from_secs(3));
    assert_eq!(settings.wake_concurrency, 2);
    assert_eq!(settings.max_line_bytes, 1_048_576);
    assert!(!settings.hot_reload_config);
    assert_eq!(settings.max_http_sessions, 20);
    assert_eq!(settings.http_session_idle_timeout, Duration::from_secs(90));
    assert_eq!(settings.removed_team_grace_period, Duration::from_secs(120));

    assert_eq!(
        config.database.path,
        fixture.iris_home().join("state/iris.sqlite")
    );
    assert!(!config.database.in_memory);
    assert_eq!(
        config.database.retention,
        Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(config.database.max_text_bytes, 4096);
    assert_eq!(config.database.max_transcript_entries, 20);

    assert_eq!(config.team_names(), ["backend", "remote-box", "web"]);
    let backend_team = team(&config, "backend");
    assert_eq!(backend_team.name.as_str(), "backend");
    assert_eq!(backend_team.path, backend);
    assert_eq!(backend_team.description, "The API server");
    let expected_claude = fixture.home().join("bin/claude").display().to_string();
    assert_eq!(
        backend_team.claude_path.as_deref(),
        Some(expected_claude.as_str())
    );
    assert_eq!(backend_team.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(backend_team.spawn_timeout, Some(Duration::from_secs(30)));
    assert_eq!(backend_team.model.as_deref(), Some("sonnet"));
    assert_eq!(backend_team.allowed_tools, ["Read", "Bash(git log:*)"]);
    assert_eq!(backend_team.disallowed_tools, ["WebFetch", "WebSearch"]);
    assert_eq!(
        backend_team.append_system_prompt.as_deref(),
        Some("Answer briefly.")
    );
    assert_eq!(backend_team.permission_mode.as_deref(), Some("acceptEdits"));
    assert_eq!(backend_team.grant_permission, GrantPermission::Yes);
    let env: Vec<(&str, &str)> = backend_team
        .env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("RETRIES", "3"),
            ("RUST_LOG", "debug"),
            ("VERBOSE", "true"),
            ("VERSION", "1.10")
        ]
    );
    assert_eq!(backend_team.color.as_deref(), Some("#336699"));
    assert_eq!(backend_team.remote, None);

    let web = team(&config, "web");
    assert_eq!(web.grant_permission, GrantPermission::No);
    assert_eq!(web.description, "");
    assert_eq!(web.claude_path, None);
    assert_eq!(web.idle_timeout, None);
    assert!(web.allowed_tools.is_empty() && web.env.is_empty());

    let remote = team(&config, "remote-box");
    assert_eq!(
        remote.remote,
        Some(RemoteConfig {
            command: "ssh -J bastion deploy@app.internal".to_owned(),
            ssh_args: vec![
                "-J".to_owned(),
                "bastion".to_owned(),
                "deploy@app.internal".to_owned()
            ],
            ..RemoteConfig::new("deploy@app.internal")
        })
    );
    assert_eq!(remote.path, Path::new("/srv/app"));
    // The remote side expands its own `~`.
    assert_eq!(remote.claude_path.as_deref(), Some("~/.local/bin/claude"));
    assert_eq!(remote.grant_permission, GrantPermission::Ask);

    // Keys this build accepts but cannot act on yet say so, once each; so do programs that
    // are not there (this machine has no /opt/claude).
    assert_eq!(
        warning_keys(&config),
        ["settings.claudePath", "teams.backend.claudePath"]
    );
    assert_eq!(
        config.warnings[0].message,
        "/opt/claude/bin/claude does not exist: messages to the teams that use it fail until it is fixed"
    );
}

#[test]
fn a_claude_path_that_cannot_run_is_a_warning() {
    let fixture = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let yaml = format!(
        "settings:\n  claudePath: {}\nteams:\n  a:\n    path: {}\n    claudePath: no-such-claude-on-path-3f9\n  b:\n    path: {}\n    claudePath: {}\n",
        plain.display(),
        dir.path().display(),
        dir.path().display(),
        dir.path().display()
    );
    let config = fixture.load(&yaml);
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            format!(
                "settings.claudePath: {} is not executable: messages to the teams that use it fail until it is fixed",
                plain.display()
            ),
            "teams.a.claudePath: 'no-such-claude-on-path-3f9' is not on PATH: messages to the teams that use it fail until it is fixed".to_owned(),
            format!(
                "teams.b.claudePath: {} is not a file: messages to the teams that use it fail until it is fixed",
                dir.path().display()
            ),
        ]
    );
}

#[test]
fn a_bare_remote_team_needs_no_claude_path_and_no_local_directory() {
    let fixture = Fixture::new();
    let config =
        fixture.load("teams:\n  far:\n    path: relative/on/host\n    remote: ssh far-host\n");
    let far = team(&config, "far");
    assert_eq!(far.path, Path::new("relative/on/host"));
    assert_eq!(far.claude_path, None);
    // Every option at its default.
    let remote = far.remote.as_ref().expect("a remote team");
    assert_eq!(*remote, RemoteConfig::new("far-host"));
    assert_eq!(remote.command, "ssh far-host");
    assert_eq!(remote.ssh_args, ["far-host"]);
    assert_eq!(remote.identity, None);
    assert_eq!(remote.port, None);
    assert_eq!(remote.strict_host_key_checking, None);
    assert_eq!(remote.connect_timeout, Duration::from_secs(10));
    assert_eq!(remote.server_alive_interval, Duration::from_secs(15));
    assert_eq!(remote.server_alive_count_max, 3);
    assert!(!remote.compression && !remote.forward_agent);
    assert!(remote.extra_ssh_args.is_empty());
    assert!(remote.reverse_mcp);
    assert_eq!(remote.reverse_mcp_port, None);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn remote_must_look_like_ssh_options_host() {
    let fixture = Fixture::new();
    let problems = fixture.problems(
        "teams:\n  a:\n    path: /x\n    remote: user@host\n  b:\n    path: /x\n    remote: ssh host uptime\n  c:\n    path: /x\n    remote: ssh -p\n",
    );
    assert_eq!(
        problems,
        [
            "teams.a.remote: expected \"ssh [options] host\", such as \"ssh user@host\" or \"ssh -J bastion host\", got \"user@host\"",
            "teams.b.remote: \"uptime\" follows the host \"host\"; the host must come last (Iris appends the remote command itself)",
            "teams.c.remote: ssh option -p needs a value",
        ]
    );
}

#[test]
fn a_remote_team_with_every_option_loads() {
    let fixture = Fixture::new();
    let key = fixture.file("home/.ssh/id_build", "key");
    let yaml = r#"
teams:
  far:
    path: ~/work/app
    description: On the build box
    remote: ssh -J bastion -o 'ProxyCommand=ssh -W %h:%p gw' -i "${KEYS}/my key" -p2222 deploy@build
    claudePath: ~/.local/bin/claude
    enableReverseMcp: true
    reverseMcpPort: 17000
    env:
      API_URL: http://localhost:8080
    remoteOptions:
      identity: ~/.ssh/id_build
      port: 2222
      strictHostKeyChecking: false
      connectTimeout: 5s
      serverAliveInterval: 20000
      serverAliveCountMax: 5
      compression: true
      forwardAgent: true
      extraSshArgs: ["-o", "IdentitiesOnly=yes", -4, "-oAddKeysToAgent=no"]
"#;
    let config = fixture
        .load_with(yaml, &[("KEYS", "/keys")])
        .expect("a remote team");
    let far = team(&config, "far");
    // Paths on the host are kept as written: its shell expands `~`.
    assert_eq!(far.path, Path::new("~/work/app"));
    assert_eq!(far.claude_path.as_deref(), Some("~/.local/bin/claude"));
    assert_eq!(far.env["API_URL"], "http://localhost:8080");
    let words = |words: &[&str]| words.iter().map(|word| (*word).to_owned()).collect();
    assert_eq!(
        far.remote,
        Some(RemoteConfig {
            command: "ssh -J bastion -o 'ProxyCommand=ssh -W %h:%p gw' -i \"/keys/my key\" -p2222 deploy@build".to_owned(),
            ssh_args: words(&[
                "-J",
                "bastion",
                "-o",
                "ProxyCommand=ssh -W %h:%p gw",
                "-i",
                "/keys/my key",
                "-p2222",
                "deploy@build",
            ]),
            host: "deploy@build".to_owned(),
            identity: Some(key),
            port: Some(2222),
            strict_host_key_checking: Some(false),
            connect_timeout: Duration::from_secs(5),
            server_alive_interval: Duration::from_secs(20),
            server_alive_count_max: 5,
            compression: true,
            forward_agent: true,
            extra_ssh_args: words(&["-o", "IdentitiesOnly=yes", "-4", "-oAddKeysToAgent=no"]),
            reverse_mcp: true,
            reverse_mcp_port: Some(17000),
        })
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // `~` in remote is this machine's home; a relative identity is relative to the config
    // file; a missing one is a warning.
    let config = fixture.load(
        "teams:\n  far:\n    path: ~user/app\n    remote: ssh -F ~/.ssh/other far\n    enableReverseMcp: false\n    remoteOptions:\n      identity: keys/none\n",
    );
    let remote = team(&config, "far").remote.clone().expect("remote");
    assert_eq!(team(&config, "far").path, Path::new("~user/app"));
    let other = fixture.home().join(".ssh/other").display().to_string();
    assert_eq!(remote.ssh_args, ["-F", other.as_str(), "far"]);
    assert!(!remote.reverse_mcp);
    let missing = fixture.root.join("conf/keys/none");
    assert_eq!(remote.identity.as_deref(), Some(missing.as_path()));
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [format!(
            "teams.far.remoteOptions.identity: {} does not exist: ssh goes on without it, with your other keys",
            missing.display()
        )]
    );
}

#[test]
fn a_changed_remote_option_is_reported_as_a_change_of_remote() {
    let fixture = Fixture::new();
    let yaml = "teams:\n  far:\n    path: /srv/x\n    remote: ssh far\n    remoteOptions:\n      port: 22\n";
    let old = fixture.load(yaml);
    let new = fixture.load(&yaml.replace("port: 22", "port: 2222"));
    assert_eq!(diff(&old, &new).to_string(), "team far changed: remote");
    assert!(diff(&old, &fixture.load(yaml)).is_empty());
}

#[test]
fn an_empty_remote_leaves_a_team_local() {
    let fixture = Fixture::new();
    let dir = fixture.dir("app").display().to_string();
    let config = fixture.load(&format!(
        "teams:\n  a:\n    path: {dir}\n    remote: ${{REMOTE:-}}\n"
    ));
    assert_eq!(team(&config, "a").remote, None);
    let config = fixture
        .load_with(
            "teams:\n  a:\n    path: /srv/app\n    remote: ${REMOTE:-}\n",
            &[("REMOTE", "ssh box")],
        )
        .expect("a remote team");
    assert_eq!(team(&config, "a").remote, Some(RemoteConfig::new("box")));
}

#[test]
fn remote_is_split_as_a_shell_would_and_refuses_what_a_shell_would_expand() {
    let fixture = Fixture::new();
    let yaml = r#"
teams:
  a:
    path: /x
    remote: ssh $HOME
  b:
    path: /x
    remote: "ssh 'far"
  c:
    path: /x
    remote: ssh "my host"
  d:
    path: /x
    remote: ssh -t far
  e:
    path: /x
    remote: ssh $${HOST}
  f:
    path: /x
    remote: ssh ${HOST}
  g:
    path: /x
    remote: ssh -o ControlPath=/tmp/c far
"#;
    let file = fixture.config_path().display().to_string();
    let text = fixture
        .load_with(yaml, &[("HOST", "far; reboot")])
        .expect_err("refused")
        .to_string();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            format!(
                "{file}:5:13: teams.a.remote: unquoted $ in \"ssh $HOME\": Iris runs ssh without a shell, so nothing would expand $HOME; write ${{HOME}} to have the config loader expand it, or \\$HOME to keep it as it is"
            ),
            format!("{file}:8:13: teams.b.remote: unterminated single quote in \"ssh 'far\""),
            format!(
                "{file}:11:13: teams.c.remote: the host \"my host\" contains whitespace, which no host name can"
            ),
            format!(
                "{file}:14:13: teams.d.remote: ssh option -t is not allowed: Iris talks to the agent through pipes and needs no tty (a tty would alter what the agent writes)"
            ),
            format!(
                "{file}:17:13: teams.e.remote: unquoted $ in \"ssh ${{HOST}}\": Iris runs ssh without a shell, so nothing would expand it; write ${{VAR}} to have the config loader expand a variable, or \\$ to keep a $"
            ),
            // Interpolation comes first: the variable's value is split and checked too.
            format!(
                "{file}:20:13: teams.f.remote: unquoted ';' in \"ssh far; reboot\": Iris runs ssh without a shell, so there are no command lists, pipes, redirections or subshells; quote it if it is part of a value"
            ),
            format!(
                "{file}:23:13: teams.g.remote: ssh option -o ControlPath is not allowed: Iris manages the control socket itself"
            ),
        ]
    );
    // Quoted, `$` and spaces are kept as written.
    let config = fixture.load(
        "teams:\n  a:\n    path: /x\n    remote: ssh -o 'SetEnv=A=$x' -i /keys/my\\ key far\n",
    );
    assert_eq!(
        team(&config, "a").remote.as_ref().expect("remote").ssh_args,
        ["-o", "SetEnv=A=$x", "-i", "/keys/my key", "far"]
    );
}

#[test]
fn remote_options_are_checked() {
    let fixture = Fixture::new();
    let yaml = r#"
teams:
  far:
    path: /srv/x
    remote: ssh far
    enableReverseMcp: maybe
    reverseMcpPort: 0
    remoteOptions:
      identity: ""
      port: 70000
      strictHostKeyChecking: sometimes
      connectTimeout: 0
      serverAliveInterval: soon
      serverAliveCountMax: 0
      compression: 1
      forwardAgent: yes
      extraSshArgs: -C
      portt: 22
      flavour: x
  near:
    path: ""
    remote: ssh near
    env:
      BAD-NAME: x
    remoteOptions:
      identity: ~other/key
      serverAliveCountMax: 99999999999
      extraSshArgs: ["-C", "", "-N", ~]
  tty:
    path: /srv/x
    remote: ssh tty
    remoteOptions:
      extraSshArgs: ["-C", "-tt"]
  host:
    path: /srv/x
    remote: ssh host
    remoteOptions:
      extraSshArgs: ["-o", "BatchMode=yes", "other", "-o"]
  novalue:
    path: /srv/x
    remote: ssh novalue
    remoteOptions:
      extraSshArgs: ["-C", "-o"]
  wrong:
    path: /srv/x
    remote: ssh wrong
    remoteOptions: [port]
"#;
    let duration = "expected a duration: milliseconds, or a whole number with a unit ms, s, m or h, such as \"30s\"";
    assert_eq!(
        fixture.problems(yaml),
        [
            "teams.far.enableReverseMcp: expected true or false, got \"maybe\"".to_owned(),
            "teams.far.reverseMcpPort: expected a port number from 1 to 65535, got 0".to_owned(),
            "teams.far.remoteOptions.identity: must not be empty: it is the path of an ssh private key (leave the key out to use ssh's own)".to_owned(),
            "teams.far.remoteOptions.port: expected a port number from 1 to 65535, got 70000".to_owned(),
            "teams.far.remoteOptions.strictHostKeyChecking: expected true or false, got \"sometimes\"".to_owned(),
            "teams.far.remoteOptions.connectTimeout: must be greater than 0, got 0".to_owned(),
            format!("teams.far.remoteOptions.serverAliveInterval: {duration}, got \"soon\""),
            "teams.far.remoteOptions.serverAliveCountMax: must be at least 1, got 0".to_owned(),
            "teams.far.remoteOptions.compression: expected true or false, got 1".to_owned(),
            "teams.far.remoteOptions.forwardAgent: expected true or false, got \"yes\"".to_owned(),
            "teams.far.remoteOptions.extraSshArgs: expected a list of ssh arguments, one word each, such as [\"-o\", \"IdentitiesOnly=yes\"], got \"-C\"".to_owned(),
            "teams.far.remoteOptions.portt: unknown key; did you mean 'port'?".to_owned(),
            "teams.far.remoteOptions.flavour: unknown key (known keys: identity, port, strictHostKeyChecking, connectTimeout, serverAliveInterval, serverAliveCountMax, compression, forwardAgent, extraSshArgs, passphrase)".to_owned(),
            "teams.near.env.BAD-NAME: invalid environment variable name \"BAD-NAME\" (use letters, digits and '_', not starting with a digit)".to_owned(),
            "teams.near.remoteOptions.identity: \"~other/key\": '~user' paths are not supported; write the full path".to_owned(),
            "teams.near.remoteOptions.serverAliveCountMax: 99999999999 is too large".to_owned(),
            "teams.near.remoteOptions.extraSshArgs[1]: empty argument".to_owned(),
            "teams.near.remoteOptions.extraSshArgs[3]: empty argument".to_owned(),
            "teams.near.path: must not be empty: it is the team's project directory".to_owned(),
            "teams.tty.remoteOptions.extraSshArgs[1]: ssh option -t is not allowed: Iris talks to the agent through pipes and needs no tty (a tty would alter what the agent writes)".to_owned(),
            "teams.host.remoteOptions.extraSshArgs[2]: \"other\" is not an ssh option: extraSshArgs holds options and their values, one word each (the host belongs in remote)".to_owned(),
            "teams.novalue.remoteOptions.extraSshArgs[1]: ssh option -o needs a value".to_owned(),
            "teams.wrong.remoteOptions: expected a mapping of ssh options (identity, port, connectTimeout, extraSshArgs...), got a list".to_owned(),
        ]
    );
    // Each with its file, line and column.
    let text = fixture.error_text(
        "teams:\n  far:\n    path: /srv/x\n    remote: ssh far\n    remoteOptions:\n      port: 0\n      extraSshArgs: [-C, -N]\n",
    );
    let file = fixture.config_path().display().to_string();
    assert_eq!(
        text,
        format!(
            "{file}:6:13: teams.far.remoteOptions.port: expected a port number from 1 to 65535, got 0\n{file}:7:26: teams.far.remoteOptions.extraSshArgs[1]: ssh option -N is not allowed: it runs no remote command, and Iris runs the agent as the remote command"
        )
    );
}

#[test]
fn passphrase_allow_http_and_ssh2_warn_once_each_and_no_value_is_shown() {
    let fixture = Fixture::new();
    let yaml = r#"
teams:
  far:
    path: /srv/x
    remote: ssh far
    ssh2: true
    allowHttp: true
    remoteOptions:
      passphrase: hunter2-the-passphrase
  other:
    path: /srv/x
    remote: ssh other
    remoteOptions:
      passphrase: ${UNSET_PASSPHRASE}
    enableReverseMcp: false
    reverseMcpPort: 17000
"#;
    let config = fixture.load(yaml);
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "teams.far.ssh2: has no effect: remote teams always use the system ssh client",
            "teams.far.allowHttp: has no effect: the tunnel carries plain HTTP on the host's loopback; allowHttp is not needed",
            "teams.far.remoteOptions.passphrase: is ignored: ssh reads passphrases from your ssh agent (ssh-add); Iris never stores one",
            "teams.other.remoteOptions.passphrase: is ignored: ssh reads passphrases from your ssh agent (ssh-add); Iris never stores one",
            "teams.other.reverseMcpPort: has no effect with enableReverseMcp: false",
        ]
    );
    assert_eq!(
        config.warnings[2].position,
        Some(Position { line: 9, column: 7 })
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!warnings.concat().contains("hunter2"));
}

#[test]
fn remote_keys_on_a_local_team_warn_and_are_not_evaluated() {
    let fixture = Fixture::new();
    let dir = fixture.dir("app").display().to_string();
    let config = fixture.load(&format!(
        "teams:\n  a:\n    path: {dir}\n    remoteOptions:\n      port: 0\n      nonsense: true\n    enableReverseMcp: maybe\n    reverseMcpPort: 1615\n    allowHttp: true\n    ssh2: false\n  b:\n    path: {dir}\n    remoteOptions:\n    remote:\n"
    ));
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "teams.a.remoteOptions: has no effect without remote",
            "teams.a.enableReverseMcp: has no effect without remote",
            "teams.a.reverseMcpPort: has no effect without remote",
            "teams.a.allowHttp: has no effect: the tunnel carries plain HTTP on the host's loopback; allowHttp is not needed",
            "teams.a.ssh2: has no effect: remote teams always use the system ssh client",
        ]
    );
    assert_eq!(team(&config, "a").remote, None);
    assert_eq!(team(&config, "b").remote, None);
}

// ----------------------------------------------------------------------------------------------
// Interpolation.

#[test]
fn interpolation_gives_typed_values_quoted_or_not() {
    let fixture = Fixture::new();
    fixture.dir("projects/api");
    let yaml = r#"
settings:
  maxProcesses: ${N}
  httpPort: "${PORT:-1615}"
  wakeConcurrency: ${WAKE:-3}
  responseTimeout: ${RESPONSE:-90s}
  hotReloadConfig: "${HOT}"
teams:
  api:
    path: "${PROJECTS}/api"
    description: team ${NAME:-api} on ${HOST:-localhost}
"#;
    let projects = fixture.root.join("projects").display().to_string();
    let vars = [
        ("N", "4"),
        ("HOT", "true"),
        ("PROJECTS", projects.as_str()),
        ("HOST", "box"),
    ];
    let config = fixture.load_with(yaml, &vars).expect("interpolated config");
    assert_eq!(config.settings.max_processes, 4);
    assert_eq!(config.settings.http_port, 1615);
    assert_eq!(config.settings.wake_concurrency, 3);
    assert_eq!(config.settings.response_timeout, Duration::from_secs(90));
    assert!(config.settings.hot_reload_config);
    let api = team(&config, "api");
    assert_eq!(api.path, fixture.root.join("projects/api"));
    assert_eq!(api.description, "team api on box");

    let config = fixture
        .load_with(
            yaml,
            &[
                ("N", "4"),
                ("HOT", "false"),
                ("PORT", "8080"),
                ("PROJECTS", &projects),
            ],
        )
        .expect("port from the environment");
    assert_eq!(config.settings.http_port, 8080);
    assert!(!config.settings.hot_reload_config);
}

#[test]
fn an_unset_variable_is_an_error_naming_it_and_its_key() {
    let fixture = Fixture::new();
    let error = fixture
        .load_with("settings:\n  maxProcesses: ${IRIS_MAX_PROCESSES}\n", &[])
        .expect_err("unset variable");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2:17: settings.maxProcesses: environment variable IRIS_MAX_PROCESSES is not set (set it, or write ${{IRIS_MAX_PROCESSES:-default}} to give a default)",
            fixture.config_path().display()
        )
    );
    // Quoted values are interpolated too, so they fail the same way.
    let problems = fixture.problems("settings:\n  claudePath: \"${CLAUDE}\"\n");
    assert_eq!(
        problems,
        [
            "settings.claudePath: environment variable CLAUDE is not set (set it, or write ${CLAUDE:-default} to give a default)"
        ]
    );
}

#[test]
fn required_variable_message_is_shown() {
    let fixture = Fixture::new();
    let yaml = "teams:\n  a:\n    path: /tmp\n    env:\n      TOKEN: ${API_TOKEN:?export API_TOKEN first}\n";
    assert_eq!(
        fixture.problem(yaml),
        "teams.a.env.TOKEN: environment variable API_TOKEN is not set: export API_TOKEN first"
    );
    assert_eq!(
        fixture.problems_with(yaml, &[("API_TOKEN", "")]),
        ["teams.a.env.TOKEN: environment variable API_TOKEN is empty: export API_TOKEN first"]
    );
    let config = fixture
        .load_with(yaml, &[("API_TOKEN", "s3cret")])
        .expect("token set");
    assert_eq!(team(&config, "a").env["TOKEN"], "s3cret");
}

#[test]
fn an_empty_variable_counts_as_set_and_an_empty_value_as_not_set() {
    let fixture = Fixture::new();
    let yaml = "settings:\n  maxProcesses: ${MAX:-}\n  claudePath: ${CLAUDE}\n";
    let config = fixture
        .load_with(yaml, &[("CLAUDE", "")])
        .expect("empty values");
    assert_eq!(config.settings.max_processes, 10);
    assert_eq!(config.settings.claude_path, None);
}

#[test]
fn double_dollar_keeps_a_literal_reference() {
    let fixture = Fixture::new();
    let yaml = "teams:\n  a:\n    path: /tmp\n    appendSystemPrompt: write $${HOME} literally, costs $5\n    env:\n      TEMPLATE: \"$${USER}\"\n";
    let config = fixture.load(yaml);
    let a = team(&config, "a");
    assert_eq!(
        a.append_system_prompt.as_deref(),
        Some("write ${HOME} literally, costs $5")
    );
    assert_eq!(a.env["TEMPLATE"], "${USER}");
}

#[test]
fn environment_values_cannot_inject_yaml() {
    let fixture = Fixture::new();
    let yaml = "teams:\n  a:\n    path: /tmp\n    description: ${X}\n    env:\n      X: ${X}\n      NUL: ${NULLISH}\n";
    let injection = "a\nmaxProcesses: 1\nteams: {evil: {path: /}}";
    let config = fixture
        .load_with(yaml, &[("X", injection), ("NULLISH", "~")])
        .expect("values stay strings");
    let a = team(&config, "a");
    assert_eq!(a.description, injection);
    assert_eq!(a.env["X"], injection);
    assert_eq!(a.env["NUL"], "~");
    assert_eq!(config.team_names(), ["a"]);
    assert_eq!(config.settings.max_processes, 10);
}

#[test]
fn an_interpolated_value_of_the_wrong_type_shows_where_it_came_from() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.problems_with("settings:\n  maxProcesses: ${N}\n", &[("N", "four")]),
        ["settings.maxProcesses: expected a positive integer, got \"four\" (from \"${N}\")"]
    );
}

#[test]
fn keys_are_not_interpolated() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.problems_with("settings:\n  ${KEY}: 3\n", &[("KEY", "maxProcesses")]),
        [
            "settings.\"${KEY}\": unknown key (known keys: spawnTimeout, responseTimeout, idleTimeout, maxProcesses, healthCheckInterval, httpPort, claudePath, maxQueuePerPair, poolWaitTimeout, stopGracePeriod, wakeConcurrency, maxLineBytes, hotReloadConfig, httpToken, maxHttpSessions, httpSessionIdleTimeout, removedTeamGracePeriod, permissions, approvalTimeout, forwardFallback, maxCallDepth, daemonIdleTimeout)"
        ]
    );
}

// ----------------------------------------------------------------------------------------------
// Unknown keys, types, values.

#[test]
fn unknown_keys_are_errors_with_suggestions_at_every_level() {
    let fixture = Fixture::new();
    let yaml = r##"
setings: {}
settings:
  maxProcess: 3
database:
  inMemroy: true
dashboard:
  enabeld: true
teams:
  backend:
    path: /tmp
    grantPermision: yes
    colour: "#000000"
  far:
    path: /srv
    remote: ssh far
    remoteOption: {}
    remoteOptions:
      identiy: /k
"##;
    let file = fixture.config_path().display().to_string();
    assert_eq!(
        fixture.error_text(yaml),
        [
            format!("{file}:2:1: setings: unknown key; did you mean 'settings'?"),
            format!("{file}:4:3: settings.maxProcess: unknown key; did you mean 'maxProcesses'?"),
            format!("{file}:6:3: database.inMemroy: unknown key; did you mean 'inMemory'?"),
            format!("{file}:8:3: dashboard.enabeld: unknown key; did you mean 'enabled'?"),
            format!(
                "{file}:12:5: teams.backend.grantPermision: unknown key; did you mean 'grantPermission'?"
            ),
            format!("{file}:13:5: teams.backend.colour: unknown key; did you mean 'color'?"),
            format!(
                "{file}:17:5: teams.far.remoteOption: unknown key; did you mean 'remoteOptions'?"
            ),
            format!(
                "{file}:19:7: teams.far.remoteOptions.identiy: unknown key; did you mean 'identity'?"
            ),
        ]
        .join("\n")
    );
}

#[test]
fn unknown_keys_without_a_close_match_list_the_known_ones() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.problem("database:\n  flavour: sqlite\n"),
        "database.flavour: unknown key (known keys: path, inMemory, retentionDays, maxStoredTextBytes, maxTranscriptEntries)"
    );
    assert_eq!(
        fixture.problem("plugins: []\n"),
        "plugins: unknown key (known keys: settings, teams, database, dashboard)"
    );
}

#[test]
fn wrong_types_and_ranges_are_reported_together() {
    let fixture = Fixture::new();
    let yaml = r#"
settings:
  maxProcesses: abc
  maxQueuePerPair: 0
  wakeConcurrency: -2
  maxLineBytes: 100
  httpPort: 70000
  hotReloadConfig: yes
  spawnTimeout: soon
  responseTimeout: 0
  idleTimeout: 1.5s
  healthCheckInterval: [30]
  poolWaitTimeout: 2.5
  stopGracePeriod: true
  maxHttpSessions: 0
  httpSessionIdleTimeout: 0
"#;
    assert_eq!(
        fixture.problems(yaml),
        [
            "settings.maxProcesses: expected a positive integer, got \"abc\"",
            "settings.maxQueuePerPair: must be at least 1, got 0",
            "settings.wakeConcurrency: expected a positive integer, got -2",
            "settings.maxLineBytes: must be at least 1024, got 100",
            "settings.httpPort: expected a port number from 1 to 65535, got 70000",
            "settings.hotReloadConfig: expected true or false, got \"yes\"",
            "settings.spawnTimeout: expected a duration: milliseconds, or a whole number with a unit ms, s, m or h, such as \"30s\", got \"soon\"",
            "settings.responseTimeout: must be greater than 0, got 0",
            "settings.idleTimeout: expected a duration: milliseconds, or a whole number with a unit ms, s, m or h, such as \"30s\", got \"1.5s\"",
            "settings.healthCheckInterval: expected a duration: milliseconds, or a whole number with a unit ms, s, m or h, such as \"30s\", got a list",
            "settings.poolWaitTimeout: expected a duration: milliseconds, or a whole number with a unit ms, s, m or h, such as \"30s\", got 2.5",
            "settings.stopGracePeriod: expected a duration: milliseconds, or a whole number with a unit ms, s, m or h, such as \"30s\", got true",
            "settings.maxHttpSessions: must be at least 1, got 0",
            "settings.httpSessionIdleTimeout: must be greater than 0, got 0",
        ]
    );
}

#[test]
fn blocks_of_the_wrong_kind_are_reported() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.problems("settings: [1]\nteams: backend\ndatabase: 3\n"),
        [
            "settings: expected a mapping of settings, got a list",
            "teams: expected a mapping of team name to team settings, got \"backend\"",
            "database: expected a mapping of database settings, got 3",
        ]
    );
    assert_eq!(
        fixture.problem("teams:\n  a: /tmp\n"),
        "teams.a: expected a mapping of team settings (at least 'path'), got \"/tmp\""
    );
    assert_eq!(
        fixture.problem("- a\n- b\n"),
        "expected a mapping with 'settings', 'teams', 'database' or 'dashboard', got a list"
    );
}

#[test]
fn duplicate_keys_are_errors() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.problems("teams:\n  a:\n    path: /tmp\n  a:\n    path: /tmp\nsettings:\n  maxProcesses: 1\n  maxProcesses: 2\n"),
        [
            "teams.a: duplicate key (first written on line 2)",
            "settings.maxProcesses: duplicate key (first written on line 7)",
        ]
    );
}

#[test]
fn null_teams_mean_no_teams() {
    let fixture = Fixture::new();
    let config = fixture.load("settings:\n  maxProcesses: 2\nteams:\n  # add teams here\n");
    assert!(config.teams.is_empty());
    assert_eq!(config.settings.max_processes, 2);
    let config = fixture.load("teams: ~\n");
    assert!(config.teams.is_empty());
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    let fixture = Fixture::new();
    let error = fixture
        .load_with("settings:\n  maxProcesses: 3\n bad: indent\n", &[])
        .expect_err("syntax error");
    let ConfigError::Syntax {
        path,
        position,
        message,
    } = &error
    else {
        panic!("expected a syntax error, got {error:?}");
    };
    assert_eq!(*path, fixture.config_path());
    assert_eq!(position.map(|position| position.line), Some(3));
    assert!(!message.contains("at line"), "{message}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:{}: invalid YAML: {message}",
            fixture.config_path().display(),
            position.expect("position")
        )
    );

    let error = fixture.error_text("teams:\n  a: {path: \"/tmp}\n");
    assert!(
        error.starts_with(&format!("{}:2:", fixture.config_path().display())),
        "{error}"
    );
    assert!(error.contains("invalid YAML"), "{error}");
}

#[test]
fn a_second_document_is_refused() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.error_text("settings: {}\n---\nteams: {}\n"),
        format!(
            "{}:3:1: invalid YAML: the file holds more than one YAML document ('---'); Iris reads exactly one",
            fixture.config_path().display()
        )
    );
}

// ----------------------------------------------------------------------------------------------
// Teams.

#[test]
fn bad_team_names_are_rejected() {
    let fixture = Fixture::new();
    let yaml = "teams:\n  a/b: {path: /tmp}\n  a;b: {path: /tmp}\n  ..: {path: /tmp}\n  \"\": {path: /tmp}\n  ok: {path: /tmp}\n";
    assert_eq!(
        fixture.problems(yaml),
        [
            "teams.\"a/b\": team name \"a/b\" contains '/', which is not allowed (use letters, digits, '-', '_' and '.')",
            "teams.\"a;b\": team name \"a;b\" contains ';', which is not allowed (use letters, digits, '-', '_' and '.')",
            "teams.\"..\": team name \"..\" starts with '.'; it must start with a letter or a digit",
            "teams.\"\": team name is empty (use letters, digits, '-', '_' and '.')",
        ]
    );
}

#[test]
fn a_bad_team_name_does_not_hide_problems_in_its_body() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.problems("teams:\n  a b:\n    path: /tmp\n    model: [x]\n"),
        [
            "teams.\"a b\": team name \"a b\" contains ' ', which is not allowed (use letters, digits, '-', '_' and '.')",
            "teams.\"a b\".model: expected a string, got a list",
        ]
    );
}

#[test]
fn team_path_must_be_given_and_be_an_existing_directory() {
    let fixture = Fixture::new();
    let file = fixture.file("conf/not-a-dir.txt", "x");
    let yaml = format!(
        "teams:\n  nopath:\n    description: x\n  empty:\n    path: \"\"\n  missing:\n    path: /definitely/not/here\n  file:\n    path: {}\n  nothing:\n",
        file.display()
    );
    assert_eq!(
        fixture.problems(&yaml),
        [
            "teams.nopath.path: missing required key: the team's project directory".to_owned(),
            "teams.empty.path: must not be empty: it is the team's project directory".to_owned(),
            "teams.missing.path: directory does not exist: /definitely/not/here".to_owned(),
            format!("teams.file.path: not a directory: {}", file.display()),
            "teams.nothing: expected a mapping of team settings (at least 'path'), got nothing"
                .to_owned(),
        ]
    );
}

#[test]
fn relative_team_paths_resolve_against_the_config_directory() {
    let fixture = Fixture::new();
    let sibling = fixture.dir("conf/sibling");
    let up = fixture.dir("up");
    let config = fixture.load("teams:\n  a: {path: sibling}\n  b: {path: ../up}\n  c: {path: .}\n");
    assert_eq!(team(&config, "a").path, sibling);
    assert_eq!(team(&config, "b").path, up);
    assert_eq!(team(&config, "c").path, fixture.root.join("conf"));

    let missing = fixture.problem("teams:\n  a: {path: ../gone}\n");
    assert_eq!(
        missing,
        format!(
            "teams.a.path: directory does not exist: {} (written as \"../gone\")",
            fixture.root.join("conf/../gone").display()
        )
    );
}

#[test]
fn tilde_expands_to_home() {
    let fixture = Fixture::new();
    let project = fixture.dir("home/code/app");
    let config = fixture.load(
        "settings:\n  claudePath: ~/.local/bin/claude\nteams:\n  app: {path: ~/code/app}\n  home: {path: \"~\"}\n",
    );
    assert_eq!(team(&config, "app").path, project);
    assert_eq!(team(&config, "home").path, fixture.home());
    let expected = fixture
        .home()
        .join(".local/bin/claude")
        .display()
        .to_string();
    assert_eq!(
        config.settings.claude_path.as_deref(),
        Some(expected.as_str())
    );

    assert_eq!(
        fixture.problem("teams:\n  home: {path: ~}\n"),
        "teams.home.path: is null: a bare ~ means null in YAML; write \"~\" for the home directory"
    );
    assert_eq!(
        fixture.problem("teams:\n  app: {path: ~bob/code}\n"),
        "teams.app.path: \"~bob/code\": '~user' paths are not supported; write the full path"
    );
}

#[test]
fn symlinked_team_paths_are_canonicalized() {
    let fixture = Fixture::new();
    let real = fixture.dir("real/project");
    let link = fixture.root.join("conf/link");
    std::os::unix::fs::symlink(&real, &link).expect("create symlink");
    let config = fixture.load("teams:\n  a: {path: link}\n  b: {path: link/../../real/project}\n");
    assert_eq!(team(&config, "a").path, real);
    assert_eq!(team(&config, "b").path, real);
}

#[test]
fn grant_permission_yes_and_no_are_strings() {
    let fixture = Fixture::new();
    let config = fixture.load(
        "teams:\n  y: {path: /tmp, grantPermission: yes}\n  n: {path: /tmp, grantPermission: no}\n  a: {path: /tmp, grantPermission: ask}\n  f: {path: /tmp, grantPermission: forward}\n  d: {path: /tmp}\n  q: {path: /tmp, grantPermission: \"yes\"}\n",
    );
    let grant = |name: &str| team(&config, name).grant_permission;
    assert_eq!(grant("y"), GrantPermission::Yes);
    assert_eq!(grant("n"), GrantPermission::No);
    assert_eq!(grant("a"), GrantPermission::Ask);
    assert_eq!(grant("f"), GrantPermission::Forward);
    assert_eq!(grant("d"), GrantPermission::Ask);
    assert_eq!(grant("q"), GrantPermission::Yes);
    assert_eq!(GrantPermission::Forward.as_str(), "forward");

    assert_eq!(
        fixture.problems("teams:\n  t: {path: /tmp, grantPermission: true}\n  u: {path: /tmp, grantPermission: maybe}\n"),
        [
            "teams.t.grantPermission: expected one of yes, no, ask, forward, got true",
            "teams.u.grantPermission: expected one of yes, no, ask, forward, got \"maybe\"",
        ]
    );
}

#[test]
fn tool_lists_accept_lists_and_strings() {
    let fixture = Fixture::new();
    let yaml = r#"
teams:
  a:
    path: /tmp
    allowedTools: Read,Edit  Bash(npm run test:*)
    disallowedTools: [WebFetch, " Bash(rm:*) "]
  b:
    path: /tmp
    allowedTools: [Read]
    disallowedTools: ""
"#;
    let config = fixture.load(yaml);
    assert_eq!(
        team(&config, "a").allowed_tools,
        ["Read", "Edit", "Bash(npm run test:*)"]
    );
    assert_eq!(
        team(&config, "a").disallowed_tools,
        ["WebFetch", "Bash(rm:*)"]
    );
    assert_eq!(team(&config, "b").allowed_tools, ["Read"]);
    assert!(team(&config, "b").disallowed_tools.is_empty());

    assert_eq!(
        fixture.problems("teams:\n  a:\n    path: /tmp\n    allowedTools: [Read, \"\", [x], ~]\n"),
        [
            "teams.a.allowedTools[1]: empty tool name",
            "teams.a.allowedTools[2]: expected a tool name, got a list",
            "teams.a.allowedTools[3]: empty tool name",
        ]
    );
}

#[test]
fn permission_mode_color_and_env_are_checked() {
    let fixture = Fixture::new();
    let yaml = r##"
teams:
  a:
    path: /tmp
    permissionMode: acceptEdit
    color: "#12345"
    env:
      1BAD: x
      __iris_d: /
      EMPTY:
      LIST: [1]
"##;
    assert_eq!(
        fixture.problems(yaml),
        [
            "teams.a.permissionMode: expected one of default, acceptEdits, plan, dontAsk, bypassPermissions, manual, auto, got \"acceptEdit\"; did you mean 'acceptEdits'?",
            "teams.a.color: expected a color like \"#336699\" (#rrggbb), got \"#12345\"",
            "teams.a.env.1BAD: invalid environment variable name \"1BAD\" (use letters, digits and '_', not starting with a digit)",
            "teams.a.env.__iris_d: names starting with \"__iris_\" are reserved for the wrapper that runs a remote team's agent",
            "teams.a.env.EMPTY: expected a value, got nothing (write \"\" for an empty value)",
            "teams.a.env.LIST: expected a string, number or boolean, got a list",
        ]
    );
    let config = fixture.load(
        "teams:\n  a:\n    path: /tmp\n    permissionMode: bypassPermissions\n    color: '#a0B1c2'\n    env: {EMPTY: \"\", HEX: 0x1F, BIG: 1e3, OCT: 0755}\n",
    );
    let a = team(&config, "a");
    assert_eq!(a.permission_mode.as_deref(), Some("bypassPermissions"));
    assert_eq!(a.color.as_deref(), Some("#a0B1c2"));
    assert_eq!(a.env["EMPTY"], "");
    assert_eq!(a.env["HEX"], "0x1F");
    assert_eq!(a.env["BIG"], "1e3");
    assert_eq!(a.env["OCT"], "0755");
}

// ----------------------------------------------------------------------------------------------
// Warnings for Iris MCP keys without effect.

#[test]
fn each_inert_iris_key_warns_exactly_once() {
    let fixture = Fixture::new();
    let yaml = r#"
settings:
  sessionInitTimeout: 30000
  defaultTransport: http
  wonderLoggerConfig: ./wonder-logger.yaml
  sessionMcpEnabled: true
  sessionMcpPath: .claude/iris/mcp
  permissionTimeout: ${UNSET_BUT_IGNORED}
dashboard:
  enabled: true
  host: localhost
  http: 3100
  https: 0
  selfsigned: false
  certPath: /c
  keyPath: /k
teams:
  a:
    path: /tmp
    sessionInitTimeout: 1000
    mcpConfigScript: ./x.sh
    sessionMcpEnabled: true
    sessionMcpPath: .x
"#;
    let config = fixture.load(yaml);
    assert_eq!(
        warning_keys(&config),
        [
            "settings.sessionInitTimeout",
            "settings.defaultTransport",
            "settings.wonderLoggerConfig",
            "settings.sessionMcpEnabled",
            "settings.sessionMcpPath",
            "settings.permissionTimeout",
            "dashboard.host",
            "dashboard.http",
            "dashboard.https",
            "dashboard.selfsigned",
            "dashboard.certPath",
            "dashboard.keyPath",
            "teams.a.sessionInitTimeout",
            "teams.a.mcpConfigScript",
            "teams.a.sessionMcpEnabled",
            "teams.a.sessionMcpPath",
        ]
    );
    assert_eq!(
        config.warnings[0].to_string(),
        "settings.sessionInitTimeout: has no effect in this build: Iris creates sessions without a one-shot `claude --print` run, so there is nothing to time out"
    );
    assert_eq!(
        config.warnings[0].position,
        Some(Position { line: 3, column: 3 })
    );
    assert!(
        config
            .warnings
            .iter()
            .all(|warning| warning.message.starts_with("has no effect in this build: "))
    );
}

#[test]
fn the_old_iris_template_loads() {
    // The shape of Iris MCP's default.config.yaml: placeholders everywhere, comment-only teams.
    let fixture = Fixture::new();
    let yaml = r#"
settings:
  sessionInitTimeout: ${IRIS_SESSION_INIT_TIMEOUT:-30000}
  spawnTimeout: ${IRIS_SPAWN_TIMEOUT:-20000}
  responseTimeout: ${IRIS_RESPONSE_TIMEOUT:-120000}
  idleTimeout: ${IRIS_IDLE_TIMEOUT:-3600000}
  maxProcesses: ${IRIS_MAX_PROCESSES:-10}
  healthCheckInterval: ${IRIS_HEALTH_CHECK_INTERVAL:-30000}
  httpPort: ${IRIS_HTTP_PORT:-1615}
  defaultTransport: ${IRIS_DEFAULT_TRANSPORT:-http}
  wonderLoggerConfig: ${IRIS_WONDER_LOGGER_CONFIG:-./wonder-logger.yaml}
  hotReloadConfig: true
  sessionMcpEnabled: ${IRIS_SESSION_MCP_ENABLED:-false}
  sessionMcpPath: ${IRIS_SESSION_MCP_PATH:-.claude/iris/mcp}
dashboard:
  enabled: ${IRIS_DASHBOARD_ENABLED:-true}
  host: ${IRIS_DASHBOARD_HOST:-localhost}
  http: ${IRIS_DASHBOARD_HTTP:-3100}
  https: ${IRIS_DASHBOARD_HTTPS:-0}
  selfsigned: ${IRIS_DASHBOARD_SELFSIGNED:-false}
database:
  path: ${IRIS_DB_PATH:-data/team-sessions.db}
  inMemory: ${IRIS_DB_IN_MEMORY:-false}
teams:
  # team-alpha:
  #   path: /path/to/project
"#;
    let config = fixture
        .load_with(yaml, &[("IRIS_HTTP_PORT", "9999")])
        .expect("template");
    assert_eq!(config.settings.http_port, 9999);
    assert_eq!(config.settings.idle_timeout, Duration::from_secs(3600));
    assert!(config.settings.hot_reload_config);
    assert_eq!(
        config.database.path,
        fixture.iris_home().join("data/team-sessions.db")
    );
    assert!(config.teams.is_empty());
    // 9 inert old-Iris keys (hotReloadConfig and dashboard.enabled are served, so they get
    // no warning).
    assert_eq!(config.warnings.len(), 9);
    assert!(config.settings.dashboard_enabled);
}

#[test]
fn database_path_resolves_against_iris_home() {
    let fixture = Fixture::new();
    let config = fixture.load("database:\n  path: /var/lib/iris.db\n  inMemory: true\n");
    assert_eq!(config.database.path, Path::new("/var/lib/iris.db"));
    assert!(config.database.in_memory);
    let config = fixture.load("database:\n  path: ~/iris.db\n");
    assert_eq!(config.database.path, fixture.home().join("iris.db"));
    let config = fixture.load("database:\n  path: db/x.db\n");
    assert_eq!(config.database.path, fixture.iris_home().join("db/x.db"));
}

#[test]
fn database_limits_accept_numbers_fractions_and_interpolated_text() {
    let fixture = Fixture::new();
    let config = fixture.load("database:\n  retentionDays: 0.5\n  maxTranscriptEntries: 0\n");
    assert_eq!(config.database.retention, Duration::from_secs(12 * 3600));
    assert_eq!(config.database.max_transcript_entries, 0);
    let yaml = "database:\n  retentionDays: ${DAYS}\n  maxStoredTextBytes: ${BYTES:-}\n";
    let config = fixture
        .load_with(yaml, &[("DAYS", "90")])
        .expect("interpolated limits");
    assert_eq!(
        config.database.retention,
        Duration::from_secs(90 * 24 * 3600)
    );
    // Empty after interpolation: the default stays.
    assert_eq!(
        config.database.max_text_bytes,
        DatabaseConfig::DEFAULT_MAX_TEXT_BYTES
    );
}

#[test]
fn database_limits_out_of_range_are_reported() {
    let fixture = Fixture::new();
    let yaml = r#"
database:
  retentionDays: 0
  maxStoredTextBytes: 100
  maxTranscriptEntries: -1
"#;
    assert_eq!(
        fixture.problems(yaml),
        [
            "database.retentionDays: must be greater than 0 and at most 36500 days, got 0",
            "database.maxStoredTextBytes: must be at least 1024, got 100",
            "database.maxTranscriptEntries: expected a positive integer, got -1",
        ]
    );
    for (value, shown) in [
        ("-3", "-3"),
        ("100000", "100000"),
        ("\"a week\"", "\"a week\""),
        ("true", "true"),
        ("[1]", "a list"),
    ] {
        let problem = fixture.problem(&format!("database:\n  retentionDays: {value}\n"));
        assert!(
            problem.starts_with("database.retentionDays: ") && problem.ends_with(shown),
            "{value}: {problem}"
        );
    }
}

#[test]
fn every_problem_line_names_the_file_and_position() {
    let fixture = Fixture::new();
    let text =
        fixture.error_text("settings:\n  maxProcesses: 0\nteams:\n  x:\n    path: /nope/nope\n");
    let file = fixture.config_path().display().to_string();
    assert_eq!(
        text,
        format!(
            "{file}:2:17: settings.maxProcesses: must be at least 1, got 0\n{file}:5:11: teams.x.path: directory does not exist: /nope/nope"
        )
    );
}

#[test]
fn teams_can_share_settings_through_anchors_under_x_keys() {
    let fixture = Fixture::new();
    let yaml = r#"
x-defaults: &defaults
  grantPermission: yes
  model: sonnet
teams:
  a:
    <<: *defaults
    path: /tmp
  b:
    <<: *defaults
    path: /tmp
    model: opus
"#;
    let config = fixture.load(yaml);
    assert_eq!(team(&config, "a").grant_permission, GrantPermission::Yes);
    assert_eq!(team(&config, "a").model.as_deref(), Some("sonnet"));
    assert_eq!(team(&config, "b").model.as_deref(), Some("opus"));
    assert!(config.warnings.is_empty());
}

#[test]
fn bearer_tokens_are_read_checked_and_never_printed() {
    let fixture = Fixture::new();
    let web = fixture.dir("web").display().to_string();
    let api = fixture.dir("api").display().to_string();
    let config = fixture.load_with(
        &format!(
            "settings:\n  httpToken: ${{SERVER_TOKEN}}\nteams:\n  web:\n    path: {web}\n    token: web-team-token-0123456789\n  api:\n    path: {api}\n"
        ),
        &[("SERVER_TOKEN", "server-token-0123456789")],
    );
    let config = match config {
        Ok(config) => config,
        Err(error) => panic!("config should load, got:\n{error}"),
    };
    let server = config.settings.http_token.as_ref().expect("httpToken");
    assert!(server.matches("server-token-0123456789"));
    assert!(!server.matches("server-token-012345678"));
    assert!(!server.matches("server-token-0123456780"));
    assert!(
        team(&config, "web")
            .token
            .as_ref()
            .expect("token")
            .matches("web-team-token-0123456789")
    );
    assert_eq!(team(&config, "api").token, None);
    let printed = format!("{config:?}");
    assert!(!printed.contains("web-team-token"), "{printed}");
    assert!(!printed.contains("server-token"), "{printed}");
    assert!(printed.contains("Secret(<redacted>)"));

    let short = fixture.problem(&format!(
        "teams:\n  web:\n    path: {web}\n    token: short\n"
    ));
    assert!(
        short.starts_with(
            "teams.web.token: is too short (5 characters): a bearer token needs at least 16"
        ),
        "{short}"
    );
    let spaced = fixture.problem("settings:\n  httpToken: \"has a space in it, 0123456789\"\n");
    assert!(
        spaced.contains(
            "settings.httpToken: may hold only printable ASCII characters without spaces"
        ),
        "{spaced}"
    );
    let same = fixture.problem(&format!(
        "settings:\n  httpToken: same-token-0123456789\nteams:\n  web:\n    path: {web}\n    token: same-token-0123456789\n"
    ));
    assert!(
        same.starts_with("teams.web.token: is the same token as settings.httpToken"),
        "{same}"
    );
}

#[test]
fn permission_rules_are_parsed_and_each_bad_one_is_reported_where_it_is() {
    let fixture = Fixture::new();
    let config = fixture.load(
        r#"
settings:
  permissions:
    deny: ["Bash(rm:*)"]
teams:
  a:
    path: /tmp
    permissions:
      allow: [Read, "Write(notes/**)", "Bash(git status:*)"]
      ask: ["mcp__iris__send_message"]
"#,
    );
    let rules = |list: &[crate::permissions::Rule]| {
        list.iter()
            .map(|rule| rule.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(&config.settings.permissions.deny), ["Bash(rm:*)"]);
    let a = team(&config, "a");
    assert_eq!(
        rules(&a.permissions.allow),
        ["Read", "Write(notes/**)", "Bash(git status:*)"]
    );
    assert_eq!(rules(&a.permissions.ask), ["mcp__iris__send_message"]);
    assert!(a.permissions.deny.is_empty());

    let yaml = r#"
teams:
  a:
    path: /tmp
    permissions:
      allow: ["Edit(src/**", Read, ""]
      denny: [Bash]
      ask: Bash
"#;
    assert_eq!(
        fixture.problems(yaml),
        [
            "teams.a.permissions.allow[0]: rule \"Edit(src/**\" must end with ')': write Tool or Tool(specifier)",
            "teams.a.permissions.allow[2]: empty rule",
            "teams.a.permissions.denny: unknown key; did you mean 'deny'?",
            "teams.a.permissions.ask: expected a list of rules, such as [Read, \"Edit(src/**)\", \"Bash(git status:*)\"]",
        ]
    );
    // Positions: the line of the bad rule.
    let text = fixture
        .load_with(yaml, &[])
        .expect_err("invalid")
        .to_string();
    assert!(text.contains("config.yaml:6:"), "{text}");
}

#[test]
fn approval_settings_are_read_per_team_and_checked() {
    let fixture = Fixture::new();
    let backend = fixture.dir("projects/backend");
    let config = fixture.load(&format!(
        "settings:\n  approvalTimeout: 2m\n  forwardFallback: deny\nteams:\n  backend:\n    path: {}\n    grantPermission: forward\n    approvalTimeout: 30s\n",
        backend.display()
    ));
    assert_eq!(config.settings.approval_timeout, Duration::from_secs(120));
    assert_eq!(config.settings.forward_fallback, ForwardFallback::Deny);
    let team = team(&config, "backend");
    assert_eq!(team.approval_timeout, Some(Duration::from_secs(30)));
    assert_eq!(team.grant_permission, GrantPermission::Forward);
    let problem = fixture.problem("settings:\n  forwardFallback: maybe\n");
    assert_eq!(
        problem,
        "settings.forwardFallback: expected ask or deny, got \"maybe\""
    );
    let problem = fixture.problem("settings:\n  approvalTimeout: soon\n");
    assert_contains_text(&problem, "settings.approvalTimeout");
}

fn assert_contains_text(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in {haystack:?}"
    );
}
