//! Spawning an instance with `clone(CLONE_VM | CLONE_VFORK)`: the child runs on a stack of
//! its own inside the daemon's memory until it execs, and the calling thread waits for that
//! exec. Nothing of the daemon's address space is copied, so a spawn costs no page-table copy,
//! no copy-on-write faults afterwards and no TLB shoot-downs on the daemon's other threads —
//! the costs that dominated a `fork` of the multi-threaded daemon (README, "Benchmarks").
//! glibc's `posix_spawn` does the same, but cannot join a cgroup or switch identity between
//! clone and exec; this module does what herd needs there, and nothing else.
//!
//! The child shares every page with the daemon, so it may only make raw system calls on data
//! prepared before the clone: no allocation, no locks, no glibc call that touches process-wide
//! state (its `setuid` would signal the daemon's own threads; `identity` uses raw syscalls),
//! and no signal handler of the daemon's may run in it (all signals are blocked around the
//! clone and the child resets every handler before it unblocks them). A failing step leaves
//! its errno and name in memory the parent reads once the child has exited.

use super::identity::Plan;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

/// What the child does between clone and exec, in this order.
pub struct Exec<'a> {
    /// The paths exec tries in turn (a bare name's PATH entries, as `execvp` would; see
    /// `candidates`). The first that runs wins; argv[0] is `argv[0]`, whatever the path.
    pub candidates: &'a [CString],
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    /// Become fds 0, 1 and 2 (the same fd may appear twice).
    pub stdio: [RawFd; 3],
    /// Held by herd, close-on-exec: become fds 3, 4, ... (systemd's `LISTEN_FDS`).
    pub listen_fds: &'a [RawFd],
    /// The cgroup2 directory the child starts in (`clone3` with `CLONE_INTO_CGROUP`) and its
    /// `cgroup.procs`, which the child writes itself into instead where that clone is not
    /// available (another architecture, a kernel before 5.7).
    pub cgroup: Option<(RawFd, &'a CStr)>,
    /// More `cgroup.procs` files (cgroup v1 hierarchies) the child writes itself into first,
    /// while still root.
    pub cgroup_files: &'a [CString],
    /// Entered before the identity switch (a plan that switches enters its own cwd after).
    pub cwd: Option<&'a CStr>,
    pub plan: Option<&'a Plan>,
}

/// The step of the child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Clone = 1,
    Cgroup,
    ProcessGroup,
    Stdio,
    ListenFds,
    Cwd,
    Identity,
    Exec,
}

impl Step {
    fn from_u8(v: u8) -> Option<Step> {
        use Step::*;
        [
            Clone,
            Cgroup,
            ProcessGroup,
            Stdio,
            ListenFds,
            Cwd,
            Identity,
            Exec,
        ]
        .into_iter()
        .find(|s| *s as u8 == v)
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Clone => "clone",
            Step::Cgroup => "joining the instance's cgroup",
            Step::ProcessGroup => "setting up the process group",
            Step::Stdio => "connecting stdin/stdout/stderr",
            Step::ListenFds => "passing the listen sockets",
            Step::Cwd => "entering cwd",
            Step::Identity => "switching identity",
            Step::Exec => "exec",
        }
    }
}

/// A spawn that failed, with the step that failed.
#[derive(Debug)]
pub struct Failure {
    pub step: Step,
    pub error: io::Error,
}

impl From<Failure> for io::Error {
    fn from(f: Failure) -> io::Error {
        match f.step {
            // The plain errno, as std's spawn gave it ("No such file or directory").
            Step::Exec | Step::Identity => f.error,
            step => io::Error::new(f.error.kind(), format!("{}: {}", step.describe(), f.error)),
        }
    }
}

/// What the parent hands the child: the plan, and the child's answer if it fails.
struct Shared<'a> {
    exec: &'a Exec<'a>,
    /// The child writes itself into `exec.cgroup` (it was not cloned into it).
    join_unified: bool,
    argv: *const *const c_char,
    envp: *const *const c_char,
    errno: AtomicI32,
    step: AtomicU8,
}

/// A child's stack, with a guard page below it.
struct Stack {
    base: *mut c_void,
    len: usize,
}

const STACK_BYTES: usize = 128 * 1024;
const GUARD_BYTES: usize = 4096;

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = STACK_BYTES + GUARD_BYTES;
        // SAFETY: a fresh private anonymous mapping; checked for failure below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping made above.
        if unsafe { libc::mprotect(base, GUARD_BYTES, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The lowest usable address (above the guard page), which `clone3` takes.
    fn lowest(&self) -> *mut c_void {
        // SAFETY: inside the mapping.
        unsafe { self.base.cast::<u8>().add(GUARD_BYTES).cast() }
    }

    /// The initial stack pointer (stacks grow down); page-aligned, so 16-byte aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which clone takes as the stack's top.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no child runs on it (its thread is ending).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// NUL-terminated pointer array over `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Starts the child; returns its pid once it has exec'd. The child is ours to reap (see
/// `wait`); a child that failed before exec is reaped here.
pub fn spawn(exec: &Exec<'_>) -> Result<u32, Failure> {
    let argv = pointers(exec.argv);
    let envp = pointers(exec.envp);
    let mut shared = Shared {
        exec,
        join_unified: false,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        errno: AtomicI32::new(0),
        step: AtomicU8::new(0),
    };
    STACK.with_borrow_mut(|stack| {
        let stack = match stack {
            Some(s) => s,
            None => stack.insert(Stack::new().map_err(|error| Failure {
                step: Step::Clone,
                error,
            })?),
        };
        if let Some((dir, _)) = exec.cgroup
            && INTO_CGROUP.load(Ordering::Relaxed)
        {
            match clone_child(&shared, stack, Some(dir)) {
                // Refused by the kernel itself (too old for clone3 or CLONE_INTO_CGROUP,
                // another architecture): the child joins by writing, now and from now on.
                Err(f) if f.step == Step::Clone && unsupported(&f.error) => {
                    INTO_CGROUP.store(false, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        shared.join_unified = exec.cgroup.is_some();
        clone_child(&shared, stack, None)
    })
}

/// Whether spawning straight into a cgroup (`clone3`) still looks possible on this host.
static INTO_CGROUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::E2BIG) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

thread_local! {
    /// Each spawning thread's child stack, mapped on its first spawn and reused: the thread
    /// is suspended while a child runs on it (CLONE_VFORK), and fresh pages for every spawn
    /// cost page faults and zeroing.
    static STACK: std::cell::RefCell<Option<Stack>> = const { std::cell::RefCell::new(None) };
}

/// One clone: into the cgroup2 directory `into` (`clone3`), or with glibc's `clone`.
fn clone_child(shared: &Shared<'_>, stack: &Stack, into: Option<RawFd>) -> Result<u32, Failure> {
    // No handler of the daemon's may run in the child while it shares the daemon's memory:
    // every signal is blocked across the clone (the child inherits the mask, resets the
    // handlers, then unblocks), and the calling thread's mask is restored after.
    // SAFETY: plain sigset operations on local values.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let arg: *mut c_void = (shared as *const Shared<'_>).cast_mut().cast();
    let (pid, clone_error) = match into {
        // SAFETY: as below; `clone3` takes the same child function, stack and argument.
        Some(dir) => match unsafe { clone3_into(dir, stack, arg) } {
            Ok(pid) => (pid, io::Error::from_raw_os_error(0)),
            Err(e) => (-1, e),
        },
        None => {
            // SAFETY: `child_main` only reads `shared` (alive until after clone returns, as
            // the parent is suspended until the child execs or exits: CLONE_VFORK) and makes
            // raw system calls; its stack is the mapping above, which outlives its use.
            let pid = unsafe {
                libc::clone(
                    child_main,
                    stack.top(),
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    arg,
                )
            };
            (pid, io::Error::last_os_error())
        }
    };
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(Failure {
            step: Step::Clone,
            error: clone_error,
        });
    }
    match Step::from_u8(shared.step.load(Ordering::Acquire)) {
        None => Ok(pid as u32),
        Some(step) => {
            // It has exited (`_exit` in `child_main`): reap it.
            let mut status = 0;
            // SAFETY: waits for our own child, which has exited.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            Err(Failure {
                step,
                error: io::Error::from_raw_os_error(shared.errno.load(Ordering::Acquire)),
            })
        }
    }
}

/// `struct clone_args` of `clone3(2)`, as far as `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)`: the child starts as a member of the
/// cgroup2 directory `dir`, so it never migrates. A migration (a write to `cgroup.procs`)
/// takes the kernel's cgroup lock for writing, which waits for an RCU grace period: 8-20 ms
/// for a lone restart on this VM, most of a restart's time. glibc has no wrapper that takes
/// a child function, so the few instructions around the system call are written here: in
/// the child (`rax` = 0, on its own stack) they call `child_main(arg)` and exit with what
/// it returns (it never returns: it execs or `_exit`s).
///
/// SAFETY: as for `libc::clone` in `clone_child`: `child_main` reads only `arg`, which the
/// suspended parent keeps alive, and runs on `stack`.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_into(dir: RawFd, stack: &Stack, arg: *mut c_void) -> io::Result<i32> {
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.lowest() as u64,
        stack_size: STACK_BYTES as u64,
        cgroup: dir as u64,
        ..Default::default()
    };
    let f: extern "C" fn(*mut c_void) -> c_int = child_main;
    let ret: i64;
    // SAFETY: see the function's comment; the child's path never returns into Rust.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, {arg}",
            "call {f}",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            f = in(reg) f,
            arg = in(reg) arg,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            out("rcx") _,
            out("r11") _,
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    Ok(ret as i32)
}

/// Elsewhere the child writes itself into its cgroup (see `spawn`).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_into(_dir: RawFd, _stack: &Stack, _arg: *mut c_void) -> io::Result<i32> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), a clone3-only flag.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` of `spawn`, alive while the parent is suspended.
    let shared = unsafe { &*(arg as *const Shared<'_>) };
    let (step, errno) = run_child(shared);
    shared.errno.store(errno, Ordering::Release);
    shared.step.store(step as u8, Ordering::Release);
    // SAFETY: ends the child without running anything of the daemon's (no atexit, no
    // stdio flush): `_exit` is the exit_group system call.
    unsafe { libc::_exit(127) }
}

/// The child's steps; returns only on failure, with the step and its errno.
fn run_child(shared: &Shared<'_>) -> (Step, c_int) {
    let exec = shared.exec;
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    reset_signal_handlers();
    // Into the cgroup first, while still root, so nothing the app forks starts outside it.
    let unified = match exec.cgroup {
        Some((_, procs)) if shared.join_unified => Some(procs),
        _ => None,
    };
    if let Some(procs) = unified
        && let Err(e) = super::cgroup::join_in_child(std::slice::from_ref(&procs))
    {
        return (Step::Cgroup, e.raw_os_error().unwrap_or(libc::EIO));
    }
    if let Err(e) = super::cgroup::join_in_child(exec.cgroup_files) {
        return (Step::Cgroup, e.raw_os_error().unwrap_or(libc::EIO));
    }
    // SAFETY (this block and the ones below): raw system calls on fds and NUL-terminated
    // strings prepared by the parent.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return (Step::ProcessGroup, errno());
    }
    // Out of the way of 0..2 first (a log's fd may itself be 0..2), then into place; dup2
    // clears close-on-exec on the copy.
    let mut moved = [0 as RawFd; 3];
    for (slot, fd) in moved.iter_mut().zip(exec.stdio) {
        *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
        if *slot < 0 {
            return (Step::Stdio, errno());
        }
    }
    for (target, fd) in moved.into_iter().enumerate() {
        if unsafe { libc::dup2(fd, target as c_int) } < 0 {
            return (Step::Stdio, errno());
        }
    }
    // The sockets before the plan: a lowered `nofile` must not stop them moving into place.
    if let Err(e) = super::process::move_listen_fds(exec.listen_fds) {
        return (Step::ListenFds, e.raw_os_error().unwrap_or(libc::EIO));
    }
    if let Some(cwd) = exec.cwd
        && unsafe { libc::chdir(cwd.as_ptr()) } != 0
    {
        return (Step::Cwd, errno());
    }
    if let Some(plan) = exec.plan
        && let Err(e) = plan.apply_in_child()
    {
        return (Step::Identity, e.raw_os_error().unwrap_or(libc::EIO));
    }
    // The app starts with no signal blocked (std's spawn does the same).
    let mut none: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    // As execvp: a path that is not there (or not a directory) moves on to the next; one
    // that may not be run is remembered, in case no later one runs either.
    let mut result = libc::ENOENT;
    let mut denied = false;
    for path in exec.candidates {
        unsafe { libc::execve(path.as_ptr(), shared.argv, shared.envp) };
        result = errno();
        match result {
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            libc::EACCES => denied = true,
            _ => return (Step::Exec, result),
        }
    }
    (Step::Exec, if denied { libc::EACCES } else { result })
}

/// Every signal the daemon handles goes back to its default action in the child, and
/// SIGPIPE (ignored by the Rust runtime) too; other ignored signals stay ignored, as with
/// std's spawn. The child has its own copy of the handler table (no CLONE_SIGHAND).
fn reset_signal_handlers() {
    for sig in 1..65 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction reads into / from local structs; glibc refuses its two internal
        // signals with EINVAL, which leaves them alone.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if handled || (sig == libc::SIGPIPE && old.sa_sigaction == libc::SIG_IGN) {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// The paths exec tries for `program`, as `execvp` would: the name itself when it holds a
/// `/`; else each entry of `path` (an empty entry is the current directory, as POSIX says)
/// joined with it, or glibc's default `/bin:/usr/bin` when there is no PATH. Relative entries
/// stay relative: exec resolves them from the app's cwd.
pub fn candidates(program: &[u8], path: Option<&[u8]>) -> io::Result<Vec<CString>> {
    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command");
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the command is empty",
        ));
    }
    if program.contains(&b'/') {
        return Ok(vec![CString::new(program).map_err(nul)?]);
    }
    path.unwrap_or(b"/bin:/usr/bin")
        .split(|b| *b == b':')
        .map(|dir| {
            let mut full = Vec::with_capacity(dir.len() + 1 + program.len());
            if dir.is_empty() {
                full.extend_from_slice(b"./");
            } else {
                full.extend_from_slice(dir);
                if !dir.ends_with(b"/") {
                    full.push(b'/');
                }
            }
            full.extend_from_slice(program);
            CString::new(full).map_err(nul)
        })
        .collect()
}

/// Waits for our child `pid` (spawned above, not yet reaped) to exit and reaps it, through
/// a pidfd the runtime polls. `pidfd` is opened by the caller right after the spawn.
pub async fn wait(pid: u32, pidfd: std::os::fd::OwnedFd) -> io::Result<std::process::ExitStatus> {
    let reaper = Reaper {
        pid,
        reaped: false,
        kill: false,
    };
    wait_with(reaper, pidfd).await
}

async fn wait_with(
    mut reaper: Reaper,
    pidfd: std::os::fd::OwnedFd,
) -> io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let pid = reaper.pid;
    // SAFETY: the AsyncFd owns the pidfd and nothing else closes or replaces it.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }?;
    loop {
        let mut ready = afd.readable().await?;
        let mut status = 0;
        // SAFETY: our own unreaped child; WNOHANG never blocks.
        match unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) } {
            0 => ready.clear_ready(),
            r if r > 0 => {
                reaper.reaped = true;
                return Ok(std::process::ExitStatus::from_raw(status));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    reaper.reaped = true;
                    return Err(e);
                }
            }
        }
    }
}

/// Runs `argv` (a bare name searched along `env`'s PATH) with `env`, stdin/stdout/stderr on
/// `/dev/null`, as `plan` says, in a process group of its own, and waits for it. A caller
/// that stops waiting (a probe's timeout drops the future) kills the child's group; it is
/// reaped off the runtime's threads.
pub async fn run(
    argv: &[String],
    env: &std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString>,
    plan: Option<&Plan>,
) -> io::Result<std::process::ExitStatus> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let program = argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty command"))?;
    let path = env.get(std::ffi::OsStr::new("PATH")).map(|p| p.as_bytes());
    let n = dev_null()?.as_raw_fd();
    let pid = spawn(&Exec {
        candidates: &candidates(program.as_bytes(), path)?,
        argv: &c_strings(argv.iter().map(String::as_str))?,
        envp: &environment(env)?,
        stdio: [n, n, n],
        listen_fds: &[],
        cgroup: None,
        cgroup_files: &[],
        cwd: None,
        plan,
    })?;
    // From here on the child is killed and reaped if this future is dropped.
    let reaper = Reaper {
        pid,
        reaped: false,
        kill: true,
    };
    wait_with(reaper, pidfd(pid)?).await
}

/// A pidfd of our child `pid` (not reaped, so the pid is still its own).
pub fn pidfd(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::NONBLOCK,
    )?)
}

/// `argv` as C strings; a NUL byte in one is an error naming it.
pub fn c_strings<'a>(argv: impl IntoIterator<Item = &'a str>) -> io::Result<Vec<CString>> {
    argv.into_iter()
        .map(|s| {
            CString::new(s).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a NUL byte in {:?}", s.escape_debug().to_string()),
                )
            })
        })
        .collect()
}

/// `env` as `KEY=value` C strings; a NUL byte is an error naming the variable.
pub fn environment(
    env: &std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString>,
) -> io::Result<Vec<CString>> {
    use std::os::unix::ffi::OsStrExt;
    env.iter()
        .map(|(k, v)| {
            CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a NUL byte in the environment variable {}",
                        k.to_string_lossy()
                    ),
                )
            })
        })
        .collect()
}

/// `/dev/null`, opened once: the stdin of every instance and all three fds of a probe.
pub fn dev_null() -> io::Result<&'static std::fs::File> {
    static NULL: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f);
    }
    let f = std::fs::File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| f))
}

/// What happens to the child when its waiter is dropped before reaping it. An instance
/// (`kill: false`, a daemon shutting down): reaped if it has exited, so no zombie is left; one
/// still running is reparented to init when the daemon exits. A probe (`kill: true`, its
/// timeout passed): its group is killed first (the pid cannot have been reused: it is not
/// reaped yet) and it is reaped off the runtime's threads.
struct Reaper {
    pid: u32,
    reaped: bool,
    kill: bool,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid as i32;
        if !self.kill {
            let mut status = 0;
            // SAFETY: our own child; WNOHANG never blocks.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            return;
        }
        // SAFETY: the group our unreaped child leads (see `run_child`).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let reap = move || {
            let mut status = 0;
            // SAFETY: waits for our own child, just killed.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(reap)),
            Err(_) => reap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn strings(c: &[CString]) -> Vec<&str> {
        c.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn candidates_follow_execvp() {
        let got = candidates(b"tool", Some(b"/a:/b/::rel")).unwrap();
        assert_eq!(strings(&got), ["/a/tool", "/b/tool", "./tool", "rel/tool"]);
        assert_eq!(strings(&candidates(b"./x", Some(b"/a")).unwrap()), ["./x"]);
        assert_eq!(
            strings(&candidates(b"tool", None).unwrap()),
            ["/bin/tool", "/usr/bin/tool"]
        );
        assert!(candidates(b"", None).is_err());
        assert!(candidates(b"a\0b", None).is_err());
    }

    /// Waits for our child `pid` through a pidfd, as the daemon does.
    async fn exit_of(pid: u32) -> std::process::ExitStatus {
        wait(pid, pidfd(pid).unwrap()).await.unwrap()
    }

    fn cstrings(items: &[&str]) -> Vec<CString> {
        items.iter().map(|s| CString::new(*s).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_child_runs_with_its_fds_and_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(dir.path().join("out")).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let exec = Exec {
            candidates: &candidates(b"sh", Some(b"/nonexistent:/usr/bin:/bin")).unwrap(),
            argv: &cstrings(&[
                "sh",
                "-c",
                "echo out $X; echo err >&2; echo group $(cut -d' ' -f5 /proc/$$/stat); exit 7",
            ]),
            envp: &cstrings(&["X=1", "PATH=/usr/bin:/bin"]),
            stdio: [null.as_raw_fd(), out.as_raw_fd(), out.as_raw_fd()],
            listen_fds: &[],
            cgroup: None,
            cgroup_files: &[],
            cwd: None,
            plan: None,
        };
        let pid = spawn(&exec).unwrap();
        let status = exit_of(pid).await;
        assert_eq!(status.code(), Some(7));
        let text = std::fs::read_to_string(dir.path().join("out")).unwrap();
        // Its own process group, led by itself.
        assert_eq!(text, format!("out 1\nerr\ngroup {pid}\n"));
    }

    #[tokio::test]
    async fn a_path_entry_that_may_not_be_run_is_passed_over_as_execvp_does() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Not executable: exec says EACCES, and the search goes on to /bin.
        std::fs::write(dir.path().join("sh"), "#!/bin/sh\nexit 3\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("sh"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let path = format!("{}:/usr/bin:/bin", dir.path().display());
        let null = std::fs::File::open("/dev/null").unwrap();
        let n = null.as_raw_fd();
        let exec = Exec {
            candidates: &candidates(b"sh", Some(path.as_bytes())).unwrap(),
            argv: &cstrings(&["sh", "-c", "exit 5"]),
            envp: &[],
            stdio: [n, n, n],
            listen_fds: &[],
            cgroup: None,
            cgroup_files: &[],
            cwd: None,
            plan: None,
        };
        let pid = spawn(&exec).unwrap();
        assert_eq!(exit_of(pid).await.code(), Some(5));
        // Only that one: EACCES, not ENOENT.
        let only = Exec {
            candidates: &candidates(b"sh", Some(dir.path().as_os_str().as_bytes())).unwrap(),
            ..exec
        };
        let f = spawn(&only).unwrap_err();
        assert_eq!(
            (f.step, f.error.raw_os_error()),
            (Step::Exec, Some(libc::EACCES))
        );
    }

    /// The cgroup2 mount of this host (`/sys/fs/cgroup` or, on a hybrid host, its `unified`).
    fn cgroup2_mount() -> std::path::PathBuf {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        info.lines()
            .find(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|t| t.starts_with("cgroup2 "))
            })
            .and_then(|l| l.split(' ').nth(4))
            .expect("a cgroup2 mount (the tests run as root on a host with one)")
            .into()
    }

    /// Spawns `cat /proc/self/cgroup` into a fresh cgroup2 directory, once cloned into it
    /// (`clone3`) and once writing itself in; both must print that directory.
    #[tokio::test]
    async fn a_child_starts_in_its_cgroup_cloned_into_it_or_joining_it() {
        use std::os::fd::AsRawFd;
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (CI runs as root)"
        );
        let name = format!("herd-vfork-test-{}", std::process::id());
        let dir = cgroup2_mount().join(&name);
        std::fs::create_dir(&dir).unwrap();
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        let fd = std::fs::File::open(&dir).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        for (round, into) in [(0, true), (1, false)] {
            let path = out_dir.path().join(format!("out{round}"));
            let out = std::fs::File::create(&path).unwrap();
            let null = std::fs::File::open("/dev/null").unwrap();
            let exec = Exec {
                candidates: &candidates(b"/bin/cat", None).unwrap(),
                argv: &cstrings(&["cat", "/proc/self/cgroup"]),
                envp: &[],
                stdio: [null.as_raw_fd(), out.as_raw_fd(), out.as_raw_fd()],
                listen_fds: &[],
                cgroup: Some((fd.as_raw_fd(), procs.as_c_str())),
                cgroup_files: &[],
                cwd: None,
                plan: None,
            };
            let argv = pointers(exec.argv);
            let envp = pointers(exec.envp);
            let shared = Shared {
                exec: &exec,
                join_unified: !into,
                argv: argv.as_ptr(),
                envp: envp.as_ptr(),
                errno: AtomicI32::new(0),
                step: AtomicU8::new(0),
            };
            let stack = Stack::new().unwrap();
            let pid = clone_child(&shared, &stack, into.then_some(fd.as_raw_fd()))
                .unwrap_or_else(|f| panic!("round {round}: {f:?}"));
            assert_eq!(exit_of(pid).await.code(), Some(0));
            let text = std::fs::read_to_string(&path).unwrap();
            let unified = text.lines().find(|l| l.starts_with("0::")).unwrap_or("");
            assert!(
                unified.ends_with(&format!("/{name}")),
                "round {round} (cloned into it: {into}): {text}"
            );
        }
        std::fs::remove_dir(&dir).unwrap();
    }

    /// `run` (exec probes): the exit status comes back; a caller that stops waiting leaves
    /// neither the child nor a zombie behind.
    #[tokio::test]
    async fn run_waits_and_a_dropped_run_kills_and_reaps_its_child() {
        let env: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
            [("PATH".into(), "/usr/bin:/bin".into())].into();
        let argv = |s: &str| vec!["sh".to_string(), "-c".into(), s.to_string()];
        let status = run(&argv("exit 3"), &env, None).await.unwrap();
        assert_eq!(status.code(), Some(3));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 100", file.display());
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            run(&argv(&script), &env, None),
        )
        .await;
        assert!(cut.is_err(), "sleep 100 ended within 300 ms: {cut:?}");
        let pid: i32 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = crate::supervisor::clock::monotonic() + std::time::Duration::from_secs(10);
        // Killed and reaped: no /proc entry at all (a zombie would keep one).
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                crate::supervisor::clock::monotonic() < deadline,
                "pid {pid} still there"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn a_missing_program_and_a_bad_cwd_fail_with_their_step() {
        let null = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let n = null.as_raw_fd();
        let argv = cstrings(&["x"]);
        let missing = Exec {
            candidates: &candidates(b"herd-no-such-program", Some(b"/usr/bin:/bin")).unwrap(),
            argv: &argv,
            envp: &[],
            stdio: [n, n, n],
            listen_fds: &[],
            cgroup: None,
            cgroup_files: &[],
            cwd: None,
            plan: None,
        };
        let f = spawn(&missing).unwrap_err();
        assert_eq!(
            (f.step, f.error.raw_os_error()),
            (Step::Exec, Some(libc::ENOENT))
        );
        let cwd = CString::new("/nonexistent/dir").unwrap();
        let bad_cwd = Exec {
            candidates: &candidates(b"/bin/true", None).unwrap(),
            cwd: Some(&cwd),
            ..missing
        };
        let f = spawn(&bad_cwd).unwrap_err();
        assert_eq!(f.step, Step::Cwd);
        assert!(io::Error::from(f).to_string().starts_with("entering cwd: "));
    }
}
