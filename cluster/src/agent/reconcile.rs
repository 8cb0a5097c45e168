//! The agent's reconcile loop: tell the local supervisor what to run whenever this node's
//! desired set changes, and every few seconds anyway.
//!
//! - It acts on its slice of the registry only once it is in sync: a master was heard and the
//!   slice held is at least the version that master's heartbeat named. So a node coming back
//!   from a partition never restarts work the master already moved elsewhere.
//! - Cut off from every master for `offline_timeout`, it stops `on_disconnect = "stop"` apps and
//!   keeps the rest running.
//! - A new restart generation restarts the instance: it leaves the desired set until the
//!   supervisor reports it stopped, then comes back.
//! - It hands the singleton lease (see `contact`) to the supervisor only in sync and after the
//!   supervisor was told what the replica assigns: a lease never lets the supervisor restart a
//!   singleton this node was about to learn had moved elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::AgentState;
use super::DesiredInstance;
use super::LocalSupervisor;
use super::desired;
use super::desired::Wanted;
use super::slice::HeldSlice;
use crate::registry::Registry;

/// Reconcile with an unchanged set this often (the supervisor may have drifted).
pub(crate) const RESYNC: Duration = Duration::from_secs(5);
/// How often a restart in progress checks whether the old process has stopped.
const RESTART_POLL: Duration = Duration::from_millis(200);
/// A restart waits this long for the old process to stop, then starts the new one anyway.
const RESTART_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// "No deadline": far enough to never fire during a test or a process lifetime in practice.
const IDLE: Duration = Duration::from_secs(3600);

pub(crate) struct AgentLoop {
    pub(crate) state: Arc<AgentState>,
    /// This node's slice of the registry (`slice.rs`), `None` until it holds one.
    pub(crate) slices: watch::Receiver<Option<Arc<HeldSlice>>>,
    pub(crate) supervisor: Arc<dyn LocalSupervisor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// In contact and in sync: run exactly what the replica assigns.
    Full,
    /// No master heard for `offline_timeout`: keep all but `on_disconnect = "stop"` apps.
    Disconnected,
}

impl AgentLoop {
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let me = self.state.node_id();
        let mut wake = self.state.wake_signal();
        let mut last_sent: Option<Vec<DesiredInstance>> = None;
        let mut runs_sent: Option<(Vec<super::DesiredRun>, Instant)> = None;
        let mut next_resync = crate::clock::now();
        let mut ever_synced = false;
        let mut restarting: HashMap<(String, u32), Instant> = HashMap::new();
        let mut lease_given: Option<Instant> = None;
        let empty = Registry::default();
        loop {
            let now = crate::clock::now();
            // The slice and its version travel together: no replica can be read between them.
            let held = self.slices.borrow_and_update().clone();
            let applied = held.as_ref().map(|h| h.version());
            let reg: &Registry = held.as_ref().map_or(&empty, |h| &h.slice.registry);
            let view = self.state.view(now);
            let synced =
                view.connected && view.heard && applied.is_some_and(|v| v >= view.slice_version);
            ever_synced |= synced;
            let mode = if synced {
                Some(Mode::Full)
            } else if view.connected {
                None // wait for a first heartbeat, or for the replica to catch up
            } else if ever_synced || applied.is_some() {
                Some(Mode::Disconnected)
            } else {
                None // nothing known at all: touch nothing
            };
            let mut poll = false;
            if let Some(mode) = mode {
                let wanted = desired::from_registry(reg, me);
                self.state.retain_generations(|app, i| {
                    wanted
                        .iter()
                        .any(|w| w.instance.app == app && w.instance.instance == i)
                });
                let wanted = match mode {
                    Mode::Full if now < view.singletons_until => wanted,
                    Mode::Full | Mode::Disconnected => desired::while_disconnected(wanted),
                };
                let desired = self.restarts(
                    wanted,
                    &mut restarting,
                    last_sent.as_deref(),
                    now,
                    &mut poll,
                );
                if last_sent.as_ref() != Some(&desired) || now >= next_resync {
                    tracing::debug!(
                        node_id = me.get(),
                        ?mode,
                        instances = desired.len(),
                        "reconciling local supervisor"
                    );
                    self.supervisor.reconcile(desired.clone()).await;
                    last_sent = Some(desired);
                    next_resync = crate::clock::now() + RESYNC;
                }
                // Job runs follow the master only in sync: cut off, a node keeps what it runs.
                if mode == Mode::Full {
                    let runs = desired::runs_from_registry(reg, me);
                    let stale = runs_sent
                        .as_ref()
                        .is_none_or(|(sent, at)| *sent != runs || now >= *at + RESYNC);
                    if stale {
                        self.supervisor.reconcile_runs(runs.clone());
                        runs_sent = Some((runs, now));
                    }
                }
                if synced && let Some(from) = view.lease_from.filter(|f| Some(*f) > lease_given) {
                    lease_given = Some(from);
                    let left =
                        (from + self.state.lease()).saturating_duration_since(crate::clock::now());
                    if !left.is_zero() {
                        self.supervisor.renew_lease(left);
                    }
                }
            }
            let mut wake_at = if last_sent.is_some() {
                next_resync
            } else {
                now + IDLE
            };
            if view.connected {
                wake_at = wake_at.min(view.disconnect_at);
                if now < view.singletons_until {
                    wake_at = wake_at.min(view.singletons_until);
                }
            }
            if poll {
                wake_at = wake_at.min(now + RESTART_POLL);
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                r = self.slices.changed() => if r.is_err() { return },
                r = wake.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Applies restart generations: an instance whose generation went up is left out until the
    /// supervisor reports it stopped (after a reconcile without it), then comes back.
    fn restarts(
        &self,
        wanted: Vec<Wanted>,
        restarting: &mut HashMap<(String, u32), Instant>,
        last_sent: Option<&[DesiredInstance]>,
        now: Instant,
        poll: &mut bool,
    ) -> Vec<DesiredInstance> {
        restarting.retain(|(app, i), _| {
            wanted
                .iter()
                .any(|w| &w.instance.app == app && w.instance.instance == *i)
        });
        let mut report = None;
        let mut out = Vec::with_capacity(wanted.len());
        for w in wanted {
            let (app, i) = (w.instance.app.as_str(), w.instance.instance);
            match self.state.generation(app, i) {
                Some(g) if g < w.generation => {
                    let since = *restarting.entry((app.to_string(), i)).or_insert(now);
                    let sent_without = last_sent
                        .is_some_and(|s| !s.iter().any(|d| d.app == app && d.instance == i));
                    let report = report.get_or_insert_with(|| self.supervisor.report());
                    let stopped = !report
                        .iter()
                        .any(|r| r.app == app && r.instance == i && r.status.is_live());
                    if (sent_without && stopped)
                        || now.duration_since(since) >= RESTART_STOP_TIMEOUT
                    {
                        tracing::info!(
                            app,
                            instance = i,
                            generation = w.generation,
                            "restarted instance comes back"
                        );
                        restarting.remove(&(app.to_string(), i));
                        self.state.set_generation(app, i, w.generation);
                        out.push(w.instance);
                    } else {
                        *poll = true;
                    }
                }
                Some(g) if g == w.generation => out.push(w.instance),
                _ => {
                    // First sight (or the registry went back): run it at this generation.
                    self.state.set_generation(app, i, w.generation);
                    out.push(w.instance);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::NodeId;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    use super::*;
    use crate::agent::InstanceReport;
    use crate::agent::InstanceStatus;
    use crate::agent::Resources;
    use crate::registry::App;
    use crate::registry::Assignment;
    use crate::registry::NodeRecord;
    use crate::registry::NodeSlice;
    use crate::registry::OnDisconnect;
    use crate::registry::RegistryCommand;

    /// Runs whatever it was last told, at once; records every reconcile and lease renewal
    /// (the renewal as the number of reconciles before it, and the lease given).
    #[derive(Default)]
    struct FakeSupervisor {
        calls: Mutex<Vec<Vec<(String, u32)>>>,
        renewals: Mutex<Vec<(usize, Duration)>>,
    }

    impl FakeSupervisor {
        fn calls(&self) -> Vec<Vec<(String, u32)>> {
            self.calls.lock().expect("lock").clone()
        }
        fn last(&self) -> Option<Vec<(String, u32)>> {
            self.calls().last().cloned()
        }
    }

    impl LocalSupervisor for FakeSupervisor {
        fn report(&self) -> Vec<InstanceReport> {
            self.last()
                .unwrap_or_default()
                .into_iter()
                .map(|(app, instance)| InstanceReport {
                    app,
                    instance,
                    status: InstanceStatus::Running,
                    pid: Some(100 + instance),
                    restarts: 0,
                })
                .collect()
        }
        fn resources(&self) -> Option<Resources> {
            None
        }
        fn renew_lease(&self, valid_for: Duration) {
            let after = self.calls().len();
            self.renewals.lock().expect("lock").push((after, valid_for));
        }
        fn reconcile(
            &self,
            desired: Vec<DesiredInstance>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            self.calls
                .lock()
                .expect("lock")
                .push(desired.into_iter().map(|d| (d.app, d.instance)).collect());
            Box::pin(async {})
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        for (name, on_disconnect) in [("api", OnDisconnect::Keep), ("cron", OnDisconnect::Stop)] {
            r.apply(&RegistryCommand::PutApp {
                name: name.into(),
                app: App {
                    instances: 1,
                    on_disconnect,
                    ..App::default()
                },
            });
        }
        r.apply(&RegistryCommand::UpsertNode {
            node: NodeRecord {
                id: NodeId(1),
                ..NodeRecord::default()
            },
        });
        r.apply(&RegistryCommand::Assign {
            assignments: ["api", "cron"]
                .iter()
                .map(|app| Assignment {
                    app: app.to_string(),
                    instance: 0,
                    node: NodeId(1),
                })
                .collect(),
        });
        r
    }

    struct Harness {
        state: Arc<AgentState>,
        sup: Arc<FakeSupervisor>,
        slices: watch::Sender<Option<Arc<HeldSlice>>>,
        _stop: watch::Sender<bool>,
    }

    impl Harness {
        /// The node now holds its slice at `version` (same content).
        fn set_version(&self, version: u64) {
            self.slices.send_modify(|h| {
                if let Some(h) = h {
                    Arc::make_mut(h).slice.version = version;
                }
            });
        }
        /// A new slice with changed content and the same version number.
        fn modify(&self, f: impl FnOnce(&mut Registry)) {
            self.slices.send_modify(|h| {
                if let Some(h) = h {
                    f(&mut Arc::make_mut(h).slice.registry);
                }
            });
        }
        /// The same slice published again.
        fn touch(&self) {
            self.slices.send_modify(|_| {});
        }
    }

    fn harness(reg: Registry) -> Harness {
        let state = Arc::new(AgentState::new(NodeId(1), Duration::from_secs(90)));
        let sup = Arc::new(FakeSupervisor::default());
        let held = HeldSlice {
            as_of: 5,
            slice: NodeSlice {
                node: NodeId(1),
                version: 5,
                registry: reg,
            },
        };
        let (slices, rx) = watch::channel(Some(Arc::new(held)));
        let (stop, stop_rx) = watch::channel(false);
        let agent = AgentLoop {
            state: state.clone(),
            slices: rx,
            supervisor: sup.clone(),
        };
        tokio::spawn(agent.run(stop_rx));
        Harness {
            state,
            sup,
            slices,
            _stop: stop,
        }
    }

    fn both() -> Vec<(String, u32)> {
        vec![("api".into(), 0), ("cron".into(), 0)]
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_touched_until_a_master_is_heard_and_the_replica_caught_up() {
        let h = harness(registry());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(h.sup.calls().is_empty(), "no master heard yet");
        h.state.heartbeat_with_lease(1, 8);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(h.sup.calls().is_empty(), "replica at 5, master at 8: wait");
        assert!(
            h.sup.renewals.lock().expect("lock").is_empty(),
            "no lease out of sync"
        );
        h.set_version(8);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.sup.calls(), vec![both()]);
        let renewals = h.sup.renewals.lock().expect("lock").clone();
        assert_eq!(renewals.len(), 1, "{renewals:?}");
        assert_eq!(
            renewals[0].0, 1,
            "the lease comes after the supervisor was told"
        );
        assert!(
            renewals[0].1 <= Duration::from_secs(90) * 7 / 8,
            "at most 7/8 of the offline timeout, counted from the acknowledged reply"
        );
        // Unchanged: resync every 5 s, not on every registry change.
        h.touch();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.sup.calls().len(), 1);
        tokio::time::sleep(RESYNC).await;
        assert_eq!(h.sup.calls().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn cut_off_from_the_master_stop_apps_stop_and_the_rest_keeps_running() {
        let h = harness(registry());
        h.state.heartbeat_with_lease(1, 5);
        tokio::time::sleep(Duration::from_secs(67)).await;
        assert_eq!(h.sup.last(), Some(both()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            h.sup.last(),
            Some(vec![("api".into(), 0)]),
            "3/4 of the 90 s offline timeout without a master: the graceful stop begins, \
             before the lease lapses at 7/8"
        );
        tokio::time::sleep(Duration::from_secs(23)).await;
        assert_eq!(
            h.sup.last(),
            Some(vec![("api".into(), 0)]),
            "disconnected at 90 s: the rest keeps running"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            h.sup
                .calls()
                .iter()
                .skip_while(|c| c.len() == 2)
                .all(|c| c.len() == 1),
            "no flapping"
        );

        // The master is back, but the replica lags behind it: nothing restarts yet.
        h.state.heartbeat_with_lease(2, 12);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.sup.last(), Some(vec![("api".into(), 0)]));
        h.set_version(12);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.sup.last(), Some(both()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_restart_generation_stops_the_instance_then_starts_it_again() {
        let h = harness(registry());
        h.state.heartbeat_with_lease(1, 5);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.state.generation("api", 0), Some(0));
        h.modify(|r| {
            r.apply(&RegistryCommand::RestartApp {
                name: "api".into(),
                generation: 1,
            });
            r.apply(&RegistryCommand::RollInstances {
                app: "api".into(),
                instances: vec![0],
                generation: 1,
            });
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            h.sup.calls(),
            vec![both(), vec![("cron".into(), 0)], both()],
            "out, reported stopped, back in"
        );
        assert_eq!(h.state.generation("api", 0), Some(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.sup.calls().len(), 3, "restarted once");
    }
}
