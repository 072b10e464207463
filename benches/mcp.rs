//! MCP benchmark: `cargo bench --bench mcp` (`-- --quick` for a short run).
//!
//! An in-process `iris serve` HTTP router on 127.0.0.1 over a pool of fake agents that answer
//! at once; real rmcp clients over Streamable HTTP. Measures what a caller sees of a warm
//! `send_message`, and calls per second with several clients at once.
#![allow(missing_docs)]

mod support;

use support::{percentile, rss_kib, us};

use std::sync::Arc;
use std::time::Instant;

use iris::config::{Config, GrantPermission, TeamConfig, TeamName};
use iris::pool::{Pool, PoolOptions};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_iris-fake-agent");

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(if quick { 200 } else { 2000 }));
}

fn config(root: &std::path::Path, teams: usize) -> Config {
    let mut config = Config::defaults(root.join("home"));
    config.database.path = root.join("bench.db");
    config.settings.max_processes = teams + 1;
    config.settings.max_queue_per_pair = 10_000;
    for index in 0..teams {
        let name = TeamName::new(&format!("team{index}")).expect("name");
        let path = root.join(name.as_str());
        std::fs::create_dir_all(&path).expect("dir");
        let state = root.join("state").join(name.as_str());
        std::fs::create_dir_all(&state).expect("state");
        let mut team = TeamConfig::new(
            name.clone(),
            std::fs::canonicalize(path).expect("canonical"),
        );
        team.claude_path = Some(FAKE_AGENT.to_owned());
        team.grant_permission = GrantPermission::Yes;
        team.env.insert(
            "FAKE_AGENT_STATE_DIR".to_owned(),
            state.display().to_string(),
        );
        config.teams.insert(name, team);
    }
    config
}

fn send(caller: &str, team: &str) -> CallToolRequestParams {
    let arguments = json!({"fromTeam": caller, "toTeam": team, "message": "ping"});
    let serde_json::Value::Object(arguments) = arguments else {
        unreachable!("an object")
    };
    CallToolRequestParams::new("send_message").with_arguments(arguments)
}

async fn run(calls: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let teams = 8;
    let pool = Pool::start(Arc::new(config(dir.path(), teams)), PoolOptions::default())
        .await
        .expect("pool");
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    let server = tokio::spawn(iris::mcp::serve_http(
        listener,
        pool.clone(),
        None,
        shutdown.clone(),
        iris::mcp::HttpAccess::default(),
    ));

    println!(
        "## MCP benchmark (Streamable HTTP, in-process server, fake agents answering at once)\n"
    );
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
            .await
            .expect("client");
    for _ in 0..calls / 10 {
        client
            .call_tool(send("bench", "team0"))
            .await
            .expect("warm-up");
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let result = client
            .call_tool(send("bench", "team0"))
            .await
            .expect("call");
        assert_eq!(result.is_error, Some(false));
        samples.push(started.elapsed());
    }
    let _ = client.cancel().await;
    println!("| warm `send_message` ({calls} calls, one client, one pair) | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| over Streamable HTTP | {} | {} |\n",
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0))
    );

    println!(
        "| concurrent clients (each on its own pair, {teams} teams) | calls | seconds | calls/s |"
    );
    println!("|---|---|---|---|");
    for clients in [1_usize, 16, 64] {
        let per_client = (calls / clients).max(5);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..clients {
            let url = url.clone();
            tasks.spawn(async move {
                let client =
                    ().serve(StreamableHttpClientTransport::from_uri(url))
                        .await
                        .expect("client");
                let caller = format!("client{index}");
                let team = format!("team{}", index % teams);
                for _ in 0..per_client {
                    client.call_tool(send(&caller, &team)).await.expect("call");
                }
                let _ = client.cancel().await;
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("client task");
        }
        let elapsed = started.elapsed();
        let total = per_client * clients;
        println!(
            "| {clients} | {total} | {:.2} | {:.0} |",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
    }
    println!("\nbench process RSS after the runs: {} KiB", rss_kib());
    shutdown.cancel();
    let _ = server.await;
    pool.shutdown().await;
}
