//! The transitions that hand a process over: to a daemon that came back (adopt what still
//! runs, restart what died meanwhile) and, in a reload, from an old process to a new one.

use super::{Effect, Step, fact};
use crate::supervisor::facts::{Fact, ReloadStep};
use crate::supervisor::instance::{ExitRecord, Health, Retiring, Status};
use std::time::Duration;
use tracing::info;

impl Step<'_> {
    pub(super) fn restored(
        &mut self,
        alive: bool,
        retiring_alive: bool,
        wanted: bool,
        waiting: Vec<String>,
    ) {
        let name = &self.spec.name;
        let inst = &mut *self.inst;
        inst.spawn_id = self.ctx.fresh_spawn_id;
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
            let spawn_id = inst.spawn_id;
            let signature = inst.signature;
            fact(&mut self.out, Some(pid), Fact::Adopted);
            if let (true, Some(signature)) = (self.ctx.singleton, signature) {
                // Its lease died with the old daemon: the keeper stops it unless the master
                // renews the lease first.
                self.out.push(Effect::GuardLease { pid, signature });
            }
            match inst.main_pid {
                // The leader handed over to a `MAINPID=` process (recovery proved that one).
                Some(main) => self.out.push(Effect::WatchMain {
                    spawn_id,
                    pgid: pid,
                    pid: main,
                }),
                None => self.out.push(Effect::WatchAdopted { spawn_id, pid }),
            }
            // The watchdog's deadline died with the old daemon: a full period from now.
            if inst.status == Status::Running && inst.notified_ready {
                inst.watchdog_due = self.spec.watchdog().map(|w| self.ctx.now + w);
            }
            if self.spec.health.is_some() {
                self.out.push(Effect::StartProbes { spawn_id, pid });
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
        inst.main_pid = None;
        inst.main_signature = None;
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
            inst.next_start_boot_ms = None;
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
                    .next_start_boot_ms
                    .map(|t| t.saturating_sub(self.ctx.boot_ms))
                    .unwrap_or(0);
                let spawn_id = inst.spawn_id;
                self.out.push(Effect::Timer {
                    after: Duration::from_millis(delay),
                    spawn_id,
                });
            }
            Status::Crashed => {}
            // A run that had finished, or had not started, when the daemon went.
            _ if self.ctx.one_shot => inst.status = Status::Stopped,
            // Its process ended and the policy let it be: the daemon that died would not
            // have started it again, so neither does this one.
            Status::Stopped if inst.finished => {}
            _ => {
                inst.reset_history();
                self.start(waiting);
            }
        }
    }

    /// Reload: a new process for a live slot (the old one becomes `retiring`); a slot that
    /// runs nothing is simply started.
    pub(super) fn replace(&mut self) {
        let inst = &mut *self.inst;
        match (inst.status, inst.pid) {
            (Status::Running | Status::Starting, Some(pid)) => {
                let old = Retiring {
                    pid,
                    signature: inst.signature,
                    started_at_ms: inst.started_at_ms,
                    started_boot_ms: inst.started_boot_ms,
                    spawn_id: inst.spawn_id,
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
    pub(super) fn roll_back(&mut self, old: Retiring, old_alive: bool) {
        let still_there = self.inst.retiring.take().is_some_and(|r| !r.exited);
        if still_there && old_alive {
            let inst = &mut *self.inst;
            inst.pid = Some(old.pid);
            inst.signature = old.signature;
            inst.started_at_ms = old.started_at_ms;
            inst.started_boot_ms = old.started_boot_ms;
            inst.spawn_id = old.spawn_id;
            inst.status = Status::Running;
            inst.health = Health::Unknown;
            inst.next_start_boot_ms = None;
            inst.spawning = false;
            if self.spec.health.is_some() {
                self.out.push(Effect::StartProbes {
                    spawn_id: old.spawn_id,
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
