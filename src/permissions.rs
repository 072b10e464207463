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
//!   and denied or asked if any part is. One that holds what a rule cannot follow (a
//!   substitution or expansion, parentheses, a here-document, a backslash, a comment, an
//!   unclosed quote) is allowed only by `Bash` itself; deny and ask rules still see every
//!   piece of it, also cut at every separator regardless of quotes and without quotes,
//!   backslashes, assignments and wrapper commands, so a misread quote hides nothing from
//!   them.
//! - `Read(path)`, `Edit(path)`, `Write(path)`, ...: the file the tool touches, as a
//!   gitignore-style glob (`*` within a name, `**` across directories, `?` one character).
//!   `//abs/path` is absolute, `~/path` is in the home directory, `path/x`, `./path` and
//!   `/path` are relative to the team's directory, and a pattern without `/` matches that
//!   name at any depth below it. `Edit` covers every tool that edits files (`Edit`,
//!   `MultiEdit`, `Write`, `NotebookEdit`), `Read` every tool that reads them (`Read`,
//!   `Glob`, `Grep`, `LS`, `NotebookRead`). The tool's path is compared after resolving
//!   `~/`, `.` and `..`, without following symbolic links. For deny and ask rules a rule
//!   naming a directory covers what is in it, and a search (`Glob`, `Grep`, `LS`) of a
//!   directory that holds what the rule names matches it; an allow rule lets a search
//!   through only if it covers everything below the searched directory.
//! - `WebFetch(domain:example.com)`: a fetch of that host, read as a WHATWG URL parser
//!   reads it; `domain:*.example.com` also of its subdomains.
//! - `Task(Explore)` (or `Agent(Explore)`): a subagent of that type.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Tools that edit files: what an `Edit(path)` rule covers.
const EDIT_TOOLS: &[&str] = &["Edit", "MultiEdit", "Write", "NotebookEdit"];
/// Tools that read files: what a `Read(path)` rule covers.
const READ_TOOLS: &[&str] = &["Read", "Glob", "Grep", "LS", "NotebookRead"];
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
    "LS",
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
            // `Edit(*)` is a glob like any other (names at any depth below the team
            // directory); `Bash(*)` and the others mean every use.
            Some("*") if !PATH_TOOLS.contains(&tool) => Specifier::Any,
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

    /// Whether the rule names `tool` (before looking at its specifier). `Edit` (with or
    /// without a path) covers every tool that edits files, `Read` every tool that reads
    /// them, and `Task` and `Agent` are one tool under two names.
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
        match self.tool.as_str() {
            "Edit" => EDIT_TOOLS.contains(&tool),
            "Read" => READ_TOOLS.contains(&tool),
            "Task" => tool == "Agent",
            "Agent" => tool == "Task",
            _ => false,
        }
    }

    /// Whether the rule matches a use of `tool` with `input` (one part of a compound shell
    /// command is matched on its own by [`Rules::check`]). `cautious` (deny and ask rules):
    /// a search of a directory (`Glob`, `Grep`) that holds something the rule names counts
    /// as a match, so a search cannot read around a denied path.
    fn matches(&self, tool: &str, input: &Value, place: &Place<'_>, cautious: bool) -> bool {
        if !self.names(tool) {
            return false;
        }
        match &self.specifier {
            Specifier::Any => true,
            Specifier::Command(pattern) => {
                command_text(input).is_some_and(|command| pattern.matches(shell_trim(command)))
            }
            Specifier::Path(pattern) => {
                let Some(target) = file_target(tool, input, place) else {
                    return false;
                };
                let pattern = PathPattern::new(pattern, place);
                if cautious {
                    // As in a .gitignore, a rule that names a directory names what is in
                    // it; a search of a directory that holds what the rule names does too.
                    target.path.ancestors().any(|path| pattern.matches(path))
                        || (target.is_search && pattern.is_within(&target.path))
                } else if target.is_search {
                    // Allowed only if the rule covers everything the search can reach.
                    pattern.covers_all_below(&target.path)
                } else {
                    pattern.matches(&target.path)
                }
            }
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
        if inner.contains(['[', ']', '{', '}']) {
            return Err(
                "character classes ([ab]) and braces ({a,b}) are not supported in path rules: \
                 write one rule per name"
                    .to_owned(),
            );
        }
        return Ok(Specifier::Path(inner.to_owned()));
    }
    if tool == "WebFetch" {
        let Some(domain) = inner.strip_prefix("domain:") else {
            return Err("WebFetch rules are written WebFetch(domain:example.com)".to_owned());
        };
        let domain = domain.trim().trim_end_matches('.');
        let (wild, name) = match domain.strip_prefix("*.") {
            Some(name) => ("*.", name),
            None => ("", domain),
        };
        // As a URL's host is read: lowercase, international names in punycode.
        return match url::Host::parse(name) {
            Ok(host) if !name.is_empty() && !name.contains('/') => {
                Ok(Specifier::Domain(format!("{wild}{host}")))
            }
            _ => Err(format!("{domain:?} is not a domain")),
        };
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
            Self::Exact(exact) => command == shell_trim(exact),
            Self::Prefix(prefix) => command
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(is_blank)),
            Self::Wildcard(pattern) => {
                let pattern = shell_trim(pattern);
                // A trailing ` *` is "with any arguments, or none", as `:*` is: the CLI
                // itself suggests `touch a *` for the command `touch a`.
                wildcard(pattern, command)
                    || pattern
                        .strip_suffix(" *")
                        .is_some_and(|bare| wildcard(bare.trim_end(), command))
            }
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

/// What a file tool acts on: a file, or (for `Glob` and `Grep`) a directory it searches.
struct FileTarget {
    /// Absolute, with `~/`, `.` and `..` resolved.
    path: PathBuf,
    /// A directory search: whatever lies below `path` may be read.
    is_search: bool,
}

/// The file or directory a file tool acts on.
fn file_target(tool: &str, input: &Value, place: &Place<'_>) -> Option<FileTarget> {
    let text = |key: &str| input.get(key).and_then(Value::as_str);
    let absolute = |raw: &str| -> Option<PathBuf> {
        let raw = match (raw.strip_prefix('~'), place.home) {
            (Some(""), Some(home)) => home.to_path_buf(),
            (Some(rest), Some(home)) if rest.starts_with('/') => home.join(&rest[1..]),
            (Some(rest), None) if rest.is_empty() || rest.starts_with('/') => return None,
            _ => PathBuf::from(raw),
        };
        Some(normalize(&place.cwd.join(raw)))
    };
    if matches!(tool, "Glob" | "Grep" | "LS") {
        // The directory searched: `path` (default: the working directory), and for Glob
        // the fixed start of its pattern too (`/etc/*`, `../../**`).
        let mut dir = absolute(text("path").unwrap_or("."))?;
        if tool == "Glob"
            && let Some(pattern) = text("pattern")
        {
            dir = absolute(&dir.join(literal_prefix(pattern)).to_string_lossy())?;
        }
        return Some(FileTarget {
            path: dir,
            is_search: true,
        });
    }
    let key = match tool {
        "NotebookEdit" | "NotebookRead" => "notebook_path",
        _ => "file_path",
    };
    Some(FileTarget {
        path: absolute(text(key)?)?,
        is_search: false,
    })
}

/// The leading segments of a glob pattern that hold no wildcard (`src/a/*.rs` → `src/a`).
fn literal_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    if pattern.starts_with('/') {
        prefix.push("/");
    }
    for segment in pattern.split('/').filter(|segment| !segment.is_empty()) {
        if segment.contains(['*', '?', '[', '{']) {
            break;
        }
        prefix.push(segment);
    }
    prefix
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

/// A rule's path glob, anchored: its segments from the root.
struct PathPattern {
    segments: Vec<String>,
}

impl PathPattern {
    /// `//abs` is absolute, `~/x` in the home directory, `/x`, `./x` and `x/y` relative to
    /// the working directory; a pattern with no `/` in it (`*.env`) matches that name at
    /// any depth below the working directory, as in a `.gitignore`.
    fn new(pattern: &str, place: &Place<'_>) -> Self {
        let anchored: PathBuf = if let Some(absolute) = pattern.strip_prefix("//") {
            PathBuf::from("/").join(absolute)
        } else if let Some(in_home) = pattern.strip_prefix("~/") {
            match place.home {
                Some(home) => home.join(in_home),
                // Matches nothing: no path has this segment.
                None => {
                    return Self {
                        segments: vec!["/".to_owned(), "\0no home".to_owned()],
                    };
                }
            }
        } else if !pattern.trim_end_matches('/').contains('/') {
            place.cwd.join("**").join(pattern)
        } else {
            place.cwd.join(pattern.trim_start_matches('/'))
        };
        Self {
            segments: segments(&normalize(&anchored)),
        }
    }

    fn matches(&self, path: &Path) -> bool {
        glob_parts(&self.segments, &segments(path))
    }

    /// Whether the pattern matches `dir` and everything below it: it ends in `**` (which
    /// takes any further segments) and matches `dir`.
    fn covers_all_below(&self, dir: &Path) -> bool {
        self.segments.last().is_some_and(|last| last == "**")
            && glob_parts(&self.segments, &segments(dir))
    }

    /// Whether something this pattern can match may lie in the directory `dir` or below
    /// it (a search of `dir` could read it).
    fn is_within(&self, dir: &Path) -> bool {
        let dir = segments(dir);
        // Every directory segment must be matched by the pattern's segment in the same
        // place, until the pattern reaches `**` (which can reach below anything).
        for (index, segment) in dir.iter().enumerate() {
            match self.segments.get(index) {
                None => return false,
                Some(part) if part == "**" => return true,
                Some(part) if !glob_segment(part, segment) => return false,
                Some(_) => {}
            }
        }
        true
    }
}

fn segments(path: &Path) -> Vec<String> {
    path.components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect()
}

/// Segment-wise glob: `**` matches any number of segments, other segments match one each.
/// Dynamic programming over (pattern, path) positions: linear in their product, whatever
/// the number of `**`.
fn glob_parts(pattern: &[String], path: &[String]) -> bool {
    // matched[j]: pattern[i..] matches path[j..], computed from the last pattern segment
    // back.
    let mut matched = vec![false; path.len() + 1];
    matched[path.len()] = true;
    for part in pattern.iter().rev() {
        let mut next = vec![false; path.len() + 1];
        for j in (0..=path.len()).rev() {
            next[j] = if part == "**" {
                matched[j] || (j < path.len() && next[j + 1])
            } else {
                j < path.len() && glob_segment(part, &path[j]) && matched[j + 1]
            };
        }
        matched = next;
    }
    matched[0]
}

/// One path segment: `*` any characters, `?` one character.
fn glob_segment(pattern: &str, segment: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let segment: Vec<char> = segment.chars().collect();
    // Two pointers, backtracking to the last `*`. A `*` in the pattern is a wildcard even
    // when the name holds a `*` too.
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < segment.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, s));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == '?' || pattern[p] == segment[s]) {
            p += 1;
            s += 1;
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

/// The host a URL names, as a WHATWG URL parser (the one the CLI's fetch uses) reads it:
/// lowercase, percent-decoded, without a trailing dot. `None` when it is not a URL.
fn host_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn domain_matches(domain: &str, host: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    match domain.strip_prefix("*.") {
        Some(parent) => host == parent || host.ends_with(&format!(".{parent}")),
        None => host == domain,
    }
}

/// A shell command cut into the simple commands it runs.
struct Split<'c> {
    /// The parts, trimmed, with leading `!`, `{`, `}` and control keywords (`if`, `then`,
    /// `do`...) removed.
    parts: Vec<&'c str>,
    /// Something no rule can see into or this split cannot follow: a substitution (`$(…)`,
    /// backticks, `<(…)`), a subshell or group in parentheses, a here-document, or a quote
    /// left open. Such a command is never allowed by a rule but `Bash` itself.
    opaque: bool,
}

/// Splits `command` at `&&`, `||`, `;`, `|`, `&`, newlines and parentheses outside quotes,
/// skipping comments.
fn split_command(command: &str) -> Split<'_> {
    let bytes = command.as_bytes();
    let mut parts = Vec::new();
    let mut opaque = false;
    let mut start = 0;
    let mut quote: Option<u8> = None;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if let Some(open) = quote {
            if byte == b'\\' && open == b'"' {
                index += 1;
            } else if byte == open {
                quote = None;
            } else if open == b'"'
                && (byte == b'`' || (byte == b'$' && bytes.get(index + 1) == Some(&b'(')))
            {
                opaque = true;
            }
            index += 1;
            continue;
        }
        let word_start = index == 0
            || bytes[index - 1].is_ascii_whitespace()
            || b";|&()\n".contains(&bytes[index - 1]);
        match byte {
            b'\\' => index += 1,
            b'\'' | b'"' => {
                // `$'…'` has escapes of its own (`\'`) that this split does not read.
                if byte == b'\'' && index > 0 && bytes[index - 1] == b'$' {
                    opaque = true;
                }
                quote = Some(byte);
            }
            b'#' if word_start => {
                // A comment runs to the end of the line; the newline still separates. What
                // starts a comment depends on escapes and expansions this split does not
                // follow, so a command with one is never allowed by a rule but `Bash`.
                opaque = true;
                parts.push(command.get(start..index).unwrap_or(""));
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
                start = index;
                continue;
            }
            b'<' if bytes.get(index + 1) == Some(&b'<') => opaque = true,
            b'`' => {
                opaque = true;
                parts.push(command.get(start..index).unwrap_or(""));
                start = index + 1;
            }
            // `2>&1`, `>&2`, `<&0`, `&>file`: a redirection, not a separator.
            b'&' if index > 0 && matches!(bytes[index - 1], b'>' | b'<') => {}
            b'&' if bytes.get(index + 1) == Some(&b'>') => {}
            b'(' | b')' => {
                opaque = true;
                // `$(`, `<(`, `>(`: the sign belongs to the substitution, not the part.
                let end = if byte == b'('
                    && index > 0
                    && matches!(bytes[index - 1], b'$' | b'<' | b'>')
                {
                    index - 1
                } else {
                    index
                };
                parts.push(command.get(start..end).unwrap_or(""));
                start = index + 1;
            }
            b';' | b'\n' | b'|' | b'&' => {
                parts.push(command.get(start..index).unwrap_or(""));
                // `&&`, `||` and `;;` are one separator.
                if bytes.get(index + 1) == Some(&byte) {
                    index += 1;
                }
                start = index + 1;
            }
            _ => {}
        }
        index += 1;
    }
    // An open quote; escapes (`\;`, `\>&`) and expansions that bash may evaluate again
    // (`${x@P}`, `$[…]`, `$(…)` inside single quotes that an arithmetic context reads):
    // this split cannot follow them.
    if quote.is_some()
        || command.contains(['\\', '`'])
        || ["$(", "${", "$["].iter().any(|sign| command.contains(sign))
    {
        opaque = true;
    }
    parts.push(
        command
            .get(start.min(command.len())..command.len())
            .unwrap_or(""),
    );
    let parts: Vec<&str> = parts
        .into_iter()
        .map(strip_keywords)
        .filter(|part| !part.is_empty())
        .collect();
    if parts.iter().any(|part| evaluates(part)) {
        opaque = true;
    }
    Split { parts, opaque }
}

/// Words the shell reads before a command: control words and `!`, `{`, `}`.
const KEYWORDS: &[&str] = &[
    "!", "{", "}", "if", "then", "elif", "else", "do", "while", "until", "time",
];

/// What bash splits words at: space and tab (newlines separate commands). Other
/// whitespace (`\r`, a no-break space...) is part of a word to bash.
fn is_blank(ch: char) -> bool {
    ch == ' ' || ch == '\t'
}

/// `text` without leading and trailing spaces and tabs.
fn shell_trim(text: &str) -> &str {
    text.trim_matches(is_blank)
}

/// A part without the shell's leading control words, so that `if rm x` is seen as `rm x`.
fn strip_keywords(part: &str) -> &str {
    let mut rest = shell_trim(part);
    loop {
        let word_end = rest.find(is_blank).unwrap_or(rest.len());
        let word = &rest[..word_end];
        if KEYWORDS.contains(&word) && word_end < rest.len() {
            rest = rest[word_end..].trim_start_matches(is_blank);
        } else {
            return rest;
        }
    }
}

/// Builtins that read a name (with an array subscript bash evaluates, running any `$(…)`
/// in it, even one assembled at run time or coming from a file name) or run text as code.
const EVALUATING: &[&str] = &[
    "let",
    "declare",
    "typeset",
    "local",
    "readonly",
    "export",
    "unset",
    "eval",
    "source",
    ".",
    "mapfile",
    "readarray",
    "read",
    "alias",
    "trap",
    "[[",
];
/// Builtins that do so with `-v NAME`.
const EVALUATING_WITH_V: &[&str] = &["test", "[", "printf"];

/// Whether a part runs a builtin that may evaluate text as code (see [`EVALUATING`]).
fn evaluates(part: &str) -> bool {
    unwrap_command(part)
        .iter()
        .chain(std::iter::once(&part.to_owned()))
        .any(|candidate| {
            let mut words = candidate.split(is_blank).filter(|word| !word.is_empty());
            match words.next() {
                Some(first) if EVALUATING.contains(&first) => true,
                Some(first) if EVALUATING_WITH_V.contains(&first) => {
                    words.any(|word| word.starts_with("-v"))
                }
                _ => false,
            }
        })
}

/// Every piece of `command` a deny or ask rule should see: its parts as the shell reads
/// them, its parts cut at every separator character ignoring quotes (so a quote this split
/// misreads cannot hide a command), and the whole command.
fn suspect_parts(command: &str, split: &Split<'_>) -> Vec<String> {
    let mut pieces: Vec<String> = split.parts.iter().map(|part| (*part).to_owned()).collect();
    pieces.extend(
        command
            .split([';', '\n', '|', '&', '(', ')', '`'])
            .map(|part| strip_keywords(part.trim_end_matches(['$', '<', '>']).trim()).to_owned())
            .filter(|part| !part.is_empty()),
    );
    pieces.push(command.trim().to_owned());
    // Each also as the command it runs: without quotes and backslashes (`'rm'`, `\rm`,
    // `r''m` are `rm`), leading assignments (`FOO=1 rm`) and wrappers (`command rm`,
    // `sudo -u x rm`, `xargs rm`).
    let unwrapped: Vec<String> = pieces
        .iter()
        .flat_map(|piece| unwrap_command(piece))
        .collect();
    pieces.extend(unwrapped);
    pieces
}

/// `part` without quotes, backslashes, leading assignments, control words and wrapper
/// commands with their options; after a wrapper, also every later start (its options may
/// take arguments: `sudo -u root rm` runs `rm`).
fn unwrap_command(part: &str) -> Vec<String> {
    const WRAPPERS: &[&str] = &[
        "command", "exec", "env", "builtin", "nohup", "nice", "sudo", "xargs", "time",
    ];
    let plain: String = part
        .chars()
        .filter(|ch| !matches!(ch, '\'' | '"' | '\\'))
        .collect();
    let mut words = plain.split_whitespace().peekable();
    let mut after_wrapper = false;
    while let Some(word) = words.peek() {
        let assignment = word.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        });
        let option = after_wrapper && word.starts_with('-');
        if WRAPPERS.contains(word) {
            after_wrapper = true;
        } else if !(assignment || option || KEYWORDS.contains(word)) {
            break;
        }
        words.next();
    }
    let rest: Vec<&str> = words.collect();
    if after_wrapper {
        (0..rest.len())
            .map(|start| rest[start..].join(" "))
            .collect()
    } else {
        vec![rest.join(" ")]
    }
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

    /// How many rules each list holds: `1 allow, 0 ask, 2 deny`.
    #[must_use]
    pub fn counts(&self) -> String {
        format!(
            "{} allow, {} ask, {} deny",
            self.allow.len(),
            self.ask.len(),
            self.deny.len()
        )
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
        if tool == "Bash" {
            return Self::check_command(layers, input, place);
        }
        let find = |list: fn(&Self) -> &Vec<Rule>, cautious: bool| {
            layers
                .iter()
                .flat_map(|rules| list(rules).iter())
                .find(|rule| rule.matches(tool, input, place, cautious))
                .cloned()
        };
        if let Some(rule) = find(|rules| &rules.deny, true) {
            return Some(Verdict::Deny(rule));
        }
        if let Some(rule) = find(|rules| &rules.allow, false) {
            return Some(Verdict::Allow(rule));
        }
        find(|rules| &rules.ask, true).map(Verdict::Ask)
    }

    /// A shell command: denied or asked if any part is, allowed only if every part is (and
    /// only by `Bash` itself when it holds something no rule can see into).
    fn check_command(layers: &[&Self], input: &Value, place: &Place<'_>) -> Option<Verdict> {
        let command = command_text(input).unwrap_or("");
        let split = split_command(command);
        let suspects = suspect_parts(command, &split);
        let find = |list: fn(&Self) -> &Vec<Rule>, part: &str| {
            let input = serde_json::json!({ "command": part });
            layers
                .iter()
                .flat_map(|rules| list(rules).iter())
                .find(|rule| rule.matches("Bash", &input, place, true))
                .cloned()
        };
        if let Some(rule) = suspects
            .iter()
            .find_map(|part| find(|rules| &rules.deny, part))
        {
            return Some(Verdict::Deny(rule));
        }
        let allowed = if split.opaque {
            layers
                .iter()
                .flat_map(|rules| rules.allow.iter())
                .find(|rule| rule.specifier == Specifier::Any && rule.names("Bash"))
                .cloned()
        } else {
            let rules: Option<Vec<Rule>> = split
                .parts
                .iter()
                .map(|part| find(|rules| &rules.allow, part))
                .collect();
            rules.and_then(|rules| rules.into_iter().next())
        };
        if let Some(rule) = allowed {
            return Some(Verdict::Allow(rule));
        }
        suspects
            .iter()
            .find_map(|part| find(|rules| &rules.ask, part))
            .map(Verdict::Ask)
    }
}

/// What people allowed for good for one pair (`iris approve --always`): rules in Claude
/// Code's syntax (checked with the allow rules) and exact tool inputs, each with the id of the
/// stored record it came from.
#[derive(Debug, Clone, Default)]
pub struct PairRules {
    /// The rules, as an allow list.
    pub rules: Rules,
    /// Rule text → record id.
    sources: Vec<(String, String)>,
    /// (tool, exact input, record id).
    exact: Vec<(String, Value, String)>,
}

impl PairRules {
    /// Adds a rule stored as `id`.
    pub fn add_rule(&mut self, rule: Rule, id: String) {
        self.sources.push((rule.to_string(), id));
        self.rules.allow.push(rule);
    }

    /// Adds an exact input of `tool`, stored as `id`.
    pub fn add_exact(&mut self, tool: String, input: Value, id: String) {
        self.exact.push((tool, input, id));
    }

    /// The record a matching rule came from.
    #[must_use]
    pub fn source(&self, rule: &Rule) -> Option<&str> {
        let text = rule.to_string();
        self.sources
            .iter()
            .find(|(rule, _)| *rule == text)
            .map(|(_, id)| id.as_str())
    }

    /// The record that allows exactly this use of `tool`, if any.
    #[must_use]
    pub fn exact(&self, tool: &str, input: &Value) -> Option<&str> {
        self.exact
            .iter()
            .find(|(allowed, exact, _)| allowed == tool && exact == input)
            .map(|(_, _, id)| id.as_str())
    }

    /// How many rules and exact inputs it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.allow.len() + self.exact.len()
    }

    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a use of `tool` with `input` reaches into `dir` (Iris's own directory: its
/// configuration, database and approver token), which no rule may open to an agent: a file
/// tool on a path in it, a search of it or of a directory holding it, or a shell command
/// naming it (by its absolute path, by `~/…` when it is in the home directory, or the
/// approver file's name). A shell command can reach a file without naming it, so this is a
/// guard against the obvious, not a sandbox.
#[must_use]
pub fn touches(tool: &str, input: &Value, place: &Place<'_>, dir: &Path) -> bool {
    if tool == "Bash" {
        let Some(command) = command_text(input) else {
            return false;
        };
        let absolute = dir.to_string_lossy();
        let in_home = place
            .home
            .and_then(|home| dir.strip_prefix(home).ok())
            .map(|rest| format!("~/{}", rest.to_string_lossy()));
        return command.contains(absolute.as_ref())
            || in_home.is_some_and(|short| command.contains(&short))
            || command.contains("approver.json");
    }
    if !READ_TOOLS.contains(&tool) && !EDIT_TOOLS.contains(&tool) {
        return false;
    }
    file_target(tool, input, place).is_some_and(|target| {
        target.path.starts_with(dir) || (target.is_search && dir.starts_with(&target.path))
    })
}

/// What "allow always" stores for a request: the allow rules the CLI suggested
/// (`permission_suggestions` of type `addRules`), each checked by [`Rule::parse`]; none when
/// it suggested none that parse (then the exact tool and input are kept).
#[must_use]
pub fn suggested_rules(suggestions: &Value) -> Vec<Rule> {
    let Some(list) = suggestions.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter(|entry| {
            entry.get("type").and_then(Value::as_str) == Some("addRules")
                && entry.get("behavior").and_then(Value::as_str) == Some("allow")
        })
        .filter_map(|entry| entry.get("rules").and_then(Value::as_array))
        .flatten()
        .filter_map(|rule| {
            let tool = rule.get("toolName").and_then(Value::as_str)?;
            let text = match rule.get("ruleContent").and_then(Value::as_str) {
                Some(content) if !content.is_empty() => format!("{tool}({content})"),
                _ => tool.to_owned(),
            };
            Rule::parse(&text).ok()
        })
        .collect()
}

/// A tool's input in a few words, for people: the command of `Bash`, the file of a file tool,
/// the address of `WebFetch`, else the input as compact JSON; at most `max` characters.
#[must_use]
pub fn summarize(tool: &str, input: &Value, max: usize) -> String {
    let field = |name: &str| input.get(name).and_then(Value::as_str);
    let detail = field("command")
        .or_else(|| field("file_path"))
        .or_else(|| field("notebook_path"))
        .or_else(|| field("url"))
        .or_else(|| field("pattern"))
        .or_else(|| field("path"))
        .map_or_else(|| input.to_string(), str::to_owned);
    let detail = detail.replace(['\n', '\r'], " ");
    let text = if detail.is_empty() || detail == "{}" || detail == "null" {
        tool.to_owned()
    } else {
        format!("{tool} {detail}")
    };
    if text.chars().count() <= max {
        text
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

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
            Some("deny Bash(rm:*)".to_owned()),
            "a deny rule sees into a substitution"
        );
        assert_eq!(on("ls $(id)"), None, "a substitution is never allowed");
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

    /// Found by a review: each once allowed what it must not.
    #[test]
    fn commands_a_simple_split_would_misread_are_not_allowed() {
        let rules = rules(
            &["Bash(echo:*)", "Bash(cat:*)", "Bash(true)"],
            &[],
            &["Bash(rm:*)"],
        );
        let on = |command: &str| verdict(&rules, "Bash", json!({"command": command}));
        let denied = Some("deny Bash(rm:*)".to_owned());
        // A quote in a comment, in `$'…'` or in a here-document must not hide what follows.
        assert_eq!(on("echo hi # it's\nrm -rf /"), denied);
        assert_eq!(on("echo $'\\'' ; rm -rf /"), denied);
        assert_eq!(on("cat <<EOF\necho it's\nEOF\nrm -rf /"), denied);
        assert_eq!(
            on("cat <<EOF\nhello\nEOF"),
            None,
            "a here-document is never allowed"
        );
        // Process substitution, subshells and groups.
        assert_eq!(on("cat <(rm -rf ~)"), denied);
        assert_eq!(on("cat <(id)"), None);
        assert_eq!(on("(rm -rf /)"), denied);
        assert_eq!(on("{ rm -rf /; }"), denied);
        assert_eq!(on("if true; then rm -rf /; fi"), denied);
        // A substitution anywhere does not hide the other parts from deny rules.
        assert_eq!(on("true; rm -rf ~ $(true)"), denied);
        let any = rules_of(&["Bash"], &["Bash(rm:*)"]);
        assert_eq!(
            verdict(&any, "Bash", json!({"command": "true; rm -rf ~ $(true)"})),
            Some("deny Bash(rm:*)".to_owned())
        );
        // What starts a comment depends on escapes this split does not follow.
        assert_eq!(
            on("echo hi # rm is mentioned"),
            None,
            "a comment makes a command opaque to allow rules"
        );
    }

    fn rules_of(allow: &[&str], deny: &[&str]) -> Rules {
        rules(allow, &[], deny)
    }

    #[test]
    fn globs_tools_and_paths_a_review_found() {
        // A `*` in the pattern is a wildcard even when the name holds a `*`.
        let rules = rules_of(&["Read(**)"], &["Read(secrets/*)"]);
        assert_eq!(
            verdict(&rules, "Read", json!({"file_path": "secrets/*x"})),
            Some("deny Read(secrets/*)".to_owned())
        );
        // `Edit` (bare or `Edit(*)`) covers every tool that edits files; `Task` is `Agent`.
        // (`Edit(*)` is a glob: names at any depth below the team directory.)
        for (rule, dir) in [("Edit", "/etc"), ("Edit(*)", "/work/app/deep/er")] {
            let rules = rules_of(&[], &[rule]);
            for tool in ["Write", "MultiEdit", "NotebookEdit"] {
                let input = json!({"file_path": format!("{dir}/passwd"), "notebook_path": format!("{dir}/x.ipynb")});
                assert!(
                    matches!(
                        Rules::check(&[&rules], tool, &input, &place()),
                        Some(Verdict::Deny(_))
                    ),
                    "{rule} {tool}"
                );
            }
        }
        let tasks = rules_of(&[], &["Task"]);
        assert!(verdict(&tasks, "Agent", json!({"subagent_type": "x"})).is_some());
        // `~/` in an input path is the home directory.
        let ssh = rules_of(&["Read(**)"], &["Read(~/.ssh/**)"]);
        assert_eq!(
            verdict(&ssh, "Read", json!({"file_path": "~/.ssh/id_rsa"})),
            Some("deny Read(~/.ssh/**)".to_owned())
        );
        // A search of a directory that holds a denied path is denied; Glob's pattern counts.
        assert_eq!(
            verdict(&ssh, "Grep", json!({"pattern": "x", "path": "/home/me"})),
            Some("deny Read(~/.ssh/**)".to_owned())
        );
        assert_eq!(
            verdict(&ssh, "Glob", json!({"pattern": "/home/me/.ssh/*"})),
            Some("deny Read(~/.ssh/**)".to_owned())
        );
        assert_eq!(
            verdict(
                &ssh,
                "Glob",
                json!({"pattern": "../../home/*/.ssh/*", "path": "/work/app"})
            ),
            Some("deny Read(~/.ssh/**)".to_owned())
        );
        assert_eq!(
            verdict(
                &ssh,
                "Grep",
                json!({"pattern": "x", "path": "/work/app/src"})
            ),
            Some("allow Read(**)".to_owned()),
            "a search beside the denied path is not denied"
        );
        // A pattern without a slash matches the name at any depth, as in a .gitignore.
        let env = rules_of(&["Read(**)"], &["Read(*.env)"]);
        assert_eq!(
            verdict(&env, "Read", json!({"file_path": "config/prod.env"})),
            Some("deny Read(*.env)".to_owned())
        );
        // Many `**` on a deep path: no exponential blow-up.
        let deep = rules_of(&["Read(**/a/**/b/**/c/**/d/**/e)"], &[]);
        let path = format!("/{}", vec!["x"; 200].join("/"));
        assert!(verdict(&deep, "Read", json!({"file_path": path})).is_none());
    }

    #[test]
    fn urls_are_read_as_a_browser_reads_them() {
        let allow = rules_of(&["WebFetch(domain:allowed.com)"], &[]);
        let fetch = |rules: &Rules, url: &str| verdict(rules, "WebFetch", json!({"url": url}));
        assert_eq!(fetch(&allow, "https://attacker.com\\@allowed.com/"), None);
        assert_eq!(fetch(&allow, "https:attacker.com/?x=://allowed.com"), None);
        assert_eq!(
            fetch(&allow, "https://ALLOWED.com./x"),
            Some("allow WebFetch(domain:allowed.com)".to_owned())
        );
        let deny = rules_of(&[], &["WebFetch(domain:example.com)"]);
        for url in [
            "https://exa\tmple.com/",
            "https://ex%61mple.com/",
            "https:/example.com",
        ] {
            assert!(fetch(&deny, url).is_some(), "{url}");
        }
        assert_eq!(fetch(&deny, "not a url"), None);
    }

    /// Found by a second review: each once allowed what it must not.
    #[test]
    fn escapes_expansions_directories_and_searches() {
        let rules = rules(
            &["Bash(echo:*)", "Bash(printf:*)", "Bash(test:*)"],
            &[],
            &[],
        );
        let on = |command: &str| verdict(&rules, "Bash", json!({"command": command}));
        for command in [
            "echo \\ #x; rm -rf /",
            "echo a\\\n#x; rm -rf /",
            "echo \\;#x; rm -rf /",
            "echo ${x:- #}; rm -rf /",
            "echo \\>&rm -rf /",
            "echo ${x:='$(rm -rf ~)'}${x@P}",
            "echo ${x:='a[$(rm -rf ~)]'}$[x]",
            "printf -v 'a[$(rm -rf ~)]' %s x",
            "test -v 'a[$(rm -rf ~)]'",
        ] {
            assert_eq!(on(command), None, "{command:?}");
        }
        assert_eq!(on("echo hi"), Some("allow Bash(echo:*)".to_owned()));

        // Deny rules see through quotes, backslashes, assignments and wrappers.
        let deny = rules_of(&["Bash"], &["Bash(rm:*)"]);
        for command in [
            "\\rm -rf /",
            "'rm' -rf /",
            "r''m -rf /",
            "FOO=1 rm -rf /",
            "command rm -rf /",
            "exec rm -rf /",
            "sudo -u root rm -rf /",
            "find . | xargs -0 rm",
        ] {
            assert_eq!(
                verdict(&deny, "Bash", json!({"command": command})),
                Some("deny Bash(rm:*)".to_owned()),
                "{command:?}"
            );
        }

        // A rule naming a directory names what is in it (deny and ask).
        let dirs = rules_of(&["Read"], &["Read(secrets/)", "Read(.git)"]);
        for path in ["secrets/key.pem", ".git/config", "sub/.git/HEAD"] {
            assert!(
                matches!(
                    Rules::check(&[&dirs], "Read", &json!({"file_path": path}), &place()),
                    Some(Verdict::Deny(_))
                ),
                "{path}"
            );
        }
        // An allow rule lets a search through only if it covers all the search reaches.
        let one_level = rules_of(&["Read(docs/*)", "Read(src/**)"], &[]);
        let search =
            |path: &str| verdict(&one_level, "Grep", json!({"pattern": "x", "path": path}));
        assert_eq!(search("docs/private"), None);
        assert_eq!(search("src"), Some("allow Read(src/**)".to_owned()));
        assert_eq!(search("src/deep/er"), Some("allow Read(src/**)".to_owned()));
        assert_eq!(
            verdict(&one_level, "LS", json!({"path": "/work/app/src"})),
            Some("allow Read(src/**)".to_owned())
        );
    }

    /// Found by a third review: each once allowed what it must not.
    #[test]
    fn run_time_code_stars_and_odd_whitespace() {
        let rules = rules_of(
            &[
                "Bash(echo:*)",
                "Bash(test:*)",
                "Bash(printf:*)",
                "Bash(cargo test:*)",
                "Bash(ls)",
            ],
            &[],
        );
        let on = |command: &str| verdict(&rules, "Bash", json!({"command": command}));
        for command in [
            "echo '$'; test -v \"a[$_(touch pwned)]\"",
            "printf -v x %s '$'; printf -v \"a[$x(touch pwned)]\" %s 1",
            "test -v a*",
            "cargo test\u{b}evil",
            "ls\u{a0}",
            "\u{3000}ls",
            "ls\r",
        ] {
            assert_eq!(on(command), None, "{command:?}");
        }
        assert_eq!(on("printf '%s' x"), Some("allow Bash(printf:*)".to_owned()));
        assert_eq!(on("\tls "), Some("allow Bash(ls)".to_owned()));
        // `Edit(*)` and `Read(*)` stay below the team directory.
        let star = rules_of(&["Edit(*)", "Read(*)"], &[]);
        assert_eq!(
            verdict(&star, "Write", json!({"file_path": "/etc/passwd"})),
            None
        );
        assert_eq!(
            verdict(&star, "Grep", json!({"pattern": "x", "path": "/"})),
            None
        );
        assert_eq!(
            verdict(&star, "Write", json!({"file_path": "src/a.rs"})),
            Some("allow Edit(*)".to_owned())
        );
    }

    #[test]
    fn rules_the_matcher_cannot_honour_are_refused_and_domains_are_normalized() {
        for bad in ["Read(id_[rd]sa)", "Edit(src/{a,b}.rs)"] {
            let error = Rule::parse(bad).unwrap_err();
            assert!(error.contains("not supported in path rules"), "{error}");
        }
        let rules = rules_of(
            &[],
            &[
                "WebFetch(domain:bücher.de)",
                "WebFetch(domain:*.Example.COM.)",
            ],
        );
        let fetch = |url: &str| verdict(&rules, "WebFetch", json!({"url": url}));
        assert!(fetch("https://bücher.de/x").is_some());
        assert!(fetch("https://xn--bcher-kva.de/x").is_some());
        assert!(fetch("https://api.example.com/").is_some());
        assert!(Rule::parse("WebFetch(domain:a b)").is_err());
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

#[cfg(test)]
mod pair_rule_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn suggested_rules_and_exact_inputs_allow_for_the_pair() {
        let suggestions = json!([
            {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch made-3"}], "behavior": "allow", "destination": "localSettings"},
            {"type": "setMode", "mode": "acceptEdits", "destination": "session"}
        ]);
        let rules = suggested_rules(&suggestions);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].to_string(), "Bash(touch made-3)");
        let mut pair = PairRules::default();
        pair.add_rule(rules[0].clone(), "r1".to_owned());
        pair.add_exact(
            "Write".to_owned(),
            json!({"file_path": "/a"}),
            "r2".to_owned(),
        );
        let place = Place {
            cwd: Path::new("/work/app"),
            home: None,
        };
        let input = json!({"command": "touch made-3"});
        // The CLI's newer suggestion form: a trailing ` *` also matches no arguments.
        let spaced = Rule::parse("Bash(touch made-3 *)").unwrap();
        let mut with_star = Rules::default();
        with_star.allow.push(spaced);
        for (command, allowed) in [
            ("touch made-3", true),
            ("touch made-3 more", true),
            ("touch made-30", false),
        ] {
            let verdict = Rules::check(&[&with_star], "Bash", &json!({"command": command}), &place);
            assert_eq!(
                matches!(verdict, Some(Verdict::Allow(_))),
                allowed,
                "{command}"
            );
        }
        match Rules::check(&[&pair.rules], "Bash", &input, &place) {
            Some(Verdict::Allow(rule)) => assert_eq!(pair.source(&rule), Some("r1")),
            other => panic!("expected allow, got {other:?}"),
        }
        assert_eq!(pair.exact("Write", &json!({"file_path": "/a"})), Some("r2"));
        assert_eq!(pair.exact("Write", &json!({"file_path": "/b"})), None);
        assert!(suggested_rules(&json!(null)).is_empty());
    }

    #[test]
    fn iris_own_directory_is_out_of_reach() {
        let place = Place {
            cwd: Path::new("/home/me/code/app"),
            home: Some(Path::new("/home/me")),
        };
        let iris = Path::new("/home/me/.iris");
        let reaches = |tool: &str, input: Value| touches(tool, &input, &place, iris);
        assert!(reaches(
            "Read",
            json!({"file_path": "/home/me/.iris/run/approver.json"})
        ));
        assert!(reaches("Read", json!({"file_path": "~/.iris/config.yaml"})));
        assert!(reaches(
            "Edit",
            json!({"file_path": "../../.iris/config.yaml"})
        ));
        assert!(reaches(
            "Grep",
            json!({"pattern": "token", "path": "/home/me"})
        ));
        assert!(reaches(
            "Bash",
            json!({"command": "cat ~/.iris/run/approver.json"})
        ));
        assert!(reaches(
            "Bash",
            json!({"command": "cat /home/me/.iris/data/iris.db"})
        ));
        assert!(reaches(
            "Bash",
            json!({"command": "find / -name approver.json"})
        ));
        assert!(!reaches(
            "Read",
            json!({"file_path": "/home/me/code/app/src/main.rs"})
        ));
        assert!(!reaches("Grep", json!({"pattern": "x", "path": "src"})));
        assert!(!reaches("Bash", json!({"command": "cargo test"})));
        assert!(!reaches("WebFetch", json!({"url": "https://docs.rs"})));
    }
}
