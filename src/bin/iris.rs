//! The `iris` command. Everything lives in the library; this file parses arguments, sets up
//! logging, turns signals into a cancellation, calls the library, prints what it returns and
//! maps errors to exit codes.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use iris::output;
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
    /// Serve the Iris MCP tools: Streamable HTTP on 127.0.0.1 (default port: settings.httpPort)
    /// with the dashboard at / and /metrics, or stdio with --stdio.
    Serve {
        /// Serve MCP on stdin/stdout (as a project's `.mcp.json` runs it): a bridge to the one
        /// Iris of this IRIS_HOME, started when none runs.
        #[arg(long)]
        stdio: bool,
        /// With --stdio: serve in this process instead of through the shared daemon (one
        /// session per IRIS_HOME).
        #[arg(long, requires = "stdio")]
        in_process: bool,
        /// Internal: the shared daemon `iris serve --stdio` starts.
        #[arg(long, hide = true, conflicts_with = "stdio")]
        daemon: bool,
        /// The HTTP port (0: any free port; the address is printed on stderr).
        #[arg(long)]
        port: Option<u16>,
        /// The HTTP address to bind; a non-loopback one needs bearer tokens in the config.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Write the bound address (`127.0.0.1:PORT`) to this file once Iris is ready (with
        /// --stdio --in-process: the address agents call back on).
        #[arg(long, value_name = "PATH")]
        port_file: Option<std::path::PathBuf>,
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
    /// Register Iris's MCP server with Claude Code: for every project over HTTP (`claude mcp
    /// add` when claude is on PATH, else by editing ~/.claude.json), or with --project in this
    /// project's .mcp.json as `iris serve --stdio`.
    Install {
        /// Write the current directory's .mcp.json (project scope, stdio; no server to start,
        /// no token) instead of the user-scope HTTP registration.
        #[arg(long, conflicts_with = "url")]
        project: bool,
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
    /// Stop the Iris of this IRIS_HOME (the daemon sessions share, or a foreground `iris
    /// serve`): its agents stop; the next session's call starts a new daemon.
    Stop {
        /// How long to wait for it to be gone, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Show the running server's agents (one line per caller->team pair) and the sessions
    /// connected to it.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The server's port (default: the running server's, else settings.httpPort).
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
    /// List the tool-permission requests that wait for a person (from the running server).
    Approvals {
        #[command(subcommand)]
        action: Option<ApprovalsAction>,
        /// Keep following: print each new request and each decision as it happens.
        #[arg(long)]
        watch: bool,
        /// Also list decided requests (the last --limit, newest first).
        #[arg(long)]
        all: bool,
        /// With --all: how many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (one line per event with --watch).
        #[arg(long)]
        json: bool,
        /// The server's port (default: the running server's, from $IRIS_HOME/run/approver.json).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Allow a pending tool-permission request (ID: its id, or a unique prefix of 4+ characters).
    Approve {
        /// The request's id.
        id: String,
        /// Also allow the same request of this pair from now on (the CLI's suggested rule,
        /// else the exact tool and input); `iris approvals rules` lists them.
        #[arg(long)]
        always: bool,
        /// The server's port (default: the running server's).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Deny a pending tool-permission request; the agent reads the reason.
    Deny {
        /// The request's id.
        id: String,
        /// Why (the agent gets it with the denial).
        #[arg(long)]
        reason: Option<String>,
        /// The server's port (default: the running server's).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Print a one-time link (valid 2 minutes) that logs you into the dashboard as a person,
    /// so that you can decide approvals there.
    Dashboard {
        /// The server's port (default: the running server's, from $IRIS_HOME/run/approver.json).
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

#[derive(Subcommand)]
enum ApprovalsAction {
    /// List the allow-always rules people made (`iris approve --always`).
    Rules {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an allow-always rule (ID: its id, or a unique prefix of 4+ characters).
    Forget {
        /// The rule's id.
        id: String,
    },
}

/// `print!` that ends the program quietly when stdout is a closed pipe (`iris report | head`),
/// as command-line tools do, instead of panicking.
macro_rules! out {
    ($($argument:tt)*) => {
        write_out(format_args!($($argument)*))
    };
}

/// `println!`, as [`out!`].
macro_rules! outln {
    ($($argument:tt)*) => {
        write_out(format_args!("{}\n", format_args!($($argument)*)))
    };
}

fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            // Whoever reads stopped reading: nothing more to say, and no one to say it to.
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {error}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    // The guard is started by Iris itself, always as `iris guard --grace-ms=N`: it is
    // dispatched before the argument parser, the runtime or logging exist, so that it stays
    // small (it lives as long as Iris) and starts fast.
    if let Some(grace_ms) = guard_arguments() {
        return match iris::guard::run(Duration::from_millis(grace_ms)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("iris guard: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Some(grace in ms)` when this process is the guard: `iris guard --grace-ms=N` exactly, as
/// `Guard::start` runs it (anything else goes to the argument parser, which explains).
fn guard_arguments() -> Option<u64> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != "guard" {
        return None;
    }
    let grace = args.next()?;
    let grace = grace.to_str()?.strip_prefix("--grace-ms=")?.parse().ok()?;
    args.next().is_none().then_some(grace)
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
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // The daemon's stderr is its log file: no colour codes there.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(logs.layer())
        .init();
}

fn run(command: Option<Command>) -> anyhow::Result<ExitCode> {
    // Commands that edit the file work whether or not it exists or is valid today.
    match &command {
        // The bridge only needs to find the daemon (which reads the file itself).
        Some(Command::Serve {
            stdio: true,
            in_process: false,
            port,
            port_file,
            ..
        }) => {
            if port.is_some() || port_file.is_some() {
                anyhow::bail!(
                    "--port and --port-file do not apply to `iris serve --stdio` (the shared daemon serves HTTP on settings.httpPort; `iris status` shows where); use them with `iris serve`, or with `--stdio --in-process`"
                );
            }
            let (config_file, home) = iris::config::locate()?;
            let cwd = std::env::current_dir().context("reading the current directory")?;
            small_runtime()?.block_on(iris::bridge::run(iris::bridge::BridgeOptions {
                home,
                config_file,
                cwd,
            }))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Stop { wait }) => {
            let (_, home) = iris::config::locate()?;
            let wait = Duration::from_secs(*wait);
            match small_runtime()?.block_on(iris::daemon::stop(&home, wait))? {
                iris::daemon::Stopped::NotRunning => {
                    outln!("no Iris runs for {}", home.display());
                }
                iris::daemon::Stopped::Stopped(pid) => {
                    outln!("stopped Iris (pid {pid}) of {}", home.display());
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Init { force }) => {
            let (file, _) = iris::config::locate()?;
            iris::config::edit::init(&file, *force)?;
            outln!(
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
            outln!(
                "added team {name} ({}) to {}",
                added.display(),
                file.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::RemoveTeam { name }) => {
            let (file, iris_home) = iris::config::locate()?;
            iris::config::edit::remove_team(&file, &iris_home, name)?;
            outln!("removed team {name} from {}", file.display());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    // Commands that only talk to a running server need its address, not a valid file: a
    // problem in the file is said, and they go on with the defaults (and `--port`).
    let talks_to_server = matches!(
        command,
        Some(
            Command::Status { .. }
                | Command::Ask { .. }
                | Command::Tell { .. }
                | Command::Report { .. }
                | Command::Approvals { .. }
                | Command::Approve { .. }
                | Command::Deny { .. }
                | Command::Dashboard { .. }
                | Command::Doctor
        )
    );
    let (config, config_error) = match iris::config::load() {
        Ok(config) => (config, None),
        Err(error) if talks_to_server => {
            let (_, iris_home) = iris::config::locate()?;
            (iris::config::Config::defaults(iris_home), Some(error))
        }
        Err(error) => return Err(error.into()),
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(error) = &config_error
        && !matches!(command, Some(Command::Doctor))
    {
        eprintln!(
            "warning: the configuration has problems; going on with the defaults (port {}; --port sets it):\n{error}",
            config.settings.http_port
        );
    }
    // The running Iris says where it serves (a daemon may have had to take another port).
    let base = |port: Option<u16>| match port {
        Some(port) => iris::client::base_url(port),
        None => iris::approver::running_url(&config.iris_home)
            .unwrap_or_else(|| iris::client::base_url(config.settings.http_port)),
    };
    match command {
        None => {
            out!("{}", output::start_hints(&config));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Check { json }) => {
            if json {
                let report = output::CheckReport::of(&config);
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", output::check(&config));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve {
            stdio,
            in_process: _,
            daemon,
            port,
            bind,
            port_file,
        }) => {
            let options = iris::serve::ServeOptions {
                stdio,
                daemon,
                port,
                bind,
                port_file,
            };
            let shutdown = CancellationToken::new();
            let logs = LOGS.get().cloned();
            runtime()?.block_on(async move {
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                iris::serve::serve(config, options, logs, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Console { events }) => {
            let shutdown = CancellationToken::new();
            runtime()?.block_on(async move {
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                iris::serve::console(config, events, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Fork { team, from, run }) => {
            let command = small_runtime()?.block_on(iris::client::fork(&config, &team, &from))?;
            if !run {
                outln!("{}", command.shell_line());
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
        Some(Command::Status { json, port }) => {
            let status = small_runtime()?.block_on(iris::client::status(&base(port)))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                out!("{}", output::status_table(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ask {
            team,
            message,
            from,
            port,
        }) => {
            let mut dots = 0_usize;
            let asked = small_runtime()?.block_on(iris::client::ask(
                &base(port),
                &from,
                &team,
                &message,
                || {
                    dots += 1;
                    eprint!("\rwaiting for {team}{:<3}", ".".repeat(dots % 4));
                },
            ));
            if dots > 0 {
                eprintln!();
            }
            match output::answer(&asked?) {
                Ok(answer) => {
                    outln!("{answer}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Some(Command::Tell {
            team,
            message,
            from,
            port,
        }) => {
            let queued = small_runtime()?.block_on(iris::client::tell(
                &base(port),
                &from,
                &team,
                &message,
            ))?;
            outln!("queued for {team}: message {}", queued.message_id);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Report {
            team,
            from,
            limit,
            json,
            port,
        }) => {
            let page = small_runtime()?.block_on(iris::client::report(
                &base(port),
                &from,
                &team,
                limit,
            ))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                out!("{}", output::report(&page));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(
            Command::Approvals { .. }
            | Command::Approve { .. }
            | Command::Deny { .. }
            | Command::Dashboard { .. },
        ) if std::env::var_os(iris::pool::AGENT_KEY_VARIABLE).is_some() => {
            anyhow::bail!(
                "this command runs inside an agent Iris started ({} is set): approvals come only from a person",
                iris::pool::AGENT_KEY_VARIABLE
            )
        }
        Some(Command::Approvals {
            action,
            watch,
            all,
            limit,
            json,
            port,
        }) => {
            let approver = iris::client::Approver::find(&config.iris_home, port)?;
            let runtime = small_runtime()?;
            match action {
                Some(ApprovalsAction::Rules { json }) => {
                    let rules = runtime.block_on(approver.rules())?;
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&rules)?);
                    } else {
                        out!("{}", output::approval_rules(&rules));
                    }
                }
                Some(ApprovalsAction::Forget { id }) => {
                    let rule = runtime.block_on(approver.forget(&id))?;
                    outln!("forgot {}", output::approval_rule_line(&rule));
                }
                None if watch => {
                    runtime.block_on(approver.watch(|event| {
                        if json {
                            outln!("{}", serde_json::to_string(&event).unwrap_or_default());
                        } else {
                            outln!("{}", output::approval_event(&event));
                        }
                    }))?;
                }
                None => {
                    let list = runtime.block_on(approver.list(all, limit))?;
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        out!("{}", output::approvals(&list, all));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Dashboard { port }) => {
            let approver = iris::client::Approver::find(&config.iris_home, port)?;
            let link = small_runtime()?.block_on(approver.dashboard_link())?;
            outln!("{link}");
            eprintln!(
                "open it within 2 minutes (once): it logs this browser in as a person, who may decide approvals"
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Approve { id, always, port }) => {
            let approver = iris::client::Approver::find(&config.iris_home, port)?;
            let record = small_runtime()?.block_on(approver.approve(&id, always))?;
            outln!("{}", output::approval_decided(&record, always));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Deny { id, reason, port }) => {
            let approver = iris::client::Approver::find(&config.iris_home, port)?;
            let record = small_runtime()?.block_on(approver.deny(&id, reason.as_deref()))?;
            outln!("{}", output::approval_decided(&record, false));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Install {
            project: true,
            no_claude: _,
            url: _,
        }) => {
            let project = std::env::current_dir().context("reading the current directory")?;
            let program = std::env::current_exe().context("finding the iris executable")?;
            let env: Vec<(String, String)> = ["IRIS_HOME", "IRIS_CONFIG_PATH"]
                .into_iter()
                .filter_map(|key| {
                    let value = std::env::var(key).ok().filter(|value| !value.is_empty())?;
                    let absolute = std::path::absolute(&value).ok()?;
                    Some((key.to_owned(), absolute.display().to_string()))
                })
                .collect();
            let registration = iris::install::install_project(&project, &program, &env)?;
            if let iris::install::Registration::File(path) = registration {
                outln!(
                    "wrote {} (project scope): Claude Code sessions in {} run `{} serve --stdio`, which starts the shared Iris when none runs.",
                    path.display(),
                    project.display(),
                    program.display()
                );
            }
            if iris::mcp::stdio_caller(&config, &project).is_none() {
                outln!(
                    "note: {} is in no team's directory, so its calls name fromTeam; `iris add-team NAME {}` makes it a team.",
                    project.display(),
                    project.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Install {
            project: false,
            url,
            no_claude,
        }) => {
            let url = url.unwrap_or_else(|| {
                format!("{}/mcp", iris::client::base_url(config.settings.http_port))
            });
            match iris::install::install(&url, !no_claude)? {
                iris::install::Registration::Command(command) => {
                    outln!("registered Iris ({url}) with `{command}`");
                }
                iris::install::Registration::File(path)
                | iris::install::Registration::Unchanged(path) => {
                    outln!("registered Iris ({url}) in {}", path.display());
                }
            }
            outln!("{}", output::INSTALL_WAYS);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Uninstall { no_claude }) => {
            match iris::install::uninstall(!no_claude)? {
                iris::install::Registration::Command(command) => {
                    outln!("removed Iris with `{command}`");
                }
                iris::install::Registration::File(path) => {
                    outln!("removed Iris from {}", path.display());
                }
                iris::install::Registration::Unchanged(path) => {
                    outln!("Iris was not registered in {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Doctor) => {
            let mut checks = Vec::new();
            if let Some(error) = &config_error {
                checks.push(iris::client::Check {
                    name: "configuration".to_owned(),
                    ok: false,
                    detail: format!("{error}\n     (the checks below use the defaults)"),
                });
            }
            checks.extend(small_runtime()?.block_on(iris::client::doctor(&config)));
            let (text, all_ok) = output::doctor(&checks);
            out!("{text}");
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(
            Command::Guard { .. }
            | Command::Stop { .. }
            | Command::Init { .. }
            | Command::AddTeam { .. }
            | Command::RemoveTeam { .. },
        ) => Ok(ExitCode::SUCCESS),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
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
