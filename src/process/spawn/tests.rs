use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Both ways of starting a child: the clone here, and tokio's fork it falls back to.
const MODES: [bool; 2] = [false, true];

fn spec<'a>(
    program: &'a str,
    args: &'a [String],
    cwd: &'a Path,
    env: &'a [(String, String)],
    env_remove: &'a [&'a str],
) -> Spec<'a> {
    Spec {
        program,
        args,
        cwd,
        env,
        env_remove,
    }
}

/// Waits (polling, with a deadline) until `condition` holds, the runtime running meanwhile
/// (a dropped child is reaped by a task of it).
async fn until_async(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .expect("field")
        .trim()
        .to_owned()
}

/// Whether `pid` exists at all (a zombie counts).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn runs_the_program_with_its_arguments_environment_and_directory() {
    let directory = tempfile::tempdir().expect("dir");
    let cwd = std::fs::canonicalize(directory.path()).expect("canonical");
    for fork in MODES {
        let args = [
            "-c".to_owned(),
            r#"read line; printf '%s|%s|%s|%s|%s|%s|%s|%s' "$0" "$1" "$line" "$IRIS_SPAWN_TEST" "${HOME-unset}" "$PATH" "$USER" "$(pwd -P)"; echo oops >&2; exit 3"#.to_owned(),
            "name".to_owned(),
            "first arg".to_owned(),
        ];
        // The later of two values of a name wins; a set value wins over Iris's own, and
        // over a removal of the same name.
        let env = [
            ("IRIS_SPAWN_TEST".to_owned(), "early".to_owned()),
            ("IRIS_SPAWN_TEST".to_owned(), "a value".to_owned()),
            ("PATH".to_owned(), "/iris/spawn/test".to_owned()),
            ("USER".to_owned(), "set anyway".to_owned()),
        ];
        // A variable every test run has, taken away.
        assert!(std::env::var_os("HOME").is_some());
        let removed = ["HOME", "USER"];
        let Spawned {
            mut child,
            mut stdin,
            mut stdout,
            mut stderr,
        } = spawn_with(&spec("/bin/sh", &args, &cwd, &env, &removed), fork).expect("spawn");
        stdin.write_all(b"from stdin\n").await.expect("write");
        drop(stdin);
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.expect("stdout");
        let mut err = String::new();
        stderr.read_to_string(&mut err).await.expect("stderr");
        let status = child.wait().await.expect("wait");
        assert_eq!(
            out,
            format!(
                "name|first arg|from stdin|a value|unset|/iris/spawn/test|set anyway|{}",
                cwd.display()
            ),
            "fork: {fork}"
        );
        assert_eq!(err, "oops\n");
        assert_eq!(status.code(), Some(3));
        // Asked again, the same status.
        assert_eq!(child.wait().await.expect("again").code(), Some(3));
    }
}

#[tokio::test]
async fn the_child_leads_its_group_with_no_signal_blocked_or_sigpipe_ignored() {
    for fork in MODES {
        let args = ["1000".to_owned()];
        let spawned =
            spawn_with(&spec("/bin/sleep", &args, Path::new("/"), &[], &[]), fork).expect("spawn");
        let pid = spawned.child.id();
        // The exec'd program, not the moment between clone and exec.
        until_async("sleep runs", || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == "sleep")
        })
        .await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let group: u32 = stat
            .rsplit_once(')')
            .expect("stat")
            .1
            .split_whitespace()
            .nth(2)
            .expect("pgrp")
            .parse()
            .expect("number");
        assert_eq!(group, pid, "fork: {fork}");
        assert_eq!(status_field(pid, "SigBlk"), "0000000000000000");
        let ignored = u64::from_str_radix(&status_field(pid, "SigIgn"), 16).expect("hex");
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE is ignored"
        );
        // Dropped unreaped: killed and reaped, no zombie left.
        drop(spawned);
        until_async("the dropped child is reaped", || !exists(pid)).await;
    }
}

#[test]
fn the_child_gets_sigterm_when_the_thread_that_started_it_ends() {
    for fork in MODES {
        let pid = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let args = ["1000".to_owned()];
                let spawned =
                    spawn_with(&spec("/bin/sleep", &args, Path::new("/"), &[], &[]), fork)
                        .expect("spawn");
                let pid = spawned.child.id();
                // Not dropped (which would kill it): only the thread's end may end it.
                std::mem::forget(spawned.child);
                pid
            })
        })
        .join()
        .expect("thread");
        let raw = nix::unistd::Pid::from_raw(pid.cast_signed());
        // Its exit, awaited by a thread blocked in `waitpid`: the test waits for that, at
        // most 20 s, and on a timeout kills the child (which also ends the thread).
        let (exited, exit) = std::sync::mpsc::channel();
        std::thread::spawn(move || exited.send(nix::sys::wait::waitpid(raw, None)));
        let status = match exit.recv_timeout(Duration::from_secs(20)) {
            Ok(status) => status.expect("waitpid"),
            Err(_) => {
                let _ = nix::sys::signal::kill(raw, Signal::SIGKILL);
                panic!("the child outlived the thread that started it (fork: {fork})");
            }
        };
        assert_eq!(
            status,
            WaitStatus::Signaled(raw, Signal::SIGTERM, false),
            "fork: {fork}"
        );
    }
}

#[tokio::test]
async fn what_cannot_start_says_why() {
    let directory = tempfile::tempdir().expect("dir");
    let plain = directory.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write");
    let plain = plain.to_string_lossy().into_owned();
    let missing = directory.path().join("missing");
    for fork in MODES {
        let error = spawn_with(
            &spec("/nonexistent/claude", &[], Path::new("/"), &[], &[]),
            fork,
        )
        .err()
        .expect("a missing program");
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        let error = spawn_with(&spec(&plain, &[], Path::new("/"), &[], &[]), fork)
            .err()
            .expect("a file that is not executable");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        let error = spawn_with(&spec("/bin/true", &[], &missing, &[], &[]), fork)
            .err()
            .expect("a missing directory");
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        if !fork {
            assert!(
                error.to_string().contains("entering the directory"),
                "{error}"
            );
            assert_eq!(failed_step(&error), Some(Step::Directory));
        }
        let error = spawn_with(&spec("true", &[], Path::new("/"), &[], &[]), fork)
            .err()
            .expect("a name without a slash");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        let args = ["a\0b".to_owned()];
        let error = spawn_with(&spec("/bin/true", &args, Path::new("/"), &[], &[]), fork)
            .err()
            .expect("a NUL byte");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    }
}

#[test]
fn a_start_that_fails_leaves_no_child() {
    // A runtime on this thread only: the children of this thread are the ones started here.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let children = || {
        std::fs::read_to_string("/proc/thread-self/children")
            .expect("children")
            .trim()
            .to_owned()
    };
    runtime.block_on(async {
        let missing = Path::new("/nonexistent-iris-directory");
        for program in ["/nonexistent/claude", "/bin/true"] {
            let cwd = if program == "/bin/true" {
                missing
            } else {
                Path::new("/")
            };
            let error = spawn_with(&spec(program, &[], cwd, &[], &[]), false)
                .err()
                .expect("a start that fails");
            assert!(failed_step(&error).is_some(), "{error}");
            // Reaped before the error came back (its descriptors are owned, and closed with
            // their owners).
            assert_eq!(children(), "", "after {error}");
        }
    });
}

#[tokio::test]
async fn waiting_is_cancel_safe_and_scripts_without_an_interpreter_line_run() {
    let directory = tempfile::tempdir().expect("dir");
    let script = directory.path().join("script");
    // No `#!`: the kernel refuses it (ENOEXEC) and it runs under /bin/sh, as with `execvp`.
    std::fs::write(
        &script,
        "read line\necho \"got $line in $(pwd -P)\"\nexit 4\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let cwd = std::fs::canonicalize(directory.path()).expect("canonical");
    for fork in MODES {
        // A relative path is found from the child's directory.
        let Spawned {
            mut child,
            mut stdin,
            mut stdout,
            ..
        } = spawn_with(&spec("./script", &[], &cwd, &[], &[]), fork).expect("spawn");
        // Given up on while the script waits for its input...
        let waited = tokio::time::timeout(Duration::from_millis(20), child.wait()).await;
        assert!(waited.is_err(), "the script ended before its input came");
        // ...and waited for again.
        stdin.write_all(b"it\n").await.expect("write");
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.expect("read");
        assert_eq!(
            out,
            format!("got it in {}\n", cwd.display()),
            "fork: {fork}"
        );
        assert_eq!(child.wait().await.expect("wait").code(), Some(4));
    }
}

#[test]
fn a_child_dropped_outside_any_runtime_is_killed_and_reaped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let args = ["1000".to_owned()];
    let spawned = runtime
        .block_on(async { spawn_with(&spec("/bin/sleep", &args, Path::new("/"), &[], &[]), false) })
        .expect("spawn");
    let pid = spawned.child.id();
    drop(runtime);
    drop(spawned);
    // Reaped by a thread of the module, so nothing here can wait on it but the process
    // table: `until_async` on a runtime of its own.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(until_async("the dropped child is reaped", || !exists(pid)));
}
