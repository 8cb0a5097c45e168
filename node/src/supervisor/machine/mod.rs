//! The instance state machine. `step` takes an instance, its app's spec, one input and the
//! moment (`Ctx`), changes the instance and returns what must happen in the world: spawn a
//! process, signal a group, watch a group until it is empty, a timer, an event. It reads no
//! clock, touches no process and takes no lock: the runtime (`runtime.rs`) fences inputs by
//! spawn_id and performs the effects outside the table lock. Every assignment of an
//! instance's `status` is here. A transition's event and log line are one `Fact` effect; the
//! few log lines that record no event are written here (they describe the step and change
//! nothing).

use super::facts::Fact;
use super::instance::{ExitRecord, Instance, ProcMetrics, Retiring, Status};
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
    /// The instance's process `pid` ended; `group_alive`: other processes of its group remain.
    Exited {
        pid: Option<u32>,
        exit: ExitRecord,
        group_alive: bool,
    },
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
    /// The process sent `READY=1` on its notify socket (`ready = "notify"`).
    Ready,
    /// The process sent `STATUS=` (already bounded and stripped of control characters).
    Status(String),
    /// The process sent `WATCHDOG=1`.
    WatchdogPing,
    /// The watchdog's deadline may have passed (the runtime's timer; the machine checks).
    WatchdogElapsed,
    /// The process named `pid` as its main process with `MAINPID=` (the listener checked it
    /// is in the instance's group and runs as the app's user).
    MainPid { pid: u32, signature: Option<u64> },
}

/// The world as `step` may see it.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Wall time: what exits and start times record.
    pub now_ms: u64,
    /// Boot time (`clock::boot_ms`): what durations are measured on (the crash window, the
    /// start limit, a backoff's end, uptime), so a stepped wall clock changes none of them.
    pub boot_ms: u64,
    pub now: Instant,
    /// A spawn_id no instance has had: taken when a step starts something new.
    pub fresh_spawn_id: u64,
    /// The supervisor is shutting down: exits are not restarted.
    pub closing: bool,
    /// The instance is a cluster singleton and runs only under the master's lease.
    pub singleton: bool,
    pub lease_valid: bool,
    /// One run of a job: a slot found without its process after a daemon restart stays
    /// stopped (the jobs module judges the run); it is never started again here.
    pub one_shot: bool,
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
        spawn_id: u64,
    },
    SignalGroup {
        pgid: u32,
        signal: Signal,
    },
    /// Watch a stopping group until it is empty (`GroupEmpty`); `StopDeadline` at `kill_at`.
    WatchGroup {
        pgid: u32,
        spawn_id: u64,
        kill_at: Instant,
        timeout: Duration,
    },
    /// `BackoffElapsed` after `after`.
    Timer {
        after: Duration,
        spawn_id: u64,
    },
    /// `DependenciesReady` once the app's dependencies are ready.
    WaitDependencies {
        spawn_id: u64,
    },
    StartProbes {
        spawn_id: u64,
        pid: u32,
    },
    /// Watch the process the app named with `MAINPID=` for its exit (`pgid`: its group).
    WatchMain {
        spawn_id: u64,
        pgid: u32,
        pid: u32,
    },
    /// Watch a process adopted from a previous daemon for its exit.
    WatchAdopted {
        spawn_id: u64,
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
            Input::Exited {
                pid,
                exit,
                group_alive,
            } => self.exited(pid, exit, group_alive),
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
                self.inst.started_boot_ms.get_or_insert(self.ctx.boot_ms);
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
            Input::Ready => self.ready(),
            Input::Status(text) => self.status_text(text),
            Input::WatchdogPing => self.watchdog_ping(),
            Input::WatchdogElapsed => self.watchdog_elapsed(),
            Input::MainPid { pid, signature } => self.main_pid(pid, signature),
        }
    }
}

mod handover;
mod notified;
mod running;

#[cfg(test)]
mod tests;
