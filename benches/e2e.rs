//! End-to-end benchmark with the real Claude Code CLI: `cargo bench --bench e2e`
//! (`-- --quick` for a short run). Needs `scripts/install-claude` (scripts/test runs it).
//!
//! A real `iris serve` (release build) with teams run by the pinned CLI, offline against the
//! in-process fake Messages API, which answers at once; rmcp clients over Streamable HTTP.
//! Measures what the warm pool buys: cold (spawn + first turn) vs warm messages, 20
//! messages through Iris vs 20 one-shot `claude -p --resume` runs, memory of one agent and
//! of Iris with 4 warm agents, and model requests per first message.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/support.rs"]
mod support;

use std::time::{Duration, Instant};

use iris::api::{CallerStatus, MessageOutcome, TeamStatusPage};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use support::RealWorld;

type Client = RunningService<rmcp::RoleClient, ()>;

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(if quick { 5 } else { 20 }));
}

async fn tool<T: serde::de::DeserializeOwned>(client: &Client, name: &str, arguments: Value) -> T {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    let result = client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(arguments))
        .await
        .expect("tool call");
    let body = result.structured_content.expect("structured");
    assert_ne!(result.is_error, Some(true), "{name} failed: {body}");
    serde_json::from_value(body).expect("a typed result")
}

async fn ask(client: &Client, from: &str, to: &str, message: &str) -> Duration {
    let started = Instant::now();
    let outcome: MessageOutcome = tool(
        client,
        "ask_message",
        json!({"fromTeam": from, "toTeam": to, "message": message, "timeout": 120_000}),
    )
    .await;
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    started.elapsed()
}

fn percentile(samples: &[Duration], pct: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((pct / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn pid_of(client: &Client, from: &str, team: &str) -> u32 {
    let status: TeamStatusPage = tool(
        client,
        "team_status",
        json!({"fromTeam": from, "team": team}),
    )
    .await;
    status.teams[0].pid.expect("an awake agent")
}

async fn run(samples: usize) {
    let mut world = RealWorld::new().await;
    for team in ["backend", "infra", "mobile", "web"] {
        world.team(team);
    }
    let (mut server, url) = world.serve();
    let iris_pid = server.0.id();
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
            .await
            .expect("client");
    let (idle_rss, _) = memory_mib(iris_pid);

    println!(
        "## End to end with the real Claude Code CLI 2.1.332 (fake Messages API answering at once)\n"
    );

    // Cold: a new pair each time (new caller name) → spawn, `initialize`, first turn. The
    // pair is put to sleep afterwards (not timed) so every cold message finds a free slot.
    let mut cold = Vec::with_capacity(samples);
    let mut requests_per_first_message = Vec::with_capacity(samples);
    for index in 0..samples {
        let caller = format!("cold{index}");
        let before = world.api.messages_calls().len();
        let took = ask(&client, &caller, "backend", "first message").await;
        requests_per_first_message.push(world.api.messages_calls().len() - before);
        cold.push(took);
        let _: iris::api::Sleep = tool(
            &client,
            "team_sleep",
            json!({"fromTeam": caller, "team": "backend"}),
        )
        .await;
    }
    // Warm: one pair, after one warm-up message.
    ask(&client, "warm", "backend", "warm up").await;
    let mut warm = Vec::with_capacity(samples);
    for _ in 0..samples {
        warm.push(ask(&client, "warm", "backend", "next message").await);
    }
    let ratio = percentile(&cold, 50.0).as_secs_f64() / percentile(&warm, 50.0).as_secs_f64();
    println!("| message ({samples} each, `ask_message` over HTTP) | p50 | p95 |");
    println!("|---|---|---|");
    println!(
        "| cold: new pair (spawn + `initialize` + first turn) | {} | {} |",
        ms(percentile(&cold, 50.0)),
        ms(percentile(&cold, 95.0))
    );
    println!(
        "| warm: same pair, live process | {} | {} |",
        ms(percentile(&warm, 50.0)),
        ms(percentile(&warm, 95.0))
    );
    println!("\ncold / warm at p50: **{ratio:.1}×**\n");
    let all_one = requests_per_first_message.iter().all(|&count| count == 1);
    println!(
        "Model requests per first message to a new pair: {:?} ({})\n",
        requests_per_first_message,
        if all_one { "exactly 1 each" } else { "NOT 1" }
    );

    // 20 sequential messages through Iris vs 20 one-shot `claude -p --resume` runs.
    let started = Instant::now();
    for index in 0..samples {
        ask(&client, "sequence", "infra", &format!("message {index}")).await;
    }
    let through_iris = started.elapsed();
    let claude = common::real_claude();
    let infra = world
        .config
        .teams
        .values()
        .find(|team| team.name.as_str() == "infra")
        .expect("infra")
        .clone();
    let session = uuid::Uuid::new_v4().to_string();
    let one_shot = |args: Vec<String>| {
        let output = std::process::Command::new(&claude)
            .args(args)
            .current_dir(&infra.path)
            .envs(infra.env.iter())
            .output()
            .expect("claude -p");
        assert!(
            output.status.success(),
            "claude -p failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let args = |first: &str, message: String| {
        vec![
            "-p".to_owned(),
            message,
            "--output-format".to_owned(),
            "json".to_owned(),
            first.to_owned(),
            session.clone(),
        ]
    };
    one_shot(args("--session-id", "start".to_owned()));
    let started = Instant::now();
    for index in 0..samples {
        one_shot(args("--resume", format!("message {index}")));
    }
    let one_shots = started.elapsed();
    println!("| {samples} sequential messages to one pair | total | per message |");
    println!("|---|---|---|");
    #[allow(clippy::cast_possible_truncation)]
    let per = |total: Duration| total / samples as u32;
    println!(
        "| through Iris (warm process after the first) | {} | {} |",
        ms(through_iris),
        ms(per(through_iris))
    );
    println!(
        "| `claude -p --resume` one-shot runs | {} | {} |",
        ms(one_shots),
        ms(per(one_shots))
    );
    println!(
        "\none-shot / Iris: **{:.1}×**\n",
        one_shots.as_secs_f64() / through_iris.as_secs_f64()
    );

    // Memory: 4 warm agents (one per team), then the peak of one agent and of Iris.
    for team in ["backend", "infra", "mobile", "web"] {
        ask(&client, "memory", team, "hello").await;
    }
    let mut agents = Vec::new();
    for team in ["backend", "infra", "mobile", "web"] {
        agents.push(memory_mib(pid_of(&client, "memory", team).await));
    }
    let (iris_rss, iris_peak) = memory_mib(iris_pid);
    let agent_peak = agents.iter().map(|(_, peak)| *peak).fold(0.0, f64::max);
    let agent_rss: f64 = agents.iter().map(|(rss, _)| *rss).sum::<f64>() / agents.len() as f64;
    println!("| memory | RSS | peak (VmHWM) |");
    println!("|---|---|---|");
    println!(
        "| one agent (`claude`, after a turn; mean RSS, max peak of 4) | {agent_rss:.0} MiB | {agent_peak:.0} MiB |"
    );
    println!(
        "| `iris serve` with 4 warm agents (idle at start: {idle_rss:.1} MiB) | {iris_rss:.1} MiB | {iris_peak:.1} MiB |"
    );

    let _ = client.cancel().await;
    server.terminate();
}
