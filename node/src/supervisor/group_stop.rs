//! Stopping a process group with a deadline, written once: after the stop signal, poll
//! (2 ms, doubling to 50 ms) until the group is empty, SIGKILL it at the deadline, give up
//! ten seconds later. Used for an instance's stop (each poll and the deadline go through the
//! machine) and for groups herd no longer tracks (a reload's old process, a stray leader found
//! after a crash).

use super::instance::Status;
use super::machine::Input;
use super::process::Os;
use super::{Supervisor, limits};
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

/// How long past SIGKILL a group may live before it is given up on.
const AFTER_KILL: Duration = Duration::from_secs(10);

/// What a group stop asks of its owner.
pub(super) trait GroupWatch {
    /// The group was polled: `Some(deadline)` to keep watching (the deadline may have been
    /// brought forward), `None` when there is nothing left to watch.
    fn polled(&mut self, alive: bool) -> Option<Instant>;
    /// The deadline passed with the group alive: SIGKILL it.
    fn deadline_passed(&mut self);
    /// The group outlived SIGKILL.
    fn gave_up(&mut self);
}

/// Drives the stop of group `pgid` (its stop signal already sent) until `watch` lets go.
pub(super) async fn drive(
    os: &dyn Os,
    pgid: u32,
    mut kill_at: Instant,
    watch: &mut impl GroupWatch,
) {
    let mut killed = false;
    let mut poll = Duration::from_millis(2);
    loop {
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(Duration::from_millis(50));
        let Some(deadline) = watch.polled(os.group_alive(pgid)) else {
            return;
        };
        kill_at = kill_at.min(deadline);
        let now = crate::supervisor::clock::monotonic();
        if killed && now >= limits::deadline(kill_at, AFTER_KILL) {
            watch.gave_up();
            return;
        }
        if !killed && now >= kill_at {
            watch.deadline_passed();
            killed = true;
        }
    }
}

/// Stop signal to a group no instance owns, SIGKILL after `timeout`; resolves once the group
/// is empty (or given up on).
pub(super) async fn stop_untracked(os: &dyn Os, pgid: u32, signal: Signal, timeout: Duration) {
    if let Err(e) = os.signal_group(pgid, signal) {
        warn!(pgid, error = %e, "not stopping the process group");
        return;
    }
    let kill_at = limits::deadline(
        crate::supervisor::clock::monotonic(),
        limits::clamp(timeout),
    );
    let mut watch = Untracked { os, pgid, kill_at };
    drive(os, pgid, kill_at, &mut watch).await;
}

struct Untracked<'a> {
    os: &'a dyn Os,
    pgid: u32,
    kill_at: Instant,
}

impl GroupWatch for Untracked<'_> {
    fn polled(&mut self, alive: bool) -> Option<Instant> {
        alive.then_some(self.kill_at)
    }

    fn deadline_passed(&mut self) {
        let _ = self.os.signal_group(self.pgid, Signal::SIGKILL);
    }

    fn gave_up(&mut self) {
        warn!(pgid = self.pgid, "processes survive SIGKILL");
    }
}

/// The stop of an instance: every observation is an input of its machine.
struct Stopping<'a> {
    sup: &'a Supervisor,
    name: String,
    index: u32,
    spawn_id: u64,
    pgid: u32,
    timeout: Duration,
}

impl GroupWatch for Stopping<'_> {
    fn polled(&mut self, alive: bool) -> Option<Instant> {
        let inst = if alive {
            // Nothing to tell the machine; only whether the stop is still its own.
            let t = self.sup.lock();
            let app = t.apps.get(&self.name)?;
            app.instances.get(app.position(self.index)?)?.clone()
        } else {
            self.sup
                .dispatch(&self.name, self.index, self.spawn_id, Input::GroupEmpty)?
        };
        (inst.spawn_id == self.spawn_id && inst.status == Status::Stopping).then(|| {
            inst.kill_at
                .unwrap_or_else(crate::supervisor::clock::monotonic)
        })
    }

    fn deadline_passed(&mut self) {
        let input = Input::StopDeadline {
            pgid: self.pgid,
            after: self.timeout,
        };
        self.sup
            .dispatch(&self.name, self.index, self.spawn_id, input);
    }

    fn gave_up(&mut self) {
        let input = Input::GaveUp { pgid: self.pgid };
        self.sup
            .dispatch(&self.name, self.index, self.spawn_id, input);
    }
}

impl Supervisor {
    /// Watches a stopping instance's group (`machine::Effect::WatchGroup`).
    pub(super) fn watch_stopping(
        &self,
        name: String,
        index: u32,
        spawn_id: u64,
        pgid: u32,
        kill_at: Instant,
        timeout: Duration,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut watch = Stopping {
                sup: &me,
                name,
                index,
                spawn_id,
                pgid,
                timeout,
            };
            let os = me.shared.os.clone();
            drive(&*os, pgid, kill_at, &mut watch).await;
        });
    }
}
