//! The agent wrapper run by a real `sh` on this machine, as the host's login shell would run
//! it (no ssh needed: what ssh adds is the transport), and the ssh argument vectors.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::config::{TeamConfig, TeamName};

fn team(path: &str) -> TeamConfig {
    let mut team = TeamConfig::new(TeamName::new("far").expect("name"), PathBuf::from(path));
    team.remote = Some(RemoteConfig::new("box"));
    team
}

/// A stand-in for claude: prints its arguments, selected variables and the MCP config file
/// (with its mode), then echoes stdin lines until EOF; `sleep` children show whether its
/// group is killed.
fn fake_claude(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("fake claude's");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         for a in \"$@\"; do printf 'arg=%s\\n' \"$a\"; done\n\
         printf 'pwd=%s\\n' \"$(pwd)\"\n\
         printf 'secret=[%s]\\n' \"$SECRET\"\n\
         printf 'team=%s\\n' \"$IRIS_TEAM\"\n\
         for a in \"$@\"; do case \"$a\" in --mcp-config=*) f=${a#--mcp-config=}; \
           printf 'mcp=%s\\n' \"$(cat \"$f\")\"; printf 'mode=%s\\n' \"$(stat -c %a \"$f\")\"; \
           printf 'file=%s\\n' \"$f\";; esac; done\n\
         sleep 1000 &\n\
         printf 'child=%s\\n' \"$!\"\n\
         while IFS= read -r line; do printf 'got=%s\\n' \"$line\"; [ \"$line\" = exit ] && exit 7; done\n\
         sleep 1000\n",
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

struct Run {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Run {
    fn start(team: &TeamConfig, program: &str, args: &[String]) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(agent_command(team, program, args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("sh");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn write(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
        stdin.flush().expect("flush");
    }

    /// The next line starting with `prefix`, with its prefix removed.
    fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line starting with {prefix}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// Sends an empty preamble and waits for the end.
    fn ended(mut self) -> (Option<i32>, String) {
        self.write(&preamble(&[], None));
        self.wait()
    }

    fn wait(mut self) -> (Option<i32>, String) {
        drop(self.child.stdin.take());
        let output = self.child.wait_with_output().expect("wait");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Waits for `condition` (polling: these are processes of a shell, not ours to await),
/// for at most 20 s; whether it came.
fn came(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn gone(pid: u32) -> bool {
    came(|| !crate::process::running(pid))
}

#[test]
fn the_wrapper_runs_the_agent_in_a_hostile_directory_with_its_environment_from_stdin() {
    let root = tempfile::tempdir().expect("tempdir");
    let hostile = root.path().join("it's a \"dir\" $HOME `id` ;&|\nnew line");
    std::fs::create_dir(&hostile).expect("mkdir");
    let claude = fake_claude(root.path());
    let team = team(&hostile.to_string_lossy());
    let args = vec![
        "--print".to_owned(),
        "--append-system-prompt=it's $(rm -rf /) `x` 100%".to_owned(),
    ];
    let mut run = Run::start(&team, &claude.to_string_lossy(), &args);
    let secret = "line one\nit's 100% $HOME `x` \\n end\n";
    let env = vec![
        ("SECRET".to_owned(), secret.to_owned()),
        ("IRIS_TEAM".to_owned(), "far".to_owned()),
    ];
    run.write(&preamble(
        &env,
        Some(r#"{"mcpServers":{"iris":{"type":"http","url":"http://127.0.0.1:9/mcp/s/t"}}}"#),
    ));
    assert_eq!(run.expect("arg="), "--print");
    assert_eq!(run.expect("arg="), args[1]);
    let config_arg = run.expect("arg=");
    assert!(config_arg.starts_with("--mcp-config="), "{config_arg}");
    // `pwd` prints the hostile name whole (its newline splits it over two lines here).
    assert_eq!(
        run.expect("pwd="),
        hostile.to_string_lossy().lines().next().expect("line")
    );
    assert_eq!(run.expect("secret=["), "line one");
    assert_eq!(run.expect(""), "it's 100% $HOME `x` \\n end");
    assert_eq!(run.expect("team="), "far");
    assert!(run.expect("mcp=").contains("/mcp/s/t"));
    assert_eq!(run.expect("mode="), "600");
    let file = PathBuf::from(run.expect("file="));
    assert!(file.is_file());
    let child: u32 = run.expect("child=").parse().expect("pid");
    // After the preamble, stdin is the agent's.
    run.write("hello\n");
    assert_eq!(run.expect("got="), "hello");
    // EOF on stdin (Iris stopped the agent, or the connection dropped): the whole group
    // goes, the agent's own children too, and the MCP config with its directory.
    let (code, stderr) = run.wait();
    assert_eq!(code, Some(143), "{stderr}");
    assert!(gone(child), "the agent's child {child} outlived stdin");
    assert!(!file.exists(), "{} left behind", file.display());
    assert!(!file.parent().expect("dir").exists());
}

#[test]
fn the_environment_applies_before_the_directory_and_claude_are_looked_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let claude = fake_claude(&bin);
    let home = root.path().join("elsewhere");
    std::fs::create_dir_all(home.join("proj")).expect("mkdir");
    // `~/proj` under the team's HOME, and claude found on the team's PATH, as `iris doctor`
    // looks them up.
    let team = team("~/proj");
    let name = claude
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut run = Run::start(&team, &name, &[]);
    let env = vec![
        ("HOME".to_owned(), home.display().to_string()),
        (
            "PATH".to_owned(),
            format!("{}:/usr/bin:/bin", bin.display()),
        ),
    ];
    run.write(&preamble(&env, None));
    assert_eq!(run.expect("pwd="), home.join("proj").display().to_string());
    let (code, _) = run.wait();
    assert_eq!(code, Some(143));
}

#[test]
fn the_agent_ending_by_itself_ends_the_wrapper_with_its_status() {
    let root = tempfile::tempdir().expect("tempdir");
    let claude = fake_claude(root.path());
    let team = team(&root.path().to_string_lossy());
    let mut run = Run::start(&team, &claude.to_string_lossy(), &[]);
    run.write(&preamble(&[], None));
    let child: u32 = run.expect("child=").parse().expect("pid");
    run.write("exit\n");
    assert_eq!(run.expect("got="), "exit");
    // The agent exited (7): `cat` still waits on stdin, but the wrapper kills the group and
    // ends with the agent's status, so Iris sees the exit at once.
    let mut status = None;
    assert!(
        came(|| {
            status = run.child.try_wait().expect("try_wait");
            status.is_some()
        }),
        "the wrapper outlived its agent"
    );
    assert_eq!(status.and_then(|status| status.code()), Some(7));
    assert!(gone(child));
}

#[test]
fn a_missing_directory_or_claude_is_said_with_its_own_exit_code() {
    let root = tempfile::tempdir().expect("tempdir");
    let claude = fake_claude(root.path());
    let missing = team(&root.path().join("nope").to_string_lossy());
    let (code, stderr) = Run::start(&missing, &claude.to_string_lossy(), &[]).ended();
    assert_eq!(code, Some(EXIT_NO_DIRECTORY));
    let error = wrapper_failure(
        &missing,
        missing.remote.as_ref().expect("remote"),
        code,
        &stderr,
    )
    .expect("classified");
    assert_eq!(error.failure, Failure::NoDirectory);
    let text = error.to_string();
    assert!(
        text.starts_with(
            "team 'far' on box: the team's directory is not there (iris: no directory "
        ),
        "{text}"
    );
    assert!(text.contains("teams.far.path"), "{text}");

    let here = team(&root.path().to_string_lossy());
    let (code, stderr) = Run::start(&here, "/no/such/claude", &[]).ended();
    assert_eq!(code, Some(EXIT_NO_CLAUDE));
    let error = wrapper_failure(&here, here.remote.as_ref().expect("remote"), code, &stderr)
        .expect("classified");
    assert_eq!(error.failure, Failure::NoClaude);
    assert!(
        error
            .to_string()
            .contains("/no/such/claude not found on box"),
        "{error}"
    );
}

#[test]
fn the_command_is_one_line_for_any_login_shell() {
    let command = agent_command(
        &team("~/my app"),
        "claude",
        &["--append-system-prompt=be brief".to_owned()],
    );
    assert!(!command.contains('\n'), "{command}");
    assert!(command.starts_with("exec sh -c '"), "{command}");
}

#[test]
fn ssh_errors_are_classified() {
    let table = [
        (
            "ssh: Could not resolve hostname nope.invalid: Name or service not known",
            Failure::UnknownHost,
        ),
        (
            "ssh: connect to host 127.0.0.1 port 9: Connection refused",
            Failure::Refused,
        ),
        (
            "ssh: connect to host 10.0.0.1 port 22: Connection timed out",
            Failure::Timeout,
        ),
        (
            "root@127.0.0.1: Permission denied (publickey).",
            Failure::Auth,
        ),
        (
            "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
            Failure::HostKeyChanged,
        ),
        (
            "No ED25519 host key is known for x and you have requested strict checking.\nHost key verification failed.",
            Failure::HostKeyUnknown,
        ),
        (
            "Error: remote port forwarding failed for listen port 7000",
            Failure::Tunnel,
        ),
        (
            "kex_exchange_identification: read: Connection reset by peer",
            Failure::Other,
        ),
        (
            "Control socket connect(/h/run/ssh/00): Connection refused\nssh: Could not resolve hostname iris-control-master-gone.invalid: Name or service not known",
            Failure::MasterGone,
        ),
        (
            "mux_client_request_session: session request failed: Session open refused by peer",
            Failure::TooManySessions,
        ),
    ];
    for (stderr, failure) in table {
        assert_eq!(classify(stderr), failure, "{stderr}");
    }
}

#[test]
fn ssh_options_put_iris_first_then_remote_then_remote_options() {
    let mut remote = RemoteConfig::new("deploy@app");
    remote.ssh_args = vec!["-J".into(), "bastion".into(), "deploy@app".into()];
    remote.port = Some(2222);
    remote.identity = Some(PathBuf::from("/keys/my key"));
    remote.strict_host_key_checking = Some(false);
    remote.compression = true;
    remote.forward_agent = true;
    remote.extra_ssh_args = vec!["-o".into(), "LogLevel=ERROR".into()];
    assert_eq!(
        ssh_options(&remote),
        [
            "-T",
            "-o",
            "BatchMode=yes",
            "-J",
            "bastion",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            "-p",
            "2222",
            "-i",
            "/keys/my key",
            "-o",
            "StrictHostKeyChecking=no",
            "-C",
            "-A",
            "-o",
            "LogLevel=ERROR"
        ]
    );
    let link = Link {
        socket: PathBuf::from("/h/run/ssh/0123"),
        tunnel: None,
        master: 1,
    };
    let args = session_args(&remote, Some(&link), "exec sh -c x");
    assert_eq!(
        &args[..4],
        ["-S", "/h/run/ssh/0123", "-o", "ControlMaster=no"]
    );
    assert_eq!(&args[args.len() - 2..], ["deploy@app", "exec sh -c x"]);
    // Through the master: never a connection of its own (a proxy that fails, saying why),
    // and no `-J` (the master's business; ssh refuses it beside a ProxyCommand).
    assert!(
        args.contains(&"ProxyCommand=sh -c 'echo iris-control-master-gone >&2; exit 1'".to_owned())
    );
    assert!(
        !args
            .iter()
            .any(|arg| arg.starts_with("-J") || arg == "bastion"),
        "{args:?}"
    );
    // On its own connection (no master), `-J` stays.
    let direct = session_args(&remote, None, "true");
    assert_eq!(&direct[3..5], ["-J", "bastion"]);
}

#[test]
fn teams_reaching_a_host_the_same_way_share_a_master() {
    let one = RemoteConfig::new("box");
    let mut other_port = RemoteConfig::new("box");
    other_port.port = Some(2200);
    let mut fixed_tunnel = RemoteConfig::new("box");
    fixed_tunnel.reverse_mcp_port = Some(7000);
    let key = |remote: &RemoteConfig| Remotes::key(remote, Some(1615));
    assert_eq!(key(&one), key(&RemoteConfig::new("box")));
    assert_ne!(key(&one), key(&other_port));
    assert_ne!(key(&one), key(&fixed_tunnel));
    assert_ne!(key(&one), Remotes::key(&one, Some(1616)));
    assert_eq!(key(&one).len(), 16);
}

#[test]
fn the_fork_command_opens_a_terminal_on_the_host() {
    let mut team = team("~/my app");
    let remote = team.remote.as_mut().expect("remote");
    remote.ssh_args = vec!["-J".into(), "bastion".into(), "box".into()];
    remote.port = Some(2222);
    let remote = remote.clone();
    let args = fork_args(
        &team,
        &remote,
        "claude",
        &["--resume=0000".to_owned(), "--fork-session".to_owned()],
    );
    assert_eq!(
        args,
        [
            "-t",
            "-J",
            "bastion",
            "-p",
            "2222",
            "box",
            "cd ~/'my app' && claude --resume=0000 --fork-session"
        ]
    );
}

#[test]
fn the_transcript_is_deleted_by_its_session_id() {
    let home = tempfile::tempdir().expect("tempdir");
    let session = uuid::Uuid::new_v4();
    let project = home.path().join(".claude/projects/-srv-x");
    std::fs::create_dir_all(&project).expect("mkdir");
    let transcript = project.join(format!("{session}.jsonl"));
    std::fs::write(&transcript, "{}\n").expect("write");
    let other = project.join(format!("{}.jsonl", uuid::Uuid::new_v4()));
    std::fs::write(&other, "{}\n").expect("write");
    let mut team = team("/srv/x");
    team.env.insert(
        "HOME".to_owned(),
        home.path().to_string_lossy().into_owned(),
    );
    let output = Command::new("sh")
        .arg("-c")
        .arg(delete_transcript_script(&team, session))
        .env("HOME", "/nowhere")
        .output()
        .expect("sh");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        transcript.to_string_lossy()
    );
    assert!(!transcript.exists());
    assert!(other.exists());
}
