//! Session persistence: where session files live, what a resume restores, and appending
//! one completed turn at a time.
//!
//! Each turn appends two JSON lines (a `user` entry and an `assistant` entry, loosely
//! shaped like the real CLI's). The `assistant` entry carries a `fakeTurn` object
//! (`n`, `outcome`, `costUSD`); a resume counts those objects and sums their costs.

use std::env;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::VERSION;
use crate::output::{iso_now, new_uuid};

/// Where session files of this cwd live.
///
/// `$FAKE_AGENT_STATE_DIR` if set, else `$CLAUDE_CONFIG_DIR/projects/<escaped cwd>` if
/// `CLAUDE_CONFIG_DIR` is set, else `$HOME/.claude/projects/<escaped cwd>`.
pub(crate) fn state_dir(cwd: &str) -> Result<PathBuf, String> {
    let set = |k: &str| env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = set("FAKE_AGENT_STATE_DIR") {
        return Ok(PathBuf::from(d));
    }
    let base = match set("CLAUDE_CONFIG_DIR") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(set("HOME").ok_or("fake agent: HOME is not set")?).join(".claude"),
    };
    Ok(base.join("projects").join(escape_project_dir(cwd)))
}

/// The real CLI's project directory name: every UTF-16 unit outside `[A-Za-z0-9]`
/// becomes `-`; names over 200 chars are cut to 200 and get `-<base36 hash>` appended.
pub(crate) fn escape_project_dir(path: &str) -> String {
    let escaped: String = path
        .encode_utf16()
        .map(|u| match char::from_u32(u32::from(u)) {
            Some(c) if c.is_ascii_alphanumeric() => c,
            _ => '-',
        })
        .collect();
    if escaped.len() <= 200 {
        return escaped;
    }
    // The 31-multiplier string hash over UTF-16 units, wrapping at 32 bits.
    let mut h: i32 = 0;
    for u in path.encode_utf16() {
        h = h.wrapping_shl(5).wrapping_sub(h).wrapping_add(i32::from(u));
    }
    format!(
        "{}-{}",
        &escaped[..200],
        base36(i64::from(h).unsigned_abs())
    )
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// What a resumed session carries over.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Turns recorded so far.
    pub turns: u64,
    /// Sum of their costs (USD).
    pub cost: f64,
    /// `uuid` of the last entry, to chain `parentUuid`.
    pub last_uuid: Option<String>,
}

/// Reads a session file; unparseable lines (a torn last line) are skipped.
pub(crate) fn load(path: &Path) -> io::Result<Restored> {
    let bytes = fs::read(path)?;
    let mut r = Restored::default();
    for line in bytes.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if let Some(t) = v.get("fakeTurn") {
            r.turns += 1;
            r.cost += t.get("costUSD").and_then(Value::as_f64).unwrap_or(0.0);
        }
        if let Some(u) = v.get("uuid").and_then(Value::as_str) {
            r.last_uuid = Some(u.to_string());
        }
    }
    Ok(r)
}

/// The most recently modified `<uuid>.jsonl` in `dir`, as a session id (`--continue`).
pub(crate) fn newest_session(dir: &Path) -> Option<String> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".jsonl")?;
            uuid::Uuid::parse_str(id).ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, id.to_string()))
        })
        .max()
        .map(|(_, id)| id)
}

/// One finished turn, as recorded in the session file.
pub(crate) struct TurnRecord<'a> {
    /// History number of this turn (1-based).
    pub n: u64,
    /// The user's text.
    pub text: &'a str,
    /// The answer (or the interruption marker).
    pub answer: &'a str,
    /// `success`, `error` or `interrupted`.
    pub outcome: &'a str,
    /// This turn's cost.
    pub cost: f64,
    /// Model name.
    pub model: &'a str,
    /// Permission mode during the turn.
    pub permission_mode: &'a str,
}

/// Appends turns to `<state dir>/<session id>.jsonl`, creating it at the first turn.
pub(crate) struct SessionStore {
    path: PathBuf,
    session_id: String,
    cwd: String,
    persist: bool,
    file: Option<File>,
    /// For `--fork-session`: the file whose content is copied in first.
    copy_from: Option<PathBuf>,
    last_uuid: Option<String>,
}

impl SessionStore {
    /// A store for `path`; nothing is written until the first turn.
    pub(crate) fn new(
        path: PathBuf,
        session_id: String,
        cwd: String,
        persist: bool,
        copy_from: Option<PathBuf>,
        last_uuid: Option<String>,
    ) -> Self {
        Self {
            path,
            session_id,
            cwd,
            persist,
            file: None,
            copy_from,
            last_uuid,
        }
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(parent) = self.path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if let Some(src) = self.copy_from.take() {
                let mut old = fs::read(src)?;
                if old.last().is_some_and(|&b| b != b'\n') {
                    old.push(b'\n');
                }
                f.write_all(&old)?;
            }
            self.file = Some(f);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("session file not open"))
    }

    /// Appends one turn (two lines, one write). Errors go to stderr; the turn still counts.
    pub(crate) fn record(&mut self, t: &TurnRecord<'_>) {
        if !self.persist {
            return;
        }
        let now = iso_now();
        let user_uuid = new_uuid();
        let assistant_uuid = new_uuid();
        let user = json!({
            "type": "user",
            "parentUuid": self.last_uuid,
            "isSidechain": false,
            "userType": "external",
            "entrypoint": "sdk-cli",
            "promptSource": "sdk",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": VERSION,
            "permissionMode": t.permission_mode,
            "message": {"role": "user", "content": t.text},
            "uuid": user_uuid,
            "timestamp": now,
        });
        let assistant = json!({
            "type": "assistant",
            "parentUuid": user_uuid,
            "isSidechain": false,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": VERSION,
            "message": {
                "role": "assistant",
                "model": t.model,
                "content": [{"type": "text", "text": t.answer}],
            },
            "uuid": assistant_uuid,
            "timestamp": now,
            "fakeTurn": {"n": t.n, "outcome": t.outcome, "costUSD": t.cost},
        });
        let text = format!("{user}\n{assistant}\n");
        let result = self.open().and_then(|f| f.write_all(text.as_bytes()));
        if let Err(e) = result {
            eprintln!(
                "fake agent: cannot write session file {}: {e}",
                self.path.display()
            );
        }
        self.last_uuid = Some(assistant_uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_project_dir("/srv/cc-work"), "-srv-cc-work");
        assert_eq!(
            escape_project_dir("/srv/cc esc/a.b_c-d~e+f@g"),
            "-srv-cc-esc-a-b-c-d-e-f-g"
        );
        assert_eq!(escape_project_dir("/é😀"), "----");
        let long = format!("/{}", "a".repeat(300));
        let e = escape_project_dir(&long);
        assert!(e.starts_with(&format!("-{}", "a".repeat(199))));
        assert_eq!(&e[200..201], "-");
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
