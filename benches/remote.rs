//! Remote-team benchmark: `cargo bench --bench remote` (`-- --quick` for a short run).
//!
//! A private sshd on 127.0.0.1 (the tests' harness, `tests/common/sshd.rs`) is the "host";
//! the fake agent answers at once on both sides, so what is measured is what ssh and Iris
//! add: a cold first message to a new pair (spawn + turn) and a warm one, for a local team
//! and a remote one, with the control master (the handshake paid once per host) and
//! without (every spawn its own connection); the first message to a host (the master's
//! handshake included); and a health check over ssh. Prints a Markdown report for
//! BENCHMARKS.md.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/sshd.rs"]
mod sshd;
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iris::agent::{Agent, AgentEvent, EventSink};
use iris::config::{Config, GrantPermission, RemoteConfig, TeamConfig, TeamName};
use iris::pool::{Launch, Pool, PoolOptions, SessionMode, agent_spec, fixed_rules};
use support::percentile;

const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_iris-fake-agent");

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (colds, warms, checks, hosts) = if quick {
        (10, 200, 100, 3)
    } else {
        (40, 2000, 500, 10)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(colds, warms, checks, hosts));
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn row(name: &str, samples: &[Duration]) {
    println!(
        "| {name} | {} | {} | {} | {} |",
        samples.len(),
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0)),
        ms(percentile(samples, 100.0))
    );
}

fn team(root: &Path, name: &str, remote: Option<&str>) -> TeamConfig {
    let name = TeamName::new(name).unwrap();
    let path = root.join("teams").join(name.as_str());
    std::fs::create_dir_all(&path).unwrap();
    let state = root.join("state").join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&state).unwrap();
    let mut team = TeamConfig::new(name, std::fs::canonicalize(path).unwrap());
    team.claude_path = Some(FAKE_AGENT.to_owned());
    team.grant_permission = GrantPermission::Yes;
    team.env = BTreeMap::from([(
        "FAKE_AGENT_STATE_DIR".to_owned(),
        state.display().to_string(),
    )]);
    if let Some(remote) = remote {
        let words: Vec<String> = remote
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect();
        let mut config = RemoteConfig::new(words.last().unwrap());
        config.command = remote.to_owned();
        config.ssh_args = words;
        team.remote = Some(config);
    }
    team
}

fn config(root: &Path, teams: Vec<TeamConfig>) -> Config {
    let home = root.join(format!("home-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&home).unwrap();
    let mut config = Config::defaults(home);
    config.database.path = root.join(format!("bench-{}.db", uuid::Uuid::new_v4()));
    config.settings.max_processes = 256;
    config.settings.stop_grace_period = Duration::from_secs(2);
    for team in teams {
        config.teams.insert(team.name.clone(), team);
    }
    config
}

/// Cold first messages (a new pair each: spawn and turn), then warm ones on one pair.
async fn cold_and_warm(
    config: Config,
    target: &str,
    colds: usize,
    warms: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let pool = Pool::start(Arc::new(config), PoolOptions::default())
        .await
        .unwrap();
    // The first message of all (for a remote team: the master's handshake too) is not a
    // sample of either kind.
    let first = pool.pair("warmup", target).unwrap();
    pool.send(&first, "hello".to_owned()).await.unwrap();
    let mut cold = Vec::with_capacity(colds);
    for index in 0..colds {
        let pair = pool.pair(&format!("caller{index}"), target).unwrap();
        let started = Instant::now();
        pool.send(&pair, "hello".to_owned()).await.unwrap();
        cold.push(started.elapsed());
    }
    let mut warm = Vec::with_capacity(warms);
    for _ in 0..warms {
        let started = Instant::now();
        pool.send(&first, "ping".to_owned()).await.unwrap();
        warm.push(started.elapsed());
    }
    pool.shutdown().await;
    (cold, warm)
}

/// The first message to a host: a new pool each time, so the master's handshake is paid.
async fn first_to_host(root: &Path, remote: &str, hosts: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(hosts);
    for _ in 0..hosts {
        let pool = Pool::start(
            Arc::new(config(root, vec![team(root, "far", Some(remote))])),
            PoolOptions::default(),
        )
        .await
        .unwrap();
        let pair = pool.pair("home", "far").unwrap();
        let started = Instant::now();
        pool.send(&pair, "hello".to_owned()).await.unwrap();
        samples.push(started.elapsed());
        pool.shutdown().await;
    }
    samples
}

/// Agents started straight from their spec, without a control master (`link: None`): every
/// spawn makes its own ssh connection. Cold: spawn and first turn; then warm turns and
/// health checks on one of them.
async fn direct(
    root: &Path,
    team: &TeamConfig,
    colds: usize,
    warms: usize,
    checks: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    let config = config(root, vec![team.clone()]);
    let sink: EventSink = Arc::new(|_event: AgentEvent| {});
    let spawn = |index: usize| {
        let pair = iris::pool::Pair::new(
            TeamName::new(&format!("caller{index}")).unwrap(),
            team.name.clone(),
        );
        agent_spec(
            &config,
            team,
            &pair,
            &Launch {
                session: uuid::Uuid::new_v4(),
                mode: SessionMode::New,
                cost_baseline: 0.0,
                agent_key: "bench",
                mcp_config: None,
                rules: fixed_rules(&config, team),
                always: None,
                link: None,
                remote_mcp_config: None,
                remote_place: None,
            },
        )
    };
    let mut cold = Vec::with_capacity(colds);
    for index in 0..colds {
        let started = Instant::now();
        let agent = Agent::spawn(spawn(index), sink.clone(), None)
            .await
            .unwrap();
        agent.turn("hello".to_owned()).await.unwrap();
        cold.push(started.elapsed());
        agent.stop().await;
    }
    let agent = Agent::spawn(spawn(colds), sink.clone(), None)
        .await
        .unwrap();
    agent.turn("hello".to_owned()).await.unwrap();
    let mut warm = Vec::with_capacity(warms);
    for _ in 0..warms {
        let started = Instant::now();
        agent.turn("ping".to_owned()).await.unwrap();
        warm.push(started.elapsed());
    }
    let mut health = Vec::with_capacity(checks);
    for _ in 0..checks {
        let started = Instant::now();
        agent.health_check(Duration::from_secs(10)).await.unwrap();
        health.push(started.elapsed());
    }
    agent.stop().await;
    (cold, warm, health)
}

async fn run(colds: usize, warms: usize, checks: usize, hosts: usize) {
    let root = tempfile::Builder::new()
        .prefix("iris-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    let server = sshd::Sshd::start();
    let remote = server.remote_value();
    println!("## Remote teams (fake agent answering at once, sshd on 127.0.0.1)\n");
    println!(
        "machine: {} cores; {colds} cold and {warms} warm messages per row; `{}`\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        String::from_utf8_lossy(
            &std::process::Command::new("ssh")
                .arg("-V")
                .output()
                .unwrap()
                .stderr
        )
        .trim()
    );
    let local = team(root.path(), "near", None);
    let far = team(root.path(), "far", Some(&remote));

    let (local_cold, local_warm) = cold_and_warm(
        config(root.path(), vec![local.clone()]),
        "near",
        colds,
        warms,
    )
    .await;
    let (remote_cold, remote_warm) =
        cold_and_warm(config(root.path(), vec![far.clone()]), "far", colds, warms).await;
    let first = first_to_host(root.path(), &remote, hosts).await;
    let (direct_cold, direct_warm, remote_health) =
        direct(root.path(), &far, colds, warms, checks).await;
    let (_, _, local_health) = direct(root.path(), &local, 1, 1, checks).await;

    println!("| measure | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    row("local: cold first message (spawn + turn)", &local_cold);
    row("remote, control master: cold first message", &remote_cold);
    row(
        "remote, no master: cold first message (own handshake)",
        &direct_cold,
    );
    row(
        "remote: first message to the host (master's handshake + spawn + turn)",
        &first,
    );
    row("local: warm message", &local_warm);
    row("remote, through the master: warm message", &remote_warm);
    row(
        "remote, own connection: warm turn (driver only)",
        &direct_warm,
    );
    row("local: health check", &local_health);
    row("remote: health check over ssh", &remote_health);
    println!(
        "\nremote cold − local cold (p50): {}; the master saves (p50): {}; remote warm − local warm (p50): {}",
        ms(percentile(&remote_cold, 50.0).saturating_sub(percentile(&local_cold, 50.0))),
        ms(percentile(&direct_cold, 50.0).saturating_sub(percentile(&remote_cold, 50.0))),
        ms(percentile(&remote_warm, 50.0).saturating_sub(percentile(&local_warm, 50.0))),
    );
    drop(server);
}
