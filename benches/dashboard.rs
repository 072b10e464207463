//! Dashboard benchmark: `cargo bench --bench dashboard` (`-- --quick` for a short run).
//! Needs Debian's chromium (`scripts/install-chromium`).
//!
//! Runs the real `iris serve` (this profile's build) with teams on the fake agent and
//! measures: the first load's weight (bytes and requests, as the browser counted them);
//! the server's CPU time and memory over a burst of 1,000 turns with no dashboard open and
//! with 20 open (each an SSE stream that reloads the overview as the page does: at most once
//! per 60 ms); and the time from a message being sent to a real browser's page showing its
//! pair.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/browser.rs"]
mod browser;
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use support::{percentile, status_kib};

const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_iris-fake-agent");
const IRIS: &str = env!("CARGO_BIN_EXE_iris");
const TEAMS: usize = 8;
const DASHBOARDS: usize = 20;

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let turns = if quick { 200 } else { 1000 };
    let latency_samples = if quick { 10 } else { 30 };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(turns, latency_samples));
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id().cast_signed()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(root: &Path, config: &Path) -> Self {
        let home = root.join("homes").join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&home).unwrap();
        let port_file = home.join("port");
        let mut child = Command::new(IRIS)
            .args(["serve", "--port", "0", "--port-file"])
            .arg(&port_file)
            .env("IRIS_CONFIG_PATH", config)
            .env("IRIS_HOME", &home)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && !text.trim().is_empty()
            {
                break text.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "iris serve did not start");
            std::thread::sleep(Duration::from_millis(5));
        };
        Self {
            child,
            base: format!("http://{address}"),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// User + system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (1-based) of the whole line; after the
        // command's ")" they are 12th and 13th.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = 100; // CLK_TCK on Linux
        Duration::from_millis(ticks * 1000 / hz)
    }
}

fn write_config(root: &Path) -> PathBuf {
    let mut yaml = format!(
        "settings:\n  maxProcesses: {}\n  stopGracePeriod: 2s\n  claudePath: {FAKE_AGENT}\nteams:\n",
        TEAMS * 2 + 8
    );
    for index in 0..TEAMS {
        let name = format!("team{index}");
        let path = root.join("teams").join(&name);
        std::fs::create_dir_all(&path).unwrap();
        yaml.push_str(&format!(
            "  {name}:\n    path: {}\n    grantPermission: yes\n",
            path.display()
        ));
    }
    let file = root.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

fn tool(name: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        unreachable!("an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

/// `turns` send_messages over `TEAMS` pairs at once (one MCP client each); wall time.
async fn burst(server: &Server, turns: usize) -> Duration {
    let per_pair = turns / TEAMS;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..TEAMS {
        let url = format!("{}/mcp", server.base);
        tasks.push(tokio::spawn(async move {
            let client = ().serve(StreamableHttpClientTransport::from_uri(url)).await.unwrap();
            for _ in 0..per_pair {
                let result = client
                    .call_tool(tool(
                        "send_message",
                        json!({"fromTeam": format!("burst{index}"), "toTeam": format!("team{index}"), "message": "ping"}),
                    ))
                    .await
                    .unwrap();
                assert_ne!(result.is_error, Some(true), "{result:?}");
            }
            let _ = client.cancel().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// One simulated open dashboard: the SSE stream, and an overview reload at most every
/// 60 ms while events come (as the page does). Counts events and reloads; says on `opened`
/// once its stream is open (the server subscribes it before it answers).
fn dashboard(
    base: String,
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    reloads: Arc<AtomicU64>,
    opened: tokio::sync::mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        http.get(format!("{base}/dashboard/api/overview"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let response = http
            .get(format!("{base}/dashboard/events"))
            .send()
            .await
            .unwrap();
        let _ = opened.send(());
        let mut stream = response.bytes_stream();
        let mut dirty = false;
        let mut last = Instant::now() - Duration::from_secs(1);
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let next = tokio::time::timeout(Duration::from_millis(60), stream.next()).await;
            match next {
                Ok(Some(Ok(bytes))) => {
                    let count = bytes.windows(6).filter(|w| w == b"event:").count();
                    events.fetch_add(count as u64, Ordering::Relaxed);
                    dirty |= count > 0;
                }
                Ok(_) => return,
                Err(_) => {}
            }
            if dirty && last.elapsed() >= Duration::from_millis(60) {
                dirty = false;
                last = Instant::now();
                http.get(format!("{base}/dashboard/api/overview"))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                reloads.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Samples the server's VmRSS every 5 ms until stopped; keeps the largest.
fn rss_peak(pid: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(status_kib(&pid, "VmRSS"));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    })
}

struct Burst {
    wall: Duration,
    cpu: Duration,
    rss_idle: u64,
    rss_peak: u64,
    events: u64,
    reloads: u64,
}

async fn measured_burst(root: &Path, config: &Path, turns: usize, dashboards: usize) -> Burst {
    let server = Server::start(root, config);
    // Warm every pair first, so the burst is warm turns only.
    burst(&server, TEAMS).await;
    let rss_idle = status_kib(&server.pid(), "VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let (events, reloads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (opened, mut open_streams) = tokio::sync::mpsc::unbounded_channel();
    let open: Vec<_> = (0..dashboards)
        .map(|_| {
            dashboard(
                server.base.clone(),
                Arc::clone(&stop),
                Arc::clone(&events),
                Arc::clone(&reloads),
                opened.clone(),
            )
        })
        .collect();
    // Every stream open before the burst.
    for _ in 0..dashboards {
        open_streams.recv().await.unwrap();
    }
    let peak = rss_peak(server.pid(), Arc::clone(&stop));
    let cpu_before = server.cpu();
    let wall = burst(&server, turns).await;
    let cpu = server.cpu().saturating_sub(cpu_before);
    stop.store(true, Ordering::Relaxed);
    let rss_peak = peak.await.unwrap();
    for task in open {
        task.abort();
    }
    Burst {
        wall,
        cpu,
        rss_idle,
        rss_peak,
        events: events.load(Ordering::Relaxed),
        reloads: reloads.load(Ordering::Relaxed),
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

async fn run(turns: usize, latency_samples: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    println!("## Dashboard benchmark (`iris serve`, fake agents answering at once)\n");

    // First load, in a real browser: every request and its bytes on the wire.
    let server = Server::start(dir.path(), &config);
    burst(&server, TEAMS).await;
    let page = browser::Browser::start().await;
    page.goto(&format!("{}/", server.base)).await;
    page.wait_until(
        "live",
        "document.querySelector('#live').textContent === 'live'",
    )
    .await;
    page.wait_until(
        "the pairs",
        "document.querySelectorAll('#pairs tbody tr').length >= 8",
    )
    .await;
    let weight = page
        .eval("JSON.stringify(performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => [e.name, e.transferSize, e.encodedBodySize]))")
        .await;
    let entries: Vec<(String, u64, u64)> = serde_json::from_str(weight.as_str().unwrap()).unwrap();
    println!("| first load: request | bytes on the wire | body bytes |");
    println!("|---|---|---|");
    let (mut wire, mut body) = (0, 0);
    for (name, transfer, encoded) in &entries {
        println!(
            "| `{}` | {transfer} | {encoded} |",
            name.trim_start_matches(&server.base)
        );
        wire += transfer;
        body += encoded;
    }
    println!(
        "| **{} requests** (the SSE stream not counted: it stays open) | **{wire}** | **{body}** |\n",
        entries.len()
    );
    page.assert_clean();

    // Event to page: a message to a new pair, until the page shows its row.
    page.eval("window.seen = {}; new MutationObserver(() => { for (const row of document.querySelectorAll('#pairs tbody tr')) { if (!(row.dataset.pair in window.seen)) window.seen[row.dataset.pair] = performance.timeOrigin + performance.now(); } }).observe(document.querySelector('#pairs tbody'), {childList: true, subtree: true})").await;
    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{}/mcp",
            server.base
        )))
        .await
        .unwrap();
    let mut delays = Vec::new();
    for index in 0..latency_samples {
        let pair = format!("late{index}->team0");
        let sent = now_ms();
        client
            .call_tool(tool(
                "quick_message",
                json!({"fromTeam": format!("late{index}"), "toTeam": "team0", "message": "ping"}),
            ))
            .await
            .unwrap();
        page.wait_until(
            "the new pair's row",
            &format!("window.seen[{}]", json!(pair)),
        )
        .await;
        let seen = page
            .eval(&format!("window.seen[{}]", json!(pair)))
            .await
            .as_f64()
            .unwrap();
        delays.push(Duration::from_secs_f64(((seen - sent).max(0.0)) / 1000.0));
        // A quiet spell between samples, as between a person's messages.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let _ = client.cancel().await;
    drop(page);
    drop(server);
    println!(
        "time from `quick_message` sent to the page showing its new pair ({latency_samples} samples, real chromium): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms\n",
        percentile(&delays, 50.0).as_secs_f64() * 1e3,
        percentile(&delays, 95.0).as_secs_f64() * 1e3,
        percentile(&delays, 100.0).as_secs_f64() * 1e3
    );

    println!(
        "| {turns} warm turns ({TEAMS} pairs at once, HTTP) | wall | server CPU | CPU per turn | server VmRSS idle → peak | SSE events delivered | overview reloads |"
    );
    println!("|---|---|---|---|---|---|---|");
    for dashboards in [0, DASHBOARDS, 0, DASHBOARDS] {
        let run = measured_burst(dir.path(), &config, turns, dashboards).await;
        println!(
            "| {} | {:.2} s | {:.0} ms | {:.0} µs | {} → {} KiB | {} | {} |",
            if dashboards == 0 {
                "no dashboard".to_owned()
            } else {
                format!("{dashboards} dashboards open")
            },
            run.wall.as_secs_f64(),
            run.cpu.as_secs_f64() * 1e3,
            run.cpu.as_secs_f64() * 1e6 / turns as f64,
            run.rss_idle,
            run.rss_peak,
            run.events,
            run.reloads
        );
    }
}
