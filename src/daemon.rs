//! One Iris per `IRIS_HOME` for every Claude Code session: the Unix socket an Iris serves
//! bridges on, the daemon a bridge starts when none runs, and `iris stop`.
//!
//! Each project's `.mcp.json` runs `iris serve --stdio`. That process is a thin bridge
//! ([`crate::bridge`]): it connects to `$IRIS_HOME/run/iris.sock`, says who it is in one
//! hello line (its working directory names its team) and from then on relays MCP lines both
//! ways. Whoever owns the socket holds `run/daemon.lock` (with its pid), so there is one
//! owner at a time: a foreground `iris serve`, or the daemon (`iris serve --daemon`) a bridge
//! started. Bridges start daemons under `run/start.lock`, so ten sessions starting at once
//! make one daemon.
//!
//! `run/` is made 0700 and the socket 0600; the daemon also checks each peer's uid.

use std::fs::File;
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use rmcp::ServiceExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::logs::LogBuffer;
use crate::mcp::{IrisMcp, stdio_caller};
use crate::pool::Pool;

/// The socket, under `$IRIS_HOME/run`.
pub const SOCKET_FILE: &str = "iris.sock";
/// Held by the Iris that owns the socket; holds its pid.
const OWNER_LOCK_FILE: &str = "daemon.lock";
/// Held by a bridge while it starts a daemon.
const START_LOCK_FILE: &str = "start.lock";
/// The daemon's log (its stderr).
pub const LOG_FILE: &str = "daemon.log";
/// A log beyond this is moved to `daemon.log.1` when a daemon starts.
const LOG_ROTATE_BYTES: u64 = 8 * 1024 * 1024;
/// The longest hello line accepted.
const MAX_HELLO_BYTES: u64 = 64 * 1024;
/// A daemon no bridge has connected to yet waits at least this long before it stops idle.
const FIRST_BRIDGE_GRACE: Duration = Duration::from_secs(30);
/// How long a connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon side or a bridge failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A file under `$IRIS_HOME/run` could not be made or used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another Iris owns this `IRIS_HOME`.
    #[error(
        "another Iris{} already serves this IRIS_HOME ({}); `iris stop` stops it",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        home.display()
    )]
    Owned {
        /// Its pid, if it wrote one.
        pid: Option<u32>,
        /// The `IRIS_HOME`.
        home: PathBuf,
    },
    /// The socket path is longer than a Unix socket address can hold.
    #[error(
        "{}: too long for a Unix socket ({} bytes, at most 107); use a shorter IRIS_HOME",
        path.display(),
        path.as_os_str().len()
    )]
    PathTooLong {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon could not be started, or said why it stopped.
    #[error("the Iris daemon did not start: {0}")]
    Start(String),
    /// The daemon refused this client (a different configuration file, say).
    #[error("the Iris daemon refused this session: {0}")]
    Refused(String),
    /// The daemon answered something that is not the protocol.
    #[error("the Iris daemon at {}: {message}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// `$IRIS_HOME/run`, made if missing and kept 0700 (the socket and the locks live there).
///
/// # Errors
/// [`DaemonError::Io`] when it cannot be made or its mode set.
pub fn run_dir(home: &Path) -> Result<PathBuf, DaemonError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = home.join("run");
    let failed = |source| DaemonError::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(failed)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    Ok(dir)
}

/// The socket bridges connect to.
#[must_use]
pub fn socket_path(home: &Path) -> PathBuf {
    home.join("run").join(SOCKET_FILE)
}

/// The daemon's log file.
#[must_use]
pub fn log_path(home: &Path) -> PathBuf {
    home.join("run").join(LOG_FILE)
}

fn open_lock(path: &Path) -> Result<File, DaemonError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| DaemonError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Held while this process owns the socket of its `IRIS_HOME`.
pub struct OwnerLock {
    _lock: Flock<File>,
}

impl std::fmt::Debug for OwnerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerLock")
    }
}

/// Takes the owner lock of `home`, or says who holds it.
///
/// # Errors
/// [`DaemonError::Owned`] when another Iris holds it; [`DaemonError::Io`].
pub fn try_own(home: &Path) -> Result<OwnerLock, DaemonError> {
    let path = run_dir(home)?.join(OWNER_LOCK_FILE);
    match lock_owner_file(&path)? {
        Ok(mut lock) => {
            crate::process::write_pid(&mut lock, &path);
            Ok(OwnerLock { _lock: lock })
        }
        Err(pid) => Err(DaemonError::Owned {
            pid,
            home: home.to_owned(),
        }),
    }
}

/// The owner lock taken, or the pid of its holder.
fn lock_owner_file(path: &Path) -> Result<Result<Flock<File>, Option<u32>>, DaemonError> {
    crate::process::try_lock(path).map_err(|source| DaemonError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Takes the owner lock, waiting up to `wait` for an Iris that is stopping to let it go.
///
/// # Errors
/// As [`try_own`], once `wait` has passed.
pub async fn own(home: &Path, wait: Duration) -> Result<OwnerLock, DaemonError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match try_own(home) {
            Err(DaemonError::Owned { .. }) if tokio::time::Instant::now() < deadline => {
                // The holder is another process: a lock it lets go of wakes nobody here.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Whether some process owns `home` now.
#[must_use]
pub fn is_owned(home: &Path) -> bool {
    let path = home.join("run").join(OWNER_LOCK_FILE);
    // Taken for a moment and let go (the pid in the file is left as it was).
    path.exists() && matches!(lock_owner_file(&path), Ok(Err(_)))
}

/// What a client says first, as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Hello {
    /// An `iris serve --stdio` bridge: MCP lines follow.
    Bridge {
        /// The bridge's version.
        version: String,
        /// The bridge's pid.
        pid: u32,
        /// Its working directory (it names the caller's team).
        cwd: PathBuf,
        /// The configuration file it would use.
        config: PathBuf,
    },
    /// `iris stop`.
    Stop {
        /// The stopper's version.
        version: String,
    },
}

/// The owner's answer to a [`Hello`], as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    /// `None` when the hello was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The owner's pid.
    pub pid: u32,
    /// The owner's version.
    pub version: String,
    /// The team the bridge's directory names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Where the owner serves HTTP.
    pub url: String,
}

/// What the owner's socket serves with.
pub struct SocketContext {
    /// The pool.
    pub pool: Pool,
    /// For the `get_logs` tool.
    pub logs: Option<Arc<LogBuffer>>,
    /// Where the owner serves HTTP.
    pub url: String,
    /// The configuration file the owner was started with.
    pub config_file: PathBuf,
    /// Cancelled to stop the owner (`iris stop`); also ends every bridge connection.
    pub shutdown: CancellationToken,
}

/// Binds the socket of `home` (a stale one left by a dead owner is replaced), 0600.
///
/// # Errors
/// [`DaemonError`] when the path is too long or it cannot be bound.
pub fn bind(home: &Path, _owner: &OwnerLock) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = socket_path(home);
    if path.as_os_str().len() > 107 {
        return Err(DaemonError::PathTooLong { path });
    }
    let failed = |source| DaemonError::Io {
        path: path.clone(),
        source,
    };
    // Only the owner gets here: a socket file is a dead owner's.
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(failed(error)),
        _ => {}
    }
    let listener = UnixListener::bind(&path).map_err(failed)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    Ok(listener)
}

/// Removes the socket file (the owner does, as it stops, before it lets go of the lock).
pub fn unbind(home: &Path) {
    let path = socket_path(home);
    if let Err(error) = std::fs::remove_file(&path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "cannot remove the socket");
    }
}

/// Accepts bridges (and `iris stop`) until `context.shutdown` is cancelled.
pub async fn serve_socket(listener: UnixListener, context: SocketContext) {
    let context = Arc::new(context);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = context.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                connections.spawn(connection(stream, Arc::clone(&context)));
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a bridge failed");
                // EMFILE and the like: give the process a moment instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection(stream: UnixStream, context: Arc<SocketContext>) {
    let peer = stream.peer_cred();
    let me = nix::unistd::getuid().as_raw();
    match &peer {
        Ok(peer) if peer.uid() == me => {}
        Ok(peer) => {
            tracing::warn!(uid = peer.uid(), "refused a socket client of another user");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read a socket client's credentials; refused");
            return;
        }
    }
    let peer_pid = peer
        .ok()
        .and_then(|peer| peer.pid())
        .and_then(|pid| u32::try_from(pid).ok());
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        HELLO_TIMEOUT,
        (&mut reader)
            .take(MAX_HELLO_BYTES)
            .read_until(b'\n', &mut line),
    )
    .await;
    let hello = match read {
        Ok(Ok(n)) if n > 0 => serde_json::from_slice::<Hello>(&line),
        Ok(Ok(_)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%error, "a socket client left before its hello");
            return;
        }
        Err(_) => {
            tracing::warn!("a socket client said no hello within {HELLO_TIMEOUT:?}; closed");
            return;
        }
    };
    let mut welcome = Welcome {
        error: None,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        team: None,
        url: context.url.clone(),
    };
    match hello {
        Err(error) => {
            welcome.error = Some(format!("not a hello line: {error}"));
            let _ = send_line(&mut write, &welcome).await;
        }
        Ok(Hello::Stop { .. }) => {
            tracing::info!(pid = ?peer_pid, "`iris stop`: stopping");
            let _ = send_line(&mut write, &welcome).await;
            context.shutdown.cancel();
        }
        Ok(Hello::Bridge {
            version,
            pid,
            cwd,
            config,
        }) => {
            if config != context.config_file {
                let refusal = format!(
                    "it uses {}, this session asks for {}; stop it (`iris stop`) to start one with this file, or give this session another IRIS_HOME",
                    context.config_file.display(),
                    config.display()
                );
                welcome.error = Some(refusal);
                let _ = send_line(&mut write, &welcome).await;
                return;
            }
            if version != welcome.version {
                tracing::warn!(
                    bridge = version,
                    daemon = welcome.version,
                    "a bridge of another Iris version connected; `iris stop` restarts the daemon with the new one"
                );
            }
            let identity = stdio_caller(&context.pool.config(), &cwd);
            welcome.team = identity.as_ref().map(|caller| caller.team.clone());
            if send_line(&mut write, &welcome).await.is_err() {
                return;
            }
            let _listed = context
                .pool
                .connect_bridge(Some(pid), cwd.clone(), welcome.team.clone());
            tracing::info!(pid, cwd = %cwd.display(), team = ?welcome.team, "bridge connected");
            let server =
                IrisMcp::new(context.pool.clone(), context.logs.clone()).with_identity(identity);
            match server.serve((reader, write)).await {
                Ok(running) => {
                    let cancel = running.cancellation_token();
                    let stop = context.shutdown.clone();
                    let ended = tokio::spawn(async move {
                        stop.cancelled().await;
                        cancel.cancel();
                    });
                    let _ = running.waiting().await;
                    ended.abort();
                }
                Err(error) => tracing::debug!(%error, "a bridge's MCP session did not start"),
            }
            tracing::info!(pid, "bridge disconnected");
        }
    }
}

async fn send_line<T: Serialize>(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    value: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}

/// Cancels `shutdown` once the pool has had no bridge, no HTTP request and no work for
/// `settings.daemonIdleTimeout` (read anew each time, so a reload applies).
pub async fn stop_when_idle(pool: Pool, shutdown: CancellationToken) {
    let mut events = pool.subscribe();
    // While there is work, it is looked at again this often (a person deciding an approval
    // sends no pool event).
    const WORK_RECHECK: Duration = Duration::from_secs(5);
    loop {
        let changed = pool.clients_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let mut timeout = pool.config().settings.daemon_idle_timeout;
        if !pool.ever_bridged() {
            // The bridge that started this daemon connects once it is told `ready`.
            timeout = timeout.max(FIRST_BRIDGE_GRACE);
        }
        let wait = match pool.quiet_since() {
            Some(since) => {
                let idle = since.elapsed();
                if idle >= timeout {
                    tracing::info!(
                        "no session, no HTTP client and no work for {:?} (settings.daemonIdleTimeout): stopping",
                        timeout
                    );
                    shutdown.cancel();
                    return;
                }
                timeout - idle
            }
            None => WORK_RECHECK.min(timeout.max(Duration::from_millis(100))),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = &mut changed => {}
            () = tokio::time::sleep(wait) => {}
            event = events.recv() => match event {
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                // Something happened in the pool: activity.
                _ => pool.client_seen(),
            },
        }
    }
}

/// What `iris stop` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// No Iris served this `IRIS_HOME`.
    NotRunning,
    /// The Iris with this pid stopped.
    Stopped(u32),
}

/// Stops the Iris that owns `home` (a daemon or a foreground `iris serve`) and waits up to
/// `wait` for it to be gone (its agents stopped, its lock let go, its process ended).
///
/// # Errors
/// [`DaemonError`] when it cannot be asked, or is still there after `wait`.
pub async fn stop(home: &Path, wait: Duration) -> Result<Stopped, DaemonError> {
    let path = socket_path(home);
    let Ok(stream) = UnixStream::connect(&path).await else {
        if is_owned(home) {
            return Err(DaemonError::Start(format!(
                "an Iris owns {} but does not answer on {}; stop it by its pid (in {})",
                home.display(),
                path.display(),
                home.join("run").join(OWNER_LOCK_FILE).display()
            )));
        }
        return Ok(Stopped::NotRunning);
    };
    let hello = Hello::Stop {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let (welcome, _, _) = handshake(stream, &hello, &path).await?;
    let deadline = tokio::time::Instant::now() + wait;
    // Gone: the lock let go (its agents are stopped by then) and the process ended.
    while is_owned(home) || crate::process::running(welcome.pid) {
        if tokio::time::Instant::now() >= deadline {
            return Err(DaemonError::Start(format!(
                "asked Iris (pid {}) to stop, and it still runs after {wait:?}",
                welcome.pid
            )));
        }
        // Another process: its lock going away wakes nobody here.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Stopped::Stopped(welcome.pid))
}

/// Sends `hello` and reads the owner's [`Welcome`]; returns the connection's halves (the
/// reader keeps whatever followed the welcome line).
///
/// # Errors
/// [`DaemonError::Refused`] when the owner refused; [`DaemonError::Protocol`] when it
/// closed or answered nonsense.
pub async fn handshake(
    stream: UnixStream,
    hello: &Hello,
    path: &Path,
) -> Result<
    (
        Welcome,
        BufReader<tokio::net::unix::OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
    ),
    DaemonError,
> {
    let protocol = |message: String| DaemonError::Protocol {
        path: path.to_owned(),
        message,
    };
    let (read, mut write) = stream.into_split();
    send_line(&mut write, hello)
        .await
        .map_err(|error| protocol(format!("cannot send the hello: {error}")))?;
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let n = (&mut reader)
        .take(MAX_HELLO_BYTES)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|error| protocol(format!("reading its welcome: {error}")))?;
    if n == 0 {
        return Err(protocol("it closed the connection at once".to_owned()));
    }
    let welcome: Welcome = serde_json::from_slice(&line)
        .map_err(|error| protocol(format!("its welcome is not JSON of the protocol: {error}")))?;
    if let Some(error) = welcome.error.clone() {
        return Err(DaemonError::Refused(error));
    }
    Ok((welcome, reader, write))
}

/// A bridge's connection to the owner of its `IRIS_HOME`.
pub struct Connection {
    /// What the owner said.
    pub welcome: Welcome,
    /// Lines from the owner.
    pub reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    /// Lines to the owner.
    pub writer: tokio::net::unix::OwnedWriteHalf,
}

/// Connects to the owner of `home`, starting a daemon (`iris serve --daemon`, with
/// `IRIS_HOME` and `IRIS_CONFIG_PATH` set to these) when none runs. Race-free: bridges
/// start daemons one at a time under `run/start.lock`, each first trying to connect again.
///
/// # Errors
/// [`DaemonError`] when no owner can be reached or started, or the owner refuses.
pub async fn connect_or_start(
    home: &Path,
    hello: &Hello,
    config_file: &Path,
) -> Result<Connection, DaemonError> {
    let path = socket_path(home);
    if let Some(connection) = try_connect(&path, hello).await? {
        return Ok(connection);
    }
    let start_lock = run_dir(home)?.join(START_LOCK_FILE);
    let file = open_lock(&start_lock)?;
    let lock = tokio::task::spawn_blocking(move || Flock::lock(file, FlockArg::LockExclusive))
        .await
        .map_err(|error| DaemonError::Start(format!("waiting for {START_LOCK_FILE}: {error}")))?
        .map_err(|(_, errno)| DaemonError::Io {
            path: start_lock.clone(),
            source: errno.into(),
        })?;
    // Another bridge may have started one while this one waited.
    if let Some(connection) = try_connect(&path, hello).await? {
        drop(lock);
        return Ok(connection);
    }
    start_daemon(home, config_file).await?;
    let connection = try_connect(&path, hello).await?.ok_or_else(|| {
        DaemonError::Start(format!(
            "it said it was ready, and {} does not accept",
            path.display()
        ))
    })?;
    drop(lock);
    Ok(connection)
}

/// `None` when nobody listens (no socket, or a dead owner's).
async fn try_connect(path: &Path, hello: &Hello) -> Result<Option<Connection>, DaemonError> {
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(source) => {
            return Err(DaemonError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    match handshake(stream, hello, path).await {
        Ok((welcome, reader, writer)) => Ok(Some(Connection {
            welcome,
            reader,
            writer,
        })),
        // An owner that is stopping closes connections it had not served yet.
        Err(DaemonError::Protocol { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Starts `iris serve --daemon` in its own process group, its stderr appended to
/// `run/daemon.log`, and waits until it says it is ready (or exits, saying why).
async fn start_daemon(home: &Path, config_file: &Path) -> Result<(), DaemonError> {
    let log = log_path(home);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DaemonError::Io { path, source }
    };
    if std::fs::metadata(&log).is_ok_and(|meta| meta.len() > LOG_ROTATE_BYTES) {
        let mut old = log.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&log, &old).map_err(io(&log))?;
    }
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)
            .map_err(io(&log))?
    };
    let start = file.seek(std::io::SeekFrom::End(0)).map_err(io(&log))?;
    let exe = std::env::current_exe()
        .map_err(|error| DaemonError::Start(format!("cannot find the iris executable: {error}")))?;
    let mut command = tokio::process::Command::new(&exe);
    command
        .args(["serve", "--daemon"])
        .env("IRIS_HOME", home)
        .env("IRIS_CONFIG_PATH", config_file)
        .current_dir(home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(file)
        // Its own group: a signal to the session's group (Ctrl-C) does not reach it.
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|error| DaemonError::Start(format!("running {}: {error}", exe.display())))?;
    let pid = child.id();
    tracing::info!(?pid, log = %log.display(), "started an Iris daemon");
    let mut ready = String::new();
    if let Some(stdout) = child.stdout.take() {
        let mut stdout = BufReader::new(stdout);
        // It answers once its pool is up: the start of its agents is not waited for, but
        // recovery of a large database may take a while.
        let _ = tokio::time::timeout(Duration::from_secs(120), stdout.read_line(&mut ready)).await;
    }
    if ready.starts_with("ready") {
        // Reap it when it exits while this bridge still runs.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        return Ok(());
    }
    // It did not say ready: it failed (its reason is in the log), or hangs.
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        _ => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            "it did not get ready in time, and was stopped".to_owned()
        }
    };
    let mut said = String::new();
    if let Ok(mut file) = File::open(&log)
        && file.seek(std::io::SeekFrom::Start(start)).is_ok()
    {
        let _ = file.take(16 * 1024).read_to_string(&mut said);
    }
    let said = said.trim();
    Err(DaemonError::Start(if said.is_empty() {
        format!("{status} (log: {})", log.display())
    } else {
        format!("{status}; it said:\n{said}\n(log: {})", log.display())
    }))
}
