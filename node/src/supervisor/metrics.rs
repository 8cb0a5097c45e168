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

pub struct Sampler {
    sys: System,
    /// CPU ticks of each sampled process at the previous sample (keyed by pid and start).
    last: HashMap<(u32, u64), u64>,
    /// CPU µs of each sampled cgroup at the previous sample.
    last_cgroup: HashMap<std::path::PathBuf, u64>,
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
    /// follows herd's own process count, not the host's: an idle daemon stays cheap.
    pub fn sample(&mut self, roots: &[(u32, Option<Cgroup>)]) -> (HostMetrics, Vec<ProcMetrics>) {
        let now = crate::supervisor::clock::std_instant();
        let elapsed = self
            .last_at
            .map(|t| now.duration_since(t).as_secs_f64())
            .filter(|e| *e > 0.0);
        self.last_at = Some(now);
        let at_ms = now_ms();
        let mut seen = HashMap::new();
        let mut measure = |pid: u32| -> Option<(f32, u64, u32)> {
            let st = process::read_stat(pid).filter(|s| !s.is_gone())?;
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
                    let pids = cg.pids();
                    if !pids.is_empty() {
                        m.processes = pids.len() as u32;
                        if let Some(usec) = cg.cpu_usage_usec() {
                            let key = cg.path().to_path_buf();
                            if let (Some(before), Some(e)) = (self.last_cgroup.get(&key), elapsed) {
                                m.cpu_percent =
                                    (usec.saturating_sub(*before) as f64 / 1e6 / e * 100.0) as f32;
                            }
                            cgroup_cpu.insert(key, usec);
                        }
                        m.rss_bytes = cg.resident_bytes().unwrap_or_else(|| {
                            pids.iter()
                                .filter_map(|p| process::read_stat(*p))
                                .map(|s| s.rss_pages * self.page_bytes)
                                .sum()
                        });
                        return m;
                    }
                }
                let mut stack = vec![*root];
                while let Some(pid) = stack.pop() {
                    let Some((cpu, rss, threads)) = measure(pid) else {
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
        let me = measure(std::process::id());
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
        if let Some(kids) = process::read_proc_file(&format!("/proc/{pid}/task/{tid}/children")) {
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

impl Supervisor {
    /// Samples forever at the interval `interval` holds (it may change while running).
    pub async fn run_metrics(&self, mut interval: watch::Receiver<Duration>) {
        let Some(sampler) = Sampler::new() else {
            warn!("cannot read system metrics; ps shows no CPU or memory");
            return;
        };
        let mut sampler = Some(sampler);
        loop {
            let wait = *interval.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = interval.changed() => { if r.is_err() { return } continue }
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
            let Some(mut s) = sampler.take() else { return };
            let os = self.shared.os.clone();
            let pids: Vec<(u32, Option<Cgroup>)> =
                roots.iter().map(|r| (r.3, os.cgroup(r.3))).collect();
            let Ok((s, host, trees)) = tokio::task::spawn_blocking(move || {
                let (host, trees) = s.sample(&pids);
                (s, host, trees)
            })
            .await
            else {
                return;
            };
            sampler = Some(s);
            *self.shared.host.lock().unwrap_or_else(|p| p.into_inner()) = Some(host);
            self.record_metrics(&roots, trees);
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
