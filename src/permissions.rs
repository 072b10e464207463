//! Permission rules in Claude Code's own syntax: what an agent may do without asking.
//!
//! A team's `permissions: {allow, ask, deny}` (and the defaults in `settings.permissions`)
//! are lists of rules such as `Read`, `Edit(src/**)`, `Bash(git status:*)`,
//! `mcp__iris__send_message` or `WebFetch(domain:example.com)`. Each tool-permission request
//! of an agent (`can_use_tool`) is checked against them first: a `deny` rule that matches
//! wins, then an `allow` rule, then an `ask` rule; when none matches, the team's
//! `grantPermission` decides ([`Rules::check`]).
//!
//! What a rule matches:
//! - `Tool`: every use of that tool. `mcp__server` and `mcp__server__*` match every tool of
//!   that MCP server.
//! - `Bash(npm run test:*)`: a command that is `npm run test` or starts with `npm run test `;
//!   `Bash(git * main)`: `*` matches any text; `Bash(git status)`: exactly that command. A
//!   command made of several (`a && b`, `a; b`, `a | b`...) is allowed only if every part is,
//!   and denied or asked if any part is; one with `$(…)` or backticks is never allowed by a
//!   rule.
//! - `Read(path)`, `Edit(path)`, `Write(path)`, ...: the file the tool touches, as a
//!   gitignore-style glob (`*` within a name, `**` across directories, `?` one character).
//!   `//abs/path` is absolute, `~/path` is in the home directory, and `path`, `./path` and
//!   `/path` are relative to the team's directory. `Edit(...)` covers every tool that edits
//!   files (`Edit`, `MultiEdit`, `Write`, `NotebookEdit`), `Read(...)` every tool that reads
//!   them (`Read`, `Glob`, `Grep`, `NotebookRead`). Paths are compared after resolving `.`
//!   and `..`, without following symbolic links.
//! - `WebFetch(domain:example.com)`: a fetch of that host; `domain:*.example.com` also of
//!   its subdomains.
//! - `Task(Explore)` (or `Agent(Explore)`): a subagent of that type.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

/// Tools that edit files: what an `Edit(path)` rule covers.
const EDIT_TOOLS: &[&str] = &["Edit", "MultiEdit", "Write", "NotebookEdit"];
/// Tools that read files: what a `Read(path)` rule covers.
const READ_TOOLS: &[&str] = &["Read", "Glob", "Grep", "NotebookRead"];
/// Tools whose rules may name a path.
const PATH_TOOLS: &[&str] = &[
    "Read",
    "Edit",
    "MultiEdit",
    "Write",
    "NotebookEdit",
    "NotebookRead",
    "Glob",
    "Grep",
];

/// One rule, as written and as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    tool: String,
    specifier: Specifier,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Specifier {
    /// Every use of the tool.
    Any,
    /// `Bash(...)`.
    Command(CommandPattern),
    /// A file tool's path glob, as written.
    Path(String),
    /// `WebFetch(domain:...)`.
    Domain(String),
    /// `Task(...)` / `Agent(...)`: the subagent type.
    Agent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CommandPattern {
    /// `prefix:*`.
    Prefix(String),
    /// A pattern with `*` wildcards.
    Wildcard(String),
    /// The whole command.
    Exact(String),
}

impl Rule {
    /// Parses a rule.
    ///
    /// # Errors
    /// What is wrong with it, in words for a config error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("empty rule".to_owned());
        }
        let (tool, inner) = match trimmed.find('(') {
            None => {
                if trimmed.contains(')') {
                    return Err(format!("rule {trimmed:?} has ')' without '('"));
                }
                (trimmed, None)
            }
            Some(open) => {
                let Some(inner) = trimmed[open + 1..].strip_suffix(')') else {
                    return Err(format!(
                        "rule {trimmed:?} must end with ')': write Tool or Tool(specifier)"
                    ));
                };
                (&trimmed[..open], Some(inner))
            }
        };
        if tool.is_empty()
            || !tool
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '*'))
        {
            return Err(format!(
                "rule {trimmed:?}: {tool:?} is not a tool name (letters, digits, '_' and '-', \
                 such as Read, Bash or mcp__iris__send_message)"
            ));
        }
        if tool.contains('*') && !(tool.starts_with("mcp__") && tool.ends_with("__*")) {
            return Err(format!(
                "rule {trimmed:?}: '*' in a tool name works only as mcp__<server>__*"
            ));
        }
        let specifier = match inner.map(str::trim) {
            None => Specifier::Any,
            Some("") => {
                return Err(format!(
                    "rule {trimmed:?} has an empty specifier: write {tool} to match every use"
                ));
            }
            Some("*") => Specifier::Any,
            Some(inner) => {
                specifier(tool, inner).map_err(|why| format!("rule {trimmed:?}: {why}"))?
            }
        };
        Ok(Self {
            text: trimmed.to_owned(),
            tool: tool.to_owned(),
            specifier,
        })
    }

    /// The rule as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the rule names `tool` (before looking at its specifier).
    fn names(&self, tool: &str) -> bool {
        if self.tool == tool {
            return true;
        }
        if let Some(server) = self.tool.strip_suffix("__*") {
            return tool
                .strip_prefix(server)
                .is_some_and(|rest| rest.starts_with("__"));
        }
        if self.tool.starts_with("mcp__") && self.tool.matches("__").count() == 1 {
            return tool
                .strip_prefix(self.tool.as_str())
                .is_some_and(|rest| rest.starts_with("__"));
        }
        match self.specifier {
            Specifier::Path(_) if self.tool == "Edit" => EDIT_TOOLS.contains(&tool),
            Specifier::Path(_) if self.tool == "Read" => READ_TOOLS.contains(&tool),
            Specifier::Agent(_) => matches!(
                (self.tool.as_str(), tool),
                ("Task", "Agent") | ("Agent", "Task")
            ),
            _ => false,
        }
    }

    /// Whether the rule matches a use of `tool` with `input` (one part of a compound shell
    /// command is matched on its own by [`Rules::check`]).
    fn matches(&self, tool: &str, input: &Value, place: &Place<'_>) -> bool {
        if !self.names(tool) {
            return false;
        }
        match &self.specifier {
            Specifier::Any => true,
            Specifier::Command(pattern) => {
                command_text(input).is_some_and(|command| pattern.matches(command.trim()))
            }
            Specifier::Path(pattern) => file_path(tool, input, place)
                .is_some_and(|path| path_matches(pattern, &path, place)),
            Specifier::Domain(domain) => input
                .get("url")
                .and_then(Value::as_str)
                .and_then(host_of)
                .is_some_and(|host| domain_matches(domain, &host)),
            Specifier::Agent(kind) => {
                input.get("subagent_type").and_then(Value::as_str) == Some(kind.as_str())
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn specifier(tool: &str, inner: &str) -> Result<Specifier, String> {
    if tool == "Bash" {
        return Ok(Specifier::Command(
            if let Some(prefix) = inner.strip_suffix(":*") {
                if prefix.trim().is_empty() {
                    return Err("the prefix before ':*' is empty".to_owned());
                }
                CommandPattern::Prefix(prefix.trim().to_owned())
            } else if inner.contains('*') {
                CommandPattern::Wildcard(inner.to_owned())
            } else {
                CommandPattern::Exact(inner.to_owned())
            },
        ));
    }
    if PATH_TOOLS.contains(&tool) {
        return Ok(Specifier::Path(inner.to_owned()));
    }
    if tool == "WebFetch" {
        let Some(domain) = inner.strip_prefix("domain:") else {
            return Err("WebFetch rules are written WebFetch(domain:example.com)".to_owned());
        };
        let domain = domain.trim().to_ascii_lowercase();
        if domain.is_empty() || domain.contains('/') {
            return Err(format!("{domain:?} is not a domain"));
        }
        return Ok(Specifier::Domain(domain));
    }
    if tool == "Task" || tool == "Agent" {
        return Ok(Specifier::Agent(inner.to_owned()));
    }
    Err(format!(
        "Iris checks a specifier only for Bash, the file tools (Read, Edit, Write, MultiEdit, \
         NotebookEdit, Glob, Grep), WebFetch(domain:…) and Task/Agent; write {tool} without \
         parentheses to match every use"
    ))
}

impl CommandPattern {
    fn matches(&self, command: &str) -> bool {
        match self {
            Self::Exact(exact) => command == exact.trim(),
            Self::Prefix(prefix) => command
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace)),
            Self::Wildcard(pattern) => wildcard(pattern.trim(), command),
        }
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().map_or(("", &[][..]), |(f, r)| (*f, r));
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// Where the agent runs: what relative paths in rules and inputs are relative to.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The team's directory (the agent's working directory).
    pub cwd: &'a Path,
    /// The user's home directory, for `~/` in rules.
    pub home: Option<&'a Path>,
}

fn command_text(input: &Value) -> Option<&str> {
    input.get("command").and_then(Value::as_str)
}

/// The file a file tool acts on, absolute and with `.` and `..` resolved.
fn file_path(tool: &str, input: &Value, place: &Place<'_>) -> Option<PathBuf> {
    let raw = ["file_path", "notebook_path", "path"]
        .iter()
        .find_map(|key| input.get(*key).and_then(Value::as_str));
    let raw = match raw {
        Some(raw) => raw,
        // Glob and Grep search the working directory when given no path.
        None if matches!(tool, "Glob" | "Grep") => ".",
        None => return None,
    };
    Some(normalize(&place.cwd.join(raw)))
}

/// `path` with `.` and `..` resolved lexically (`/a/../..` is `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether the absolute `path` matches the rule's path glob.
fn path_matches(pattern: &str, path: &Path, place: &Place<'_>) -> bool {
    let anchored: PathBuf = if let Some(absolute) = pattern.strip_prefix("//") {
        PathBuf::from("/").join(absolute)
    } else if let Some(in_home) = pattern.strip_prefix("~/") {
        match place.home {
            Some(home) => home.join(in_home),
            None => return false,
        }
    } else {
        place.cwd.join(pattern.trim_start_matches('/'))
    };
    let anchored = normalize(&anchored);
    let pattern: Vec<String> = anchored
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    let path: Vec<String> = path
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    glob_parts(&pattern, &path)
}

/// Segment-wise glob: `**` matches any number of segments, other segments match one each.
fn glob_parts(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| glob_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                glob_segment(first, segment) && glob_parts(rest, path_rest)
            }
            None => false,
        },
    }
}

/// One path segment: `*` any characters, `?` one character.
fn glob_segment(pattern: &str, segment: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let segment: Vec<char> = segment.chars().collect();
    // Classic two-pointer matcher with backtracking to the last `*`.
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < segment.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == segment[s]) {
            p += 1;
            s += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, s));
            p += 1;
        } else if let Some((star_p, star_s)) = star {
            p = star_p + 1;
            s = star_s + 1;
            star = Some((star_p, star_s + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|ch| *ch == '*')
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn domain_matches(domain: &str, host: &str) -> bool {
    match domain.strip_prefix("*.") {
        Some(parent) => host == parent || host.ends_with(&format!(".{parent}")),
        None => host == domain,
    }
}

/// The parts of a shell command joined by `&&`, `||`, `;`, `|`, `&` or newlines (outside
/// quotes), trimmed; `None` when it holds a command substitution (`$(…)` or backticks),
/// which no rule can see into.
fn command_parts(command: &str) -> Option<Vec<&str>> {
    let bytes = command.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote: Option<u8> = None;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match quote {
            Some(open) => {
                if byte == b'\\' && open == b'"' {
                    index += 1;
                } else if byte == open {
                    quote = None;
                } else if open == b'"'
                    && (byte == b'`' || (byte == b'$' && bytes.get(index + 1) == Some(&b'(')))
                {
                    return None;
                }
            }
            None => match byte {
                b'\\' => index += 1,
                b'\'' | b'"' => quote = Some(byte),
                b'`' => return None,
                b'$' if bytes.get(index + 1) == Some(&b'(') => return None,
                // `2>&1`, `>&2`, `<&0`, `&>file`: a redirection, not a separator.
                b'&' if index > 0 && matches!(bytes[index - 1], b'>' | b'<') => {}
                b'&' if bytes.get(index + 1) == Some(&b'>') => {}
                b';' | b'\n' | b'|' | b'&' => {
                    parts.push(command[start..index].trim());
                    // `&&` and `||` are one separator.
                    if bytes.get(index + 1) == Some(&byte) {
                        index += 1;
                    }
                    start = index + 1;
                }
                _ => {}
            },
        }
        index += 1;
    }
    parts.push(command[start.min(command.len())..].trim());
    Some(parts.into_iter().filter(|part| !part.is_empty()).collect())
}

/// Which list a matching rule came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A `deny` rule matched.
    Deny(Rule),
    /// An `allow` rule matched (no deny rule did).
    Allow(Rule),
    /// An `ask` rule matched (no deny or allow rule did).
    Ask(Rule),
}

/// The three lists of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Allowed without asking.
    pub allow: Vec<Rule>,
    /// A person decides.
    pub ask: Vec<Rule>,
    /// Refused.
    pub deny: Vec<Rule>,
}

impl Rules {
    /// Whether there is no rule at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.ask.is_empty() && self.deny.is_empty()
    }

    /// The verdict of the rules in `layers` (for Iris: `settings.permissions`, then the
    /// team's) on a use of `tool` with `input`, or `None` when no rule matches: deny wins,
    /// then allow, then ask.
    #[must_use]
    pub fn check(
        layers: &[&Self],
        tool: &str,
        input: &Value,
        place: &Place<'_>,
    ) -> Option<Verdict> {
        let all =
            |list: fn(&Self) -> &Vec<Rule>| layers.iter().flat_map(move |rules| list(rules).iter());
        if tool == "Bash" {
            return Self::check_command(layers, input, place);
        }
        if let Some(rule) = all(|rules| &rules.deny).find(|rule| rule.matches(tool, input, place)) {
            return Some(Verdict::Deny(rule.clone()));
        }
        if let Some(rule) = all(|rules| &rules.allow).find(|rule| rule.matches(tool, input, place))
        {
            return Some(Verdict::Allow(rule.clone()));
        }
        all(|rules| &rules.ask)
            .find(|rule| rule.matches(tool, input, place))
            .map(|rule| Verdict::Ask(rule.clone()))
    }

    /// A shell command: denied or asked if any part is, allowed only if every part is.
    fn check_command(layers: &[&Self], input: &Value, place: &Place<'_>) -> Option<Verdict> {
        let command = command_text(input).unwrap_or("");
        let parts = command_parts(command);
        let part_input = |part: &str| serde_json::json!({ "command": part });
        let find = |list: fn(&Self) -> &Vec<Rule>, part: &str| {
            let input = part_input(part);
            layers
                .iter()
                .flat_map(|rules| list(rules).iter())
                .find(|rule| rule.matches("Bash", &input, place))
                .cloned()
        };
        // What any rule sees when the command cannot be split: the whole of it.
        let whole = [command];
        let pieces: &[&str] = parts.as_deref().unwrap_or(&whole);
        // A bare `Bash` rule matches any command, whatever it holds.
        for piece in pieces.iter().chain(std::iter::once(&command)) {
            if let Some(rule) = find(|rules| &rules.deny, piece) {
                return Some(Verdict::Deny(rule));
            }
        }
        if let Some(parts) = &parts {
            let allowed: Option<Vec<Rule>> = parts
                .iter()
                .map(|part| find(|rules| &rules.allow, part))
                .collect();
            if let Some(first) = allowed.and_then(|rules| rules.into_iter().next()) {
                return Some(Verdict::Allow(first));
            }
        } else if let Some(rule) = layers
            .iter()
            .flat_map(|rules| rules.allow.iter())
            .find(|rule| rule.specifier == Specifier::Any && rule.names("Bash"))
        {
            return Some(Verdict::Allow(rule.clone()));
        }
        pieces
            .iter()
            .chain(std::iter::once(&command))
            .find_map(|piece| find(|rules| &rules.ask, piece))
            .map(Verdict::Ask)
    }
}

/// The rules in force for one team, shared and replaced whole on a reload.
pub type SharedRules = Arc<Rules>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(allow: &[&str], ask: &[&str], deny: &[&str]) -> Rules {
        let parse = |list: &[&str]| list.iter().map(|text| Rule::parse(text).unwrap()).collect();
        Rules {
            allow: parse(allow),
            ask: parse(ask),
            deny: parse(deny),
        }
    }

    fn place() -> Place<'static> {
        Place {
            cwd: Path::new("/work/app"),
            home: Some(Path::new("/home/me")),
        }
    }

    fn verdict(rules: &Rules, tool: &str, input: Value) -> Option<String> {
        Rules::check(&[rules], tool, &input, &place()).map(|verdict| match verdict {
            Verdict::Deny(rule) => format!("deny {rule}"),
            Verdict::Allow(rule) => format!("allow {rule}"),
            Verdict::Ask(rule) => format!("ask {rule}"),
        })
    }

    #[test]
    fn rules_parse_or_say_what_is_wrong() {
        for good in [
            "Read",
            "Edit(src/**)",
            "Bash(git status:*)",
            "Bash(git * main)",
            "mcp__iris__send_message",
            "mcp__iris",
            "mcp__iris__*",
            "WebFetch(domain:example.com)",
            "Task(Explore)",
            "Bash(*)",
        ] {
            assert_eq!(Rule::parse(good).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "empty rule"),
            ("Edit(src/**", "must end with ')'"),
            ("Edit)", "')' without '('"),
            ("Bash()", "empty specifier"),
            ("Ba sh", "not a tool name"),
            ("(x)", "not a tool name"),
            ("Bash(:*)", "prefix before ':*' is empty"),
            ("WebFetch(example.com)", "WebFetch(domain:example.com)"),
            ("WebSearch(cats)", "write WebSearch without parentheses"),
            ("Re*d", "mcp__<server>__*"),
        ] {
            let error = Rule::parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    #[test]
    fn deny_wins_then_allow_then_ask() {
        let rules = rules(
            &["Write(notes/**)", "Read"],
            &["Write"],
            &["Write(notes/secret*)"],
        );
        assert_eq!(
            verdict(&rules, "Write", json!({"file_path": "notes/a/b.md"})),
            Some("allow Write(notes/**)".to_owned())
        );
        assert_eq!(
            verdict(
                &rules,
                "Write",
                json!({"file_path": "/work/app/notes/secret.txt"})
            ),
            Some("deny Write(notes/secret*)".to_owned())
        );
        assert_eq!(
            verdict(&rules, "Write", json!({"file_path": "src/main.rs"})),
            Some("ask Write".to_owned())
        );
        assert_eq!(
            verdict(&rules, "Read", json!({"file_path": "/etc/passwd"})),
            Some("allow Read".to_owned())
        );
        assert_eq!(verdict(&rules, "Bash", json!({"command": "ls"})), None);
        // Layers: defaults first, then the team's; a deny in either wins.
        let defaults = rules_of_deny("Read(//etc/**)");
        assert!(matches!(
            Rules::check(
                &[&defaults, &rules],
                "Read",
                &json!({"file_path": "/etc/passwd"}),
                &place()
            ),
            Some(Verdict::Deny(_))
        ));
    }

    fn rules_of_deny(rule: &str) -> Rules {
        rules(&[], &[], &[rule])
    }

    #[test]
    fn paths_resolve_dots_and_anchors() {
        let rules = rules(
            &["Edit(notes/**)", "Read(~/docs/*.md)", "Read(//tmp/x)"],
            &[],
            &[],
        );
        let allowed =
            |tool: &str, path: &str| verdict(&rules, tool, json!({"file_path": path})).is_some();
        assert!(allowed("Edit", "notes/x.md"));
        assert!(
            allowed("Write", "./notes/deep/er/x.md"),
            "Edit(...) covers Write"
        );
        assert!(
            !allowed("Edit", "notes/../src/x.rs"),
            "'..' is resolved before matching"
        );
        assert!(!allowed("Edit", "/work/app/notesX/x.md"));
        assert!(
            !allowed("Read", "notes/x.md"),
            "Edit(...) does not cover Read"
        );
        assert!(allowed("Read", "/home/me/docs/a.md"));
        assert!(
            !allowed("Read", "/home/me/docs/sub/a.md"),
            "'*' stays within a name"
        );
        assert!(allowed("Read", "/tmp/x"));
        assert!(
            verdict(
                &rules,
                "NotebookEdit",
                json!({"notebook_path": "notes/n.ipynb"})
            )
            .is_some()
        );
        // Glob and Grep without a path search the working directory.
        let rules = rules_allow("Read(/**)");
        assert!(verdict(&rules, "Grep", json!({"pattern": "x"})).is_some());
        assert!(verdict(&rules, "Glob", json!({"pattern": "*", "path": "/etc"})).is_none());
    }

    fn rules_allow(rule: &str) -> Rules {
        rules(&[rule], &[], &[])
    }

    #[test]
    fn shell_commands_are_checked_part_by_part() {
        let rules = rules(
            &["Bash(git status:*)", "Bash(npm run * --silent)", "Bash(ls)"],
            &["Bash(git push:*)"],
            &["Bash(rm:*)"],
        );
        let on = |command: &str| verdict(&rules, "Bash", json!({"command": command}));
        assert_eq!(
            on("git status"),
            Some("allow Bash(git status:*)".to_owned())
        );
        assert_eq!(
            on("git status --short"),
            Some("allow Bash(git status:*)".to_owned())
        );
        assert_eq!(on("git statusx"), None, "a prefix ends at a word");
        assert_eq!(
            on("npm run build --silent"),
            Some("allow Bash(npm run * --silent)".to_owned())
        );
        assert_eq!(on("ls && git status"), Some("allow Bash(ls)".to_owned()));
        assert_eq!(on("ls && cat x"), None, "every part must be allowed");
        assert_eq!(on("ls; rm -rf /"), Some("deny Bash(rm:*)".to_owned()));
        assert_eq!(on("ls | rm x"), Some("deny Bash(rm:*)".to_owned()));
        assert_eq!(
            on("ls && git push origin"),
            Some("ask Bash(git push:*)".to_owned())
        );
        assert_eq!(
            on("ls $(rm -rf /)"),
            None,
            "a substitution is never allowed"
        );
        assert_eq!(on("git status `id`"), None);
        assert_eq!(
            on("echo 'a && b'"),
            None,
            "separators inside quotes do not split"
        );
        assert_eq!(on("ls '&&' "), None);
        // Redirections are not separators.
        assert_eq!(
            on("git status 2>&1"),
            Some("allow Bash(git status:*)".to_owned())
        );
        assert_eq!(on("ls &> out.txt"), None, "`&>` is not a separator");
        assert_eq!(on("ls & rm x"), Some("deny Bash(rm:*)".to_owned()));
        let any = rules_allow("Bash");
        assert_eq!(
            verdict(&any, "Bash", json!({"command": "ls $(x)"})),
            Some("allow Bash".to_owned())
        );
    }

    #[test]
    fn mcp_tools_domains_and_agents() {
        let rules = rules(
            &[
                "mcp__iris__send_message",
                "mcp__docs",
                "WebFetch(domain:*.rust-lang.org)",
                "Task(Explore)",
            ],
            &[],
            &["mcp__evil__*", "WebFetch(domain:example.com)"],
        );
        assert!(verdict(&rules, "mcp__iris__send_message", json!({})).is_some());
        assert!(verdict(&rules, "mcp__iris__session_delete", json!({})).is_none());
        assert!(verdict(&rules, "mcp__docs__search", json!({})).is_some());
        assert!(verdict(&rules, "mcp__docsx__search", json!({})).is_none());
        assert_eq!(
            verdict(&rules, "mcp__evil__x", json!({})),
            Some("deny mcp__evil__*".to_owned())
        );
        let fetch = |url: &str| verdict(&rules, "WebFetch", json!({"url": url}));
        assert_eq!(
            fetch("https://example.com/a"),
            Some("deny WebFetch(domain:example.com)".to_owned())
        );
        assert_eq!(
            fetch("https://doc.rust-lang.org/std"),
            Some("allow WebFetch(domain:*.rust-lang.org)".to_owned())
        );
        assert_eq!(
            fetch("https://user@rust-lang.org:443/"),
            Some("allow WebFetch(domain:*.rust-lang.org)".to_owned())
        );
        assert_eq!(fetch("https://evil-rust-lang.org/"), None);
        assert!(verdict(&rules, "Task", json!({"subagent_type": "Explore"})).is_some());
        assert!(verdict(&rules, "Agent", json!({"subagent_type": "Explore"})).is_some());
        assert!(verdict(&rules, "Task", json!({"subagent_type": "Plan"})).is_none());
    }
}
