//! Output plumbing: NDJSON lines on stdout, the optional event log, ids, timestamps and
//! deliberate exits.
//!
//! Every stdout line is written while holding the stdout lock and flushed at once, so
//! lines from the stdin reader thread (control responses) and from the turn worker never
//! interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

static LOG: OnceLock<Mutex<File>> = OnceLock::new();

/// Opens `$FAKE_AGENT_LOG` (append mode) if set.
pub(crate) fn init_log() {
    let Some(path) = std::env::var_os("FAKE_AGENT_LOG").filter(|p| !p.is_empty()) else {
        return;
    };
    match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => {
            let _ = LOG.set(Mutex::new(f));
        }
        Err(e) => eprintln!(
            "fake agent: cannot open FAKE_AGENT_LOG {}: {e}",
            path.to_string_lossy()
        ),
    }
}

/// Appends one event line to the log (if any), written and flushed at once.
pub(crate) fn log_event(v: &Value) {
    if let Some(m) = LOG.get() {
        let mut line = v.to_string();
        line.push('\n');
        let mut f = m.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = f.write_all(line.as_bytes());
        let _ = f.flush();
    }
}

/// Writes one JSON value as a stdout line.
pub(crate) fn emit(v: &Value) {
    write_chunks(&[&line_of(v)], Duration::ZERO);
}

/// Serializes `v` as one NDJSON line (with the newline). Objects keep serde_json's sorted
/// key order, except that `type` is moved first, as in the real CLI's output.
pub(crate) fn line_of(v: &Value) -> Vec<u8> {
    let mut line = match v {
        Value::Object(map) if map.len() > 1 && map.contains_key("type") => {
            let mut rest = map.clone();
            let t = rest.remove("type").unwrap_or(Value::Null);
            let body = Value::Object(rest).to_string();
            format!("{{\"type\":{t},{}", &body[1..])
        }
        _ => v.to_string(),
    }
    .into_bytes();
    line.push(b'\n');
    line
}

/// Writes raw chunks to stdout under one lock, flushing after each chunk and pausing
/// `pause` between chunks. A write error (the host closed our stdout) exits 1.
pub(crate) fn write_chunks(chunks: &[&[u8]], pause: Duration) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            std::thread::sleep(pause);
        }
        if let Err(e) = out.write_all(chunk).and_then(|()| out.flush()) {
            eprintln!("fake agent: cannot write to stdout: {e}");
            exit_now(1, "stdout-error");
        }
    }
}

/// Exits the process with `code`, after flushing stdout and logging an `exit` event.
/// Holding the stdout lock makes sure no other thread is half-way through a line.
pub(crate) fn exit_now(code: i32, reason: &str) -> ! {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = out.flush();
    log_event(&json!({"event": "exit", "code": code, "reason": reason}));
    std::process::exit(code)
}

/// A random UUID (v4), hyphenated.
pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// 24 random hex digits, for `msg_…`, `toolu_…` and `req_…` ids.
pub(crate) fn short_id() -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(24);
    s
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn iso_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    iso_from(d)
}

fn iso_from(d: Duration) -> String {
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Rounds a USD amount to 1e-10 so that sums of small costs print cleanly.
pub(crate) fn round_usd(x: f64) -> f64 {
    (x * 1e10).round() / 1e10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(iso_from(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso_from(Duration::from_millis(1_795_830_927_734)),
            "2026-11-28T01:55:27.734Z"
        );
        assert_eq!(
            iso_from(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn type_first() {
        let line = line_of(&json!({"a": 1, "type": "x", "z": {"type": 2}}));
        assert_eq!(line, b"{\"type\":\"x\",\"a\":1,\"z\":{\"type\":2}}\n");
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(line_of(&json!({"type": "only"})), b"{\"type\":\"only\"}\n");
    }

    #[test]
    fn rounding() {
        assert_eq!(round_usd(0.0001 * 3.0), 0.0003);
    }
}
