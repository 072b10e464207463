//! Command-line parsing for the subset of `claude` flags the fake understands.
//!
//! Both `--flag=value` and `--flag value` are accepted. Unknown flags and positional
//! arguments are ignored, like a driver would expect from a tolerant CLI.

/// The parsed command line.
#[derive(Debug, Default)]
pub(crate) struct Args {
    /// `--version` / `-v`.
    pub version: bool,
    /// `--print` / `-p`.
    pub print: bool,
    /// `--verbose`.
    pub verbose: bool,
    /// `--output-format`.
    pub output_format: Option<String>,
    /// `--permission-prompt-tool`.
    pub permission_prompt_tool: Option<String>,
    /// `--session-id`.
    pub session_id: Option<String>,
    /// `--resume` / `-r`.
    pub resume: Option<String>,
    /// `--continue` / `-c`.
    pub continue_last: bool,
    /// `--fork-session`.
    pub fork_session: bool,
    /// `--no-session-persistence`.
    pub no_session_persistence: bool,
    /// `--replay-user-messages`.
    pub replay_user_messages: bool,
    /// `--model`.
    pub model: Option<String>,
    /// `--allowedTools` / `--allowed-tools` (variadic, comma or space separated).
    pub allowed_tools: Vec<String>,
    /// `--disallowedTools` / `--disallowed-tools` (variadic, comma or space separated).
    pub disallowed_tools: Vec<String>,
    /// `--append-system-prompt` (accepted, otherwise unused).
    pub append_system_prompt: Option<String>,
    /// `--permission-mode`.
    pub permission_mode: Option<String>,
    /// `--mcp-config` (variadic: JSON strings or file paths).
    pub mcp_config: Vec<String>,
}

/// How a known flag takes its value.
enum Kind {
    /// No value.
    Switch,
    /// Exactly one value.
    One,
    /// One or more values, up to the next argument that starts with `-`.
    Many,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "version"
        | "v"
        | "print"
        | "p"
        | "verbose"
        | "continue"
        | "c"
        | "fork-session"
        | "no-session-persistence"
        | "replay-user-messages" => Kind::Switch,
        "session-id"
        | "resume"
        | "r"
        | "model"
        | "append-system-prompt"
        | "permission-mode"
        | "permission-prompt-tool"
        | "input-format"
        | "output-format" => Kind::One,
        "allowedTools" | "allowed-tools" | "disallowedTools" | "disallowed-tools"
        | "mcp-config" => Kind::Many,
        _ => return None,
    })
}

/// Parses `argv` without the program name. Errors are messages for stderr (exit 1).
pub(crate) fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "--" {
            break;
        }
        let (name, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| s.len() == 1) {
            (short, None)
        } else {
            continue; // positional (a prompt): ignored
        };
        let Some(kind) = kind_of(name) else {
            continue; // unknown flag: ignored (a following value is ignored as a positional)
        };
        let values: Vec<String> = match (kind, inline) {
            (Kind::Switch, _) => Vec::new(),
            (Kind::One | Kind::Many, Some(v)) => vec![v],
            (Kind::One, None) => match argv.get(i) {
                Some(v) => {
                    i += 1;
                    vec![v.clone()]
                }
                None => return Err(format!("error: option '--{name} <value>' argument missing")),
            },
            (Kind::Many, None) => {
                let start = i;
                while i < argv.len() && !argv[i].starts_with('-') {
                    i += 1;
                }
                if start == i {
                    return Err(format!(
                        "error: option '--{name} <value...>' argument missing"
                    ));
                }
                argv[start..i].to_vec()
            }
        };
        let one = || values.first().cloned();
        match name {
            "version" | "v" => a.version = true,
            "print" | "p" => a.print = true,
            "verbose" => a.verbose = true,
            "continue" | "c" => a.continue_last = true,
            "fork-session" => a.fork_session = true,
            "no-session-persistence" => a.no_session_persistence = true,
            "replay-user-messages" => a.replay_user_messages = true,
            "session-id" => a.session_id = one(),
            "resume" | "r" => a.resume = one(),
            "model" => a.model = one(),
            "append-system-prompt" => a.append_system_prompt = one(),
            "permission-mode" => a.permission_mode = one(),
            "permission-prompt-tool" => a.permission_prompt_tool = one(),
            "output-format" => a.output_format = one(),
            "allowedTools" | "allowed-tools" => a.allowed_tools.extend(split_rules(&values)),
            "disallowedTools" | "disallowed-tools" => {
                a.disallowed_tools.extend(split_rules(&values));
            }
            "mcp-config" => a.mcp_config.extend(values),
            _ => {} // input-format: only stream-json is implemented
        }
    }
    Ok(a)
}

/// Splits tool rule lists like `Bash(git add:*),Read Write` on commas and spaces
/// outside parentheses.
fn split_rules(values: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        let mut depth = 0usize;
        let mut cur = String::new();
        for c in v.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 && (c == ',' || c.is_whitespace()) {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(c);
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// Whether a tool rule list (`Bash`, `Bash(touch:*)`, ...) mentions `tool` (coarse: any
/// rule for the tool matches, whatever its pattern).
pub(crate) fn rules_match(rules: &[String], tool: &str) -> bool {
    rules.iter().any(|r| {
        r == tool
            || r.strip_prefix(tool)
                .is_some_and(|rest| rest.starts_with('(') && rest.ends_with(')'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn both_forms() {
        let a = parse(&argv(&[
            "--print",
            "--session-id=abc",
            "--model",
            "sonnet",
            "--allowedTools",
            "Bash(touch:*),Read",
            "Write",
            "--permission-prompt-tool=stdio",
            "--unknown",
            "x",
            "-r",
            "def",
        ]))
        .unwrap();
        assert!(a.print);
        assert_eq!(a.session_id.as_deref(), Some("abc"));
        assert_eq!(a.model.as_deref(), Some("sonnet"));
        assert_eq!(a.allowed_tools, ["Bash(touch:*)", "Read", "Write"]);
        assert_eq!(a.permission_prompt_tool.as_deref(), Some("stdio"));
        assert_eq!(a.resume.as_deref(), Some("def"));
        assert!(rules_match(&a.allowed_tools, "Bash"));
        assert!(!rules_match(&a.allowed_tools, "Edit"));
    }

    #[test]
    fn missing_value() {
        assert!(parse(&argv(&["--session-id"])).is_err());
    }
}
