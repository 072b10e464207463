//! The orphan guard: a small companion process (`iris guard`) that stops every agent process
//! group Iris started if Iris itself dies without stopping them, even by `SIGKILL`.
//!
//! Why a process: the parent-death signal reaches only an agent's direct child (the `claude`
//! process), not the tools it started, and a signal to a process that ignores `SIGTERM` is not
//! enough. The guard holds the read end of a pipe whose write end only Iris holds; when Iris
//! dies for any reason the kernel closes it, the guard reads end-of-file, and it signals every
//! group still registered: `SIGTERM`, a grace period, then `SIGKILL`.
//!
//! Protocol on the guard's stdin, one line each: `+PGID` (watch) and `-PGID` (forget).

use std::collections::BTreeSet;
use std::io::{self, BufRead};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::process;

/// A handle to a running guard process. Cheap to clone; the guard exits (after stopping what
/// is still registered) when the last clone is dropped. A guard that dies while Iris runs
/// (killed by someone) is replaced at once, and the new one is told every registered group.
#[derive(Debug, Clone)]
pub struct Guard {
    updates: mpsc::UnboundedSender<Update>,
}

/// A registration change, as the handle sends it to the task that feeds the guard process.
#[derive(Debug, Clone, Copy)]
enum Update {
    Watch(u32),
    Forget(u32),
}

/// How the guard process is started.
#[derive(Debug, Clone)]
struct Launch {
    program: std::path::PathBuf,
    /// `guard` for the big program, nothing for `iris-guard`.
    subcommand: Option<&'static str>,
    grace: Duration,
}

impl Launch {
    fn spawn(&self) -> io::Result<(tokio::process::Child, tokio::process::ChildStdin)> {
        let mut command = tokio::process::Command::new(&self.program);
        if let Some(subcommand) = self.subcommand {
            command.arg(subcommand);
        }
        command
            .arg(format!("--grace-ms={}", self.grace.as_millis()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own group: a Ctrl-C meant for Iris must not kill the guard first.
            .process_group(0);
        let mut child = command.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("guard stdin was not piped"))?;
        Ok((child, stdin))
    }
}

impl Guard {
    /// Starts the guard for the `iris` executable `program`: `iris-guard --grace-ms=N` when
    /// that small program is installed next to it, else `iris guard --grace-ms=N` (the same
    /// loop in the bigger program).
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn start(program: &Path, grace: Duration) -> io::Result<Self> {
        let lean = program.with_file_name("iris-guard");
        let launch = if is_executable(&lean) {
            Launch {
                program: lean,
                subcommand: None,
                grace,
            }
        } else {
            Launch {
                program: program.to_owned(),
                subcommand: Some("guard"),
                grace,
            }
        };
        let first = launch.spawn()?;
        let (updates, pending) = mpsc::unbounded_channel();
        tokio::spawn(feed(launch, first, pending));
        Ok(Self { updates })
    }

    /// Registers an agent's process group.
    pub fn watch(&self, pgid: u32) {
        let _ = self.updates.send(Update::Watch(pgid));
    }

    /// Forgets a process group that was stopped and reaped.
    pub fn forget(&self, pgid: u32) {
        let _ = self.updates.send(Update::Forget(pgid));
    }
}

/// Feeds registrations to the guard process; replaces it when it dies while Iris runs (and
/// tells the new one every group still registered). Ends, closing the guard's stdin so it
/// stops what is left, when every handle is gone.
async fn feed(
    launch: Launch,
    first: (tokio::process::Child, tokio::process::ChildStdin),
    mut pending: mpsc::UnboundedReceiver<Update>,
) {
    let (mut child, mut stdin) = first;
    let mut groups = BTreeSet::new();
    let mut started = Instant::now();
    loop {
        let died = tokio::select! {
            update = pending.recv() => match update {
                None => break,
                Some(update) => {
                    let line = match update {
                        Update::Watch(pgid) => {
                            groups.insert(pgid);
                            format!("+{pgid}\n")
                        }
                        Update::Forget(pgid) => {
                            groups.remove(&pgid);
                            format!("-{pgid}\n")
                        }
                    };
                    stdin.write_all(line.as_bytes()).await.is_err()
                }
            },
            status = child.wait() => {
                let status = status.map_or_else(|error| error.to_string(), |status| status.to_string());
                tracing::error!(%status, "the orphan guard died; starting a new one");
                true
            }
        };
        if !died {
            continue;
        }
        // A guard that keeps dying at once is not restarted in a tight loop.
        if started.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        match launch.spawn() {
            Ok((new_child, new_stdin)) => {
                (child, stdin) = (new_child, new_stdin);
                started = Instant::now();
                let lines: String = groups.iter().map(|pgid| format!("+{pgid}\n")).collect();
                if let Err(error) = stdin.write_all(lines.as_bytes()).await {
                    tracing::error!(%error, "cannot register agents with the new orphan guard");
                } else {
                    tracing::info!(
                        pid = child.id(),
                        groups = groups.len(),
                        "a new orphan guard watches the agents"
                    );
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot start a new orphan guard; agents will not be stopped if Iris is killed");
                break;
            }
        }
    }
    drop(stdin);
    let _ = child.wait().await;
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The guard process's main loop: reads registrations from stdin until end-of-file, then stops
/// every registered group. Returns how many groups it had to stop.
///
/// # Errors
/// A read error on stdin (the groups are stopped all the same).
pub fn run(grace: Duration) -> io::Result<usize> {
    let mut groups = BTreeSet::new();
    let stdin = io::stdin();
    let mut read_error = None;
    for line in stdin.lock().lines() {
        match line {
            Ok(line) => apply(&mut groups, line.trim()),
            Err(error) => {
                read_error = Some(error);
                break;
            }
        }
    }
    let stopped = stop_all(&groups, grace);
    match read_error {
        Some(error) => Err(error),
        None => Ok(stopped),
    }
}

fn apply(groups: &mut BTreeSet<u32>, line: &str) {
    let (sign, number) = line.split_at(line.len().min(1));
    let Ok(pgid) = number.parse::<u32>() else {
        return;
    };
    match sign {
        "+" => {
            groups.insert(pgid);
        }
        "-" => {
            groups.remove(&pgid);
        }
        _ => {}
    }
}

fn stop_all(groups: &BTreeSet<u32>, grace: Duration) -> usize {
    let alive: Vec<u32> = groups
        .iter()
        .copied()
        .filter(|&pgid| process::group_alive(pgid))
        .collect();
    for &pgid in &alive {
        process::signal_group(pgid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && alive.iter().any(|&pgid| process::group_alive(pgid)) {
        // The groups are not our children: polling is the only way to see them go.
        std::thread::sleep(Duration::from_millis(10));
    }
    for &pgid in &alive {
        process::signal_group(pgid, Signal::SIGKILL);
    }
    alive.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_add_and_remove() {
        let mut groups = BTreeSet::new();
        for line in ["+10", "+11", "-10", "junk", "+", "", "*3", "+12"] {
            apply(&mut groups, line);
        }
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), vec![11, 12]);
    }
}
