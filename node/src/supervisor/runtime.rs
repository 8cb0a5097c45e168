//! The runtime of the instance machine, and the only place an instance changes: it locks
//! the table, fences an input by spawn_id, applies `machine::step`, records the step's
//! facts (log line and event) while still holding the lock (so their order is the order of the transitions),
//! and performs every other effect — fork/exec, signals, timers, watchers — after the lock is
//! released. The OS is behind `process::Os`, so the runtime is tested with a fake one under a
//! paused clock.

use super::instance::{Instance, Status};
use super::machine::{self, Ctx, Effect, Input};
use super::process::{SpawnRequest, Spawned};
use super::spec::AppSpec;
use super::{Supervisor, Table, next_spawn_id, secret_env};
use nix::sys::signal::Signal;
use std::time::Duration;
use tracing::warn;

/// The effects of the transitions made under one lock, performed once it is released.
pub(super) struct Batch<'a> {
    sup: &'a Supervisor,
    work: Vec<Work>,
    changed: bool,
}

struct Work {
    app: String,
    index: u32,
    /// The app's spec, for the effects that need it (spawn, probes).
    spec: Option<Box<AppSpec>>,
    effect: Effect,
}

impl Batch<'_> {
    /// Applies `input` to instance `index` of `name` — when `spawn_id` is given, only while
    /// the instance is still that spawn_id (an exit of a reload's old process is turned into
    /// `ReplacedExited`). Returns the status after the step, or `None` when the input was
    /// fenced off or the instance is gone.
    pub(super) fn apply(
        &mut self,
        t: &mut Table,
        name: &str,
        index: u32,
        spawn_id: Option<u64>,
        input: Input,
    ) -> Option<Status> {
        let closing = t.closing;
        let app = t.apps.get_mut(name)?;
        let pos = app.position(index)?;
        let singleton = app.is_singleton();
        let one_shot = app.origin == super::Origin::Job;
        let inst = &mut app.instances[pos];
        let input = match (spawn_id, input) {
            (Some(g), input) if g == inst.spawn_id => input,
            (None, input) => input,
            (Some(g), Input::Exited { exit, .. })
                if inst.retiring.as_ref().is_some_and(|r| r.spawn_id == g) =>
            {
                Input::ReplacedExited { exit }
            }
            _ => return None,
        };
        let ctx = Ctx {
            now_ms: self.sup.shared.os.now_ms(),
            boot_ms: self.sup.shared.os.boot_ms(),
            now: crate::supervisor::clock::monotonic(),
            fresh_spawn_id: next_spawn_id(),
            closing,
            singleton,
            lease_valid: singleton && self.sup.shared.lease.valid(),
            one_shot,
        };
        // A metrics sample changes nothing worth waking the state writer for (as before).
        // Nor does an app's watchdog ping or status text (ps reads the table itself).
        let quiet = matches!(
            input,
            Input::Sampled(_) | Input::WatchdogPing | Input::Status(_)
        );
        let effects = machine::step(inst, &app.spec, input, &ctx);
        self.changed |= !quiet || !effects.is_empty();
        for effect in effects {
            match effect {
                Effect::Fact { pid, fact } => {
                    fact.record(&self.sup.shared.events, name, Some(index), pid);
                }
                effect => {
                    let spec = matches!(
                        effect,
                        Effect::Spawn { .. }
                            | Effect::StartProbes { .. }
                            | Effect::WatchAdopted { .. }
                            | Effect::WatchMain { .. }
                    )
                    .then(|| Box::new(app.spec.clone()));
                    self.work.push(Work {
                        app: name.to_string(),
                        index,
                        spec,
                        effect,
                    });
                }
            }
        }
        Some(app.instances[pos].status)
    }

    /// Stops a group no instance owns, once the lock is released.
    pub(super) fn stop_untracked(&mut self, pgid: u32, signal: Signal, timeout: Duration) {
        self.work.push(Work {
            app: String::new(),
            index: 0,
            spec: None,
            effect: Effect::StopUntracked {
                pgid,
                signal,
                timeout,
            },
        });
    }
}

impl Supervisor {
    /// Runs `f` with the table locked and a batch to apply inputs with; then, unlocked, wakes
    /// the waiters and performs the effects.
    pub(super) fn transact<R>(&self, f: impl FnOnce(&mut Table, &mut Batch<'_>) -> R) -> R {
        let mut batch = Batch {
            sup: self,
            work: Vec::new(),
            changed: false,
        };
        let r = {
            let mut t = self.lock();
            f(&mut t, &mut batch)
        };
        let Batch { work, changed, .. } = batch;
        if changed {
            self.notify();
        }
        self.perform(work);
        r
    }

    /// One input for one instance of `spawn_id`; returns the instance after the step
    /// (`None` when fenced off).
    pub(super) fn dispatch(
        &self,
        name: &str,
        index: u32,
        spawn_id: u64,
        input: Input,
    ) -> Option<Instance> {
        self.transact(|t, b| {
            b.apply(t, name, index, Some(spawn_id), input)?;
            let app = t.apps.get(name)?;
            app.instances.get(app.position(index)?).cloned()
        })
    }

    fn perform(&self, work: Vec<Work>) {
        debug_assert!(!super::table_held());
        for w in work {
            let Work {
                app,
                index,
                spec,
                effect,
            } = w;
            match effect {
                Effect::Fact { .. } => {}
                Effect::Spawn { spawn_id } => {
                    if let Some(spec) = spec {
                        self.spawn_now(&app, index, spawn_id, &spec);
                    }
                }
                Effect::SignalGroup { pgid, signal } => {
                    // A SIGKILL to what may already be gone is best effort; a stop signal
                    // that fails is worth a line.
                    if let Err(e) = self.shared.os.signal_group(pgid, signal)
                        && signal != Signal::SIGKILL
                    {
                        warn!(app = %app, instance = index, pid = pgid, error = %e, "stop signal failed");
                    }
                }
                Effect::WatchGroup {
                    pgid,
                    spawn_id,
                    kill_at,
                    timeout,
                } => self.watch_stopping(app, index, spawn_id, pgid, kill_at, timeout),
                Effect::Timer { after, spawn_id } => {
                    self.schedule_start(app, index, spawn_id, after)
                }
                Effect::WaitDependencies { spawn_id } => {
                    self.wait_for_dependencies(app, index, spawn_id)
                }
                Effect::StartProbes { spawn_id, pid } => {
                    if let Some(spec) = spec
                        && let Some(h) = spec.health.clone()
                    {
                        // An exec probe runs as the app's user, resolved once per process.
                        let who = h.exec.as_ref().map_or(Ok(None), |_| {
                            super::identity::Plan::prepare_probe(&spec)
                                .map(|p| p.map(std::sync::Arc::new))
                                .map_err(|e| e.to_string())
                        });
                        self.start_probes(app, index, spawn_id, pid, h, who);
                    }
                }
                Effect::WatchAdopted { spawn_id, pid } => {
                    self.adopt_notify(&app, index, spec.as_deref());
                    self.watch_adopted(app, index, spawn_id, pid)
                }
                Effect::WatchMain {
                    spawn_id,
                    pgid,
                    pid,
                } => {
                    self.adopt_notify(&app, index, spec.as_deref());
                    self.watch_main(app, index, spawn_id, pgid, pid)
                }
                Effect::GuardLease { pid, signature } => self.shared.lease.guard(pid, signature),
                Effect::ForgetLease { pid } => self.shared.lease.forget(pid),
                Effect::NoteInLog(line) => {
                    super::process::note_in_log(&self.log_path(&app, index), &line)
                }
                Effect::StopUntracked {
                    pgid,
                    signal,
                    timeout,
                } => {
                    let os = self.shared.os.clone();
                    tokio::spawn(async move {
                        super::group_stop::stop_untracked(&*os, pgid, signal, timeout).await
                    });
                }
            }
        }
    }

    /// An adopted instance of a notifying app gets its socket back at the same path.
    fn adopt_notify(&self, app: &str, index: u32, spec: Option<&AppSpec>) {
        if let Some(spec) = spec.filter(|s| s.notifies())
            && let Err(e) = self.ensure_notify(app, index, spec)
        {
            warn!(app = %app, instance = index, error = %e, "cannot bind the notify socket again");
        }
    }

    /// Fork/exec for `Effect::Spawn` (the table is not locked), and the answer to the machine.
    /// A process whose instance moved on meanwhile (deleted, say) is killed at once.
    fn spawn_now(&self, name: &str, index: u32, spawn_id: u64, spec: &AppSpec) {
        let log = self.log_path(name, index);
        let listen = self.shared.sockets.ensure(name, &spec.listen);
        let secrets = secret_env::resolve(spec, self.shared.secrets.get().map(|s| &**s));
        let notify = match spec.notifies() {
            true => self
                .ensure_notify(name, index, spec)
                .map(|path| super::notify::env(spec, &path))
                .map_err(|e| std::io::Error::new(e.kind(), format!("notify socket: {e}"))),
            false => Ok(Vec::new()),
        };
        let spawned = listen
            .map_err(std::io::Error::other)
            .and_then(|fds| Ok((fds, secrets.map_err(std::io::Error::other)?)))
            .and_then(|(fds, secrets)| Ok((fds, secrets, notify?)))
            .and_then(|(fds, secrets, notify)| {
                self.shared.os.spawn(&SpawnRequest {
                    spec,
                    index,
                    log: &log,
                    listen_fds: &fds,
                    home: &self.shared.home,
                    marker: &self.shared.marker,
                    secrets: &secrets,
                    notify: &notify,
                })
            });
        match spawned {
            Ok(Spawned { pid, exit }) => {
                let signature = pid.and_then(|p| self.shared.os.start_signature(p));
                let answer = Input::SpawnSucceeded { pid, signature };
                if self.dispatch(name, index, spawn_id, answer).is_none()
                    && let Some(pid) = pid
                {
                    warn!(app = %name, instance = index, pid, "the instance moved on while its process was spawned; killing the process");
                    let _ = self.shared.os.signal_group(pid, Signal::SIGKILL);
                }
                self.watch_exit(name.to_string(), index, spawn_id, pid, exit);
            }
            Err(e) => {
                let answer = Input::SpawnFailed {
                    error: e.to_string(),
                };
                self.dispatch(name, index, spawn_id, answer);
            }
        }
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
