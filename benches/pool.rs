//! Pool benchmark: `cargo bench --bench pool` (add `-- --quick` for a short run).
//!
//! The fake agent answers at once, so what is measured is Iris: the driver, the pool, the
//! pipes and the process management around a turn. Prints a Markdown report for
//! BENCHMARKS.md.
#![allow(missing_docs)]

mod support;

use support::{percentile, rss_kib, us};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iris::agent::{Agent, AgentEvent, EventSink};
use iris::config::{Config, GrantPermission, TeamConfig, TeamName};
use iris::pool::{Launch, Pool, PoolOptions, SessionMode, agent_spec, fixed_rules};
use iris::store::MessageMode;

const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_iris-fake-agent");

struct Sizes {
    store_messages: usize,
    warm_turns: usize,
    throughput_turns: usize,
    spawns: usize,
    cycles: usize,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let sizes = if quick {
        Sizes {
            store_messages: 1000,
            warm_turns: 500,
            throughput_turns: 2000,
            spawns: 30,
            cycles: 500,
        }
    } else {
        Sizes {
            store_messages: 10_000,
            warm_turns: 5000,
            throughput_turns: 20_000,
            spawns: 200,
            cycles: 10_000,
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
    println!("## Pool benchmark (fake agent answering at once)\n");
    println!(
        "machine: {} cores; fake agent: {FAKE_AGENT}\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    if std::env::args().any(|arg| arg == "--rules-only") {
        rule_decisions();
        return;
    }
    if std::env::args().any(|arg| arg == "--approvals-only") {
        approve_to_tool(dir.path(), 200).await;
        return;
    }
    if std::env::args().any(|arg| arg == "--saturation-only") {
        for _ in 0..3 {
            saturation(dir.path(), 64, 3, 20).await;
        }
        return;
    }
    let (direct, pooled) = warm_turn_latency(dir.path(), sizes.warm_turns).await;
    println!(
        "| warm turn ({} turns, one pair) | p50 | p99 | mean |",
        sizes.warm_turns
    );
    println!("|---|---|---|---|");
    println!(
        "| driver only (`Agent::turn`) | {} | {} | {} |",
        us(percentile(&direct, 50.0)),
        us(percentile(&direct, 99.0)),
        us(mean(&direct))
    );
    println!(
        "| through the pool (`Pool::send`) | {} | {} | {} |",
        us(percentile(&pooled, 50.0)),
        us(percentile(&pooled, 99.0)),
        us(mean(&pooled))
    );
    println!(
        "| pool overhead (difference) | {} | | {} |\n",
        us(percentile(&pooled, 50.0).saturating_sub(percentile(&direct, 50.0))),
        us(mean(&pooled).saturating_sub(mean(&direct)))
    );

    println!("| pairs | turns | seconds | turns/s |");
    println!("|---|---|---|---|");
    for pairs in [1, 8, 64] {
        let (turns, elapsed) = throughput(dir.path(), pairs, sizes.throughput_turns).await;
        println!(
            "| {pairs} | {turns} | {:.2} | {:.0} |",
            elapsed.as_secs_f64(),
            turns as f64 / elapsed.as_secs_f64()
        );
    }

    let ready = spawn_to_ready(dir.path(), sizes.spawns).await;
    println!("\n| spawn to ready ({} spawns) | p50 | p99 |", sizes.spawns);
    println!("|---|---|---|");
    println!(
        "| `initialize` answered | {} | {} |\n",
        us(percentile(&ready, 50.0)),
        us(percentile(&ready, 99.0))
    );

    store_costs(dir.path(), sizes.store_messages).await;

    let churn = spawn_evict_cycles(dir.path(), sizes.cycles).await;
    println!("| spawn/evict cycles | {} |", sizes.cycles);
    println!("|---|---|");
    println!("| seconds | {:.1} |", churn.elapsed.as_secs_f64());
    println!(
        "| RSS before / after warm-up / after | {} / {} / {} KiB |",
        churn.rss_start, churn.rss_warm, churn.rss_end
    );
    println!(
        "| open fds before / after | {} / {} |",
        churn.fds_before, churn.fds_after
    );
    println!(
        "| live agent processes after shutdown | {} |",
        churn.leftover
    );
}

fn config(root: &Path, teams: usize, max_processes: usize) -> Config {
    let mut config = Config::defaults(root.join("home"));
    // A real file store, as in production (a new file per pool, so runs do not mix).
    config.database.path = root.join(format!("bench-{}.db", uuid::Uuid::new_v4()));
    config.settings.max_processes = max_processes;
    config.settings.max_queue_per_pair = 100_000;
    config.settings.stop_grace_period = Duration::from_secs(2);
    for index in 0..teams {
        let name = TeamName::new(&format!("team{index}")).expect("name");
        let path = root.join("teams").join(name.as_str());
        std::fs::create_dir_all(&path).expect("team dir");
        let state = root.join("state").join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&state).expect("state dir");
        let mut env = BTreeMap::new();
        env.insert(
            "FAKE_AGENT_STATE_DIR".to_owned(),
            state.display().to_string(),
        );
        let mut team = TeamConfig::new(
            name.clone(),
            std::fs::canonicalize(path).expect("canonical"),
        );
        team.claude_path = Some(FAKE_AGENT.to_owned());
        team.grant_permission = GrantPermission::Yes;
        team.env = env;
        config.teams.insert(name, team);
    }
    config
}

async fn warm_turn_latency(root: &Path, turns: usize) -> (Vec<Duration>, Vec<Duration>) {
    let config = config(root, 1, 4);
    let team = config.teams.values().next().expect("team").clone();
    let pool = Pool::start(Arc::new(config.clone()), PoolOptions::default())
        .await
        .expect("pool");
    let pair = pool.pair("bench", team.name.as_str()).expect("pair");

    let spec = agent_spec(
        &config,
        &team,
        &pair,
        &Launch {
            session: uuid::Uuid::new_v4(),
            mode: SessionMode::New,
            cost_baseline: 0.0,
            agent_key: "bench",
            mcp_config: None,
            rules: fixed_rules(&config, &team),
            always: None,
            link: None,
            remote_mcp_config: None,
            remote_place: None,
        },
    );
    let sink: EventSink = Arc::new(|_event: AgentEvent| {});
    let agent = Agent::spawn(spec, sink, None).await.expect("spawn");
    let mut direct = Vec::with_capacity(turns);
    for _ in 0..turns / 10 {
        agent.turn("warm-up".to_owned()).await.expect("turn");
    }
    for _ in 0..turns {
        let started = Instant::now();
        agent.turn("ping".to_owned()).await.expect("turn");
        direct.push(started.elapsed());
    }
    agent.stop().await;

    let mut pooled = Vec::with_capacity(turns);
    for _ in 0..turns / 10 {
        pool.send(&pair, "warm-up".to_owned()).await.expect("send");
    }
    for _ in 0..turns {
        let started = Instant::now();
        pool.send(&pair, "ping".to_owned()).await.expect("send");
        pooled.push(started.elapsed());
    }
    pool.shutdown().await;
    (direct, pooled)
}

async fn throughput(root: &Path, pairs: usize, total: usize) -> (usize, Duration) {
    let config = config(root, pairs, pairs);
    let pool = Pool::start(Arc::new(config), PoolOptions::default())
        .await
        .expect("pool");
    let pair_list: Vec<_> = (0..pairs)
        .map(|index| pool.pair("bench", &format!("team{index}")).expect("pair"))
        .collect();
    for result in pool.wake_all(pair_list.clone(), 8).await {
        result.1.expect("wake");
    }
    let per_pair = total / pairs;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for pair in pair_list {
        let pool = pool.clone();
        tasks.spawn(async move {
            // Keep a few turns queued per pair so the pipe is never empty.
            let mut in_flight = std::collections::VecDeque::new();
            for _ in 0..per_pair {
                in_flight.push_back(
                    pool.submit(&pair, "ping".to_owned(), MessageMode::Ask)
                        .await
                        .expect("submit"),
                );
                if in_flight.len() >= 4
                    && let Some(ticket) = in_flight.pop_front()
                {
                    ticket.outcome().await.expect("turn");
                }
            }
            for ticket in in_flight {
                ticket.outcome().await.expect("turn");
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task");
    }
    let elapsed = started.elapsed();
    pool.shutdown().await;
    (per_pair * pairs, elapsed)
}

async fn spawn_to_ready(root: &Path, spawns: usize) -> Vec<Duration> {
    let config = config(root, 1, 1);
    let pool = Pool::start(Arc::new(config), PoolOptions::default())
        .await
        .expect("pool");
    let pair = pool.pair("bench", "team0").expect("pair");
    let mut ready = Vec::with_capacity(spawns);
    for _ in 0..spawns {
        let started = Instant::now();
        pool.wake(&pair).await.expect("wake");
        ready.push(started.elapsed());
        pool.sleep(&pair).await;
    }
    pool.shutdown().await;
    ready
}

struct Churn {
    elapsed: Duration,
    rss_start: u64,
    rss_warm: u64,
    rss_end: u64,
    fds_before: usize,
    fds_after: usize,
    leftover: usize,
}

/// Two slots, four teams used round-robin: every message spawns a process and evicts one.
async fn spawn_evict_cycles(root: &Path, cycles: usize) -> Churn {
    let config = config(root, 4, 2);
    let fds_before = open_fds();
    let rss_start = rss_kib();
    let pool = Pool::start(Arc::new(config), PoolOptions::default())
        .await
        .expect("pool");
    let pairs: Vec<_> = (0..4)
        .map(|index| pool.pair("bench", &format!("team{index}")).expect("pair"))
        .collect();
    let started = Instant::now();
    let mut rss_warm = 0;
    let mut pids = std::collections::BTreeSet::new();
    for cycle in 0..cycles {
        let outcome = pool
            .send(&pairs[cycle % 4], "ping".to_owned())
            .await
            .expect("send");
        pids.insert(outcome.pid);
        if cycle == cycles / 10 {
            rss_warm = rss_kib();
        }
    }
    let elapsed = started.elapsed();
    pool.shutdown().await;
    drop(pool);
    let leftover = pids
        .iter()
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .count();
    Churn {
        elapsed,
        rss_start,
        rss_warm,
        rss_end: rss_kib(),
        fds_before,
        fds_after: open_fds(),
        leftover,
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(u32::MAX)
}

/// What recording costs: the four store writes of one turn, messages written per second,
/// and the database size per message with a typical transcript.
async fn store_costs(root: &Path, messages: usize) {
    use iris::agent::TranscriptEntry;
    use iris::config::DatabaseConfig;
    use iris::store::{MessageFinish, MessageId, MessageState, NewMessage, Store};

    let mut database = Config::defaults(root.join("home")).database;
    database.path = root.join(format!("store-{}.db", uuid::Uuid::new_v4()));
    let database: DatabaseConfig = database;
    let store = Store::open(&database).await.expect("store");
    let caller = TeamName::new("bench").expect("name");
    let target = TeamName::new("team0").expect("name");
    let session = store
        .create_session(&caller, &target, uuid::Uuid::new_v4())
        .await
        .expect("session")
        .session_id;
    // A transcript like a short tool-using turn: text, a tool call, its result, an answer.
    let transcript: Arc<[TranscriptEntry]> = Arc::from(vec![
        TranscriptEntry::AssistantText {
            text: "Let me look at the routes.".repeat(4),
        },
        TranscriptEntry::ToolUse {
            name: "Grep".to_owned(),
            input: r#"{"pattern":"plan","path":"src"}"#.to_owned(),
        },
        TranscriptEntry::ToolResult {
            content: "src/routes/plan.rs:12: pub async fn plan(...)\n".repeat(8),
            is_error: false,
        },
        TranscriptEntry::AssistantText {
            text: "GET /v1/users/{id}/plan returns the user's plan.".repeat(3),
        },
    ]);
    let mut per_turn = Vec::with_capacity(messages);
    let started = Instant::now();
    for index in 0..messages {
        let id = MessageId::new();
        let turn = Instant::now();
        store
            .insert_message(NewMessage {
                id,
                caller: caller.clone(),
                target: target.clone(),
                session_id: Some(session),
                mode: MessageMode::Ask,
                text: format!("Which endpoint returns the user's plan? ({index})"),
                parent: None,
            })
            .await
            .expect("insert");
        store.mark_running(id, session).await.expect("running");
        store
            .finish_message(
                id,
                MessageFinish {
                    state: MessageState::Completed,
                    answer: Some("GET /v1/users/{id}/plan returns the user's plan.".repeat(3)),
                    is_error: false,
                    error: None,
                    cost_usd: Some(0.0021),
                    usage: Some(serde_json::json!({"input_tokens": 1200, "output_tokens": 85})),
                    duration_ms: Some(2400),
                    transcript: std::sync::Arc::clone(&transcript),
                },
            )
            .await
            .expect("finish");
        store
            .record_turn(session, 0.0021, Some(0.0021 * (index + 1) as f64))
            .await
            .expect("turn");
        per_turn.push(turn.elapsed());
    }
    let elapsed = started.elapsed();
    let wal = database.path.with_extension("db-wal");
    let wal_peak = std::fs::metadata(&wal).map_or(0, |meta| meta.len());

    // Size at rest: closing the store runs a last checkpoint that folds the log into the file.
    store.close().await.expect("close");
    drop(store);
    let bytes = std::fs::metadata(&database.path).map_or(0, |meta| meta.len());

    // Accepting tells: inserts only, as fast as callers can write them (a fresh database).
    let mut tells_database = database.clone();
    tells_database.path = root.join(format!("tells-{}.db", uuid::Uuid::new_v4()));
    let store = Store::open(&tells_database).await.expect("store");
    let tells = messages;
    let accept_started = Instant::now();
    for index in 0..tells {
        store
            .insert_message(NewMessage {
                id: MessageId::new(),
                caller: caller.clone(),
                target: target.clone(),
                session_id: Some(session),
                mode: MessageMode::Quick,
                text: format!("note {index}"),
                parent: None,
            })
            .await
            .expect("insert");
    }
    let accept_elapsed = accept_started.elapsed();
    let wal_after = std::fs::metadata(tells_database.path.with_extension("db-wal"))
        .map_or(0, |meta| meta.len());

    println!("\n| store (file, WAL) | value |");
    println!("|---|---|");
    println!(
        "| recording one turn (insert, running, finish with transcript, session) p50 / p99 | {} / {} |",
        us(percentile(&per_turn, 50.0)),
        us(percentile(&per_turn, 99.0))
    );
    println!(
        "| turns recorded per second (sequential) | {:.0} |",
        messages as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| tells accepted (written) per second (sequential) | {:.0} |",
        tells as f64 / accept_elapsed.as_secs_f64()
    );
    println!(
        "| database size for {messages} finished messages with transcripts (at rest) | {:.1} MiB (~{:.0} bytes per message) |",
        bytes as f64 / 1_048_576.0,
        bytes as f64 / messages as f64
    );
    println!(
        "| write-ahead log after the turns / after the tells (bounded by checkpoints) | {:.1} / {:.1} MiB |",
        wal_peak as f64 / 1_048_576.0,
        wal_after as f64 / 1_048_576.0
    );
}

/// A saturated pool: `callers` pairs share `max` processes; each caller sends `each` messages
/// one after the other, so every message but a few needs another pair's idle process evicted
/// first. What each message waited, start to answer (wait for a slot, spawn, turn).
async fn saturation(root: &Path, callers: usize, max: usize, each: usize) {
    let mut config = config(root, 8, max);
    config.settings.pool_wait_timeout = Duration::from_secs(120);
    let pool = Pool::start(Arc::new(config), PoolOptions::default())
        .await
        .expect("pool");
    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..callers {
        let pool = pool.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let pair = pool
                .pair(&format!("c{index}"), &format!("team{}", index % 8))
                .expect("pair");
            barrier.wait().await;
            let mut samples = Vec::with_capacity(each);
            let mut failed = 0_usize;
            for _ in 0..each {
                let started = Instant::now();
                match pool.send(&pair, "ping".to_owned()).await {
                    Ok(_) => samples.push(started.elapsed()),
                    Err(_) => failed += 1,
                }
            }
            (samples, failed)
        });
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (some, lost) = done.expect("caller");
        samples.extend(some);
        failed += lost;
    }
    let elapsed = started.elapsed();
    pool.shutdown().await;
    let max_wait = samples.iter().max().copied().unwrap_or_default();
    println!(
        "| saturated: maxProcesses {max}, {callers} callers on their own pairs, {each} messages each | p50 | p99 | max | failed | seconds |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| start to answer (slot wait, spawn, turn) | {} | {} | {} | {failed} | {:.2} |\n",
        us(percentile(&samples, 50.0)),
        us(percentile(&samples, 99.0)),
        us(max_wait),
        elapsed.as_secs_f64()
    );
}

/// Time from a person's decision to the agent's tool having run (its result back in Iris),
/// three ways: `Pool::decide_approval` in process, `POST /approvals/{id}/approve` over
/// loopback HTTP, and the `iris approve` command (a process: what a person types). The fake
/// agent asks `can_use_tool` for a `touch` and runs it once allowed.
async fn approve_to_tool(root: &Path, rounds: usize) {
    use iris::pool::{ApprovalEvent, PersonDecision, PoolEvent};
    let mut config = config(root, 1, 2);
    config.iris_home = root.join("approvals-home");
    let team = config.teams.values_mut().next().expect("team");
    team.grant_permission = GrantPermission::Ask;
    let team_name = team.name.clone();
    let pool = Pool::start(Arc::new(config.clone()), PoolOptions::default())
        .await
        .expect("pool");
    let pair = pool.pair("bench", team_name.as_str()).expect("pair");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(iris::mcp::serve_http(
        listener,
        pool.clone(),
        None,
        shutdown.clone(),
        iris::mcp::HttpAccess::default(),
    ));
    iris::approver::write_approver_file(
        &config.iris_home,
        &iris::approver::ApproverFile {
            url: base.clone(),
            token: pool.approver_token(),
            pid: std::process::id(),
        },
    )
    .expect("approver file");
    let http = reqwest::Client::new();
    let mut results: Vec<(&str, Vec<Duration>)> = Vec::new();
    for way in ["in process", "HTTP", "iris approve"] {
        let mut samples = Vec::with_capacity(rounds);
        let count = if way == "iris approve" {
            rounds / 4
        } else {
            rounds
        };
        for round in 0..count + 5 {
            let mut approvals = pool.subscribe_approvals();
            let mut events = pool.subscribe();
            let ticket = pool
                .submit(
                    &pair,
                    r#"[[tool:Bash:{"command":"touch bench-approved"}]]"#.to_owned(),
                    MessageMode::Ask,
                )
                .await
                .expect("submit");
            let id = loop {
                if let Ok(ApprovalEvent::Pending { approval }) = approvals.recv().await {
                    break approval.id;
                }
            };
            let started = Instant::now();
            match way {
                "in process" => {
                    pool.decide_approval(
                        &id,
                        PersonDecision {
                            allow: true,
                            ..PersonDecision::default()
                        },
                    )
                    .await
                    .expect("decide");
                }
                "HTTP" => {
                    let response = http
                        .post(format!("{base}/approvals/{id}/approve"))
                        .header(iris::approver::APPROVER_HEADER, pool.approver_token())
                        .send()
                        .await
                        .expect("approve over HTTP");
                    assert!(response.status().is_success());
                }
                _ => {
                    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_iris"))
                        .args(["approve", &id])
                        .env("IRIS_HOME", &config.iris_home)
                        .env_remove("IRIS_CONFIG_PATH")
                        .stdout(std::process::Stdio::null())
                        .status()
                        .await
                        .expect("iris approve");
                    assert!(status.success());
                }
            }
            loop {
                if let Ok(PoolEvent::Agent {
                    event:
                        AgentEvent::Step {
                            entry: iris::agent::TranscriptEntry::ToolResult { .. },
                        },
                    ..
                }) = events.recv().await
                {
                    break;
                }
            }
            let elapsed = started.elapsed();
            ticket.outcome().await.expect("turn");
            if round >= 5 {
                samples.push(elapsed);
            }
        }
        results.push((way, samples));
    }
    println!("| person's decision → tool ran (fake agent) | n | p50 | p99 |");
    println!("|---|---|---|---|");
    for (way, samples) in &results {
        println!(
            "| {way} | {} | {} | {} |",
            samples.len(),
            us(percentile(samples, 50.0)),
            us(percentile(samples, 99.0))
        );
    }
    println!();
    shutdown.cancel();
    let _ = server.await;
    pool.shutdown().await;
}

/// What checking a permission request against rules adds to it: `PermissionPolicy::decide`
/// with a realistic set (2 rules for every team, 10 of the team's own), on requests that an
/// allow rule, a deny rule or no rule decides, and on a compound shell command.
fn rule_decisions() {
    use iris::agent::PermissionPolicy;
    use iris::permissions::{Rule, Rules};
    let parse = |list: &[&str]| -> Vec<Rule> {
        list.iter()
            .map(|text| Rule::parse(text).expect("rule"))
            .collect()
    };
    let defaults = Arc::new(Rules {
        deny: parse(&["Bash(rm:*)", "Read(~/.ssh/**)"]),
        ..Rules::default()
    });
    let team = Arc::new(Rules {
        allow: parse(&[
            "Read",
            "Grep",
            "Glob",
            "Edit(src/**)",
            "Write(notes/**)",
            "Bash(cargo test:*)",
            "Bash(git status:*)",
            "mcp__iris__send_message",
            "WebFetch(domain:*.rust-lang.org)",
        ]),
        ask: parse(&["Bash(git push:*)"]),
        ..Rules::default()
    });
    let policy = PermissionPolicy {
        grant: GrantPermission::No,
        team: "bench".to_owned(),
        rules: Arc::new(move || [defaults.clone(), team.clone()]),
        home: Some(std::path::PathBuf::from("/home/me")),
        protected: Some(std::path::PathBuf::from("/home/me/.iris")),
        // What people allowed for good for the pair: 4 rules and 2 exact inputs.
        always: Some({
            let mut pair = iris::permissions::PairRules::default();
            for (index, rule) in parse(&[
                "Bash(npm test *)",
                "Bash(make lint)",
                "Edit(guides/**)",
                "WebFetch(domain:docs.rs)",
            ])
            .into_iter()
            .enumerate()
            {
                pair.add_rule(rule, format!("r{index}"));
            }
            pair.add_exact(
                "NotebookEdit".to_owned(),
                serde_json::json!({"notebook_path": "/work/app/a.ipynb"}),
                "e1".to_owned(),
            );
            pair.add_exact(
                "Task".to_owned(),
                serde_json::json!({"subagent_type": "Explore"}),
                "e2".to_owned(),
            );
            let pair = Arc::new(pair);
            Arc::new(move || pair.clone())
        }),
    };
    let cwd = std::path::Path::new("/work/app");
    let requests = [
        (
            "allowed write",
            true,
            "Write",
            serde_json::json!({"file_path": "/work/app/notes/a/b.md", "content": "x"}),
        ),
        (
            "denied read",
            false,
            "Read",
            serde_json::json!({"file_path": "/home/me/.ssh/id_ed25519"}),
        ),
        (
            "no rule (grantPermission)",
            false,
            "Edit",
            serde_json::json!({"file_path": "/work/app/docs/x.md"}),
        ),
        (
            "compound command, every part allowed",
            true,
            "Bash",
            serde_json::json!({"command": "cargo test -q && git status --short"}),
        ),
    ];
    println!(
        "| permission decision with 12 rules + 6 allowed always for the pair (100,000 each) | p50 | p99 |"
    );
    println!("|---|---|---|");
    for (label, allowed, tool, input) in &requests {
        assert_eq!(
            policy.decide(tool, input, cwd).is_allowed(),
            *allowed,
            "{label}"
        );
        let mut samples = Vec::with_capacity(100_000);
        for _ in 0..100_000 {
            let started = Instant::now();
            let decision = policy.decide(tool, input, cwd);
            samples.push(started.elapsed());
            std::hint::black_box(decision);
        }
        println!(
            "| {label} | {} | {} |",
            us(percentile(&samples, 50.0)),
            us(percentile(&samples, 99.0))
        );
    }
    println!();
}
