//! Coming back after the daemon itself was gone: adopt what still runs (same pid and start
//! signature), apply the restart policy to what died meanwhile, start what is meant to run.
//! And a periodic sweep that catches an instance whose process vanished without its exit
//! being seen.

use super::instance::{ExitRecord, Instance};
use super::machine::Input;
use super::runtime::Batch;
use super::{Desired, Snapshot, Supervisor, adoption};
use nix::sys::signal::Signal;
use std::time::Duration;
use tracing::warn;

/// An instance younger than this is never treated as an orphan by the sweep.
const ORPHAN_MIN_AGE_MS: u64 = 90_000;

impl Supervisor {
    pub fn restore(&self, snapshot: Snapshot) {
        // The uid each app's processes must run as to be taken for its instances: its
        // `user`'s as the user database says now, else the daemon's.
        let daemon_uid = self.shared.uid;
        let uids: std::collections::HashMap<&str, Option<u32>> = snapshot
            .apps
            .iter()
            .map(|a| {
                let uid = super::identity::expected_uid(&a.spec, daemon_uid);
                (a.spec.name.as_str(), uid)
            })
            .collect();
        let found = adoption::scan_instances(&self.shared.home, &self.shared.marker, |app| {
            uids.get(app).copied().unwrap_or(Some(daemon_uid))
        });
        // Boot-clock times only mean something in the boot that wrote them.
        let same_boot =
            snapshot.boot_id.is_some() && snapshot.boot_id.as_deref() == super::clock::boot_id();
        self.transact(|t, b| {
            for mut app in snapshot.apps {
                if !same_boot {
                    app.instances
                        .iter_mut()
                        .for_each(Instance::forget_boot_times);
                }
                t.apps.insert(app.spec.name.clone(), app);
            }
            self.reclaim(t, b, found);
            let names: Vec<String> = t.apps.keys().cloned().collect();
            for name in names {
                let waiting = t.unready_dependencies(&name);
                if let Some(app) = t.apps.get(&name)
                    && !app.spec.listen.is_empty()
                    && let Err(e) = self.shared.sockets.ensure(&name, &app.spec.listen)
                {
                    warn!(app = %name, error = %e, "cannot bind the app's listen sockets");
                }
                self.restore_app(t, b, &name, &waiting);
            }
        });
        self.notify();
    }

    fn restore_app(&self, t: &mut super::Table, b: &mut Batch<'_>, name: &str, waiting: &[String]) {
        let Some(app) = t.apps.get(name) else {
            return;
        };
        // What the state file records, proven (or not) against the host before any step.
        let inputs: Vec<(u32, Input)> = app
            .instances
            .iter()
            .map(|inst| {
                let retiring_alive = inst.retiring.as_ref().is_some_and(|old| {
                    old.signature
                        .is_some_and(|s| self.proven(name, inst.index, old.pid, s))
                });
                let alive = match (inst.pid, inst.signature) {
                    (Some(pid), Some(sig)) if inst.status.has_process() => {
                        self.proven(name, inst.index, pid, sig)
                    }
                    _ => false,
                };
                // A leader that handed over with `MAINPID=` may be gone: the main process it
                // named (same pid and start signature) is then the instance.
                let alive = alive
                    || (inst.status.has_process()
                        && inst
                            .main_pid
                            .zip(inst.main_signature)
                            .is_some_and(|(m, s)| self.shared.os.is_same_process(m, s)));
                let wanted = app.desired == Desired::Running && inst.index < app.spec.instances;
                let input = Input::Restored {
                    alive,
                    retiring_alive,
                    wanted,
                    waiting: waiting.to_vec(),
                };
                (inst.index, input)
            })
            .collect();
        for (index, input) in inputs {
            b.apply(t, name, index, None, input);
        }
        // Instances the spec asks for that were never created.
        let Some(app) = t.apps.get_mut(name) else {
            return;
        };
        let missing: Vec<u32> = (0..app.spec.instances)
            .filter(|i| app.position(*i).is_none())
            .collect();
        for index in &missing {
            app.instances.push(super::instance::Instance::new(*index));
        }
        app.instances.sort_by_key(|i| i.index);
        if app.desired == Desired::Running && app.origin != super::Origin::Job {
            for index in missing {
                let start = Input::Start {
                    waiting: waiting.to_vec(),
                };
                b.apply(t, name, index, None, start);
            }
        }
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
    fn reclaim(&self, t: &mut super::Table, b: &mut Batch<'_>, found: Vec<adoption::Found>) {
        for f in found {
            let slot = t.apps.get(&f.app).and_then(|a| {
                let pos = a.position(f.index)?;
                Some((&a.instances[pos], a.spec.signal()))
            });
            let recorded_alive = |i: &super::instance::Instance| match (i.pid, i.signature) {
                (Some(pid), Some(sig)) => {
                    i.status.has_process()
                        && adoption::recorded(pid, sig) == adoption::Recorded::Ours
                }
                _ => false,
            };
            // A leader in the cgroup of a live instance is that instance's own (a daemon it
            // started with `setsid`), not a stray.
            let in_cgroup_of = |pid: Option<u32>| {
                pid.zip(super::cgroup::host())
                    .is_some_and(|(p, h)| h.same_cgroup(p, f.pid))
            };
            let stray = match slot {
                Some((inst, _))
                    if inst.pid == Some(f.pid)
                        || inst.retiring.as_ref().is_some_and(|r| r.pid == f.pid) =>
                {
                    None
                }
                Some((inst, _)) if recorded_alive(inst) && in_cgroup_of(inst.pid) => None,
                Some((inst, _)) if !recorded_alive(inst) => {
                    let reclaimed = Input::Reclaimed {
                        pid: f.pid,
                        signature: f.signature,
                    };
                    b.apply(t, &f.app, f.index, None, reclaimed);
                    None
                }
                other => Some(other.map(|(_, s)| s).unwrap_or(Signal::SIGTERM)),
            };
            if let Some(signal) = stray {
                warn!(app = %f.app, instance = f.index, pid = f.pid, "stopping a process of this home that no instance owns");
                b.stop_untracked(f.pid, signal, Duration::from_secs(10));
            }
        }
    }

    /// Instances recorded as running whose process is gone (or whose pid now belongs to
    /// another process) are handled as exited. Returns how many it found.
    pub fn sweep(&self) -> usize {
        let os = &self.shared.os;
        let now = os.now_ms();
        let clocks = super::instance::Now {
            wall_ms: now,
            boot_ms: os.boot_ms(),
        };
        // Candidates under the lock; the host is looked at once it is released (the exit
        // is fenced by spawn_id, so an instance that moved on meanwhile is left alone).
        let candidates: Vec<(String, u32, u64, u32, Option<u64>)> = {
            let t = self.lock();
            t.apps
                .values()
                .flat_map(|a| a.instances.iter().map(move |i| (a, i)))
                .filter(|(_, i)| i.status.has_process())
                .filter(|(_, i)| i.age_ms(clocks).is_some_and(|a| a >= ORPHAN_MIN_AGE_MS))
                .filter_map(|(a, i)| {
                    // The process named by `MAINPID=`, when there is one, is the instance.
                    let (pid, signature) = match i.main_pid {
                        Some(main) => (main, i.main_signature),
                        None => (i.pid?, i.signature),
                    };
                    Some((a.spec.name.clone(), i.index, i.spawn_id, pid, signature))
                })
                .collect()
        };
        let orphans: Vec<_> = candidates
            .into_iter()
            .filter(|(_, _, _, pid, signature)| match signature {
                Some(sig) => !os.is_same_process(*pid, *sig),
                None => !os.group_alive(*pid),
            })
            .collect();
        for (name, index, spawn_id, pid, _) in &orphans {
            warn!(app = %name, instance = index, "recovery sweep: the process is gone");
            let exit = ExitRecord {
                at_ms: now,
                code: None,
                signal: None,
                reason: "gone (found by the recovery sweep)".into(),
            };
            self.on_exit(name, *index, *spawn_id, Some(*pid), exit);
        }
        orphans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::instance::{Instance, Status};
    use crate::supervisor::spec::AppSpec;
    use crate::supervisor::{App, Origin, now_ms, process};

    /// An app whose only instance is recorded as running `pid` since `age_ms` ago.
    fn recorded(pid: u32, signature: u64, age_ms: u64) -> Supervisor {
        let sup = crate::supervisor::testing::on_real_os();
        let mut spec = AppSpec::quick("web", "true", vec![]);
        spec.restart = crate::supervisor::backoff::RestartPolicy::Never;
        let mut app = App::new(spec, Origin::Local);
        let mut inst = Instance::new(0);
        inst.status = Status::Running;
        inst.pid = Some(pid);
        inst.signature = Some(signature);
        inst.started_at_ms = Some(now_ms() - age_ms);
        inst.started_boot_ms = Some(crate::supervisor::clock::boot_ms() - age_ms);
        inst.spawn_id = 7;
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

    /// A stopped app whose instance recorded boot-clock times: a crash window and a backoff.
    fn with_boot_times(boot_id: Option<&str>) -> Snapshot {
        let mut spec = AppSpec::quick("web", "true", vec![]);
        spec.restart = crate::supervisor::backoff::RestartPolicy::Never;
        let mut app = App::new(spec, Origin::Local);
        app.desired = Desired::Stopped;
        let mut inst = Instance::new(0);
        inst.recent_restarts = [1_000, 2_000].into();
        inst.started_boot_ms = Some(1_000);
        app.instances = vec![inst];
        Snapshot {
            version: crate::supervisor::SNAPSHOT_VERSION,
            boot_id: boot_id.map(str::to_string),
            apps: vec![app],
        }
    }

    #[tokio::test]
    async fn boot_clock_times_are_kept_in_the_same_boot_and_forgotten_from_another() {
        let this_boot = crate::supervisor::clock::boot_id().expect("this host's boot id");
        for (boot_id, kept) in [
            (Some(this_boot), true),
            (Some("another boot"), false),
            (None, false),
        ] {
            let sup = crate::supervisor::testing::on_real_os();
            sup.restore(with_boot_times(boot_id));
            let inst = sup.list(Some("web")).unwrap()[0].instances[0].clone();
            assert_eq!(
                inst.recent_restarts.len(),
                if kept { 2 } else { 0 },
                "{boot_id:?}"
            );
            assert_eq!(inst.started_boot_ms.is_some(), kept, "{boot_id:?}");
        }
    }
}
