//! The floor: the fake agent driven directly over stream-json, with no hub in between — what
//! a turn costs when nothing but the agent process and its pipes is involved. Blocking std
//! I/O, one thread per agent; the lines are the ones Iris writes (an `initialize` control
//! request, then user messages), the answers are read up to each turn's `result` line.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// One fake agent process, driven by hand.
pub struct FloorAgent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl FloorAgent {
    /// Starts `program` (the fake agent) in `cwd` with its sessions under `state`, as Iris
    /// would start a new session, and waits for its answer to `initialize`.
    pub fn start(program: &str, cwd: &Path, state: &Path) -> Self {
        let mut child = Command::new(program)
            .args([
                "--print",
                "--verbose",
                "--input-format=stream-json",
                "--output-format=stream-json",
                "--permission-prompt-tool=stdio",
            ])
            .arg(format!("--session-id={}", uuid::Uuid::new_v4()))
            .env("FAKE_AGENT_STATE_DIR", state)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the fake agent");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut agent = Self {
            child,
            stdin,
            stdout,
            line: String::new(),
        };
        agent.send(
            r#"{"type":"control_request","request_id":"init","request":{"subtype":"initialize"}}"#,
        );
        agent.read_until("\"control_response\"");
        agent
    }

    /// One turn: the user line written, every line read up to its `result`. Returns how
    /// long that took.
    pub fn turn(&mut self, text: &str) -> Duration {
        let started = Instant::now();
        let line = serde_json::json!({
            "type": "user",
            "message": {"role": "user", "content": text},
            "parent_tool_use_id": null,
            "session_id": "",
        });
        self.send(&line.to_string());
        self.read_until("\"type\":\"result\"");
        started.elapsed()
    }

    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.write_all(b"\n").expect("write");
        self.stdin.flush().expect("flush");
    }

    fn read_until(&mut self, needle: &str) {
        loop {
            self.line.clear();
            let read = self.stdout.read_line(&mut self.line).expect("read");
            assert!(read > 0, "the fake agent ended");
            if self.line.contains(needle) {
                return;
            }
        }
    }
}

impl Drop for FloorAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
