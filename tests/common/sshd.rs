//! A private OpenSSH server for the remote-host tests: Debian's `sshd` (installed by
//! `scripts/install-openssh`), started per test as the current user on 127.0.0.1 only, with
//! its own host key, client key, `authorized_keys`, `known_hosts` and client `ssh_config`, all
//! in a temp dir. Remote sessions get another `HOME` (`remote_home`; sshd's `SetEnv`), so the
//! "remote" host does not share the test's home; it is also their working directory when the
//! user's login shell is bash (a `.bashrc` there moves to it, see [`Sshd::try_start`]). Their
//! `TMPDIR` is in the temp dir too ([`Sshd::remote_tmp`]), so what an agent wrapper killed
//! with SIGKILL by [`Sshd::stop`] could not remove goes with it.
//!
//! `ssh -F <ssh_config> iris-test-remote <command>` reaches it; [`Sshd::remote_value`] is
//! that as a `remote:` config value. Dropping an [`Sshd`] kills the listener, every
//! connection and every command its sessions started.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The `Host` the client config defines (also the `HostKeyAlias` in `known_hosts`).
pub const ALIAS: &str = "iris-test-remote";

/// How long sshd may take to answer `ssh ... true` after it was started.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The environment variable every remote session gets (sshd's `SetEnv`), holding this
/// server's marker: finds the commands its sessions started, even once orphaned.
pub const MARKER_VAR: &str = "IRIS_TEST_SSHD";

/// The sshd binary: `$IRIS_SSHD`, else Debian's `/usr/sbin/sshd`. Absolute, as sshd needs
/// to re-execute itself for every connection.
pub fn sshd_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("IRIS_SSHD")
        .map_or_else(|| PathBuf::from("/usr/sbin/sshd"), PathBuf::from);
    let executable = fs::metadata(&path).is_ok_and(|meta| meta.permissions().mode() & 0o111 != 0);
    if !executable {
        return Err(format!(
            "{} not found: the remote-host tests need OpenSSH's sshd, ssh and ssh-keygen \
             (scripts/test installs them: scripts/install-openssh, apt-get install openssh-server; \
             or set IRIS_SSHD=/path/to/sshd)",
            path.display()
        ));
    }
    fs::canonicalize(&path).map_err(|error| format!("{}: {error}", path.display()))
}

/// A port on 127.0.0.1 where nothing listens (bound, then released): `ssh` to it fails with
/// "Connection refused".
pub fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// `word` quoted for a POSIX shell (and for Iris's `remote:` value), unchanged if it needs
/// no quoting.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&byte));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// One private sshd and its client side. Stopped (connections and session commands
/// included) when dropped.
pub struct Sshd {
    /// The port it listens on, on 127.0.0.1 only.
    pub port: u16,
    child: Child,
    dir: TempDir,
    binary: PathBuf,
    marker: String,
    user: String,
    stopped: bool,
}

impl Sshd {
    /// Starts one, panicking with the reason (and sshd's log) if it cannot.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|reason| panic!("cannot start a test sshd: {reason}"))
    }

    /// Starts one: as root (privilege separation in `/run/sshd`, created if missing) or as
    /// any other user (sshd then only lets that user in, which is all the tests need).
    /// `Err` says why it could not, with sshd's log.
    pub fn try_start() -> Result<Self, String> {
        let binary = sshd_binary()?;
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .map_err(|error| format!("looking up uid {uid}: {error}"))?
            .ok_or_else(|| format!("uid {uid} has no passwd entry: sshd cannot log it in"))?;
        if nix::unistd::geteuid().is_root() {
            // sshd's privilege separation directory (Debian's systemd unit creates it).
            let run = Path::new("/run/sshd");
            if !run.is_dir() {
                fs::create_dir_all(run).map_err(|error| format!("creating /run/sshd: {error}"))?;
                fs::set_permissions(run, fs::Permissions::from_mode(0o755))
                    .map_err(|error| format!("chmod /run/sshd: {error}"))?;
            }
        }
        let mut dir = tempfile::Builder::new()
            .prefix("iris-sshd-")
            .tempdir()
            .map_err(|error| format!("tempdir: {error}"))?;
        let root = dir.path().to_path_buf();
        keygen(&root.join("host_ed25519"), "iris-test-host")?;
        keygen(&root.join("client_ed25519"), "iris-test-client")?;
        fs::copy(
            root.join("client_ed25519.pub"),
            root.join("authorized_keys"),
        )
        .map_err(|error| format!("authorized_keys: {error}"))?;
        let remote_home = root.join("remote-home");
        fs::create_dir(&remote_home).map_err(|error| format!("remote home: {error}"))?;
        // sshd starts sessions in the passwd home whatever HOME is; Debian's bash sources
        // ~/.bashrc (with the new HOME) for a command sshd runs, and moves to HOME here.
        fs::write(remote_home.join(".bashrc"), "cd \"$HOME\" || exit 1\n")
            .map_err(|error| format!("remote .bashrc: {error}"))?;
        fs::create_dir(root.join("remote-tmp"))
            .map_err(|error| format!("remote TMPDIR: {error}"))?;
        let marker = uuid::Uuid::new_v4().to_string();
        write_file(
            &root.join("sshd_config"),
            &sshd_config(&root, &remote_home, &marker),
        )?;

        let mut last = String::new();
        for _attempt in 0..5 {
            let port = unused_port();
            let host_key = read_public_key(&root.join("host_ed25519.pub"))?;
            write_file(
                &root.join("known_hosts"),
                &format!("{ALIAS} {host_key}\n[127.0.0.1]:{port} {host_key}\n"),
            )?;
            write_file(
                &root.join("ssh_config"),
                &client_config(
                    port,
                    &user.name,
                    &root.join("client_ed25519"),
                    &root.join("known_hosts"),
                ),
            )?;
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join("sshd.log"))
                .map_err(|error| format!("sshd.log: {error}"))?;
            let child = Command::new(&binary)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(root.join("sshd_config"))
                .arg("-p")
                .arg(port.to_string())
                .arg("-E")
                .arg(root.join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .map_err(|error| format!("starting {}: {error}", binary.display()))?;
            let mut sshd = Self {
                port,
                child,
                dir,
                binary: binary.clone(),
                marker: marker.clone(),
                user: user.name.clone(),
                stopped: false,
            };
            match sshd.wait_ready() {
                Ok(()) => return Ok(sshd),
                Err(Retry::Port(reason)) => {
                    last = reason;
                    sshd.stop();
                    dir = sshd.take_dir();
                }
                Err(Retry::No(reason)) => {
                    sshd.stop();
                    return Err(reason);
                }
            }
        }
        Err(format!("no free port after 5 attempts: {last}"))
    }

    /// Waits until sshd accepts a connection and `ssh <alias> true` succeeds.
    fn wait_ready(&mut self) -> Result<(), Retry> {
        let deadline = Instant::now() + READY_DEADLINE;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut pause = Duration::from_millis(2);
        let mut ssh_error = String::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log();
                let reason = format!("sshd exited ({status}) before it was ready; its log:\n{log}");
                return Err(if log.contains("Address already in use") {
                    Retry::Port(reason)
                } else {
                    Retry::No(reason)
                });
            }
            if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
                let output = self
                    .ssh()
                    .args(["-o", "ConnectTimeout=5", ALIAS, "true"])
                    .output()
                    .map_err(|error| Retry::No(format!("running ssh: {error}")))?;
                if output.status.success() {
                    return Ok(());
                }
                ssh_error = format!(
                    "`ssh {ALIAS} true`: {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            if Instant::now() >= deadline {
                return Err(Retry::No(format!(
                    "sshd on 127.0.0.1:{} not ready within {READY_DEADLINE:?} (last {}); its log:\n{}",
                    self.port,
                    if ssh_error.is_empty() {
                        "connect failed".to_owned()
                    } else {
                        ssh_error
                    },
                    self.log()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Moves the temp dir out (for a retry on another port), leaving an empty one behind.
    fn take_dir(&mut self) -> TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// The `Host` to give `ssh -F <ssh_config_path>`.
    pub fn alias(&self) -> &'static str {
        ALIAS
    }

    /// The listening sshd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The user sessions log in as (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The temp dir holding keys, configs, the remote home and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client config defining [`ALIAS`] (port, user, key, known_hosts, batch mode).
    pub fn ssh_config_path(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The `known_hosts` holding the server's host key for [`ALIAS`] and `[127.0.0.1]:port`.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The client's private key (its public key is the only authorized one).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// `TMPDIR` of every remote session (where the agent wrapper keeps its MCP config).
    pub fn remote_tmp(&self) -> PathBuf {
        self.dir.path().join("remote-tmp")
    }

    /// `HOME` of every remote session, and its working directory when the login shell is
    /// bash (otherwise sshd starts sessions in the passwd home).
    pub fn remote_home(&self) -> PathBuf {
        self.dir.path().join("remote-home")
    }

    /// The value every remote process has in [`MARKER_VAR`].
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// sshd's log so far (`LogLevel VERBOSE`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `["-F", <ssh_config>, "iris-test-remote"]`: the arguments of `ssh` before a command.
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            "-F".to_owned(),
            self.ssh_config_path().display().to_string(),
            ALIAS.to_owned(),
        ]
    }

    /// `ssh -F <ssh_config> iris-test-remote`, the path shell-quoted if it needs it: a
    /// `remote:` value that reaches this server.
    pub fn remote_value(&self) -> String {
        format!(
            "ssh -F {} {ALIAS}",
            shell_quote(&self.ssh_config_path().display().to_string())
        )
    }

    /// `ssh -F <ssh_config>`, stdin from /dev/null: add options, the alias and a command.
    pub fn ssh(&self) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-F")
            .arg(self.ssh_config_path())
            .stdin(Stdio::null());
        command
    }

    /// Runs `script` on the "remote" host (`ssh -F cfg iris-test-remote -- <script>`).
    pub fn run(&self, script: &str) -> Output {
        self.ssh()
            .args([ALIAS, "--", script])
            .output()
            .expect("run ssh")
    }

    /// Writes a client config like [`Self::ssh_config_path`]'s with another `known_hosts`
    /// and client key, and returns its path.
    pub fn ssh_config_with(&self, known_hosts: &Path, identity: &Path) -> PathBuf {
        let path = self.dir.path().join(format!("ssh_config.{}", next_id()));
        write_file(
            &path,
            &client_config(self.port, &self.user, identity, known_hosts),
        )
        .unwrap();
        path
    }

    /// A `known_hosts` holding a different ed25519 key for [`ALIAS`] and `[127.0.0.1]:port`:
    /// with it, ssh fails with "REMOTE HOST IDENTIFICATION HAS CHANGED!" and "Host key
    /// verification failed.".
    pub fn known_hosts_with_wrong_key(&self) -> PathBuf {
        let id = next_id();
        let key = self.dir.path().join(format!("wrong_host_{id}"));
        keygen(&key, "iris-test-wrong-host").unwrap();
        let public = read_public_key(&key.with_extension("pub")).unwrap();
        let path = self.dir.path().join(format!("known_hosts.wrong.{id}"));
        write_file(
            &path,
            &format!("{ALIAS} {public}\n[127.0.0.1]:{} {public}\n", self.port),
        )
        .unwrap();
        path
    }

    /// A new client key that is not authorized: ssh with it fails with "Permission denied
    /// (publickey).".
    pub fn unauthorized_client_key(&self) -> PathBuf {
        let key = self
            .dir
            .path()
            .join(format!("unauthorized_client_{}", next_id()));
        keygen(&key, "iris-test-unauthorized").unwrap();
        key
    }

    /// SIGKILLs every per-connection sshd process (the listener's descendants that are
    /// sshd), as if the network went down: every connection drops (clients see "Connection
    /// to 127.0.0.1 closed by remote host." and exit 255) and the listener keeps accepting
    /// new ones. The commands the sessions ran are orphaned but keep running, as after a real
    /// cut ([`Self::remote_processes`], [`Self::kill_remote_processes`]). Returns once the
    /// killed processes are gone.
    pub fn kill_session_processes(&self) {
        for _ in 0..10 {
            let table = process_table();
            let listener = self.pid();
            let sshds: Vec<u32> = descendants(&table, listener)
                .into_iter()
                .filter(|pid| self.is_sshd(*pid, &table))
                .collect();
            if sshds.is_empty() {
                return;
            }
            for pid in &sshds {
                let _ = kill(Pid::from_raw(pid.cast_signed()), Signal::SIGKILL);
            }
            wait_gone(&sshds);
        }
    }

    /// Live processes started by this server's sessions (they carry [`MARKER_VAR`]),
    /// including ones orphaned by [`Self::kill_session_processes`].
    pub fn remote_processes(&self) -> Vec<u32> {
        let needle = format!("{MARKER_VAR}={}", self.marker);
        process_table()
            .into_iter()
            .filter(|process| process.state != 'Z' && process.pid != std::process::id())
            .filter(|process| {
                fs::read(format!("/proc/{}/environ", process.pid))
                    .unwrap_or_default()
                    .split(|&byte| byte == 0)
                    .any(|var| var == needle.as_bytes())
            })
            .map(|process| process.pid)
            .collect()
    }

    /// SIGKILLs every process of [`Self::remote_processes`] and returns once they are gone
    /// (reaping the ones this process adopted as a subreaper).
    pub fn kill_remote_processes(&self) {
        for _ in 0..10 {
            let pids = self.remote_processes();
            if pids.is_empty() {
                return;
            }
            for pid in &pids {
                let _ = kill(Pid::from_raw(pid.cast_signed()), Signal::SIGKILL);
            }
            wait_gone(&pids);
        }
    }

    /// Stops everything: the connections, the commands their sessions started, then the
    /// listener (SIGTERM to its process group, SIGKILL after 5 s), which is reaped.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_session_processes();
        }
        self.kill_remote_processes();
        let group = Pid::from_raw(self.child.id().cast_signed());
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_millis(2);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = killpg(group, Signal::SIGKILL);
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }

    fn is_sshd(&self, pid: u32, table: &[Process]) -> bool {
        match fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(exe) => exe == self.binary,
            Err(_) => {
                let name = self
                    .binary
                    .file_name()
                    .map(|name| name.to_string_lossy().chars().take(15).collect::<String>())
                    .unwrap_or_default();
                table
                    .iter()
                    .any(|process| process.pid == pid && process.comm == name)
            }
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Retry {
    /// The port was taken meanwhile: try another.
    Port(String),
    No(String),
}

fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn sshd_config(root: &Path, remote_home: &Path, marker: &str) -> String {
    format!(
        "# A private sshd for one Iris test (tests/common/sshd.rs).
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowStreamLocalForwarding no
GatewayPorts no
X11Forwarding no
PrintMotd no
PrintLastLog no
MaxSessions 64
MaxStartups 64:30:100
LogLevel VERBOSE
SetEnv HOME={remote_home} TMPDIR={remote_tmp} {MARKER_VAR}={marker}
",
        host_key = root.join("host_ed25519").display(),
        authorized_keys = root.join("authorized_keys").display(),
        remote_home = remote_home.display(),
        remote_tmp = root.join("remote-tmp").display(),
    )
}

fn client_config(port: u16, user: &str, identity: &Path, known_hosts: &Path) -> String {
    format!(
        "# The client side of a private sshd for one Iris test (tests/common/sshd.rs).
Host {ALIAS}
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {identity}
  IdentitiesOnly yes
  UserKnownHostsFile {known_hosts}
  GlobalKnownHostsFile /dev/null
  HostKeyAlias {ALIAS}
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
",
        identity = identity.display(),
        known_hosts = known_hosts.display(),
    )
}

/// `ssh-keygen -q -N '' -t ed25519 -f <path>`.
fn keygen(path: &Path, comment: &str) -> Result<(), String> {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running ssh-keygen (apt-get install openssh-client): {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "ssh-keygen -f {}: {}: {}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// "ssh-ed25519 AAAA..." from a `.pub` file (its comment left out).
fn read_public_key(path: &Path) -> Result<String, String> {
    let text = fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(kind), Some(key)) => Ok(format!("{kind} {key}")),
        _ => Err(format!("{}: not a public key: {text:?}", path.display())),
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    let mut file =
        fs::File::create(path).map_err(|error| format!("{}: {error}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|error| format!("{}: {error}", path.display()))
}

struct Process {
    pid: u32,
    parent: u32,
    state: char,
    comm: String,
}

/// Every process, from /proc/<pid>/stat.
fn process_table() -> Vec<Process> {
    let mut table = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().and_then(|field| field.chars().next());
        let parent = fields.next().and_then(|field| field.parse::<u32>().ok());
        if let (Some(state), Some(parent)) = (state, parent) {
            table.push(Process {
                pid,
                parent,
                state,
                comm,
            });
        }
    }
    table
}

/// The live descendants of `root` in `table`.
fn descendants(table: &[Process], root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for process in table.iter().filter(|process| process.parent == parent) {
            if process.state != 'Z' {
                found.push(process.pid);
            }
            frontier.push(process.pid);
        }
    }
    found
}

/// Waits (up to 10 s) until none of `pids` is alive: gone, or a zombie of another parent;
/// zombies of this process (a subreaper adopts orphans) are reaped.
fn wait_gone(pids: &[u32]) {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(1);
    loop {
        let table = process_table();
        let mut alive = false;
        for pid in pids {
            let Some(process) = table.iter().find(|process| process.pid == *pid) else {
                continue;
            };
            if process.state == 'Z' {
                if process.parent == me {
                    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid.cast_signed()), None);
                }
            } else {
                alive = true;
            }
        }
        if !alive || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
