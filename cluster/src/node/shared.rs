//! State shared by the façade, the ClusterApi server and the background tasks, plus the
//! leader-only operations each of them may serve locally. A non-leader answers `NotLeader` and
//! the caller forwards (see `Forwarder::at_leader`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use openraft::RaftMetrics;
use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;

use super::forwarder::Forwarder;
use super::membership::JoinOutcome;
use super::membership::Joiner;
use super::membership::MembershipOp;
use super::status::ClusterStatus;
use super::status::local_status;
use crate::NodeId;
use crate::agent::AgentState;
use crate::agent::HeldSlice;
use crate::agent::SliceStore;
use crate::config::ClusterConfig;
use crate::config::NodeRole;
use crate::error::ClusterError;
use crate::master::ClusterRuntime;
use crate::master::MasterView;
use crate::raft::HerdRaft;
use crate::raft::Leadership;
use crate::raft::OpenRaft;
use crate::raft::TypeConfig;
use crate::raft::service::LeaderContact;
use crate::registry::ApplyOutcome;
use crate::registry::Registry;
use crate::registry::RegistryCommand;

/// The outcome of a leader-only operation tried locally.
pub(crate) enum Served<T> {
    Done(T),
    /// Not the leader; the known leader, if any.
    NotLeader(Option<NodeId>),
}

impl<T> Served<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Served<U> {
        match self {
            Served::Done(v) => Served::Done(f(v)),
            Served::NotLeader(hint) => Served::NotLeader(hint),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) cfg: ClusterConfig,
    pub(crate) raft: HerdRaft,
    pub(crate) forwarder: Forwarder,
    pub(crate) membership: mpsc::Sender<MembershipOp>,
    pub(crate) registry: watch::Receiver<Arc<Registry>>,
    pub(crate) leadership: watch::Receiver<Leadership>,
    /// Set by `leave()`: stop asking to (re)join.
    pub(crate) left: AtomicBool,
    /// The last join answered "agent": this node is in the registry, outside Raft, and checks
    /// its membership by the master's heartbeats rather than by Raft traffic.
    pub(crate) registered_agent: AtomicBool,
    pub(crate) leader_contact: LeaderContact,
    /// This node's agent: heartbeat fencing and contact, the local supervisor.
    pub(crate) agent: Arc<AgentState>,
    /// This node's slice of the registry, fetched when a heartbeat names a newer one.
    pub(crate) slices: Arc<SliceStore>,
    /// The freshest registry this node holds (`ClusterNode::local_view`).
    pub(crate) view: watch::Receiver<Arc<Registry>>,
    /// The master term running here, if any (for `runtime()`).
    pub(crate) master_view: Arc<MasterView>,
}

impl Shared {
    /// The openraft engine, for what only a node that may hold a Raft seat does (writes, reads
    /// at a read index, membership changes). A node pinned to the agent role runs none; those
    /// paths are behind `as_leader`, which it never passes.
    pub(crate) fn engine(&self) -> Result<&OpenRaft, ClusterError> {
        self.raft.engine().ok_or_else(|| {
            ClusterError::Raft(
                "this node is pinned to the agent role and runs no Raft engine".into(),
            )
        })
    }

    pub(crate) fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    fn leader_hint(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub(crate) async fn write_local(
        &self,
        cmd: RegistryCommand,
    ) -> Result<Served<ApplyOutcome>, ClusterError> {
        if let Err(f) = self.raft.as_leader() {
            return Ok(Served::NotLeader(f.leader_id));
        }
        match self.engine()?.client_write(cmd).await {
            Ok(resp) => Ok(Served::Done(resp.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Ok(Served::NotLeader(f.leader_id))
            }
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// The log index a linearizable read must observe, confirmed by a quorum.
    pub(crate) async fn read_index_local(&self) -> Result<Served<u64>, ClusterError> {
        if let Err(f) = self.raft.as_leader() {
            return Ok(Served::NotLeader(f.leader_id));
        }
        match self.engine()?.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read, _applied)) => Ok(Served::Done(read.index())),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Ok(Served::NotLeader(f.leader_id)),
                None => Err(ClusterError::Raft(e.to_string())),
            },
        }
    }

    /// Waits until the local replica has applied `index`.
    pub(crate) async fn wait_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        self.engine()?
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Timeout {
                what: format!("local replica to apply index {index}: {e}"),
                after_ms: timeout.as_millis() as u64,
            })
    }

    /// Hands leadership to the most up-to-date reachable voter and waits (up to `timeout`) for
    /// it to take over.
    pub(crate) async fn step_down_local(
        &self,
        timeout: Duration,
    ) -> Result<Served<NodeId>, ClusterError> {
        let m = self.metrics();
        if self.raft.as_leader().is_err() {
            return Ok(Served::NotLeader(m.current_leader));
        }
        let status = local_status(
            &self.cfg.name,
            &self.cfg.advertise,
            self.cfg.heartbeat_ms,
            &m,
        );
        let target = status
            .members
            .iter()
            .filter(|s| s.id != self.id && s.role == "voter" && s.reachable == Some(true))
            .max_by_key(|s| (s.matched_index, std::cmp::Reverse(s.id)))
            .map(|s| s.id)
            .ok_or_else(|| {
                ClusterError::Membership("no other reachable voter to hand leadership to".into())
            })?;
        tracing::info!(to = target.get(), "stepping down: transferring leadership");
        self.engine()?
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let me = self.id;
        self.engine()?
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != Some(me),
                "leadership handed over",
            )
            .await
            .map_err(|e| ClusterError::Timeout {
                what: format!("node {target} to take over leadership: {e}"),
                after_ms: timeout.as_millis() as u64,
            })?;
        Ok(Served::Done(self.leader_hint().unwrap_or(target)))
    }

    pub(crate) async fn join_local(
        &self,
        joiner: Joiner,
    ) -> Result<Served<JoinOutcome>, ClusterError> {
        self.membership_op(|reply| MembershipOp::Join { joiner, reply })
            .await
    }

    pub(crate) async fn leave_local(&self, id: NodeId) -> Result<Served<()>, ClusterError> {
        self.membership_op(|reply| MembershipOp::Leave { id, reply })
            .await
    }

    async fn membership_op<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<Served<T>, ClusterError>>) -> MembershipOp,
    ) -> Result<Served<T>, ClusterError> {
        if let Err(f) = self.raft.as_leader() {
            return Ok(Served::NotLeader(f.leader_id));
        }
        let (tx, rx) = oneshot::channel();
        self.membership
            .send(op(tx))
            .await
            .map_err(|_| ClusterError::Shutdown)?;
        rx.await.map_err(|_| ClusterError::Shutdown)?
    }

    /// The master's runtime view, served by the node running the master term. A leader whose
    /// master term has not started yet answers `NotLeader(None)`: the caller retries.
    pub(crate) fn runtime_local(&self) -> Served<ClusterRuntime> {
        let reg = self.registry.borrow().clone();
        if let Some(rt) = self.master_view.runtime(self.id, &reg) {
            return Served::Done(rt);
        }
        match self.raft.as_leader() {
            Err(f) => Served::NotLeader(f.leader_id),
            Ok(_) => Served::NotLeader(None),
        }
    }

    /// `node`'s slice of this node's replica, served by any node that holds one (a voter or
    /// standby serves itself; an agent is forwarded to the leader). A lagging replica may serve
    /// an older version than a heartbeat named: the fetcher checks the version and asks again.
    /// Not gated on `as_leader`, which fails while a loaded leader's lease is unconfirmed (the
    /// scale benchmark saw half the fetches refused that way).
    pub(crate) fn slice_local(&self, node: NodeId) -> Served<HeldSlice> {
        if !self.holds_replica() {
            return Served::NotLeader(self.leader_hint());
        }
        // The index first: the registry is published before Raft reports it applied, so the
        // registry read next is at least that new.
        let as_of = self.applied_index();
        let slice = self.registry.borrow().slice_for(node);
        Served::Done(HeldSlice { as_of, slice })
    }

    /// The whole registry after a read index, for a node that holds no replica.
    pub(crate) async fn read_whole_local(
        &self,
    ) -> Result<Served<(Arc<Registry>, u64)>, ClusterError> {
        let index = match self.read_index_local().await? {
            Served::Done(i) => i,
            Served::NotLeader(hint) => return Ok(Served::NotLeader(hint)),
        };
        self.wait_applied(index, Duration::from_secs(5)).await?;
        let as_of = self.applied_index();
        Ok(Served::Done((self.registry.borrow().clone(), as_of)))
    }

    pub(crate) fn applied_index(&self) -> u64 {
        super::master_io::applied_index(&self.raft).unwrap_or(0)
    }

    /// This node holds a Raft seat (voter or learner) in the membership it knows and hears
    /// its leader: its replica is kept current. An agent, or a standby that left Raft, does not.
    pub(crate) fn holds_replica(&self) -> bool {
        if self.cfg.role == NodeRole::Agent {
            return false;
        }
        // Borrowed, not cloned: this runs on every slice fetch and read.
        let seated = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&self.id)
                .is_some()
        };
        seated && (self.raft.is_leader() || self.leader_contact.elapsed() < Duration::from_secs(3))
    }

    /// This node's view; complete (with reachability) only on the leader.
    pub(crate) fn status_local(&self) -> ClusterStatus {
        local_status(
            &self.cfg.name,
            &self.cfg.advertise,
            self.cfg.heartbeat_ms,
            &self.metrics(),
        )
    }
}
