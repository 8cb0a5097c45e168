//! The transitions an app asks for itself over its notify socket (`ready = "notify"`):
//! `READY=1` makes a starting instance running (with a probe, once it is healthy too),
//! `STATUS=` is kept for `ps`, `WATCHDOG=1` pushes the watchdog's deadline back, and
//! `MAINPID=` names the process whose exit ends the instance. The watchdog is armed at
//! `READY=1`, as systemd arms `WatchdogSec=` when a `Type=notify` unit's start-up is over.

use super::{Effect, Step, fact};
use crate::supervisor::facts::Fact;
use crate::supervisor::instance::{Health, Status};
use tracing::{debug, info};

impl Step<'_> {
    pub(super) fn ready(&mut self) {
        let inst = &mut *self.inst;
        if inst.status != Status::Starting || inst.pid.is_none() || inst.notified_ready {
            return;
        }
        inst.notified_ready = true;
        inst.watchdog_due = self.spec.watchdog().map(|w| self.ctx.now + w);
        let probed = self.spec.health.is_some();
        if !probed || inst.health == Health::Healthy {
            inst.status = Status::Running;
        }
        let pid = inst.main_process();
        fact(&mut self.out, pid, Fact::Ready { probed });
    }

    pub(super) fn status_text(&mut self, text: String) {
        let inst = &mut *self.inst;
        if matches!(inst.status, Status::Starting | Status::Running) && inst.pid.is_some() {
            debug!(app = %self.spec.name, instance = inst.index, status_text = %text, "status from the app");
            inst.status_text = Some(text);
        }
    }

    pub(super) fn watchdog_ping(&mut self) {
        let inst = &mut *self.inst;
        // Before `READY=1` the watchdog is not armed yet, and pings are not needed.
        if inst.status == Status::Running
            && inst.watchdog_due.is_some()
            && let Some(w) = self.spec.watchdog()
        {
            inst.watchdog_due = Some(self.ctx.now + w);
        }
    }

    pub(super) fn watchdog_elapsed(&mut self) {
        let inst = &mut *self.inst;
        let Some(due) = inst.watchdog_due else {
            return;
        };
        if self.ctx.now < due || !matches!(inst.status, Status::Running | Status::Starting) {
            return;
        }
        inst.watchdog_due = None;
        let timeout_s = self.spec.watchdog_s.unwrap_or_default();
        let pid = inst.main_process();
        fact(&mut self.out, pid, Fact::Watchdog { timeout_s });
        self.force_restart("watchdog".into());
    }

    pub(super) fn main_pid(&mut self, pid: u32, signature: Option<u64>) {
        let inst = &mut *self.inst;
        let Some(pgid) = inst.pid else {
            return;
        };
        if !matches!(inst.status, Status::Starting | Status::Running) || inst.main_pid == Some(pid)
        {
            return;
        }
        if pid == pgid {
            // Back to the leader, which the exit watcher already follows.
            inst.main_pid = None;
            inst.main_signature = None;
            return;
        }
        info!(app = %self.spec.name, instance = inst.index, pgid, main_pid = pid, "the app named its main process");
        inst.main_pid = Some(pid);
        inst.main_signature = signature;
        let spawn_id = inst.spawn_id;
        fact(&mut self.out, Some(pgid), Fact::MainPid { main_pid: pid });
        self.out.push(Effect::WatchMain {
            spawn_id,
            pgid,
            pid,
        });
    }
}
