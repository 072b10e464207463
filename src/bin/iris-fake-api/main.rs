//! `iris-fake-api`: a scriptable fake of Anthropic's Messages API on 127.0.0.1, for running
//! the real Claude Code CLI offline (`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`). The server
//! is `iris::testing::fake_api`; `docs/fake-api.md` is the reference.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use iris::testing::fake_api::{FakeApi, FakeApiOptions};

#[derive(Parser)]
#[command(
    name = "iris-fake-api",
    version,
    about = "A scriptable fake of the Messages API on 127.0.0.1 (see docs/fake-api.md)"
)]
struct Args {
    /// The port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write the bound port to this file once listening (atomically: a reader never sees a
    /// partial file).
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Append one JSON line per request received to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// usage.input_tokens of every answer.
    #[arg(long, default_value_t = 12)]
    input_tokens: u64,
    /// usage.output_tokens of every answer.
    #[arg(long, default_value_t = 6)]
    output_tokens: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("iris-fake-api: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("iris-fake-api: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the port is announced, so a stop right after it is never missed.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let options = FakeApiOptions {
        input_tokens: args.input_tokens,
        output_tokens: args.output_tokens,
        log: args.log,
    };
    let api = FakeApi::start_on(args.port, options).await?;
    if let Some(path) = &args.port_file {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, format!("{}\n", api.port()))
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("iris-fake-api listening on {}", api.base_url());
    let stop = api.stop_token();
    let mut server = tokio::spawn(api.serve_until_stopped());
    tokio::select! {
        served = &mut server => {
            return served
                .context("the server task failed")?
                .context("serving the fake Messages API");
        }
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    // Stop: open streams end at once; a client that does not read what it was sent gets
    // a bounded grace, then the process exits anyway.
    stop.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(served) => served
            .context("the server task failed")?
            .context("serving the fake Messages API"),
        Err(_) => {
            eprintln!("iris-fake-api: connections still open after {SHUTDOWN_GRACE:?}; exiting");
            Ok(())
        }
    }
}

/// How long a stop waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
