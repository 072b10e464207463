//! Approvals end to end: a real `iris serve`, the real Claude Code CLI as every team's agent
//! (offline, against the fake Messages API scripting its tool calls), MCP clients over
//! Streamable HTTP, and the `iris approvals`/`approve`/`deny` commands as a person types them.
//! At most two real-CLI test binaries run at once (`.config/nextest.toml`).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "e2e/support.rs"]
mod support;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_contains, call, iris_command, typed, wait_for, wait_for_blocking};
use iris::agent::TranscriptEntry;
use iris::api::{CallerStatus, MessageOutcome, MessageView, TeamStatusPage};
use iris::config::{GrantPermission, TeamConfig};
use iris::store::{ApprovalRecord, DecidedBy, Decision, MessageState, PairRuleRecord, now_ms};
use iris::testing::fake_api::ScriptEntry;
use rmcp::ServiceExt;
use rmcp::model::{
    ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability,
};
use rmcp::service::RequestContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ErrorData, RoleClient};
use serde_json::{Value, json};
use support::{RealWorld, connect, message, rules};

/// `ask_message` from `from` to `to` on `peer`, waiting for the answer.
async fn ask_on(
    peer: &rmcp::Peer<RoleClient>,
    from: &str,
    to: &str,
    message: &str,
) -> MessageOutcome {
    typed(
        &peer
            .call_tool(call(
                "ask_message",
                json!({"fromTeam": from, "toTeam": to, "message": message, "timeout": 120_000}),
            ))
            .await
            .unwrap(),
    )
}

fn write(path: &Path) -> String {
    format!(
        r#"write it [[tool:Write:{{"file_path":"{}","content":"from e2e"}}]]"#,
        path.display()
    )
}

fn touch(file: &str) -> String {
    format!(r#"please [[tool:Bash:{{"command":"touch {file}"}}]]"#)
}

/// The `iris` command of this world (its config and `IRIS_HOME`), run to the end: stdout,
/// or a panic with stderr.
fn iris(world: &RealWorld, args: &[&str]) -> String {
    let output = iris_command(
        Some(&world.dir.path().join("config.yaml")),
        &world.dir.path().join("iris"),
    )
    .args(args)
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "iris {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `iris approvals --json` (with `--all`: decided ones too).
fn approvals(world: &RealWorld, all: bool) -> Vec<ApprovalRecord> {
    let mut args = vec!["approvals", "--json"];
    if all {
        args.extend(["--all", "--limit", "100"]);
    }
    serde_json::from_str(&iris(world, &args)).unwrap()
}

/// Waits until exactly one request waits for a person, and returns it.
fn one_pending(world: &RealWorld) -> ApprovalRecord {
    let mut found = None;
    wait_for_blocking("a request waiting for a person", || {
        let mut pending = approvals(world, false);
        if pending.len() == 1 {
            found = pending.pop();
        }
        found.is_some()
    });
    found.unwrap()
}

/// The permission decisions of a message's transcript: (tool, allowed, by, who, reason).
fn decisions(
    transcript: &[TranscriptEntry],
) -> Vec<(String, bool, Option<DecidedBy>, String, String)> {
    transcript
        .iter()
        .filter_map(|entry| match entry {
            TranscriptEntry::Permission {
                tool,
                allowed,
                reason,
                by,
                who,
                ..
            } => Some((
                tool.clone(),
                *allowed,
                *by,
                who.clone().unwrap_or_default(),
                reason.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

fn team_dir(world: &RealWorld, team: &str) -> PathBuf {
    world.config.team(team).unwrap().path.clone()
}

/// Rules first (allow, deny beats allow), then `grantPermission: ask`: a person approves,
/// denies with a reason, allows always (and forgets it) through the `iris` command; a wait
/// for a person longer than `responseTimeout` (with health checks running) times nothing
/// out; an unanswered request is denied at `approvalTimeout` and the turn completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_decides_through_the_iris_command() {
    let mut world = RealWorld::new().await;
    world.config.settings.response_timeout = Duration::from_secs(3);
    world.config.settings.health_check_interval = Duration::from_millis(300);
    let team: &mut TeamConfig = world.team("backend");
    team.grant_permission = GrantPermission::Ask;
    team.permissions = rules(&["Write(notes/**)"], &["Write(notes/secret*)"]);
    let quiet = world.team("quiet");
    quiet.grant_permission = GrantPermission::Ask;
    quiet.approval_timeout = Some(Duration::from_millis(1500));
    let dir = team_dir(&world, "backend");
    let (_server, url) = world.serve();
    let client = connect(&url).await;
    let peer = client.peer().clone();

    // An allow rule: written, nobody asked although grantPermission is ask.
    let allowed = ask_on(&peer, "lead", "backend", &write(&dir.join("notes/a.md"))).await;
    assert_eq!(allowed.status, CallerStatus::Completed, "{allowed:?}");
    assert!(dir.join("notes/a.md").exists());
    assert!(approvals(&world, false).is_empty());
    // A deny rule beats an allow rule.
    let denied = ask_on(
        &peer,
        "lead",
        "backend",
        &write(&dir.join("notes/secret.md")),
    )
    .await;
    assert!(!dir.join("notes/secret.md").exists());
    assert_contains(denied.answer.as_deref().unwrap(), "permissions.deny");

    // No rule: a person decides. The caller waits; message_status and team_status show
    // the request.
    let asked = {
        let peer = peer.clone();
        let text = write(&dir.join("src/x.rs"));
        tokio::spawn(async move { ask_on(&peer, "lead", "backend", &text).await })
    };
    let pending = one_pending(&world);
    assert_eq!(pending.tool, "Write");
    assert_eq!(
        pending.input["file_path"],
        json!(dir.join("src/x.rs").display().to_string())
    );
    assert_eq!(pending.target.as_str(), "backend");
    let listed = iris(&world, &["approvals"]);
    assert_contains(&listed, &pending.id[..8]);
    assert_contains(&listed, "iris approve ID");
    let id = pending.message_id.unwrap().to_string();
    let view = message(&client, "lead", &id).await;
    assert_eq!(view.state, MessageState::Running);
    assert_eq!(view.pending_approvals.len(), 1, "{view:?}");
    assert_eq!(view.pending_approvals[0].id, pending.id);
    assert_contains(&view.pending_approvals[0].summary, "src/x.rs");
    let status: TeamStatusPage = typed(
        &client
            .call_tool(call(
                "team_status",
                json!({"fromTeam": "lead", "team": "backend"}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(status.teams[0].pending_approvals.len(), 1, "{status:?}");
    // The person takes longer than responseTimeout (3 s), with health checks every 300 ms:
    // neither touches the waiting turn.
    wait_for(
        "the request to wait longer than twice responseTimeout",
        || now_ms() - pending.created_at_ms > 6_500,
    )
    .await;
    let said = iris(&world, &["approve", &pending.id[..8]]);
    assert_contains(&said, "allowed");
    let outcome = asked.await.unwrap();
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert!(dir.join("src/x.rs").exists());
    let done = message(&client, "lead", &id).await;
    assert!(done.pending_approvals.is_empty());
    let decided = decisions(&done.transcript);
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0].2, Some(DecidedBy::Person));
    assert_contains(&decided[0].3, "a person through the iris command");

    // Denied with a reason: no file; the reason is in the transcript and in the model's next
    // request.
    let asked = {
        let peer = peer.clone();
        let text = write(&dir.join("src/y.rs"));
        tokio::spawn(async move { ask_on(&peer, "lead", "backend", &text).await })
    };
    let pending = one_pending(&world);
    let said = iris(
        &world,
        &["deny", &pending.id, "--reason", "src is frozen today"],
    );
    assert_contains(&said, "denied");
    let outcome = asked.await.unwrap();
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert!(!dir.join("src/y.rs").exists());
    assert_contains(outcome.answer.as_deref().unwrap(), "src is frozen today");
    let view = message(&client, "lead", &outcome.message_id.to_string()).await;
    assert_contains(&decisions(&view.transcript)[0].4, "src is frozen today");
    assert!(
        world
            .api
            .messages_calls()
            .iter()
            .any(|call| call.body.to_string().contains("src is frozen today")),
        "the model's next request carries the reason"
    );
    // Deciding it again is refused, naming the id.
    let again = iris_command(
        Some(&world.dir.path().join("config.yaml")),
        &world.dir.path().join("iris"),
    )
    .args(["approve", &pending.id])
    .output()
    .unwrap();
    assert!(!again.status.success());
    assert_contains(
        &String::from_utf8_lossy(&again.stderr),
        "no pending approval",
    );

    // Allowed always: the same request next turn is not asked.
    let asked = {
        let peer = peer.clone();
        tokio::spawn(async move { ask_on(&peer, "lead", "backend", &touch("made-always")).await })
    };
    let pending = one_pending(&world);
    let said = iris(&world, &["approve", &pending.id, "--always"]);
    assert_contains(&said, "from now on");
    assert_eq!(asked.await.unwrap().status, CallerStatus::Completed);
    assert!(dir.join("made-always").exists());
    std::fs::remove_file(dir.join("made-always")).unwrap();
    let rules: Vec<PairRuleRecord> =
        serde_json::from_str(&iris(&world, &["approvals", "rules", "--json"])).unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].caller.as_str(), "lead");
    let again = ask_on(&peer, "lead", "backend", &touch("made-always")).await;
    assert_eq!(again.status, CallerStatus::Completed, "{again:?}");
    assert!(dir.join("made-always").exists(), "allowed without asking");
    let view = message(&client, "lead", &again.message_id.to_string()).await;
    let decided = decisions(&view.transcript);
    assert_eq!(decided[0].2, Some(DecidedBy::Rule), "{decided:?}");
    assert_contains(&decided[0].3, "always for this pair");
    // Forgotten: asked again.
    let forgot = iris(&world, &["approvals", "forget", &rules[0].id[..8]]);
    assert_contains(&forgot, "forgot");
    assert_contains(
        &iris(&world, &["approvals", "rules"]),
        "no allow-always rules",
    );

    // Nobody answers: denied at approvalTimeout, and the turn completes.
    let quiet_dir = team_dir(&world, "quiet");
    let unanswered = ask_on(&peer, "lead", "quiet", &touch("never-made")).await;
    assert_eq!(unanswered.status, CallerStatus::Completed, "{unanswered:?}");
    assert!(!quiet_dir.join("never-made").exists());
    assert_contains(unanswered.answer.as_deref().unwrap(), "approvalTimeout");

    // The record: every decision, who made it, the input.
    let all = approvals(&world, true);
    let by = |by: DecidedBy| {
        all.iter()
            .filter(|record| record.decided_by == Some(by))
            .count()
    };
    assert!(by(DecidedBy::Rule) >= 3, "{all:#?}");
    assert_eq!(by(DecidedBy::Person), 3, "{all:#?}");
    assert_eq!(by(DecidedBy::Timeout), 1, "{all:#?}");
    let timed_out = all
        .iter()
        .find(|record| record.decided_by == Some(DecidedBy::Timeout))
        .unwrap();
    assert_eq!(timed_out.decision, Some(Decision::Deny));
    assert_eq!(timed_out.input["command"], json!("touch never-made"));
    assert!(all.iter().all(|record| !record.is_pending()));
    // session_report carries each message's decisions: who, when, the input.
    let report: iris::api::ReportPage = typed(
        &client
            .call_tool(call(
                "session_report",
                json!({"fromTeam": "lead", "team": "backend", "limit": 20}),
            ))
            .await
            .unwrap(),
    );
    let denied_y = report
        .messages
        .iter()
        .flat_map(|message| &message.approvals)
        .find(|record| {
            record.decided_by == Some(DecidedBy::Person) && record.decision == Some(Decision::Deny)
        })
        .expect("the person's denial in the report");
    assert_eq!(
        denied_y.input["file_path"],
        json!(dir.join("src/y.rs").display().to_string())
    );
    assert!(denied_y.decided_at_ms.is_some());

    client.cancel().await.unwrap();
}

/// One scripted answer of a person at an MCP client.
#[derive(Clone)]
enum Reply {
    Accept(Value),
    Decline,
}

/// An MCP client that declares elicitation, answers each question with the next scripted
/// reply, and keeps the questions.
#[derive(Clone, Default)]
struct Person {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    questions: Arc<Mutex<Vec<String>>>,
}

impl Person {
    fn will(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    fn asked(&self) -> usize {
        self.questions.lock().unwrap().len()
    }
}

impl rmcp::ClientHandler for Person {
    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.capabilities.elicitation = Some(ElicitationCapability::default());
        info
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = request {
            self.questions.lock().unwrap().push(message);
        }
        let reply = self.replies.lock().unwrap().pop_front();
        Ok(match reply {
            Some(Reply::Accept(content)) => {
                ElicitResult::new(ElicitationAction::Accept).with_content(content)
            }
            Some(Reply::Decline) | None => ElicitResult::new(ElicitationAction::Decline),
        })
    }
}

/// `grantPermission: forward`: the caller's person decides through elicitation on the
/// caller's own connection (allow, decline, allow always); a request of an agent called by
/// another agent goes up the chain to the first connection that can elicit; a caller that
/// cannot elicit leaves it to a person at Iris (`forwardFallback: ask`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_reach_the_callers_person() {
    let mut world = RealWorld::new().await;
    world.team("b");
    world.team("c").grant_permission = GrantPermission::Forward;
    world.team("d").grant_permission = GrantPermission::Forward;
    let c_dir = team_dir(&world, "c");
    let d_dir = team_dir(&world, "d");
    let (_server, url) = world.serve();
    let person = Person::default();
    let client = person
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(url.clone()))
        .await
        .unwrap();
    let peer = client.peer().clone();

    // Allow.
    person.will(Reply::Accept(json!({"decision": "allow"})));
    let allowed = ask_on(&peer, "a", "c", &touch("made-1")).await;
    assert_eq!(allowed.status, CallerStatus::Completed, "{allowed:?}");
    assert!(c_dir.join("made-1").exists());
    assert_eq!(person.asked(), 1);
    let question = person.questions.lock().unwrap()[0].clone();
    assert_contains(&question, "Team 'c'");
    assert_contains(&question, "touch made-1");
    let view: MessageView = typed(
        &client
            .call_tool(call(
                "message_status",
                json!({"fromTeam": "a", "messageId": allowed.message_id.to_string()}),
            ))
            .await
            .unwrap(),
    );
    let decided = decisions(&view.transcript);
    assert_eq!(decided[0].2, Some(DecidedBy::Caller), "{decided:?}");
    assert_contains(&decided[0].3, "caller 'a' through MCP elicitation");

    // Decline.
    person.will(Reply::Decline);
    let declined = ask_on(&peer, "a", "c", &touch("made-2")).await;
    assert_eq!(declined.status, CallerStatus::Completed, "{declined:?}");
    assert!(!c_dir.join("made-2").exists());
    assert_contains(declined.answer.as_deref().unwrap(), "declined");

    // Allow always: the same request is not asked again.
    person.will(Reply::Accept(json!({"decision": "allow_always"})));
    let always = ask_on(&peer, "a", "c", &touch("made-3")).await;
    assert_eq!(always.status, CallerStatus::Completed, "{always:?}");
    std::fs::remove_file(c_dir.join("made-3")).unwrap();
    let rules: Vec<PairRuleRecord> =
        serde_json::from_str(&iris(&world, &["approvals", "rules", "--json"])).unwrap();
    assert_eq!(rules.len(), 1, "{rules:?} {:#?}", approvals(&world, true));
    let asked = person.asked();
    let again = ask_on(&peer, "a", "c", &touch("made-3")).await;
    assert_eq!(again.status, CallerStatus::Completed, "{again:?}");
    assert!(
        c_dir.join("made-3").exists(),
        "{again:?} {rules:?} {:#?}",
        approvals(&world, true)
    );
    assert_eq!(person.asked(), asked, "not asked again");

    // A chain of agents: a asks b, b's agent asks c, c's agent asks d (each through its
    // own agent URL, each started while the call before it waits); d's request goes up the
    // chain to a's connection. Each prompt holds the next one's text, so each takes its own
    // script entry in order.
    for (matches, directives) in [
        ("ask C", "[[usage:12:5]]".to_owned()),
        (
            "relay to D",
            format!(
                "[[tool:mcp__iris__send_message:{}]]",
                json!({"toTeam": "d", "message": "chain job"})
            ),
        ),
        (
            "chain job",
            r#"[[tool:Bash:{"command":"touch made-by-chain"}]]"#.to_owned(),
        ),
    ] {
        world.api.script(ScriptEntry {
            matches: Some(matches.to_owned()),
            directives,
        });
    }
    // c is `forward` too: its own call to d is asked first.
    person.will(Reply::Accept(json!({"decision": "allow"})));
    person.will(Reply::Accept(json!({"decision": "allow"})));
    let relay = json!({"toTeam": "c", "message": "relay to D"});
    let chained = ask_on(
        &peer,
        "a",
        "b",
        &format!("ask C [[tool:mcp__iris__send_message:{relay}]]"),
    )
    .await;
    assert_eq!(chained.status, CallerStatus::Completed, "{chained:?}");
    assert!(d_dir.join("made-by-chain").exists(), "{chained:?}");
    // C's answer carries D's, which carries the tool's result.
    assert_contains(
        chained.answer.as_deref().unwrap(),
        "fake answer to: chain job",
    );
    let questions = person.questions.lock().unwrap().clone();
    let [.., c_asks, d_asks] = questions.as_slice() else {
        panic!("{questions:?}");
    };
    assert_contains(
        c_asks,
        "Team 'c' (working for 'b') wants to use mcp__iris__send_message",
    );
    assert_contains(d_asks, "Team 'd' (working for 'c')");
    assert_contains(d_asks, "touch made-by-chain");

    // A caller that cannot elicit: the request waits for a person at Iris.
    let plain = connect(&url).await;
    let plain_peer = plain.peer().clone();
    let asked = tokio::spawn(async move { ask_on(&plain_peer, "z", "c", &touch("made-4")).await });
    let pending = one_pending(&world);
    assert_eq!(pending.caller.as_str(), "z");
    iris(&world, &["approve", &pending.id]);
    assert_eq!(asked.await.unwrap().status, CallerStatus::Completed);
    assert!(c_dir.join("made-4").exists());

    plain.cancel().await.unwrap();
    client.cancel().await.unwrap();
}

/// Iris killed while a request waits: after the restart the message is `interrupted` and
/// the request `expired`; nothing is re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_pending_approval_expires_it() {
    let mut world = RealWorld::new().await;
    world.team("backend").grant_permission = GrantPermission::Ask;
    let dir = team_dir(&world, "backend");
    let (mut server, url) = world.serve();
    let client = connect(&url).await;
    client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "lead", "toTeam": "backend", "message": touch("made-after-kill"), "timeout": 0}),
        ))
        .await
        .unwrap();
    let pending = one_pending(&world);
    let _ = client.cancel().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id().cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    server.0.wait().unwrap();
    wait_for("every claude process to be gone", || {
        world.live_processes().is_empty()
    })
    .await;

    let (_server, url) = world.serve();
    let client = connect(&url).await;
    let view = message(&client, "lead", &pending.message_id.unwrap().to_string()).await;
    assert_eq!(view.state, MessageState::Interrupted, "{view:?}");
    assert!(view.pending_approvals.is_empty());
    let all = approvals(&world, true);
    let expired = all.iter().find(|record| record.id == pending.id).unwrap();
    assert_eq!(expired.decision, Some(Decision::Expired));
    assert_eq!(expired.decided_by, Some(DecidedBy::Restart));
    assert!(approvals(&world, false).is_empty());
    assert!(!dir.join("made-after-kill").exists());
    client.cancel().await.unwrap();
}

/// The dashboard with the real CLI: a pending approval is allowed with a click in a real
/// browser and the agent's file is written; a denial with a reason typed on the page reaches
/// the agent and the transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_decides_for_the_real_cli() {
    let mut world = RealWorld::new().await;
    world.team("backend").grant_permission = GrantPermission::Ask;
    let dir = team_dir(&world, "backend");
    let (_server, url) = world.serve();
    // Logged in as a person: the link `iris dashboard` prints.
    let link = iris(&world, &["dashboard"]);
    let page = browser::Browser::start().await;
    page.goto(link.trim()).await;
    page.wait_until(
        "the page live",
        "document.querySelector('#live').textContent === 'live'",
    )
    .await;
    page.click("#tabs button[data-view=approvals]").await;
    let client = connect(&url).await;

    let peer = client.peer().clone();
    let allowed =
        tokio::spawn(
            async move { ask_on(&peer, "lead", "backend", &touch("made-by-click")).await },
        );
    page.wait_until(
        "a pending approval a person can decide",
        "document.querySelector('[data-approval] button.allow:not([disabled])')",
    )
    .await;
    let shown = page
        .eval("document.querySelector('[data-approval]').textContent")
        .await;
    assert_contains(shown.as_str().unwrap(), "touch made-by-click");
    page.click("[data-approval] button.allow").await;
    let outcome = allowed.await.unwrap();
    assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    assert!(dir.join("made-by-click").exists());
    let view = message(&client, "lead", &outcome.message_id.to_string()).await;
    let decided = decisions(&view.transcript);
    assert_eq!(decided[0].2, Some(DecidedBy::Person), "{decided:?}");
    assert_contains(&decided[0].3, "the dashboard");

    let peer = client.peer().clone();
    let denied =
        tokio::spawn(
            async move { ask_on(&peer, "lead", "backend", &touch("refused-by-click")).await },
        );
    page.wait_until(
        "a second approval",
        "document.querySelectorAll('[data-approval]').length === 1",
    )
    .await;
    page.type_into("[data-approval] input.reason", "use the Makefile instead")
        .await;
    page.click("[data-approval] button.deny").await;
    let outcome = denied.await.unwrap();
    assert!(!dir.join("refused-by-click").exists());
    let view = message(&client, "lead", &outcome.message_id.to_string()).await;
    let decided = decisions(&view.transcript);
    assert!(
        decided
            .iter()
            .any(|(_, allowed, _, _, reason)| !allowed
                && reason.contains("use the Makefile instead")),
        "{decided:?}"
    );
    page.assert_clean();
    client.cancel().await.unwrap();
}
