//! MCP benchmark: `cargo bench --bench mcp` (`-- --quick` for a short run, `-- --targets-only`
//! for the issue-10 targets beside the floor only, `-- --sessions-only` for the memory of
//! MCP sessions held open, `-- --bridge-only` for what the `iris serve --stdio` bridge adds
//! to a call against the in-process stdio server).
//!
//! "stdio" below is `iris serve --stdio --in-process` unless the bridge is named.
//!
//! Runs the real `iris serve` binary (this profile's build) as a separate process, with teams
//! on the fake agent (which answers at once), and talks to it through real rmcp clients over
//! Streamable HTTP and over stdio (`iris serve --stdio` as a child process). Measures what a
//! caller sees of a warm `send_message`, calls per second with 1, 16 and 64 concurrent
//! clients (stdio: concurrent requests on one connection), the server's memory idle, under
//! load, over HTTP session churn and over one long session, the time from spawn to ready, and
//! the size of the `tools/list` answer. Prints a Markdown report for BENCHMARKS.md.
#![allow(missing_docs)]

#[path = "support/delayed_ack.rs"]
mod delayed_ack;
#[path = "support/floor.rs"]
mod floor;
mod support;

use support::{percentile, rss_kib, status_kib, us};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt, ServiceExt};
use serde_json::{Value, json};

const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_iris-fake-agent");
/// Teams in the config; concurrent clients are spread over them, each on its own pair.
const TEAMS: usize = 8;
const LEVELS: [usize; 3] = [1, 16, 64];

/// The `iris` of this profile; `IRIS_BENCH_SERVER=/path/to/iris` measures another build (to
/// compare two builds of the server with the same clients).
fn iris() -> String {
    std::env::var("IRIS_BENCH_SERVER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_iris").to_owned())
}

struct Sizes {
    /// Sequential warm calls for the latency table (plus a tenth as warm-up).
    latency_calls: usize,
    /// Calls per concurrency level (at least 5 per client).
    load_calls: usize,
    /// Server starts for the start-to-ready table.
    starts: usize,
    /// HTTP sessions opened, used once and closed, one after the other.
    sessions: usize,
    /// Sequential calls on one long-lived HTTP session.
    long_session_calls: usize,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let sizes = if quick {
        Sizes {
            latency_calls: 200,
            load_calls: 320,
            starts: 5,
            sessions: 200,
            long_session_calls: 4000,
        }
    } else {
        Sizes {
            latency_calls: 2000,
            load_calls: 3200,
            starts: 20,
            sessions: 2000,
            long_session_calls: 48_000,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&sizes));
}

async fn run(sizes: &Sizes) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    println!("## MCP benchmark (separate `iris serve` process, fake agents answering at once)\n");
    println!(
        "machine: {} cores; load average at start: {}; server: {}\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
        iris()
    );

    if let Some(seconds) = std::env::args()
        .skip_while(|arg| arg != "--profile-warm")
        .nth(1)
        .and_then(|seconds| seconds.parse::<u64>().ok())
    {
        profile_warm(dir.path(), &config, Duration::from_secs(seconds)).await;
        return;
    }
    if std::env::args().any(|arg| arg == "--sessions-only") {
        held_sessions(dir.path(), &config, HELD_SESSIONS).await;
        return;
    }
    if std::env::args().any(|arg| arg == "--bridge-only") {
        bridge_cost(dir.path(), &config, sizes).await;
        return;
    }
    targets(dir.path(), &config, sizes).await;
    if std::env::args().any(|arg| arg == "--targets-only") {
        return;
    }
    let tools = http_surface(dir.path(), &config, sizes).await;
    stdio_surface(dir.path(), &config, sizes).await;
    println!(
        "\n| `tools/list` answer | tools | JSON-RPC message bytes | HTTP body bytes (SSE framing) |"
    );
    println!("|---|---|---|---|");
    println!(
        "| over Streamable HTTP | {} | {} | {} |\n",
        tools.count, tools.message_bytes, tools.body_bytes
    );
    start_to_ready(dir.path(), &config, sizes.starts).await;
    bridge_cost(dir.path(), &config, sizes).await;
    held_sessions(dir.path(), &config, HELD_SESSIONS).await;
    println!(
        "\nbench (client) process RSS at the end: {} KiB; load average at the end: {}",
        rss_kib(),
        load_average()
    );
}

/// The config file: `TEAMS` teams on the fake agent, room for every pair the runs use.
fn write_config(root: &Path) -> PathBuf {
    let mut yaml = format!(
        "settings:\n  maxProcesses: {}\n  maxQueuePerPair: 10000\n  stopGracePeriod: 2s\n  claudePath: {FAKE_AGENT}\nteams:\n",
        LEVELS[2] + 96
    );
    for index in 0..TEAMS {
        let name = format!("team{index}");
        let path = root.join("teams").join(&name);
        std::fs::create_dir_all(&path).expect("team dir");
        let state = root.join("state").join(&name);
        std::fs::create_dir_all(&state).expect("state dir");
        yaml.push_str(&format!(
            "  {name}:\n    path: {}\n    grantPermission: yes\n    env:\n      FAKE_AGENT_STATE_DIR: {}\n",
            std::fs::canonicalize(&path).expect("canonical").display(),
            state.display()
        ));
    }
    let file = root.join("config.yaml");
    std::fs::write(&file, yaml).expect("config");
    file
}

/// A fresh `IRIS_HOME` (so a fresh database) under `root`.
fn fresh_home(root: &Path) -> PathBuf {
    let home = root.join("homes").join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&home).expect("home");
    home
}

/// An `iris serve` (HTTP) process, stopped (SIGTERM, then reaped) when dropped.
struct HttpServer {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    base: String,
}

impl HttpServer {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn url(&self) -> String {
        format!("{}/mcp", self.base)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id().cast_signed()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }
}

/// Spawns `iris serve --port 0` and returns once it printed its address (bound, maybe not
/// yet serving), with the instant the spawn began.
async fn spawn_http(config: &Path, home: &Path) -> (HttpServer, Instant) {
    let started = Instant::now();
    let mut child = std::process::Command::new(iris())
        .args(["serve", "--port", "0"])
        .env("IRIS_CONFIG_PATH", config)
        .env("IRIS_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iris serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut server = HttpServer {
        child,
        base: String::new(),
    };
    // The address line, read on a thread that then keeps draining stderr.
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut sender = Some(sender);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("serving MCP on ").nth(1)
                && let Some(sender) = sender.take()
            {
                let url = rest.split_whitespace().next().unwrap_or_default();
                let _ = sender.send(url.trim_end_matches("/mcp").to_owned());
            }
        }
    });
    server.base = receiver.await.expect("iris serve printed its address");
    (server, started)
}

/// Polls `/health` until it answers 200.
async fn wait_health(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{base}/health")).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "/health never answered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn send(caller: &str, team: &str) -> CallToolRequestParams {
    let arguments = json!({"fromTeam": caller, "toTeam": team, "message": "ping"});
    let Value::Object(arguments) = arguments else {
        unreachable!("an object")
    };
    CallToolRequestParams::new("send_message").with_arguments(arguments)
}

async fn call(peer: &Peer<RoleClient>, caller: &str, team: &str) -> Duration {
    let started = Instant::now();
    let result = peer.call_tool(send(caller, team)).await.expect("call");
    assert_eq!(result.is_error, Some(false), "{result:?}");
    started.elapsed()
}

/// Warm `send_message` latency on one pair, one client: `calls / 10` warm-up calls first.
async fn latency(peer: &Peer<RoleClient>, calls: usize) -> Vec<Duration> {
    for _ in 0..calls / 10 {
        call(peer, "bench", "team0").await;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        samples.push(call(peer, "bench", "team0").await);
    }
    samples
}

/// Samples a process's `VmRSS` every 5 ms until stopped; keeps the largest.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    fn start(pid: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let stop = stop.clone();
            let peak = peak.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status_kib(&pid, "VmRSS"), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Self { stop, peak, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

struct Load {
    clients: usize,
    calls: usize,
    elapsed: Duration,
    samples: Vec<Duration>,
    rss_peak: u64,
}

impl Load {
    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} |",
            self.clients,
            self.calls,
            self.elapsed.as_secs_f64(),
            self.calls as f64 / self.elapsed.as_secs_f64(),
            us(percentile(&self.samples, 50.0)),
            us(percentile(&self.samples, 99.0)),
            self.rss_peak
        )
    }
}

/// Runs `clients` concurrent callers, each on its own pair (`client<i>` → `team<i % TEAMS>`),
/// each making `per_client` timed calls through the peer `peers(i)` gives it. Every pair is
/// warmed (its agent started) and every client connected before the clock starts.
async fn load<F, Fut>(clients: usize, per_client: usize, server_pid: String, connect: F) -> Load
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (Peer<RoleClient>, Option<RunningService<RoleClient, ()>>)>
        + Send
        + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..clients {
        let connecting = connect(index);
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let (peer, running) = connecting.await;
            let caller = format!("client{index}");
            let team = format!("team{}", index % TEAMS);
            for _ in 0..3 {
                call(&peer, &caller, &team).await;
            }
            barrier.wait().await;
            let mut samples = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                samples.push(call(&peer, &caller, &team).await);
            }
            if let Some(running) = running {
                let _ = running.cancel().await;
            }
            samples
        });
    }
    barrier.wait().await;
    let sampler = MemorySampler::start(server_pid);
    let started = Instant::now();
    let mut samples = Vec::with_capacity(clients * per_client);
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.expect("client task"));
    }
    let elapsed = started.elapsed();
    Load {
        clients,
        calls: samples.len(),
        elapsed,
        samples,
        rss_peak: sampler.finish().await,
    }
}

fn per_client(sizes: &Sizes, clients: usize) -> usize {
    (sizes.load_calls / clients).max(5)
}

struct Memory {
    idle: u64,
    after_latency: u64,
    after_load: u64,
    hwm: u64,
}

fn print_memory(transport: &str, memory: &Memory, loads: &[Load]) {
    println!("\n| `iris serve` memory ({transport}) | KiB |");
    println!("|---|---|");
    println!(
        "| VmRSS idle after start (ready, no session yet) | {} |",
        memory.idle
    );
    println!(
        "| VmRSS after the single-client latency run | {} |",
        memory.after_latency
    );
    if let Some(heaviest) = loads.last() {
        println!(
            "| VmRSS peak sampled during the {}-client load | {} |",
            heaviest.clients, heaviest.rss_peak
        );
    }
    println!(
        "| VmRSS after the loads (clients gone, agents still warm) | {} |",
        memory.after_load
    );
    println!("| VmHWM (peak over the whole run) | {} |", memory.hwm);
}

struct ToolsList {
    count: usize,
    message_bytes: usize,
    body_bytes: usize,
}

async fn http_surface(root: &Path, config: &Path, sizes: &Sizes) -> ToolsList {
    let (server, _) = spawn_http(config, &fresh_home(root)).await;
    let http = reqwest::Client::new();
    wait_health(&http, &server.base).await;
    let pid = server.pid();
    let idle = status_kib(&pid, "VmRSS");
    let tools = tools_list_size(&http, &server.url()).await;

    let client =
        ().serve(StreamableHttpClientTransport::from_uri(server.url()))
            .await
            .expect("client");
    let samples = latency(client.peer(), sizes.latency_calls).await;
    let _ = client.cancel().await;
    let after_latency = status_kib(&pid, "VmRSS");
    // The same, with the client negotiating protocol 2026-07-28, which rmcp serves without
    // sessions (each POST stands alone; `server/discover` instead of `initialize`).
    let stateless = ()
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(server.url()),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("stateless client");
    let stateless_samples = latency(stateless.peer(), sizes.latency_calls).await;
    let _ = stateless.cancel().await;

    println!("### Streamable HTTP (`iris serve --port 0`)\n");
    println!(
        "| warm `send_message`, one client, one pair ({} calls) | p50 | p99 | mean |",
        samples.len()
    );
    println!("|---|---|---|---|");
    println!(
        "| rmcp client → `iris serve` process → pool → fake agent | {} | {} | {} |",
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0)),
        us(mean(&samples))
    );
    println!(
        "| the same, protocol 2026-07-28 (stateless: no MCP session) | {} | {} | {} |",
        us(percentile(&stateless_samples, 50.0)),
        us(percentile(&stateless_samples, 99.0)),
        us(mean(&stateless_samples))
    );

    delayed_acks(&server, sizes.latency_calls / 10).await;

    let mut loads = Vec::new();
    for clients in LEVELS {
        let url = server.url();
        loads.push(
            load(clients, per_client(sizes, clients), pid.clone(), |_| {
                let url = url.clone();
                async move {
                    let running =
                        ().serve(StreamableHttpClientTransport::from_uri(url))
                            .await
                            .expect("client");
                    (running.peer().clone(), Some(running))
                }
            })
            .await,
        );
    }
    println!(
        "\n| concurrent clients (each its own MCP session and pair; {TEAMS} teams) | calls | seconds | calls/s | p50 | p99 | server VmRSS peak KiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &loads {
        println!("{}", row.row());
    }
    let memory = Memory {
        idle,
        after_latency,
        after_load: status_kib(&pid, "VmRSS"),
        hwm: status_kib(&pid, "VmHWM"),
    };
    print_memory("HTTP", &memory, &loads);
    session_churn(&server, sizes.sessions).await;
    long_session(&server, sizes.long_session_calls).await;
    drop(server);
    tools
}

/// What the floor measured: the fake agent driven directly.
struct Floor {
    warm: Vec<Duration>,
    cold: Vec<Duration>,
    parallel: Vec<Duration>,
    parallel_elapsed: Duration,
}

/// The fake agent driven directly (no Iris): a warm turn, a cold start plus first turn, and
/// `pairs` agents driven in parallel.
async fn floor_run(root: &Path, warm: usize, colds: usize, pairs: usize, per_pair: usize) -> Floor {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = |index: usize| {
            let path = std::fs::canonicalize(root.join("teams").join(format!("team{index}")))
                .expect("team dir");
            let state = root.join("floor-state").join(format!("team{index}"));
            std::fs::create_dir_all(&state).expect("state");
            (path, state)
        };
        let (path, state) = dir(0);
        let mut agent = floor::FloorAgent::start(FAKE_AGENT, &path, &state);
        for _ in 0..warm / 10 {
            agent.turn("ping");
        }
        let warm_samples = (0..warm).map(|_| agent.turn("ping")).collect();
        drop(agent);
        let cold = (0..colds)
            .map(|_| {
                let started = Instant::now();
                let mut agent = floor::FloorAgent::start(FAKE_AGENT, &path, &state);
                agent.turn("ping");
                started.elapsed()
            })
            .collect();
        let barrier = Arc::new(std::sync::Barrier::new(pairs + 1));
        let threads: Vec<_> = (0..pairs)
            .map(|index| {
                let (path, state) = dir(index % TEAMS);
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut agent = floor::FloorAgent::start(FAKE_AGENT, &path, &state);
                    for _ in 0..3 {
                        agent.turn("ping");
                    }
                    barrier.wait();
                    (0..per_pair)
                        .map(|_| agent.turn("ping"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let mut parallel = Vec::new();
        for thread in threads {
            parallel.extend(thread.join().expect("floor thread"));
        }
        Floor {
            warm: warm_samples,
            cold,
            parallel,
            parallel_elapsed: started.elapsed(),
        }
    })
    .await
    .expect("floor")
}

/// The floor as issue 10 measured it: the fake agent driven by a script (`support/floor.js`,
/// Node), the same measures as [`floor_run`]. `Err` says why it could not run (no `node`).
fn script_floor(
    root: &Path,
    warm: usize,
    colds: usize,
    pairs: usize,
    per_pair: usize,
) -> Result<Floor, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/floor.js");
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(FAKE_AGENT)
        .arg(root)
        .args([warm, colds, pairs, per_pair].map(|number| number.to_string()))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot run node: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "node {} ended with {}",
            script.display(),
            output.status
        ));
    }
    let result: Value =
        serde_json::from_slice(&output.stdout).map_err(|error| error.to_string())?;
    let samples = |key: &str| -> Vec<Duration> {
        result[key]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(|micros| Duration::from_secs_f64(micros / 1e6))
                    .collect()
            })
            .unwrap_or_default()
    };
    let elapsed = result["parallelElapsed"]
        .as_f64()
        .filter(|micros| micros.is_finite() && *micros > 0.0)
        .ok_or("the script printed no parallelElapsed")?;
    Ok(Floor {
        warm: samples("warm"),
        cold: samples("cold"),
        parallel: samples("parallel"),
        parallel_elapsed: Duration::from_secs_f64(elapsed / 1e6),
    })
}

/// The pid of `iris guard`, the server's child.
fn guard_pid(server: &str) -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .to_owned();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let guard = cmdline
                .split(|byte| *byte == 0)
                .any(|arg| arg == b"guard" || arg.ends_with(b"/iris-guard"));
            (parent == server && guard).then_some(pid)
        })
}

fn calls_per_second(calls: usize, elapsed: Duration) -> f64 {
    calls as f64 / elapsed.as_secs_f64()
}

/// Runs `callers` concurrent callers on one peer, each `per_caller` calls of `request(i)`;
/// returns every call's latency and the wall time.
async fn concurrent<F>(
    peer: &Peer<RoleClient>,
    callers: usize,
    per_caller: usize,
    request: F,
) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> CallToolRequestParams,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..callers {
        let peer = peer.clone();
        let barrier = barrier.clone();
        let params = request(index);
        tasks.spawn(async move {
            barrier.wait().await;
            let mut samples = Vec::with_capacity(per_caller);
            for _ in 0..per_caller {
                let started = Instant::now();
                let result = peer.call_tool(params.clone()).await.expect("call");
                assert_ne!(result.is_error, Some(true), "{result:?}");
                samples.push(started.elapsed());
            }
            samples
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.expect("caller"));
    }
    (samples, started.elapsed())
}

fn tool(name: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        unreachable!("an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

/// For profiling (`-- --profile-warm SECONDS`): warm `send_message` calls on one stdio pair
/// for that long; prints the server's pid first, then waits a second (attach a profiler:
/// `perf record -p PID`).
async fn profile_warm(root: &Path, config: &Path, length: Duration) {
    let home = fresh_home(root);
    let command = tokio::process::Command::new(iris()).configure(|command| {
        command
            .args(["serve", "--stdio", "--in-process"])
            .env("IRIS_CONFIG_PATH", config)
            .env("IRIS_HOME", &home)
            .env_remove("RUST_LOG")
            .current_dir(root);
    });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iris serve --stdio");
    let pid = transport.id().expect("pid");
    let client = ().serve(transport).await.expect("client");
    for _ in 0..100 {
        call(client.peer(), "profile", "team0").await;
    }
    let callers: usize = std::env::var("IRIS_PROFILE_CALLERS")
        .ok()
        .and_then(|callers| callers.parse().ok())
        .unwrap_or(1);
    for index in 0..callers {
        call(
            client.peer(),
            &format!("profile{index}"),
            &format!("team{}", index % TEAMS),
        )
        .await;
    }
    eprintln!("server pid {pid}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..callers {
        let peer = client.peer().clone();
        tasks.spawn(async move {
            let mut samples = Vec::new();
            while started.elapsed() < length {
                samples.push(
                    call(
                        &peer,
                        &format!("profile{index}"),
                        &format!("team{}", index % TEAMS),
                    )
                    .await,
                );
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.expect("caller"));
    }
    eprintln!(
        "{} calls by {callers} callers in {:?}: {:.0} calls/s, p50 {}",
        samples.len(),
        started.elapsed(),
        samples.len() as f64 / started.elapsed().as_secs_f64(),
        us(percentile(&samples, 50.0))
    );
    let _ = client.cancel().await;
}

/// The issue-10 targets, each beside the floor measured in the same run.
async fn targets(root: &Path, config: &Path, sizes: &Sizes) {
    let warm = sizes.latency_calls;
    let colds = sizes.starts;
    let per_pair = sizes.load_calls / 16;
    let floor = floor_run(root, warm, colds, TEAMS, per_pair).await;

    let home = fresh_home(root);
    let command = tokio::process::Command::new(iris()).configure(|command| {
        command
            .args(["serve", "--stdio", "--in-process"])
            .env("IRIS_CONFIG_PATH", config)
            .env("IRIS_HOME", &home)
            .env_remove("RUST_LOG")
            .current_dir(root);
    });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iris serve --stdio");
    let pid = transport.id().expect("pid").to_string();
    let client = ().serve(transport).await.expect("client");
    let peer = client.peer().clone();
    let server_idle = status_kib(&pid, "VmRSS");
    let guard_idle = guard_pid(&pid).map_or(0, |guard| status_kib(&guard, "VmRSS"));

    let time = |params: CallToolRequestParams| {
        let peer = peer.clone();
        async move {
            let started = Instant::now();
            let result = peer.call_tool(params).await.expect("call");
            assert_ne!(result.is_error, Some(true), "{result:?}");
            started.elapsed()
        }
    };
    let send = |caller: &str, team: &str| {
        tool(
            "send_message",
            json!({"fromTeam": caller, "toTeam": team, "message": "ping"}),
        )
    };
    for _ in 0..warm / 10 {
        time(send("targets", "team0")).await;
        time(tool("get_date", json!({}))).await;
    }
    let mut dates = Vec::with_capacity(warm);
    let mut sends = Vec::with_capacity(warm);
    for _ in 0..warm {
        dates.push(time(tool("get_date", json!({}))).await);
        sends.push(time(send("targets", "team0")).await);
    }
    let mut cold = Vec::with_capacity(colds);
    for index in 0..colds {
        cold.push(time(send(&format!("cold{index}"), "team0")).await);
    }
    // Warm every parallel pair first.
    for index in 0..TEAMS {
        time(send(&format!("par{index}"), &format!("team{index}"))).await;
    }
    let (parallel, parallel_elapsed) = concurrent(&peer, TEAMS, per_pair, |index| {
        send(&format!("par{index}"), &format!("team{index}"))
    })
    .await;
    let mut lone_quick = Vec::with_capacity(warm / 4);
    for _ in 0..warm / 4 {
        lone_quick.push(
            time(tool(
                "quick_message",
                json!({"fromTeam": "lone", "toTeam": "team1", "message": "note"}),
            ))
            .await,
        );
    }
    let quick_callers = 64;
    let quick_each = (sizes.load_calls / quick_callers).max(5);
    let (quick, quick_elapsed) = concurrent(&peer, quick_callers, quick_each, |index| {
        tool(
            "quick_message",
            json!({"fromTeam": format!("q{index}"), "toTeam": format!("team{}", index % TEAMS), "message": "note"}),
        )
    })
    .await;
    let _ = client.cancel().await;

    // HTTP, with a keep-alive client that delays its ACKs, against the stdio number above.
    let (server, _) = spawn_http(config, &fresh_home(root)).await;
    wait_health(&reqwest::Client::new(), &server.base).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let http_calls = warm / 4;
    let http = tokio::task::spawn_blocking(move || {
        let mut client = delayed_ack::DelayedAckClient::connect(&address).expect("connect");
        let arguments = json!({"fromTeam": "targets", "toTeam": "team0", "message": "ping"});
        for _ in 0..http_calls / 10 + 1 {
            client
                .call("send_message", arguments.clone())
                .expect("call");
        }
        (0..http_calls)
            .map(|_| {
                client
                    .call("send_message", arguments.clone())
                    .expect("call")
                    .0
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("delayed-ACK client");
    drop(server);

    let p50 = |samples: &[Duration]| percentile(samples, 50.0);
    let p99 = |samples: &[Duration]| percentile(samples, 99.0);
    let difference = |left: Duration, right: Duration| {
        format!("{:.3} ms", (left.as_secs_f64() - right.as_secs_f64()) * 1e3)
    };
    println!("### Targets (issue 10), each beside the floor measured in this run\n");
    println!(
        "Floor: the fake agent driven directly over stream-json by a minimal blocking driver (no Iris). Iris: `iris serve --stdio` and an rmcp client, unless said otherwise.\n"
    );
    println!("| measure | Iris | floor | target |");
    println!("|---|---|---|---|");
    println!(
        "| warm `send_message` p50 / p99 ({warm} calls) | {} / {} | {} / {} | |",
        us(p50(&sends)),
        us(p99(&sends)),
        us(p50(&floor.warm)),
        us(p99(&floor.warm))
    );
    println!(
        "| warm `get_date` p50 / p99 | {} / {} | | |",
        us(p50(&dates)),
        us(p99(&dates))
    );
    println!(
        "| `send_message` − `get_date` p50 / p99 | {} / {} | | ≤ 0.2 ms / ≤ 1 ms |",
        difference(p50(&sends), p50(&dates)),
        difference(p99(&sends), p99(&dates))
    );
    println!(
        "| HTTP warm `send_message` p50, keep-alive client delaying its ACKs ({http_calls} calls) | {} (stdio + {}) | | ≤ stdio + 0.3 ms |",
        us(p50(&http)),
        difference(p50(&http), p50(&sends))
    );
    let iris_rate = calls_per_second(parallel.len(), parallel_elapsed);
    let floor_rate = calls_per_second(floor.parallel.len(), floor.parallel_elapsed);
    println!(
        "| {TEAMS} pairs in parallel, {per_pair} calls each: calls/s (p99) | {iris_rate:.0} ({}) | {floor_rate:.0} ({}) | ≥ 5,000 and ≥ 60 % of the floor: {:.0} % |",
        us(p99(&parallel)),
        us(p99(&floor.parallel)),
        100.0 * iris_rate / floor_rate
    );
    match script_floor(root, warm, colds, TEAMS, per_pair) {
        Ok(script) => {
            let script_rate = calls_per_second(script.parallel.len(), script.parallel_elapsed);
            println!(
                "| the same, floor driven by a Node script (issue 10's kind of floor; warm p50 {}, cold p50 {}) | {iris_rate:.0} | {script_rate:.0} ({}) | 60 % of it: {:.0} % |",
                us(p50(&script.warm)),
                us(p50(&script.cold)),
                us(p99(&script.parallel)),
                100.0 * iris_rate / script_rate
            );
        }
        Err(why) => println!("| the same, floor driven by a Node script | | skipped: {why} | |"),
    }
    println!(
        "| cold first message to a new pair p50 ({colds}) | {} | {} | ≤ floor + 1 ms: floor + {} |",
        us(p50(&cold)),
        us(p50(&floor.cold)),
        difference(p50(&cold), p50(&floor.cold))
    );
    println!(
        "| lone `quick_message` (accepted, synced) p50 / p99 ({}) | {} / {} | | reported |",
        lone_quick.len(),
        us(p50(&lone_quick)),
        us(p99(&lone_quick))
    );
    println!(
        "| {quick_callers} concurrent `quick_message` callers, {quick_each} each: accepted and synced /s (p99) | {:.0} ({}) | | ≥ 5,000 |",
        calls_per_second(quick.len(), quick_elapsed),
        us(p99(&quick))
    );
    println!(
        "| idle RSS: server + guard | {server_idle} + {guard_idle} = {} KiB ({:.1} MiB) | | ≤ 15 MiB |\n",
        server_idle + guard_idle,
        (server_idle + guard_idle) as f64 / 1024.0
    );
}

/// Warm calls from a keep-alive client that delays its ACKs (see `support/delayed_ack.rs`):
/// with Nagle's algorithm on the server's sockets each call waits ~40 ms for an ACK.
async fn delayed_acks(server: &HttpServer, calls: usize) {
    let address = server.base.trim_start_matches("http://").to_owned();
    let (dates, sends) = tokio::task::spawn_blocking(move || {
        let mut client = delayed_ack::DelayedAckClient::connect(&address).expect("connect");
        let mut time = |tool: &str, arguments: serde_json::Value| -> Vec<Duration> {
            // One warm-up call (the pair's agent starts on the first send_message).
            let _ = client.call(tool, arguments.clone()).expect("call");
            (0..calls)
                .map(|_| {
                    let (took, body) = client.call(tool, arguments.clone()).expect("call");
                    assert!(!body.contains("\"isError\":true"), "{tool} failed: {body}");
                    took
                })
                .collect()
        };
        let dates = time("get_date", json!({}));
        let sends = time(
            "send_message",
            json!({"fromTeam": "delayed-ack", "toTeam": "team0", "message": "ping"}),
        );
        (dates, sends)
    })
    .await
    .expect("delayed-ACK client");
    println!(
        "\n| keep-alive HTTP/1.1 client that delays its ACKs (`TCP_QUICKACK` off), one connection ({calls} calls each) | p50 | p99 |"
    );
    println!("|---|---|---|");
    for (tool, samples) in [("get_date", &dates), ("send_message", &sends)] {
        println!(
            "| `{tool}` | {} | {} |",
            us(percentile(samples, 50.0)),
            us(percentile(samples, 99.0))
        );
    }
}

async fn stdio_surface(root: &Path, config: &Path, sizes: &Sizes) {
    let home = fresh_home(root);
    let command = tokio::process::Command::new(iris()).configure(|command| {
        command
            .args(["serve", "--stdio", "--in-process"])
            .env("IRIS_CONFIG_PATH", config)
            .env("IRIS_HOME", &home)
            .env_remove("RUST_LOG")
            .current_dir(root);
    });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iris serve --stdio");
    let pid = transport.id().expect("pid").to_string();
    let client = ().serve(transport).await.expect("client");
    let idle = status_kib(&pid, "VmRSS");
    let samples = latency(client.peer(), sizes.latency_calls).await;
    let after_latency = status_kib(&pid, "VmRSS");

    println!("\n### stdio (`iris serve --stdio` as the client's child process)\n");
    println!(
        "| warm `send_message`, one client, one pair ({} calls) | p50 | p99 | mean |",
        samples.len()
    );
    println!("|---|---|---|---|");
    println!(
        "| rmcp client → stdio pipe → `iris serve --stdio` → pool → fake agent | {} | {} | {} |",
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0)),
        us(mean(&samples))
    );

    let mut loads = Vec::new();
    for clients in LEVELS {
        let peer = client.peer().clone();
        loads.push(
            load(clients, per_client(sizes, clients), pid.clone(), |_| {
                let peer = peer.clone();
                async move { (peer, None) }
            })
            .await,
        );
    }
    println!(
        "\n| concurrent requests in flight on ONE stdio connection (each on its own pair; {TEAMS} teams) | calls | seconds | calls/s | p50 | p99 | server VmRSS peak KiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &loads {
        println!("{}", row.row());
    }
    let memory = Memory {
        idle,
        after_latency,
        after_load: status_kib(&pid, "VmRSS"),
        hwm: status_kib(&pid, "VmHWM"),
    };
    print_memory("stdio", &memory, &loads);
    let _ = client.cancel().await;
}

/// `initialize` calls that [`held_sessions`] makes and never closes (as the issue-11 report
/// of unbounded sessions did).
const HELD_SESSIONS: usize = 3000;

/// Sessions opened (`initialize`) and never closed, as a careless or hostile client would:
/// once with `settings.maxHttpSessions` raised above `attempts` (what each held session
/// costs), once with the default cap of 100 (the rest are refused with 503, memory bounded).
async fn held_sessions(root: &Path, config: &Path, attempts: usize) {
    let base = std::fs::read_to_string(config).expect("config");
    println!(
        "\n| {attempts} `initialize` calls, never closed | sessions opened | refused (503) | VmRSS before | VmRSS after | per opened session |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, cap) in [
        ("`maxHttpSessions` raised above the calls", attempts + 1),
        ("default `maxHttpSessions` (100)", 100),
    ] {
        let variant = root.join(format!("config-sessions-{cap}.yaml"));
        let text = base.replacen(
            "settings:\n",
            &format!("settings:\n  maxHttpSessions: {cap}\n"),
            1,
        );
        std::fs::write(&variant, text).expect("config variant");
        let (server, _) = spawn_http(&variant, &fresh_home(root)).await;
        let pid = server.pid();
        let http = reqwest::Client::new();
        let before = status_kib(&pid, "VmRSS");
        let (mut opened, mut refused) = (0_usize, 0_usize);
        for _ in 0..attempts {
            let response = http
                .post(server.url())
                .header("Accept", "application/json, text/event-stream")
                .header("Content-Type", "application/json")
                .body(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": {"name": "held", "version": "1"}}})
                    .to_string(),
                )
                .send()
                .await
                .expect("initialize");
            match response.status().as_u16() {
                200 => opened += 1,
                503 => refused += 1,
                other => panic!("initialize answered {other}"),
            }
            let _ = response.bytes().await;
        }
        let after = status_kib(&pid, "VmRSS");
        let per = after.saturating_sub(before) / opened.max(1) as u64;
        println!("| {label} | {opened} | {refused} | {before} KiB | {after} KiB | {per} KiB |");
    }
}

/// Sessions opened, used for one call and closed, one after the other: does the server's
/// memory stay flat?
async fn session_churn(server: &HttpServer, sessions: usize) {
    let pid = server.pid();
    let before = status_kib(&pid, "VmRSS");
    let mut tenth = 0;
    let started = Instant::now();
    for index in 0..sessions {
        let client =
            ().serve(StreamableHttpClientTransport::from_uri(server.url()))
                .await
                .expect("client");
        call(client.peer(), "churn", "team1").await;
        let _ = client.cancel().await;
        if index + 1 == sessions / 10 {
            tenth = status_kib(&pid, "VmRSS");
        }
    }
    let elapsed = started.elapsed();
    println!(
        "\n| HTTP session churn: {sessions} sessions one after the other (`initialize`, one `send_message`, close) | value |"
    );
    println!("|---|---|");
    println!(
        "| per session (connect, call, close) | {} |",
        ms(elapsed / u32::try_from(sessions).unwrap_or(u32::MAX))
    );
    println!(
        "| server VmRSS before / after {} / after {sessions} sessions | {before} / {tenth} / {} KiB |",
        sessions / 10,
        status_kib(&pid, "VmRSS")
    );
}

/// One session kept open for many sequential calls, as an agent's MCP client keeps its
/// session: latency and server memory per window of calls. After each window, a fresh
/// session makes a sixth as many calls, as a control under the same machine load (rmcp keeps
/// every finished request's SSE cache in the session for 60 s, for resumption).
async fn long_session(server: &HttpServer, calls: usize) {
    let pid = server.pid();
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(server.url()))
            .await
            .expect("client");
    for _ in 0..50 {
        call(client.peer(), "long", "team2").await;
    }
    let windows = 8;
    let per_window = calls / windows;
    let control_calls = per_window / 6;
    println!(
        "\n| one HTTP session, {} sequential calls: after call | seconds so far | window p50 | window p99 | a fresh session right after: p50 ({control_calls} calls) | server VmRSS KiB |",
        per_window * windows
    );
    println!("|---|---|---|---|---|---|");
    println!("| 0 | 0 | | | | {} |", status_kib(&pid, "VmRSS"));
    let started = Instant::now();
    for window in 1..=windows {
        let mut samples = Vec::with_capacity(per_window);
        for _ in 0..per_window {
            samples.push(call(client.peer(), "long", "team2").await);
        }
        let seconds = started.elapsed().as_secs_f64();
        let rss = status_kib(&pid, "VmRSS");
        let fresh =
            ().serve(StreamableHttpClientTransport::from_uri(server.url()))
                .await
                .expect("client");
        let mut control = Vec::with_capacity(control_calls);
        for _ in 0..control_calls {
            control.push(call(fresh.peer(), "long", "team2").await);
        }
        let _ = fresh.cancel().await;
        println!(
            "| {} | {seconds:.1} | {} | {} | {} | {rss} |",
            window * per_window,
            us(percentile(&samples, 50.0)),
            us(percentile(&samples, 99.0)),
            us(percentile(&control, 50.0)),
        );
    }
    let _ = client.cancel().await;
}

/// `initialize`, `notifications/initialized` and `tools/list` by hand, to weigh the answer.
async fn tools_list_size(http: &reqwest::Client, url: &str) -> ToolsList {
    let post = |body: Value, session: Option<&str>| {
        let mut request = http
            .post(url)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(session) = session {
            request = request
                .header("Mcp-Session-Id", session)
                .header("MCP-Protocol-Version", "2025-11-25");
        }
        request.send()
    };
    let initialize = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "iris-bench", "version": "1"}}}),
        None,
    )
    .await
    .expect("initialize");
    let session = initialize
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .expect("session id")
        .to_owned();
    let _ = initialize.text().await;
    post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await
    .expect("initialized");
    let body = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        Some(&session),
    )
    .await
    .expect("tools/list")
    .text()
    .await
    .expect("tools/list body");
    let message = body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .find(|data| data.contains("\"tools\""))
        .unwrap_or_else(|| panic!("no tools/list answer in {body:?}"));
    let parsed: Value = serde_json::from_str(message).expect("JSON");
    let _ = http
        .delete(url)
        .header("Mcp-Session-Id", &session)
        .send()
        .await;
    ToolsList {
        count: parsed["result"]["tools"].as_array().map_or(0, Vec::len),
        message_bytes: message.len(),
        body_bytes: body.len(),
    }
}

/// Spawn to ready, each start on a fresh `IRIS_HOME`: HTTP (address printed, `/health`
/// answered, then a new rmcp client's `initialize` + `tools/list` answered) and stdio
/// (`initialize` answered, then `tools/list`).
async fn start_to_ready(root: &Path, config: &Path, starts: usize) {
    let http = reqwest::Client::new();
    let mut bound = Vec::with_capacity(starts);
    let mut health = Vec::with_capacity(starts);
    let mut listed = Vec::with_capacity(starts);
    for _ in 0..starts {
        let (server, started) = spawn_http(config, &fresh_home(root)).await;
        bound.push(started.elapsed());
        wait_health(&http, &server.base).await;
        health.push(started.elapsed());
        let client =
            ().serve(StreamableHttpClientTransport::from_uri(server.url()))
                .await
                .expect("client");
        let tools = client.list_all_tools().await.expect("tools/list");
        assert_eq!(tools.len(), 17);
        listed.push(started.elapsed());
        let _ = client.cancel().await;
        drop(server);
    }
    let mut initialized = Vec::with_capacity(starts);
    let mut stdio_listed = Vec::with_capacity(starts);
    for _ in 0..starts {
        let home = fresh_home(root);
        let command = tokio::process::Command::new(iris()).configure(|command| {
            command
                .args(["serve", "--stdio", "--in-process"])
                .env("IRIS_CONFIG_PATH", config)
                .env("IRIS_HOME", &home)
                .env_remove("RUST_LOG")
                .current_dir(root);
        });
        let started = Instant::now();
        let (transport, _stderr) = TokioChildProcess::builder(command)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iris serve --stdio");
        let client = ().serve(transport).await.expect("client");
        initialized.push(started.elapsed());
        let tools = client.list_all_tools().await.expect("tools/list");
        assert_eq!(tools.len(), 17);
        stdio_listed.push(started.elapsed());
        let _ = client.cancel().await;
    }
    println!("| `iris serve` start to ready ({starts} starts, fresh IRIS_HOME each) | p50 | p99 |");
    println!("|---|---|---|");
    let row = ms_row;
    row("HTTP: spawn → address printed (listening)", &bound);
    row("HTTP: spawn → `/health` answered", &health);
    row(
        "HTTP: spawn → `/health`, then `initialize` + `tools/list` answered",
        &listed,
    );
    row("stdio: spawn → `initialize` answered", &initialized);
    row("stdio: spawn → `tools/list` answered", &stdio_listed);
}

/// An rmcp client of `iris ARGS` started as its child in `cwd` (stdio), and the child's pid.
async fn stdio_child(
    config: &Path,
    home: &Path,
    cwd: &Path,
    args: &[&str],
) -> (RunningService<RoleClient, ()>, String) {
    let command = tokio::process::Command::new(iris()).configure(|command| {
        command
            .args(args)
            .env("IRIS_CONFIG_PATH", config)
            .env("IRIS_HOME", home)
            .env_remove("RUST_LOG")
            .current_dir(cwd);
    });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iris");
    let pid = transport.id().expect("pid").to_string();
    (().serve(transport).await.expect("client"), pid)
}

/// `iris stop` for `home` (the daemon a bridge started).
fn stop_daemon(config: &Path, home: &Path) {
    let status = std::process::Command::new(iris())
        .args(["stop"])
        .env("IRIS_CONFIG_PATH", config)
        .env("IRIS_HOME", home)
        .stdout(Stdio::null())
        .status()
        .expect("iris stop");
    assert!(status.success(), "iris stop: {status}");
}

/// Issue 15: the warm `send_message` latency through the bridge (`iris serve --stdio` →
/// Unix socket → daemon) against the in-process stdio server, in interleaved rounds on one
/// machine; the bridge's memory; and how long a session waits for its first answer when it
/// starts the daemon, when it finds one running, and in process.
async fn bridge_cost(root: &Path, config: &Path, sizes: &Sizes) {
    let rounds = 6;
    let calls = (sizes.latency_calls / 2).max(100);
    let in_home = fresh_home(root);
    let bridge_home = fresh_home(root);
    let (in_process, _) = stdio_child(
        config,
        &in_home,
        root,
        &["serve", "--stdio", "--in-process"],
    )
    .await;
    let (bridged, bridge_pid) =
        stdio_child(config, &bridge_home, root, &["serve", "--stdio"]).await;
    let mut direct = Vec::with_capacity(rounds * calls);
    let mut through = Vec::with_capacity(rounds * calls);
    for _ in 0..rounds {
        direct.extend(latency(in_process.peer(), calls).await);
        through.extend(latency(bridged.peer(), calls).await);
    }
    let bridge_rss = status_kib(&bridge_pid, "VmRSS");
    let _ = in_process.cancel().await;
    let _ = bridged.cancel().await;

    // A session's first answer (`initialize` + `tools/list`): starting the daemon, joining
    // a running one, in process.
    let starts = sizes.starts;
    let mut cold = Vec::with_capacity(starts);
    let mut joined = Vec::with_capacity(starts);
    let mut alone = Vec::with_capacity(starts);
    for _ in 0..starts {
        let home = fresh_home(root);
        let started = Instant::now();
        let (first, _) = stdio_child(config, &home, root, &["serve", "--stdio"]).await;
        first.list_all_tools().await.expect("tools/list");
        cold.push(started.elapsed());
        let started = Instant::now();
        let (second, _) = stdio_child(config, &home, root, &["serve", "--stdio"]).await;
        second.list_all_tools().await.expect("tools/list");
        joined.push(started.elapsed());
        let _ = first.cancel().await;
        let _ = second.cancel().await;
        stop_daemon(config, &home);
        let home = fresh_home(root);
        let started = Instant::now();
        let (own, _) =
            stdio_child(config, &home, root, &["serve", "--stdio", "--in-process"]).await;
        own.list_all_tools().await.expect("tools/list");
        alone.push(started.elapsed());
        let _ = own.cancel().await;
    }
    stop_daemon(config, &bridge_home);

    println!(
        "
### The `iris serve --stdio` bridge (issue 15)
"
    );
    println!(
        "| warm `send_message`, one client, one pair ({rounds} interleaved rounds of {calls} calls) | p50 | p99 | mean |"
    );
    println!("|---|---|---|---|");
    let row = |what: &str, samples: &[Duration]| {
        println!(
            "| {what} | {} | {} | {} |",
            us(percentile(samples, 50.0)),
            us(percentile(samples, 99.0)),
            us(mean(samples))
        );
    };
    row("in process: `iris serve --stdio --in-process`", &direct);
    row(
        "bridged: `iris serve --stdio` → Unix socket → daemon",
        &through,
    );
    let added = percentile(&through, 50.0).as_secs_f64() - percentile(&direct, 50.0).as_secs_f64();
    println!(
        "
the bridge adds {:.1} µs to the p50 (target ≤ 100 µs); the bridge process's VmRSS: {bridge_rss} KiB
",
        added * 1e6
    );
    println!("| a session's first `tools/list` answered ({starts} sessions) | p50 | p99 |");
    println!("|---|---|---|");
    let row = ms_row;
    row("bridge that starts the daemon", &cold);
    row("bridge that joins a running daemon", &joined);
    row("in process", &alone);
}

/// A table row: what, then the p50 and p99 of `samples` in milliseconds.
fn ms_row(what: &str, samples: &[Duration]) {
    println!(
        "| {what} | {} | {} |",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0))
    );
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(u32::MAX)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
