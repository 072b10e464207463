//! Black-box tests of the agent driver and the pool, with real processes (the fake agent).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{World, assert_contains, submit_running, wait_event, wait_for};
use iris::agent::{SpawnError, TranscriptEntry, TurnError};
use iris::config::GrantPermission;
use iris::pool::{ExitReason, PairState, PoolError, PoolEvent};
use iris::store::MessageMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_turn_spawns_then_turns_are_warm() {
    let mut world = World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();

    let first = pool.send(&pair, "hello".to_owned()).await.unwrap();
    assert!(first.cold);
    assert_eq!(first.result.answer, "fake answer #1: hello");
    assert!(!first.result.is_error);
    assert_eq!(first.result.subtype, "success");
    assert!(first.result.cost_usd > 0.0);

    let second = pool.send(&pair, "again".to_owned()).await.unwrap();
    assert!(!second.cold);
    assert_eq!(second.pid, first.pid);
    assert_eq!(second.result.answer, "fake answer #2: again");
    // Cost is per turn, although the CLI reports a cumulative total.
    assert!((second.result.cost_usd - first.result.cost_usd).abs() < 1e-9);
    assert!(second.result.total_cost_usd.unwrap() > first.result.total_cost_usd.unwrap());

    // One process, started with --session-id, ready without a model turn: the only stdin
    // lines before the first user message are control requests.
    let starts = world.starts("backend");
    assert_eq!(starts.len(), 1);
    let session_flag = format!("--session-id={}", first.session_id);
    assert!(starts[0].contains(&session_flag), "argv {:?}", starts[0]);
    for flag in [
        "--print",
        "--verbose",
        "--input-format=stream-json",
        "--output-format=stream-json",
        "--permission-prompt-tool=stdio",
    ] {
        assert!(
            starts[0].iter().any(|arg| arg == flag),
            "missing {flag} in {:?}",
            starts[0]
        );
    }
    let stdin: Vec<serde_json::Value> = world
        .log("backend")
        .into_iter()
        .filter(|entry| entry["event"] == "stdin")
        .filter_map(|entry| serde_json::from_str(entry["line"].as_str()?).ok())
        .collect();
    assert_eq!(stdin[0]["type"], "control_request");
    assert_eq!(stdin[0]["request"]["subtype"], "initialize");
    assert_eq!(
        stdin.iter().filter(|line| line["type"] == "user").count(),
        2
    );

    let status = pool.status();
    assert_eq!(status.live, 1);
    let pair_status = &status.pairs[0];
    assert_eq!(pair_status.state, PairState::Idle);
    assert_eq!(pair_status.pid, Some(first.pid));
    assert_eq!(pair_status.process_turns, 2);
    assert_eq!(pair_status.session_turns, 2);
    assert!(pair_status.total_cost_usd > 0.0);

    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_to_one_pair_share_one_spawn_and_keep_order() {
    let mut world = World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut tickets = Vec::new();
    for index in 0..20 {
        tickets.push(
            pool.submit(&pair, format!("m{index}"), MessageMode::Ask)
                .await
                .unwrap(),
        );
    }
    let mut pids = std::collections::BTreeSet::new();
    for (index, ticket) in tickets.into_iter().enumerate() {
        let outcome = ticket.outcome().await.unwrap();
        assert_eq!(
            outcome.result.answer,
            format!("fake answer #{}: m{index}", index + 1)
        );
        pids.insert(outcome.pid);
    }
    assert_eq!(pids.len(), 1);
    assert_eq!(world.starts("backend").len(), 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bound_gives_a_clear_error() {
    let mut world = World::new();
    world.team("backend", &[]);
    world.config.settings.max_queue_per_pair = 2;
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let running = submit_running(&pool, &pair, "[[slow:600000]]").await;
    let _one = pool
        .submit(&pair, "a".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let _two = pool
        .submit(&pair, "b".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let Err(error) = pool.submit(&pair, "c".to_owned(), MessageMode::Ask).await else {
        panic!("third queued message accepted");
    };
    assert!(matches!(error, PoolError::QueueFull { limit: 2, .. }));
    assert_contains(
        &error.to_string(),
        "queue for frontend->backend is full (2 messages waiting",
    );
    assert!(pool.interrupt(&pair).await);
    let interrupted = running.outcome().await.unwrap();
    assert!(interrupted.result.interrupted && interrupted.result.is_error);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_processes_is_a_hard_bound_under_concurrency() {
    let mut world = World::new();
    let teams = ["t1", "t2", "t3", "t4", "t5", "t6"];
    for team in teams {
        world.team(team, &[]);
    }
    world.config.settings.max_processes = 2;
    let pool = world.pool().await;
    let mut events = pool.subscribe();
    let watcher = tokio::spawn(async move {
        let (mut live, mut peak) = (0_i64, 0_i64);
        while let Ok(event) = events.recv().await {
            match event {
                PoolEvent::Spawning { .. } => live += 1,
                PoolEvent::Exited { .. } | PoolEvent::SpawnFailed { .. } => live -= 1,
                _ => {}
            }
            peak = peak.max(live);
        }
        peak
    });
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..3 {
        for team in teams {
            let pool = pool.clone();
            tasks.spawn(async move {
                let pair = pool.pair("caller", team).unwrap();
                pool.send(&pair, format!("{team} round {round}")).await
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert!(pool.status().live <= 2);
    pool.shutdown().await;
    drop(pool);
    let peak = watcher.await.unwrap();
    assert!(peak <= 2, "peak live processes {peak} > maxProcesses 2");
    assert!(peak >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_evicts_the_least_recently_used_idle_process() {
    let mut world = World::new();
    for team in ["a", "b", "c"] {
        world.team(team, &[]);
    }
    world.config.settings.max_processes = 2;
    let pool = world.pool().await;
    let pair_a = pool.pair("x", "a").unwrap();
    let pair_b = pool.pair("x", "b").unwrap();
    let pair_c = pool.pair("x", "c").unwrap();
    let a = pool.send(&pair_a, "1".to_owned()).await.unwrap();
    pool.send(&pair_b, "1".to_owned()).await.unwrap();
    pool.send(&pair_a, "2".to_owned()).await.unwrap(); // a is now the most recently used
    let mut events = pool.subscribe();
    pool.send(&pair_c, "1".to_owned()).await.unwrap();
    let evicted = wait_event(&mut events, "eviction", |event| {
        matches!(event, PoolEvent::Evicted { .. })
    })
    .await;
    let PoolEvent::Evicted { pair, for_pair, .. } = evicted else {
        unreachable!()
    };
    assert_eq!(pair, pair_b);
    assert_eq!(for_pair, pair_c);
    let again = pool.send(&pair_a, "3".to_owned()).await.unwrap();
    assert_eq!(again.pid, a.pid, "a was evicted although b was older");
    // b's conversation survives eviction: its next process resumes the session.
    let b = pool.send(&pair_b, "2".to_owned()).await.unwrap();
    assert!(b.cold);
    assert_eq!(b.result.answer, "fake answer #2: 2");
    assert!(world.starts("b")[1].contains(&format!("--resume={}", b.session_id)));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_processes_are_never_evicted_and_saturation_is_reported() {
    let mut world = World::new();
    world.team("busy", &[]);
    world.team("other", &[]);
    world.config.settings.max_processes = 1;
    world.config.settings.pool_wait_timeout = Duration::from_millis(300);
    let pool = world.pool().await;
    let busy = pool.pair("x", "busy").unwrap();
    let other = pool.pair("x", "other").unwrap();
    let hanging = submit_running(&pool, &busy, "[[slow:600000]]").await;
    let error = pool.send(&other, "hi".to_owned()).await.unwrap_err();
    assert!(
        matches!(
            error,
            PoolError::Saturated {
                busy: 1,
                max: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_contains(&error.to_string(), "pool saturated (1/1 busy)");
    // The busy turn was not disturbed.
    assert!(pool.interrupt(&busy).await);
    assert!(hanging.outcome().await.unwrap().result.interrupted);
    // Now the idle process can be evicted for the other pair.
    assert_eq!(
        pool.send(&other, "hi".to_owned())
            .await
            .unwrap()
            .result
            .answer,
        "fake answer #1: hi"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_turn_fails_at_once_and_the_next_message_resumes() {
    let mut world = World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let first = pool.send(&pair, "one".to_owned()).await.unwrap();
    let error = pool
        .send(&pair, "[[stderr:about to crash]] [[crash]]".to_owned())
        .await
        .unwrap_err();
    let PoolError::Turn {
        source: TurnError::Exited { exit, .. },
        ..
    } = &error
    else {
        panic!("unexpected {error:?}");
    };
    assert_eq!(exit.code, Some(3));
    assert!(!exit.requested);
    assert_contains(&exit.stderr_tail, "about to crash");
    assert_contains(&error.to_string(), "exit code 3");
    assert_eq!(pool.status().live, 0);

    let next = pool.send(&pair, "two".to_owned()).await.unwrap();
    assert!(next.cold);
    assert_ne!(next.pid, first.pid);
    assert_eq!(next.session_id, first.session_id);
    assert_eq!(next.result.answer, "fake answer #2: two");
    let starts = world.starts("backend");
    assert!(
        starts[1].contains(&format!("--resume={}", first.session_id)),
        "{:?}",
        starts[1]
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_a_given_turn_and_garbage_output_are_survived() {
    let mut world = World::new();
    world.team("backend", &[("FAKE_AGENT_CRASH_AT_TURN", "2")]);
    world.config.settings.max_line_bytes = 64 * 1024;
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let mut events = pool.subscribe();
    let first = pool
        .send(&pair, "[[garbage]] one".to_owned())
        .await
        .unwrap();
    assert_eq!(first.result.answer, "fake answer #1: [[garbage]] one");
    wait_event(&mut events, "skipped garbage", |event| {
        matches!(event, PoolEvent::Agent { event: iris::agent::AgentEvent::Skipped { reason }, .. } if reason.contains("not JSON"))
    })
    .await;
    assert!(pool.send(&pair, "two".to_owned()).await.is_err());
    // The crash is counted per process: the respawned one answers its first turn.
    let after = pool.send(&pair, "three".to_owned()).await.unwrap();
    assert_eq!(after.result.answer, "fake answer #2: three");

    world.team("plain", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "plain").unwrap();
    let mut events = pool.subscribe();
    let huge = pool
        .send(&pair, "[[huge:1000000]] big".to_owned())
        .await
        .unwrap();
    assert_eq!(huge.result.answer, "fake answer #1: [[huge:1000000]] big");
    wait_event(&mut events, "skipped long line", |event| {
        matches!(event, PoolEvent::Agent { event: iris::agent::AgentEvent::Skipped { reason }, .. } if reason.contains("exceeds maxLineBytes"))
    })
    .await;
    let split = pool
        .send(&pair, "[[split]] [[answer:héllo ✓]]".to_owned())
        .await
        .unwrap();
    assert_eq!(split.result.answer, "héllo ✓");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_turn_times_out_and_the_process_recovers_or_is_replaced() {
    let mut world = World::new();
    world.team("backend", &[]);
    world.config.settings.response_timeout = Duration::from_millis(300);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let first = pool.send(&pair, "one".to_owned()).await.unwrap();

    // A silent turn that an interrupt can end: the process recovers and is kept.
    let error = pool
        .send(&pair, "[[slow:600000]]".to_owned())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            PoolError::Turn {
                source: TurnError::TimedOut { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_contains(&error.to_string(), "responseTimeout");
    let after = pool.send(&pair, "two".to_owned()).await.unwrap();
    assert_eq!(after.pid, first.pid);

    // A hang that ignores the interrupt: the process is killed and replaced.
    let error = pool.send(&pair, "[[hang]]".to_owned()).await.unwrap_err();
    assert!(
        matches!(
            error,
            PoolError::Turn {
                source: TurnError::TimedOut { .. },
                ..
            }
        ),
        "{error:?}"
    );
    let replaced = pool.send(&pair, "three".to_owned()).await.unwrap();
    assert_ne!(replaced.pid, first.pid);
    assert_eq!(replaced.session_id, first.session_id);
    pool.shutdown().await;
    assert!(world.live_processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_ends_the_turn_and_keeps_the_process() {
    let mut world = World::new();
    world.team("backend", &[]);
    let pool = world.pool().await;
    let pair = pool.pair("frontend", "backend").unwrap();
    let slow = submit_running(&pool, &pair, "[[slow:60000]]").await;
    assert!(pool.interrupt(&pair).await);
    let outcome = slow.outcome().await.unwrap();
    assert!(outcome.result.interrupted);
    assert!(outcome.result.is_error);
    assert_eq!(outcome.result.subtype, "error_during_execution");
    assert_eq!(
        outcome.result.terminal_reason.as_deref(),
        Some("aborted_streaming")
    );
    assert!(!pool.interrupt(&pair).await, "nothing is running now");
    let next = pool.send(&pair, "next".to_owned()).await.unwrap();
    assert_eq!(next.pid, outcome.pid);
    assert!(!next.result.is_error);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failures_are_immediate_and_clear() {
    let mut world = World::new();
    world.team("early-exit", &[("FAKE_AGENT_EXIT_AT_START", "7")]);
    world.team("missing", &[]).claude_path = Some("/nonexistent/bin/claude".to_owned());
    world.team("not-on-path", &[]).claude_path = Some("iris-no-such-claude-binary".to_owned());
    world.team("gone-dir", &[]);
    world
        .team("mute", &[("FAKE_AGENT_NO_INIT", "1")])
        .spawn_timeout = Some(Duration::from_millis(300));
    world
        .team("slow-start", &[("FAKE_AGENT_SPAWN_DELAY_MS", "60000")])
        .spawn_timeout = Some(Duration::from_millis(300));
    std::fs::remove_dir(world.path().join("teams").join("gone-dir")).unwrap();
    let pool = world.pool().await;
    let send = |team: &'static str| {
        let pool = pool.clone();
        async move {
            let pair = pool.pair("x", team).unwrap();
            match pool.send(&pair, "hi".to_owned()).await.unwrap_err() {
                PoolError::Spawn { source, .. } => source,
                other => panic!("unexpected {other:?}"),
            }
        }
    };

    let error = send("early-exit").await;
    let SpawnError::ExitedEarly { exit, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.code, Some(7));
    assert_contains(&exit.stderr_tail, "exiting at start");

    let error = send("missing").await;
    assert!(
        matches!(error, SpawnError::MissingBinary { .. }),
        "{error:?}"
    );
    assert_contains(&error.to_string(), "teams.missing.claudePath");
    let error = send("not-on-path").await;
    assert!(
        matches!(error, SpawnError::MissingBinary { .. }),
        "{error:?}"
    );
    assert_contains(&error.to_string(), "iris-no-such-claude-binary");

    let error = send("gone-dir").await;
    assert!(
        matches!(error, SpawnError::BadDirectory { .. }),
        "{error:?}"
    );

    for team in ["mute", "slow-start"] {
        let error = send(team).await;
        assert!(
            matches!(error, SpawnError::Timeout { .. }),
            "{team}: {error:?}"
        );
        assert_contains(&error.to_string(), "spawnTimeout");
    }
    assert_eq!(pool.status().live, 0);
    assert!(
        world.live_processes().is_empty(),
        "a failed spawn left a process behind"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_follow_grant_permission() {
    let mut world = World::new();
    world.team("yes", &[]).grant_permission = GrantPermission::Yes;
    world.team("no", &[]).grant_permission = GrantPermission::No;
    let ask = world.team("ask", &[]);
    ask.grant_permission = GrantPermission::Ask;
    // Nobody answers here: the request waits for a person, then is denied by the timeout.
    ask.approval_timeout = Some(Duration::from_millis(50));
    let pool = world.pool().await;
    for (team, allowed) in [("yes", true), ("no", false), ("ask", false)] {
        let pair = pool.pair("x", team).unwrap();
        let text = r#"[[tool:Bash:{"command":"touch made-by-tool"}]]"#.to_owned();
        let outcome = pool.send(&pair, text).await.unwrap();
        let file = world.path().join("teams").join(team).join("made-by-tool");
        assert_eq!(
            file.exists(),
            allowed,
            "{team}: file exists = {}",
            file.exists()
        );
        let decision = outcome
            .result
            .transcript
            .iter()
            .find_map(|entry| match entry {
                TranscriptEntry::Permission {
                    tool,
                    allowed,
                    reason,
                    ..
                } => Some((tool.clone(), *allowed, reason.clone())),
                _ => None,
            })
            .expect("permission decision in transcript");
        assert_eq!(decision.0, "Bash");
        assert_eq!(decision.1, allowed);
        if allowed {
            assert_contains(&outcome.result.answer, "allowed");
        } else {
            let reason = decision.2.unwrap();
            if team == "ask" {
                assert_contains(&reason, "approvalTimeout");
            } else {
                assert_contains(&reason, &format!("grantPermission: {team}"));
            }
            assert_contains(&outcome.result.answer, "denied");
        }
        assert!(
            outcome.result.transcript.iter().any(
                |entry| matches!(entry, TranscriptEntry::ToolUse { name, .. } if name == "Bash")
            )
        );
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_the_whole_group_even_when_sigterm_is_ignored() {
    iris::process::become_subreaper().unwrap();
    let mut world = World::new();
    world.team(
        "stubborn",
        &[
            ("FAKE_AGENT_IGNORE_SIGTERM", "1"),
            ("FAKE_AGENT_GRANDCHILDREN", "2"),
        ],
    );
    world.config.settings.stop_grace_period = Duration::from_millis(200);
    let pool = world.pool().await;
    let pair = pool.pair("x", "stubborn").unwrap();
    let grandchild = pool.send(&pair, "[[grandchild]]".to_owned()).await.unwrap();
    assert!(!grandchild.result.is_error);
    wait_for("agent and grandchildren running", || {
        world.live_processes().len() >= 4
    })
    .await;
    // A turn that ignores stdin close and interrupts, in a process that ignores SIGTERM:
    // only SIGKILL to the group ends it.
    let mut events = pool.subscribe();
    // Once its turn started, the turn is inside the process, not just queued.
    let hanging = submit_running(&pool, &pair, "[[hang]]").await;
    assert!(pool.sleep(&pair).await);
    let error = hanging.outcome().await.unwrap_err();
    assert!(
        matches!(&error, PoolError::Turn { source: TurnError::Exited { exit, .. }, .. } if exit.requested),
        "{error:?}"
    );
    let exited = wait_event(&mut events, "exit", |event| {
        matches!(event, PoolEvent::Exited { .. })
    })
    .await;
    let PoolEvent::Exited { reason, status, .. } = exited else {
        unreachable!()
    };
    assert_eq!(reason, ExitReason::Requested);
    assert_contains(&status, "SIGKILL");
    // No process of the group is left, not even as a zombie (we are their subreaper, and
    // the agent reaps the group).
    assert!(world.live_processes().is_empty());
    assert_eq!(common::zombie_children(), Vec::<u32>::new());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_idle_process_is_removed_at_once_and_idle_timeout_stops_processes() {
    let mut world = World::new();
    world.team("backend", &[]);
    world.team("sleepy", &[]).idle_timeout = Some(Duration::from_millis(200));
    let pool = world.pool().await;
    let pair = pool.pair("x", "backend").unwrap();
    let first = pool.send(&pair, "one".to_owned()).await.unwrap();
    let mut events = pool.subscribe();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exited = wait_event(&mut events, "crash noticed", |event| {
        matches!(event, PoolEvent::Exited { .. })
    })
    .await;
    assert!(matches!(
        exited,
        PoolEvent::Exited {
            reason: ExitReason::Crashed,
            ..
        }
    ));
    assert_eq!(pool.status().live, 0);
    assert_eq!(pool.status().pairs[0].state, PairState::Stopped);
    let next = pool.send(&pair, "two".to_owned()).await.unwrap();
    assert_eq!(next.result.answer, "fake answer #2: two");

    let sleepy = pool.pair("x", "sleepy").unwrap();
    pool.send(&sleepy, "one".to_owned()).await.unwrap();
    let exited = wait_event(
        &mut events,
        "idle stop",
        |event| matches!(event, PoolEvent::Exited { pair, .. } if pair.target.as_str() == "sleepy"),
    )
    .await;
    assert!(
        matches!(
            exited,
            PoolEvent::Exited {
                reason: ExitReason::Idle,
                ..
            }
        ),
        "{exited:?}"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_check_replaces_the_process() {
    let mut world = World::new();
    world.team("backend", &[]);
    world.config.settings.health_check_interval = Duration::from_millis(100);
    world.config.settings.spawn_timeout = Duration::from_millis(500);
    let pool = world.pool().await;
    let pair = pool.pair("x", "backend").unwrap();
    let first = pool.send(&pair, "one".to_owned()).await.unwrap();
    let mut events = pool.subscribe();
    // A healthy idle process passes checks; a frozen one fails them.
    let pid = nix::unistd::Pid::from_raw(first.pid.cast_signed());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    wait_event(&mut events, "unhealthy", |event| {
        matches!(event, PoolEvent::Unhealthy { .. })
    })
    .await;
    let ready = wait_event(&mut events, "replacement ready", |event| {
        matches!(event, PoolEvent::Ready { .. })
    })
    .await;
    let PoolEvent::Ready { pid: new_pid, .. } = ready else {
        unreachable!()
    };
    assert_ne!(new_pid, first.pid);
    let next = pool.send(&pair, "two".to_owned()).await.unwrap();
    assert_eq!(next.pid, new_pid);
    assert!(!next.cold);
    assert_eq!(next.result.answer, "fake answer #2: two");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_all_is_parallel_and_bounded() {
    let mut world = World::new();
    let teams = ["w1", "w2", "w3", "w4", "w5"];
    let gate = world.path().join("gate");
    for team in teams {
        world.team(
            team,
            &[("FAKE_AGENT_INIT_WAIT_FILE", gate.to_str().unwrap())],
        );
    }
    let pool = world.pool().await;
    let mut events = pool.subscribe();
    let pairs: Vec<_> = teams
        .iter()
        .map(|team| pool.pair("x", team).unwrap())
        .collect();
    let waking = tokio::spawn({
        let pool = pool.clone();
        async move { pool.wake_all(pairs, 3).await }
    });
    // Three processes start while none can become ready: the wakes run in parallel.
    wait_for("three agents started", || {
        teams
            .iter()
            .map(|team| world.starts(team).len())
            .sum::<usize>()
            == 3
    })
    .await;
    std::fs::write(&gate, b"open").unwrap();
    let results = waking.await.unwrap();
    assert_eq!(results.len(), 5);
    for (pair, result) in &results {
        assert!(result.is_ok(), "{pair}: {result:?}");
    }
    // Never more than three spawns in flight.
    let (mut in_flight, mut peak) = (0_i32, 0_i32);
    while let Ok(event) = events.try_recv() {
        match event {
            PoolEvent::Spawning { .. } => in_flight += 1,
            PoolEvent::Ready { .. } | PoolEvent::SpawnFailed { .. } => in_flight -= 1,
            _ => {}
        }
        peak = peak.max(in_flight);
    }
    assert_eq!(peak, 3);
    assert_eq!(pool.status().live, 5);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_invalid_names_are_refused() {
    let mut world = World::new();
    world.team("backend", &[]);
    world.team("frontend", &[]);
    let pool = world.pool().await;
    let error = pool.pair("x", "nope").unwrap_err();
    assert_contains(
        &error.to_string(),
        "unknown team 'nope'; known teams: backend, frontend",
    );
    let error = pool.pair("a/b", "backend").unwrap_err();
    assert!(matches!(
        error,
        PoolError::InvalidName { role: "caller", .. }
    ));
    let error = pool.pair("x", "$(rm -rf /)").unwrap_err();
    assert!(matches!(error, PoolError::UnknownTeam { .. }));
    // A typo of a team: a hint for a target, a refusal for a caller (it would silently start
    // a new pair); other caller names are free.
    let error = pool.pair("x", "backnd").unwrap_err();
    assert_contains(
        &error.to_string(),
        "unknown team 'backnd'; did you mean 'backend'? known teams: backend, frontend",
    );
    let error = pool.pair("frontned", "backend").unwrap_err();
    assert_contains(
        &error.to_string(),
        "unknown caller 'frontned'; did you mean 'frontend'?",
    );
    assert!(pool.pair("frontend", "backend").is_ok());
    assert!(pool.pair("a-person", "backend").is_ok());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_queued_messages_and_leaves_no_process() {
    let mut world = World::new();
    world.team("backend", &[("FAKE_AGENT_GRANDCHILDREN", "1")]);
    let pool = world.pool().await;
    let pair = pool.pair("x", "backend").unwrap();
    let mut events = pool.subscribe();
    let running = pool
        .submit(&pair, "[[slow:60000]]".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    let queued = pool
        .submit(&pair, "later".to_owned(), MessageMode::Ask)
        .await
        .unwrap();
    wait_event(&mut events, "turn started", |event| {
        matches!(event, PoolEvent::TurnStarted { .. })
    })
    .await;
    pool.shutdown().await;
    assert!(running.outcome().await.is_err());
    assert!(matches!(
        queued.outcome().await,
        Err(PoolError::ShuttingDown)
    ));
    assert!(matches!(
        pool.send(&pair, "after".to_owned()).await,
        Err(PoolError::ShuttingDown)
    ));
    assert!(world.live_processes().is_empty());
}
