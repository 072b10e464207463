//! The remote-host tests' private sshd (tests/common/sshd.rs), checked with the real ssh:
//! sessions see the remote HOME, a ControlMaster and a remote port forward work through it,
//! cutting its connections ends a running session, and ssh's messages for a changed host key,
//! a refused connection and a refused client key are the ones the remote code classifies.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::assert_contains;
use common::sshd::{Sshd, unused_port};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

#[test]
fn sessions_run_in_the_remote_home() {
    let sshd = Sshd::start();
    let output = sshd.run("echo $HOME; pwd");
    assert_success(&output, "echo $HOME; pwd");
    let home = sshd.remote_home().display().to_string();
    // sshd starts a session in the passwd home; the remote home's .bashrc moves to HOME,
    // which only a bash login shell reads.
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap();
    let cwd = if user.shell.ends_with("bash") {
        home.clone()
    } else {
        user.dir.display().to_string()
    };
    assert_eq!(stdout(&output), format!("{home}\n{cwd}\n"));
    assert_eq!(stderr(&output), "");

    // The same through the `remote:` value, as a shell would split it.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("{} 'echo $HOME' </dev/null", sshd.remote_value()))
        .output()
        .unwrap();
    assert_success(&output, "the remote value");
    assert_eq!(stdout(&output), format!("{home}\n"));
    assert_eq!(
        sshd.ssh_args(),
        [
            "-F".to_owned(),
            sshd.ssh_config_path().display().to_string(),
            "iris-test-remote".to_owned()
        ]
    );

    // Exit codes come through.
    assert_eq!(sshd.run("exit 7").status.code(), Some(7));
    assert_contains(&sshd.log(), "Accepted publickey for");
}

#[test]
fn a_control_master_and_a_remote_forward_work_through_it() {
    let sshd = Sshd::start();
    let control = tempfile::tempdir().unwrap();
    let path = control.path().join("cm");
    let control_path = format!("ControlPath={}", path.display());
    let master = sshd
        .ssh()
        .args(["-o", "ControlMaster=yes", "-o", &control_path])
        .args(["-o", "ControlPersist=no", "-fN", "iris-test-remote"])
        .output()
        .unwrap();
    assert_success(&master, "ssh -fN (the master)");

    let check = sshd
        .ssh()
        .args(["-o", &control_path, "-O", "check", "iris-test-remote"])
        .output()
        .unwrap();
    assert_success(&check, "ssh -O check");
    assert!(
        stderr(&check).starts_with("Master running (pid="),
        "{}",
        stderr(&check)
    );

    // Sessions multiplexed over the master see the same remote.
    let output = sshd
        .ssh()
        .args(["-o", &control_path, "iris-test-remote", "echo $HOME"])
        .output()
        .unwrap();
    assert_success(&output, "a session over the master");
    assert_eq!(
        stdout(&output),
        format!("{}\n", sshd.remote_home().display())
    );

    // A remote forward of port 0: the allocated port alone on stdout.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local_port = local.local_addr().unwrap().port();
    let forward = sshd
        .ssh()
        .args(["-o", &control_path, "-O", "forward", "-R"])
        .arg(format!("0:127.0.0.1:{local_port}"))
        .arg("iris-test-remote")
        .output()
        .unwrap();
    assert_success(&forward, "ssh -O forward -R 0:...");
    let printed = stdout(&forward);
    let remote_port: u16 = printed
        .strip_suffix('\n')
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("not a port and a newline: {printed:?}"));
    assert_ne!(remote_port, 0);
    assert_eq!(stderr(&forward), "");
    // The forward reaches the local listener from the remote side.
    let probe = sshd.run(&format!(
        "exec 3<>/dev/tcp/127.0.0.1/{remote_port} && echo forwarded >&3"
    ));
    assert_success(&probe, "connect to the forwarded port");
    let (mut accepted, _) = local.accept().unwrap();
    let mut line = String::new();
    std::io::Read::read_to_string(&mut accepted, &mut line).unwrap();
    assert_eq!(line, "forwarded\n");

    let exit = sshd
        .ssh()
        .args(["-o", &control_path, "-O", "exit", "iris-test-remote"])
        .output()
        .unwrap();
    assert_success(&exit, "ssh -O exit");
    assert_eq!(stderr(&exit), "Exit request sent.\r\n");
    common::wait_for_blocking("the master to remove its socket", || !path.exists());
}

/// `ssh alias sleep 1000`, its stdout and stderr made by `output`, once the sleep runs on
/// the host.
fn remote_sleep(sshd: &Sshd, output: fn() -> Stdio) -> std::process::Child {
    let session = sshd
        .ssh()
        .args(["iris-test-remote", "sleep 1000"])
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap();
    common::wait_for_blocking("the remote sleep", || !sshd.remote_processes().is_empty());
    session
}

#[test]
fn killing_the_session_processes_cuts_a_running_session() {
    let sshd = Sshd::start();
    let mut session = remote_sleep(&sshd, Stdio::piped);

    sshd.kill_session_processes();
    common::wait_for_blocking("ssh to end after the cut", || {
        session.try_wait().unwrap().is_some()
    });
    let output = session.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(255));
    assert_eq!(
        stderr(&output),
        "Connection to 127.0.0.1 closed by remote host.\r\n"
    );

    // The remote command outlives the connection, as after a real cut, until killed.
    assert_eq!(sshd.remote_processes().len(), 1);
    sshd.kill_remote_processes();
    assert!(sshd.remote_processes().is_empty());

    // The listener still takes new connections.
    assert_success(&sshd.run("true"), "a new session after the cut");
}

#[test]
fn dropping_it_ends_sessions_and_their_commands() {
    let sshd = Sshd::start();
    let mut session = remote_sleep(&sshd, Stdio::null);
    let marker = sshd.marker().to_owned();
    let listener = sshd.pid();
    drop(sshd);
    assert_eq!(session.wait().unwrap().code(), Some(255));
    let needle = format!("{}={marker}", common::sshd::MARKER_VAR);
    let left: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("environ"))
                .unwrap_or_default()
                .split(|&byte| byte == 0)
                .any(|var| var == needle.as_bytes())
        })
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(!Path::new(&format!("/proc/{listener}")).exists());
}

#[test]
fn a_changed_host_key_fails_verification() {
    let sshd = Sshd::start();
    // `ssh iris-test-remote true`, checking the host against `known_hosts`.
    let connect_with = |known_hosts: &Path| {
        sshd.ssh()
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["iris-test-remote", "true"])
            .output()
            .unwrap()
    };
    let wrong = sshd.known_hosts_with_wrong_key();
    let output = connect_with(&wrong);
    assert_eq!(output.status.code(), Some(255));
    let text = stderr(&output);
    assert_contains(&text, "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!");
    assert_contains(
        &text,
        "Host key for iris-test-remote has changed and you have requested strict checking.",
    );
    assert!(
        text.ends_with("Host key verification failed.\r\n"),
        "{text:?}"
    );

    // The same through a config of its own (what a `remote:` value can name).
    let config = sshd.ssh_config_with(&wrong, &sshd.client_key_path());
    let output = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["iris-test-remote", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(255));
    assert_contains(&stderr(&output), "Host key verification failed.");

    // An empty known_hosts: the key is unknown, not changed.
    let empty = sshd.dir().join("known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    let output = connect_with(&empty);
    assert_eq!(output.status.code(), Some(255));
    assert_eq!(
        stderr(&output),
        "No ED25519 host key is known for iris-test-remote and you have requested strict \
         checking.\r\nHost key verification failed.\r\n"
    );
}

#[test]
fn a_closed_port_refuses_the_connection() {
    let sshd = Sshd::start();
    let port = unused_port();
    let output = sshd
        .ssh()
        .args(["-o", &format!("Port={port}"), "iris-test-remote", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(255));
    assert_eq!(
        stderr(&output),
        format!("ssh: connect to host 127.0.0.1 port {port}: Connection refused\r\n")
    );
}

#[test]
fn an_unauthorized_client_key_is_denied() {
    let sshd = Sshd::start();
    let config = sshd.ssh_config_with(&sshd.known_hosts_path(), &sshd.unauthorized_client_key());
    let output = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["iris-test-remote", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(255));
    assert_eq!(
        stderr(&output),
        format!(
            "{}@127.0.0.1: Permission denied (publickey).\r\n",
            sshd.user()
        )
    );
}
