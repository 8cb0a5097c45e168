//! The idle measurement, the same for every supervisor (herd alone, or with `--compare` also
//! PM2, supervisord, s6 and runit), in four steps. "The supervisor" is every process of
//! [`Supervisor::processes`]: the daemon for herd, PM2 and supervisord; the scanner plus its
//! one supervisor process per service for s6 and runit. Their CPU and memory are added up.
//! 1. **Start**: run the tool's start command for [`APPS`] `sleep 100000` programs and poll its
//!    status command until it reports all of them running; the time is launch to that poll.
//! 2. **Idle**: after a [`SETTLE`] pause, the supervisor's CPU over the idle period, from
//!    utime + stime in `/proc/PID/stat` (fields 14 and 15, which include a process's exited
//!    threads, not its children), and its RSS and PSS (`/proc/PID/smaps_rollup`) and anonymous
//!    RSS (`RssAnon`, `/proc/PID/status`) at the start and at the end of that period.
//! 3. **Status round trip**: [`STATUS_RUNS`] whole runs of the tool's status query (spawn to
//!    exit of its CLI), each of which must report all [`APPS`] running.
//! 4. **Restart latency**: SIGKILL one app process (a different app each time) and time until
//!    a new child of the killed process's parent (the daemon, or the service's own supervisor)
//!    runs `sleep`, watched in `/proc`; then wait for the tool to report every app running
//!    again before the next kill.

use crate::cleanup::processes_with_env;
use crate::error::{Context, Result};
use crate::herd::DEADLINE;
use crate::procfs::{Memory, NewChildWatch, children_named, cmdline, memory_of, stat, ticks_per_s};
use crate::stats::{Summary, ms};
use crate::tools::Supervisor;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub const APPS: usize = 100;
/// Between all running and the start of the idle period.
pub const SETTLE: Duration = Duration::from_secs(10);
/// Status queries timed for the round-trip figure.
pub const STATUS_RUNS: usize = 20;
/// Between two polls of `/proc` for the restarted process.
const WATCH_POLL: Duration = Duration::from_micros(500);

/// CPU time a process used over a period, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub ticks: u64,
    pub ticks_per_s: u64,
    pub secs: f64,
}

impl Cpu {
    /// Percent of one core.
    pub fn percent(&self) -> f64 {
        self.ticks as f64 / self.ticks_per_s as f64 / self.secs * 100.0
    }

    /// What one tick is worth over the period, in percent of one core.
    pub fn resolution_percent(&self) -> f64 {
        100.0 / self.ticks_per_s as f64 / self.secs
    }
}

/// The CPU ticks and memory of a set of processes now, to be compared with a later [`Mark`].
pub struct Mark {
    at: Instant,
    ticks: u64,
    pub memory: Memory,
}

impl Mark {
    pub fn now(pids: &[u32]) -> Result<Self> {
        let at = Instant::now();
        let mut ticks = 0;
        for &pid in pids {
            ticks += stat(pid)?.cpu_ticks;
        }
        Ok(Self {
            at,
            ticks,
            memory: memory_of(pids)?,
        })
    }

    pub fn cpu_since(&self, earlier: &Mark) -> Cpu {
        Cpu {
            ticks: self.ticks.saturating_sub(earlier.ticks),
            ticks_per_s: ticks_per_s(),
            secs: self.at.duration_since(earlier.at).as_secs_f64(),
        }
    }
}

pub struct IdleResult {
    pub label: String,
    pub pid: u32,
    /// The daemon's command line.
    pub process: String,
    /// How many processes the figures add up (1, or 1 + [`APPS`] for s6 and runit).
    pub processes: usize,
    pub notes: Vec<String>,
    /// The start command alone.
    pub start_cmd: Duration,
    /// From launching the start command until the status showed all [`APPS`] running.
    pub all_running: Duration,
    pub status_polls: u32,
    pub cpu: Cpu,
    pub start: Memory,
    pub end: Memory,
    pub restart: Summary,
    pub restart_samples_ms: Vec<f64>,
    /// What one status query runs (see [`Supervisor::status_command`]).
    pub status_command: String,
    /// [`STATUS_RUNS`] status queries, each timed from spawn to exit.
    pub status: Summary,
    pub status_samples_ms: Vec<f64>,
    /// Processes of the tool's home other than the daemon and its `sleep` children, seen at
    /// the end of the idle period (`pid: command line`): CPU or memory they use is not in the
    /// figures, so this should be empty.
    pub helpers: Vec<String>,
    /// `/proc/loadavg` before the start and after the kills: other load on the machine.
    pub loadavg: [String; 2],
}

pub fn measure(sup: &dyn Supervisor, idle: Duration, kills: usize) -> Result<IdleResult> {
    let label = sup.label().to_string();
    let loadavg_before = loadavg();
    let pid = sup.pid()?;
    let process = cmdline(pid)?;

    eprintln!("herd-bench: {label}: starting {APPS} apps ...");
    let t0 = Instant::now();
    let start_cmd = sup.start_all()?;
    let status_polls = wait_all_running(sup)?;
    let all_running = t0.elapsed();
    let procs = sup.processes()?;

    eprintln!(
        "herd-bench: {label}: all running after {:.2} s; settling {} s, then idle for {} s ...",
        all_running.as_secs_f64(),
        SETTLE.as_secs(),
        idle.as_secs()
    );
    std::thread::sleep(SETTLE);
    let first = Mark::now(&procs)?;
    std::thread::sleep(idle);
    let last = Mark::now(&procs)?;
    let cpu = last.cpu_since(&first);
    let helpers = helpers(sup, &procs);

    eprintln!("herd-bench: {label}: {STATUS_RUNS} status queries ...");
    let status_samples_ms = status_round_trips(sup)?;
    let status = Summary::of_ms(&status_samples_ms).ok_or("no status query timed")?;

    eprintln!("herd-bench: {label}: {kills} SIGKILL restarts ...");
    let restart_samples_ms = restarts(sup, &procs, kills)?;
    let restart = Summary::of_ms(&restart_samples_ms).ok_or("no restarts measured")?;
    Ok(IdleResult {
        label,
        pid,
        process,
        processes: procs.len(),
        notes: sup.notes(),
        start_cmd,
        all_running,
        status_polls,
        cpu,
        start: first.memory,
        end: last.memory,
        restart,
        restart_samples_ms,
        status_command: sup.status_command(),
        status,
        status_samples_ms,
        helpers,
        loadavg: [loadavg_before, loadavg()],
    })
}

/// Polls the tool's status until all [`APPS`] run; returns how many polls that took.
fn wait_all_running(sup: &dyn Supervisor) -> Result<u32> {
    let deadline = Instant::now() + DEADLINE;
    let mut polls = 0;
    loop {
        let running = sup.running()?;
        polls += 1;
        if running == APPS {
            return Ok(polls);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}: timed out after {} s waiting for all {APPS} apps to run; {running} do",
                sup.label(),
                DEADLINE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Times [`STATUS_RUNS`] status queries, whole CLI runs; each must report all [`APPS`] running.
fn status_round_trips(sup: &dyn Supervisor) -> Result<Vec<f64>> {
    (0..STATUS_RUNS)
        .map(|_| {
            let t = Instant::now();
            let running = sup.running()?;
            let took = ms(t.elapsed());
            if running != APPS {
                return Err(format!(
                    "{}: the status shows {running} of {APPS} apps running while idle",
                    sup.label()
                ));
            }
            Ok(took)
        })
        .collect()
}

/// The app processes: children running `sleep` of any of the supervisor's processes.
fn app_processes(procs: &[u32]) -> Vec<u32> {
    procs
        .iter()
        .flat_map(|&p| children_named(p, "sleep"))
        .collect()
}

/// Kills `kills` app processes, each one of an app not killed before, and times each
/// replacement; see the module's description.
fn restarts(sup: &dyn Supervisor, procs: &[u32], kills: usize) -> Result<Vec<f64>> {
    // Killed processes and replacements: never chosen again, so each kill hits another app
    // (PM2 counts a restart within min_uptime of the previous one as unstable).
    let mut touched = HashSet::new();
    let mut samples = Vec::with_capacity(kills);
    for done in 0..kills.min(APPS) {
        let mut apps = app_processes(procs);
        apps.sort_unstable();
        let victim = *apps.iter().find(|p| !touched.contains(*p)).ok_or(format!(
            "{}: after {done} kills no app process is left to kill ({} children run sleep)",
            sup.label(),
            apps.len()
        ))?;
        // The replacement's parent: the daemon, or for s6 and runit the service's supervisor.
        let parent = stat(victim)?.ppid;
        let mut watch = NewChildWatch::new(parent, "sleep");
        let killed_at = Instant::now();
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL)
            .context(|| format!("cannot SIGKILL app process {victim}"))?;
        let deadline = killed_at + DEADLINE;
        let new = loop {
            if let Some(pid) = watch.poll() {
                break pid;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: no new app process {} s after SIGKILL {done} (pid {victim})",
                    sup.label(),
                    DEADLINE.as_secs()
                ));
            }
            std::thread::sleep(WATCH_POLL);
        };
        samples.push(ms(killed_at.elapsed()));
        touched.extend([victim, new]);
        wait_all_running(sup).context(|| format!("after SIGKILL {}", done + 1))?;
    }
    Ok(samples)
}

/// See [`IdleResult::helpers`].
fn helpers(sup: &dyn Supervisor, procs: &[u32]) -> Vec<String> {
    let (var, value) = sup.marker();
    let apps = app_processes(procs);
    let mut others: Vec<u32> = processes_with_env(var, value)
        .into_iter()
        .filter(|p| !procs.contains(p) && !apps.contains(p))
        .collect();
    others.sort_unstable();
    others
        .into_iter()
        .map(|p| format!("{p}: {}", cmdline(p).unwrap_or_else(|e| e)))
        .collect()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_and_resolution() {
        let c = Cpu {
            ticks: 12,
            ticks_per_s: 100,
            secs: 120.0,
        };
        assert!((c.percent() - 0.1).abs() < 1e-12);
        assert!((c.resolution_percent() - 1.0 / 120.0).abs() < 1e-12);
    }
}
