//! Zero-downtime reload: one instance at a time, start a new process for the slot, wait until
//! it is healthy (or, without a probe, still running after the grace period), then stop the
//! old one. A new process that does not get there is stopped and the old one keeps the slot;
//! the reload stops there and says why.

use super::facts::{Fact, ReloadStep};
use super::instance::{Retiring, Status};
use super::machine::Input;
use super::{App, Result, Supervisor, SupervisorError, group_stop};
use nix::sys::signal::Signal;
use std::time::Duration;
use tracing::warn;

/// Without a probe, a new process must stay up this long to count as ready.
const READY_WITHOUT_PROBE: Duration = Duration::from_secs(10);

/// How long a new process of a `ready = "notify"` app without a probe has to send `READY=1`
/// (systemd's default `TimeoutStartSec`).
const READY_NOTIFY_TIMEOUT: Duration = Duration::from_secs(90);

enum Handover {
    /// Nothing ran in the slot: it was simply started.
    Started,
    Replacing {
        old: Retiring,
        new_spawn_id: u64,
        deadline: Duration,
        probed: bool,
    },
}

impl Supervisor {
    pub async fn reload(&self, name: &str) -> Result<App> {
        let indices: Vec<u32> = {
            let t = self.lock();
            if t.closing {
                return Err(SupervisorError::ShuttingDown);
            }
            let app = t
                .apps
                .get(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            app.instances
                .iter()
                .filter(|i| i.index < app.spec.instances)
                .map(|i| i.index)
                .collect()
        };
        let begin = ReloadStep::Begin {
            instances: indices.len(),
        };
        self.record(name, Fact::Reload(begin));
        for index in indices {
            if let Err(e) = self.reload_instance(name, index).await {
                let aborted = ReloadStep::Aborted {
                    error: e.to_string(),
                };
                Fact::Reload(aborted).record(&self.shared.events, name, Some(index), None);
                return Err(e);
            }
        }
        self.record(name, Fact::Reload(ReloadStep::Done));
        self.get(name)
    }

    async fn reload_instance(&self, name: &str, index: u32) -> Result<()> {
        let handover = self.begin_handover(name, index)?;
        let Handover::Replacing {
            old,
            new_spawn_id,
            deadline,
            probed,
        } = handover
        else {
            return Ok(());
        };
        let ready = if probed {
            tokio::time::timeout(
                deadline,
                self.wait_until(|t| {
                    slot(t, name, index)
                        .is_none_or(|i| i.spawn_id != new_spawn_id || i.status != Status::Starting)
                }),
            )
            .await
            .is_ok()
                && self.slot_is(name, index, new_spawn_id, Status::Running)
        } else {
            tokio::time::sleep(READY_WITHOUT_PROBE).await;
            self.slot_is(name, index, new_spawn_id, Status::Running)
        };
        if ready {
            self.retire(name, index, old).await;
            Ok(())
        } else {
            let why = format!(
                "the new process of instance {index} did not become ready within {:.0}s",
                deadline.as_secs_f64()
            );
            self.roll_back(name, index, old).await;
            Err(SupervisorError::ReloadAborted {
                app: name.into(),
                why,
            })
        }
    }

    fn slot_is(&self, name: &str, index: u32, spawn_id: u64, status: Status) -> bool {
        slot(&self.lock(), name, index)
            .is_some_and(|i| i.spawn_id == spawn_id && i.status == status)
    }

    fn begin_handover(&self, name: &str, index: u32) -> Result<Handover> {
        self.transact(|t, b| {
            let app = t
                .apps
                .get(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            let Some(pos) = app.position(index) else {
                return Ok(Handover::Started);
            };
            let inst = &app.instances[pos];
            let old = match (inst.status, inst.pid) {
                (Status::Running | Status::Starting, Some(pid)) => Some(Retiring {
                    pid,
                    signature: inst.signature,
                    started_at_ms: inst.started_at_ms,
                    started_boot_ms: inst.started_boot_ms,
                    spawn_id: inst.spawn_id,
                    exited: false,
                }),
                _ => None,
            };
            let deadline = match &app.spec.health {
                Some(h) => {
                    let probe = h.grace()
                        + h.interval() * (h.failures + 1)
                        + h.timeout()
                        + Duration::from_secs(1);
                    match app.spec.notifies() {
                        true => probe.max(READY_NOTIFY_TIMEOUT),
                        false => probe,
                    }
                }
                None if app.spec.notifies() => READY_NOTIFY_TIMEOUT,
                None => READY_WITHOUT_PROBE,
            };
            // A notifying app says itself when it is ready: waited for like a probe.
            let probed = app.spec.health.is_some() || app.spec.notifies();
            b.apply(t, name, index, None, Input::Replace);
            let Some(old) = old else {
                return Ok(Handover::Started);
            };
            let new_spawn_id = slot(t, name, index).map_or(0, |i| i.spawn_id);
            Ok(Handover::Replacing {
                old,
                new_spawn_id,
                deadline,
                probed,
            })
        })
    }

    /// The new process is ready: stop the old one (stop signal, SIGKILL after the timeout).
    async fn retire(&self, name: &str, index: u32, old: Retiring) {
        let (signal, timeout) = {
            let t = self.lock();
            t.apps
                .get(name)
                .map(|a| (a.spec.signal(), a.spec.stop_timeout()))
                .unwrap_or((Signal::SIGTERM, Duration::from_secs(10)))
        };
        Fact::Reload(ReloadStep::StopOld).record(
            &self.shared.events,
            name,
            Some(index),
            Some(old.pid),
        );
        let os = self.shared.os.clone();
        group_stop::stop_untracked(&*os, old.pid, signal, timeout).await;
        self.transact(|t, b| b.apply(t, name, index, None, Input::Retired { pid: old.pid }));
    }

    /// The new process failed: stop it and give the slot back to the old process.
    async fn roll_back(&self, name: &str, index: u32, old: Retiring) {
        warn!(app = %name, instance = index, old_pid = old.pid, "reload: new process not ready; keeping the old one");
        let stop = Input::StopRequested { timeout: None };
        if self
            .transact(|t, b| b.apply(t, name, index, None, stop))
            .is_none()
        {
            return;
        }
        self.wait_until(|t| slot(t, name, index).is_none_or(|i| i.status != Status::Stopping))
            .await;
        let old_alive = old
            .signature
            .is_none_or(|s| self.shared.os.is_same_process(old.pid, s));
        let back = Input::RollBack { old, old_alive };
        self.transact(|t, b| b.apply(t, name, index, None, back));
    }
}

fn slot<'a>(t: &'a super::Table, name: &str, index: u32) -> Option<&'a super::instance::Instance> {
    let app = t.apps.get(name)?;
    app.instances.get(app.position(index)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::testing::{FakeOs, instance, settle, supervisor};

    /// `event` or `event:step` of each event received.
    fn steps(
        rx: &mut tokio::sync::broadcast::Receiver<crate::supervisor::events::Event>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            match e.fields.get("step").and_then(|s| s.as_str()) {
                Some(step) => out.push(format!("{}:{step}", e.event)),
                None => out.push(e.event),
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_starts_a_new_process_then_stops_the_old_one() {
        let os = FakeOs::new(true);
        let sup = supervisor(os.clone());
        sup.start("web", false).unwrap();
        let mut events = sup.events().subscribe();
        let started = crate::supervisor::clock::monotonic();
        sup.reload("web").await.unwrap();
        assert!(started.elapsed() >= READY_WITHOUT_PROBE);
        let i = instance(&sup);
        assert_eq!((i.status, i.pid), (Status::Running, Some(101)));
        assert_eq!(i.retiring, None);
        assert_eq!(os.signals(), [(100, Signal::SIGTERM)]);
        assert_eq!(
            steps(&mut events),
            [
                "reload:begin",
                "reload:start_new",
                "started",
                "reload:stop_old",
                "reload:done"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_process_that_does_not_stay_up_is_stopped_and_the_old_one_keeps_the_slot() {
        let os = FakeOs::new(true);
        let sup = supervisor(os.clone());
        sup.start("web", false).unwrap();
        let reload = tokio::spawn({
            let sup = sup.clone();
            async move { sup.reload("web").await }
        });
        settle().await;
        assert_eq!(
            instance(&sup).pid,
            Some(101),
            "the new process runs beside the old"
        );
        // The new version crashes; its restart (102) is not the process the reload started.
        os.exit(101, 1);
        let err = reload.await.unwrap().unwrap_err();
        assert!(
            matches!(err, SupervisorError::ReloadAborted { .. }),
            "{err}"
        );
        let i = instance(&sup);
        assert_eq!((i.status, i.pid), (Status::Running, Some(100)));
        assert_eq!(i.retiring, None);
        let signals = os.signals();
        assert!(signals.contains(&(102, Signal::SIGTERM)), "{signals:?}");
        assert!(signals.iter().all(|(pid, _)| *pid != 100), "{signals:?}");
    }
}
