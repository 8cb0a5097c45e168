//! Each instance in a cgroup of its own, so the kernel enforces its limits (`memory_max_mb`,
//! `cpu_max_percent`, `pids_max`), tells an OOM kill apart, and a stop ends every process the
//! instance made, a double-forked `setsid` daemon included.
//!
//! Hosts differ, and both kinds are real deployments:
//! - **unified**: one cgroup2 hierarchy holds every controller. herd's subtree sits under
//!   the daemon's own cgroup (its delegated unit under systemd, `Delegate=yes`), so it first
//!   moves itself into a leaf `herd-daemon` when it must enable controllers below itself.
//! - **hybrid**: the memory, pids and cpu controllers are cgroup v1 hierarchies and a cgroup2
//!   mount (`/sys/fs/cgroup/unified`) has no controllers but gives membership and
//!   `cgroup.kill`. An instance is in the cgroup2 tree always and in a v1 hierarchy only for
//!   the limits it sets.
//! - **none**: no writable cgroup2 mount. herd says so once at start, keeps to process
//!   groups, and refuses an app file that sets a limit it cannot enforce.
//!
//! The subtree is `herd-<8 hex of the home's path>` in each hierarchy, so daemons with
//! different homes on one host never touch each other's cgroups. An instance's cgroup is
//! `<app>@<index>-<random>`, fresh for every spawn: a reload's new process must not share a
//! cgroup with the old one it is about to kill. The child joins it itself between fork and
//! exec (writing `0` to `cgroup.procs`), so nothing it forks can start outside it.

mod detect;

use super::process::read_proc_file;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tracing::{info, warn};

/// What an app asks of the kernel (its `memory_max_mb`, `cpu_max_percent`, `pids_max`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max_mb: Option<u64>,
    pub cpu_max_percent: Option<u64>,
    pub pids_max: Option<u64>,
}

impl Limits {
    fn wants(&self, controller: &str) -> bool {
        match controller {
            "memory" => self.memory_max_mb.is_some(),
            "pids" => self.pids_max.is_some(),
            "cpu" => self.cpu_max_percent.is_some(),
            _ => false,
        }
    }
}

/// The CFS period herd sets with a CPU quota (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// How this host runs instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Unified,
    Hybrid,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unified => "cgroup2",
            Mode::Hybrid => "hybrid (cgroup2 membership, v1 controllers)",
            Mode::None => "process group",
        }
    }
}

/// herd's subtree in one hierarchy.
#[derive(Debug)]
struct Tree {
    unified: bool,
    /// Controllers usable here (enabled for herd's leaves on cgroup2, mounted on v1).
    controllers: Vec<String>,
    /// `<the daemon's cgroup>/herd-<hash>`.
    base: PathBuf,
}

/// The cgroup hierarchies this daemon uses, found once at start.
#[derive(Debug)]
pub struct Host {
    mode: Mode,
    trees: Vec<Tree>,
    /// Why a controller (or all of cgroups) is out of reach, for refusals.
    missing: Vec<(String, String)>,
}

static HOST: OnceLock<Host> = OnceLock::new();

/// The host's cgroups once `install` ran (the daemon), else `None` (the CLI, unit tests).
pub fn host() -> Option<&'static Host> {
    HOST.get()
}

/// Finds and prepares herd's subtree for the daemon of `home`, and says once how instances
/// will run. Leftover empty cgroups of an earlier daemon of this home are removed.
pub fn install(home: &Path, enabled: bool) -> &'static Host {
    HOST.get_or_init(|| {
        let host = if enabled {
            Host::detect(home)
        } else {
            Host {
                mode: Mode::None,
                trees: Vec::new(),
                missing: vec![("cgroup2".into(), "`cgroups = false` in config.toml".into())],
            }
        };
        match host.mode {
            Mode::None => warn!(
                why = %host.missing.first().map(|m| m.1.as_str()).unwrap_or("-"),
                "cgroups unavailable: instances run in process groups only, and app limits (memory_max_mb, cpu_max_percent, pids_max) are refused"
            ),
            mode => info!(
                mode = mode.as_str(),
                controllers = ?host.controllers(),
                base = %host.trees.first().map(|t| t.base.display().to_string()).unwrap_or_default(),
                "instances run in cgroups"
            ),
        }
        host
    })
}

/// At a clean `down`: removes this daemon's subtree where it is empty.
pub fn release() {
    if let Some(host) = host() {
        for t in &host.trees {
            sweep_empty(&t.base);
            let _ = std::fs::remove_dir(&t.base);
        }
    }
}

impl Host {
    /// The cgroup2 tree has `controller` enabled for herd's leaves.
    fn unified_controls(&self, controller: &str) -> bool {
        self.trees
            .iter()
            .any(|t| t.unified && t.controllers.iter().any(|c| c == controller))
    }

    fn detect(home: &Path) -> Host {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let found = detect::hierarchies(&read("/proc/self/mountinfo"), &read("/proc/self/cgroup"));
        let name = subtree_name(home);
        let mut trees = Vec::new();
        let mut missing = Vec::new();
        let unified = found.iter().find(|m| m.unified);
        match unified {
            None => missing.push(("cgroup2".into(), "no cgroup2 mount".into())),
            Some(m) => match prepare_unified(m, &name) {
                Ok(tree) => trees.push(tree),
                Err(e) => missing.push(("cgroup2".into(), e)),
            },
        }
        if trees.is_empty() {
            return Host {
                mode: Mode::None,
                trees,
                missing,
            };
        }
        // A controller cgroup2 lacks comes from its v1 hierarchy, if it has one.
        for ctl in detect::CONTROLLERS {
            if trees[0].controllers.iter().any(|c| c == ctl) {
                continue;
            }
            let Some(m) = found
                .iter()
                .find(|m| !m.unified && m.controllers.iter().any(|c| c == ctl))
            else {
                missing.push((ctl.into(), format!("no {ctl} controller in cgroup2 or v1")));
                continue;
            };
            let base = m.own_dir.join(&name);
            match make_dir(&base) {
                Ok(()) => {
                    sweep_empty(&base);
                    trees.push(Tree {
                        unified: false,
                        controllers: vec![ctl.to_string()],
                        base,
                    });
                }
                Err(e) => missing.push((ctl.into(), format!("{}: {e}", base.display()))),
            }
        }
        let mode = if trees.len() > 1 {
            Mode::Hybrid
        } else {
            Mode::Unified
        };
        Host {
            mode,
            trees,
            missing,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Controllers an instance may be limited by.
    pub fn controllers(&self) -> Vec<&str> {
        self.trees
            .iter()
            .flat_map(|t| t.controllers.iter().map(String::as_str))
            .collect()
    }

    /// Why `controller` cannot be used, or `None` when it can.
    pub fn unavailable(&self, controller: &str) -> Option<String> {
        if self.controllers().contains(&controller) {
            return None;
        }
        Some(
            self.missing
                .iter()
                .find(|(c, _)| c == controller || c == "cgroup2")
                .map(|(_, why)| why.clone())
                .unwrap_or_else(|| format!("no usable {controller} controller")),
        )
    }

    /// Makes a fresh cgroup for one spawn of instance `index` of `app`, with `limits` set.
    pub fn create(&self, app: &str, index: u32, limits: &Limits) -> io::Result<Cgroup> {
        if self.mode == Mode::None {
            return Err(io::Error::other("cgroups are unavailable on this host"));
        }
        for _ in 0..8 {
            let leaf = format!("{app}@{index}-{:08x}", rand::random::<u32>());
            let mut dirs = Vec::new();
            let mut clash = false;
            for (i, tree) in self.trees.iter().enumerate() {
                let used = i == 0 || tree.controllers.iter().any(|c| limits.wants(c));
                if !used {
                    continue;
                }
                let dir = tree.base.join(&leaf);
                match std::fs::create_dir(&dir) {
                    Ok(()) => dirs.push(Dir {
                        unified: tree.unified,
                        path: dir,
                    }),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        clash = true;
                        break;
                    }
                    Err(e) => {
                        remove_dirs(&dirs);
                        return Err(io::Error::new(
                            e.kind(),
                            format!("creating cgroup {}: {e}", dir.display()),
                        ));
                    }
                }
            }
            if clash {
                remove_dirs(&dirs);
                continue;
            }
            let cg = Cgroup { dirs };
            if let Err(e) = cg.set_limits(self, limits) {
                cg.remove();
                return Err(e);
            }
            return Ok(cg);
        }
        Err(io::Error::other("no fresh cgroup name after 8 tries"))
    }

    /// Whether processes `a` and `b` share one instance cgroup of this daemon.
    pub fn same_cgroup(&self, a: u32, b: u32) -> bool {
        self.mode != Mode::None
            && self
                .cgroup_of(a)
                .is_some_and(|c| Some(&c) == self.cgroup_of(b).as_ref())
    }

    /// The cgroup herd put process `pid` in, read from `/proc/PID/cgroup`: `None` when the
    /// process is not in a leaf of this daemon's subtree.
    pub fn cgroup_of(&self, pid: u32) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mut dirs = Vec::new();
        for tree in &self.trees {
            let want = |line: &str| {
                let mut p = line.splitn(3, ':');
                let (id, ctls, path) = (p.next()?, p.next()?, p.next()?);
                let hit = if tree.unified {
                    id == "0" && ctls.is_empty()
                } else {
                    ctls.split(',')
                        .any(|c| tree.controllers.iter().any(|t| t == c))
                };
                hit.then(|| path.to_string())
            };
            let Some(path) = text.lines().find_map(want) else {
                continue;
            };
            let leaf = path.rsplit('/').next().unwrap_or_default();
            let dir = tree.base.join(leaf);
            // Only a leaf of our subtree (same parent, the name shape of ours) counts.
            if leaf.contains('@') && path.ends_with(&format!("/{}/{leaf}", base_name(&tree.base))) {
                dirs.push(Dir {
                    unified: tree.unified,
                    path: dir,
                });
            } else if tree.unified {
                return None;
            }
        }
        (!dirs.is_empty()).then_some(Cgroup { dirs })
    }
}

fn base_name(base: &Path) -> String {
    base.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `herd-` and eight hex digits of the home's path.
fn subtree_name(home: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(home.as_os_str().as_bytes());
    format!(
        "herd-{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3]
    )
}

/// cgroup2: the subtree under the daemon's cgroup, with every controller the daemon's cgroup
/// can hand down enabled for it. A daemon in a non-root cgroup with processes cannot enable
/// controllers below it (the "no internal processes" rule), so it first moves into a leaf.
fn prepare_unified(m: &detect::Mounted, name: &str) -> Result<Tree, String> {
    let own = if m.own_path.ends_with("/herd-daemon") {
        m.own_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    } else {
        m.own_dir.clone()
    };
    let base = own.join(name);
    make_dir(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    sweep_empty(&base);
    let offered = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<&str> = detect::CONTROLLERS
        .into_iter()
        .filter(|c| offered.split_whitespace().any(|o| o == *c))
        .collect();
    let mut controllers = Vec::new();
    if !wanted.is_empty() {
        let line: String = wanted.iter().map(|c| format!("+{c} ")).collect();
        let enable = |dir: &Path| write_file(&dir.join("cgroup.subtree_control"), line.trim());
        let mut ok = enable(&own);
        if ok.is_err() && m.own_path != "/" {
            // Busy: the daemon is a process of `own`. Into a leaf of its own, then again.
            let leaf = own.join("herd-daemon");
            let _ = make_dir(&leaf);
            if write_file(&leaf.join("cgroup.procs"), "0").is_ok() {
                ok = enable(&own);
            }
        }
        if ok.is_ok() && enable(&base).is_ok() {
            controllers = wanted.iter().map(|c| c.to_string()).collect();
        }
    }
    Ok(Tree {
        unified: true,
        controllers,
        base,
    })
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every empty leaf under `base` (left by a daemon that died); a populated one
/// refuses (EBUSY) and stays for its adopted instance.
fn sweep_empty(base: &Path) {
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    unified: bool,
    path: PathBuf,
}

fn remove_dirs(dirs: &[Dir]) {
    for d in dirs {
        let _ = std::fs::remove_dir(&d.path);
    }
}

/// One instance's cgroup: a directory in the cgroup2 tree (membership, kill) and, on a
/// hybrid host, one in each v1 hierarchy whose controller limits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<Dir>,
}

impl Cgroup {
    fn set_limits(&self, host: &Host, limits: &Limits) -> io::Result<()> {
        let dir_for = |ctl: &str| {
            host.trees
                .iter()
                .position(|t| t.controllers.iter().any(|c| c == ctl))
                .and_then(|i| {
                    let base = &host.trees[i].base;
                    self.dirs.iter().find(|d| d.path.parent() == Some(base))
                })
        };
        let need = |ctl: &str| {
            dir_for(ctl).ok_or_else(|| {
                io::Error::other(format!(
                    "no {ctl} controller: {}",
                    host.unavailable(ctl).unwrap_or_default()
                ))
            })
        };
        if let Some(mb) = limits.memory_max_mb {
            let d = need("memory")?;
            let bytes = mb.saturating_mul(1024 * 1024).to_string();
            let file = if d.unified {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            write_file(&d.path.join(file), &bytes)?;
        }
        if let Some(pct) = limits.cpu_max_percent {
            let d = need("cpu")?;
            let quota = pct.saturating_mul(CPU_PERIOD_US / 100).max(1000);
            if d.unified {
                write_file(&d.path.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write_file(
                    &d.path.join("cpu.cfs_period_us"),
                    &CPU_PERIOD_US.to_string(),
                )?;
                write_file(&d.path.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let Some(n) = limits.pids_max {
            let d = need("pids")?;
            write_file(&d.path.join("pids.max"), &n.to_string())?;
        }
        Ok(())
    }

    /// The cgroup2 directory (membership), for display.
    pub fn path(&self) -> &Path {
        &self.dirs[0].path
    }

    /// Every directory, for display.
    pub fn paths(&self) -> Vec<String> {
        self.dirs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect()
    }

    /// Where a spawn goes: the cgroup2 directory to clone the child into (with its
    /// `cgroup.procs`, for a child that must write itself in instead), and the cgroup v1
    /// `cgroup.procs` files the child writes itself into (prepared before the clone).
    pub fn spawn_targets(&self) -> (Option<(PathBuf, CString)>, Vec<CString>) {
        let procs = |d: &Dir| CString::new(d.path.join("cgroup.procs").as_os_str().as_bytes()).ok();
        let unified = self
            .dirs
            .iter()
            .find(|d| d.unified)
            .and_then(|d| Some((d.path.clone(), procs(d)?)));
        let v1 = self
            .dirs
            .iter()
            .filter(|d| !d.unified)
            .filter_map(procs)
            .collect();
        (unified, v1)
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        self.pids_by(&mut |p| read_proc_file(p))
    }

    /// `pids` through `read` (the metrics sampler reads through files it keeps open).
    pub fn pids_by(&self, read: &mut impl FnMut(&Path) -> Option<String>) -> Vec<u32> {
        read(&self.path().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Any process left in it (zombies included).
    pub fn populated(&self) -> bool {
        if self.dirs[0].unified
            && let Ok(events) = std::fs::read_to_string(self.path().join("cgroup.events"))
        {
            return events.lines().any(|l| l.trim() == "populated 1");
        }
        !self.pids().is_empty()
    }

    /// `sig` to every process in it outside process group `signalled` (which its caller has
    /// just signalled with `killpg`): a stop signal reaches a `setsid` grandchild too, and
    /// no process gets it twice (a second SIGTERM or SIGINT means "now" to many apps).
    /// SIGKILL goes to all at once through `cgroup.kill` where the kernel has it.
    pub fn signal(&self, sig: nix::sys::signal::Signal, signalled: u32) {
        if sig == nix::sys::signal::Signal::SIGKILL && self.kill().is_ok() {
            return;
        }
        for pid in self.pids() {
            let in_group = super::process::read_stat(pid).is_some_and(|s| s.pgrp == signalled);
            if pid > 1 && !in_group {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
            }
        }
    }

    /// SIGKILL to every process at once (`cgroup.kill`, kernel 5.14+; it also reaches a
    /// process forking meanwhile, which a loop over `cgroup.procs` could miss).
    fn kill(&self) -> io::Result<()> {
        let d = &self.dirs[0];
        if !d.unified {
            return Err(io::Error::other("not cgroup2"));
        }
        write_file(&d.path.join("cgroup.kill"), "1")
    }

    /// OOM kills in this cgroup so far (`memory.events` on cgroup2, `memory.oom_control` on v1).
    pub fn oom_kills(&self) -> u64 {
        for d in &self.dirs {
            let (file, key) = if d.unified {
                ("memory.events", "oom_kill")
            } else {
                ("memory.oom_control", "oom_kill")
            };
            if let Ok(text) = std::fs::read_to_string(d.path.join(file)) {
                let n = text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok())?
                });
                if let Some(n) = n {
                    return n;
                }
            }
        }
        0
    }

    /// CPU time of every process that ever ran in it, µs (cgroup2's `cpu.stat`, there
    /// without any controller).
    pub fn cpu_usage_usec(&self, read: &mut impl FnMut(&Path) -> Option<String>) -> Option<u64> {
        let d = self.dirs.iter().find(|d| d.unified)?;
        let text = read(&d.path.join("cpu.stat"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Resident memory of its processes — anonymous plus mapped files, what RSS counts —
    /// where a memory controller accounts it (`None` elsewhere: a hybrid host's instance
    /// without `memory_max_mb` is not in the v1 memory hierarchy).
    pub fn resident_bytes(&self, read: &mut impl FnMut(&Path) -> Option<String>) -> Option<u64> {
        // On a hybrid host the cgroup2 leaf has no memory controller, so no `memory.stat`:
        // not looked for every sample.
        let unified_memory = host().is_none_or(|h| h.unified_controls("memory"));
        for d in self.dirs.iter().filter(|d| !d.unified || unified_memory) {
            let Some(text) = read(&d.path.join("memory.stat")) else {
                continue;
            };
            let keys: [&str; 2] = if d.unified {
                ["anon", "file_mapped"]
            } else {
                ["total_rss", "total_mapped_file"]
            };
            let sum = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(k, _)| keys.contains(k))
                .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                .sum();
            return Some(sum);
        }
        None
    }

    /// Removes the (empty) directories; a populated cgroup refuses and stays.
    pub fn remove(&self) -> bool {
        let mut all = true;
        for d in self.dirs.iter().rev() {
            match std::fs::remove_dir(&d.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => all = false,
            }
        }
        all
    }
}

/// In the child, between fork and exec: moves this process into each of `files`
/// (`.../cgroup.procs`). Async-signal-safe: open, write, close.
pub fn join_in_child<S: AsRef<std::ffi::CStr>>(files: &[S]) -> io::Result<()> {
    for f in files {
        let f = f.as_ref();
        // SAFETY: a NUL-terminated path prepared before the fork; the fd is closed below.
        let fd = unsafe { libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: writes one byte from a static buffer to the fd opened above.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let err = io::Error::last_os_error();
        // SAFETY: closes the fd opened above.
        unsafe { libc::close(fd) };
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_names_differ_by_home_and_are_stable() {
        let a = subtree_name(Path::new("/var/lib/herd"));
        assert_eq!(a, subtree_name(Path::new("/var/lib/herd")));
        assert_ne!(a, subtree_name(Path::new("/tmp/h")));
        assert!(a.starts_with("herd-") && a.len() == 13, "{a}");
    }

    #[test]
    fn limits_want_only_their_controllers() {
        let l = Limits {
            memory_max_mb: Some(1),
            ..Default::default()
        };
        assert!(l.wants("memory") && !l.wants("pids") && !l.wants("cpu"));
    }
}
