//! The `iris` command. Everything lives in the library; this file parses arguments, sets up
//! logging and signals, calls the library, and maps errors to exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "iris",
    version,
    about = "Let the Claude Code agents of your projects ask and tell each other",
    after_help = "Configuration: $IRIS_CONFIG_PATH, else $IRIS_HOME/config.yaml (IRIS_HOME defaults to ~/.iris).\nLogs go to stderr; set RUST_LOG (e.g. RUST_LOG=iris=debug) for more."
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate the configuration, and show what it resolves to.
    Check {
        /// Print the resolved configuration as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the Iris MCP tools: Streamable HTTP on 127.0.0.1 (default port: settings.httpPort),
    /// or stdio with --stdio.
    Serve {
        /// Serve MCP on stdin/stdout instead of HTTP.
        #[arg(long)]
        stdio: bool,
        /// The HTTP port (0: any free port; the address is printed on stderr).
        #[arg(long)]
        port: Option<u16>,
        /// The HTTP address to bind; a non-loopback one needs bearer tokens in the config.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
    /// Write a commented default configuration file.
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Add a team: a name and its project directory (default: the current directory).
    AddTeam {
        /// The team's name (letters, digits, '-', '_', '.').
        name: String,
        /// The project directory.
        path: Option<std::path::PathBuf>,
        /// A description shown in listings.
        #[arg(long, short)]
        description: Option<String>,
    },
    /// Remove a team from the configuration.
    RemoveTeam {
        /// The team's name.
        name: String,
    },
    /// Register Iris's MCP server with Claude Code (`claude mcp add` when claude is on PATH,
    /// else by editing ~/.claude.json).
    Install {
        /// The MCP URL (default: http://127.0.0.1:<settings.httpPort>/mcp).
        #[arg(long)]
        url: Option<String>,
        /// Edit ~/.claude.json even when claude is on PATH.
        #[arg(long)]
        no_claude: bool,
    },
    /// Remove Iris's MCP server from Claude Code.
    Uninstall {
        /// Edit ~/.claude.json even when claude is on PATH.
        #[arg(long)]
        no_claude: bool,
    },
    /// Show the running server's agents (one line per caller->team pair).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The server's port (default: settings.httpPort).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Ask a team's agent through the running server and print the answer.
    Ask {
        /// The team to ask.
        team: String,
        /// The message.
        message: String,
        /// Who is asking (a team name, or a name for yourself).
        #[arg(long, default_value = "user")]
        from: String,
        /// The server's port (default: settings.httpPort).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Tell a team's agent something through the running server, without waiting.
    Tell {
        /// The team to tell.
        team: String,
        /// The message.
        message: String,
        /// Who is telling.
        #[arg(long, default_value = "user")]
        from: String,
        /// The server's port (default: settings.httpPort).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Show a pair's recent messages with their answers, newest first (from the running server).
    Report {
        /// The team.
        team: String,
        /// The calling team.
        #[arg(long, default_value = "user")]
        from: String,
        /// How many messages.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The server's port (default: settings.httpPort).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Check the claude binary and its version, the teams, the database and the port.
    Doctor,
    /// Drive the agent pool with JSON lines on stdin; answers (and, with --events, pool
    /// events) come as JSON lines on stdout.
    Console {
        /// Also write every pool event to stdout.
        #[arg(long)]
        events: bool,
    },
    /// Print, or run, the command that opens a pair's conversation in an interactive
    /// `claude` as a fork (the original session is left as it is).
    Fork {
        /// The target team.
        team: String,
        /// The calling team whose conversation with TEAM to fork.
        #[arg(long)]
        from: String,
        /// Run it (interactive) instead of printing it.
        #[arg(long)]
        run: bool,
    },
    /// Internal: the orphan guard that stops agents if Iris is killed.
    #[command(hide = true)]
    Guard {
        #[arg(long, default_value_t = 3000)]
        grace_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Guard { grace_ms }) = cli.command {
        // No runtime, no logging setup: the guard must be small and start fast.
        return match iris::guard::run(Duration::from_millis(grace_ms)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("iris guard: {error}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The last log events, for the `get_logs` tool.
static LOGS: std::sync::OnceLock<Arc<iris::logs::LogBuffer>> = std::sync::OnceLock::new();

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "iris=info",
        1 => "iris=debug",
        _ => "iris=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // stderr only: stdout carries protocol output (console, MCP stdio).
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let logs = LOGS.get_or_init(|| iris::logs::LogBuffer::new(2000));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(logs.layer())
        .init();
}

fn run(command: Option<Command>) -> anyhow::Result<ExitCode> {
    // Commands that edit the file work whether or not it exists or is valid today.
    match &command {
        Some(Command::Init { force }) => {
            let (file, _) = iris::config::locate()?;
            iris::config::edit::init(&file, *force)?;
            println!(
                "wrote {}; add teams with `iris add-team NAME PATH`",
                file.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::AddTeam {
            name,
            path,
            description,
        }) => {
            let (file, iris_home) = iris::config::locate()?;
            let directory = match path {
                Some(path) => path.clone(),
                None => std::env::current_dir().context("reading the current directory")?,
            };
            let added = iris::config::edit::add_team(
                &file,
                &iris_home,
                name,
                &directory,
                description.as_deref(),
            )?;
            println!(
                "added team {name} ({}) to {}",
                added.display(),
                file.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::RemoveTeam { name }) => {
            let (file, iris_home) = iris::config::locate()?;
            iris::config::edit::remove_team(&file, &iris_home, name)?;
            println!("removed team {name} from {}", file.display());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let config = iris::config::load()?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match command {
        None => {
            print_start_hints(&config);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Check { json }) => {
            print_check(&config, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve { stdio, port, bind }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config, stdio, port, bind))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Console { events }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(console(config, events))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Fork { team, from, run }) => fork(&config, &team, &from, run),
        Some(Command::Status { json, port }) => {
            let base = iris::client::base_url(port.unwrap_or(config.settings.http_port));
            let status = small_runtime()?.block_on(iris::client::status(&base))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", iris::client::status_table(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ask {
            team,
            message,
            from,
            port,
        }) => {
            let base = iris::client::base_url(port.unwrap_or(config.settings.http_port));
            let mut dots = 0_usize;
            let (body, is_error) = small_runtime()?.block_on(iris::client::ask(
                &base,
                &from,
                &team,
                &message,
                || {
                    dots += 1;
                    eprint!("\rwaiting for {team}{:<3}", ".".repeat(dots % 4));
                },
            ))?;
            if dots > 0 {
                eprintln!();
            }
            print_answer(&body, is_error)
        }
        Some(Command::Tell {
            team,
            message,
            from,
            port,
        }) => {
            let base = iris::client::base_url(port.unwrap_or(config.settings.http_port));
            let arguments =
                serde_json::json!({"fromTeam": from, "toTeam": team, "message": message});
            let (body, is_error) = small_runtime()?.block_on(iris::client::call_tool(
                &base,
                "quick_message",
                arguments,
            ))?;
            if is_error {
                return print_answer(&body, true);
            }
            println!(
                "queued for {team}: message {}",
                body["messageId"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Install { url, no_claude }) => {
            let url = url.unwrap_or_else(|| {
                format!("{}/mcp", iris::client::base_url(config.settings.http_port))
            });
            match iris::install::install(&url, !no_claude)? {
                iris::install::Registration::Command(command) => {
                    println!("registered Iris ({url}) with `{command}`")
                }
                iris::install::Registration::File(path)
                | iris::install::Registration::Unchanged(path) => {
                    println!("registered Iris ({url}) in {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Uninstall { no_claude }) => {
            match iris::install::uninstall(!no_claude)? {
                iris::install::Registration::Command(command) => {
                    println!("removed Iris with `{command}`")
                }
                iris::install::Registration::File(path) => {
                    println!("removed Iris from {}", path.display())
                }
                iris::install::Registration::Unchanged(path) => {
                    println!("Iris was not registered in {}", path.display())
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Report {
            team,
            from,
            limit,
            json,
            port,
        }) => {
            let base = iris::client::base_url(port.unwrap_or(config.settings.http_port));
            let arguments = serde_json::json!({"fromTeam": from, "team": team, "limit": limit});
            let (body, is_error) = small_runtime()?.block_on(iris::client::call_tool(
                &base,
                "session_report",
                arguments,
            ))?;
            if is_error {
                return print_answer(&body, true);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{from}->{team}: session {} ({} turns, ${:.4})",
                body["sessionId"].as_str().unwrap_or("none"),
                body["sessionTurns"],
                body["totalCostUsd"].as_f64().unwrap_or(0.0)
            );
            for message in body["messages"].as_array().into_iter().flatten() {
                println!(
                    "\n[{}] {} {}\n> {}\n{}",
                    message["status"].as_str().unwrap_or("?"),
                    message["mode"].as_str().unwrap_or("?"),
                    message["messageId"].as_str().unwrap_or("?"),
                    message["message"].as_str().unwrap_or_default(),
                    message["answer"]
                        .as_str()
                        .or_else(|| message["error"].as_str())
                        .unwrap_or("(no answer yet)")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Doctor) => {
            let checks = small_runtime()?.block_on(iris::client::doctor(&config));
            for check in &checks {
                println!(
                    "{} {}: {}",
                    if check.ok { "ok  " } else { "FAIL" },
                    check.name,
                    check.detail
                );
            }
            Ok(if checks.iter().all(|check| check.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(
            Command::Guard { .. }
            | Command::Init { .. }
            | Command::AddTeam { .. }
            | Command::RemoveTeam { .. },
        ) => Ok(ExitCode::SUCCESS),
    }
}

async fn serve(
    config: iris::config::Config,
    stdio: bool,
    port: Option<u16>,
    bind: std::net::IpAddr,
) -> anyhow::Result<()> {
    use rmcp::ServiceExt as _;
    let require_token = !stdio && !bind.is_loopback();
    if require_token
        && config.settings.http_token.is_none()
        && config.teams.values().all(|team| team.token.is_none())
    {
        anyhow::bail!(
            "--bind {bind}: serving on a non-loopback address needs bearer tokens; set settings.httpToken or a team's token in the config (or bind 127.0.0.1)"
        );
    }
    let port = port.unwrap_or(config.settings.http_port);
    // Listen before the pool starts, so that every agent it starts knows its Iris URL: also
    // those that deliver messages queued before a restart. Over stdio, agents call back over
    // a loopback listener that serves only their own URLs.
    let listener = if stdio {
        tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .context("listening on 127.0.0.1 for agents' calls back into Iris")?
    } else {
        let address = std::net::SocketAddr::new(bind, port);
        tokio::net::TcpListener::bind(address).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {address}: {error} (is another Iris running? set settings.httpPort or --port)"
            )
        })?
    };
    let local = listener.local_addr().context("reading the bound address")?;
    let pool = start_pool(config, Some(callback_base(local))).await?;
    let _reload = iris::reload::watch_config(&pool);
    let logs = LOGS.get().cloned();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let served = if stdio {
        // The stdio server runs in the caller's project: its directory names its team.
        let identity = std::env::current_dir()
            .ok()
            .and_then(|dir| std::fs::canonicalize(dir).ok())
            .and_then(|dir| {
                pool.config()
                    .teams
                    .values()
                    .filter(|team| team.remote.is_none() && dir.starts_with(&team.path))
                    .max_by_key(|team| team.path.components().count())
                    .map(|team| team.name.to_string())
            });
        if let Some(team) = &identity {
            tracing::info!(team, "stdio caller identified by its working directory");
        }
        tokio::spawn(iris::mcp::serve_http(
            listener,
            pool.clone(),
            logs.clone(),
            shutdown.clone(),
            iris::mcp::HttpAccess {
                require_token: false,
                callbacks_only: true,
            },
        ));
        let server = iris::mcp::IrisMcp::new(pool.clone(), logs).with_identity(identity);
        match server.serve(rmcp::transport::stdio()).await {
            Ok(running) => {
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
                    .context("serving MCP on stdio")
            }
            Err(error) => Err(anyhow::anyhow!("starting MCP on stdio: {error}")),
        }
    } else {
        eprintln!("iris: serving MCP on http://{local}/mcp (health: http://{local}/health)");
        iris::mcp::serve_http(
            listener,
            pool.clone(),
            logs,
            shutdown.clone(),
            iris::mcp::HttpAccess {
                require_token,
                callbacks_only: false,
            },
        )
        .await
        .context("serving MCP over HTTP")
    };
    tracing::debug!("transport stopped; stopping the pool");
    pool.shutdown().await;
    tracing::debug!("pool stopped");
    served
}

/// Where this machine's agents reach the server bound at `local`: loopback when it listens on
/// every address.
fn callback_base(local: std::net::SocketAddr) -> String {
    let ip = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, local.port()))
}

async fn start_pool(
    config: iris::config::Config,
    callback_base: Option<String>,
) -> anyhow::Result<iris::pool::Pool> {
    if let Err(error) = iris::process::become_subreaper() {
        tracing::warn!(%error, "cannot become child subreaper; orphaned agent tools may linger as zombies");
    }
    let exe =
        std::env::current_exe().context("locating the iris executable for the orphan guard")?;
    let guard = iris::guard::Guard::start(&exe, config.settings.stop_grace_period)
        .context("starting the orphan guard")?;
    iris::pool::Pool::start(
        Arc::new(config),
        iris::pool::PoolOptions {
            guard: Some(guard),
            callback_base,
        },
    )
    .await
    .context("starting the agent pool")
}

async fn console(config: iris::config::Config, events: bool) -> anyhow::Result<()> {
    let pool = start_pool(config, None).await?;
    let _reload = iris::reload::watch_config(&pool);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    iris::console::run(pool, events, shutdown)
        .await
        .context("console i/o")?;
    Ok(())
}

fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints a tool result: the answer, or the error and exit code 1.
fn print_answer(body: &serde_json::Value, is_error: bool) -> anyhow::Result<ExitCode> {
    if is_error {
        let error = body["error"]
            .as_str()
            .or_else(|| body["answer"].as_str())
            .unwrap_or("failed");
        eprintln!("error: {error}");
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", body["answer"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn fork(
    config: &iris::config::Config,
    team: &str,
    from: &str,
    run: bool,
) -> anyhow::Result<ExitCode> {
    let Some(team_config) = config.team(team) else {
        anyhow::bail!(
            "unknown team '{team}'; known teams: {}",
            config.team_names().join(", ")
        );
    };
    let caller = iris::config::TeamName::new(from).context("--from")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let session = runtime.block_on(async {
        let store = iris::store::Store::open(&config.database).await?;
        store.current_session(&caller, &team_config.name).await
    })?;
    let Some(session) = session else {
        anyhow::bail!("{from} has no conversation with {team} yet: nothing to fork");
    };
    let command = iris::pool::fork_command(config, team_config, session.session_id);
    if !run {
        println!("{}", command.shell_line());
        return Ok(ExitCode::SUCCESS);
    }
    let status = std::process::Command::new(&command.program)
        .args(&command.args)
        .current_dir(&command.cwd)
        .status()
        .with_context(|| format!("running {}", command.shell_line()))?;
    Ok(ExitCode::from(
        u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    ))
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop iris by closing its input");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
}

fn print_start_hints(config: &iris::config::Config) {
    match &config.source {
        Some(path) => println!(
            "iris: configuration {} ({} teams)",
            path.display(),
            config.teams.len()
        ),
        None => println!(
            "iris: no configuration file; running on embedded defaults with no teams.\n\
             Start with `iris init` and `iris add-team NAME PATH`, or create $IRIS_HOME/config.yaml\n\
             (IRIS_HOME defaults to ~/.iris) with a `teams:` map, e.g.\n\n\
             teams:\n  backend:\n    path: ~/code/backend\n    description: The API server\n    grantPermission: yes\n"
        ),
    }
    println!(
        "\nCommands: `iris check` validates the configuration; `iris console` drives the agent pool;\n`iris fork TEAM --from CALLER` opens a pair's conversation interactively.\nRun `iris --help` for more."
    );
}

fn print_check(config: &iris::config::Config, json: bool) -> anyhow::Result<()> {
    if json {
        let teams: Vec<serde_json::Value> = config
            .teams
            .values()
            .map(|team| {
                serde_json::json!({
                    "name": team.name,
                    "path": team.path,
                    "description": team.description,
                    "grantPermission": team.grant_permission.as_str(),
                    "remote": team.remote,
                })
            })
            .collect();
        let out = serde_json::json!({
            "source": config.source,
            "irisHome": config.iris_home,
            "maxProcesses": config.settings.max_processes,
            "teams": teams,
            "warnings": config.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &config.source {
        Some(path) => println!("configuration: {}", path.display()),
        None => println!("configuration: none (embedded defaults)"),
    }
    println!("IRIS_HOME: {}", config.iris_home.display());
    println!("maxProcesses: {}", config.settings.max_processes);
    if config.teams.is_empty() {
        println!("teams: none");
    }
    for team in config.teams.values() {
        let place = team
            .remote
            .as_deref()
            .map_or_else(String::new, |remote| format!(" on {remote}"));
        println!(
            "team {}: {}{} (grantPermission: {})",
            team.name,
            team.path.display(),
            place,
            team.grant_permission.as_str()
        );
    }
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    Ok(())
}
