//! The Messages API wire format of a planned answer: one JSON message, or the server-sent
//! events of a stream, and error bodies.

use serde_json::{Value, json};

use super::script::{Block, Reply};

/// Ids of one answer: the message id and one id per tool call.
pub(super) struct Ids {
    /// `msg_fake…`.
    pub message: String,
    /// `toolu_fake…`, one per [`Block::ToolUse`], in order.
    pub tools: Vec<String>,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    /// `message_start`, `content_block_delta`, ...
    pub name: &'static str,
    /// The `data` line.
    pub data: Value,
    /// Whether a slow answer pauses before this event.
    pub pause_before: bool,
}

impl Event {
    /// `event: NAME\ndata: JSON\n\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("event: {}\ndata: {}\n\n", self.name, self.data).into_bytes()
    }
}

fn usage_json(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    })
}

fn content_json(block: &Block, tool_id: Option<&String>) -> Value {
    match block {
        Block::Text(text) => json!({"type": "text", "text": text}),
        Block::ToolUse { name, input } => json!({
            "type": "tool_use",
            "id": tool_id.cloned().unwrap_or_default(),
            "name": name,
            "input": input,
        }),
    }
}

/// The non-streaming answer.
pub(super) fn message(reply: &Reply, ids: &Ids, model: &str) -> Value {
    let mut tools = ids.tools.iter();
    let content: Vec<Value> = reply
        .blocks
        .iter()
        .map(|block| {
            let id = matches!(block, Block::ToolUse { .. })
                .then(|| tools.next())
                .flatten();
            content_json(block, id)
        })
        .collect();
    json!({
        "id": ids.message,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": null,
        "usage": usage_json(reply.usage.0, reply.usage.1),
    })
}

/// The events of a streamed answer, in order. With `cut`, only `message_start`.
pub(super) fn events(reply: &Reply, ids: &Ids, model: &str) -> Vec<Event> {
    let event = |name, data| Event {
        name,
        data,
        pause_before: false,
    };
    let mut events = vec![event(
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": ids.message,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_json(reply.usage.0, 1),
            },
        }),
    )];
    if reply.cut {
        return events;
    }
    events.push(event("ping", json!({"type": "ping"})));
    let mut tools = ids.tools.iter();
    let mut first_delta = true;
    for (index, block) in reply.blocks.iter().enumerate() {
        let (start, deltas) = match block {
            Block::Text(text) => (
                json!({"type": "text", "text": ""}),
                chunks(text)
                    .into_iter()
                    .map(|chunk| json!({"type": "text_delta", "text": chunk}))
                    .collect::<Vec<_>>(),
            ),
            Block::ToolUse { name, input } => (
                json!({
                    "type": "tool_use",
                    "id": tools.next().cloned().unwrap_or_default(),
                    "name": name,
                    "input": {},
                }),
                json_chunks(&input.to_string())
                    .into_iter()
                    .map(|chunk| json!({"type": "input_json_delta", "partial_json": chunk}))
                    .collect(),
            ),
        };
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            events.push(Event {
                name: "content_block_delta",
                data: json!({"type": "content_block_delta", "index": index, "delta": delta}),
                pause_before: !first_delta,
            });
            first_delta = false;
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(Event {
        name: "message_delta",
        data: json!({
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": reply.usage.1},
        }),
        pause_before: true,
    });
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

/// Text deltas: word by word (each chunk keeps its trailing space), at most 64 chunks.
fn chunks(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if words.is_empty() {
        return vec![String::new()];
    }
    let per_chunk = words.len().div_ceil(64);
    words
        .chunks(per_chunk)
        .map(|group| group.concat())
        .collect()
}

/// `partial_json` deltas: the JSON text in up to three pieces, cut on character boundaries.
fn json_chunks(json_text: &str) -> Vec<String> {
    let characters: Vec<char> = json_text.chars().collect();
    let size = characters.len().div_ceil(3).max(1);
    characters
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// The `error.type` for an HTTP status, as the real API names them.
pub(super) fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An error body: `{"type":"error","error":{"type":…,"message":…}}`.
pub(super) fn error_body(status: u16, message: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(blocks: Vec<Block>, cut: bool) -> Reply {
        Reply {
            blocks,
            stop_reason: "end_turn",
            usage: (12, 6),
            slow_ms: None,
            cut,
        }
    }

    fn ids() -> Ids {
        Ids {
            message: "msg_1".to_owned(),
            tools: vec!["toolu_1".to_owned()],
        }
    }

    #[test]
    fn streams_text_and_tool_blocks() {
        let answer = reply(
            vec![
                Block::Text("two words".to_owned()),
                Block::ToolUse {
                    name: "Bash".to_owned(),
                    input: json!({"command": "touch x"}),
                },
            ],
            false,
        );
        let events = events(&answer, &ids(), "m");
        let names: Vec<&str> = events.iter().map(|event| event.name).collect();
        assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
        assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
        let text: String = events
            .iter()
            .filter_map(|event| event.data.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert_eq!(text, "two words");
        let json_text: String = events
            .iter()
            .filter_map(|event| {
                event
                    .data
                    .pointer("/delta/partial_json")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json_text).unwrap(),
            json!({"command": "touch x"})
        );
        let tool_start = events
            .iter()
            .find(|event| event.data.pointer("/content_block/type") == Some(&json!("tool_use")))
            .unwrap();
        assert_eq!(tool_start.data["content_block"]["id"], "toolu_1");
        assert_eq!(tool_start.data["index"], 1);
        assert_eq!(events[0].data["message"]["usage"]["input_tokens"], 12);
        assert_eq!(events[names.len() - 2].data["usage"]["output_tokens"], 6);
        // Only deltas after the first and the final message_delta pause.
        assert!(!events.iter().take(4).any(|event| event.pause_before));
        assert!(events[names.len() - 2].pause_before);
        assert!(
            String::from_utf8(events[1].to_bytes())
                .unwrap()
                .starts_with("event: ping\ndata: {")
        );
    }

    #[test]
    fn a_cut_stream_has_only_message_start() {
        let events = events(&reply(vec![Block::Text("x".to_owned())], true), &ids(), "m");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "message_start");
    }

    #[test]
    fn non_streaming_message() {
        let answer = reply(vec![Block::Text("hi".to_owned())], false);
        let message = message(&answer, &ids(), "claude-x");
        assert_eq!(message["content"], json!([{"type": "text", "text": "hi"}]));
        assert_eq!(message["model"], "claude-x");
        assert_eq!(message["stop_reason"], "end_turn");
        assert_eq!(message["usage"]["output_tokens"], 6);
    }

    #[test]
    fn chunks_keep_the_text() {
        let long = "word ".repeat(500);
        assert!(chunks(&long).len() <= 64);
        assert_eq!(chunks(&long).concat(), long);
        assert_eq!(json_chunks("{\"é\":1}").concat(), "{\"é\":1}");
        assert_eq!(error_body(529, "busy")["error"]["type"], "overloaded_error");
    }
}
