//! Zero-downtime reload: one instance at a time, start a new process for the slot, wait until
//! it is healthy (or, without a probe, still running after the grace period), then stop the
//! old one. A new process that does not get there is stopped and the old one keeps the slot;
//! the reload stops there and says why.

use super::instance::{Health, Retiring, Status};
use super::{App, Result, Supervisor, SupervisorError, process};
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

/// Without a probe, a new process must stay up this long to count as ready.
const READY_WITHOUT_PROBE: Duration = Duration::from_secs(10);

enum Handover {
    /// Nothing ran in the slot: it was simply started.
    Started,
    Replacing {
        old: Retiring,
        new_generation: u64,
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
        self.shared.events.emit(
            name,
            None,
            None,
            "reload",
            json!({ "step": "begin", "instances": indices.len() }),
        );
        for index in indices {
            if let Err(e) = self.reload_instance(name, index).await {
                self.shared.events.emit(
                    name,
                    Some(index),
                    None,
                    "reload",
                    json!({ "step": "aborted", "error": e.to_string() }),
                );
                return Err(e);
            }
        }
        self.shared
            .events
            .emit(name, None, None, "reload", json!({ "step": "done" }));
        self.get(name)
    }

    async fn reload_instance(&self, name: &str, index: u32) -> Result<()> {
        let handover = self.begin_handover(name, index)?;
        let Handover::Replacing {
            old,
            new_generation,
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
                    slot(t, name, index).is_none_or(|i| {
                        i.generation != new_generation || i.status != Status::Starting
                    })
                }),
            )
            .await
            .is_ok()
                && self.slot_is(name, index, new_generation, Status::Running)
        } else {
            tokio::time::sleep(READY_WITHOUT_PROBE).await;
            self.slot_is(name, index, new_generation, Status::Running)
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

    fn slot_is(&self, name: &str, index: u32, generation: u64, status: Status) -> bool {
        slot(&self.lock(), name, index)
            .is_some_and(|i| i.generation == generation && i.status == status)
    }

    fn begin_handover(&self, name: &str, index: u32) -> Result<Handover> {
        let h = {
            let mut t = self.lock();
            let app = t
                .apps
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            let Some(pos) = app.position(index) else {
                return Ok(Handover::Started);
            };
            let inst = &app.instances[pos];
            let running = matches!(inst.status, Status::Running | Status::Starting);
            match (running, inst.pid) {
                (true, Some(pid)) => {
                    let old = Retiring {
                        pid,
                        signature: inst.signature,
                        started_at_ms: inst.started_at_ms,
                        generation: inst.generation,
                        exited: false,
                    };
                    info!(app = %name, instance = index, old_pid = pid, "reload: starting a new process");
                    self.emit(
                        name,
                        inst,
                        "reload",
                        json!({ "step": "start_new", "old_pid": pid }),
                    );
                    app.instances[pos].retiring = Some(old.clone());
                    self.spawn_instance(app, pos);
                    let new = &app.instances[pos];
                    let deadline = match &app.spec.health {
                        Some(h) => {
                            h.grace()
                                + h.interval() * (h.failures + 1)
                                + h.timeout()
                                + Duration::from_secs(1)
                        }
                        None => READY_WITHOUT_PROBE,
                    };
                    Handover::Replacing {
                        old,
                        new_generation: new.generation,
                        deadline,
                        probed: app.spec.health.is_some(),
                    }
                }
                _ => {
                    if matches!(app.instances[pos].status, Status::Stopped | Status::Crashed) {
                        app.instances[pos].reset_history();
                        self.spawn_instance(app, pos);
                    }
                    Handover::Started
                }
            }
        };
        self.notify();
        Ok(h)
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
        info!(app = %name, instance = index, old_pid = old.pid, "reload: new process ready, stopping the old one");
        self.shared.events.emit(
            name,
            Some(index),
            Some(old.pid),
            "reload",
            json!({ "step": "stop_old" }),
        );
        stop_group(old.pid, signal, timeout).await;
        {
            let mut t = self.lock();
            if let Some(app) = t.apps.get_mut(name)
                && let Some(pos) = app.position(index)
                && app.instances[pos]
                    .retiring
                    .as_ref()
                    .is_some_and(|r| r.pid == old.pid)
            {
                app.instances[pos].retiring = None;
            }
        }
        self.notify();
    }

    /// The new process failed: stop it and give the slot back to the old process.
    async fn roll_back(&self, name: &str, index: u32, old: Retiring) {
        warn!(app = %name, instance = index, old_pid = old.pid, "reload: new process not ready; keeping the old one");
        let jobs = {
            let mut t = self.lock();
            let Some(app) = t.apps.get_mut(name) else {
                return;
            };
            let Some(pos) = app.position(index) else {
                return;
            };
            self.begin_stop(app, pos, None)
                .into_iter()
                .collect::<Vec<_>>()
        };
        self.run_stop_jobs(jobs);
        self.wait_until(|t| slot(t, name, index).is_none_or(|i| i.status != Status::Stopping))
            .await;
        {
            let mut t = self.lock();
            let Some(app) = t.apps.get_mut(name) else {
                return;
            };
            let Some(pos) = app.position(index) else {
                return;
            };
            let still_there = app.instances[pos]
                .retiring
                .take()
                .is_some_and(|r| !r.exited);
            let inst = &mut app.instances[pos];
            if still_there
                && old
                    .signature
                    .is_none_or(|s| process::is_same_process(old.pid, s))
            {
                inst.pid = Some(old.pid);
                inst.signature = old.signature;
                inst.started_at_ms = old.started_at_ms;
                inst.generation = old.generation;
                inst.status = Status::Running;
                inst.health = Health::Unknown;
                inst.next_start_ms = None;
                if let Some(h) = app.spec.health.clone() {
                    self.start_probes(name.to_string(), index, old.generation, old.pid, h);
                }
            } else {
                // The old process is gone too: start the slot afresh.
                self.spawn_instance(app, pos);
            }
            let inst = &app.instances[pos];
            self.emit(name, inst, "reload", json!({ "step": "rolled_back" }));
        }
        self.notify();
    }
}

fn slot<'a>(t: &'a super::Table, name: &str, index: u32) -> Option<&'a super::instance::Instance> {
    let app = t.apps.get(name)?;
    app.instances.get(app.position(index)?)
}

/// Stop signal to a group, SIGKILL after `timeout`, and wait (bounded) until it is empty.
pub(super) async fn stop_group(pgid: u32, signal: Signal, timeout: Duration) {
    let _ = process::signal_group(pgid, signal);
    let start = tokio::time::Instant::now();
    let mut killed = false;
    while process::group_alive(pgid) {
        let waited = start.elapsed();
        if !killed && waited >= timeout {
            let _ = process::signal_group(pgid, Signal::SIGKILL);
            killed = true;
        }
        if waited >= timeout + Duration::from_secs(10) {
            warn!(pgid, "processes survive SIGKILL");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
