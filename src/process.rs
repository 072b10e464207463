//! Child-process hygiene shared by everything that starts a process: each child leads its own
//! process group and gets a parent-death signal; groups are signalled as a whole; orphaned
//! group members are reaped. Agents are started by [`spawn`] (no fork of Iris); the guard
//! and ssh control masters by tokio's `Command` with [`configure_child`].
//!
//! Invariant: a pid or pgid is only ever signalled by the owner that started it (the agent actor
//! or the guard), never found by name.

use std::io;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub mod spawn;

/// The signal a child of Iris gets when the thread that started it ends (for Iris: when Iris
/// dies).
pub const PARENT_DEATH_SIGNAL: Signal = Signal::SIGTERM;

/// Makes this process a child subreaper, so that orphaned grandchildren of agents (tools the
/// agent started) are re-parented to Iris, which reaps them, instead of to PID 1 (which, in
/// some containers, never reaps and leaves zombies).
///
/// # Errors
/// When the kernel refuses (not Linux, or no permission).
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Configures `command` so that the child leads a new process group and receives `SIGTERM`
/// when the thread that spawned it dies (for Iris: when Iris dies, since spawns happen on
/// runtime worker threads that live as long as the process).
pub fn configure_child(command: &mut tokio::process::Command) {
    command.process_group(0);
    let parent = std::process::id();
    #[expect(
        unsafe_code,
        reason = "pre_exec is the only way to set PR_SET_PDEATHSIG in the child; the closure \
                  only makes async-signal-safe syscalls (prctl, getppid)"
    )]
    // SAFETY: runs in the forked child before exec; prctl and getppid are async-signal-safe
    // and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(PARENT_DEATH_SIGNAL).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl: then no signal will ever come.
            if nix::unistd::getppid().as_raw().cast_unsigned() != parent {
                return Err(io::Error::other("parent exited before the child started"));
            }
            Ok(())
        });
    }
}

/// Sends `signal` to every process of the group `pgid`. A group that no longer exists is
/// success: the goal (nobody left to signal) holds.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    if raw <= 1 {
        return; // never signal group 0 (our own) or 1
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pgid, ?signal, %error, "signalling process group failed"),
    }
}

/// Whether any process of group `pgid` is still alive (zombies excluded when they are ours to
/// reap: call [`reap_group`] first).
#[must_use]
pub fn group_alive(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    raw > 1 && killpg(Pid::from_raw(raw), None).is_ok()
}

/// Takes the exclusive lock of the file at `path` (made if missing) without waiting:
/// `Ok(Err(holder))` when another process holds it, with the pid it wrote there, if any.
/// The kernel drops the lock when the holder dies, however it dies.
///
/// # Errors
/// The file cannot be opened.
pub fn try_lock(
    path: &std::path::Path,
) -> io::Result<Result<nix::fcntl::Flock<std::fs::File>, Option<u32>>> {
    use std::io::Read as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Ok(
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(lock),
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Err(holder.trim().parse().ok())
            }
        },
    )
}

/// Writes this process's pid into a lock [`try_lock`] took (for whoever finds it held).
pub fn write_pid(lock: &mut nix::fcntl::Flock<std::fs::File>, path: &std::path::Path) {
    use std::io::{Seek as _, Write as _};
    let written = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| writeln!(lock, "{}", std::process::id()));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot write the pid into a lock file");
    }
}

/// Whether process `pid` exists and has not ended (a zombie waiting to be reaped has).
#[must_use]
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Whether a live (not zombie) process of group `pgid` has `entry` (`NAME=value`) in its
/// environment. Used to recognise our own leftover agents before signalling their group.
#[must_use]
pub fn group_has_environment(pgid: u32, entry: &str) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|process| {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<u32>() else {
            return false;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|field| field.parse::<u32>().ok());
        if state == Some("Z") || group != Some(pgid) {
            return false;
        }
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
            environ
                .split(|&byte| byte == 0)
                .any(|item| item == entry.as_bytes())
        })
    })
}

/// Reaps every already-exited child of ours in group `pgid` (grandchildren re-parented to us as
/// subreaper) without blocking. Call only after the group leader itself has been reaped by
/// its owner, so that no one else's exit status is taken.
pub fn reap_group(pgid: u32) {
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    if raw <= 1 {
        return;
    }
    loop {
        match waitpid(Pid::from_raw(-raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Ends group `pgid`: `SIGTERM`, up to `grace` for it to go, then [`kill_remaining`].
pub async fn terminate_group(pgid: u32, grace: Duration) {
    signal_group(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    let mut pause = Duration::from_millis(1);
    loop {
        reap_group(pgid);
        if !group_alive(pgid) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        // As in `kill_remaining`: these processes may not be our children.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    kill_remaining(pgid, Duration::from_secs(1)).await;
}

/// Kills what is left of group `pgid` once its leader is gone: `SIGKILL` to the group, then
/// reaps what it can, waiting at most `wait` for members (ours to reap) to disappear.
pub async fn kill_remaining(pgid: u32, wait: Duration) {
    signal_group(pgid, Signal::SIGKILL);
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(1);
    loop {
        reap_group(pgid);
        if !group_alive(pgid) || tokio::time::Instant::now() >= deadline {
            return;
        }
        // Polling is the only portable way to wait for processes that are not our children;
        // the back-off keeps it cheap, and this is off every hot path.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
