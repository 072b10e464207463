//! Remote teams: agents on other hosts, reached with the system `ssh` (so the user's ssh
//! config, agent, keys and jump hosts just work).
//!
//! Per remote host Iris keeps one **control master** (`ssh -M -N` as its child, in its own
//! process group with a parent-death signal, registered with the guard; its socket under
//! `$IRIS_HOME/run/ssh/`, 0700), which carries the handshake once and, for teams with
//! `enableReverseMcp`, one reverse tunnel from a port on the host's loopback (picked by the
//! host's sshd unless `reverseMcpPort` says) to Iris's HTTP address. Every agent is a
//! multiplexed `ssh -T` session through it running a small POSIX `sh` wrapper
//! ([`agent_script`]) that:
//! - enters the team's directory and checks the claude executable, saying what is missing;
//! - reads, from its stdin before anything else, the agent's MCP config (written to a 0600
//!   file in a private temporary directory, removed when the wrapper ends) and its
//!   environment (as `printf` formats: never on a command line, which every user of the host
//!   can read);
//! - runs `claude` with stdin through `cat`, and kills its own process group (the agent and
//!   everything it started) as soon as either side ends: stdin at EOF (Iris stopped the
//!   agent, Iris died, or the connection dropped) or the agent exiting. So no remote process
//!   outlives its ssh session. A session ends when the host's sshd sees the connection go:
//!   at once when it is closed or reset; after a network partition, only when the host's
//!   sshd notices (its `ClientAliveInterval`, or TCP keep-alive), which Iris cannot set.
//!
//! The master dies with Iris, however Iris dies (parent-death signal, and the guard).

pub mod shell;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{RemoteConfig, TeamConfig};
use crate::guard::Guard;
use shell::quote;

/// Exit codes of the agent wrapper on the host, before the agent runs.
const EXIT_NO_DIRECTORY: i32 = 97;
const EXIT_NO_CLAUDE: i32 = 98;
const EXIT_NO_TEMP: i32 = 96;
const EXIT_NO_PREAMBLE: i32 = 95;

/// The line that ends the environment the wrapper reads from its stdin.
const PREAMBLE_END: &str = ".";

/// What a session through a master says if its master is gone and ssh tries to connect
/// on its own, which it must never do (see [`session_args`]).
const NO_MASTER: &str = "iris-control-master-gone";

/// The team `env` variables that change where a path or program is found on the host
/// (harmless on a command line, unlike the rest of `env`).
const LOOKUP_VARIABLES: [&str; 3] = ["HOME", "PATH", "CLAUDE_CONFIG_DIR"];

/// `export NAME='value'` commands for those of `names` the team's `env` sets, each
/// followed by `separator`.
fn exports(team: &TeamConfig, names: &[&str], separator: &str) -> String {
    let mut text = String::new();
    for name in names {
        if let Some(value) = team.env.get(*name) {
            let _ = write!(text, "export {name}={}{separator}", quote(value));
        }
    }
    text
}

/// The prefix of the wrapper's own shell variables: an environment variable of the team
/// with this prefix could overwrite them, so none is passed (the config loader refuses
/// them).
pub const WRAPPER_PREFIX: &str = "__iris_";

/// What went wrong reaching a remote team's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The host name does not resolve.
    UnknownHost,
    /// Nothing listens on the host's ssh port.
    Refused,
    /// The host did not answer in time.
    Timeout,
    /// The host refused every key offered.
    Auth,
    /// The host's key differs from the one in `known_hosts`.
    HostKeyChanged,
    /// The host is not in `known_hosts` and strict checking is on.
    HostKeyUnknown,
    /// `ssh` itself cannot be run here.
    NoSsh,
    /// The reverse tunnel could not be opened on the host.
    Tunnel,
    /// The control master went away as a session was starting through it.
    MasterGone,
    /// The host's sshd refused another session on the connection (`MaxSessions`).
    TooManySessions,
    /// The team's directory is missing on the host.
    NoDirectory,
    /// The claude executable is missing on the host.
    NoClaude,
    /// Anything else ssh reported.
    Other,
}

/// Why a remote team's host could not be used: the team, the host, what happened (ssh's
/// own words) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("team '{team}' on {host}: {}", self.explain())]
pub struct RemoteError {
    /// The team.
    pub team: String,
    /// The host word of its `remote`.
    pub host: String,
    /// The kind of failure.
    pub failure: Failure,
    /// What ssh (or the host) said.
    pub detail: String,
}

impl RemoteError {
    fn new(team: &TeamConfig, remote: &RemoteConfig, failure: Failure, detail: &str) -> Self {
        Self {
            team: team.name.to_string(),
            host: remote.host.clone(),
            failure,
            detail: detail.trim().to_owned(),
        }
    }

    fn explain(&self) -> String {
        let host = &self.host;
        let detail = &self.detail;
        match self.failure {
            Failure::UnknownHost => format!(
                "the host name does not resolve ({detail}); check the host in `remote`, or its Host entry in your ssh config"
            ),
            Failure::Refused => format!(
                "the connection was refused ({detail}); is sshd running on {host}, and is the port right (`-p` in `remote`, or remoteOptions.port)?"
            ),
            Failure::Timeout => format!(
                "no answer ({detail}); is {host} up and reachable from here? (remoteOptions.connectTimeout sets how long to wait)"
            ),
            Failure::Auth => format!(
                "the host refused our keys ({detail}); Iris connects without prompts (BatchMode): load the key into your ssh agent, or set remoteOptions.identity, and check `ssh {host} true` works"
            ),
            Failure::HostKeyChanged => format!(
                "the host's key does not match the one in known_hosts ({detail}); if {host} was reinstalled, check its new key and remove the old one with `ssh-keygen -R {host}`; otherwise someone may be in between"
            ),
            Failure::HostKeyUnknown => format!(
                "the host is not in known_hosts ({detail}); connect once with `ssh {host}` to check and accept its key"
            ),
            Failure::NoSsh => {
                format!("cannot run the ssh client here ({detail}); install OpenSSH's client")
            }
            Failure::Tunnel => format!(
                "the reverse tunnel for call-backs could not be opened ({detail}); another process may hold reverseMcpPort on {host}: choose another or remove it to let the host pick one, or set enableReverseMcp: false"
            ),
            Failure::NoDirectory => format!(
                "the team's directory is not there ({detail}); create it on {host}, or fix teams.{}.path",
                self.team
            ),
            Failure::NoClaude => format!(
                "the claude executable was not found ({detail}); install Claude Code on {host}, or set teams.{}.claudePath to its full path there (a non-interactive ssh session may not read the PATH your login shell sets)",
                self.team
            ),
            Failure::MasterGone => format!(
                "the shared ssh connection to the host (its control master) went away as the agent was starting ({detail}); the next message connects again"
            ),
            Failure::TooManySessions => format!(
                "the host's sshd refused another session on Iris's connection ({detail}); sshd allows MaxSessions (default 10) per connection: raise MaxSessions in {host}'s sshd_config, or lower settings.maxProcesses"
            ),
            Failure::Other => format!("ssh failed: {detail}"),
        }
    }
}

/// Classifies what `ssh` wrote to stderr when it exited with 255.
fn classify(stderr: &str) -> Failure {
    let text = stderr.to_ascii_lowercase();
    if text.contains(NO_MASTER) {
        Failure::MasterGone
    } else if text.contains("session open refused") || text.contains("administratively prohibited")
    {
        Failure::TooManySessions
    } else if text.contains("could not resolve hostname")
        || text.contains("name or service not known")
    {
        Failure::UnknownHost
    } else if text.contains("connection refused") {
        Failure::Refused
    } else if text.contains("timed out")
        || text.contains("no route to host")
        || text.contains("network is unreachable")
    {
        Failure::Timeout
    } else if text.contains("remote host identification has changed")
        || text.contains("host key for") && text.contains("has changed")
    {
        Failure::HostKeyChanged
    } else if text.contains("host key verification failed") {
        Failure::HostKeyUnknown
    } else if text.contains("permission denied") || text.contains("too many authentication") {
        Failure::Auth
    } else if text.contains("remote port forwarding failed")
        || text.contains("port forwarding failed")
    {
        Failure::Tunnel
    } else {
        Failure::Other
    }
}

/// The last few meaningful lines of ssh's stderr, for an error message.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("Warning: Permanently added"))
        .collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join("; ")
}

/// The `ssh` words for `remote` that come before the host: `-T`, no prompts, keep-alives,
/// `remoteOptions`, then the options written in `remote` itself (`-J`, `-p`, `-F`...).
/// Iris's fixed ones come first: for each option ssh keeps the first value it is given.
#[must_use]
pub fn ssh_options(remote: &RemoteConfig) -> Vec<String> {
    let mut words: Vec<String> = ["-T", "-o", "BatchMode=yes"]
        .iter()
        .map(|word| (*word).to_owned())
        .collect();
    let host_at = remote.ssh_args.len().saturating_sub(1);
    words.extend(remote.ssh_args[..host_at].iter().cloned());
    let seconds = |duration: Duration| duration.as_secs().max(1);
    words.push("-o".to_owned());
    words.push(format!(
        "ConnectTimeout={}",
        seconds(remote.connect_timeout)
    ));
    words.push("-o".to_owned());
    words.push(format!(
        "ServerAliveInterval={}",
        seconds(remote.server_alive_interval)
    ));
    words.push("-o".to_owned());
    words.push(format!(
        "ServerAliveCountMax={}",
        remote.server_alive_count_max.max(1)
    ));
    if let Some(port) = remote.port {
        words.push("-p".to_owned());
        words.push(port.to_string());
    }
    if let Some(identity) = &remote.identity {
        words.push("-i".to_owned());
        words.push(identity.display().to_string());
    }
    if let Some(strict) = remote.strict_host_key_checking {
        words.push("-o".to_owned());
        words.push(format!(
            "StrictHostKeyChecking={}",
            if strict { "yes" } else { "no" }
        ));
    }
    if remote.compression {
        words.push("-C".to_owned());
    }
    if remote.forward_agent {
        words.push("-A".to_owned());
    }
    words.extend(remote.extra_ssh_args.iter().cloned());
    words
}

/// The command line (one word, for the host's login shell) that runs the agent wrapper.
#[must_use]
pub fn agent_command(team: &TeamConfig, program: &str, args: &[String]) -> String {
    format!(
        "exec sh -c {} iris-agent",
        quote(&agent_script(team, program, args))
    )
}

/// The wrapper script (see the module's documentation) for `team`'s agent: one line, so
/// that any login shell on the host (csh too, which takes no newline inside quotes) passes
/// it to `sh` whole.
#[must_use]
pub fn agent_script(team: &TeamConfig, program: &str, args: &[String]) -> String {
    let path_text = team.path.to_string_lossy();
    let path = shell::path_word(&path_text);
    let program_word = shell::path_word(program);
    let host = team
        .remote
        .as_ref()
        .map_or_else(String::new, |remote| remote.host.clone());
    let no_directory = quote(&format!(
        "iris: no directory {path_text} on {host} (teams.{}.path)",
        team.name
    ));
    let no_claude = quote(&format!(
        "iris: claude executable {program} not found on {host} (teams.{}.claudePath)",
        team.name
    ));
    let mut command = program_word.clone();
    for arg in args {
        command.push(' ');
        command.push_str(&quote(arg));
    }
    let mut script = String::new();
    let _ = write!(
        script,
        "IFS= read -r {V}m || exit {EXIT_NO_PREAMBLE}; \
         while IFS= read -r {V}l && [ \"${V}l\" != {PREAMBLE_END} ]; do {V}v=$(printf \"${{{V}l#*=}}x\"); export \"${{{V}l%%=*}}=${{{V}v%x}}\"; done; \
         cd {path} 2>/dev/null || {{ echo {no_directory} >&2; exit {EXIT_NO_DIRECTORY}; }}; \
         command -v {program_word} >/dev/null 2>&1 || {{ echo {no_claude} >&2; exit {EXIT_NO_CLAUDE}; }}; \
         umask 077; \
         {V}d=$(mktemp -d \"${{TMPDIR:-/tmp}}/iris-agent.XXXXXXXX\") || exit {EXIT_NO_TEMP}; \
         trap 'rm -rf \"${V}d\"' EXIT; \
         trap '{V}s=$(cat \"${V}d/status\" 2>/dev/null); exit \"${{{V}s:-143}}\"' TERM HUP INT; \
         set --; \
         if [ -n \"${V}m\" ]; then printf '%s\\n' \"${V}m\" > \"${V}d/mcp.json\"; set -- --mcp-config=\"${V}d/mcp.json\"; fi; \
         unset {V}m {V}l {V}v; \
         (cat; kill -TERM 0) | {{ {command} \"$@\"; echo $? > \"${V}d/status\"; kill -TERM 0; }}",
        V = WRAPPER_PREFIX
    );
    script
}

/// What the agent wrapper reads from its stdin before the agent starts: the MCP config
/// line (empty for none), the environment as `NAME=<printf format>` lines, and the end line.
#[must_use]
pub fn preamble(env: &[(String, String)], mcp_config: Option<&str>) -> String {
    let mut text = String::new();
    text.push_str(mcp_config.unwrap_or_default().trim());
    text.push('\n');
    for (name, value) in env {
        let _ = writeln!(text, "{name}={}", shell::printf_format(value));
    }
    text.push_str(PREAMBLE_END);
    text.push('\n');
    text
}

/// Reads what the wrapper said when it ended before the agent ran, as a [`RemoteError`].
#[must_use]
pub fn wrapper_failure(
    team: &TeamConfig,
    remote: &RemoteConfig,
    code: Option<i32>,
    stderr: &str,
) -> Option<RemoteError> {
    // The wrapper's own line, not an agent that happened to exit with the same code.
    let said = |prefix: &str| {
        stderr
            .lines()
            .rev()
            .find(|line| line.starts_with(prefix))
            .map(str::to_owned)
    };
    match code {
        Some(EXIT_NO_DIRECTORY) => said("iris: no directory")
            .map(|line| RemoteError::new(team, remote, Failure::NoDirectory, &line)),
        Some(EXIT_NO_CLAUDE) => said("iris: claude executable")
            .map(|line| RemoteError::new(team, remote, Failure::NoClaude, &line)),
        Some(255) => Some(RemoteError::new(
            team,
            remote,
            classify(stderr),
            &tail(stderr),
        )),
        _ => None,
    }
}

/// A live connection to a host: the master's control socket and the reverse tunnel's port
/// on the host's loopback (`None` without `enableReverseMcp`, or when Iris serves no HTTP).
#[derive(Debug, Clone)]
pub struct Link {
    /// `-S <socket>` for every session through the master.
    pub socket: PathBuf,
    /// The tunnel's port on the host.
    pub tunnel: Option<u16>,
    /// The master's pid.
    pub master: u32,
}

/// `ssh` arguments for a session to `remote`'s host running `command` there: through
/// `link`'s master (`-S`, `ControlMaster=no`), or on a connection of its own without one;
/// then the options, the host, the command.
#[must_use]
pub fn session_args(remote: &RemoteConfig, link: Option<&Link>, command: &str) -> Vec<String> {
    let mut args = Vec::new();
    let Some(link) = link else {
        args.extend(ssh_options(remote));
        args.push(remote.host.clone());
        args.push(command.to_owned());
        return args;
    };
    args.extend([
        "-S".to_owned(),
        link.socket.display().to_string(),
        "-o".to_owned(),
        "ControlMaster=no".to_owned(),
        // A session through the master never makes a connection of its own (the master's
        // is made). If the master is gone, ssh would quietly connect on its own, without
        // the tunnel: this proxy, the only way it could, fails saying why. (ssh keeps the
        // first value of an option, so it wins over the user's config; `-J`, which ssh
        // refuses beside a ProxyCommand, is left out: it is the master's business.)
        "-o".to_owned(),
        format!("ProxyCommand=sh -c 'echo {NO_MASTER} >&2; exit 1'"),
    ]);
    let mut words = ssh_options(remote).into_iter();
    while let Some(word) = words.next() {
        if word == "-J" {
            words.next();
        } else if !word.starts_with("-J") {
            args.push(word);
        }
    }
    args.push(remote.host.clone());
    args.push(command.to_owned());
    args
}

/// The control masters of this Iris, one per distinct way of reaching a host (its `remote`
/// words, `remoteOptions`, and the tunnel asked for). Teams that reach a host the same way
/// share one master and one tunnel (call-backs are told apart by their URL's token).
pub struct Remotes {
    dir: PathBuf,
    guard: Option<Guard>,
    masters: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Link>>>>>,
    /// Teams' directories as the host resolved them.
    places: Mutex<HashMap<PlaceKey, Place>>,
}

/// A path on a host, with the HOME it is resolved under: (host key, path, HOME).
type PlaceKey = (String, PathBuf, Option<String>);

/// Where a remote team's agent works on its host, resolved there (`~` expanded, links
/// followed): permission rules resolve the paths of the agent's tool calls against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The team directory's real path on the host.
    pub directory: PathBuf,
    /// The agent's HOME there (for `~/` in rules).
    pub home: PathBuf,
}

impl std::fmt::Debug for Remotes {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Remotes")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Where the control sockets of `iris_home` live.
#[must_use]
pub fn socket_dir(iris_home: &Path) -> PathBuf {
    iris_home.join("run").join("ssh")
}

/// The longest control socket path ssh can use: `sun_path` holds 108 bytes, and ssh binds
/// a temporary name 17 bytes longer first.
const MAX_SOCKET_PATH: usize = 108 - 18;

impl Remotes {
    /// Masters under `iris_home/run/ssh`, registered with `guard` (if any).
    #[must_use]
    pub fn new(iris_home: &Path, guard: Option<Guard>) -> Self {
        Self {
            dir: socket_dir(iris_home),
            guard,
            masters: Mutex::new(HashMap::new()),
            places: Mutex::new(HashMap::new()),
        }
    }

    /// `team`'s directory and HOME as its host resolves them, through `link` (asked once,
    /// then remembered).
    ///
    /// # Errors
    /// [`RemoteError`]: the directory is not there, or the host cannot be reached.
    pub async fn place(
        &self,
        team: &TeamConfig,
        remote: &RemoteConfig,
        link: &Link,
    ) -> Result<Place, RemoteError> {
        let home = team.env.get("HOME").cloned();
        let key = (Self::key(remote, None), team.path.clone(), home.clone());
        if let Some(place) = self
            .places
            .lock()
            .ok()
            .and_then(|places| places.get(&key).cloned())
        {
            return Ok(place);
        }
        let path_text = team.path.to_string_lossy();
        let mut script = String::new();
        script.push_str(&exports(team, &["HOME"], "\n"));
        let _ = write!(
            script,
            "cd {} 2>/dev/null || exit {EXIT_NO_DIRECTORY}; pwd -P; printf '%s\\n' \"$HOME\"",
            shell::path_word(&path_text)
        );
        let output = self
            .session(team, remote, link, &script, Duration::from_secs(30))
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        match (output.status.code(), lines.next(), lines.next()) {
            (Some(0), Some(directory), Some(home)) => {
                let place = Place {
                    directory: PathBuf::from(directory),
                    home: PathBuf::from(home),
                };
                if let Ok(mut places) = self.places.lock() {
                    places.insert(key, place.clone());
                }
                Ok(place)
            }
            (Some(EXIT_NO_DIRECTORY), _, _) => Err(RemoteError::new(
                team,
                remote,
                Failure::NoDirectory,
                &format!("no directory {path_text} on {}", remote.host),
            )),
            (code, _, _) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                Err(RemoteError::new(
                    team,
                    remote,
                    if code == Some(255) {
                        classify(&stderr)
                    } else {
                        Failure::Other
                    },
                    &format!("resolving {path_text} there: {}", tail(&stderr)),
                ))
            }
        }
    }

    /// The key of a way to reach a host; also the socket's file name.
    fn key(remote: &RemoteConfig, target: Option<u16>) -> String {
        // FNV-1a over everything that makes the connection what it is.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        };
        for word in ssh_options(remote) {
            feed(word.as_bytes());
        }
        feed(remote.host.as_bytes());
        if remote.reverse_mcp {
            feed(format!("{:?}->{target:?}", remote.reverse_mcp_port).as_bytes());
        }
        format!("{hash:016x}")
    }

    /// A live link to `team`'s host, starting (or replacing a dead) master if needed, with
    /// a tunnel to Iris's port `iris_port` when the team wants one and Iris serves HTTP.
    ///
    /// # Errors
    /// [`RemoteError`] naming what failed: the host is unknown, refuses, times out, refuses
    /// the keys, has another host key, or the tunnel cannot be opened.
    pub async fn link(
        &self,
        team: &TeamConfig,
        remote: &RemoteConfig,
        iris_port: Option<u16>,
    ) -> Result<Link, RemoteError> {
        let target = iris_port.filter(|port| *port != 0 && remote.reverse_mcp);
        let key = Self::key(remote, target);
        let slot = {
            let mut masters = self
                .masters
                .lock()
                .map_err(|_| RemoteError::new(team, remote, Failure::Other, "lock poisoned"))?;
            masters.entry(key.clone()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref() {
            // Alive and still listening: a master whose connection just dropped stops
            // listening before it exits, and a session through a socket that refuses would
            // quietly connect on its own instead (no tunnel).
            if crate::process::running(link.master)
                && std::os::unix::net::UnixStream::connect(&link.socket).is_ok()
            {
                return Ok(link.clone());
            }
            tracing::warn!(team = %team.name, host = %remote.host, pid = link.master, "the ssh connection to the host ended; connecting again");
            self.forget(link);
            *slot = None;
        }
        // A new connection: ask the host again where teams' directories are.
        let place_key = Self::key(remote, None);
        if let Ok(mut places) = self.places.lock() {
            places.retain(|(key, _, _), _| *key != place_key);
        }
        let link = self.start(team, remote, &key, target).await?;
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Ends `link`'s master if it is still the one in use for `remote` (a session through
    /// it failed), so that the next [`Remotes::link`] connects again.
    pub async fn replace(&self, remote: &RemoteConfig, link: &Link) {
        let slots: Vec<_> = self
            .masters
            .lock()
            .map(|masters| masters.values().cloned().collect())
            .unwrap_or_default();
        for slot in slots {
            let mut slot = slot.lock().await;
            if slot
                .as_ref()
                .is_some_and(|current| current.master == link.master)
            {
                tracing::info!(host = %remote.host, pid = link.master, "ending the ssh connection to the host");
                *slot = None;
                self.end(link).await;
                return;
            }
        }
    }

    fn forget(&self, link: &Link) {
        crate::process::reap_group(link.master);
        if let Some(guard) = &self.guard {
            guard.forget(link.master);
        }
    }

    async fn start(
        &self,
        team: &TeamConfig,
        remote: &RemoteConfig,
        key: &str,
        target: Option<u16>,
    ) -> Result<Link, RemoteError> {
        let fail = |failure: Failure, detail: &str| RemoteError::new(team, remote, failure, detail);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|error| {
                fail(
                    Failure::Other,
                    &format!("cannot make {}: {error}", self.dir.display()),
                )
            })?;
        let socket = self.dir.join(key);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(fail(
                Failure::Other,
                &format!(
                    "the control socket path {} is too long for a Unix socket; use a shorter IRIS_HOME",
                    socket.display()
                ),
            ));
        }
        if socket.exists() {
            // Left by an Iris that did not stop cleanly: end its master if one still answers,
            // and start afresh.
            let exit = self.control(remote, &socket, &["-O", "exit"]).await;
            tracing::info!(socket = %socket.display(), answered = exit.as_ref().is_ok_and(|output| output.status.success()), "replacing a stale ssh control socket");
            let _ = std::fs::remove_file(&socket);
        }
        let log = self.dir.join(format!("{key}.log"));
        let stderr = std::fs::File::create(&log).map_err(|error| {
            fail(
                Failure::Other,
                &format!("cannot write {}: {error}", log.display()),
            )
        })?;
        // In the foreground, as Iris's child: its own process group and a parent-death
        // signal like an agent's, registered with the guard before it connects.
        let mut command = tokio::process::Command::new("ssh");
        command
            .args(["-N", "-M", "-S"])
            .arg(&socket)
            .args([
                "-o",
                "ControlPersist=no",
                "-o",
                "ExitOnForwardFailure=yes",
                // In the foreground whatever the user's config says: Iris owns it.
                "-o",
                "ForkAfterAuthentication=no",
            ])
            .args(ssh_options(remote))
            .arg(&remote.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        crate::process::configure_child(&mut command);
        let mut child = command
            .spawn()
            .map_err(|error| fail(Failure::NoSsh, &error.to_string()))?;
        let Some(master) = child.id() else {
            return Err(fail(Failure::Other, "ssh exited before its pid was known"));
        };
        if let Some(guard) = &self.guard {
            guard.watch(master);
        }
        let ended = |failure: Failure, detail: &str| {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&socket);
            if said.trim().is_empty() {
                fail(failure, detail)
            } else {
                fail(classify(&said), &tail(&said))
            }
        };
        // Connected once its control socket accepts; failed if it exits first.
        let deadline = remote.connect_timeout + Duration::from_secs(30);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if let Some(guard) = &self.guard {
                    guard.forget(master);
                }
                return Err(ended(Failure::Other, &format!("ssh exited ({status})")));
            }
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if started.elapsed() >= deadline {
                crate::process::terminate_group(master, Duration::from_secs(1)).await;
                let _ = child.wait().await;
                if let Some(guard) = &self.guard {
                    guard.forget(master);
                }
                return Err(ended(
                    Failure::Timeout,
                    &format!("ssh did not finish connecting within {deadline:?}"),
                ));
            }
            // Polling a socket path is the only way to see the master listen (it says
            // nothing on a pipe); the back-off keeps it cheap, and a handshake takes
            // tens to hundreds of milliseconds.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        // Reaped when it exits; `running(pid)` then says it is gone.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let mut link = Link {
            socket,
            tunnel: None,
            master,
        };
        if let Some(iris_port) = target {
            // Bound on the host's loopback whatever its sshd's GatewayPorts says.
            let forward = format!(
                "127.0.0.1:{}:127.0.0.1:{iris_port}",
                remote.reverse_mcp_port.unwrap_or(0)
            );
            let output = match self
                .control(remote, &link.socket, &["-O", "forward", "-R", &forward])
                .await
            {
                Ok(output) => output,
                Err(error) => {
                    self.end(&link).await;
                    return Err(fail(Failure::Tunnel, &error));
                }
            };
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() {
                self.end(&link).await;
                return Err(fail(Failure::Tunnel, &tail(&stderr)));
            }
            let allocated = String::from_utf8_lossy(&output.stdout).trim().parse().ok();
            link.tunnel = remote.reverse_mcp_port.or(allocated);
            if link.tunnel.is_none() {
                self.end(&link).await;
                return Err(fail(
                    Failure::Tunnel,
                    "ssh did not say which port the host allocated",
                ));
            }
        }
        tracing::info!(team = %team.name, host = %remote.host, master, tunnel = ?link.tunnel, connect_ms = started.elapsed().as_millis(), "ssh connection to the host ready");
        Ok(link)
    }

    /// Runs `ssh -S socket <args> host` (a control command to the master).
    async fn control(
        &self,
        remote: &RemoteConfig,
        socket: &Path,
        args: &[&str],
    ) -> Result<std::process::Output, String> {
        let mut command = tokio::process::Command::new("ssh");
        command
            .arg("-S")
            .arg(socket)
            .args(args)
            .args(ssh_options(remote))
            .arg(&remote.host)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(Duration::from_secs(20), command.output()).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => Err(format!("cannot run ssh: {error}")),
            Err(_) => Err("the control master did not answer within 20 s".to_owned()),
        }
    }

    /// Runs `script` on `team`'s host through its master (started if needed), with a time
    /// limit; returns its exit code and output.
    ///
    /// # Errors
    /// [`RemoteError`] when the host cannot be reached or the script does not finish in time.
    pub async fn run(
        &self,
        team: &TeamConfig,
        remote: &RemoteConfig,
        iris_port: Option<u16>,
        script: &str,
        limit: Duration,
    ) -> Result<std::process::Output, RemoteError> {
        let link = self.link(team, remote, iris_port).await?;
        self.session(team, remote, &link, script, limit).await
    }

    /// Runs `script` on the host through `link`, within `limit`.
    async fn session(
        &self,
        team: &TeamConfig,
        remote: &RemoteConfig,
        link: &Link,
        script: &str,
        limit: Duration,
    ) -> Result<std::process::Output, RemoteError> {
        let mut command = tokio::process::Command::new("ssh");
        command
            .args(session_args(
                remote,
                Some(link),
                &format!("sh -c {}", quote(script)),
            ))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(limit, command.output()).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => Err(RemoteError::new(
                team,
                remote,
                Failure::NoSsh,
                &error.to_string(),
            )),
            Err(_) => Err(RemoteError::new(
                team,
                remote,
                Failure::Timeout,
                &format!("the command did not finish within {limit:?}"),
            )),
        }
    }

    /// Ends a master: `SIGTERM` (ssh removes its socket and closes the connection), then
    /// `SIGKILL` for what is left after a grace.
    async fn end(&self, link: &Link) {
        crate::process::terminate_group(link.master, Duration::from_secs(2)).await;
        self.forget(link);
        let _ = std::fs::remove_file(&link.socket);
    }

    /// Ends every master (Iris is stopping; its agents are already stopped).
    pub async fn close(&self) {
        let slots: Vec<_> = self
            .masters
            .lock()
            .map(|mut masters| masters.drain().map(|(_, slot)| slot).collect())
            .unwrap_or_default();
        for slot in slots {
            if let Some(link) = slot.lock().await.take() {
                self.end(&link).await;
            }
        }
    }
}

/// A shell script that deletes the transcript of `session` on the host (found by its name
/// under the agent's claude directory: `CLAUDE_CONFIG_DIR`, else `$HOME/.claude`, the team's
/// `env` first) and prints the path it deleted.
#[must_use]
pub fn delete_transcript_script(team: &TeamConfig, session: uuid::Uuid) -> String {
    let mut script = String::new();
    script.push_str(&exports(team, &["HOME", "CLAUDE_CONFIG_DIR"], "\n"));
    let _ = write!(
        script,
        "s=0; for f in \"${{CLAUDE_CONFIG_DIR:-$HOME/.claude}}\"/projects/*/{session}.jsonl; do \
         [ -f \"$f\" ] || continue; if rm -f \"$f\"; then printf '%s\\n' \"$f\"; else s=1; fi; done; exit $s"
    );
    script
}

/// What `iris doctor` found on a remote team's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The team directory's real path there, if it exists.
    pub directory: Option<String>,
    /// Where the claude executable is there, if found.
    pub claude: Option<String>,
    /// What `claude --version` printed.
    pub version: Option<String>,
}

/// Connects to `team`'s host directly (no master: `iris doctor` runs without Iris) and
/// looks at the team's directory and claude executable there.
///
/// # Errors
/// [`RemoteError`] when the host cannot be reached (each failure named).
pub async fn probe(team: &TeamConfig, remote: &RemoteConfig) -> Result<Probe, RemoteError> {
    let path = shell::path_word(&team.path.to_string_lossy());
    let program = shell::path_word(team.claude_path.as_deref().unwrap_or("claude"));
    let mut script = String::new();
    // What changes where `~` and claude are found; other values (secrets, maybe) stay
    // off the command line.
    script.push_str(&exports(team, &LOOKUP_VARIABLES, "\n"));
    let _ = write!(
        script,
        "if cd {path} 2>/dev/null; then printf 'dir=%s\\n' \"$(pwd -P)\"; else echo dir=; fi; \
         if p=$(command -v {program} 2>/dev/null); then printf 'claude=%s\\n' \"$p\"; \
         printf 'version=%s\\n' \"$({program} --version 2>&1 | head -n 1)\"; else echo claude=; fi"
    );
    let mut command = tokio::process::Command::new("ssh");
    command
        .args(session_args(
            remote,
            None,
            &format!("sh -c {}", quote(&script)),
        ))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let limit = remote.connect_timeout + Duration::from_secs(30);
    let output = match tokio::time::timeout(limit, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            return Err(RemoteError::new(
                team,
                remote,
                Failure::NoSsh,
                &error.to_string(),
            ));
        }
        Err(_) => {
            return Err(RemoteError::new(
                team,
                remote,
                Failure::Timeout,
                &format!("no answer within {limit:?}"),
            ));
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(255) {
        return Err(RemoteError::new(
            team,
            remote,
            classify(&stderr),
            &tail(&stderr),
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    Ok(Probe {
        directory: field("dir"),
        claude: field("claude"),
        version: field("version"),
    })
}

/// The argument vector (after `ssh`) that opens a pair's conversation on `team`'s host in
/// a terminal: `-t`, the options of `remote`, the host, and `cd <path> && <claude> <args>`.
#[must_use]
pub fn fork_args(
    team: &TeamConfig,
    remote: &RemoteConfig,
    program: &str,
    args: &[String],
) -> Vec<String> {
    let mut words = vec!["-t".to_owned()];
    let host_at = remote.ssh_args.len().saturating_sub(1);
    words.extend(remote.ssh_args[..host_at].iter().cloned());
    if let Some(port) = remote.port {
        words.push("-p".to_owned());
        words.push(port.to_string());
    }
    if let Some(identity) = &remote.identity {
        words.push("-i".to_owned());
        words.push(identity.display().to_string());
    }
    words.extend(remote.extra_ssh_args.iter().cloned());
    words.push(remote.host.clone());
    // The team's HOME and claude directory, as its agents run with them (the conversation
    // is found under them).
    let mut line = exports(team, &["HOME", "CLAUDE_CONFIG_DIR"], " && ");
    let _ = write!(
        line,
        "cd {} && {}",
        shell::path_word(&team.path.to_string_lossy()),
        shell::path_word(program)
    );
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    words.push(line);
    words
}

#[cfg(test)]
mod tests;
