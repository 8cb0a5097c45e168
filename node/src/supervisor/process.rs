//! The OS side of an instance: spawning it in its own process group with its output going
//! straight to its log file, signalling the whole group, telling a live process from a
//! recycled pid, and watching for the exit of a process that is not our child.

use super::app_env;
use super::cgroup::{self, Cgroup};
use super::identity;
use super::marker::Marker;
use super::spec::AppSpec;
use super::vfork;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The fields of `/proc/PID/stat` herd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    pub pgrp: u32,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time in clock ticks since boot: what tells a process from a later one that
    /// reuses its pid.
    pub start: u64,
    pub rss_pages: u64,
    pub threads: u32,
}

impl ProcStat {
    pub fn is_gone(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

pub fn read_stat(pid: u32) -> Option<ProcStat> {
    read_stat_by(pid, &mut |p| read_proc_file(p))
}

/// `read_stat` through `read` (the metrics sampler reads through files it keeps open).
pub fn read_stat_by(pid: u32, read: &mut dyn FnMut(&Path) -> Option<String>) -> Option<ProcStat> {
    parse_stat(&read(Path::new(&format!("/proc/{pid}/stat")))?)
}

/// Reads a small /proc or cgroup file with open, one read and close (`fs::read_to_string`
/// also asks for the size, which these files cannot give, then reads in 32-byte steps up to
/// an end-of-file read): metrics read hundreds of these per sample.
pub fn read_proc_file(path: impl AsRef<Path>) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    read_whole(&f, false)
}

/// The whole of a `seq_file` (/proc, cgroup files): with `from_start`, read from offset 0
/// (`pread`), which makes the kernel produce it afresh, so one descriptor serves every
/// sample. A `seq_file` fills a read as far as it has data, so a read shorter than asked is
/// the end; only a full one reads on. The scratch buffer is per thread, allocated once.
pub fn read_whole(f: &std::fs::File, from_start: bool) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 4096]);
    }
    SCRATCH.with_borrow_mut(|chunk| {
        let mut buf = Vec::new();
        let mut at = 0u64;
        loop {
            let r = if from_start {
                f.read_at(chunk, at)
            } else {
                (&*f).read(chunk)
            };
            match r {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    at += n as u64;
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        String::from_utf8(buf).ok()
    })
}

fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. `f[0]` is field 3 (state), so field n is `f[n - 3]`. Only the first 22 fields
    // past it are split off (metrics parse hundreds of these per sample).
    let mut f: [&str; 22] = [""; 22];
    let mut found = 0;
    for (slot, field) in f
        .iter_mut()
        .zip(stat.get(stat.rfind(')')? + 2..)?.split_ascii_whitespace())
    {
        *slot = field;
        found += 1;
    }
    if found < f.len() {
        return None;
    }
    let num = |n: usize| f[n - 3].parse::<u64>().ok();
    Some(ProcStat {
        state: f[0].chars().next()?,
        pgrp: num(5)? as u32,
        cpu_ticks: num(14)? + num(15)?,
        start: num(22)?,
        rss_pages: num(24)?,
        threads: num(20)? as u32,
    })
}

/// See `ProcStat::start`.
pub fn start_signature(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.start)
}

/// True when `pid` is alive, is not a zombie, and is the same process that had `signature`.
pub fn is_same_process(pid: u32, signature: u64) -> bool {
    read_stat(pid).is_some_and(|s| !s.is_gone() && s.start == signature)
}

/// Spawns one instance: own process group, stdin from /dev/null, stdout and stderr appended
/// to `log` by the child itself — so the app never depends on the daemon being alive to
/// write its output.
///
/// `listen_fds` (held by herd, close-on-exec) become fds 3, 4, ... of the child, announced
/// systemd-style with `LISTEN_FDS`; `LISTEN_PID` is set by a one-line `sh` that execs the app.
/// With a `cgroup`, the child joins it before anything else, so nothing it forks is outside.
pub fn spawn(req: &SpawnRequest<'_>, cgroup: Option<&Cgroup>) -> io::Result<u32> {
    let &SpawnRequest {
        spec,
        index,
        log,
        listen_fds,
        home,
        marker,
        secrets,
        notify,
    } = req;
    let file = super::logs::open_append(log)?;
    // Nothing of the daemon's own environment passes unfiltered (its credentials stay
    // with it); HERD_APP, HERD_SLOT, HERD_HOME and the marker identify the process after
    // a crash (see `scan_instances`).
    let mut listen = if listen_fds.is_empty() {
        Vec::new()
    } else {
        vec![
            ("LISTEN_FDS", listen_fds.len().to_string()),
            ("LISTEN_FDNAMES", spec.listen.join(":")),
        ]
    };
    // `NOTIFY_SOCKET` and `WATCHDOG_USEC` of a notifying app (see `notify`).
    listen.extend(notify.iter().cloned());
    // Variables that must hold the app's own pid, set by a one-line `sh` that execs it.
    let mut own_pid = Vec::new();
    if !listen_fds.is_empty() {
        own_pid.push("LISTEN_PID");
    }
    if notify.iter().any(|(k, _)| *k == "WATCHDOG_USEC") {
        own_pid.push("WATCHDOG_PID");
    }
    let mut env = app_env::build(
        std::env::vars_os(),
        spec,
        index,
        home,
        marker.as_str(),
        &listen,
    );
    // Opened secrets replace their `secret:NAME` references, in the child's environment only.
    for (var, value) in secrets {
        env.insert(
            OsString::from(var),
            OsString::from(OsStr::from_bytes(value)),
        );
    }
    // Resolved at every spawn: the user database may have changed since the file was loaded.
    let plan = identity::Plan::prepare(spec)?;
    if let Some(plan) = &plan {
        // From the passwd entry, unless the app's own env (or a secret) names them.
        for (k, v) in &plan.env {
            if !spec.env.contains_key(*k) {
                env.insert(OsString::from(k), OsString::from(v));
            }
        }
    }
    // A bare name is looked up in the child, along the app's own PATH, as execvp would: as
    // the app's user when it runs as another one, so an entry only the daemon's user can
    // reach (root's ~/.pyenv shims) does not shadow one the app can run. argv[0] stays the
    // name the app file gave.
    let path = env.get(OsStr::new("PATH")).map(|p| p.as_bytes());
    let (candidates, argv) = if own_pid.is_empty() {
        let argv = vfork::c_strings(
            std::iter::once(spec.command.as_str()).chain(spec.args.iter().map(String::as_str)),
        )?;
        (vfork::candidates(spec.command.as_bytes(), path)?, argv)
    } else {
        let exports: String = own_pid
            .iter()
            .map(|v| format!("{v}=$$; export {v}; "))
            .collect();
        let script = format!("{exports}exec \"$0\" \"$@\"");
        let argv = vfork::c_strings(
            ["/bin/sh", "-c", &script, &spec.command]
                .into_iter()
                .chain(spec.args.iter().map(String::as_str)),
        )?;
        (vfork::c_strings(["/bin/sh"])?, argv)
    };
    let envp = vfork::environment(&env)?;
    let cwd = match &spec.cwd {
        Some(cwd) if !plan.as_ref().is_some_and(|p| p.enters_cwd()) => Some(
            CString::new(cwd.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in `cwd`"))?,
        ),
        _ => None,
    };
    use std::os::fd::AsRawFd;
    // The child is cloned straight into its cgroup2 directory where the kernel can; the v1
    // hierarchies (limits on a hybrid host) it joins itself.
    let (unified, join) = cgroup.map(Cgroup::spawn_targets).unwrap_or_default();
    let unified = match unified {
        Some((dir, procs)) => Some((
            std::fs::File::open(&dir).map_err(|e| {
                io::Error::new(e.kind(), format!("opening cgroup {}: {e}", dir.display()))
            })?,
            procs,
        )),
        None => None,
    };
    let null = vfork::dev_null()?.as_raw_fd();
    let spawned = vfork::spawn(&vfork::Exec {
        candidates: &candidates,
        argv: &argv,
        envp: &envp,
        stdio: [null, file.as_raw_fd(), file.as_raw_fd()],
        listen_fds,
        cgroup: unified
            .as_ref()
            .map(|(dir, procs)| (dir.as_raw_fd(), procs.as_c_str())),
        cgroup_files: &join,
        cwd: cwd.as_deref(),
        plan: plan.as_ref(),
    });
    // A step of the switch that failed in the child is named in the instance's log.
    let who = plan
        .as_ref()
        .and_then(|p| p.switches().then(|| p.who.clone()));
    spawned.map_err(|f| {
        let e = io::Error::from(f);
        match who {
            Some(who) => io::Error::new(e.kind(), format!("starting as {who}: {e}")),
            None => e,
        }
    })
}

/// In the child: `fds` (held by herd, close-on-exec) become fds 3, 4, ... Async-signal-safe.
pub(super) fn move_listen_fds(fds: &[RawFd]) -> io::Result<()> {
    let mut moved = [0 as RawFd; 64];
    for (i, fd) in fds.iter().enumerate().take(64) {
        // First out of the way of 3.., then into place (dup2 clears close-on-exec).
        // SAFETY: fcntl on an fd number; a bad one is an error, not UB.
        moved[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100) };
        if moved[i] < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (i, fd) in moved.iter().take(fds.len().min(64)).enumerate() {
        // SAFETY: as above.
        if unsafe { libc::dup2(*fd, 3 + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pidfd of our child `pid`, just spawned: what its exit is awaited on. Without one (out of
/// descriptors) the child is killed and reaped, and the spawn fails like any other.
fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    vfork::pidfd(pid)
        .inspect_err(|_| {
            let _ = signal_group(pid, Signal::SIGKILL);
            let mut status = 0;
            // SAFETY: waits for our own child, just killed.
            unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        })
        .map_err(|e| io::Error::new(e.kind(), format!("watching the new process: {e}")))
}

/// Sends `sig` to the process group led by `pgid`. A group that is already gone is not an
/// error. Refused for pgid 0 or 1 (`killpg(1)` is `kill(-1)`: every process on the host) and
/// for a pid that lives but leads no group of its own (a state file may claim anything).
pub fn signal_group(pgid: u32, sig: Signal) -> io::Result<()> {
    if pgid <= 1 || pgid > i32::MAX as u32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}: not an instance's group"),
        ));
    }
    if let Some(stat) = read_stat(pgid)
        && !stat.is_gone()
        && stat.pgrp != pgid
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to signal process group {pgid}: pid {pgid} is in group {}, so it is not an instance's leader",
                stat.pgrp
            ),
        ));
    }
    match killpg(Pid::from_raw(pgid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// True while any process (zombies included) is still in the group.
pub fn group_alive(pgid: u32) -> bool {
    // 0 is our own group and 1 (as -1) every process: neither is ever an instance's.
    if pgid <= 1 || pgid > i32::MAX as u32 {
        return false;
    }
    // Signal 0 checks existence and permission without delivering anything.
    !matches!(
        killpg(Pid::from_raw(pgid as i32), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Resolves when a process that is not our child exits (an instance adopted after a daemon
/// restart). Its exit status belongs to its new parent, so none is reported.
pub async fn wait_foreign(pid: u32) -> io::Result<()> {
    let raw = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    let fd: OwnedFd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::NONBLOCK)?;
    // SAFETY: the AsyncFd owns the pidfd and nothing else closes or replaces it.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)?;
    // A pidfd becomes readable once the process has exited.
    let _guard = afd.readable().await?;
    Ok(())
}

/// Opens a file for a spawn error message, so `herd logs` says why nothing ran.
pub fn note_in_log(log: &Path, line: &str) {
    if let Ok(mut f) = super::logs::open_append(log) {
        use std::io::Write;
        let _ = writeln!(f, "herd: {line}");
    }
}

/// What the supervisor's runtime asks of the operating system; `RealOs` below does it, a
/// fake does it in the runtime's tests (no processes, paused clock).
pub trait Os: Send + Sync + 'static {
    /// Fork/exec one instance (see `spawn`).
    fn spawn(&self, req: &SpawnRequest<'_>) -> io::Result<Spawned>;
    fn signal_group(&self, pgid: u32, sig: Signal) -> io::Result<()>;
    fn group_alive(&self, pgid: u32) -> bool;
    fn start_signature(&self, pid: u32) -> Option<u64>;
    /// `pid` is alive and still the process that had `signature`.
    fn is_same_process(&self, pid: u32, signature: u64) -> bool;
    /// Wall clock, ms since the epoch: for what is recorded and shown as a date.
    fn now_ms(&self) -> u64;
    /// Boot clock, ms since boot (see `clock::boot_ms`): for durations, which a wall clock
    /// stepped backwards or forwards must not change.
    fn boot_ms(&self) -> u64;
    /// The directories of group `pgid`'s cgroup (empty without cgroups), for `herd inspect`.
    fn cgroup_paths(&self, _pgid: u32) -> Vec<String> {
        Vec::new()
    }
    /// `pgid` leads an instance adopted after a daemon restart: its cgroup is its own again.
    fn adopted(&self, _pgid: u32) {}
    /// The cgroup of the instance group `pgid` leads, for metrics.
    fn cgroup(&self, _pgid: u32) -> Option<Cgroup> {
        None
    }
}

/// Everything `spawn` needs.
pub struct SpawnRequest<'a> {
    pub spec: &'a AppSpec,
    pub index: u32,
    pub log: &'a Path,
    pub listen_fds: &'a [RawFd],
    pub home: &'a Path,
    pub marker: &'a Marker,
    pub secrets: &'a [(String, Vec<u8>)],
    /// `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) of a notifying app; empty otherwise.
    pub notify: &'a [(&'static str, String)],
}

/// A spawned process: its pid and a future that resolves with its exit.
pub struct Spawned {
    pub pid: Option<u32>,
    pub exit: std::pin::Pin<Box<dyn Future<Output = super::instance::ExitRecord> + Send>>,
}

/// The real OS. Its spawn and signals must never run under the supervisor's table lock:
/// debug builds check it (see `Supervisor::lock`).
///
/// Where the host has cgroups (`cgroup::host()`), each spawn gets a fresh cgroup and a
/// group's signals and liveness cover its cgroup: `signal_group(pgid, …)` also reaches the
/// processes that left the group (`setsid`), and the group is alive while its cgroup is
/// populated. An instance adopted after a restart gets its cgroup back from
/// `/proc/PID/cgroup` (`Os::adopted`): a process cannot move itself out of the cgroup herd put
/// it in (`cgroup.procs` is root's), so a proven leader found in a leaf of this home's subtree
/// is in its own instance's cgroup. Any other group (a stray leader) is signalled as a process
/// group only: its cgroup may be a live instance's.
#[derive(Default)]
pub struct RealOs {
    cgroups: std::sync::Mutex<Cgroups>,
}

#[derive(Default)]
struct Cgroups {
    /// Leader pid (= pgid) → its instance's cgroup.
    by_group: std::collections::HashMap<u32, Cgroup>,
    /// Cgroups SIGKILLed: removed once empty (checked at the next spawn or poll).
    doomed: Vec<Cgroup>,
}

impl RealOs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cgroup of group `pgid`, known from its spawn or its adoption.
    fn cgroup_of(&self, pgid: u32) -> Option<Cgroup> {
        let cg = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        cg.by_group.get(&pgid).cloned()
    }

    fn forget_cgroup(&self, pgid: u32) {
        let mut cg = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cg.by_group.remove(&pgid)
            && !c.remove()
        {
            cg.doomed.push(c);
        }
    }

    /// Removes the killed cgroups that have emptied.
    fn reap(&self) {
        let mut cg = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        cg.doomed.retain(|c| !c.remove());
    }
}

impl Os for RealOs {
    fn spawn(&self, req: &SpawnRequest<'_>) -> io::Result<Spawned> {
        debug_assert!(!super::table_held(), "fork/exec under the table lock");
        self.reap();
        let limits = req.spec.cgroup_limits();
        let cgroup = match cgroup::host().filter(|h| h.mode() != cgroup::Mode::None) {
            Some(host) => match host.create(&req.spec.name, req.index, &limits) {
                Ok(c) => Some(c),
                // Limits the kernel cannot enforce are not silently dropped.
                Err(e) if limits != cgroup::Limits::default() => return Err(e),
                Err(e) => {
                    tracing::warn!(app = %req.spec.name, instance = req.index, error = %e, "starting outside a cgroup");
                    None
                }
            },
            None => None,
        };
        let spawned = spawn(req, cgroup.as_ref()).and_then(|pid| Ok((pid, pidfd(pid)?)));
        let (pid, pidfd) = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(c) = &cgroup {
                    c.remove();
                }
                return Err(e);
            }
        };
        if let Some(c) = &cgroup {
            let mut cg = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
            cg.by_group.insert(pid, c.clone());
        }
        let exit = Box::pin(async move {
            match vfork::wait(pid, pidfd).await {
                Ok(status) => {
                    let (code, signal) = describe_exit(status);
                    // The cgroup is fresh: any OOM kill in it hit this instance.
                    let oom = cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
                    super::instance::ExitRecord {
                        at_ms: super::now_ms(),
                        code,
                        signal,
                        reason: if oom { "oom" } else { "exited" }.into(),
                    }
                }
                Err(e) => super::instance::ExitRecord {
                    at_ms: super::now_ms(),
                    code: None,
                    signal: None,
                    reason: format!("lost track of the process: {e}"),
                },
            }
        });
        let pid = Some(pid);
        Ok(Spawned { pid, exit })
    }

    fn signal_group(&self, pgid: u32, sig: Signal) -> io::Result<()> {
        debug_assert!(!super::table_held(), "killpg under the table lock");
        let result = signal_group(pgid, sig);
        // Refused groups (pid 1, not a leader) are refused for their cgroup too.
        if result.is_ok()
            && let Some(c) = self.cgroup_of(pgid)
        {
            c.signal(sig, pgid);
            if sig == Signal::SIGKILL {
                let mut cg = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(c) = cg.by_group.remove(&pgid) {
                    cg.doomed.push(c);
                }
            }
        }
        result
    }

    fn group_alive(&self, pgid: u32) -> bool {
        if group_alive(pgid) {
            return true;
        }
        self.reap();
        match self.cgroup_of(pgid) {
            Some(c) if c.populated() => true,
            Some(_) => {
                self.forget_cgroup(pgid);
                false
            }
            None => false,
        }
    }

    fn start_signature(&self, pid: u32) -> Option<u64> {
        start_signature(pid)
    }

    fn is_same_process(&self, pid: u32, signature: u64) -> bool {
        is_same_process(pid, signature)
    }

    fn now_ms(&self) -> u64 {
        super::now_ms()
    }

    fn boot_ms(&self) -> u64 {
        super::clock::boot_ms()
    }

    fn cgroup_paths(&self, pgid: u32) -> Vec<String> {
        self.cgroup_of(pgid).map(|c| c.paths()).unwrap_or_default()
    }

    fn cgroup(&self, pgid: u32) -> Option<Cgroup> {
        self.cgroup_of(pgid)
    }

    fn adopted(&self, pgid: u32) {
        let Some(found) = cgroup::host().and_then(|h| h.cgroup_of(pgid)) else {
            return;
        };
        let mut cg = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        cg.by_group.insert(pgid, found);
    }
}

/// Decoded exit of a child.
pub fn describe_exit(status: std::process::ExitStatus) -> (Option<i32>, Option<String>) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        (Some(code), None)
    } else if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("SIG{sig}"));
        (None, Some(name))
    } else {
        (None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_signature_is_stable_and_recognised() {
        let me = std::process::id();
        let sig = start_signature(me).expect("own stat");
        assert!(is_same_process(me, sig));
        assert!(!is_same_process(me, sig + 1));
    }

    #[test]
    fn signal_group_refuses_pid_one_zero_and_non_leaders() {
        for pgid in [0, 1, u32::MAX] {
            assert!(signal_group(pgid, Signal::SIGCONT).is_err(), "{pgid}");
            assert!(!group_alive(pgid), "{pgid}");
        }
        // The test runner's threads share its group, which this test process may not lead.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let err = signal_group(child.id(), Signal::SIGKILL).unwrap_err();
        assert!(
            err.to_string().contains("not an instance's leader"),
            "{err}"
        );
        assert!(alive(child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }

    fn alive(pid: u32) -> bool {
        read_stat(pid).is_some_and(|s| !s.is_gone())
    }

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line = "42 (we ird) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 1000 250 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (
                s.state,
                s.pgrp,
                s.cpu_ticks,
                s.start,
                s.rss_pages,
                s.threads
            ),
            ('S', 42, 10, 12345, 250, 1)
        );
    }

    #[test]
    fn missing_process_is_not_the_same() {
        // pid_max is at most 2^22 on Linux.
        assert!(!is_same_process(4_194_304 + 7, 1));
    }
}
