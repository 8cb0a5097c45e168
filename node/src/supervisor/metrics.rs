//! Per-instance CPU and memory (the whole process tree under the instance's process) and the
//! host's CPU, memory and load (sysinfo), sampled every `metrics_interval_s` (default 5 s).
//! The same sample enforces `max_memory_mb`. CPU percentages are the difference between two
//! samples. Per-process figures come straight from `/proc/PID/stat`: sysinfo opens about
//! seven files per process, which alone would cost an idle daemon with 100 apps ~0.1 % CPU.

use super::cgroup::Cgroup;
use super::instance::ProcMetrics;
use super::machine::Input;
use super::{Supervisor, now_ms, process};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use sysinfo::System;
use tokio::sync::watch;
use tracing::warn;

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HostMetrics {
    pub cpu_percent: f32,
    pub cpus: u32,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub load: [f64; 3],
    /// The daemon's own process.
    pub daemon_cpu_percent: f32,
    pub daemon_rss_bytes: u64,
    pub at_ms: u64,
}

/// Files the sampler keeps open from one sample to the next and reads again from offset 0:
/// opening a cgroup or /proc file (the path walk) costs most of reading it, and a sample
/// reads three per instance. A held `/proc/PID/stat` belongs to that one process: once it is
/// gone, reads fail and the file is dropped, so a recycled pid is never read through it; a
/// removed cgroup's files fail the same way. At most `max` are held (a quarter of the
/// descriptor limit, at most 3,000: each instance also holds a pidfd); past that, files are
/// opened for each read.
struct Held {
    /// Keyed by the path's bytes: hashing a `Path` goes component by component, which cost
    /// more than the rest of a sample's user time.
    files: HashMap<Vec<u8>, (std::fs::File, bool)>,
    max: usize,
}

impl Held {
    fn new() -> Self {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        Self {
            files: HashMap::new(),
            max: usize::try_from(limit / 4).unwrap_or(usize::MAX).min(3_000),
        }
    }

    fn read(&mut self, path: &std::path::Path) -> Option<String> {
        use std::os::unix::ffi::OsStrExt;
        let key = path.as_os_str().as_bytes();
        if let Some((f, used)) = self.files.get_mut(key) {
            *used = true;
            if let Some(text) = process::read_whole(f, true) {
                return Some(text);
            }
            self.files.remove(key);
        }
        let f = std::fs::File::open(path).ok()?;
        let text = process::read_whole(&f, false)?;
        if self.files.len() < self.max {
            self.files.insert(key.to_vec(), (f, true));
        }
        Some(text)
    }

    /// Closes the files the sample that just ended did not read.
    fn sweep(&mut self) {
        self.files.retain(|_, (_, used)| std::mem::take(used));
    }
}

pub struct Sampler {
    sys: System,
    held: Held,
    /// CPU ticks of each sampled process at the previous sample (keyed by pid and start).
    last: HashMap<(u32, u64), u64>,
    /// CPU µs of each sampled cgroup at the previous sample (keyed by the path's bytes).
    last_cgroup: HashMap<Vec<u8>, u64>,
    last_at: Option<std::time::Instant>,
    ticks_per_s: f64,
    page_bytes: u64,
}

impl Sampler {
    pub fn new() -> Option<Self> {
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let sys = System::new().ok()?;
        Some(Self {
            sys,
            held: Held::new(),
            last: HashMap::new(),
            last_cgroup: HashMap::new(),
            last_at: None,
            ticks_per_s: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_bytes: if page > 0 { page as u64 } else { 4096 },
        })
    }

    /// Samples the host (sysinfo) and each instance in `roots`: from its cgroup's own
    /// counters when it has one (CPU from `cpu.stat`, memory from `memory.stat` where a memory
    /// controller accounts it, else the RSS of each process in `cgroup.procs` — a `setsid`
    /// child included), else the process tree under its pid. Per process it reads one file,
    /// `/proc/PID/stat`, and finds children through `/proc/PID/task/*/children`, so the cost
    /// follows herd's own process count, not the host's: an idle daemon stays cheap. The
    /// files it reads stay open for the next sample (`Held`).
    pub fn sample(&mut self, roots: &[(u32, Option<Cgroup>)]) -> (HostMetrics, Vec<ProcMetrics>) {
        let now = crate::supervisor::clock::std_instant();
        let elapsed = self
            .last_at
            .map(|t| now.duration_since(t).as_secs_f64())
            .filter(|e| *e > 0.0);
        self.last_at = Some(now);
        let at_ms = now_ms();
        let mut seen = HashMap::new();
        let page_bytes = self.page_bytes;
        let held = &mut self.held;
        let mut read = |p: &std::path::Path| held.read(p);
        let mut measure = |pid: u32,
                           read: &mut dyn FnMut(&std::path::Path) -> Option<String>|
         -> Option<(f32, u64, u32)> {
            let st = process::read_stat_by(pid, read).filter(|s| !s.is_gone())?;
            let before = self.last.get(&(pid, st.start)).copied();
            seen.insert((pid, st.start), st.cpu_ticks);
            let cpu = match (before, elapsed) {
                (Some(b), Some(e)) => {
                    (st.cpu_ticks.saturating_sub(b) as f64 / self.ticks_per_s / e * 100.0) as f32
                }
                _ => 0.0,
            };
            Some((cpu, st.rss_pages * self.page_bytes, st.threads))
        };
        let mut cgroup_cpu = HashMap::new();
        let trees = roots
            .iter()
            .map(|(root, cgroup)| {
                let mut m = ProcMetrics {
                    at_ms,
                    ..Default::default()
                };
                if let Some(cg) = cgroup {
                    let pids = cg.pids_by(&mut read);
                    if !pids.is_empty() {
                        m.processes = pids.len() as u32;
                        if let Some(usec) = cg.cpu_usage_usec(&mut read) {
                            let key = std::os::unix::ffi::OsStrExt::as_bytes(cg.path().as_os_str())
                                .to_vec();
                            if let (Some(before), Some(e)) = (self.last_cgroup.get(&key), elapsed) {
                                m.cpu_percent =
                                    (usec.saturating_sub(*before) as f64 / 1e6 / e * 100.0) as f32;
                            }
                            cgroup_cpu.insert(key, usec);
                        }
                        m.rss_bytes = cg.resident_bytes(&mut read).unwrap_or_else(|| {
                            pids.iter()
                                .filter_map(|p| process::read_stat_by(*p, &mut read))
                                .map(|s| s.rss_pages * page_bytes)
                                .sum()
                        });
                        return m;
                    }
                }
                let mut stack = vec![*root];
                while let Some(pid) = stack.pop() {
                    let Some((cpu, rss, threads)) = measure(pid, &mut read) else {
                        continue;
                    };
                    m.cpu_percent += cpu;
                    m.rss_bytes += rss;
                    m.processes += 1;
                    if m.processes < 100_000 {
                        children(pid, threads, &mut stack);
                    }
                }
                m
            })
            .collect();
        let me = measure(std::process::id(), &mut read);
        self.held.sweep();
        self.last = seen;
        self.last_cgroup = cgroup_cpu;
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let load = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        let host = HostMetrics {
            cpu_percent: self.sys.global_cpu_usage(),
            cpus: self.sys.cpus().len() as u32,
            mem_total_bytes: self.sys.total_memory(),
            mem_used_bytes: self.sys.used_memory(),
            load,
            daemon_cpu_percent: me.map(|m| m.0).unwrap_or_default(),
            daemon_rss_bytes: me.map(|m| m.1).unwrap_or_default(),
            at_ms,
        };
        (host, trees)
    }
}

/// Appends the children of `pid` (read from `/proc/PID/task/TID/children`; the task list
/// is read only when the process has more than one thread).
fn children(pid: u32, threads: u32, out: &mut Vec<u32>) {
    let mut read = |tid: &str| {
        if let Some(kids) = process::read_proc_file(format!("/proc/{pid}/task/{tid}/children")) {
            out.extend(
                kids.split_ascii_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    };
    if threads <= 1 {
        read(&pid.to_string());
    } else if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            read(&task.file_name().to_string_lossy());
        }
    }
}

/// What wakes the sampling thread before its next sample is due.
enum Wake {
    /// `metrics_interval_s` changed.
    Interval(Duration),
    /// Something may run now (sent only while the thread sleeps with nothing to sample).
    Change,
}

impl Supervisor {
    /// Samples at the interval `interval` holds (it may change while running), on a thread of
    /// its own that sleeps exactly until the next sample: a tokio timer that long passes
    /// through the coarse levels of tokio's timer wheel, waking the runtime two or three
    /// times for each sample it takes. With nothing to sample (no instance has a process)
    /// and `host_always` off, the thread sleeps until the supervisor changes: an idle daemon
    /// without apps does not wake for metrics at all. `host_always` keeps the host's figures
    /// fresh anyway (a cluster node reports them in every heartbeat). This task only relays
    /// changes to the thread; it ends when the supervisor's change channel closes.
    pub async fn run_metrics(&self, mut interval: watch::Receiver<Duration>, host_always: bool) {
        let Some(sampler) = Sampler::new() else {
            warn!("cannot read system metrics; ps shows no CPU or memory");
            return;
        };
        // One slot: a wake-up pending is as good as two.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let idle = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let first = *interval.borrow_and_update();
        let (sup, runtime, asleep) = (
            self.clone(),
            tokio::runtime::Handle::current(),
            idle.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("herd-metrics".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                sup.sample_forever(sampler, first, &rx, &asleep, host_always);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the metrics thread; ps shows no CPU or memory");
            return;
        }
        let mut changes = self.subscribe();
        loop {
            let wake = tokio::select! {
                r = interval.changed() => match r {
                    Ok(()) => Wake::Interval(*interval.borrow_and_update()),
                    Err(_) => return,
                },
                r = changes.changed() => match r {
                    Ok(()) if idle.load(std::sync::atomic::Ordering::Acquire) => Wake::Change,
                    Ok(()) => continue,
                    Err(_) => return,
                },
            };
            if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) = tx.try_send(wake) {
                return;
            }
        }
    }

    /// The sampling thread: one sample per interval, none while there is nothing to sample.
    fn sample_forever(
        &self,
        mut sampler: Sampler,
        mut every: Duration,
        wakes: &std::sync::mpsc::Receiver<Wake>,
        idle: &std::sync::atomic::AtomicBool,
        host_always: bool,
    ) {
        use std::sync::atomic::Ordering;
        use std::sync::mpsc::RecvTimeoutError;
        let now = crate::supervisor::clock::std_instant;
        let mut due = Some(now() + every);
        loop {
            let wake = match due {
                Some(at) => match wakes.recv_timeout(at.saturating_duration_since(now())) {
                    Ok(w) => Some(w),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match wakes.recv() {
                    Ok(w) => Some(w),
                    Err(_) => return,
                },
            };
            match wake {
                Some(Wake::Interval(d)) => {
                    every = d;
                    due = due.map(|_| now() + every);
                    continue;
                }
                Some(Wake::Change) => {
                    if due.is_none() {
                        idle.store(false, Ordering::Release);
                        due = Some(now() + every);
                    }
                    continue;
                }
                None => {}
            }
            let roots: Vec<(String, u32, u64, u32)> = {
                let t = self.lock();
                t.apps
                    .values()
                    .flat_map(|a| {
                        a.instances.iter().filter_map(move |i| {
                            Some((a.spec.name.clone(), i.index, i.spawn_id, i.pid?))
                        })
                    })
                    .collect()
            };
            let pids: Vec<(u32, Option<Cgroup>)> = roots
                .iter()
                .map(|r| (r.3, self.shared.os.cgroup(r.3)))
                .collect();
            let (host, trees) = sampler.sample(&pids);
            *self.shared.host.lock().unwrap_or_else(|p| p.into_inner()) = Some(host);
            self.record_metrics(&roots, trees);
            if roots.is_empty() && !host_always {
                // Told before it sleeps: a change that lands meanwhile still wakes it.
                idle.store(true, Ordering::Release);
                due = None;
                if !self
                    .lock()
                    .apps
                    .values()
                    .any(|a| a.instances.iter().any(|i| i.pid.is_some()))
                {
                    continue;
                }
                idle.store(false, Ordering::Release);
            }
            due = Some(now() + every);
        }
    }

    fn record_metrics(&self, roots: &[(String, u32, u64, u32)], trees: Vec<ProcMetrics>) {
        self.transact(|t, b| {
            for ((name, index, spawn_id, _), m) in roots.iter().zip(trees) {
                b.apply(t, name, *index, Some(*spawn_id), Input::Sampled(m));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_its_children() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let mut s = Sampler::new().unwrap();
        let deadline = crate::supervisor::clock::std_instant() + Duration::from_secs(5);
        let m = loop {
            let (host, trees) = s.sample(&[(child.id(), None)]);
            assert!(host.mem_total_bytes > 0 && host.cpus > 0);
            if trees[0].processes == 3 || crate::supervisor::clock::std_instant() > deadline {
                break trees[0];
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(m.processes, 3, "sh and its two sleeps");
        assert!(m.rss_bytes > 0);
    }
}
