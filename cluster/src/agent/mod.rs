//! The agent: every node's side of the master's work. It answers the master's heartbeats
//! (refusing terms older than the highest it has seen, so a deposed master is fenced off) and
//! keeps the local supervisor running exactly the cluster instances its own Raft replica assigns
//! to this node. Cut off from every master, it keeps its instances running, except those of
//! apps that asked to stop when disconnected.

#![deny(clippy::disallowed_methods)]

mod delta;
mod desired;
mod fence;
mod heartbeat;
mod reconcile;
mod report;
mod service;
mod slice;

use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;
use serde::Serialize;

pub(crate) use fence::AgentState;
pub(crate) use fence::lease_length;
pub(crate) use fence::refused_as_stale;
pub(crate) use reconcile::AgentLoop;
pub use report::InstanceReport;
pub use report::InstanceStatus;
pub use report::Resources;
pub use report::UnknownStatus;
pub use report::status_is_live;
pub(crate) use service::AgentService;
pub use slice::HeldSlice;
pub use slice::SLICE_FILE;
pub(crate) use slice::SliceFetch;
pub(crate) use slice::SliceStore;
pub(crate) use slice::fetch_loop;

/// What the cluster needs from the node's local supervisor. The daemon implements it; the
/// cluster library never spawns processes itself.
pub trait LocalSupervisor: Send + Sync + 'static {
    /// Cluster instances this node runs now, with the supervisor's status. Called on every
    /// heartbeat: keep it cheap (no blocking I/O).
    fn report(&self) -> Vec<InstanceReport>;
    /// Host resources for placement (`None` before the first sample). Called on every
    /// heartbeat: return a cached value.
    fn resources(&self) -> Option<Resources>;
    /// Make the node's set of cluster instances exactly `desired` (start missing, replace
    /// changed specs, stop the rest). Returns when requested, not when done. Called whenever the
    /// desired set changes and every few seconds with the same set (must be idempotent).
    fn reconcile(
        &self,
        desired: Vec<DesiredInstance>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The master acknowledged a reply and the replica is in sync (the supervisor was just told
    /// what it assigns): `on_disconnect = "stop"` instances may run for `valid_for` more — less
    /// than the master waits before it calls this node offline and places them elsewhere. The
    /// supervisor must stop them by then even if the agent cannot (see the node's lease keeper),
    /// and may start the ones that waited for the lease.
    fn renew_lease(&self, _valid_for: std::time::Duration) {}
    /// The job runs the master dispatched to this node and not yet ended, as of a slice in
    /// sync with the master: start the new ones (once: a run id is never started twice), and
    /// stop any this node runs that left the list (ended by the master: cancelled, or judged
    /// lost). Called whenever the list changes and every few seconds.
    fn reconcile_runs(&self, _runs: Vec<DesiredRun>) {}
}

/// One job run the master dispatched to this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredRun {
    pub job: String,
    pub run: u64,
    pub attempt: u32,
    pub trigger: String,
    pub tick_ms: Option<u64>,
    pub args: Vec<String>,
    /// The job's spec as deployed (opaque to the cluster).
    pub spec: serde_json::Value,
}

/// One cluster instance the node must run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredInstance {
    pub app: String,
    pub instance: u32,
    /// The app's spec as deployed (opaque to the cluster).
    pub spec: serde_json::Value,
}
