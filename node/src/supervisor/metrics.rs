//! Per-instance CPU and memory (the whole process tree under the instance's process) and the
//! host's CPU, memory and load, sampled with sysinfo every `metrics_interval_s` (default 5 s).
//! The same sample enforces `max_memory_mb`. One sysinfo `System` lives for the daemon's
//! life: CPU percentages are the difference between two samples.

use super::instance::ProcMetrics;
use super::{Supervisor, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
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
}

impl Sampler {
    pub fn new() -> Option<Self> {
        System::new().ok().map(|sys| Self { sys })
    }

    /// Samples the host and the trees rooted at `roots`.
    pub fn sample(&mut self, roots: &[u32]) -> (HostMetrics, Vec<ProcMetrics>) {
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        self.sys
            .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let at_ms = now_ms();
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for (pid, p) in self.sys.processes() {
            // Threads show up as processes on Linux; their memory is their process's.
            if p.thread_kind().is_some() {
                continue;
            }
            if let Some(parent) = p.parent() {
                children.entry(parent).or_default().push(*pid);
            }
        }
        let trees = roots
            .iter()
            .map(|root| {
                let mut m = ProcMetrics {
                    at_ms,
                    ..Default::default()
                };
                let mut stack = vec![Pid::from_u32(*root)];
                while let Some(pid) = stack.pop() {
                    if let Some(p) = self.sys.process(pid) {
                        m.cpu_percent += p.cpu_usage();
                        m.rss_bytes += p.memory();
                        m.processes += 1;
                    }
                    if let Some(kids) = children.get(&pid) {
                        stack.extend(kids);
                    }
                }
                m
            })
            .collect();
        let load = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        let me = self.sys.process(Pid::from_u32(std::process::id()));
        let host = HostMetrics {
            cpu_percent: self.sys.global_cpu_usage(),
            cpus: self.sys.cpus().len() as u32,
            mem_total_bytes: self.sys.total_memory(),
            mem_used_bytes: self.sys.used_memory(),
            load,
            daemon_cpu_percent: me.map(|p| p.cpu_usage()).unwrap_or_default(),
            daemon_rss_bytes: me.map(|p| p.memory()).unwrap_or_default(),
            at_ms,
        };
        (host, trees)
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
                            Some((a.spec.name.clone(), i.index, i.generation, i.pid?))
                        })
                    })
                    .collect()
            };
            let Some(mut s) = sampler.take() else { return };
            let pids: Vec<u32> = roots.iter().map(|r| r.3).collect();
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
        let mut jobs = Vec::new();
        {
            let mut t = self.lock();
            for ((name, index, generation, _), m) in roots.iter().zip(trees) {
                let Some(app) = t.apps.get_mut(name) else {
                    continue;
                };
                let Some(pos) = app.position(*index) else {
                    continue;
                };
                let limit = app.spec.max_memory_mb;
                let inst = &mut app.instances[pos];
                if inst.generation != *generation {
                    continue;
                }
                inst.metrics = Some(m);
                if let Some(limit) = limit {
                    let rss_mb = m.rss_bytes / (1024 * 1024);
                    if rss_mb > limit {
                        self.emit(
                            name,
                            inst,
                            "memory_limit",
                            json!({ "rss_mb": rss_mb, "limit_mb": limit }),
                        );
                        let reason = format!("memory limit: {rss_mb} MiB > max_memory_mb {limit}");
                        jobs.extend(self.force_restart(app, pos, reason));
                    }
                }
            }
        }
        if !jobs.is_empty() {
            self.notify();
        }
        self.run_stop_jobs(jobs);
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
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let m = loop {
            let (host, trees) = s.sample(&[child.id()]);
            assert!(host.mem_total_bytes > 0 && host.cpus > 0);
            if trees[0].processes == 3 || std::time::Instant::now() > deadline {
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
