//! Fault-injection directives embedded in user text as `[[name]]` or `[[name:arg]]`.
//!
//! Unknown names and malformed arguments are ignored. The argument runs to the first
//! `]]`, except for `[[tool:NAME:JSON]]`, whose JSON input is parsed as a JSON value (so
//! it may itself contain `]]`).

use serde_json::{Value, json};

/// Everything the directives of one user message ask for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Directives {
    /// `[[slow:MS]]`: wait this long (interruptible) before answering.
    pub slow_ms: Option<u64>,
    /// `[[say:TEXT]]`: assistant text lines written before `slow` (in order).
    pub say: Vec<String>,
    /// `[[answer:TEXT]]`: the exact answer.
    pub answer: Option<String>,
    /// `[[crash]]`: exit 3 mid-turn.
    pub crash: bool,
    /// `[[exit:CODE]]`: exit with CODE mid-turn (like `crash`).
    pub exit: Option<i32>,
    /// `[[exit-after:CODE]]`: exit with CODE right after this turn's result.
    pub exit_after: Option<i32>,
    /// `[[hang]]` (`Some(false)`) or `[[hang:deaf]]` (`Some(true)`).
    pub hang: Option<bool>,
    /// `[[garbage]]`: print junk lines before answering.
    pub garbage: bool,
    /// `[[huge:BYTES]]`: one assistant line of BYTES bytes before the result.
    pub huge: Option<usize>,
    /// `[[split]]`: write the result line in small pieces, splitting UTF-8 chars.
    pub split: bool,
    /// `[[error]]`: an API-error result.
    pub error: bool,
    /// `[[cost:USD]]`: this turn's cost.
    pub cost: Option<f64>,
    /// `[[stderr:TEXT]]`: lines for stderr.
    pub stderr: Vec<String>,
    /// `[[tool:NAME:JSON]]`: tool calls, in order.
    pub tools: Vec<(String, Value)>,
    /// `[[grandchild]]`: spawn a sleeping grandchild.
    pub grandchild: bool,
}

/// Extracts all directives from `text`.
pub(crate) fn parse(text: &str) -> Directives {
    let mut d = Directives::default();
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let body = &rest[start + 2..];
        if let Some(after) = body.strip_prefix("tool:")
            && let Some((name, input, used)) = parse_tool(after)
        {
            d.tools.push((name, input));
            rest = &after[used..];
            continue;
        }
        let Some(end) = body.find("]]") else { break };
        apply(&mut d, &body[..end]);
        rest = &body[end + 2..];
    }
    d
}

/// Parses `NAME:JSON]]` or `NAME]]`; returns the name, the input and the bytes used.
fn parse_tool(s: &str) -> Option<(String, Value, usize)> {
    let name_end = s.find([':', ']'])?;
    let name = &s[..name_end];
    if name.is_empty() || name.contains('[') {
        return None;
    }
    if s[name_end..].starts_with("]]") {
        return Some((name.to_string(), json!({}), name_end + 2));
    }
    let json_part = s[name_end..].strip_prefix(':')?;
    let mut stream = serde_json::Deserializer::from_str(json_part).into_iter::<Value>();
    let input = stream.next()?.ok()?;
    let offset = stream.byte_offset();
    let tail = &json_part[offset..];
    let trimmed = tail.trim_start();
    if !trimmed.starts_with("]]") {
        return None;
    }
    let used = name_end + 1 + offset + (tail.len() - trimmed.len()) + 2;
    Some((name.to_string(), input, used))
}

fn apply(d: &mut Directives, body: &str) {
    let (name, arg) = match body.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (body, None),
    };
    let num = |a: Option<&str>| a.and_then(|a| a.trim().parse::<u64>().ok());
    let code = |a: Option<&str>| a.and_then(|a| a.trim().parse::<i32>().ok());
    match name.trim() {
        "slow" => d.slow_ms = num(arg).or(d.slow_ms),
        "say" => d.say.extend(arg.map(str::to_owned)),
        "answer" => d.answer = Some(arg.unwrap_or("").to_string()),
        "crash" => d.crash = true,
        "exit" => d.exit = code(arg).or(d.exit),
        "exit-after" => d.exit_after = code(arg).or(d.exit_after),
        "hang" => d.hang = Some(arg.is_some_and(|a| a.trim() == "deaf")),
        "garbage" => d.garbage = true,
        "huge" => {
            d.huge = num(arg).and_then(|n| usize::try_from(n).ok()).or(d.huge);
        }
        "split" => d.split = true,
        "error" => d.error = true,
        "cost" => {
            d.cost = arg
                .and_then(|a| a.trim().parse::<f64>().ok())
                .filter(|c| c.is_finite() && *c >= 0.0)
                .or(d.cost);
        }
        "stderr" => d.stderr.push(arg.unwrap_or("").to_string()),
        "grandchild" => d.grandchild = true,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_none() {
        assert_eq!(parse("hello [world] [[ nope"), Directives::default());
    }

    #[test]
    fn combined() {
        let d = parse(
            "a [[slow:250]] b [[answer:x: y]] [[cost:0.5]][[stderr:oops]] [[hang:deaf]] [[huge:1000]] [[split]][[error]][[exit-after:4]]",
        );
        assert_eq!(d.slow_ms, Some(250));
        assert_eq!(d.answer.as_deref(), Some("x: y"));
        assert_eq!(d.cost, Some(0.5));
        assert_eq!(d.stderr, ["oops"]);
        assert_eq!(d.hang, Some(true));
        assert_eq!(d.huge, Some(1000));
        assert!(d.split && d.error);
        assert_eq!(d.exit_after, Some(4));
        assert!(!d.crash);
    }

    #[test]
    fn tools() {
        let d = parse(
            r#"go [[tool:Bash:{"command":"touch x"}]] then [[tool:Edit: {"a":[[1]]} ]] [[tool:Read]] [[crash]]"#,
        );
        assert_eq!(
            d.tools,
            vec![
                ("Bash".to_string(), json!({"command":"touch x"})),
                ("Edit".to_string(), json!({"a":[[1]]})),
                ("Read".to_string(), json!({})),
            ]
        );
        assert!(d.crash);
    }

    #[test]
    fn bad_tool_json_is_ignored() {
        let d = parse("[[tool:Bash:{nope}]] [[garbage]]");
        assert!(d.tools.is_empty());
        assert!(d.garbage);
    }
}
