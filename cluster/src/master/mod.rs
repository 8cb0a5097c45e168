//! Master duties: what the Raft leader does for the cluster, and only while it leads. A term
//! starts on `Leadership::Leader { term }` and stops the moment that changes (its future is
//! dropped, its heartbeat tasks aborted); every write and heartbeat carries the term.
//!
//! - heartbeats every node every `heartbeat_interval_ms` (phase-spread), keeps last-seen and the
//!   latest report in memory;
//! - sweeps every `health_sweep_interval_ms`: offline after `offline_timeout_ms` of silence (a
//!   new master first gives every node a full timeout), online when it answers again, one
//!   batched write, plus uptime samples (counted in memory, the changed buckets written every
//!   `uptime_rollup_ms`) and pruning;
//! - places, reschedules and moves instances, advances rolling restarts, moves crash loops;
//!   rescheduling away from offline nodes is throttled when many fail at once and frozen when
//!   more than half are silent (`storm.rs`).

#![deny(clippy::disallowed_methods)]

mod decisions;
mod health;
pub(crate) mod heartbeat;
pub(crate) mod io;
mod jobs;
mod placement;
mod runtime;
mod stats;
mod storm;
mod term;
#[cfg(test)]
mod term_tests;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::watch;

pub use self::decisions::DrainStatus;
pub(crate) use self::decisions::drain_status;
pub use self::health::HealthTable;
pub use self::health::NodeHealth;
pub use self::health::NodeReport;
pub use self::health::ReportedInstance;
pub use self::health::Usage;
pub(crate) use self::heartbeat::GrpcTransport;
pub use self::heartbeat::HeartbeatCall;
pub use self::heartbeat::HeartbeatConfig;
pub use self::heartbeat::HeartbeatTransport;
pub use self::heartbeat::Heartbeater;
pub use self::heartbeat::NodeLink;
use self::io::MasterIo;
pub use self::placement::PlacementInput;
pub use self::placement::PlacementMemo;
pub use self::placement::Plan;
pub use self::placement::plan as plan_placement;
pub use self::placement::plan_with as plan_placement_with;
pub use self::runtime::ClusterRuntime;
pub use self::runtime::HeartbeatTotals;
pub use self::runtime::NodeRuntime;
pub use self::stats::HeartbeatStats;
pub use self::stats::RTT_BOUNDS_US;
pub use self::stats::RttHistogram;
pub use self::storm::RescheduleMode;
use self::term::MasterTerm;
pub(crate) use self::term::TermSettings;
use crate::Term;
pub use crate::clock::WallClock;
use crate::raft::Leadership;
use crate::registry::NodeId;
use crate::registry::Registry;

/// The running term's health table, for `ClusterNode::runtime` on the leader.
#[derive(Default)]
pub(crate) struct MasterView {
    current: Mutex<Option<(Term, Arc<HealthTable>)>>,
}

impl MasterView {
    fn set(&self, term: Term, health: Arc<HealthTable>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((term, health));
    }

    fn clear(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The runtime view, if a master term runs here.
    pub(crate) fn runtime(&self, master: NodeId, reg: &Registry) -> Option<ClusterRuntime> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        current.map(|(term, health)| runtime::build(master, term, reg, &health))
    }
}

/// Follows leadership until shutdown, running one `MasterTerm` per term led.
pub(crate) async fn run(
    io: Arc<dyn MasterIo>,
    master_id: NodeId,
    settings: TermSettings,
    mut leadership: watch::Receiver<Leadership>,
    view: Arc<MasterView>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The health table of the last term led, kept for a return to the same term.
    let mut last: Option<(Term, Arc<health::HealthTable>)> = None;
    loop {
        let now = *leadership.borrow_and_update();
        if let Leadership::Leader { term } = now {
            let resumed = last.take().filter(|(t, _)| *t == term).map(|(_, h)| h);
            if resumed.is_some() {
                tracing::info!(
                    node_id = master_id.get(),
                    term = term.get(),
                    "master duties resume in the same term (what was heard is kept)"
                );
            }
            let master = MasterTerm::resuming(
                io.clone(),
                master_id,
                term,
                settings.clone(),
                WallClock::system(),
                resumed,
            );
            last = Some((term, master.health()));
            view.set(term, master.health());
            tracing::info!(
                node_id = master_id.get(),
                term = term.get(),
                "master duties start"
            );
            let deposed = tokio::select! {
                d = master.run() => {
                    tracing::info!(node_id = master_id.get(), term = term.get(), reason = %d.0, "master term ended early");
                    true
                }
                r = leadership.changed() => {
                    if r.is_err() {
                        view.clear();
                        return;
                    }
                    false
                }
                _ = shutdown.changed() => {
                    view.clear();
                    return;
                }
            };
            view.clear();
            tracing::info!(
                node_id = master_id.get(),
                term = term.get(),
                "master duties stop"
            );
            if deposed {
                // Leadership usually changes right after; if it does not (a write refused during
                // a membership change), start over after a pause.
                tokio::select! {
                    r = leadership.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(settings.heartbeat_interval) => {}
                    _ = shutdown.changed() => return,
                }
            }
            continue;
        }
        tokio::select! {
            r = leadership.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
