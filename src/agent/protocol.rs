//! Claude Code's stream-json wire format: what Iris writes to an agent's stdin and how it
//! reads the lines on its stdout. Only this module knows the JSON shapes; the actor works on
//! [`Incoming`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One parsed stdout line, classified by what the driver must do with it.
#[derive(Debug)]
pub enum Incoming {
    /// The answer to a control request Iris sent.
    ControlResponse {
        /// The id Iris chose.
        request_id: String,
        /// The response payload, or the error text.
        outcome: Result<Value, String>,
    },
    /// A request from the CLI that Iris must answer (`can_use_tool`, hooks, ...).
    ControlRequest {
        /// The CLI's id, echoed in the answer.
        request_id: String,
        /// `request.subtype`.
        subtype: String,
        /// The whole `request` object.
        request: Value,
    },
    /// The CLI withdrew a control request (nothing to answer).
    ControlCancel {
        /// The request it withdraws.
        request_id: String,
    },
    /// `system` lines (`init`, `status`, `api_retry`, ...).
    System,
    /// `command_lifecycle`: a user message Iris sent (with a `uuid`) was queued, started or
    /// completed. Nothing to do.
    Lifecycle,
    /// An assistant message: one content block per line in practice.
    Assistant {
        /// Its text blocks, joined ([`assistant_text`]).
        text: Option<String>,
        /// Its `tool_use` blocks ([`tool_uses`]).
        tool_uses: Vec<(String, Value)>,
    },
    /// A user message echoed by the CLI: tool results, interrupt notices.
    User {
        /// Its `tool_result` blocks ([`tool_results`]).
        tool_results: Vec<(String, bool)>,
    },
    /// The end of a turn.
    Result(ResultLine),
    /// A valid JSON line of a type this driver does not know: logged and passed on.
    Unknown(String),
}

/// Reads one stdout line. Most lines of a turn (`system`, `assistant`, `result`) are read
/// into typed structs that skip, without building them, the fields Iris does not keep (the
/// `init` line lists every tool and server); the rest, and any line whose shape the typed
/// read does not take, go through a [`Value`] and [`classify`], with the same result. One
/// difference, on purpose: what the typed read skips is only scanned, so a line whose
/// skipped fields hold what a `Value` refuses (a lone UTF-16 surrogate escape, bytes that
/// are not UTF-8, nesting deeper than 128) is still read, where the `Value` reading
/// skipped the whole line.
///
/// # Errors
/// The line is not JSON.
pub fn read(line: &[u8]) -> Result<Incoming, serde_json::Error> {
    let typed = serde_json::from_slice::<Obj<Head<'_>>>(line)
        .ok()
        .and_then(|Obj(head)| match head.kind.as_ref() {
            "system" => Some(Incoming::System),
            "command_lifecycle" => Some(Incoming::Lifecycle),
            "assistant" => serde_json::from_slice::<Obj<AssistantWire<'_>>>(line)
                .ok()
                .map(|Obj(wire)| wire.into_incoming()),
            "result" => serde_json::from_slice::<Obj<ResultWire>>(line)
                .ok()
                .map(|Obj(wire)| Incoming::Result(wire.into_result())),
            _ => None,
        });
    match typed {
        Some(incoming) => Ok(incoming),
        None => Ok(classify(&serde_json::from_slice::<Value>(line)?)),
    }
}

/// A JSON object read as `T`. Derived structs also take an array of their fields in order;
/// the `Value` reading does not, so neither does the typed read.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visit(std::marker::PhantomData))
            .map(Obj)
    }
}

/// A line's `type`, and nothing else of it.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
}

/// What Iris reads of an `assistant` line.
#[derive(Deserialize)]
struct AssistantWire<'a> {
    #[serde(borrow)]
    message: Option<Obj<MessageWire<'a>>>,
}

#[derive(Deserialize)]
struct MessageWire<'a> {
    #[serde(borrow)]
    content: Option<Vec<Obj<BlockWire<'a>>>>,
}

#[derive(Deserialize)]
struct BlockWire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    name: Option<String>,
    input: Option<Value>,
}

impl AssistantWire<'_> {
    fn into_incoming(self) -> Incoming {
        let blocks = self
            .message
            .and_then(|Obj(message)| message.content)
            .unwrap_or_default();
        let mut text: Option<String> = None;
        let mut tool_uses = Vec::new();
        for Obj(block) in blocks {
            match block.kind.as_deref() {
                Some("text") => {
                    if let Some(part) = block.text {
                        text.get_or_insert_with(String::new).push_str(&part);
                    }
                }
                Some("tool_use") => tool_uses.push((
                    block.name.unwrap_or_default(),
                    block.input.unwrap_or(Value::Null),
                )),
                _ => {}
            }
        }
        Incoming::Assistant { text, tool_uses }
    }
}

/// What Iris reads of a `result` line ([`ResultLine`]).
#[derive(Deserialize)]
struct ResultWire {
    result: Option<String>,
    is_error: Option<bool>,
    subtype: Option<String>,
    terminal_reason: Option<String>,
    duration_ms: Option<u64>,
    num_turns: Option<u64>,
    session_id: Option<String>,
    total_cost_usd: Option<f64>,
    model_usage_since_last_result: Option<serde_json::Map<String, Value>>,
    // Present (even as `null`) or not, as the `Value` reading keeps it.
    #[serde(default, deserialize_with = "present")]
    usage: Option<Value>,
    errors: Option<Vec<Value>>,
}

fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(value).map(Some)
}

impl ResultWire {
    fn into_result(self) -> ResultLine {
        ResultLine {
            text: self.result,
            is_error: self.is_error.unwrap_or(false),
            subtype: self.subtype.unwrap_or_default(),
            terminal_reason: self.terminal_reason,
            duration_ms: self.duration_ms,
            num_turns: self.num_turns,
            session_id: self.session_id,
            total_cost_usd: self.total_cost_usd,
            cost_since_last_result: self.model_usage_since_last_result.map(|models| {
                models
                    .values()
                    .filter_map(|usage| usage.get("costUSD").and_then(Value::as_f64))
                    .sum::<f64>()
            }),
            usage: self.usage,
            errors: self.errors.map(|errors| join_errors(&errors)),
        }
    }
}

fn join_errors(errors: &[Value]) -> String {
    errors
        .iter()
        .map(|error| {
            error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Classifies a parsed line.
#[must_use]
pub fn classify(line: &Value) -> Incoming {
    let kind = line.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "control_response" => {
            let response = line.get("response").unwrap_or(&Value::Null);
            let request_id = string_field(response, "request_id");
            let outcome = if response.get("subtype").and_then(Value::as_str) == Some("success") {
                Ok(response.get("response").cloned().unwrap_or(Value::Null))
            } else {
                Err(response
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("control request failed without a message")
                    .to_owned())
            };
            Incoming::ControlResponse {
                request_id,
                outcome,
            }
        }
        "control_request" => {
            let request = line.get("request").cloned().unwrap_or(Value::Null);
            Incoming::ControlRequest {
                request_id: string_field(line, "request_id"),
                subtype: string_field(&request, "subtype"),
                request,
            }
        }
        "control_cancel_request" => Incoming::ControlCancel {
            request_id: string_field(line, "request_id"),
        },
        "system" => Incoming::System,
        "command_lifecycle" => Incoming::Lifecycle,
        "assistant" => Incoming::Assistant {
            text: assistant_text(line),
            tool_uses: tool_uses(line),
        },
        "user" => Incoming::User {
            tool_results: tool_results(line),
        },
        "result" => Incoming::Result(result_line(line)),
        other => Incoming::Unknown(other.to_owned()),
    }
}

/// Whether a raw stdout line is a `command_lifecycle` line, known without parsing it: the
/// CLI (and the fake agent) write `type` first. A line written otherwise is parsed and
/// classified as [`Incoming::Lifecycle`] all the same.
#[must_use]
pub fn is_lifecycle(line: &[u8]) -> bool {
    line.starts_with(br#"{"type":"command_lifecycle""#)
}

fn string_field(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Serializes `value` as one NDJSON line.
fn to_line(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// A user turn. `uuid` becomes the message's id in the conversation: the one
/// [`rewind_conversation`] names to take the turn back.
#[must_use]
pub fn user_message(text: &str, uuid: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct UserLine<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message: UserMessage<'a>,
        parent_tool_use_id: Option<()>,
        session_id: &'static str,
        uuid: &'a str,
    }
    #[derive(Serialize)]
    struct UserMessage<'a> {
        role: &'static str,
        content: &'a str,
    }
    // A struct of strings always serializes.
    let mut line = serde_json::to_vec(&UserLine {
        kind: "user",
        message: UserMessage {
            role: "user",
            content: text,
        },
        parent_tool_use_id: None,
        session_id: "",
        uuid,
    })
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Asks the CLI to cut its conversation back to just before the user message `uuid`: that
/// prompt and everything after it are gone from the model's context and from the session
/// file (a later `--resume` does not bring them back). The answer's `rewound` says whether
/// it was done ([`rewound`]).
#[must_use]
pub fn rewind_conversation(request_id: &str, uuid: &str) -> Vec<u8> {
    to_line(&json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "rewind_conversation", "target_message_uuid": uuid},
    }))
}

/// Reads the answer to [`rewind_conversation`]: `Ok(())` if the conversation was cut, else
/// why not (the CLI's `error` or `reason`, or the error answer of a CLI that does not know
/// the request).
///
/// # Errors
///
/// The reason the conversation was not cut.
pub fn rewound(outcome: Result<Value, String>) -> Result<(), String> {
    let response = outcome?;
    if response.get("rewound").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    Err(["error", "reason"]
        .iter()
        .find_map(|key| response.get(*key).and_then(Value::as_str))
        .unwrap_or("the agent did not say why")
        .to_owned())
}

/// A control request of `subtype` with extra fields.
#[must_use]
pub fn control_request(request_id: &str, subtype: &str) -> Vec<u8> {
    to_line(&json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": subtype},
    }))
}

/// A successful answer to a control request of the CLI.
#[must_use]
pub fn control_success(request_id: &str, response: Value) -> Vec<u8> {
    to_line(&json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }))
}

/// An error answer to a control request of the CLI.
#[must_use]
pub fn control_error(request_id: &str, error: &str) -> Vec<u8> {
    to_line(&json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    }))
}

/// The answer that allows a `can_use_tool` request, with the input unchanged.
#[must_use]
pub fn permission_allow(request: &Value) -> Value {
    json!({
        "behavior": "allow",
        "updatedInput": request.get("input").cloned().unwrap_or_else(|| json!({})),
        "toolUseID": request.get("tool_use_id").cloned().unwrap_or(Value::Null),
    })
}

/// The answer that denies a `can_use_tool` request with `message`.
#[must_use]
pub fn permission_deny(request: &Value, message: &str) -> Value {
    json!({
        "behavior": "deny",
        "message": message,
        "toolUseID": request.get("tool_use_id").cloned().unwrap_or(Value::Null),
    })
}

/// The text blocks of an assistant line, joined.
#[must_use]
pub fn assistant_text(line: &Value) -> Option<String> {
    let blocks = line.pointer("/message/content")?.as_array()?;
    let text: Vec<&str> = blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect();
    (!text.is_empty()).then(|| text.concat())
}

/// The `tool_use` blocks of an assistant line: `(name, input)`.
#[must_use]
pub fn tool_uses(line: &Value) -> Vec<(String, Value)> {
    let Some(blocks) = line.pointer("/message/content").and_then(Value::as_array) else {
        return Vec::new();
    };
    blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("tool_use"))
        .map(|block| {
            (
                string_field(block, "name"),
                block.get("input").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The `tool_result` blocks of a user line: `(content as text, is_error)`.
#[must_use]
pub fn tool_results(line: &Value) -> Vec<(String, bool)> {
    let Some(blocks) = line.pointer("/message/content").and_then(Value::as_array) else {
        return Vec::new();
    };
    blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(tool_result)
        .collect()
}

/// One `tool_result` block (of the Messages API and of the CLI's user lines alike): its
/// content as text (text parts joined by newlines), and whether it is an error.
#[must_use]
pub fn tool_result(block: &Value) -> (String, bool) {
    let content = match block.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let is_error = block
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    (content, is_error)
}

/// The fields of a `result` line that Iris keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultLine {
    /// `result`: the final text (absent on some error subtypes).
    pub text: Option<String>,
    /// `is_error`: API errors arrive as `subtype: success` with this set.
    pub is_error: bool,
    /// `subtype`: `success`, `error_during_execution`, `error_max_turns`, ...
    pub subtype: String,
    /// `terminal_reason`: `completed`, `aborted_streaming`, `api_error`, ...
    pub terminal_reason: Option<String>,
    /// `duration_ms` as the CLI measured it.
    pub duration_ms: Option<u64>,
    /// `num_turns`: model round trips inside this turn.
    pub num_turns: Option<u64>,
    /// `session_id`.
    pub session_id: Option<String>,
    /// `total_cost_usd`: cumulative for the process (and restored on resume).
    pub total_cost_usd: Option<f64>,
    /// The sum of `model_usage_since_last_result.*.costUSD`: this turn's cost, when the CLI
    /// reports it (2.1.332 does).
    pub cost_since_last_result: Option<f64>,
    /// `usage`, as sent.
    pub usage: Option<Value>,
    /// `errors`, joined, for error subtypes.
    pub errors: Option<String>,
}

/// Reads a `result` line.
#[must_use]
pub fn result_line(line: &Value) -> ResultLine {
    let cost_since_last_result = line
        .get("model_usage_since_last_result")
        .and_then(Value::as_object)
        .map(|models| {
            models
                .values()
                .filter_map(|usage| usage.get("costUSD").and_then(Value::as_f64))
                .sum::<f64>()
        });
    let errors = line
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| join_errors(errors));
    ResultLine {
        text: line
            .get("result")
            .and_then(Value::as_str)
            .map(str::to_owned),
        is_error: line
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        subtype: string_field(line, "subtype"),
        terminal_reason: line
            .get("terminal_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        duration_ms: line.get("duration_ms").and_then(Value::as_u64),
        num_turns: line.get("num_turns").and_then(Value::as_u64),
        session_id: line
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        total_cost_usd: line.get("total_cost_usd").and_then(Value::as_f64),
        cost_since_last_result,
        usage: line.get("usage").cloned(),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn classifies_control_responses() {
        let ok = parse(
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"i1","response":{"pid":7}}}"#,
        );
        match classify(&ok) {
            Incoming::ControlResponse {
                request_id,
                outcome,
            } => {
                assert_eq!(request_id, "i1");
                assert_eq!(outcome.unwrap()["pid"], 7);
            }
            other => panic!("unexpected {other:?}"),
        }
        let error = parse(
            r#"{"type":"control_response","response":{"subtype":"error","request_id":"x","error":"Unsupported control request subtype: z"}}"#,
        );
        match classify(&error) {
            Incoming::ControlResponse { outcome, .. } => {
                assert_eq!(
                    outcome.unwrap_err(),
                    "Unsupported control request subtype: z"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn classifies_can_use_tool() {
        let line = parse(
            r#"{"type":"control_request","request_id":"r9","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"touch x"},"tool_use_id":"toolu_1"}}"#,
        );
        let Incoming::ControlRequest {
            request_id,
            subtype,
            request,
        } = classify(&line)
        else {
            panic!("not a control request");
        };
        assert_eq!(
            (request_id.as_str(), subtype.as_str()),
            ("r9", "can_use_tool")
        );
        let allow = permission_allow(&request);
        assert_eq!(allow["behavior"], "allow");
        assert_eq!(allow["updatedInput"]["command"], "touch x");
        assert_eq!(allow["toolUseID"], "toolu_1");
        let deny = permission_deny(&request, "no");
        assert_eq!(
            (deny["behavior"].as_str(), deny["message"].as_str()),
            (Some("deny"), Some("no"))
        );
    }

    #[test]
    fn unknown_types_are_named() {
        assert!(
            matches!(classify(&parse(r#"{"type":"mystery"}"#)), Incoming::Unknown(kind) if kind == "mystery")
        );
        assert!(matches!(classify(&parse(r"{}")), Incoming::Unknown(kind) if kind.is_empty()));
        assert!(matches!(classify(&parse(r"[1,2]")), Incoming::Unknown(_)));
    }

    #[test]
    fn reads_result_lines() {
        // Shape from the real CLI 2.1.332 (reference/claude-cli.md, Appendix B), trimmed.
        let line = parse(
            r#"{"type":"result","subtype":"success","is_error":false,"result":"pong","session_id":"s1","num_turns":2,"duration_ms":707,"total_cost_usd":0.000336,"usage":{"input_tokens":24},"terminal_reason":"completed","model_usage_since_last_result":{"m":{"costUSD":0.0001},"n":{"costUSD":0.00002}}}"#,
        );
        let result = result_line(&line);
        assert_eq!(result.text.as_deref(), Some("pong"));
        assert!(!result.is_error);
        assert_eq!(result.subtype, "success");
        assert_eq!(result.terminal_reason.as_deref(), Some("completed"));
        assert_eq!(result.duration_ms, Some(707));
        assert_eq!(result.num_turns, Some(2));
        assert_eq!(result.total_cost_usd, Some(0.000_336));
        assert!((result.cost_since_last_result.unwrap() - 0.00012).abs() < 1e-12);

        let interrupted = parse(
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"terminal_reason":"aborted_streaming","errors":["[ede_diagnostic] x"]}"#,
        );
        let result = result_line(&interrupted);
        assert!(result.is_error && result.text.is_none());
        assert_eq!(result.errors.as_deref(), Some("[ede_diagnostic] x"));
    }

    #[test]
    fn extracts_text_tools_and_results() {
        let assistant = parse(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"a"},{"type":"tool_use","name":"Bash","input":{"command":"ls"}},{"type":"text","text":"b"}]}}"#,
        );
        assert_eq!(assistant_text(&assistant).as_deref(), Some("ab"));
        assert_eq!(
            tool_uses(&assistant),
            vec![("Bash".to_owned(), parse(r#"{"command":"ls"}"#))]
        );
        let user = parse(
            r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"host says no","is_error":true},{"type":"tool_result","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}]}}"#,
        );
        assert_eq!(
            tool_results(&user),
            vec![
                ("host says no".to_owned(), true),
                ("x\ny".to_owned(), false)
            ]
        );
    }

    #[test]
    fn rewind_answers_are_read() {
        assert!(is_lifecycle(
            br#"{"type":"command_lifecycle","command_uuid":"u-1","state":"started"}"#
        ));
        assert!(!is_lifecycle(br#"{"type":"result"}"#));
        let line: Value = serde_json::from_slice(&rewind_conversation("r2", "u-1")).unwrap();
        assert_eq!(line["request"]["subtype"], "rewind_conversation");
        assert_eq!(line["request"]["target_message_uuid"], "u-1");
        assert_eq!(
            rewound(Ok(parse(r#"{"rewound":true,"targetMessageUuid":"u-1"}"#))),
            Ok(())
        );
        assert_eq!(
            rewound(Ok(parse(
                r#"{"rewound":false,"error":"target not found","reason":"target_not_found"}"#
            ))),
            Err("target not found".to_owned())
        );
        assert_eq!(
            rewound(Ok(parse(r#"{"rewound":false}"#))),
            Err("the agent did not say why".to_owned())
        );
        assert_eq!(
            rewound(Err("Unsupported control request subtype".to_owned())),
            Err("Unsupported control request subtype".to_owned())
        );
        assert!(matches!(
            classify(&parse(
                r#"{"type":"command_lifecycle","command_uuid":"u-1","state":"started"}"#
            )),
            Incoming::Lifecycle
        ));
    }

    /// The typed read gives what the `Value` reading gives, for the lines of a turn and for
    /// shapes the typed read refuses (which then go through the `Value`).
    #[test]
    fn the_typed_read_agrees_with_the_value_reading() {
        let lines = [
            // The fake agent's turn (the real CLI's lines have these shapes).
            r#"{"type":"system","fast_mode_state":"off","subtype":"init","cwd":"/t","session_id":"35c2","tools":["Task","Bash"],"mcp_servers":[{"name":"iris","status":"connected"}],"model":"fake-model","uuid":"a8b9"}"#,
            r#"{"type":"assistant","request_id":"req_1","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"fake answer #1: hi"}],"stop_reason":null,"usage":{"input_tokens":5}},"parent_tool_use_id":null,"session_id":"35c2","uuid":"5811"}"#,
            r#"{"type":"result","result":"fake answer #1: hi","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":0,"num_turns":1,"session_id":"35c2","total_cost_usd":0.0001,"usage":{"input_tokens":5,"service_tier":"standard"},"modelUsage":{"m":{"costUSD":0.0001}},"model_usage_since_last_result":{"m":{"inputTokens":5,"costUSD":0.0001},"n":{"costUSD":0.00002}},"permission_denials":[],"terminal_reason":"completed"}"#,
            // Text and tools in one line, thinking skipped, escapes in text.
            r#"{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"a\"\n\u00e9"},{"type":"tool_use","id":"t","name":"Bash","input":{"command":"ls"}},{"type":"text","text":""},{"type":"tool_use"}]}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"no","is_error":true}]}}"#,
            // Shapes the typed read does not take.
            r#"{"type":"assistant","message":{"content":"plain"}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":7},{"type":"text","text":"x"}]}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":3}]}}"#,
            r#"{"type":"assistant","message":null}"#,
            r#"{"type":"assistant"}"#,
            r#"{"type":"result","usage":null,"errors":["x",{"code":1}],"is_error":"yes","duration_ms":1.5}"#,
            r#"{"type":"result","result":null,"subtype":null,"errors":"x","model_usage_since_last_result":[1],"total_cost_usd":"1"}"#,
            r#"{"type":"result","result":"a","result":"b"}"#,
            r#"{"type":"result"}"#,
            r#"{"type":"result","usage":null,"errors":[]}"#,
            r#"{"type":"result","errors":["x",{"code":1}],"model_usage_since_last_result":{}}"#,
            r#"{"type":"system","subtype":"api_retry","attempt":1}"#,
            r#"{"type":"command_lifecycle","state":"started"}"#,
            r#"{"subtype":"init","type":"system"}"#,
            r#"{"type":7}"#,
            r#"{}"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"["system"]"#,
            r#"["command_lifecycle"]"#,
            r#"["assistant",{"content":[{"type":"text","text":"a"}]}]"#,
            r#"{"type":"assistant","message":[[{"type":"text","text":"hi"}]]}"#,
            r#"{"type":"assistant","message":{"content":[["text","hi",null,null]]}}"#,
            r#"{"type":"result","model_usage_since_last_result":{"m":["costUSD",1]}}"#,
            r#"{"type":"control_request","request_id":"r9","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{}}}"#,
        ];
        for line in lines {
            let typed = read(line.as_bytes()).unwrap();
            let valued = classify(&parse(line));
            assert_eq!(format!("{typed:?}"), format!("{valued:?}"), "{line}");
        }
        assert!(read(b"{not json").is_err());
        assert!(read(b"").is_err());
        // What the typed read skips is only scanned: a lone surrogate there (which a
        // `Value` refuses) does not cost the line.
        let lenient = r#"{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"\ud83d"},{"type":"text","text":"kept"}]}}"#;
        assert!(serde_json::from_str::<Value>(lenient).is_err());
        assert_eq!(
            format!("{:?}", read(lenient.as_bytes()).unwrap()),
            r#"Assistant { text: Some("kept"), tool_uses: [] }"#
        );
    }

    #[test]
    fn messages_are_single_ndjson_lines() {
        let message = user_message("multi\nline \"quoted\"", "u-7");
        assert_eq!(message.iter().filter(|&&byte| byte == b'\n').count(), 1);
        assert!(message.ends_with(b"\n"));
        let value: Value = serde_json::from_slice(&message).unwrap();
        assert_eq!(
            value,
            json!({
                "type": "user",
                "message": {"role": "user", "content": "multi\nline \"quoted\""},
                "parent_tool_use_id": null,
                "session_id": "",
                "uuid": "u-7",
            })
        );
        let request: Value = serde_json::from_slice(&control_request("r1", "interrupt")).unwrap();
        assert_eq!(request["request"]["subtype"], "interrupt");
        assert_eq!(request["request_id"], "r1");
    }
}
