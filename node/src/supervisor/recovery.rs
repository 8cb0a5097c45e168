//! Coming back after the daemon itself was gone: adopt what still runs (same pid and start
//! signature), apply the restart policy to what died meanwhile, start what is meant to run.
//! And a periodic sweep that catches an instance whose process vanished without its exit
//! being seen.

use super::instance::{ExitRecord, Status};
use super::{App, Desired, Snapshot, Supervisor, adoption, next_generation, now_ms, process};
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

/// An instance younger than this is never treated as an orphan by the sweep.
const ORPHAN_MIN_AGE_MS: u64 = 90_000;

impl Supervisor {
    pub fn restore(&self, snapshot: Snapshot) {
        let found =
            adoption::scan_instances(&self.shared.home, &self.shared.marker, self.shared.uid);
        let mut jobs = Vec::new();
        {
            let mut t = self.lock();
            for app in snapshot.apps {
                t.apps.insert(app.spec.name.clone(), app);
            }
            self.reclaim(&mut t, found);
            let names: Vec<String> = t.apps.keys().cloned().collect();
            for name in names {
                let waiting = t.unready_dependencies(&name);
                let Some(app) = t.apps.get_mut(&name) else {
                    continue;
                };
                if !app.spec.listen.is_empty()
                    && let Err(e) = self.shared.sockets.ensure(&name, &app.spec.listen)
                {
                    warn!(app = %name, error = %e, "cannot bind the app's listen sockets");
                }
                jobs.extend(self.restore_app(app, &waiting));
            }
        }
        self.run_stop_jobs(jobs);
        self.notify();
    }

    fn restore_app(&self, app: &mut App, waiting: &[String]) -> Vec<super::lifecycle::StopJob> {
        let name = app.spec.name.clone();
        let singleton = app.is_singleton();
        let mut jobs = Vec::new();
        for pos in 0..app.instances.len() {
            let inst = &mut app.instances[pos];
            inst.generation = next_generation();
            if let Some(old) = inst.retiring.take()
                && old
                    .signature
                    .is_some_and(|s| self.proven(&name, inst.index, old.pid, s))
            {
                // A reload was cut short by the daemon's death: finish retiring the old process.
                info!(app = %name, instance = inst.index, pid = old.pid, "stopping the process an interrupted reload replaced");
                retire_later(old.pid, app.spec.signal(), app.spec.stop_timeout());
            }
            let inst = &mut app.instances[pos];
            let alive = match (inst.pid, inst.signature) {
                (Some(pid), Some(sig)) if inst.status.has_process() => {
                    self.proven(&name, inst.index, pid, sig)
                }
                _ => false,
            };
            let wanted = app.desired == Desired::Running && inst.index < app.spec.instances;
            if alive {
                let pid = inst.pid.unwrap_or_default();
                info!(app = %name, instance = inst.index, pid, "adopted running instance");
                if inst.status == Status::Stopping {
                    inst.status = Status::Running;
                }
                self.emit(&name, inst, "adopted", json!({}));
                if let (true, Some(sig)) = (singleton, inst.signature) {
                    // Its lease died with the old daemon: the keeper stops it unless the master
                    // renews the lease first.
                    self.shared.lease.guard(pid, sig);
                }
                self.watch_adopted(name.clone(), inst.index, inst.generation, pid);
                if let Some(h) = &app.spec.health {
                    self.start_probes(name.clone(), inst.index, inst.generation, pid, h.clone());
                }
                if !wanted {
                    jobs.extend(self.begin_stop(app, pos, None));
                }
                continue;
            }
            let was = inst.status;
            let had_process = inst.pid.is_some();
            inst.pid = None;
            inst.signature = None;
            if !wanted {
                inst.status = if was == Status::Crashed {
                    was
                } else {
                    Status::Stopped
                };
                continue;
            }
            if singleton {
                // Only the agent, in sync with the master, may start it again (see `lease`).
                inst.status = Status::Starting;
                inst.next_start_ms = None;
                info!(app = %name, instance = inst.index, "waiting for the master's lease");
                continue;
            }
            match was {
                Status::Running | Status::Starting if had_process => {
                    info!(app = %name, instance = inst.index, "instance died while the daemon was down");
                    self.emit(&name, inst, "died_while_down", json!({}));
                    let exit = ExitRecord {
                        at_ms: now_ms(),
                        code: None,
                        signal: None,
                        reason: "died while the daemon was down".into(),
                    };
                    self.after_exit(app, pos, exit, false);
                }
                Status::Backoff => {
                    let delay = inst
                        .next_start_ms
                        .map(|t| t.saturating_sub(now_ms()))
                        .unwrap_or(0);
                    self.schedule_start(
                        name.clone(),
                        inst.index,
                        inst.generation,
                        Duration::from_millis(delay),
                    );
                }
                Status::Crashed => {}
                _ => {
                    inst.reset_history();
                    self.start_instance(app, pos, waiting);
                }
            }
        }
        // Instances the spec asks for that were never created.
        let missing: Vec<u32> = (0..app.spec.instances)
            .filter(|i| app.position(*i).is_none())
            .collect();
        for index in missing {
            app.instances.push(super::instance::Instance::new(index));
            if app.desired == Desired::Running {
                let pos = app.instances.len() - 1;
                self.start_instance(app, pos, waiting);
            }
        }
        app.instances.sort_by_key(|i| i.index);
        jobs
    }

    /// Whether the process the state file records for an instance is still ours (alive, same
    /// start signature, leading its own group). One that lives but is not provably ours is
    /// logged and left alone: the state file alone is not proof.
    fn proven(&self, name: &str, index: u32, pid: u32, signature: u64) -> bool {
        match adoption::recorded(pid, signature) {
            adoption::Recorded::Ours => true,
            adoption::Recorded::Gone => false,
            adoption::Recorded::NotOurs(reason) => {
                let uid = adoption::read_uids(pid).map(|(real, _)| real);
                warn!(app = %name, instance = index, pid, uid, %reason, "not adopting the process the state file records; leaving it alone");
                false
            }
        }
    }

    /// Matches the instance leaders found on the host with the state: a slot whose recorded
    /// process is gone takes the one found for it (started just before a crash, before its pid
    /// was written); any other leader of this home — a duplicate, or an app the state does not
    /// know — is stopped, so nothing herd started runs unsupervised.
    fn reclaim(&self, t: &mut super::Table, found: Vec<adoption::Found>) {
        for f in found {
            let slot = t.apps.get_mut(&f.app).and_then(|a| {
                let pos = a.position(f.index)?;
                let signal = a.spec.signal();
                Some((&mut a.instances[pos], signal))
            });
            let recorded_alive = |i: &super::instance::Instance| match (i.pid, i.signature) {
                (Some(pid), Some(sig)) => {
                    i.status.has_process()
                        && adoption::recorded(pid, sig) == adoption::Recorded::Ours
                }
                _ => false,
            };
            match slot {
                Some((inst, _))
                    if inst.pid == Some(f.pid)
                        || inst.retiring.as_ref().is_some_and(|r| r.pid == f.pid) => {}
                Some((inst, _)) if !recorded_alive(inst) => {
                    info!(app = %f.app, instance = f.index, pid = f.pid, "found the instance's process unrecorded; adopting it");
                    inst.pid = Some(f.pid);
                    inst.signature = Some(f.signature);
                    inst.status = Status::Running;
                    inst.started_at_ms.get_or_insert_with(now_ms);
                }
                other => {
                    let signal = other.map(|(_, s)| s).unwrap_or(Signal::SIGTERM);
                    warn!(app = %f.app, instance = f.index, pid = f.pid, "stopping a process of this home that no instance owns");
                    retire_later(f.pid, signal, Duration::from_secs(10));
                }
            }
        }
    }

    /// Instances recorded as running whose process is gone (or whose pid now belongs to
    /// another process) are handled as exited. Returns how many it found.
    pub fn sweep(&self) -> usize {
        let now = now_ms();
        let orphans: Vec<(String, u32, u64)> = {
            let t = self.lock();
            t.apps
                .values()
                .flat_map(|a| a.instances.iter().map(move |i| (a, i)))
                .filter(|(_, i)| i.status.has_process() && i.pid.is_some())
                .filter(|(_, i)| {
                    i.started_at_ms
                        .is_some_and(|s| now.saturating_sub(s) >= ORPHAN_MIN_AGE_MS)
                })
                .filter(|(_, i)| match (i.pid, i.signature) {
                    (Some(pid), Some(sig)) => !process::is_same_process(pid, sig),
                    (Some(pid), None) => !process::group_alive(pid),
                    _ => false,
                })
                .map(|(a, i)| (a.spec.name.clone(), i.index, i.generation))
                .collect()
        };
        for (name, index, generation) in &orphans {
            warn!(app = %name, instance = index, "recovery sweep: the process is gone");
            let exit = ExitRecord {
                at_ms: now,
                code: None,
                signal: None,
                reason: "gone (found by the recovery sweep)".into(),
            };
            self.on_exit(name, *index, *generation, exit);
        }
        orphans.len()
    }
}

/// Stops a process herd no longer tracks as an instance: the stop signal to its group, then
/// SIGKILL after the timeout.
pub(super) fn retire_later(pgid: u32, signal: Signal, timeout: Duration) {
    tokio::spawn(async move {
        if let Err(e) = process::signal_group(pgid, signal) {
            warn!(pgid, error = %e, "not stopping the process group");
            return;
        }
        let deadline = super::limits::deadline(tokio::time::Instant::now(), timeout);
        while process::group_alive(pgid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = process::signal_group(pgid, Signal::SIGKILL);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::events::EventLog;
    use crate::supervisor::instance::Instance;
    use crate::supervisor::spec::AppSpec;
    use crate::supervisor::{App, Origin};

    /// An app whose only instance is recorded as running `pid` since `age_ms` ago.
    fn recorded(pid: u32, signature: u64, age_ms: u64) -> Supervisor {
        let (events, _writer) = EventLog::new("/dev/null".into(), u64::MAX, 1);
        let sup = Supervisor::new(
            "/tmp".into(),
            "/tmp".into(),
            events,
            crate::supervisor::marker::Marker::random(),
        );
        let mut spec = AppSpec::quick("web", "true", vec![]);
        spec.restart = crate::supervisor::backoff::RestartPolicy::Never;
        let mut app = App::new(spec, Origin::Local);
        let mut inst = Instance::new(0);
        inst.status = Status::Running;
        inst.pid = Some(pid);
        inst.signature = Some(signature);
        inst.started_at_ms = Some(now_ms() - age_ms);
        inst.generation = 7;
        app.instances = vec![inst];
        sup.lock().apps.insert("web".into(), app);
        sup
    }

    #[tokio::test]
    async fn the_sweep_handles_a_vanished_process_but_spares_young_and_live_ones() {
        let me = std::process::id();
        let sig = process::start_signature(me).unwrap();
        // Alive and ours: untouched.
        assert_eq!(recorded(me, sig, 200_000).sweep(), 0);
        // The pid now belongs to another process (signature differs) and is old enough.
        let sup = recorded(me, sig + 1, 200_000);
        assert_eq!(sup.sweep(), 1);
        let inst = sup.list(Some("web")).unwrap()[0].instances[0].clone();
        assert_eq!(inst.status, Status::Stopped);
        assert_eq!(
            inst.last_exit().unwrap().reason,
            "gone (found by the recovery sweep)"
        );
        // Younger than 90 s: never treated as an orphan.
        assert_eq!(recorded(me, sig + 1, 10_000).sweep(), 0);
    }
}
