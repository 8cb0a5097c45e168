//! The transitions of an instance's own process: start (or wait for dependencies or the
//! lease), spawn, exit, stop, and the restart policy after an exit.

use super::{Effect, Step, fact};
use crate::supervisor::facts::Fact;
use crate::supervisor::instance::{AfterExit, ExitRecord, Health, Status, decide_after_exit};
use crate::supervisor::limits;
use nix::sys::signal::Signal;
use std::time::Duration;
use tracing::{info, warn};

impl Step<'_> {
    /// Starts now, or once the dependencies in `waiting` are ready.
    pub(super) fn start(&mut self, waiting: Vec<String>) {
        self.inst.finished = false;
        if waiting.is_empty() {
            self.launch();
            return;
        }
        let inst = &mut *self.inst;
        inst.spawn_id = self.ctx.fresh_spawn_id;
        inst.status = Status::Starting;
        inst.pid = None;
        let spawn_id = inst.spawn_id;
        fact(
            &mut self.out,
            None,
            Fact::Waiting {
                waiting_for: waiting,
            },
        );
        self.out.push(Effect::WaitDependencies { spawn_id });
    }

    /// Asks for a process (a singleton without the master's lease waits for it instead). The
    /// instance is `starting` with a fresh spawn_id and no pid until the spawn answers.
    pub(super) fn launch(&mut self) {
        let inst = &mut *self.inst;
        inst.spawn_id = self.ctx.fresh_spawn_id;
        inst.next_start_boot_ms = None;
        inst.finished = false;
        inst.status = Status::Starting;
        inst.pid = None;
        inst.signature = None;
        if self.ctx.singleton && !self.ctx.lease_valid {
            // Not without the master's word: the master may already run it elsewhere. The
            // agent starts it again once in contact (see `managed::reconcile_cluster`).
            fact(&mut self.out, None, Fact::AwaitingLease);
            return;
        }
        inst.health = Health::Unknown;
        inst.probe_failures = 0;
        inst.last_probe_error = None;
        inst.restart_reason = None;
        inst.metrics = None;
        inst.status_text = None;
        inst.main_pid = None;
        inst.main_signature = None;
        inst.notified_ready = false;
        inst.watchdog_due = None;
        inst.started_at_ms = Some(self.ctx.now_ms);
        inst.started_boot_ms = Some(self.ctx.boot_ms);
        inst.start_limit.record(self.ctx.boot_ms);
        inst.spawning = true;
        let spawn_id = inst.spawn_id;
        self.out.push(Effect::Spawn { spawn_id });
    }

    pub(super) fn spawned(&mut self, pid: Option<u32>, signature: Option<u64>) {
        if !self.inst.spawning {
            // Nothing waits for this process: it must not run unsupervised.
            if let Some(pgid) = pid {
                self.out.push(Effect::SignalGroup {
                    pgid,
                    signal: Signal::SIGKILL,
                });
            }
            return;
        }
        self.inst.spawning = false;
        self.inst.pid = pid;
        self.inst.signature = signature;
        match self.inst.status {
            Status::Starting => {
                self.inst.status = if self.spec.health.is_some() || self.spec.notifies() {
                    Status::Starting
                } else {
                    Status::Running
                };
                self.started(pid, signature, true);
            }
            _ => {
                // A stop arrived while the process was being spawned: it is stopped now.
                self.started(pid, signature, false);
                match pid {
                    Some(pgid) => {
                        let kill_at = self.inst.kill_at.unwrap_or(self.ctx.now);
                        self.out.push(Effect::SignalGroup {
                            pgid,
                            signal: self.spec.signal(),
                        });
                        self.out.push(Effect::WatchGroup {
                            pgid,
                            spawn_id: self.inst.spawn_id,
                            kill_at,
                            timeout: kill_at.saturating_duration_since(self.ctx.now),
                        });
                    }
                    None => self.finish_stopping(),
                }
            }
        }
    }

    pub(super) fn started(&mut self, pid: Option<u32>, signature: Option<u64>, probes: bool) {
        if self.ctx.singleton
            && let (Some(pid), Some(signature)) = (pid, signature)
        {
            self.out.push(Effect::GuardLease { pid, signature });
        }
        let restarts = self.inst.restarts;
        fact(&mut self.out, pid, Fact::Started { restarts });
        if probes
            && self.spec.health.is_some()
            && let Some(pid) = pid
        {
            self.out.push(Effect::StartProbes {
                spawn_id: self.inst.spawn_id,
                pid,
            });
        }
    }

    pub(super) fn spawn_failed(&mut self, error: String) {
        if !self.inst.spawning {
            return;
        }
        self.inst.spawning = false;
        let reason = format!("spawn failed: cannot run `{}`: {error}", self.spec.command);
        self.out.push(Effect::NoteInLog(reason.clone()));
        self.inst.pid = None;
        self.inst.signature = None;
        fact(&mut self.out, None, Fact::SpawnFailed { error });
        let exit = ExitRecord {
            at_ms: self.ctx.now_ms,
            code: None,
            signal: None,
            reason,
        };
        if self.inst.status == Status::Stopping {
            self.inst.record_exit(exit);
            self.finish_stopping();
        } else {
            self.after_exit(exit, false);
        }
    }

    pub(super) fn exited(&mut self, pid: Option<u32>, mut exit: ExitRecord, group_alive: bool) {
        // Without a pid this exit was already handled (or the process was given up on).
        let Some(pgid) = self.inst.pid else {
            return;
        };
        if let (Some(main), Some(pid)) = (self.inst.main_pid, pid)
            && pid != main
        {
            // The leader (or an earlier main process) ended after the app named another
            // with `MAINPID=`: that one's exit ends the instance.
            info!(app = %self.spec.name, instance = self.inst.index, pid, main_pid = main, "process exited after handing over to its MAINPID");
            return;
        }
        self.inst.main_pid = None;
        self.inst.main_signature = None;
        self.inst.watchdog_due = None;
        self.out.push(Effect::ForgetLease { pid: pgid });
        fact(
            &mut self.out,
            Some(pgid),
            Fact::Exited {
                code: exit.code,
                signal: exit.signal.clone(),
                reason: exit.reason.clone(),
            },
        );
        self.inst.pid = None;
        self.inst.signature = None;
        if self.inst.status == Status::Stopping {
            exit.reason = self
                .inst
                .restart_reason
                .clone()
                .unwrap_or_else(|| "stopped".into());
            self.inst.record_exit(exit);
            if !group_alive {
                self.finish_stopping();
            }
            return;
        }
        // What the leader left behind in its group must not keep ports or files.
        self.out.push(Effect::SignalGroup {
            pgid,
            signal: Signal::SIGKILL,
        });
        if self.ctx.closing {
            self.inst.record_exit(exit);
            self.inst.status = Status::Stopped;
        } else {
            self.after_exit(exit, false);
        }
    }

    /// The group of a stopping instance is empty: it is stopped, or — when herd stopped it to
    /// restart it — handed to the restart policy.
    pub(super) fn finish_stopping(&mut self) {
        match self.inst.restart_reason.take() {
            Some(_) => {
                let exit = self.inst.exits.pop_back().unwrap_or(ExitRecord {
                    at_ms: self.ctx.now_ms,
                    code: None,
                    signal: None,
                    reason: "restarted by herd".into(),
                });
                self.after_exit(exit, true);
            }
            None => {
                self.inst.status = Status::Stopped;
                fact(&mut self.out, self.inst.pid, Fact::Stopped { by: None });
            }
        }
    }

    /// Applies the restart policy to an exit (or a failed spawn). `forced`: herd stopped the
    /// process itself (unhealthy, memory limit), so it restarts whatever the policy.
    pub(super) fn after_exit(&mut self, exit: ExitRecord, forced: bool) {
        // Durations on the boot clock: a wall clock stepped back an hour must not keep every
        // restart inside the crash window for that hour, nor one stepped forward empty it.
        let now = self.ctx.boot_ms;
        let decision = decide_after_exit(self.spec, self.inst, &exit, forced, now);
        let inst = &mut *self.inst;
        inst.record_exit(exit);
        inst.health = Health::Unknown;
        match decision {
            AfterExit::Stop => {
                inst.status = Status::Stopped;
                inst.finished = true;
                let pid = inst.pid;
                fact(&mut self.out, pid, Fact::Stopped { by: Some("policy") });
            }
            AfterExit::Crash => {
                inst.status = Status::Crashed;
                let (pid, restarts) = (inst.pid, inst.restarts);
                fact(
                    &mut self.out,
                    pid,
                    Fact::Crashed {
                        restarts,
                        max_restarts: self.spec.max_restarts,
                        window_s: self.spec.restart_window_s,
                    },
                );
            }
            AfterExit::Restart(backoff) => {
                inst.status = Status::Backoff;
                let backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                // A crash loop (even at 0 ms backoff) waits for the start-rate limit.
                let delay =
                    backoff.saturating_add(inst.start_limit.wait(now.saturating_add(backoff_ms)));
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                inst.next_start_boot_ms = Some(now.saturating_add(delay_ms));
                let (pid, restarts, spawn_id) = (inst.pid, inst.restarts, inst.spawn_id);
                fact(
                    &mut self.out,
                    pid,
                    Fact::Restarting {
                        delay_ms,
                        restart: restarts,
                    },
                );
                self.out.push(Effect::Timer {
                    after: delay,
                    spawn_id,
                });
            }
        }
    }

    /// Sends the stop signal to a live instance's group; anything else just stops (a pending
    /// start or backoff is cancelled).
    pub(super) fn stop(&mut self, timeout: Option<Duration>) {
        let explicit = timeout.is_some();
        // A user's `--timeout` may be anything up to u64::MAX seconds: clamped, so the
        // deadline below cannot overflow the clock and panic the stop task.
        let timeout = limits::clamp(timeout.unwrap_or(self.spec.stop_timeout()));
        let kill_at = limits::deadline(self.ctx.now, timeout);
        let signal = self.spec.signal();
        let name = &self.spec.name;
        let inst = &mut *self.inst;
        inst.watchdog_due = None;
        match (inst.status, inst.pid) {
            (Status::Running | Status::Starting, Some(pid)) => {
                inst.status = Status::Stopping;
                inst.kill_at = Some(kill_at);
                let spawn_id = inst.spawn_id;
                fact(
                    &mut self.out,
                    Some(pid),
                    Fact::Stopping {
                        signal: signal.as_str(),
                        timeout_s: timeout.as_secs_f64(),
                    },
                );
                self.out.push(Effect::SignalGroup { pgid: pid, signal });
                self.out.push(Effect::WatchGroup {
                    pgid: pid,
                    spawn_id,
                    kill_at,
                    timeout,
                });
            }
            (Status::Starting, None) if inst.spawning => {
                // The process is being spawned: the spawn's answer signals it.
                inst.status = Status::Stopping;
                inst.kill_at = Some(kill_at);
                fact(
                    &mut self.out,
                    None,
                    Fact::Stopping {
                        signal: signal.as_str(),
                        timeout_s: timeout.as_secs_f64(),
                    },
                );
            }
            (Status::Stopping, _) => {
                // A stop already under way (perhaps with a huge timeout): an explicit
                // shorter one brings its SIGKILL forward.
                if explicit && inst.kill_at.is_none_or(|k| kill_at < k) {
                    info!(app = %name, instance = inst.index, timeout_s = timeout.as_secs_f64(), "stop already under way; its deadline is brought forward");
                    inst.kill_at = Some(kill_at);
                }
            }
            _ => {
                inst.spawn_id = self.ctx.fresh_spawn_id;
                inst.next_start_boot_ms = None;
                inst.pid = None;
                inst.restart_reason = None;
                if inst.status != Status::Stopped {
                    inst.status = Status::Stopped;
                    fact(&mut self.out, None, Fact::Stopped { by: None });
                }
            }
        }
    }

    /// Stops a live process to restart it (unhealthy, over its memory limit).
    pub(super) fn force_restart(&mut self, reason: String) {
        let inst = &mut *self.inst;
        if !matches!(inst.status, Status::Running | Status::Starting) || inst.pid.is_none() {
            return;
        }
        warn!(app = %self.spec.name, instance = inst.index, pid = inst.pid, %reason, "restarting instance");
        inst.restart_reason = Some(reason);
        self.stop(None);
    }

    pub(super) fn probed(&mut self, result: Result<(), String>, counts: bool) {
        if !matches!(self.inst.status, Status::Starting | Status::Running) {
            return;
        }
        let failures = self
            .spec
            .health
            .as_ref()
            .map(|h| h.failures)
            .unwrap_or(u32::MAX);
        let inst = &mut *self.inst;
        let pid = inst.pid;
        match result {
            Ok(()) => {
                inst.probe_failures = 0;
                inst.last_probe_error = None;
                if inst.health != Health::Healthy {
                    let from = inst.health.as_str();
                    inst.health = Health::Healthy;
                    fact(
                        &mut self.out,
                        pid,
                        Fact::Health {
                            from,
                            to: "healthy",
                            error: None,
                        },
                    );
                }
                // With `ready = "notify"`, running also needs the app's own `READY=1`.
                if self.inst.status == Status::Starting
                    && (!self.spec.notifies() || self.inst.notified_ready)
                {
                    self.inst.status = Status::Running;
                }
            }
            Err(error) => {
                inst.last_probe_error = Some(error.clone());
                if !counts {
                    return;
                }
                inst.probe_failures = inst.probe_failures.saturating_add(1);
                if inst.health != Health::Unhealthy {
                    let from = inst.health.as_str();
                    inst.health = Health::Unhealthy;
                    fact(
                        &mut self.out,
                        pid,
                        Fact::Health {
                            from,
                            to: "unhealthy",
                            error: Some(error.clone()),
                        },
                    );
                }
                let count = self.inst.probe_failures;
                if count >= failures {
                    let reason = format!("unhealthy: {count} consecutive failed probes ({error})");
                    fact(
                        &mut self.out,
                        pid,
                        Fact::UnhealthyRestart {
                            failures: count,
                            error: error.clone(),
                        },
                    );
                    self.force_restart(reason);
                }
            }
        }
    }
}
