//! The instance state machine. `step` takes an instance, its app's spec, one input and the
//! moment (`Ctx`), changes the instance and returns what must happen in the world: spawn a
//! process, signal a group, watch a group until it is empty, a timer, an event. It reads no
//! clock, touches no process and takes no lock: the runtime (`runtime.rs`) fences inputs by
//! generation and performs the effects outside the table lock. Every assignment of an
//! instance's `status` is here. A transition's event and log line are one `Fact` effect; the
//! few log lines that record no event are written here (they describe the step and change
//! nothing).

use super::facts::{Fact, ReloadStep};
use super::instance::{
    AfterExit, ExitRecord, Health, Instance, ProcMetrics, Retiring, Status, decide_after_exit,
};
use super::limits;
use super::spec::AppSpec;
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// What happened to an instance, or what is asked of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A user's start (or a restore) of an instance that runs nothing. `waiting`: the
    /// dependencies that are not ready yet.
    Start { waiting: Vec<String> },
    /// The dependencies an instance waited for are ready.
    DependenciesReady,
    /// The master's lease is valid: a singleton that waited for it may start.
    LeaseGranted,
    /// The backoff delay after an exit has passed.
    BackoffElapsed,
    /// The process asked for by `Effect::Spawn` runs.
    SpawnSucceeded {
        pid: Option<u32>,
        signature: Option<u64>,
    },
    /// The process asked for by `Effect::Spawn` could not be started.
    SpawnFailed { error: String },
    /// The instance's process ended; `group_alive`: other processes of its group remain.
    Exited { exit: ExitRecord, group_alive: bool },
    /// The old process of a reload (`retiring`) ended.
    ReplacedExited { exit: ExitRecord },
    /// A user (or herd) stops the instance; an explicit `timeout` may bring a SIGKILL forward.
    StopRequested { timeout: Option<Duration> },
    /// The group of a stopping instance is empty.
    GroupEmpty,
    /// A stopping group outlived its deadline.
    StopDeadline { pgid: u32, after: Duration },
    /// A stopping group outlived SIGKILL.
    GaveUp { pgid: u32 },
    /// A health probe answered; `counts`: the grace period is over.
    Probe {
        result: Result<(), String>,
        counts: bool,
    },
    /// CPU and memory of the instance's tree (the memory limit is checked against it).
    Sampled(ProcMetrics),
    /// The daemon came back: `alive` says the recorded process is provably still ours.
    Restored {
        alive: bool,
        retiring_alive: bool,
        wanted: bool,
        waiting: Vec<String>,
    },
    /// A leader of this home found on the host belongs in this slot.
    Reclaimed { pid: u32, signature: u64 },
    /// Reload: start a new process beside the live one.
    Replace,
    /// Reload: the new process failed; give the slot back to `old` when it still runs.
    RollBack { old: Retiring, old_alive: bool },
    /// Reload: the old process `pid` was stopped.
    Retired { pid: u32 },
    /// Shutdown: the old process of an unfinished reload is killed.
    DropReplaced,
}

/// The world as `step` may see it.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now_ms: u64,
    pub now: Instant,
    /// A generation no instance has had: taken when a step starts something new.
    pub fresh_generation: u64,
    /// The supervisor is shutting down: exits are not restarted.
    pub closing: bool,
    /// The instance is a cluster singleton and runs only under the master's lease.
    pub singleton: bool,
    pub lease_valid: bool,
}

/// What the runtime does after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Record a fact (its log line and its event) for the instance, with this pid.
    Fact {
        pid: Option<u32>,
        fact: Fact,
    },
    /// Fork/exec the instance's process; answer with `SpawnSucceeded` or `SpawnFailed`.
    Spawn {
        generation: u64,
    },
    SignalGroup {
        pgid: u32,
        signal: Signal,
    },
    /// Watch a stopping group until it is empty (`GroupEmpty`); `StopDeadline` at `kill_at`.
    WatchGroup {
        pgid: u32,
        generation: u64,
        kill_at: Instant,
        timeout: Duration,
    },
    /// `BackoffElapsed` after `after`.
    Timer {
        after: Duration,
        generation: u64,
    },
    /// `DependenciesReady` once the app's dependencies are ready.
    WaitDependencies {
        generation: u64,
    },
    StartProbes {
        generation: u64,
        pid: u32,
    },
    /// Watch a process adopted from a previous daemon for its exit.
    WatchAdopted {
        generation: u64,
        pid: u32,
    },
    GuardLease {
        pid: u32,
        signature: u64,
    },
    ForgetLease {
        pid: u32,
    },
    /// A line in the instance's log (why nothing ran).
    NoteInLog(String),
    /// Stop a group herd no longer tracks as an instance (stop signal, SIGKILL after timeout).
    StopUntracked {
        pgid: u32,
        signal: Signal,
        timeout: Duration,
    },
}

/// Applies `input` to `inst` at `ctx`; returns the effects in the order they must happen.
pub fn step(inst: &mut Instance, spec: &AppSpec, input: Input, ctx: &Ctx) -> Vec<Effect> {
    let mut s = Step {
        inst,
        spec,
        ctx,
        out: Vec::new(),
    };
    s.input(input);
    s.out
}

struct Step<'a> {
    inst: &'a mut Instance,
    spec: &'a AppSpec,
    ctx: &'a Ctx,
    out: Vec<Effect>,
}

fn fact(out: &mut Vec<Effect>, pid: Option<u32>, fact: Fact) {
    out.push(Effect::Fact { pid, fact });
}

impl Step<'_> {
    fn input(&mut self, input: Input) {
        match input {
            Input::Start { waiting } => {
                if self.inst.spawning || (self.inst.status.has_process() && self.inst.pid.is_some())
                {
                    return;
                }
                self.inst.reset_history();
                self.start(waiting);
            }
            Input::DependenciesReady | Input::LeaseGranted => {
                if self.inst.status == Status::Starting
                    && self.inst.pid.is_none()
                    && !self.inst.spawning
                {
                    self.launch();
                }
            }
            Input::BackoffElapsed => {
                if !self.ctx.closing && self.inst.status == Status::Backoff {
                    self.launch();
                }
            }
            Input::SpawnSucceeded { pid, signature } => self.spawned(pid, signature),
            Input::SpawnFailed { error } => self.spawn_failed(error),
            Input::Exited { exit, group_alive } => self.exited(exit, group_alive),
            Input::ReplacedExited { exit } => {
                if let Some(old) = self.inst.retiring.as_mut() {
                    old.exited = true;
                    info!(app = %self.spec.name, instance = self.inst.index, pid = old.pid, code = exit.code, signal = exit.signal.as_deref(), "replaced process exited");
                }
            }
            Input::StopRequested { timeout } => self.stop(timeout),
            Input::GroupEmpty => {
                if self.inst.status == Status::Stopping
                    && self.inst.pid.is_none()
                    && !self.inst.spawning
                {
                    self.finish_stopping();
                }
            }
            Input::StopDeadline { pgid, after } => {
                if self.inst.status == Status::Stopping {
                    fact(
                        &mut self.out,
                        Some(pgid),
                        Fact::Killed {
                            after_s: after.as_secs_f64(),
                        },
                    );
                    self.out.push(Effect::SignalGroup {
                        pgid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
            Input::GaveUp { pgid } => {
                if self.inst.status == Status::Stopping {
                    warn!(app = %self.spec.name, instance = self.inst.index, pgid, "processes survive SIGKILL (uninterruptible?); marking stopped");
                    self.inst.pid = None;
                    self.finish_stopping();
                }
            }
            Input::Probe { result, counts } => self.probed(result, counts),
            Input::Sampled(m) => {
                self.inst.metrics = Some(m);
                if let Some(limit) = self.spec.max_memory_mb {
                    let rss_mb = m.rss_bytes / (1024 * 1024);
                    if rss_mb > limit {
                        fact(
                            &mut self.out,
                            self.inst.pid,
                            Fact::MemoryLimit {
                                rss_mb,
                                limit_mb: limit,
                            },
                        );
                        let reason = format!("memory limit: {rss_mb} MiB > max_memory_mb {limit}");
                        self.force_restart(reason);
                    }
                }
            }
            Input::Restored {
                alive,
                retiring_alive,
                wanted,
                waiting,
            } => self.restored(alive, retiring_alive, wanted, waiting),
            Input::Reclaimed { pid, signature } => {
                info!(app = %self.spec.name, instance = self.inst.index, pid, "found the instance's process unrecorded; adopting it");
                self.inst.pid = Some(pid);
                self.inst.signature = Some(signature);
                self.inst.status = Status::Running;
                self.inst.started_at_ms.get_or_insert(self.ctx.now_ms);
            }
            Input::Replace => self.replace(),
            Input::RollBack { old, old_alive } => self.roll_back(old, old_alive),
            Input::Retired { pid } => {
                if self.inst.retiring.as_ref().is_some_and(|r| r.pid == pid) {
                    self.inst.retiring = None;
                }
            }
            Input::DropReplaced => {
                if let Some(old) = self.inst.retiring.take() {
                    self.out.push(Effect::SignalGroup {
                        pgid: old.pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
        }
    }

    /// Starts now, or once the dependencies in `waiting` are ready.
    fn start(&mut self, waiting: Vec<String>) {
        if waiting.is_empty() {
            self.launch();
            return;
        }
        let inst = &mut *self.inst;
        inst.generation = self.ctx.fresh_generation;
        inst.status = Status::Starting;
        inst.pid = None;
        let generation = inst.generation;
        fact(
            &mut self.out,
            None,
            Fact::Waiting {
                waiting_for: waiting,
            },
        );
        self.out.push(Effect::WaitDependencies { generation });
    }

    /// Asks for a process (a singleton without the master's lease waits for it instead). The
    /// instance is `starting` with a fresh generation and no pid until the spawn answers.
    fn launch(&mut self) {
        let inst = &mut *self.inst;
        inst.generation = self.ctx.fresh_generation;
        inst.next_start_ms = None;
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
        inst.started_at_ms = Some(self.ctx.now_ms);
        inst.start_limit.record(self.ctx.now_ms);
        inst.spawning = true;
        let generation = inst.generation;
        self.out.push(Effect::Spawn { generation });
    }

    fn spawned(&mut self, pid: Option<u32>, signature: Option<u64>) {
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
                self.inst.status = if self.spec.health.is_some() {
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
                            generation: self.inst.generation,
                            kill_at,
                            timeout: kill_at.saturating_duration_since(self.ctx.now),
                        });
                    }
                    None => self.finish_stopping(),
                }
            }
        }
    }

    fn started(&mut self, pid: Option<u32>, signature: Option<u64>, probes: bool) {
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
                generation: self.inst.generation,
                pid,
            });
        }
    }

    fn spawn_failed(&mut self, error: String) {
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

    fn exited(&mut self, mut exit: ExitRecord, group_alive: bool) {
        // Without a pid this exit was already handled (or the process was given up on).
        let Some(pgid) = self.inst.pid else {
            return;
        };
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
    fn finish_stopping(&mut self) {
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
    fn after_exit(&mut self, exit: ExitRecord, forced: bool) {
        let now = self.ctx.now_ms;
        let decision = decide_after_exit(self.spec, self.inst, &exit, forced, now);
        let inst = &mut *self.inst;
        inst.record_exit(exit);
        inst.health = Health::Unknown;
        match decision {
            AfterExit::Stop => {
                inst.status = Status::Stopped;
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
                inst.next_start_ms = Some(now.saturating_add(delay_ms));
                let (pid, restarts, generation) = (inst.pid, inst.restarts, inst.generation);
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
                    generation,
                });
            }
        }
    }

    /// Sends the stop signal to a live instance's group; anything else just stops (a pending
    /// start or backoff is cancelled).
    fn stop(&mut self, timeout: Option<Duration>) {
        let explicit = timeout.is_some();
        // A user's `--timeout` may be anything up to u64::MAX seconds: clamped, so the
        // deadline below cannot overflow the clock and panic the stop task.
        let timeout = limits::clamp(timeout.unwrap_or(self.spec.stop_timeout()));
        let kill_at = limits::deadline(self.ctx.now, timeout);
        let signal = self.spec.signal();
        let name = &self.spec.name;
        let inst = &mut *self.inst;
        match (inst.status, inst.pid) {
            (Status::Running | Status::Starting, Some(pid)) => {
                inst.status = Status::Stopping;
                inst.kill_at = Some(kill_at);
                let generation = inst.generation;
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
                    generation,
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
                inst.generation = self.ctx.fresh_generation;
                inst.next_start_ms = None;
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
    fn force_restart(&mut self, reason: String) {
        let inst = &mut *self.inst;
        if !matches!(inst.status, Status::Running | Status::Starting) || inst.pid.is_none() {
            return;
        }
        warn!(app = %self.spec.name, instance = inst.index, pid = inst.pid, %reason, "restarting instance");
        inst.restart_reason = Some(reason);
        self.stop(None);
    }

    fn probed(&mut self, result: Result<(), String>, counts: bool) {
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
                if self.inst.status == Status::Starting {
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

    fn restored(&mut self, alive: bool, retiring_alive: bool, wanted: bool, waiting: Vec<String>) {
        let name = &self.spec.name;
        let inst = &mut *self.inst;
        inst.generation = self.ctx.fresh_generation;
        inst.spawning = false;
        if let Some(old) = inst.retiring.take()
            && retiring_alive
        {
            // A reload was cut short by the daemon's death: finish retiring the old process.
            info!(app = %name, instance = inst.index, pid = old.pid, "stopping the process an interrupted reload replaced");
            self.out.push(Effect::StopUntracked {
                pgid: old.pid,
                signal: self.spec.signal(),
                timeout: self.spec.stop_timeout(),
            });
        }
        if let (true, Some(pid)) = (alive, inst.pid) {
            if inst.status == Status::Stopping {
                inst.status = Status::Running;
            }
            let generation = inst.generation;
            let signature = inst.signature;
            fact(&mut self.out, Some(pid), Fact::Adopted);
            if let (true, Some(signature)) = (self.ctx.singleton, signature) {
                // Its lease died with the old daemon: the keeper stops it unless the master
                // renews the lease first.
                self.out.push(Effect::GuardLease { pid, signature });
            }
            self.out.push(Effect::WatchAdopted { generation, pid });
            if self.spec.health.is_some() {
                self.out.push(Effect::StartProbes { generation, pid });
            }
            if !wanted {
                self.stop(None);
            }
            return;
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
            return;
        }
        if self.ctx.singleton {
            // Only the agent, in sync with the master, may start it again (see `lease`).
            inst.status = Status::Starting;
            inst.next_start_ms = None;
            info!(app = %name, instance = inst.index, "waiting for the master's lease");
            return;
        }
        match was {
            Status::Running | Status::Starting if had_process => {
                fact(&mut self.out, None, Fact::DiedWhileDown);
                let exit = ExitRecord {
                    at_ms: self.ctx.now_ms,
                    code: None,
                    signal: None,
                    reason: "died while the daemon was down".into(),
                };
                self.after_exit(exit, false);
            }
            Status::Backoff => {
                let delay = inst
                    .next_start_ms
                    .map(|t| t.saturating_sub(self.ctx.now_ms))
                    .unwrap_or(0);
                let generation = inst.generation;
                self.out.push(Effect::Timer {
                    after: Duration::from_millis(delay),
                    generation,
                });
            }
            Status::Crashed => {}
            _ => {
                inst.reset_history();
                self.start(waiting);
            }
        }
    }

    /// Reload: a new process for a live slot (the old one becomes `retiring`); a slot that
    /// runs nothing is simply started.
    fn replace(&mut self) {
        let inst = &mut *self.inst;
        match (inst.status, inst.pid) {
            (Status::Running | Status::Starting, Some(pid)) => {
                let old = Retiring {
                    pid,
                    signature: inst.signature,
                    started_at_ms: inst.started_at_ms,
                    generation: inst.generation,
                    exited: false,
                };
                inst.retiring = Some(old);
                fact(
                    &mut self.out,
                    Some(pid),
                    Fact::Reload(ReloadStep::StartNew { old_pid: pid }),
                );
                self.launch();
            }
            (Status::Stopped | Status::Crashed, _) => {
                inst.reset_history();
                self.launch();
            }
            _ => {}
        }
    }

    /// Reload: the new process was stopped; the old one takes the slot back if it still runs.
    fn roll_back(&mut self, old: Retiring, old_alive: bool) {
        let still_there = self.inst.retiring.take().is_some_and(|r| !r.exited);
        if still_there && old_alive {
            let inst = &mut *self.inst;
            inst.pid = Some(old.pid);
            inst.signature = old.signature;
            inst.started_at_ms = old.started_at_ms;
            inst.generation = old.generation;
            inst.status = Status::Running;
            inst.health = Health::Unknown;
            inst.next_start_ms = None;
            inst.spawning = false;
            if self.spec.health.is_some() {
                self.out.push(Effect::StartProbes {
                    generation: old.generation,
                    pid: old.pid,
                });
            }
        } else {
            // The old process is gone too: start the slot afresh.
            self.launch();
        }
        fact(
            &mut self.out,
            self.inst.pid,
            Fact::Reload(ReloadStep::RolledBack),
        );
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
