//! `iris serve` and `iris console` wired together: the orphan guard, the pool, config hot
//! reload and the transport, started in the right order and stopped cleanly.
//!
//! The order matters: the HTTP listener is bound before the pool starts, so that every agent
//! the pool starts (also those that deliver messages queued before a restart) knows its own
//! Iris URL; the address is announced (`--port-file`) only once the pool is ready, so a
//! reader of the file can call at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmcp::ServiceExt as _;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::config::Config;
use crate::daemon::{DaemonError, OwnerLock, SocketContext};
use crate::guard::Guard;
use crate::logs::LogBuffer;
use crate::mcp::{HttpAccess, IrisMcp, serve_http, stdio_caller};
use crate::pool::{Pool, PoolError, PoolOptions};

/// How `iris serve` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// MCP on stdin/stdout in this process (agents' call-backs on a loopback listener of
    /// their own) instead of Streamable HTTP: `iris serve --stdio --in-process`, one session
    /// per `IRIS_HOME`. (`iris serve --stdio` is a bridge to the daemon: [`crate::bridge`].)
    pub stdio: bool,
    /// The daemon bridges start (`iris serve --daemon`): it waits for a stopping Iris to let
    /// go of `IRIS_HOME`, serves HTTP on another port when `settings.httpPort` is taken, says
    /// `ready` on stdout once it accepts bridges, and stops after `settings.daemonIdleTimeout`
    /// unused.
    pub daemon: bool,
    /// The HTTP port; 0 picks a free one. Default: `settings.httpPort`.
    pub port: Option<u16>,
    /// The address to bind; a non-loopback one needs bearer tokens in the config.
    pub bind: IpAddr,
    /// Where to write the bound address (`127.0.0.1:PORT`) once Iris is ready.
    pub port_file: Option<PathBuf>,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback bind without any token in the config.
    #[error(
        "--bind {bind}: serving on a non-loopback address needs bearer tokens; set settings.httpToken or a team's token in the config (or bind 127.0.0.1)"
    )]
    NeedsToken {
        /// The address asked for.
        bind: IpAddr,
    },
    /// The listener could not be bound.
    #[error(
        "cannot listen on {address}: {source} (is another Iris running? set settings.httpPort or --port)"
    )]
    Listen {
        /// Where.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The orphan guard could not be started.
    #[error("starting the orphan guard: {0}")]
    Guard(#[source] std::io::Error),
    /// The pool could not start (the database, the instance lock...).
    #[error("starting the agent pool: {0}")]
    Pool(#[source] PoolError),
    /// The address could not be written to the port file.
    #[error("writing the address to {}: {source}", path.display())]
    PortFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The transport failed.
    #[error("serving MCP {transport}: {message}")]
    Transport {
        /// `over HTTP` or `on stdio`.
        transport: &'static str,
        /// What failed.
        message: String,
    },
    /// Console input or output failed.
    #[error("console i/o: {0}")]
    Console(#[source] std::io::Error),
    /// The socket bridges connect to, or its lock.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// How long a starting daemon waits for an Iris that is stopping to let go of `IRIS_HOME`.
const OWNER_WAIT: Duration = Duration::from_secs(60);

/// Serves the Iris MCP tools until `shutdown` is cancelled (or, on stdio, the client
/// closes its end), then stops the pool: every agent stopped and reaped.
///
/// # Errors
/// [`ServeError`] naming what could not be started or served.
pub async fn serve(
    config: Config,
    options: ServeOptions,
    logs: Option<Arc<LogBuffer>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let require_token = !options.stdio && !options.bind.is_loopback();
    if require_token
        && config.settings.http_token.is_none()
        && config.teams.values().all(|team| team.token.is_none())
    {
        return Err(ServeError::NeedsToken { bind: options.bind });
    }
    // Over stdio, agents call back over a loopback listener that serves only their URLs.
    let address = if options.stdio {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
    } else {
        SocketAddr::new(
            options.bind,
            options.port.unwrap_or(config.settings.http_port),
        )
    };
    // The one Iris of this IRIS_HOME owns the socket bridges connect to (not the in-process
    // stdio server: it serves its one session).
    let owner = if options.stdio {
        None
    } else if options.daemon {
        Some(crate::daemon::own(&config.iris_home, OWNER_WAIT).await?)
    } else {
        Some(crate::daemon::try_own(&config.iris_home)?)
    };
    let socket = match &owner {
        Some(owner) => match crate::daemon::bind(&config.iris_home, owner) {
            Ok(socket) => Some(socket),
            Err(error) if !options.daemon => {
                tracing::warn!(%error, "`iris serve --stdio` sessions cannot reach this Iris");
                None
            }
            Err(error) => return Err(error.into()),
        },
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        // The daemon serves sessions first: with its port taken (another IRIS_HOME's Iris),
        // it serves HTTP elsewhere and says where in run/approver.json.
        Err(error)
            if options.daemon
                && options.port.is_none()
                && error.kind() == std::io::ErrorKind::AddrInUse =>
        {
            let any = SocketAddr::new(address.ip(), 0);
            let listener =
                tokio::net::TcpListener::bind(any)
                    .await
                    .map_err(|source| ServeError::Listen {
                        address: any,
                        source,
                    })?;
            tracing::warn!(
                "{address} is in use (settings.httpPort): serving HTTP on {} instead; `iris status` finds it",
                listener
                    .local_addr()
                    .map_or_else(|_| "another port".to_owned(), |a| a.to_string())
            );
            listener
        }
        Err(source) => return Err(ServeError::Listen { address, source }),
    };
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Listen { address, source })?;
    if config.source.is_none() {
        eprintln!(
            "iris: no configuration file ({}): running on embedded defaults with no teams.\n      \
             Add teams with `iris init` and `iris add-team NAME PATH`: this server picks them up.",
            config.iris_home.join("config.yaml").display()
        );
    }
    // Remote teams' tunnels lead to a loopback listener that serves agent URLs only: a
    // user of a remote host who finds a tunnel's port there reaches no tool, no status and
    // no dashboard without an agent's token. Bound before the pool starts, so that even
    // the agents delivering messages queued before a restart get it.
    let tunnels = match tokio::net::TcpListener::bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        0,
    ))
    .await
    {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for remote teams' tunnels; remote agents start without Iris's MCP server");
            None
        }
    };
    let tunnel_port = tunnels
        .as_ref()
        .and_then(|listener| listener.local_addr().ok())
        .map(|address| address.port());
    let pool = start_pool(config, Some(callback_base(local)), tunnel_port).await?;
    let _reload = crate::reload::watch_config(&pool);
    // `iris stop` (over the socket) and an idle daemon stop through this token.
    let stop = shutdown.child_token();
    if let Some(listener) = tunnels {
        tokio::spawn(serve_http(
            listener,
            pool.clone(),
            logs.clone(),
            stop.clone(),
            HttpAccess {
                require_token: false,
                callbacks_only: false,
                agents_only: true,
            },
        ));
    }
    let iris_home = pool.config().iris_home.clone();
    let approver = crate::approver::ApproverFile {
        url: callback_base(local),
        token: pool.approver_token(),
        pid: std::process::id(),
    };
    if let Err(error) = crate::approver::write_approver_file(&iris_home, &approver) {
        tracing::warn!(%error, "cannot write the approver file; `iris approvals` cannot reach this Iris");
    }
    let sessions = socket.map(|socket| {
        let context = SocketContext {
            pool: pool.clone(),
            logs: logs.clone(),
            url: callback_base(local),
            config_file: crate::config::locate()
                .map(|(file, _)| file)
                .unwrap_or_else(|_| iris_home.join("config.yaml")),
            shutdown: stop.clone(),
        };
        tokio::spawn(crate::daemon::serve_socket(socket, context))
    });
    if options.daemon {
        tokio::spawn(crate::daemon::stop_when_idle(pool.clone(), stop.clone()));
    }
    let served = serve_pool(&pool, listener, local, &options, logs, &stop).await;
    tracing::debug!("transport stopped; stopping the pool");
    stop.cancel();
    if let Some(sessions) = sessions {
        let _ = sessions.await;
    }
    finish(&iris_home, &pool, owner).await;
    served
}

/// Stops what [`serve`] started, in order: no new session can connect (the socket goes),
/// no `iris approvals` finds it, the pool stops, and only then is `IRIS_HOME` let go.
async fn finish(iris_home: &Path, pool: &Pool, owner: Option<OwnerLock>) {
    if owner.is_some() {
        crate::daemon::unbind(iris_home);
    }
    crate::approver::remove_approver_file(iris_home);
    pool.shutdown().await;
    tracing::debug!("pool stopped");
    drop(owner);
}

async fn serve_pool(
    pool: &Pool,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    options: &ServeOptions,
    logs: Option<Arc<LogBuffer>>,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    if let Some(path) = &options.port_file {
        write_port_file(path, local)?;
    }
    if options.daemon {
        // The bridge that started this daemon waits for this line (then drops the pipe).
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "ready {local}").and_then(|()| stdout.flush());
    }
    if !options.stdio {
        eprintln!("iris: serving MCP on http://{local}/mcp (health: http://{local}/health)");
        let access = HttpAccess {
            require_token: !options.bind.is_loopback(),
            callbacks_only: false,
            agents_only: false,
        };
        return serve_http(listener, pool.clone(), logs, shutdown.clone(), access)
            .await
            .map_err(|error| ServeError::Transport {
                transport: "over HTTP",
                message: error.to_string(),
            });
    }
    // The stdio server runs in the caller's project: its directory names its team.
    let identity = std::env::current_dir()
        .ok()
        .and_then(|dir| stdio_caller(&pool.config(), &dir));
    if let Some(caller) = &identity {
        tracing::info!(
            team = caller.team,
            "stdio caller identified by its working directory"
        );
    }
    let callbacks = HttpAccess {
        require_token: false,
        callbacks_only: true,
        agents_only: false,
    };
    tokio::spawn(serve_http(
        listener,
        pool.clone(),
        logs.clone(),
        shutdown.clone(),
        callbacks,
    ));
    let server = IrisMcp::new(pool.clone(), logs).with_identity(identity);
    let stdio_failed = |error: &dyn std::fmt::Display| ServeError::Transport {
        transport: "on stdio",
        message: error.to_string(),
    };
    // When stdin and stdout are pipes (as an MCP client starts a stdio server), they are
    // read and written through the reactor: tokio's own stdin/stdout hand every read and
    // write to a blocking thread, a thread hop per message each way.
    let running = server
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|error| stdio_failed(&error))?;
    let cancel = running.cancellation_token();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        cancel.cancel();
    });
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|error| stdio_failed(&error))
}

/// Runs `iris console` on stdin/stdout until the input ends or `shutdown` is cancelled.
///
/// # Errors
/// [`ServeError`] when the pool cannot start or the console's i/o fails.
pub async fn console(
    config: Config,
    events: bool,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let pool = start_pool(config, None, None).await?;
    let _reload = crate::reload::watch_config(&pool);
    crate::console::run(pool, events, shutdown)
        .await
        .map_err(ServeError::Console)
}

/// Starts the orphan guard and the pool (Iris becomes its agents' child subreaper first).
async fn start_pool(
    config: Config,
    callback_base: Option<String>,
    tunnel_port: Option<u16>,
) -> Result<Pool, ServeError> {
    if let Err(error) = crate::process::become_subreaper() {
        tracing::warn!(%error, "cannot become child subreaper; orphaned agent tools may linger as zombies");
    }
    let guard = std::env::current_exe()
        .and_then(|exe| Guard::start(&exe, config.settings.stop_grace_period))
        .map_err(ServeError::Guard)?;
    Pool::start(
        Arc::new(config),
        PoolOptions {
            guard: Some(guard),
            callback_base,
            tunnel_port,
        },
    )
    .await
    .map_err(ServeError::Pool)
}

/// Where this machine's agents reach the server bound at `local`: loopback when it listens on
/// every address.
fn callback_base(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}

/// Writes `address` and a newline to `path` atomically (a temporary file renamed over it),
/// so a reader sees the whole address or no file.
fn write_port_file(path: &Path, address: SocketAddr) -> Result<(), ServeError> {
    let failed = |source| ServeError::PortFile {
        path: path.to_owned(),
        source,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, format!("{address}\n")).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}

/// Reads a port file written by `iris serve --port-file`: `None` until it exists.
///
/// # Errors
/// The file exists but does not hold an address.
pub fn read_port_file(path: &Path) -> std::io::Result<Option<SocketAddr>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold an address: {error}", path.display()),
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_call_back_on_loopback_when_iris_listens_everywhere() {
        let every = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1615);
        assert_eq!(callback_base(every), "http://127.0.0.1:1615");
        let every6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 1615);
        assert_eq!(callback_base(every6), "http://[::1]:1615");
        let one = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 9);
        assert_eq!(callback_base(one), "http://10.0.0.2:9");
    }

    #[test]
    fn a_port_file_holds_the_whole_address_or_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("port");
        assert_eq!(read_port_file(&path).unwrap(), None);
        let address: SocketAddr = "127.0.0.1:43210".parse().unwrap();
        write_port_file(&path, address).unwrap();
        assert_eq!(read_port_file(&path).unwrap(), Some(address));
        assert!(!dir.path().join("port.partial").exists());
        std::fs::write(&path, "not an address").unwrap();
        assert!(read_port_file(&path).is_err());
    }
}
