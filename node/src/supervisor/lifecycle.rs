//! Transitions of one instance, called with the table locked: spawn, exit, restart after
//! backoff, stop (signal, wait for the group to empty, SIGKILL at the deadline), and the
//! restarts herd forces on an unhealthy or over-limit process.

use super::instance::{AfterExit, ExitRecord, Health, Status, decide_after_exit};
use super::{App, Supervisor, limits, next_generation, now_ms, process, secret_env};
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

/// A stop in progress: the stop signal went to the group; a task waits for the group to
/// empty and SIGKILLs it at the deadline.
pub(super) struct StopJob {
    pub name: String,
    pub index: u32,
    pub generation: u64,
    pub pgid: u32,
    pub timeout: Duration,
}

impl Supervisor {
    /// Starts the instance's process now, or — when a dependency is not ready yet — marks it
    /// `starting` and lets a task start it once the dependencies are.
    /// `waiting`: the dependencies that are not ready (see `Table::unready_dependencies`).
    pub(super) fn start_instance(&self, app: &mut App, pos: usize, waiting: &[String]) {
        if waiting.is_empty() {
            self.spawn_instance(app, pos);
            return;
        }
        let inst = &mut app.instances[pos];
        inst.generation = next_generation();
        inst.status = Status::Starting;
        inst.pid = None;
        info!(app = %app.spec.name, instance = inst.index, waiting_for = ?waiting, "waiting for dependencies");
        self.emit(&app.spec.name, inst, "waiting", json!({ "for": waiting }));
        self.wait_for_dependencies(app.spec.name.clone(), inst.index, inst.generation);
    }

    fn wait_for_dependencies(&self, name: String, index: u32, generation: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut still_current = true;
            me.wait_until(|t| {
                let Some(app) = t.apps.get(&name) else {
                    still_current = false;
                    return true;
                };
                let current = app
                    .position(index)
                    .is_some_and(|p| app.instances[p].generation == generation);
                if !current || t.closing {
                    still_current = false;
                    return true;
                }
                app.spec
                    .depends_on
                    .iter()
                    .all(|d| t.apps.get(d).is_some_and(|a| a.is_ready()))
            })
            .await;
            if !still_current {
                return;
            }
            {
                let mut t = me.lock();
                let Some(app) = t.apps.get_mut(&name) else {
                    return;
                };
                let Some(pos) = app.position(index) else {
                    return;
                };
                let inst = &app.instances[pos];
                if inst.generation != generation
                    || inst.status != Status::Starting
                    || inst.pid.is_some()
                {
                    return;
                }
                me.spawn_instance(app, pos);
            }
            me.notify();
        });
    }

    pub(super) fn spawn_instance(&self, app: &mut App, pos: usize) {
        let singleton = app.is_singleton();
        if singleton && !self.shared.lease.valid() {
            // Not without the master's word: the master may already run it elsewhere. The
            // agent starts it again once in contact (see `managed::reconcile_cluster`).
            let inst = &mut app.instances[pos];
            inst.generation = next_generation();
            inst.status = Status::Starting;
            inst.pid = None;
            inst.signature = None;
            inst.next_start_ms = None;
            info!(app = %app.spec.name, instance = inst.index, "waiting for the master's lease");
            self.emit(&app.spec.name, inst, "awaiting_lease", json!({}));
            return;
        }
        let listen = self.shared.sockets.ensure(&app.spec.name, &app.spec.listen);
        let spec = &app.spec;
        let inst = &mut app.instances[pos];
        let log = self.log_path(&spec.name, inst.index);
        inst.generation = next_generation();
        inst.next_start_ms = None;
        inst.health = Health::Unknown;
        inst.probe_failures = 0;
        inst.last_probe_error = None;
        inst.restart_reason = None;
        inst.metrics = None;
        let now = now_ms();
        inst.started_at_ms = Some(now);
        inst.start_limit.record(now);
        let secrets = secret_env::resolve(spec, self.shared.secrets.get().map(|s| &**s));
        let spawned = listen
            .map_err(std::io::Error::other)
            .and_then(|fds| Ok((fds, secrets.map_err(std::io::Error::other)?)))
            .and_then(|(fds, secrets)| {
                process::spawn(
                    spec,
                    inst.index,
                    &log,
                    &fds,
                    &self.shared.home,
                    &self.shared.marker,
                    &secrets,
                )
            });
        match spawned {
            Ok(child) => {
                let pid = child.id();
                inst.pid = pid;
                inst.signature = pid.and_then(process::start_signature);
                inst.status = if spec.health.is_some() {
                    Status::Starting
                } else {
                    Status::Running
                };
                if singleton && let (Some(pid), Some(sig)) = (pid, inst.signature) {
                    self.shared.lease.guard(pid, sig);
                }
                info!(app = %spec.name, instance = inst.index, pid, restarts = inst.restarts, "started");
                self.shared.events.emit(
                    &spec.name,
                    Some(inst.index),
                    pid,
                    "started",
                    json!({ "restarts": inst.restarts }),
                );
                self.watch_child(spec.name.clone(), inst.index, inst.generation, child);
                if let (Some(h), Some(pid)) = (&spec.health, pid) {
                    self.start_probes(
                        spec.name.clone(),
                        inst.index,
                        inst.generation,
                        pid,
                        h.clone(),
                    );
                }
            }
            Err(e) => {
                let reason = format!("spawn failed: cannot run `{}`: {e}", spec.command);
                warn!(app = %spec.name, instance = inst.index, error = %e, "spawn failed");
                process::note_in_log(&log, &reason);
                inst.pid = None;
                inst.signature = None;
                self.emit(
                    &spec.name,
                    inst,
                    "spawn_failed",
                    json!({ "error": e.to_string() }),
                );
                let exit = ExitRecord {
                    at_ms: now,
                    code: None,
                    signal: None,
                    reason,
                };
                self.after_exit(app, pos, exit, false);
            }
        }
    }

    fn watch_child(
        &self,
        name: String,
        index: u32,
        generation: u64,
        mut child: tokio::process::Child,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => {
                    let (code, signal) = process::describe_exit(status);
                    ExitRecord {
                        at_ms: now_ms(),
                        code,
                        signal,
                        reason: "exited".into(),
                    }
                }
                Err(e) => ExitRecord {
                    at_ms: now_ms(),
                    code: None,
                    signal: None,
                    reason: format!("lost track of the process: {e}"),
                },
            };
            me.on_exit(&name, index, generation, exit);
        });
    }

    /// Watches a process adopted from a previous daemon (not our child: no exit status).
    pub(super) fn watch_adopted(&self, name: String, index: u32, generation: u64, pid: u32) {
        let me = self.clone();
        tokio::spawn(async move {
            let reason = match process::wait_foreign(pid).await {
                Ok(()) => "exited (adopted process: exit status unknown)".to_string(),
                Err(e) => format!("exited (adopted process, could not watch it: {e})"),
            };
            me.on_exit(
                &name,
                index,
                generation,
                ExitRecord {
                    at_ms: now_ms(),
                    code: None,
                    signal: None,
                    reason,
                },
            );
        });
    }

    pub(super) fn on_exit(&self, name: &str, index: u32, generation: u64, mut exit: ExitRecord) {
        {
            let mut t = self.lock();
            let closing = t.closing;
            let Some(app) = t.apps.get_mut(name) else {
                return;
            };
            let Some(pos) = app.position(index) else {
                return;
            };
            let inst = &mut app.instances[pos];
            if let Some(old) = inst
                .retiring
                .as_mut()
                .filter(|r| r.generation == generation)
            {
                // The old process of a reload ended; the reload task finishes the handover.
                old.exited = true;
                info!(app = %name, instance = index, pid = old.pid, code = exit.code, signal = exit.signal.as_deref(), "replaced process exited");
                drop(t);
                self.notify();
                return;
            }
            if inst.generation != generation {
                return;
            }
            let pgid = inst.pid;
            if let Some(pid) = pgid {
                self.shared.lease.forget(pid);
            }
            info!(app = %name, instance = index, pid = pgid, code = exit.code, signal = exit.signal.as_deref(), reason = %exit.reason, "exited");
            self.shared.events.emit(
                name,
                Some(index),
                pgid,
                "exited",
                json!({ "code": exit.code, "signal": exit.signal, "reason": exit.reason }),
            );
            inst.pid = None;
            inst.signature = None;
            if inst.status == Status::Stopping {
                exit.reason = inst
                    .restart_reason
                    .clone()
                    .unwrap_or_else(|| "stopped".into());
                inst.record_exit(exit);
                if pgid.is_none_or(|g| !process::group_alive(g)) {
                    self.finish_stopping(app, pos);
                }
            } else {
                // What the leader left behind in its group must not keep ports or files.
                if let Some(g) = pgid {
                    let _ = process::signal_group(g, Signal::SIGKILL);
                }
                if closing {
                    inst.record_exit(exit);
                    inst.status = Status::Stopped;
                } else {
                    self.after_exit(app, pos, exit, false);
                }
            }
        }
        self.notify();
    }

    /// The group of a stopping instance is empty: it is stopped, or — when herd stopped it to
    /// restart it — handed to the restart policy.
    fn finish_stopping(&self, app: &mut App, pos: usize) {
        let inst = &mut app.instances[pos];
        match inst.restart_reason.take() {
            Some(_) => {
                let exit = inst.exits.pop_back().unwrap_or(ExitRecord {
                    at_ms: now_ms(),
                    code: None,
                    signal: None,
                    reason: "restarted by herd".into(),
                });
                self.after_exit(app, pos, exit, true);
            }
            None => {
                inst.status = Status::Stopped;
                info!(app = %app.spec.name, instance = inst.index, "stopped");
                self.emit(&app.spec.name, inst, "stopped", json!({}));
            }
        }
    }

    /// Applies the restart policy to an exit (or a failed spawn). `forced`: herd stopped the
    /// process itself (unhealthy, memory limit), so it restarts whatever the policy.
    pub(super) fn after_exit(&self, app: &mut App, pos: usize, exit: ExitRecord, forced: bool) {
        let now = now_ms();
        let decision = decide_after_exit(&app.spec, &mut app.instances[pos], &exit, forced, now);
        let inst = &mut app.instances[pos];
        inst.record_exit(exit);
        inst.health = Health::Unknown;
        let name = &app.spec.name;
        match decision {
            AfterExit::Stop => {
                inst.status = Status::Stopped;
                info!(app = %name, instance = inst.index, "stopped by policy");
                self.emit(name, inst, "stopped", json!({ "by": "policy" }));
            }
            AfterExit::Crash => {
                inst.status = Status::Crashed;
                warn!(app = %name, instance = inst.index, restarts = inst.restarts, window_s = app.spec.restart_window_s, "crashed: too many restarts; `herd restart` clears it");
                self.emit(
                    name,
                    inst,
                    "crashed",
                    json!({ "restarts": inst.restarts, "max_restarts": app.spec.max_restarts, "window_s": app.spec.restart_window_s }),
                );
            }
            AfterExit::Restart(backoff) => {
                inst.status = Status::Backoff;
                let backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                // A crash loop (even at 0 ms backoff) waits for the start-rate limit.
                let delay = backoff + inst.start_limit.wait(now.saturating_add(backoff_ms));
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                inst.next_start_ms = Some(now.saturating_add(delay_ms));
                info!(app = %name, instance = inst.index, delay_ms, restart = inst.restarts, "restarting after delay");
                self.emit(
                    name,
                    inst,
                    "restarting",
                    json!({ "delay_ms": delay_ms, "restart": inst.restarts }),
                );
                self.schedule_start(name.clone(), inst.index, inst.generation, delay);
            }
        }
    }

    pub(super) fn schedule_start(
        &self,
        name: String,
        index: u32,
        generation: u64,
        delay: Duration,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            me.backoff_elapsed(&name, index, generation);
        });
    }

    fn backoff_elapsed(&self, name: &str, index: u32, generation: u64) {
        {
            let mut t = self.lock();
            if t.closing {
                return;
            }
            let Some(app) = t.apps.get_mut(name) else {
                return;
            };
            let Some(pos) = app.position(index) else {
                return;
            };
            let inst = &app.instances[pos];
            if inst.generation != generation || inst.status != Status::Backoff {
                return;
            }
            self.spawn_instance(app, pos);
        }
        self.notify();
    }

    /// Sends the stop signal to a live instance's group; anything else just stops (a pending
    /// start or backoff is cancelled).
    pub(super) fn begin_stop(
        &self,
        app: &mut App,
        pos: usize,
        timeout: Option<Duration>,
    ) -> Option<StopJob> {
        let explicit = timeout.is_some();
        // A user's `--timeout` may be anything up to u64::MAX seconds: clamped, so the
        // deadline below cannot overflow the clock and panic the stop task.
        let timeout = limits::clamp(timeout.unwrap_or(app.spec.stop_timeout()));
        let kill_at = limits::deadline(tokio::time::Instant::now(), timeout);
        let signal = app.spec.signal();
        let inst = &mut app.instances[pos];
        match (inst.status, inst.pid) {
            (Status::Running | Status::Starting, Some(pid)) => {
                inst.status = Status::Stopping;
                inst.kill_at = Some(kill_at);
                info!(app = %app.spec.name, instance = inst.index, pid, signal = signal.as_str(), "stopping");
                self.emit(
                    &app.spec.name,
                    inst,
                    "stopping",
                    json!({ "signal": signal.as_str(), "timeout_s": timeout.as_secs_f64() }),
                );
                if let Err(e) = process::signal_group(pid, signal) {
                    warn!(app = %app.spec.name, instance = inst.index, pid, error = %e, "stop signal failed");
                }
                Some(StopJob {
                    name: app.spec.name.clone(),
                    index: inst.index,
                    generation: inst.generation,
                    pgid: pid,
                    timeout,
                })
            }
            (Status::Stopping, _) => {
                // A stop already under way (perhaps with a huge timeout): an explicit
                // shorter one brings its SIGKILL forward.
                if explicit && inst.kill_at.is_none_or(|k| kill_at < k) {
                    info!(app = %app.spec.name, instance = inst.index, timeout_s = timeout.as_secs_f64(), "stop already under way; its deadline is brought forward");
                    inst.kill_at = Some(kill_at);
                }
                None
            }
            _ => {
                inst.generation = next_generation();
                inst.next_start_ms = None;
                inst.pid = None;
                inst.restart_reason = None;
                if inst.status != Status::Stopped {
                    inst.status = Status::Stopped;
                    self.emit(&app.spec.name, inst, "stopped", json!({}));
                }
                None
            }
        }
    }

    /// Stops a live process to restart it (unhealthy, over its memory limit).
    pub(super) fn force_restart(
        &self,
        app: &mut App,
        pos: usize,
        reason: String,
    ) -> Option<StopJob> {
        let inst = &mut app.instances[pos];
        if !matches!(inst.status, Status::Running | Status::Starting) || inst.pid.is_none() {
            return None;
        }
        warn!(app = %app.spec.name, instance = inst.index, pid = inst.pid, %reason, "restarting instance");
        inst.restart_reason = Some(reason);
        self.begin_stop(app, pos, None)
    }

    pub(super) fn run_stop_jobs(&self, jobs: Vec<StopJob>) {
        for job in jobs {
            let me = self.clone();
            tokio::spawn(async move { me.finish_stop(job).await });
        }
    }

    /// Polls (2 ms, doubling to 50 ms) until the group is empty; SIGKILLs it at the deadline.
    async fn finish_stop(&self, job: StopJob) {
        let mut kill_at = limits::deadline(tokio::time::Instant::now(), job.timeout);
        let mut killed = false;
        let mut poll = Duration::from_millis(2);
        loop {
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(50));
            {
                let mut t = self.lock();
                let Some(app) = t.apps.get_mut(&job.name) else {
                    return;
                };
                let Some(pos) = app.position(job.index) else {
                    return;
                };
                let inst = &mut app.instances[pos];
                if inst.generation != job.generation || inst.status != Status::Stopping {
                    return;
                }
                if let Some(k) = inst.kill_at {
                    kill_at = kill_at.min(k);
                }
                let leader_gone = inst.pid.is_none();
                let give_up = killed
                    && tokio::time::Instant::now()
                        >= limits::deadline(kill_at, Duration::from_secs(10));
                if (leader_gone && !process::group_alive(job.pgid)) || give_up {
                    if give_up {
                        warn!(app = %job.name, instance = job.index, pgid = job.pgid, "processes survive SIGKILL (uninterruptible?); marking stopped");
                        inst.pid = None;
                    }
                    self.finish_stopping(app, pos);
                    drop(t);
                    self.notify();
                    return;
                }
            }
            if !killed && tokio::time::Instant::now() >= kill_at {
                warn!(app = %job.name, instance = job.index, pgid = job.pgid, timeout_s = job.timeout.as_secs(), "stop timeout: SIGKILL to the process group");
                self.shared.events.emit(
                    &job.name,
                    Some(job.index),
                    Some(job.pgid),
                    "killed",
                    json!({ "after_s": job.timeout.as_secs_f64() }),
                );
                let _ = process::signal_group(job.pgid, Signal::SIGKILL);
                killed = true;
            }
        }
    }
}
