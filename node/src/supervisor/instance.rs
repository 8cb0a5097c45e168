//! One running copy of an app and its state machine:
//! `Starting | Running | Backoff | Stopping | Stopped | Crashed`.
//! The decision taken after an exit is a pure function, tested below without processes.

use super::backoff::StartLimit;
use super::spec::AppSpec;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Crashed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Backoff => "backoff",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Crashed => "crashed",
        }
    }

    /// A process of this instance may exist.
    pub fn has_process(self) -> bool {
        matches!(self, Status::Starting | Status::Running | Status::Stopping)
    }
}

/// What the health probe last said (`unknown` until a probe has answered, or without a probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// The old process of a slot while a reload hands its work to a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retiring {
    pub pid: u32,
    pub signature: Option<u64>,
    pub started_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_boot_ms: Option<u64>,
    #[serde(skip)]
    pub spawn_id: u64,
    #[serde(skip)]
    pub exited: bool,
}

/// CPU and memory of an instance's whole process tree at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcMetrics {
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    pub processes: u32,
    pub at_ms: u64,
}

/// How an instance's process ended (or why it never started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub at_ms: u64,
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub signal: Option<String>,
    pub reason: String,
}

impl ExitRecord {
    /// Anything but a clean `exit(0)` counts as a failure for `on-failure`.
    pub fn failed(&self) -> bool {
        self.code != Some(0)
    }
}

/// How many exits `inspect` keeps per instance.
pub const EXITS_KEPT: usize = 10;

/// One moment on both clocks, for what is shown: uptime and backoff on the boot clock.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub wall_ms: u64,
    pub boot_ms: u64,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall_ms: super::clock::now_ms(),
            boot_ms: super::clock::boot_ms(),
        }
    }
}

/// Everything herd knows about one instance; persisted as-is in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub index: u32,
    pub status: Status,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Start signature of `pid` (see `process::start_signature`).
    #[serde(default)]
    pub signature: Option<u64>,
    /// When the process started, on the wall clock (shown as a date).
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// The same moment on the boot clock (`clock::boot_ms`): uptime is measured from it, so a
    /// stepped wall clock does not change it. Dropped when `state.json` is from another boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_boot_ms: Option<u64>,
    /// Restarts done by the policy since the app was last (re)started by a user.
    #[serde(default)]
    pub restarts: u32,
    /// Times of the restarts inside the current window (for the crash limit), on the boot
    /// clock. Dropped when `state.json` is from another boot.
    #[serde(default)]
    pub recent_restarts: VecDeque<u64>,
    /// Restarts since the instance last stayed up for a whole window (the backoff exponent).
    #[serde(default)]
    pub backoff_step: u32,
    #[serde(default)]
    pub exits: VecDeque<ExitRecord>,
    /// When a backoff ends, on the boot clock. Dropped when `state.json` is from another
    /// boot (the backoff then ends at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_boot_ms: Option<u64>,
    #[serde(default)]
    pub health: Health,
    /// Consecutive failed probes that counted (after the grace period).
    #[serde(skip)]
    pub probe_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_error: Option<String>,
    /// Set while herd itself stops the process to restart it (unhealthy, memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_reason: Option<String>,
    /// The process being replaced during a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<Retiring>,
    #[serde(skip)]
    pub metrics: Option<ProcMetrics>,
    /// Unique to one spawn (or one cancellation), across all instances, so late timers and
    /// exit notices for an older process are ignored. Not persisted.
    #[serde(skip)]
    pub spawn_id: u64,
    /// While stopping: when the group gets SIGKILL. A later stop with a shorter explicit
    /// timeout brings it forward. Not persisted.
    #[serde(skip)]
    pub kill_at: Option<tokio::time::Instant>,
    /// A spawn was asked for (`machine::Effect::Spawn`) and has not answered yet: the
    /// instance is `starting` (or `stopping`) without a pid. Not persisted.
    #[serde(skip)]
    pub spawning: bool,
    /// Every spawn takes from it; a crash loop waits for it (see `StartLimit`).
    #[serde(skip)]
    pub start_limit: StartLimit,
    /// `STATUS=` the process last sent (`ready = "notify"`), sanitized. Not persisted.
    #[serde(skip)]
    pub status_text: Option<String>,
    /// The process the app named with `MAINPID=` (in the group `pid` leads): its exit, not
    /// the leader's, ends the instance. `pid` stays the group's id, which signals go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_signature: Option<u64>,
    /// The process sent `READY=1` (`ready = "notify"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notified_ready: bool,
    /// The process ended and the restart policy let it be (`restart = "never"`, or
    /// `"on-failure"` after a clean exit): a daemon coming back leaves it stopped, as the
    /// daemon that died would have. Cleared by the next start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    /// When the watchdog restarts the instance unless `WATCHDOG=1` comes first (armed at
    /// `READY=1`, as systemd does). Not persisted: an adopted instance gets a full period.
    #[serde(skip)]
    pub watchdog_due: Option<tokio::time::Instant>,
}

impl Instance {
    pub fn new(index: u32) -> Self {
        Self {
            index,
            status: Status::Stopped,
            pid: None,
            signature: None,
            started_at_ms: None,
            started_boot_ms: None,
            restarts: 0,
            recent_restarts: VecDeque::new(),
            backoff_step: 0,
            exits: VecDeque::new(),
            next_start_boot_ms: None,
            health: Health::Unknown,
            probe_failures: 0,
            last_probe_error: None,
            restart_reason: None,
            retiring: None,
            metrics: None,
            spawn_id: 0,
            kill_at: None,
            spawning: false,
            start_limit: StartLimit::default(),
            status_text: None,
            main_pid: None,
            finished: false,
            main_signature: None,
            notified_ready: false,
            watchdog_due: None,
        }
    }

    pub fn record_exit(&mut self, exit: ExitRecord) {
        if self.exits.len() == EXITS_KEPT {
            self.exits.pop_front();
        }
        self.exits.push_back(exit);
    }

    /// The process that stands for the instance: the one named by `MAINPID=`, else the
    /// group's leader. None while the instance has no process.
    pub fn main_process(&self) -> Option<u32> {
        self.pid.and(self.main_pid.or(self.pid))
    }

    pub fn last_exit(&self) -> Option<&ExitRecord> {
        self.exits.back()
    }

    /// A user's start or restart: forget the crash history.
    pub fn reset_history(&mut self) {
        self.restarts = 0;
        self.recent_restarts.clear();
        self.backoff_step = 0;
        self.next_start_boot_ms = None;
    }

    /// Seconds since the process started: on the boot clock, or (a start recorded by a herd
    /// without it, or in another boot) the wall clock.
    pub fn uptime_s(&self, now: Now) -> Option<u64> {
        if !self.status.has_process() {
            return None;
        }
        self.age_ms(now).map(|ms| ms / 1000)
    }

    /// Milliseconds since the recorded start: on the boot clock when the start is recorded on
    /// it, else on the wall clock.
    pub fn age_ms(&self, now: Now) -> Option<u64> {
        match self.started_boot_ms {
            Some(t) => Some(now.boot_ms.saturating_sub(t)),
            None => self.started_at_ms.map(|t| now.wall_ms.saturating_sub(t)),
        }
    }

    /// How long until the backoff ends, if the instance is in one.
    pub fn next_start_in_ms(&self, now: Now) -> Option<u64> {
        self.next_start_boot_ms
            .map(|t| t.saturating_sub(now.boot_ms))
    }

    /// `state.json` was written in another boot (or by a herd that did not record the boot):
    /// boot-clock times in it mean nothing now. Forgets them (the crash window starts
    /// empty, uptime falls back to the wall clock, a backoff ends at once).
    pub fn forget_boot_times(&mut self) {
        self.started_boot_ms = None;
        self.recent_restarts.clear();
        self.next_start_boot_ms = None;
        if let Some(r) = &mut self.retiring {
            r.started_boot_ms = None;
        }
    }
}

/// What to do after a process ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Leave it stopped (the policy does not restart this exit).
    Stop,
    /// Too many restarts inside the window: give up until a user restarts it.
    Crash,
    Restart(Duration),
}

/// Applies the restart policy, `stop_exit_codes`, crash limit and backoff to an exit at
/// `now_ms`, updating the instance's restart bookkeeping when it decides to restart. A
/// `forced` exit (herd stopped the process as unhealthy or over its memory limit) restarts
/// whatever the policy, within the same crash limit and backoff.
pub fn decide_after_exit(
    spec: &AppSpec,
    inst: &mut Instance,
    exit: &ExitRecord,
    forced: bool,
    // The boot clock (`Ctx::boot_ms`), which `started_boot_ms` and `recent_restarts` use.
    now_ms: u64,
) -> AfterExit {
    if !forced && (spec.is_stop_exit(exit.code) || !spec.restart.wants_restart(exit.failed())) {
        return AfterExit::Stop;
    }
    let window_ms = spec.restart_window_s.saturating_mul(1000);
    // An instance that stayed up a whole window starts over with the shortest delay.
    let stayed_up = inst
        .started_boot_ms
        .is_some_and(|t| now_ms.saturating_sub(t) >= window_ms);
    if stayed_up {
        inst.backoff_step = 0;
    }
    while inst
        .recent_restarts
        .front()
        .is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms)
    {
        inst.recent_restarts.pop_front();
    }
    if inst.recent_restarts.len() >= spec.max_restarts as usize {
        return AfterExit::Crash;
    }
    inst.recent_restarts.push_back(now_ms);
    inst.backoff_step = inst.backoff_step.saturating_add(1);
    inst.restarts = inst.restarts.saturating_add(1);
    AfterExit::Restart(spec.backoff().delay(inst.backoff_step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::backoff::RestartPolicy;

    fn spec(policy: RestartPolicy) -> AppSpec {
        let mut s = AppSpec::quick("a", "true", vec![]);
        s.restart = policy;
        s
    }

    fn run_and_exit(
        spec: &AppSpec,
        inst: &mut Instance,
        failed: bool,
        started: u64,
        now: u64,
    ) -> AfterExit {
        inst.started_at_ms = Some(started);
        inst.started_boot_ms = Some(started);
        let exit = ExitRecord {
            at_ms: now,
            code: Some(i32::from(failed)),
            signal: None,
            reason: "exited".into(),
        };
        decide_after_exit(spec, inst, &exit, false, now)
    }

    #[test]
    fn stop_exit_codes_never_restart_but_forced_exits_always_do() {
        let mut s = spec(RestartPolicy::Always);
        s.stop_exit_codes = vec![0, 2];
        let mut i = Instance::new(0);
        let exit = |code| ExitRecord {
            at_ms: 10,
            code: Some(code),
            signal: None,
            reason: "exited".into(),
        };
        assert_eq!(
            decide_after_exit(&s, &mut i, &exit(2), false, 10),
            AfterExit::Stop
        );
        assert!(matches!(
            decide_after_exit(&s, &mut i, &exit(3), false, 10),
            AfterExit::Restart(_)
        ));
        let mut never = spec(RestartPolicy::Never);
        never.stop_exit_codes = vec![143];
        assert!(matches!(
            decide_after_exit(&never, &mut i, &exit(143), true, 10),
            AfterExit::Restart(_)
        ));
    }

    #[test]
    fn on_failure_leaves_clean_exits_stopped() {
        let s = spec(RestartPolicy::OnFailure);
        let mut i = Instance::new(0);
        assert_eq!(run_and_exit(&s, &mut i, false, 0, 10), AfterExit::Stop);
        assert_eq!(i.restarts, 0);
    }

    #[test]
    fn always_restarts_clean_exits() {
        let s = spec(RestartPolicy::Always);
        let mut i = Instance::new(0);
        assert_eq!(
            run_and_exit(&s, &mut i, false, 0, 10),
            AfterExit::Restart(Duration::from_secs(1))
        );
    }

    #[test]
    fn never_restarts_nothing() {
        let s = spec(RestartPolicy::Never);
        let mut i = Instance::new(0);
        assert_eq!(run_and_exit(&s, &mut i, true, 0, 10), AfterExit::Stop);
    }

    #[test]
    fn delays_double_then_crash_after_max_restarts_in_window() {
        let s = spec(RestartPolicy::OnFailure);
        let mut i = Instance::new(0);
        let mut now = 0;
        let mut delays = vec![];
        for _ in 0..5 {
            match run_and_exit(&s, &mut i, true, now, now + 10) {
                AfterExit::Restart(d) => {
                    delays.push(d.as_millis() as u64);
                    now += 10 + d.as_millis() as u64;
                }
                other => panic!("expected a restart, got {other:?}"),
            }
        }
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16_000]);
        // 31 s of restarts: the sixth failure inside 60 s means crashed.
        assert_eq!(
            run_and_exit(&s, &mut i, true, now, now + 10),
            AfterExit::Crash
        );
        assert_eq!(i.restarts, 5);
    }

    #[test]
    fn staying_up_a_whole_window_resets_the_backoff() {
        let s = spec(RestartPolicy::Always);
        let mut i = Instance::new(0);
        run_and_exit(&s, &mut i, true, 0, 10);
        run_and_exit(&s, &mut i, true, 1010, 1020);
        assert_eq!(i.backoff_step, 2);
        let d = run_and_exit(&s, &mut i, true, 3020, 3020 + 60_000);
        assert_eq!(d, AfterExit::Restart(Duration::from_secs(1)));
        assert_eq!(i.backoff_step, 1);
    }

    #[test]
    fn restarts_older_than_the_window_do_not_count_towards_crash() {
        let mut s = spec(RestartPolicy::Always);
        s.max_restarts = 2;
        s.backoff_initial_ms = 0;
        let mut i = Instance::new(0);
        assert!(matches!(
            run_and_exit(&s, &mut i, true, 0, 1),
            AfterExit::Restart(_)
        ));
        assert!(matches!(
            run_and_exit(&s, &mut i, true, 1, 2),
            AfterExit::Restart(_)
        ));
        assert_eq!(run_and_exit(&s, &mut i, true, 2, 3), AfterExit::Crash);
        // 60 s after the first two restarts, they no longer count.
        assert!(matches!(
            run_and_exit(&s, &mut i, true, 59_000, 60_002),
            AfterExit::Restart(_)
        ));
    }
}
