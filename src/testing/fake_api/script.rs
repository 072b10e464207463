//! What the fake model answers: the conversation read from a request body, the directives
//! in its prompt (or in a queued script entry), and the plan that follows from both.

use serde_json::Value;

/// Everything the directives of one prompt ask for. Later directives of the same kind win,
/// except `tool`, which accumulates.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Directives {
    /// `[[reply:TEXT]]`: the exact answer.
    pub reply: Option<String>,
    /// `[[echo]]`: answer the prompt's text, verbatim.
    pub echo: bool,
    /// `[[history]]`: answer every prompt of the conversation, in order.
    pub history: bool,
    /// `[[tool:NAME:JSON]]`: tool calls, one per model round trip, in order.
    pub tools: Vec<(String, Value)>,
    /// `[[slow:MS]]`: pause this long before each streamed delta after the first.
    pub slow_ms: Option<u64>,
    /// `[[cut]]`: end a streamed answer right after `message_start`.
    pub cut: bool,
    /// `[[error:STATUS:MESSAGE]]`: answer with this HTTP error.
    pub error: Option<(u16, String)>,
    /// `[[usage:IN:OUT]]`: the token usage reported.
    pub usage: Option<(u64, u64)>,
}

/// Extracts the directives of `text`: `[[name]]` or `[[name:argument]]`. Unknown names and
/// malformed arguments are ignored. An argument runs to the first `]]`, except for
/// `[[tool:NAME:JSON]]`, whose input is read as one JSON value (which may contain `]]`).
pub(super) fn parse(text: &str) -> Directives {
    let mut directives = Directives::default();
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let body = &rest[start + 2..];
        if let Some(after) = body.strip_prefix("tool:")
            && let Some((name, input, used)) = parse_tool(after)
        {
            directives.tools.push((name, input));
            rest = &after[used..];
            continue;
        }
        let Some(end) = body.find("]]") else { break };
        apply(&mut directives, &body[..end]);
        rest = &body[end + 2..];
    }
    directives
}

/// Reads `NAME]]` or `NAME:JSON]]`: the name, the input and how many bytes were used.
fn parse_tool(text: &str) -> Option<(String, Value, usize)> {
    let name_end = text.find([':', ']'])?;
    let name = &text[..name_end];
    if name.is_empty() || name.contains(['[', ' ']) {
        return None;
    }
    if text[name_end..].starts_with("]]") {
        return Some((
            name.to_owned(),
            Value::Object(serde_json::Map::new()),
            name_end + 2,
        ));
    }
    let json_text = text[name_end..].strip_prefix(':')?;
    let mut values = serde_json::Deserializer::from_str(json_text).into_iter::<Value>();
    let input = values.next()?.ok()?;
    let json_end = values.byte_offset();
    let after_json = &json_text[json_end..];
    let closing = after_json.len() - after_json.trim_start().len();
    if !after_json[closing..].starts_with("]]") {
        return None;
    }
    Some((
        name.to_owned(),
        input,
        name_end + 1 + json_end + closing + 2,
    ))
}

fn apply(directives: &mut Directives, body: &str) {
    let (name, argument) = match body.split_once(':') {
        Some((name, argument)) => (name.trim(), Some(argument)),
        None => (body.trim(), None),
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    match (name, argument) {
        ("reply", argument) => directives.reply = Some(argument.unwrap_or_default().to_owned()),
        ("echo", None) => directives.echo = true,
        ("history", None) => directives.history = true,
        ("slow", Some(ms)) => directives.slow_ms = number(ms).or(directives.slow_ms),
        ("cut", None) => directives.cut = true,
        ("error", Some(argument)) => {
            let (status, message) = argument.split_once(':').unwrap_or((argument, "fake error"));
            if let Ok(status) = status.trim().parse::<u16>()
                && (400..=599).contains(&status)
            {
                directives.error = Some((status, message.to_owned()));
            }
        }
        ("usage", Some(argument)) => {
            if let Some((input, output)) = argument.split_once(':')
                && let (Some(input), Some(output)) = (number(input), number(output))
            {
                directives.usage = Some((input, output));
            }
        }
        _ => {}
    }
}

/// The parts of a request's conversation the fake model answers from.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Conversation {
    /// Every user prompt, in order: the non-empty text blocks (string contents) of the user
    /// messages that carry no tool result, with `<system-reminder>` sections removed.
    pub prompts: Vec<String>,
    /// The tool results that came after the last prompt: `(content, is_error)`.
    pub tool_results: Vec<(String, bool)>,
    /// Whether the last user message carries a tool result: the request continues a turn.
    pub continues_turn: bool,
    /// The `model` field.
    pub model: String,
    /// The `stream` field (absent counts as false).
    pub stream: bool,
}

impl Conversation {
    /// The last prompt, or an empty string.
    pub fn prompt(&self) -> &str {
        self.prompts.last().map_or("", String::as_str)
    }
}

/// Reads the conversation of a Messages API request body. Messages of other roles (the
/// CLI puts `system` messages inside `messages`), blocks of other types and unknown fields
/// are ignored.
pub(super) fn read_conversation(body: &Value) -> Conversation {
    let mut conversation = Conversation {
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("fake-model")
            .to_owned(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        ..Conversation::default()
    };
    let messages = body.get("messages").and_then(Value::as_array);
    for message in messages.into_iter().flatten() {
        if message.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        let mut texts = Vec::new();
        let mut results = Vec::new();
        match message.get("content") {
            Some(Value::String(text)) => texts.push(text.as_str()),
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(text) = block.get("text").and_then(Value::as_str) {
                                texts.push(text);
                            }
                        }
                        Some("tool_result") => {
                            results.push(crate::agent::protocol::tool_result(block))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        conversation.continues_turn = !results.is_empty();
        if results.is_empty() {
            // Each text block is one prompt: the CLI merges a prompt that got no answer (an
            // API error) with the next one into one message of several blocks.
            let prompts: Vec<String> = texts
                .into_iter()
                .map(without_reminders)
                .map(|text| text.trim().to_owned())
                .filter(|text| !text.is_empty())
                .collect();
            if !prompts.is_empty() {
                conversation.prompts.extend(prompts);
                conversation.tool_results.clear();
            }
        } else {
            conversation.tool_results.extend(results);
        }
    }
    conversation
}

/// `text` without its `<system-reminder>…</system-reminder>` sections (an unclosed one runs
/// to the end).
fn without_reminders(text: &str) -> String {
    const OPEN: &str = "<system-reminder>";
    const CLOSE: &str = "</system-reminder>";
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        kept.push_str(&rest[..start]);
        match rest[start..].find(CLOSE) {
            Some(end) => rest = &rest[start + end + CLOSE.len()..],
            None => rest = "",
        }
    }
    kept.push_str(rest);
    kept
}

/// One content block of a planned answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Block {
    /// A text block.
    Text(String),
    /// A tool call.
    ToolUse {
        /// The tool.
        name: String,
        /// Its input.
        input: Value,
    },
}

/// A planned successful answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Reply {
    /// The content blocks.
    pub blocks: Vec<Block>,
    /// `end_turn` or `tool_use`.
    pub stop_reason: &'static str,
    /// `(input_tokens, output_tokens)`.
    pub usage: (u64, u64),
    /// Pause before each streamed delta after the first.
    pub slow_ms: Option<u64>,
    /// End a streamed answer after `message_start`.
    pub cut: bool,
}

/// What the fake model does with one request.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Plan {
    /// Answer.
    Reply(Reply),
    /// Fail with an HTTP error.
    Error {
        /// The HTTP status.
        status: u16,
        /// The error message.
        message: String,
    },
}

impl Plan {
    /// A short description for the request log: `text`, `tool_use:NAME`, `error:STATUS`,
    /// with `+cut` when the stream is cut.
    pub fn describe(&self, stream: bool) -> String {
        match self {
            Self::Error { status, .. } => format!("error:{status}"),
            Self::Reply(reply) => {
                let mut kind = reply
                    .blocks
                    .iter()
                    .find_map(|block| match block {
                        Block::ToolUse { name, .. } => Some(format!("tool_use:{name}")),
                        Block::Text(_) => None,
                    })
                    .unwrap_or_else(|| "text".to_owned());
                if reply.cut && stream {
                    kind.push_str("+cut");
                }
                kind
            }
        }
    }
}

/// Plans the answer to `conversation` under `directives`; `usage` is the default
/// `(input_tokens, output_tokens)`.
pub(super) fn plan(
    conversation: &Conversation,
    directives: &Directives,
    usage: (u64, u64),
) -> Plan {
    if let Some((status, message)) = &directives.error {
        return Plan::Error {
            status: *status,
            message: message.clone(),
        };
    }
    let usage = directives.usage.unwrap_or(usage);
    let done = conversation.tool_results.len();
    let (blocks, stop_reason) = if let Some((name, input)) = directives.tools.get(done) {
        (
            vec![
                Block::Text(format!("calling {name}")),
                Block::ToolUse {
                    name: name.clone(),
                    input: input.clone(),
                },
            ],
            "tool_use",
        )
    } else {
        (
            vec![Block::Text(answer_text(conversation, directives))],
            "end_turn",
        )
    };
    Plan::Reply(Reply {
        blocks,
        stop_reason,
        usage,
        slow_ms: directives.slow_ms,
        cut: directives.cut,
    })
}

/// The final text: the chosen answer, then one line per tool result of this turn.
fn answer_text(conversation: &Conversation, directives: &Directives) -> String {
    let mut text = if let Some(reply) = &directives.reply {
        reply.clone()
    } else if directives.echo {
        conversation.prompt().to_owned()
    } else if directives.history {
        format!("history: {}", conversation.prompts.join(" | "))
    } else {
        format!("fake answer to: {}", conversation.prompt())
    };
    for (content, is_error) in &conversation.tool_results {
        let label = if *is_error {
            "tool_error"
        } else {
            "tool_result"
        };
        text.push_str(&format!("\n[{label}] {content}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plain_text_has_no_directives() {
        assert_eq!(parse("hello [x] [[ nope"), Directives::default());
        assert_eq!(
            parse("[[unknown]] [[slow:x]] [[error:200:no]]"),
            Directives::default()
        );
    }

    #[test]
    fn reads_every_directive() {
        let directives = parse(
            "a [[reply:x: y]] [[echo]][[history]] [[slow:250]] [[cut]] [[error:529:busy: now]] [[usage:100:7]]",
        );
        assert_eq!(directives.reply.as_deref(), Some("x: y"));
        assert!(directives.echo && directives.history && directives.cut);
        assert_eq!(directives.slow_ms, Some(250));
        assert_eq!(directives.error, Some((529, "busy: now".to_owned())));
        assert_eq!(directives.usage, Some((100, 7)));
        assert_eq!(
            parse("[[error:500]]").error,
            Some((500, "fake error".to_owned()))
        );
    }

    #[test]
    fn reads_tools_with_nested_json() {
        let directives = parse(
            r#"go [[tool:Bash:{"command":"touch x"}]] then [[tool:Edit: {"a":[[1]]} ]] [[tool:Read]] [[tool:Bad:{nope}]] [[cut]]"#,
        );
        assert_eq!(
            directives.tools,
            vec![
                ("Bash".to_owned(), json!({"command": "touch x"})),
                ("Edit".to_owned(), json!({"a": [[1]]})),
                ("Read".to_owned(), json!({})),
            ]
        );
        assert!(directives.cut);
    }

    #[test]
    fn conversation_skips_reminders_system_messages_and_tool_results() {
        let body = json!({
            "model": "claude-opus-5-5",
            "stream": true,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "<system-reminder>\nctx\n</system-reminder>"},
                    {"type": "text", "text": "first"}
                ]},
                {"role": "system", "content": "environment"},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "failed [[error:500]]\n"},
                    {"type": "text", "text": "<system-reminder>x</system-reminder> second [[tool:Bash:{}]]"}
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "out"}]},
                    {"type": "text", "text": "<system-reminder>y</system-reminder>"}
                ]}
            ],
            "unknown": {"field": 1}
        });
        let conversation = read_conversation(&body);
        assert_eq!(
            conversation.prompts,
            ["first", "failed [[error:500]]", "second [[tool:Bash:{}]]"]
        );
        assert_eq!(conversation.tool_results, [("out".to_owned(), false)]);
        assert!(conversation.continues_turn && conversation.stream);
        assert_eq!(conversation.model, "claude-opus-5-5");
    }

    #[test]
    fn plans_tool_round_trips_then_the_answer() {
        let mut conversation = Conversation {
            prompts: vec!["run [[tool:Bash:{\"command\":\"ls\"}]]".to_owned()],
            ..Conversation::default()
        };
        let directives = parse(conversation.prompt());
        let Plan::Reply(first) = plan(&conversation, &directives, (12, 6)) else {
            panic!("error planned");
        };
        assert_eq!(first.stop_reason, "tool_use");
        assert!(matches!(&first.blocks[1], Block::ToolUse { name, .. } if name == "Bash"));
        conversation
            .tool_results
            .push(("file.txt".to_owned(), false));
        let Plan::Reply(last) = plan(&conversation, &directives, (12, 6)) else {
            panic!("error planned");
        };
        assert_eq!(last.stop_reason, "end_turn");
        assert_eq!(
            last.blocks,
            [Block::Text(format!(
                "fake answer to: {}\n[tool_result] file.txt",
                conversation.prompt()
            ))]
        );
        assert_eq!(last.usage, (12, 6));
    }

    #[test]
    fn plans_errors_and_chosen_answers() {
        let conversation = Conversation {
            prompts: vec!["one".to_owned(), "two".to_owned()],
            ..Conversation::default()
        };
        let text = |directives: &str| match plan(&conversation, &parse(directives), (1, 1)) {
            Plan::Reply(reply) => match &reply.blocks[0] {
                Block::Text(text) => text.clone(),
                Block::ToolUse { .. } => panic!("tool planned"),
            },
            Plan::Error { status, message } => format!("{status} {message}"),
        };
        assert_eq!(text(""), "fake answer to: two");
        assert_eq!(text("[[reply:hi]]"), "hi");
        assert_eq!(text("[[echo]]"), "two");
        assert_eq!(text("[[history]]"), "history: one | two");
        assert_eq!(text("[[error:500:boom]]"), "500 boom");
    }
}
