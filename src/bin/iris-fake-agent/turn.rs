//! Running one user turn: the `system/init` → `assistant`… → [`user` tool results] →
//! `result` sequence, with the fault injection its directives ask for.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::directives::{self, Directives};
use crate::output::{
    emit, exit_now, iso_now, line_of, new_uuid, round_usd, short_id, write_chunks,
};
use crate::session::{Restored, SessionStore, TurnRecord};
use crate::{Config, DEAF, Shared, UserMsg, VERSION, args, spawn_sleeper};

/// Text of the synthetic API error of `[[error]]`.
const API_ERROR_TEXT: &str = "API Error: 500 fake failure";
/// The user line the real CLI emits after an interrupt.
const INTERRUPTED_TEXT: &str = "[Request interrupted by user]";
/// Pause between the pieces of a `[[split]]` result line.
const SPLIT_PAUSE: Duration = Duration::from_millis(10);
/// Filler of `[[huge:BYTES]]` lines.
const HUGE_PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Cumulative usage of one model in this process.
#[derive(Default)]
struct ModelUsage {
    input: u64,
    output: u64,
    cost: f64,
}

/// Runs turns one at a time and keeps the per-session counters.
pub(crate) struct Worker {
    sh: Arc<Shared>,
    store: SessionStore,
    /// Turns in the session history (restored + run here).
    history: u64,
    /// Cost restored from the session file.
    restored_cost: f64,
    /// Cost of this process's turns.
    process_cost: f64,
    /// Turns started by this process (matches `State::started`).
    seq: u64,
    model_usage: BTreeMap<String, ModelUsage>,
}

/// Per-turn context.
struct Turn {
    seq: u64,
    n: u64,
    t0: Instant,
    text: String,
    model: String,
    permission_mode: String,
    msg_id: String,
    request_id: String,
    input_tokens: u64,
    api_calls: u64,
    denials: Vec<Value>,
    uuid: Option<String>,
}

/// How a turn ended.
enum Outcome {
    Success { answer: String, split: bool },
    ApiError,
    Aborted,
}

/// A permission decision for one tool call.
enum Decision {
    Allow { input: Value, source: &'static str },
    Deny { message: String, interrupt: bool },
    Aborted,
}

/// A `command_lifecycle` line for a user message that carried a `uuid`.
pub(crate) fn lifecycle(cfg: &Config, command_uuid: &str, state: &str) -> Value {
    json!({
        "type": "command_lifecycle",
        "command_uuid": command_uuid,
        "state": state,
        "uuid": new_uuid(),
        "session_id": cfg.session_id,
    })
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    })
}

/// Deterministic token estimate for a text.
fn tokens(text: &str) -> u64 {
    u64::try_from(text.len() / 4)
        .unwrap_or(u64::MAX)
        .saturating_add(5)
}

impl Worker {
    /// A worker continuing from what the session file restored.
    pub(crate) fn new(sh: Arc<Shared>, store: SessionStore, restored: &Restored) -> Self {
        Self {
            sh,
            store,
            history: restored.turns,
            restored_cost: restored.cost,
            process_cost: 0.0,
            seq: 0,
            model_usage: BTreeMap::new(),
        }
    }

    fn cfg(&self) -> &Config {
        &self.sh.cfg
    }

    /// Runs one turn to its `result` (or to a deliberate exit / hang).
    pub(crate) fn run(&mut self, msg: UserMsg) {
        self.seq += 1;
        let d = directives::parse(&msg.text);
        let (model, permission_mode) = {
            let st = self.sh.lock();
            (st.model.clone(), st.permission_mode.clone())
        };
        let mut t = Turn {
            seq: self.seq,
            n: self.history + 1,
            t0: Instant::now(),
            input_tokens: tokens(&msg.text),
            text: msg.text,
            model,
            permission_mode,
            msg_id: format!("msg_fake{}", short_id()),
            request_id: format!("req_fake{}", short_id()),
            api_calls: 1,
            denials: Vec::new(),
            uuid: msg.uuid,
        };
        let cfg = self.cfg();
        if let Some(u) = &t.uuid {
            emit(&lifecycle(cfg, u, "started"));
        }
        if cfg.emit_session_state {
            emit(&self.session_state("running"));
        }
        for line in &d.stderr {
            eprintln!("{line}");
        }
        emit(&self.init_line(&t));
        if cfg.replay_user_messages {
            emit(&json!({
                "type": "user",
                "message": msg.message,
                "parent_tool_use_id": null,
                "session_id": cfg.session_id,
                "uuid": t.uuid.clone().unwrap_or_else(new_uuid),
                "timestamp": iso_now(),
                "isReplay": true,
            }));
        }
        let outcome = self.body(&mut t, &d);
        let cost = match outcome {
            Outcome::Success { .. } => d.cost.unwrap_or(cfg.turn_cost),
            Outcome::ApiError => d.cost.unwrap_or(0.0),
            Outcome::Aborted => 0.0,
        };
        self.finish(&t, outcome, cost);
        if let Some(code) = d.exit_after {
            exit_now(code, "exit-after");
        }
    }

    /// Everything between `system/init` and `result`.
    fn body(&self, t: &mut Turn, d: &Directives) -> Outcome {
        if self.interrupted(t.seq) {
            return Outcome::Aborted;
        }
        let grandchild = if d.grandchild {
            spawn_sleeper(Some(3600))
        } else {
            None
        };
        if d.garbage {
            write_chunks(
                &[
                    b"fake agent garbage: this line is not JSON\n",
                    b"{\"type\":\"assistant\",\"message\":{\"truncated\n",
                    b"{\"type\":\"mystery\",\"detail\":\"a message type no driver knows\"}\n",
                    b"\xff\xfe invalid UTF-8 \xc3\x28 here\n",
                    b"\n",
                ],
                Duration::ZERO,
            );
        }
        for text in &d.say {
            emit(&self.assistant(t, json!({"type": "text", "text": text}), 1));
        }
        if let Some(ms) = d.slow_ms
            && self.sleep_interruptible(t.seq, Duration::from_millis(ms))
        {
            return Outcome::Aborted;
        }
        if let Some(deaf) = d.hang {
            if deaf {
                DEAF.store(true, Ordering::SeqCst);
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let crash_code = if d.crash || self.cfg().crash_at_turn == Some(t.seq) {
            Some(3)
        } else {
            d.exit
        };
        if let Some(code) = crash_code {
            emit(&self.assistant(
                t,
                json!({"type": "text", "text": "fake partial answer before crash"}),
                1,
            ));
            exit_now(code, "crash");
        }
        if d.error {
            let mut line = self.assistant(t, json!({"type": "text", "text": API_ERROR_TEXT}), 0);
            line["message"]["model"] = json!("<synthetic>");
            line["isApiErrorMessage"] = json!(true);
            line["error"] = json!("unknown");
            emit(&line);
            return Outcome::ApiError;
        }

        let mut notes = Vec::new();
        for (name, input) in &d.tools {
            let tool_use_id = format!("toolu_fake{}", short_id());
            let tool_use =
                json!({"type": "tool_use", "id": tool_use_id, "name": name, "input": input});
            emit(&self.assistant(t, tool_use, tokens(&input.to_string())));
            match self.decide(t, name, input, &tool_use_id) {
                Decision::Aborted => return Outcome::Aborted,
                Decision::Allow { input, source } => {
                    let (content, is_error, result) = self.execute(name, &input);
                    emit(&self.tool_result(
                        &tool_use_id,
                        &content,
                        is_error,
                        result,
                        json!({"id": tool_use_id, "permission_decision": {"decision": "accept", "source": source}}),
                    ));
                    if name.starts_with("mcp__") {
                        notes.push(format!("tool {name} allowed: {content}"));
                    } else {
                        notes.push(format!("tool {name} allowed"));
                    }
                }
                Decision::Deny { message, interrupt } => {
                    emit(&self.tool_result(
                        &tool_use_id,
                        &message,
                        true,
                        json!(format!("Error: {message}")),
                        json!({
                            "id": tool_use_id,
                            "non_execution_kind": "permission-rule",
                            "permission_decision": {"decision": "reject", "source": "user_reject"},
                        }),
                    ));
                    t.denials.push(json!({
                        "tool_name": name,
                        "tool_use_id": tool_use_id,
                        "tool_input": input,
                    }));
                    notes.push(format!("tool {name} denied: {message}"));
                    if interrupt {
                        return Outcome::Aborted;
                    }
                }
            }
            // The answer comes from a new API call, hence a new message id.
            t.api_calls += 1;
            t.msg_id = format!("msg_fake{}", short_id());
            t.request_id = format!("req_fake{}", short_id());
        }

        if let Some(bytes) = d.huge {
            let mut line = self.assistant(t, json!({"type": "text", "text": ""}), 1);
            let base = line_of(&line).len().saturating_sub(1);
            let pad = bytes.saturating_sub(base);
            let text: String = HUGE_PATTERN
                .iter()
                .cycle()
                .take(pad)
                .map(|&b| char::from(b))
                .collect();
            line["message"]["content"][0]["text"] = json!(text);
            emit(&line);
        }

        let mut answer = match (&d.answer, notes.is_empty()) {
            (Some(a), _) => a.clone(),
            (None, false) => notes.join("; "),
            (None, true) => format!("fake answer #{}: {}", t.n, t.text),
        };
        if d.answer.is_none() {
            if let Some(pid) = grandchild {
                let _ = write!(answer, " [grandchild pid={pid}]");
            }
            if d.split && answer.is_ascii() {
                answer.push_str(" héllo ✓");
            }
        }
        emit(&self.assistant(t, json!({"type": "text", "text": answer}), tokens(&answer)));
        Outcome::Success {
            answer,
            split: d.split,
        }
    }

    /// Emits the `result`, records the turn and updates the counters.
    fn finish(&mut self, t: &Turn, outcome: Outcome, cost: f64) {
        let (input, output) = match &outcome {
            Outcome::Success { answer, .. } => (t.input_tokens, tokens(answer)),
            Outcome::ApiError | Outcome::Aborted => (0, 0),
        };
        self.process_cost += cost;
        let total = round_usd(self.restored_cost + self.process_cost);
        let mu = self.model_usage.entry(t.model.clone()).or_default();
        mu.input += input;
        mu.output += output;
        mu.cost = round_usd(mu.cost + cost);
        let model_usage: serde_json::Map<String, Value> = self
            .model_usage
            .iter()
            .map(|(m, u)| {
                (
                    m.clone(),
                    json!({
                        "inputTokens": u.input,
                        "outputTokens": u.output,
                        "cacheReadInputTokens": 0,
                        "cacheCreationInputTokens": 0,
                        "webSearchRequests": 0,
                        "costUSD": u.cost,
                        "contextWindow": 200_000,
                        "maxOutputTokens": 32_000,
                    }),
                )
            })
            .collect();
        self.sh.lock().total_cost = total;

        let elapsed = u64::try_from(t.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut result = json!({
            "type": "result",
            "subtype": "success",
            "is_error": false,
            "api_error_status": null,
            "duration_ms": elapsed,
            "duration_api_ms": elapsed,
            "num_turns": t.api_calls,
            "session_id": self.cfg().session_id,
            "total_cost_usd": total,
            "usage": usage(input, output),
            "modelUsage": model_usage,
            "model_usage_since_last_result": {
                t.model.clone(): {"inputTokens": input, "outputTokens": output, "costUSD": cost},
            },
            "permission_denials": t.denials,
            "terminal_reason": "completed",
            "stop_reason": "end_turn",
            "fast_mode_state": "off",
            "uuid": new_uuid(),
        });
        // Persist the turn before its result is visible, as a transcript written during the
        // turn would be: a host that kills the process right after the result loses nothing.
        let (recorded_answer, recorded_outcome) = match &outcome {
            Outcome::Success { answer, .. } => (answer.as_str(), "success"),
            Outcome::ApiError => (API_ERROR_TEXT, "error"),
            Outcome::Aborted => (INTERRUPTED_TEXT, "interrupted"),
        };
        self.store.record(&TurnRecord {
            n: t.n,
            text: &t.text,
            answer: recorded_answer,
            outcome: recorded_outcome,
            cost,
            model: &t.model,
            permission_mode: &t.permission_mode,
        });
        // The turn is over before its result is visible: an `interrupt` the host sends after
        // reading the result must target the next queued turn, not this finished one.
        {
            let mut st = self.sh.lock();
            if st.running == Some(t.seq) {
                st.running = None;
            }
            if st.interrupt_target == Some(t.seq) {
                st.interrupt_target = None;
            }
        }
        match &outcome {
            Outcome::Success { answer, split } => {
                result["result"] = json!(answer);
                let line = line_of(&result);
                if *split {
                    write_split(&line);
                } else {
                    write_chunks(&[&line], Duration::ZERO);
                }
            }
            Outcome::ApiError => {
                result["is_error"] = json!(true);
                result["result"] = json!(API_ERROR_TEXT);
                result["api_error_status"] = json!(500);
                result["terminal_reason"] = json!("api_error");
                result["stop_reason"] = Value::Null;
                emit(&result);
            }
            Outcome::Aborted => {
                emit(&json!({
                    "type": "user",
                    "message": {"role": "user", "content": [{"type": "text", "text": INTERRUPTED_TEXT}]},
                    "parent_tool_use_id": null,
                    "session_id": self.cfg().session_id,
                    "uuid": new_uuid(),
                    "timestamp": iso_now(),
                }));
                result["subtype"] = json!("error_during_execution");
                result["is_error"] = json!(true);
                result["terminal_reason"] = json!("aborted_streaming");
                result["stop_reason"] = Value::Null;
                result["model_usage_since_last_result"] = json!({});
                result["errors"] = json!([
                    "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"
                ]);
                emit(&result);
            }
        }
        self.history += 1;
        if let Some(u) = &t.uuid {
            emit(&lifecycle(self.cfg(), u, "completed"));
        }
        if self.cfg().emit_session_state && self.sh.lock().queue.is_empty() {
            emit(&self.session_state("idle"));
        }
    }

    fn session_state(&self, state: &str) -> Value {
        json!({
            "type": "system",
            "subtype": "session_state_changed",
            "state": state,
            "sdk_host_only": true,
            "uuid": new_uuid(),
            "session_id": self.cfg().session_id,
        })
    }

    fn init_line(&self, t: &Turn) -> Value {
        let cfg = self.cfg();
        json!({
            "type": "system",
            "subtype": "init",
            "cwd": cfg.cwd,
            "session_id": cfg.session_id,
            "tools": cfg.tools,
            "mcp_servers": cfg.mcp_servers,
            "model": t.model,
            "permissionMode": t.permission_mode,
            "slash_commands": [],
            "terminal_slash_commands": [],
            "apiKeySource": "none",
            "claude_code_version": VERSION,
            "output_style": "default",
            "agents": [],
            "skills": [],
            "plugins": [],
            "capabilities": [],
            "analytics_disabled": true,
            "product_feedback_disabled": true,
            "served_by_anthropic": false,
            "uuid": new_uuid(),
            "sandbox_enabled": false,
            "original_cwd": cfg.cwd,
            "additional_directories": [],
            "fast_mode_state": "off",
        })
    }

    /// An `assistant` line carrying exactly one content block.
    fn assistant(&self, t: &Turn, block: Value, output_tokens: u64) -> Value {
        json!({
            "type": "assistant",
            "message": {
                "id": t.msg_id,
                "type": "message",
                "role": "assistant",
                "model": t.model,
                "content": [block],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(t.input_tokens, output_tokens),
                "context_management": null,
            },
            "parent_tool_use_id": null,
            "session_id": self.cfg().session_id,
            "uuid": new_uuid(),
            "timestamp": iso_now(),
            "request_id": t.request_id,
        })
    }

    fn tool_result(
        &self,
        tool_use_id: &str,
        content: &str,
        is_error: bool,
        tool_use_result: Value,
        meta: Value,
    ) -> Value {
        json!({
            "type": "user",
            "message": {
                "role": "user",
                "content": [{
                    "tool_use_id": tool_use_id,
                    "type": "tool_result",
                    "content": content,
                    "is_error": is_error,
                }],
            },
            "parent_tool_use_id": null,
            "session_id": self.cfg().session_id,
            "uuid": new_uuid(),
            "timestamp": iso_now(),
            "tool_use_result": tool_use_result,
            "tool_result_meta": [meta],
        })
    }

    /// Whether an `interrupt` targets turn `seq`.
    fn interrupted(&self, seq: u64) -> bool {
        self.sh.lock().interrupt_target == Some(seq)
    }

    /// Sleeps `dur`; returns `true` early if turn `seq` is interrupted.
    fn sleep_interruptible(&self, seq: u64, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        let mut st = self.sh.lock();
        loop {
            if st.interrupt_target == Some(seq) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.sh.wait(st, Some(deadline - now));
        }
    }

    /// Decides a tool call: `--disallowedTools`, `--allowedTools` / bypass mode, no prompt
    /// tool (deny), else a `can_use_tool` request to the host.
    fn decide(&self, t: &Turn, name: &str, input: &Value, tool_use_id: &str) -> Decision {
        let cfg = self.cfg();
        if args::rules_match(&cfg.disallowed_tools, name) {
            return Decision::Deny {
                message: format!("Permission to use {name} has been denied."),
                interrupt: false,
            };
        }
        if args::rules_match(&cfg.allowed_tools, name) {
            return Decision::Allow {
                input: input.clone(),
                source: "config",
            };
        }
        if self.sh.lock().permission_mode == "bypassPermissions" {
            return Decision::Allow {
                input: input.clone(),
                source: "mode",
            };
        }
        if !cfg.prompt_via_stdio {
            return Decision::Deny {
                message: format!(
                    "Claude requested permissions to use {name}, but you haven't granted it yet."
                ),
                interrupt: false,
            };
        }

        let request_id = new_uuid();
        self.sh
            .lock()
            .permission_replies
            .insert(request_id.clone(), None);
        emit(&json!({
            "type": "control_request",
            "request_id": request_id,
            "request": {
                "subtype": "can_use_tool",
                "tool_name": name,
                "display_name": name,
                "input": input,
                "description": "fake tool call",
                "permission_suggestions": [],
                "tool_use_id": tool_use_id,
            },
        }));
        let mut st = self.sh.lock();
        let reply = loop {
            if st
                .permission_replies
                .get(&request_id)
                .is_some_and(Option::is_some)
            {
                break st.permission_replies.remove(&request_id).flatten();
            }
            if st.interrupt_target == Some(t.seq) {
                st.permission_replies.remove(&request_id);
                drop(st);
                emit(&json!({"type": "control_cancel_request", "request_id": request_id}));
                return Decision::Aborted;
            }
            if st.eof {
                st.permission_replies.remove(&request_id);
                return Decision::Deny {
                    message: "stdin closed before the permission request was answered".into(),
                    interrupt: false,
                };
            }
            st = self.sh.wait(st, None);
        };
        drop(st);
        let reply = reply.unwrap_or(Value::Null);
        if reply["subtype"] == "error" {
            return Decision::Deny {
                message: reply["error"]
                    .as_str()
                    .unwrap_or("permission request failed")
                    .to_string(),
                interrupt: false,
            };
        }
        let inner = &reply["response"];
        match inner["behavior"].as_str() {
            Some("allow") => Decision::Allow {
                input: inner
                    .get("updatedInput")
                    .filter(|v| v.is_object())
                    .cloned()
                    .unwrap_or_else(|| input.clone()),
                source: "user_temporary",
            },
            Some("deny") => Decision::Deny {
                message: inner["message"]
                    .as_str()
                    .unwrap_or("Permission denied")
                    .to_string(),
                interrupt: inner["interrupt"] == true,
            },
            _ => Decision::Deny {
                message: "invalid permission response".into(),
                interrupt: false,
            },
        }
    }

    /// "Runs" an allowed tool: only `Bash` with `touch <paths…>` does something (creates the
    /// files relative to the cwd). Returns (content, is_error, tool_use_result).
    fn execute(&self, name: &str, input: &Value) -> (String, bool, Value) {
        let ok = json!({
            "stdout": "",
            "stderr": "",
            "interrupted": false,
            "isImage": false,
            "noOutputExpected": true,
        });
        if name == "Bash"
            && let Some(paths) = input["command"]
                .as_str()
                .and_then(|c| c.trim_start().strip_prefix("touch "))
        {
            for p in paths.split_whitespace().filter(|p| !p.starts_with('-')) {
                let target = Path::new(&self.cfg().cwd).join(p);
                if let Err(e) = OpenOptions::new().create(true).append(true).open(&target) {
                    let msg = format!("touch: cannot touch '{p}': {e}");
                    return (msg.clone(), true, json!(format!("Error: {msg}")));
                }
            }
            return ("(Bash completed with no output)".into(), false, ok);
        }
        if let Some((server, tool)) = name
            .strip_prefix("mcp__")
            .and_then(|rest| rest.split_once("__"))
            && let Some((_, url)) = self.cfg().mcp_urls.iter().find(|(n, _)| n == server)
        {
            let (content, is_error) = call_mcp_tool(url, tool, input);
            return (content.clone(), is_error, json!(content));
        }
        (
            format!("(fake agent: {name} was allowed but not executed)"),
            false,
            ok,
        )
    }
}

/// Calls `tool` on the HTTP MCP server at `url`, as the real CLI does for an `mcp__…` tool:
/// the structured result as JSON text, and whether it is an error.
fn call_mcp_tool(url: &str, tool: &str, input: &Value) -> (String, bool) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return (format!("fake agent: no runtime for MCP: {e}"), true),
    };
    match runtime.block_on(iris::client::call_tool_raw(url, None, tool, input.clone())) {
        Ok((body, is_error)) => (body.to_string(), is_error),
        Err(e) => (format!("MCP call failed: {e}"), true),
    }
}

/// Writes a line in several flushed pieces, cutting inside multi-byte UTF-8 characters
/// (the first and the last one) and sending the newline on its own.
fn write_split(line: &[u8]) {
    let mut cuts = vec![line.len() / 3];
    if let Some(i) = line.iter().position(|&b| b >= 0xC0) {
        cuts.push(i + 1);
    }
    if let Some(i) = line.iter().rposition(|&b| b >= 0xC0) {
        cuts.push(i + 1);
        if line[i] >= 0xE0 {
            cuts.push(i + 2);
        }
    }
    cuts.push(line.len().saturating_sub(1));
    cuts.retain(|&c| c > 0 && c < line.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for c in cuts {
        chunks.push(&line[start..c]);
        start = c;
    }
    chunks.push(&line[start..]);
    write_chunks(&chunks, SPLIT_PAUSE);
}
