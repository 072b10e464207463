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

/// A child process. Dropped before it was reaped, it is killed (`SIGKILL`) and reaped by a
/// thread of its own.
pub struct Child {
    pid: u32,
    inner: Inner,
}

enum Inner {
    /// Started here, running or not yet reaped: its pidfd.
    Running(AsyncFd<OwnedFd>),
    /// Started here and reaped.
    Reaped(ExitStatus),
    /// Started here, and reaped by someone else (`waitid` said `ECHILD`): its status is lost.
    Lost,
    /// Started by tokio (no usable pidfds on this kernel).
    Tokio(tokio::process::Child),
}

impl Child {
    /// The process id (also its process group's id).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit and reaps it. Cancel-safe; once it returned a status,
    /// it returns the same status again.
    ///
    /// # Errors
    /// If the process was reaped by someone else (`ECHILD`) or the pidfd cannot be polled.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let reaped = match &mut self.inner {
            Inner::Tokio(child) => return child.wait().await,
            Inner::Reaped(status) => return Ok(*status),
            Inner::Lost => return Err(io::Error::from_raw_os_error(libc::ECHILD)),
            Inner::Running(fd) => loop {
                let mut ready = fd.readable().await?;
                match reap(fd.get_ref(), WaitPidFlag::WNOHANG) {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) => ready.clear_ready(),
                    Err(error) => break Err(error),
                }
            },
        };
        // Either way nothing is left to watch or to kill: the pidfd is closed here.
        self.inner = match &reaped {
            Ok(status) => Inner::Reaped(*status),
            Err(_) => Inner::Lost,
        };
        reaped
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Inner::Running(fd) = std::mem::replace(&mut self.inner, Inner::Lost) else {
            return; // reaped, or tokio's: its `kill_on_drop` and reaper do the same
        };
        let fd = fd.into_inner();
        // Through the pidfd: should the process have been reaped meanwhile, this reaches
        // nobody else (ESRCH), where a `kill(pid)` could hit a process that took the pid.
        send_signal(&fd, Signal::SIGKILL);
        // Reaped by a thread of its own, which neither a runtime shutting down nor a caller
        // outside any runtime can stop; a SIGKILLed process is gone within moments.
        let spawned = std::thread::Builder::new()
            .name("iris-reap".to_owned())
            .spawn(move || {
                let _ = reap(&fd, WaitPidFlag::empty());
            });
        if let Err(error) = spawned {
            tracing::warn!(pid = self.pid, %error, "cannot start a thread to reap a dropped agent process; it stays a zombie until Iris exits");
        }
    }
}

/// Sends `signal` to the process behind `pidfd` (nothing if it was reaped).
fn send_signal(pidfd: &OwnedFd, signal: Signal) {
    #[expect(unsafe_code, reason = "pidfd_send_signal has no wrapper in nix")]
    // SAFETY: a plain syscall on a descriptor we own; a null siginfo is allowed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
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

/// Whether this kernel gives what the clone path needs: `CLONE_PIDFD` (Linux 5.2), pidfds
/// that can be polled (5.3) and `waitid(P_PIDFD)` (5.4). Asked once: `pidfd_open` of Iris
/// itself, then `waitid` on it, which says `ECHILD` (not our child) where it is known and
/// `EINVAL` where it is not.
fn pidfds_work() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        #[expect(unsafe_code, reason = "pidfd_open has no wrapper in nix")]
        // SAFETY: a plain syscall; a descriptor it returns is owned right below.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        let Ok(raw) = RawFd::try_from(raw) else {
            return false;
        };
        if raw < 0 {
            return false;
        }
        #[expect(unsafe_code, reason = "owning the descriptor pidfd_open made")]
        // SAFETY: a new descriptor nothing else owns.
        let own = unsafe { OwnedFd::from_raw_fd(raw) };
        matches!(
            nix::sys::wait::waitid(
                Id::PIDFd(own.as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG
            ),
            Err(nix::errno::Errno::ECHILD)
        )
    })
}

/// A step of starting a child, named in the error of one that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Emptying the signal mask.
    Mask,
    /// Making a new process group.
    Group,
    /// Setting the parent-death signal.
    DeathSignal,
    /// Checking Iris still runs (it died before the child could set the signal).
    ParentGone,
    /// Putting the pipes on 0, 1 and 2.
    Stdio,
    /// Entering the directory.
    Directory,
    /// Executing the program.
    Exec,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::Mask,
        Step::Group,
        Step::DeathSignal,
        Step::ParentGone,
        Step::Stdio,
        Step::Directory,
        Step::Exec,
    ];

    fn code(self) -> libc::c_int {
        match self {
            Step::Mask => 1,
            Step::Group => 2,
            Step::DeathSignal => 3,
            Step::ParentGone => 4,
            Step::Stdio => 5,
            Step::Directory => 6,
            Step::Exec => 7,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Mask => "resetting the signal mask",
            Step::Group => "making a new process group",
            Step::DeathSignal => "setting the parent-death signal",
            Step::ParentGone => "starting (Iris exited before the child could run)",
            Step::Stdio => "connecting standard input and output",
            Step::Directory => "entering the directory",
            Step::Exec => "executing the program",
        }
    }
}

/// The error of a step that failed in the child: an `io::Error` of the step's errno (so
/// its kind is `NotFound`, `PermissionDenied`...), carrying this.
#[derive(Debug)]
struct Failed {
    step: Step,
    source: io::Error,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} failed: {}",
            self.step.describe(),
            self.source
        )
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Which step of starting the child failed, when `error` came from one (`None`: it failed
/// before or after the child ran, or on the fork path).
#[must_use]
pub fn failed_step(error: &io::Error) -> Option<Step> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Failed>())
        .map(|failed| failed.step)
}

/// Starts `spec` as a new process group leader with stdin, stdout and stderr piped. Must be
/// called inside a tokio runtime (the child's exit and its pipes are watched by it).
///
/// # Errors
/// As `execve`, `chdir` and friends fail: `NotFound` for a missing program or directory,
/// `PermissionDenied` for one that is not executable ([`failed_step`] tells which);
/// `InvalidInput` for a program named without a `/`, or a NUL byte in an argument, a
/// variable or a path; any error outside a tokio runtime.
pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    spawn_with(spec, !pidfds_work())
}

/// [`spawn`], with tokio's fork path when `fork` is true (what it falls back to on a kernel
/// without usable pidfds; the tests run both).
pub(crate) fn spawn_with(spec: &Spec<'_>, fork: bool) -> io::Result<Spawned> {
    if !spec.program.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the program {:?} has no `/`: look it up on PATH first",
                spec.program
            ),
        ));
    }
    tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
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
    let (pid, pidfd) = clone_exec(&prepared, fds)?;
    drop((stdin_read, stdout_write, stderr_write));
    #[expect(unsafe_code, reason = "registering the pidfd with tokio's reactor")]
    // SAFETY: an `OwnedFd` is open, refers to the same pidfd and returns the same number
    // for as long as the `AsyncFd` owns it.
    let registered =
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    let pidfd = match registered {
        Ok(pidfd) => pidfd,
        Err(error) => {
            // The process must not outlive this.
            let (pidfd, cause) = error.into_parts();
            send_signal(&pidfd, Signal::SIGKILL);
            let _ = reap(&pidfd, WaitPidFlag::empty());
            return Err(io::Error::other(format!(
                "cannot watch the started process's pidfd: {cause}"
            )));
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

/// Everything the child reads between clone and exec, built beforehand.
struct Prepared {
    program: CString,
    cwd: CString,
    /// Owners of the strings `argv`, `shell_argv` and `envp` point into.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh program args...`, for a program the kernel cannot execute itself (a script
    /// without `#!`), as `execvp` does.
    shell_argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Prepared {
    fn new(spec: &Spec<'_>) -> io::Result<Self> {
        let program = c_string(OsStr::new(spec.program), "the program")?;
        let cwd = c_string(spec.cwd.as_os_str(), "the directory")?;
        let mut strings = Vec::with_capacity(spec.args.len() + 64);
        strings.push(c"/bin/sh".to_owned());
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
        let shell_argv = pointers(&strings[..arguments]);
        let argv = pointers(&strings[1..arguments]);
        let envp = pointers(&strings[arguments..]);
        Ok(Self {
            program,
            cwd,
            _strings: strings,
            argv,
            shell_argv,
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

/// What the child reads, and where it leaves why it could not exec.
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    shell: *const libc::c_char,
    shell_argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [RawFd; 3],
    parent: libc::pid_t,
    /// Set by the child when a step failed: which one ([`Step::code`]) and its errno.
    failed_step: libc::c_int,
    errno: libc::c_int,
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

/// Every signal, glibc's own two (32 and 33, which `sigfillset` leaves out) included, as
/// the kernel's 64-bit mask.
static ALL_SIGNALS: u64 = u64::MAX;
static NO_SIGNALS: u64 = 0;

/// `rt_sigprocmask(SIG_SETMASK, mask, previous)` as a raw syscall: glibc's wrappers keep
/// their own signals out of the mask.
///
/// # Safety
/// Async-signal-safe; `previous` may be null.
#[expect(unsafe_code, reason = "a raw rt_sigprocmask")]
unsafe fn set_signal_mask(mask: *const u64, previous: *mut u64) -> libc::c_long {
    // SAFETY: the kernel reads 8 bytes from `mask` and writes 8 to `previous` if not null.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            mask,
            previous,
            std::mem::size_of::<u64>(),
        )
    }
}

/// Clones the child onto `prepared`, with `fds` as its stdin, stdout and stderr, and waits
/// (the kernel suspends this thread) until it has exec'd or failed. Returns its pid and
/// pidfd.
fn clone_exec(prepared: &Prepared, fds: [RawFd; 3]) -> io::Result<(u32, OwnedFd)> {
    let stack = Stack::new()?;
    let mut args = ChildArgs {
        program: prepared.program.as_ptr(),
        argv: prepared.argv.as_ptr(),
        shell: c"/bin/sh".as_ptr(),
        shell_argv: prepared.shell_argv.as_ptr(),
        envp: prepared.envp.as_ptr(),
        cwd: prepared.cwd.as_ptr(),
        fds,
        parent: nix::unistd::getpid().as_raw(),
        failed_step: 0,
        errno: 0,
    };
    let mut pidfd: libc::c_int = -1;
    let mut previous: u64 = NO_SIGNALS;
    // Every signal blocked while the child runs on this memory: a handler of Iris's must
    // not run in it. The child resets handlers to default before it unblocks them.
    #[expect(unsafe_code, reason = "blocking every signal around the clone")]
    // SAFETY: a raw rt_sigprocmask on this thread with valid pointers.
    if unsafe { set_signal_mask(&raw const ALL_SIGNALS, &raw mut previous) } != 0 {
        return Err(io::Error::last_os_error());
    }
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
    // the child is done with it. With CLONE_PIDFD the kernel writes the pidfd to `pidfd`
    // (the `parent_tid` argument).
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            flags,
            std::ptr::from_mut(&mut args).cast(),
            std::ptr::from_mut(&mut pidfd),
        )
    };
    // Read before anything else can set errno; only meaningful when the clone failed (the
    // child shares this thread's errno while it runs).
    let clone_error = io::Error::last_os_error();
    #[expect(unsafe_code, reason = "restoring the signal mask after the clone")]
    // SAFETY: a raw rt_sigprocmask on this thread with a valid pointer.
    let restored = unsafe { set_signal_mask(&raw const previous, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    let pid_number = nix::unistd::Pid::from_raw(pid);
    if pidfd < 0 {
        // The kernel ignored CLONE_PIDFD (`pidfds_work` should have caught that): the
        // child cannot be watched; it must not outlive this.
        let _ = nix::sys::signal::kill(pid_number, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid_number, None);
        return Err(io::Error::other("the kernel gave no pidfd for the child"));
    }
    #[expect(unsafe_code, reason = "taking ownership of the pidfd the kernel made")]
    // SAFETY: with CLONE_PIDFD and a successful clone, `pidfd` is a new descriptor nothing
    // else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child wrote these before it exec'd or exited, and it has (CLONE_VFORK).
    let failed = Step::ALL
        .into_iter()
        .find(|step| step.code() == args.failed_step);
    if let Some(step) = failed {
        // It has exited (127): reap it, and say which step failed.
        let _ = reap(&pidfd, WaitPidFlag::empty());
        let source = io::Error::from_raw_os_error(args.errno);
        return Err(io::Error::new(source.kind(), Failed { step, source }));
    }
    if restored != 0 {
        // Started, but this thread would keep every signal blocked: undo the start.
        let error = io::Error::last_os_error();
        send_signal(&pidfd, Signal::SIGKILL);
        let _ = reap(&pidfd, WaitPidFlag::empty());
        return Err(error);
    }
    Ok((pid.cast_unsigned(), pidfd))
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
                continue; // SIGKILL, SIGSTOP, and glibc's own two (below)
            }
            let handler = action.sa_sigaction;
            if (handler != libc::SIG_DFL && handler != libc::SIG_IGN) || signal == libc::SIGPIPE {
                action.sa_sigaction = libc::SIG_DFL;
                action.sa_flags = 0;
                libc::sigaction(signal, &raw const action, std::ptr::null_mut());
            }
        }
        // glibc's wrapper refuses its own signals (32, 33): the kernel's call, with the
        // kernel's `struct sigaction` all zeros (SIG_DFL, no flags, no mask).
        let default = [0_u64; 4];
        for signal in [32, 33] {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &raw const default,
                std::ptr::null_mut::<u64>(),
                std::mem::size_of::<u64>(),
            );
        }
        // An empty mask, as `Command` gives.
        if set_signal_mask(&raw const NO_SIGNALS, std::ptr::null_mut()) != 0 {
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
        if *libc::__errno_location() == libc::ENOEXEC {
            // Not a binary and no `#!`: a shell script, as `execvp` runs it.
            libc::execve(args.shell, args.shell_argv, args.envp);
        }
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
        args.failed_step = step.code();
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
