//! Remote teams over a real ssh: a private `sshd` on 127.0.0.1 (`tests/common/sshd.rs`), the
//! "remote" host being this machine with another HOME and directory, the real Claude Code
//! CLI answering from the fake Messages API, and a real `iris serve`.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
#[path = "e2e/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::sshd::Sshd;
use common::{assert_contains, call, typed, wait_for};
use iris::api::{CallerStatus, Deleted, Fork, MessageOutcome};
use iris::store::MessageState;
use serde_json::json;
use support::{Client, RealWorld, ask, connect, message};

/// Sends without waiting (`timeout: 0`): the message id comes back at once.
async fn send(client: &Client, from: &str, to: &str, message: &str) -> MessageOutcome {
    typed(
        &client
            .call_tool(call(
                "send_message",
                json!({"fromTeam": from, "toTeam": to, "message": message, "timeout": 0}),
            ))
            .await
            .unwrap(),
    )
}

/// A world with the remote team `far` in `~/far` on `sshd`'s host.
async fn far_world(sshd: &Sshd) -> RealWorld {
    let mut world = RealWorld::new().await;
    std::fs::create_dir_all(sshd.remote_home().join("far")).unwrap();
    let dir = sshd.remote_home().join("far").display().to_string();
    world.remote_team("far", &sshd.remote_value(), &dir);
    world
}

/// Asks `check` until it gives a value (polling: the MCP client gets no event for it), for
/// at most 60 s.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until no process started by `sshd`'s sessions is left on the host.
async fn nothing_left_on(sshd: &Sshd) {
    wait_for("no process left on the host", || {
        sshd.remote_processes().is_empty()
    })
    .await;
}

/// Live processes with an argument containing `fragment` (a path unique to one test).
fn processes_naming(fragment: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| iris::process::running(*pid))
        .filter(|pid| cmdline(*pid).iter().any(|arg| arg.contains(fragment)))
        .collect()
}

/// The arguments of process `pid`.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&byte| byte == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// The `--mcp-config` file of the remote claude, found in its arguments.
fn remote_mcp_config(sshd: &Sshd) -> Option<PathBuf> {
    sshd.remote_processes().into_iter().find_map(|pid| {
        cmdline(pid)
            .into_iter()
            .find_map(|arg| arg.strip_prefix("--mcp-config=").map(PathBuf::from))
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A directory on the "host" whose name no shell would take unquoted.
const HOSTILE: &str = "it's a \"dir\" $HOME `id` ;&| (x)";

/// Ask and tell a remote team in a hostile directory: answers, history kept, its MCP config
/// a private file on the host removed at stop, a resume after an Iris restart, the fork
/// command, and `session_delete` removing the transcript on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_team_answers_keeps_its_history_and_resumes_after_a_restart() {
    let sshd = Sshd::start();
    let mut world = RealWorld::new().await;
    let dir = sshd.remote_home().join(HOSTILE);
    std::fs::create_dir_all(&dir).unwrap();
    world.team("home");
    world.remote_team("far", &sshd.remote_value(), &dir.display().to_string());
    let (mut server, url) = world.serve();
    let client = connect(&url).await;

    let first = ask(&client, "home", "far", "the word is ochre").await;
    assert_eq!(first.status, CallerStatus::Completed, "{first:?}");
    assert_eq!(
        first.answer.as_deref(),
        Some("fake answer to: the word is ochre")
    );
    // The agent runs on the host, in the hostile directory, with the host's HOME.
    let claude = sshd
        .remote_processes()
        .into_iter()
        .find(|pid| {
            cmdline(*pid)
                .iter()
                .any(|arg| arg.starts_with("--session-id="))
        })
        .expect("a claude on the host");
    assert_eq!(
        std::fs::read_link(format!("/proc/{claude}/cwd")).unwrap(),
        dir
    );
    // The control socket lives in a directory only this user can enter.
    let sockets = world.dir.path().join("iris/run/ssh");
    assert_eq!(mode(&sockets), 0o700);
    let config = remote_mcp_config(&sshd).expect("the agent's MCP config on the host");
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(config.parent().unwrap()), 0o700);
    assert!(
        config.starts_with(sshd.remote_tmp()),
        "{} not in TMPDIR",
        config.display()
    );
    assert_contains(&std::fs::read_to_string(&config).unwrap(), "/mcp/s/");

    let tell = send(&client, "home", "far", "remember: the colour is teal").await;
    let _ = tell.message_id;
    let history = ask(&client, "home", "far", "what do you know? [[history]]").await;
    let text = history.answer.unwrap();
    assert_contains(&text, "the word is ochre");
    assert_contains(&text, "the colour is teal");

    // Iris stops: the agent on the host stops, and its MCP config goes with it.
    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    nothing_left_on(&sshd).await;
    assert!(!config.exists(), "{} left on the host", config.display());
    assert!(!config.parent().unwrap().exists());

    // A new Iris resumes the conversation on the host.
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let resumed = ask(&client, "home", "far", "and now? [[history]]").await;
    assert_eq!(resumed.status, CallerStatus::Completed, "{resumed:?}");
    let text = resumed.answer.unwrap();
    assert_contains(&text, "the word is ochre");
    assert_eq!(resumed.session_id, first.session_id, "the same session");

    let fork: Fork = typed(
        &client
            .call_tool(call(
                "session_fork",
                json!({"fromTeam": "home", "toTeam": "far"}),
            ))
            .await
            .unwrap(),
    );
    let session = first.session_id.unwrap();
    assert!(fork.command.starts_with("ssh -t -F "), "{}", fork.command);
    assert_contains(
        &fork.command,
        &format!("iris-test-remote 'cd '\\''{}", sshd.remote_home().display()),
    );
    assert_contains(
        &fork.command,
        &format!("--resume={session} --fork-session'"),
    );

    let transcripts = |home: &Path| -> Vec<PathBuf> {
        let projects = home.join(".claude/projects");
        std::fs::read_dir(&projects)
            .map(|dirs| {
                dirs.flatten()
                    .map(|dir| dir.path().join(format!("{session}.jsonl")))
                    .filter(|path| path.is_file())
                    .collect()
            })
            .unwrap_or_default()
    };
    let on_host = transcripts(&sshd.remote_home());
    assert_eq!(on_host.len(), 1, "the transcript is on the host");
    let deleted: Deleted = typed(
        &client
            .call_tool(call(
                "session_delete",
                json!({"fromTeam": "home", "toTeam": "far", "deleteTranscript": true}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(deleted.deleted_session_id, Some(session));
    assert_eq!(deleted.deleted_transcript.as_ref(), Some(&on_host[0]));
    assert!(transcripts(&sshd.remote_home()).is_empty());

    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    nothing_left_on(&sshd).await;
    wait_for("no agent left", || world.live_processes().is_empty()).await;
}

/// The remote agent calls Iris back through the tunnel and is known as its own team; two
/// teams that reach the host in different ways get two tunnels that do not collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_agent_calls_back_through_the_tunnel_as_its_team() {
    let sshd = Sshd::start();
    let mut world = RealWorld::new().await;
    for name in ["far", "far2"] {
        std::fs::create_dir_all(sshd.remote_home().join(name)).unwrap();
        let dir = sshd.remote_home().join(name).display().to_string();
        world.remote_team(name, &sshd.remote_value(), &dir);
    }
    // Another way to reach the same host: its own master, its own tunnel.
    world
        .config
        .teams
        .values_mut()
        .find(|team| team.name.as_str() == "far2")
        .unwrap()
        .remote
        .as_mut()
        .unwrap()
        .compression = true;
    world.team("local");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let mut ports = Vec::new();
    for name in ["far", "far2"] {
        let relay = json!({"toTeam": "local", "message": format!("hello from {name}")});
        let answer = ask(
            &client,
            "home",
            name,
            &format!("ask local [[tool:mcp__iris__send_message:{relay}]]"),
        )
        .await;
        assert_eq!(answer.status, CallerStatus::Completed, "{answer:?}");
        let text = answer.answer.unwrap();
        assert_contains(&text, "[tool_result]");
        // Attributed to the remote team by its URL, not by anything it said.
        assert_contains(&text, &format!(r#""fromTeam":"{name}""#));
        assert_contains(&text, &format!("fake answer to: hello from {name}"));
        let config = std::fs::read_to_string(
            sshd.remote_processes()
                .into_iter()
                .filter_map(|pid| {
                    cmdline(pid)
                        .into_iter()
                        .find_map(|arg| arg.strip_prefix("--mcp-config=").map(PathBuf::from))
                })
                .find(|path| {
                    std::fs::read_to_string(path).is_ok_and(|text| {
                        !ports
                            .iter()
                            .any(|port: &String| text.contains(port.as_str()))
                    })
                })
                .unwrap(),
        )
        .unwrap();
        let port = config
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();
        // What the tunnel reaches is agent URLs only: nothing else for whoever else on
        // the host finds the port.
        let http = reqwest::Client::new();
        for path in [
            "/mcp",
            "/status",
            "/",
            "/metrics",
            "/approvals",
            "/mcp/s/not-a-token",
        ] {
            let status = http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{path}");
        }
        ports.push(port);
    }
    assert_eq!(ports.len(), 2);
    assert_ne!(ports[0], ports[1], "two tunnels, two ports");
    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    nothing_left_on(&sshd).await;
}

/// `kill -9` of Iris in the middle of a remote turn leaves nothing running on the host (nor
/// here: the guard ends the ssh processes, and the host's wrapper sees its connection go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_iris_mid_turn_leaves_no_remote_claude() {
    let sshd = Sshd::start();
    let world = far_world(&sshd).await;
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let pending = send(&client, "home", "far", "[[slow:600000]] never ends").await;
    let _ = pending.message_id;
    wait_for("the turn reaches the model", || {
        world.calls_for("never ends") == 1
    })
    .await;
    assert!(!sshd.remote_processes().is_empty());
    let iris_home = world.dir.path().join("iris");
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    nothing_left_on(&sshd).await;
    // Nor an ssh of Iris's here (found by the control socket path under this IRIS_HOME).
    let home = iris_home.display().to_string();
    wait_for("no ssh of this Iris left", || {
        common::reap_children();
        processes_naming(&home).is_empty()
    })
    .await;
}

/// The connection dies mid-turn (sshd's session processes killed): the turn fails at once
/// with a clear error, nothing is left on the host, and the next message reconnects and
/// resumes. A killed control master (its socket left stale) is replaced the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_fails_the_turn_at_once_and_the_next_one_reconnects() {
    let sshd = Sshd::start();
    let world = far_world(&sshd).await;
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    let first = ask(&client, "home", "far", "the word is ochre").await;
    assert_eq!(first.status, CallerStatus::Completed, "{first:?}");

    let pending = send(&client, "home", "far", "[[slow:600000]] cut me off").await;
    let id = pending.message_id.to_string();
    wait_for("the turn reaches the model", || {
        world.calls_for("cut me off") == 1
    })
    .await;
    sshd.kill_session_processes();
    let failed = until("the turn ended", || async {
        let view = message(&client, "home", &id).await;
        (view.state != MessageState::Running && view.state != MessageState::Queued).then_some(view)
    })
    .await;
    assert_eq!(failed.state, MessageState::Failed, "{failed:?}");
    let error = failed.error.clone().unwrap_or_default();
    // ssh's own words, and whose turn it was.
    assert_contains(&error, "home->far");
    assert_contains(&error, "exited during the turn");
    assert_contains(&error, "the ssh connection to iris-test-remote ended");
    nothing_left_on(&sshd).await;

    let again = ask(&client, "home", "far", "still there? [[history]]").await;
    assert_eq!(again.status, CallerStatus::Completed, "{again:?}");
    assert_contains(&again.answer.unwrap(), "the word is ochre");

    // The control master killed: its socket stays behind, stale; the next spawn replaces it.
    let socket_dir = world.dir.path().join("iris/run/ssh");
    let master = processes_naming(&socket_dir.display().to_string())
        .into_iter()
        .find(|pid| cmdline(*pid).iter().any(|arg| arg == "-M"))
        .expect("the control master, named by its socket under this IRIS_HOME");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(master).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the master gone", || !iris::process::running(master)).await;
    assert_eq!(
        std::fs::read_dir(&socket_dir)
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_type().unwrap().is_socket())
            .count(),
        1,
        "the stale socket is still there"
    );
    // The agent rode on the master: it is gone too, once Iris has seen it end (a message
    // written to it before then would fail with it, as with any agent that crashes); the
    // next message starts over.
    until(
        "Iris to see the agent whose master was killed end",
        || async {
            let status: iris::api::TeamStatusPage = common::typed(
                &client
                    .call_tool(call(
                        "team_status",
                        json!({"fromTeam": "home", "team": "far"}),
                    ))
                    .await
                    .unwrap(),
            );
            status.teams[0].pid.is_none().then_some(())
        },
    )
    .await;
    let after = ask(&client, "home", "far", "after the master died [[history]]").await;
    assert_eq!(after.status, CallerStatus::Completed, "{after:?}");
    assert_contains(&after.answer.unwrap(), "the word is ochre");

    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    nothing_left_on(&sshd).await;
}

use std::os::unix::fs::FileTypeExt as _;

/// `iris doctor` on remote teams: a good one, and each failure named with what to do.
#[test]
fn doctor_checks_each_remote_team() {
    let sshd = Sshd::start();
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("iris");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(sshd.remote_home().join("proj")).unwrap();
    let claude = common::real_claude();
    let old = root.path().join("old-claude");
    std::fs::write(&old, "#!/bin/sh\necho '1.0.0 (Claude Code)'\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = sshd.ssh_config_path().display().to_string();
    let wrong_key = sshd
        .ssh_config_with(&sshd.known_hosts_with_wrong_key(), &sshd.client_key_path())
        .display()
        .to_string();
    let no_key = sshd
        .ssh_config_with(&sshd.known_hosts_path(), &sshd.unauthorized_client_key())
        .display()
        .to_string();
    let refused = common::sshd::unused_port();
    let proj = sshd.remote_home().join("proj").display().to_string();
    let team = |name: &str, remote: &str, path: &str, claude: &Path| {
        format!(
            "  {name}:\n    path: {path:?}\n    remote: {remote:?}\n    claudePath: {:?}\n    remoteOptions:\n      connectTimeout: 5s\n",
            claude.display().to_string()
        )
    };
    let yaml = format!(
        "teams:\n{}{}{}{}{}{}{}{}",
        team(
            "good",
            &format!("ssh -F {config} iris-test-remote"),
            &proj,
            &claude
        ),
        team(
            "tilde",
            &format!("ssh -F {config} iris-test-remote"),
            "~/proj",
            &claude
        ),
        team(
            "unknown",
            &format!("ssh -F {config} no-such-host.invalid"),
            &proj,
            &claude
        ),
        team(
            "refused",
            &format!("ssh -F {config} -p {refused} iris-test-remote"),
            &proj,
            &claude
        ),
        team(
            "nokey",
            &format!("ssh -F {no_key} iris-test-remote"),
            &proj,
            &claude
        ),
        team(
            "changed",
            &format!("ssh -F {wrong_key} iris-test-remote"),
            &proj,
            &claude
        ),
        team(
            "nodir",
            &format!("ssh -F {config} iris-test-remote"),
            "~/missing",
            &claude
        ),
        team(
            "noclaude",
            &format!("ssh -F {config} iris-test-remote"),
            &proj,
            Path::new("/no/claude")
        ),
    ) + &team(
        "oldclaude",
        &format!("ssh -F {config} iris-test-remote"),
        &proj,
        &old,
    );
    let file = root.path().join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let output = Command::new(common::IRIS)
        .arg("doctor")
        .env("IRIS_HOME", &home)
        .env("IRIS_CONFIG_PATH", &file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    let line = |team: &str| -> String {
        text.lines()
            .find(|line| line.contains(&format!("team {team} (on ")))
            .unwrap_or_else(|| panic!("no line for {team} in:\n{text}"))
            .to_owned()
    };
    let claude_line = |team: &str| -> String {
        text.lines()
            .find(|line| line.contains(&format!("claude of team {team} (on ")))
            .unwrap_or_else(|| panic!("no claude line for {team} in:\n{text}"))
            .to_owned()
    };
    assert_contains(&line("good"), "reached iris-test-remote");
    assert_contains(&line("good"), &proj);
    assert_contains(&claude_line("good"), "2.1.");
    assert_contains(&line("tilde"), &proj);
    assert_contains(&line("unknown"), "the host name does not resolve");
    assert_contains(&line("refused"), "the connection was refused");
    assert_contains(&line("nokey"), "the host refused our keys");
    assert_contains(&line("changed"), "does not match the one in known_hosts");
    assert_contains(&line("nodir"), "no directory ~/missing there");
    assert_contains(
        &claude_line("noclaude"),
        "'/no/claude' not found on iris-test-remote",
    );
    assert_contains(&claude_line("oldclaude"), "older than 2.1.0");
    for team in ["unknown", "refused", "nokey", "changed"] {
        assert_contains(&line(team), &format!("team '{team}' on "));
    }
}

/// A host Iris cannot use fails the message at once (not after `spawnTimeout`), with an
/// error naming the team, the host and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_host_fails_the_message_at_once_with_what_to_do() {
    let sshd = Sshd::start();
    let mut world = RealWorld::new().await;
    // A failure found by waiting would take this long and say so.
    world.config.settings.spawn_timeout = std::time::Duration::from_secs(600);
    std::fs::create_dir_all(sshd.remote_home().join("proj")).unwrap();
    let proj = sshd.remote_home().join("proj").display().to_string();
    let config = common::sshd::shell_quote(&sshd.ssh_config_path().display().to_string());
    let no_key = common::sshd::shell_quote(
        &sshd
            .ssh_config_with(&sshd.known_hosts_path(), &sshd.unauthorized_client_key())
            .display()
            .to_string(),
    );
    let wrong_key = common::sshd::shell_quote(
        &sshd
            .ssh_config_with(&sshd.known_hosts_with_wrong_key(), &sshd.client_key_path())
            .display()
            .to_string(),
    );
    let refused = common::sshd::unused_port();
    let cases = [
        (
            "refused",
            format!("ssh -F {config} -p {refused} iris-test-remote"),
            proj.clone(),
            "the connection was refused",
        ),
        (
            "nokey",
            format!("ssh -F {no_key} iris-test-remote"),
            proj.clone(),
            "the host refused our keys",
        ),
        (
            "changed",
            format!("ssh -F {wrong_key} iris-test-remote"),
            proj.clone(),
            "does not match the one in known_hosts",
        ),
        (
            "unknown",
            format!("ssh -F {config} no-such-host.invalid"),
            proj.clone(),
            "the host name does not resolve",
        ),
        (
            "nodir",
            format!("ssh -F {config} iris-test-remote"),
            "~/not-there".to_owned(),
            "the team's directory is not there (no directory ~/not-there on iris-test-remote); create it on iris-test-remote, or fix teams.nodir.path",
        ),
        (
            "noclaude",
            format!("ssh -F {config} iris-test-remote"),
            proj.clone(),
            "the claude executable was not found (iris: claude executable /no/such/claude not found on iris-test-remote",
        ),
    ];
    for (name, remote, dir, _) in &cases {
        let team = world.remote_team(name, remote, dir);
        if *name == "noclaude" {
            team.claude_path = Some("/no/such/claude".to_owned());
        }
    }
    let pool = world.pool().await;
    for (name, _, _, expected) in &cases {
        let pair = pool.pair("home", name).unwrap();
        let error = pool
            .send(&pair, "hello".to_owned())
            .await
            .expect_err("the host cannot be used")
            .to_string();
        assert_contains(&error, &format!("team '{name}' on "));
        assert_contains(&error, expected);
        // Found from what ssh or the host said, not by waiting out spawnTimeout.
        assert!(!error.contains("spawnTimeout"), "{error}");
    }
    pool.shutdown().await;
    assert!(sshd.remote_processes().is_empty());
}

/// A remote team's permission rules see the paths of its tool calls as the host does: the
/// team's `~/…` directory resolved there, so a deny rule relative to it holds (and an allow
/// rule lets the write through while grantPermission is no).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_rules_resolve_against_the_directory_on_the_host() {
    let sshd = Sshd::start();
    let mut world = RealWorld::new().await;
    let real = sshd.remote_home().join("work/far");
    std::fs::create_dir_all(real.join("notes")).unwrap();
    let team = world.remote_team("far", &sshd.remote_value(), "~/work/far");
    team.grant_permission = iris::config::GrantPermission::No;
    team.permissions = support::rules(&["Write(notes/**)"], &["Write(notes/secret*)"]);
    let pool = world.pool().await;
    let pair = pool.pair("home", "far").unwrap();
    let write = |path: &Path| {
        format!(
            r#"write it [[tool:Write:{{"file_path":"{}","content":"from far"}}]]"#,
            path.display()
        )
    };
    let allowed = pool
        .send(&pair, write(&real.join("notes/a.md")))
        .await
        .unwrap();
    assert!(real.join("notes/a.md").exists(), "{:?}", allowed.result);
    let denied = pool
        .send(&pair, write(&real.join("notes/secret.txt")))
        .await
        .unwrap();
    assert!(!real.join("notes/secret.txt").exists());
    assert_contains(&denied.result.answer, "permissions.deny");
    pool.shutdown().await;
    nothing_left_on(&sshd).await;
}

/// A fixed `reverseMcpPort` that is taken on the host fails the message with what to do,
/// instead of an agent that cannot call back (ssh would only warn without
/// `ExitOnForwardFailure`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_tunnel_port_is_an_error_naming_the_fix() {
    let sshd = Sshd::start();
    let mut world = RealWorld::new().await;
    std::fs::create_dir_all(sshd.remote_home().join("far")).unwrap();
    let dir = sshd.remote_home().join("far").display().to_string();
    // The "host" is this machine: a port taken here is taken there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    world
        .remote_team("far", &sshd.remote_value(), &dir)
        .remote
        .as_mut()
        .unwrap()
        .reverse_mcp_port = Some(port);
    let pool = iris::pool::Pool::start(
        std::sync::Arc::new(world.config.clone()),
        iris::pool::PoolOptions {
            guard: None,
            callback_base: Some("http://127.0.0.1:9".to_owned()),
            tunnel_port: Some(9),
        },
    )
    .await
    .unwrap();
    let pair = pool.pair("home", "far").unwrap();
    let error = pool
        .send(&pair, "hello".to_owned())
        .await
        .expect_err("the tunnel cannot open")
        .to_string();
    assert_contains(&error, "team 'far' on iris-test-remote");
    assert_contains(
        &error,
        "the reverse tunnel for call-backs could not be opened",
    );
    assert_contains(&error, "reverseMcpPort");
    pool.shutdown().await;
    drop(taken);
    // No master left behind by the failed start.
    let socket_dir = world.dir.path().join("iris/run/ssh").display().to_string();
    wait_for("no master left", || {
        common::reap_children();
        processes_naming(&socket_dir).is_empty()
    })
    .await;
}

/// A session meant to go through a control master that is gone fails, saying so, instead of
/// quietly making a connection of its own (which would have no tunnel), also when `remote`
/// names a jump host; through a live master the same arguments work.
#[test]
fn a_session_without_its_master_never_connects_on_its_own() {
    let sshd = Sshd::start();
    let root = tempfile::tempdir().unwrap();
    let config = sshd.ssh_config_path().display().to_string();
    let mut remote = iris::config::RemoteConfig::new("iris-test-remote");
    // Jump through the host itself: a direct connection would work, so only the master
    // (or its absence) decides.
    remote.ssh_args = ["-F", &config, "-J", "iris-test-remote", "iris-test-remote"]
        .map(str::to_owned)
        .to_vec();
    let link = iris::remote::Link {
        socket: root.path().join("no-master"),
        tunnel: None,
        master: 0,
    };
    let through_link = || {
        Command::new("ssh")
            .args(iris::remote::session_args(
                &remote,
                Some(&link),
                "echo connected",
            ))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let output = through_link();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(255), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("connected"));
    assert_contains(&stderr, "iris-control-master-gone");

    // With a master on that socket, the very same arguments reach the host.
    let master = Command::new("ssh")
        .args(["-F", &config, "-f", "-N", "-M", "-S"])
        .arg(&link.socket)
        .args(["-o", "ControlPersist=no", "iris-test-remote"])
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(master.success());
    let output = through_link();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "connected",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exit = Command::new("ssh")
        .args(["-F", &config, "-S"])
        .arg(&link.socket)
        .args(["-O", "exit", "iris-test-remote"])
        .output()
        .unwrap();
    assert!(exit.status.success());
}
