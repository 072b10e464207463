//! Starting an agent the way `posix_spawn` starts a program, plus what `posix_spawn` cannot
//! do: set the child's parent-death signal before it execs.
//!
//! A `fork` copies the parent's page tables and write-protects every private page, so the
//! larger Iris is, the longer a fork takes, and Iris then takes a copy-on-write fault on each
//! page it writes until the child has exec'd. `posix_spawn` avoids both by running the child
//! on Iris's own memory until `execve` (`clone(CLONE_VM | CLONE_VFORK)`), but it has no way to
//! ask for `PR_SET_PDEATHSIG`. This module does what glibc's `posix_spawn` does, with that one
//! step more: the calling thread is suspended while the child, on a stack of its own,
//! resets its signal handlers, joins a new process group, sets its parent-death signal,
//! connects its pipes, enters its directory and execs. Everything the child touches is
//! prepared before the clone (argument and environment arrays, paths), so between clone and
//! exec it allocates nothing, takes no lock and calls only async-signal-safe functions.
//!
//! The child is created with `CLONE_PIDFD`: its exit is awaited through the pidfd (readable
//! once it exited) and reaped with `waitid(P_PIDFD)`, so nothing can confuse it with another
//! process. On a kernel without `CLONE_PIDFD` (before 5.2) it falls back to tokio's
//! `Command` (a fork with the same steps).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use nix::libc;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::PARENT_DEATH_SIGNAL;

/// What to start.
pub struct Spec<'a> {
    /// The executable: a path (a name without `/` must be resolved by the caller; a relative
    /// path is taken from `cwd`, as `execve` after `chdir` does).
    pub program: &'a str,
    /// The arguments after the program's name.
    pub args: &'a [String],
    /// The directory the child starts in.
    pub cwd: &'a Path,
    /// Variables set in the child's environment, over Iris's own.
    pub env: &'a [(String, String)],
    /// Variables of Iris's environment the child does not get.
    pub env_remove: &'a [&'a str],
}

/// A started child: the process and its three pipes.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its standard input.
    pub stdin: pipe::Sender,
    /// Its standard output.
    pub stdout: pipe::Receiver,
    /// Its standard error.
    pub stderr: pipe::Receiver,
}

/// A child process. Dropped before it was reaped, it is killed (`SIGKILL`) and reaped in the
/// background.
pub struct Child {
    pid: u32,
    inner: Inner,
}

enum Inner {
    /// Started here, running or not yet reaped: its pidfd.
    Running(AsyncFd<OwnedFd>),
    /// Started here and reaped.
    Reaped(ExitStatus),
    /// Started by tokio (no `CLONE_PIDFD` on this kernel).
    Tokio(tokio::process::Child),
}

impl Child {
    /// The process id (also its process group's id).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit and reaps it. Cancel-safe; once it returned, it returns
    /// the same status again.
    ///
    /// # Errors
    /// If the process was reaped by someone else (`ECHILD`) or the pidfd cannot be polled.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = match &mut self.inner {
            Inner::Tokio(child) => return child.wait().await,
            Inner::Reaped(status) => return Ok(*status),
            Inner::Running(fd) => loop {
                let mut ready = fd.readable().await?;
                match reap(fd.get_ref(), WaitPidFlag::WNOHANG)? {
                    Some(status) => break status,
                    None => ready.clear_ready(),
                }
            },
        };
        // Dropping the pidfd here: nothing is left to watch.
        self.inner = Inner::Reaped(status);
        Ok(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Inner::Running(_) = &self.inner else {
            return; // reaped, or tokio's: its `kill_on_drop` and reaper do the same
        };
        let Inner::Running(fd) =
            std::mem::replace(&mut self.inner, Inner::Reaped(ExitStatus::from_raw(0)))
        else {
            return;
        };
        // Not reaped yet, so the pid is still this process's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid.cast_signed()),
            Signal::SIGKILL,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while let Ok(mut ready) = fd.readable().await {
                    match reap(fd.get_ref(), WaitPidFlag::WNOHANG) {
                        Ok(None) => ready.clear_ready(),
                        Ok(Some(_)) | Err(_) => return,
                    }
                }
            });
        } else {
            // No runtime to wait on: reap now if it is already gone (a SIGKILLed process
            // usually is); otherwise Iris, its subreaper, reaps it with its group.
            let _ = reap(fd.get_ref(), WaitPidFlag::WNOHANG);
        }
    }
}

/// Reaps the process behind `pidfd` if it exited (`None`: still running, with `WNOHANG`).
fn reap(pidfd: &OwnedFd, flags: WaitPidFlag) -> io::Result<Option<ExitStatus>> {
    match nix::sys::wait::waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED | flags) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::from_raw((code & 0xff) << 8))),
        Ok(WaitStatus::Signaled(_, signal, core)) => Ok(Some(ExitStatus::from_raw(
            signal as i32 | if core { 0x80 } else { 0 },
        ))),
        Ok(_) => Ok(None),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Starts `spec` as a new process group leader with stdin, stdout and stderr piped.
///
/// # Errors
/// As `execve`, `chdir` and friends fail: `NotFound` for a missing program, `PermissionDenied`
/// for one that is not executable, `InvalidInput` for a NUL byte in an argument, a variable
/// or a path.
pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    spawn_with(spec, false)
}

/// [`spawn`], with tokio's fork path when `fork` is true (what it falls back to on a kernel
/// without `CLONE_PIDFD`; the tests run both).
pub(crate) fn spawn_with(spec: &Spec<'_>, fork: bool) -> io::Result<Spawned> {
    if fork {
        return spawn_forked(spec);
    }
    let prepared = Prepared::new(spec)?;
    let (stdin_read, stdin_write) = pipe_above_stdio()?;
    let (stdout_read, stdout_write) = pipe_above_stdio()?;
    let (stderr_read, stderr_write) = pipe_above_stdio()?;
    let fds = [
        stdin_read.as_raw_fd(),
        stdout_write.as_raw_fd(),
        stderr_write.as_raw_fd(),
    ];
    match clone_exec(&prepared, fds)? {
        Cloned::Started { pid, pidfd } => {
            drop((stdin_read, stdout_write, stderr_write));
            #[expect(unsafe_code, reason = "registering the pidfd with tokio's reactor")]
            // SAFETY: an `OwnedFd` is open, refers to the same pidfd and returns the same
            // number for as long as the `AsyncFd` owns it.
            let registered =
                unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
            let pidfd = match registered {
                Ok(pidfd) => pidfd,
                Err(error) => {
                    // The process must not outlive this.
                    let pidfd = error.into_parts().0;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid.cast_signed()),
                        Signal::SIGKILL,
                    );
                    let _ = reap(&pidfd, WaitPidFlag::empty());
                    return Err(io::Error::other("cannot watch the started process's pidfd"));
                }
            };
            // From here on, dropping `child` kills and reaps the process.
            let child = Child {
                pid,
                inner: Inner::Running(pidfd),
            };
            Ok(Spawned {
                child,
                stdin: pipe::Sender::from_owned_fd(stdin_write)?,
                stdout: pipe::Receiver::from_owned_fd(stdout_read)?,
                stderr: pipe::Receiver::from_owned_fd(stderr_read)?,
            })
        }
        Cloned::Unsupported => spawn_forked(spec),
    }
}

/// Everything the child reads between clone and exec, built beforehand.
struct Prepared {
    program: CString,
    cwd: CString,
    /// Owners of the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Prepared {
    fn new(spec: &Spec<'_>) -> io::Result<Self> {
        let program = c_string(OsStr::new(spec.program), "the program")?;
        let cwd = c_string(spec.cwd.as_os_str(), "the directory")?;
        let mut strings = Vec::with_capacity(spec.args.len() + 64);
        strings.push(program.clone());
        for arg in spec.args {
            strings.push(c_string(OsStr::new(arg), "an argument")?);
        }
        let arguments = strings.len();
        let set = |name: &OsStr| spec.env.iter().any(|(key, _)| OsStr::new(key) == name);
        let removed = |name: &OsStr| spec.env_remove.iter().any(|key| OsStr::new(key) == name);
        let mut variables: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(name, _)| !set(name) && !removed(name))
            .collect();
        // The last of a name wins, as with `Command::env`.
        for (index, (name, value)) in spec.env.iter().enumerate() {
            if spec.env[index + 1..].iter().all(|(later, _)| later != name) {
                variables.push((name.into(), value.into()));
            }
        }
        for (name, value) in variables {
            let mut entry = name;
            entry.push("=");
            entry.push(value);
            strings.push(c_string(&entry, "an environment variable")?);
        }
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|string| string.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = pointers(&strings[..arguments]);
        let envp = pointers(&strings[arguments..]);
        Ok(Self {
            program,
            cwd,
            _strings: strings,
            argv,
            envp,
        })
    }
}

fn c_string(text: &OsStr, what: &str) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte: {}", text.to_string_lossy()),
        )
    })
}

/// A pipe (read end, write end), both close-on-exec and numbered above 2, so that putting
/// one on 0, 1 or 2 in the child never overwrites another.
fn pipe_above_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    #[expect(
        unsafe_code,
        reason = "taking ownership of the descriptor F_DUPFD_CLOEXEC made"
    )]
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

enum Cloned {
    Started {
        pid: u32,
        pidfd: OwnedFd,
    },
    /// The kernel does not know `CLONE_PIDFD`.
    Unsupported,
}

/// What the child reads, and where it leaves why it could not exec.
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [RawFd; 3],
    parent: libc::pid_t,
    /// Set by the child when a step failed: which one (see [`Step`]) and its errno.
    failed_step: libc::c_int,
    errno: libc::c_int,
}

/// The child's steps, for the error of one that failed.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    Mask = 1,
    Group = 2,
    DeathSignal = 3,
    ParentGone = 4,
    Stdio = 5,
    Directory = 6,
    Exec = 7,
}

impl Step {
    fn describe(code: libc::c_int) -> &'static str {
        match code {
            1 => "resetting the signal mask",
            2 => "making a new process group",
            3 => "setting the parent-death signal",
            4 => "starting (Iris exited before the child could run)",
            5 => "connecting standard input and output",
            6 => "entering the directory",
            _ => "executing the program",
        }
    }
}

/// The child's stack: its own mapping with an inaccessible page below it, so an overflow
/// faults instead of writing into Iris's memory.
struct Stack {
    base: *mut libc::c_void,
    length: usize,
}

const STACK_BYTES: usize = 64 * 1024;
const GUARD_BYTES: usize = 4096;

impl Stack {
    fn new() -> io::Result<Self> {
        let length = STACK_BYTES + GUARD_BYTES;
        #[expect(unsafe_code, reason = "mapping the child's stack")]
        // SAFETY: a new anonymous private mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, length };
        #[expect(unsafe_code, reason = "making the guard page inaccessible")]
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, GUARD_BYTES, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        self.base.cast::<u8>().wrapping_add(self.length).cast()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        #[expect(unsafe_code, reason = "unmapping the child's stack")]
        // SAFETY: the mapping made in `new`; the child that used it has exec'd or exited.
        unsafe {
            libc::munmap(self.base, self.length);
        }
    }
}

/// Clones the child onto `prepared`, with `fds` as its stdin, stdout and stderr, and waits
/// (the kernel suspends this thread) until it has exec'd or failed.
fn clone_exec(prepared: &Prepared, fds: [RawFd; 3]) -> io::Result<Cloned> {
    let stack = Stack::new()?;
    let mut args = ChildArgs {
        program: prepared.program.as_ptr(),
        argv: prepared.argv.as_ptr(),
        envp: prepared.envp.as_ptr(),
        cwd: prepared.cwd.as_ptr(),
        fds,
        parent: nix::unistd::getpid().as_raw(),
        failed_step: 0,
        errno: 0,
    };
    let mut pidfd: libc::c_int = -1;
    // Every signal blocked while the child runs on this memory: a handler of Iris's must
    // not run in it. The child resets handlers to default before it unblocks them.
    let all = nix::sys::signal::SigSet::all();
    let mut previous = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all),
        Some(&mut previous),
    )?;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    #[expect(
        unsafe_code,
        reason = "clone(CLONE_VM | CLONE_VFORK) is how a child is started without copying \
                  Iris's page tables; the child runs `child_main` on its own stack and only \
                  makes async-signal-safe calls on memory prepared before"
    )]
    // SAFETY: `child_main` only reads `args` and the arrays it points to (alive until this
    // function returns, and this thread is suspended until the child exec'd or exited), and
    // writes `failed_step`/`errno`. `stack` is a mapping of its own, unmapped only after
    // the child is done with it. With CLONE_PIDFD the kernel writes the pidfd to `pidfd`.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            flags,
            std::ptr::from_mut(&mut args).cast(),
            std::ptr::from_mut(&mut pidfd),
        )
    };
    let clone_error = io::Error::last_os_error();
    let restored = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&previous),
        None,
    );
    drop(stack);
    if pid < 0 {
        return match clone_error.raw_os_error() {
            Some(libc::EINVAL) => Ok(Cloned::Unsupported),
            _ => Err(clone_error),
        };
    }
    #[expect(unsafe_code, reason = "taking ownership of the pidfd the kernel made")]
    // SAFETY: with CLONE_PIDFD and a successful clone, `pidfd` is a new descriptor nothing
    // else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child wrote these before it exec'd or exited, and it has (CLONE_VFORK).
    let failed_step = args.failed_step;
    let errno = args.errno;
    if failed_step != 0 {
        // It has exited (127): reap it, and say which step failed.
        let _ = reap(&pidfd, WaitPidFlag::empty());
        let error = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(
            error.kind(),
            format!("{} failed: {error}", Step::describe(failed_step)),
        ));
    }
    if let Err(error) = restored {
        // Started, but this thread would keep every signal blocked: undo the start.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        let _ = reap(&pidfd, WaitPidFlag::empty());
        return Err(io::Error::from(error));
    }
    Ok(Cloned::Started {
        pid: pid.cast_unsigned(),
        pidfd,
    })
}

/// The child, from clone to exec. Runs on Iris's memory with every signal blocked; makes
/// only async-signal-safe calls, allocates nothing, and never returns into Rust code that
/// could unwind: on failure it records the step and errno and `_exit`s.
extern "C" fn child_main(raw: *mut libc::c_void) -> libc::c_int {
    #[expect(unsafe_code, reason = "the child's side of `clone_exec`")]
    // SAFETY: `raw` is the `ChildArgs` of `clone_exec`, alive until this process execs or
    // exits; every pointer in it is to a NUL-terminated string or a NULL-terminated array.
    unsafe {
        let args = &mut *raw.cast::<ChildArgs>();
        // Iris's handlers must not run here, and the program must start with default
        // dispositions: every caught signal back to default. SIGPIPE too, which Rust
        // ignores in Iris (as `std::process::Command` does for its children).
        let mut action: libc::sigaction = std::mem::zeroed();
        for signal in 1..65 {
            if libc::sigaction(signal, std::ptr::null(), &raw mut action) != 0 {
                continue; // SIGKILL, SIGSTOP, signals glibc keeps for itself
            }
            let handler = action.sa_sigaction;
            if (handler != libc::SIG_DFL && handler != libc::SIG_IGN) || signal == libc::SIGPIPE {
                action.sa_sigaction = libc::SIG_DFL;
                action.sa_flags = 0;
                libc::sigaction(signal, &raw const action, std::ptr::null_mut());
            }
        }
        // An empty mask, as `Command` gives.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut()) != 0 {
            fail(args, Step::Mask);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(args, Step::Group);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL as libc::c_ulong) != 0 {
            fail(args, Step::DeathSignal);
        }
        // Iris may have died before the signal was set: then none will ever come.
        if libc::getppid() != args.parent {
            *libc::__errno_location() = libc::ESRCH;
            fail(args, Step::ParentGone);
        }
        for (target, fd) in (0..3).zip(args.fds) {
            if libc::dup2(fd, target) != target {
                fail(args, Step::Stdio);
            }
        }
        if libc::chdir(args.cwd) != 0 {
            fail(args, Step::Directory);
        }
        libc::execve(args.program, args.argv, args.envp);
        fail(args, Step::Exec)
    }
}

/// Records which step failed, with its errno, and ends the child.
///
/// # Safety
/// Only in the child of [`clone_exec`], with its `ChildArgs`.
#[expect(unsafe_code, reason = "the child's side of `clone_exec`")]
unsafe fn fail(args: &mut ChildArgs, step: Step) -> ! {
    // SAFETY: `__errno_location` is this thread's errno; `_exit` ends only the child.
    unsafe {
        args.errno = *libc::__errno_location();
        args.failed_step = step as libc::c_int;
        libc::_exit(127)
    }
}

/// The fork path: tokio's `Command`, configured the same way.
fn spawn_forked(spec: &Spec<'_>) -> io::Result<Spawned> {
    let mut command = tokio::process::Command::new(spec.program);
    command
        .args(spec.args)
        .current_dir(spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in spec.env_remove {
        command.env_remove(name);
    }
    command.envs(spec.env.iter().map(|(key, value)| (key, value)));
    super::configure_child(&mut command);
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the process exited before its pid was known"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("stdio was not piped"));
    };
    Ok(Spawned {
        stdin: pipe::Sender::from_owned_fd(stdin.into_owned_fd()?)?,
        stdout: pipe::Receiver::from_owned_fd(stdout.into_owned_fd()?)?,
        stderr: pipe::Receiver::from_owned_fd(stderr.into_owned_fd()?)?,
        child: Child {
            pid,
            inner: Inner::Tokio(child),
        },
    })
}

#[cfg(test)]
mod tests;
