//! The Raft handle the node works through: openraft's engine on a node that may hold a seat
//! (voter, standby, or an agent that may be promoted), none on a node pinned to the agent role.
//!
//! Why a pinned agent runs no engine: openraft builds a replication-batch histogram in
//! `Raft::new`, and its first histogram fills base2histogram's global table of log scales for
//! every width 1..=16 — 25.5 MiB (26.7 MB) written at once, then resident for the process's
//! life (heaptrack of an idle agent: 12.5 MiB in one allocation for width 16, 13.0 MiB over
//! widths 1..=15, from `SharedReplicateBatch::new`). That was nearly all of the ~28 MiB of
//! anonymous memory a cluster node had over a standalone daemon. A pinned agent never takes a
//! seat, so its engine only ever answered "not the leader, no leader known";
//! `HerdRaft::absent` answers the same without it.

use std::sync::Arc;

use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::WatchReceiverOf;
use openraft::type_config::alias::WatchSenderOf;
use tokio::sync::watch;

use super::StateMachine;
use super::TypeConfig;
use crate::NodeId;
use crate::registry::Registry;

/// openraft's engine with herd's types.
pub type OpenRaft = openraft::Raft<TypeConfig, StateMachine>;

/// This node is not the Raft leader; `leader_id` is the leader it knows of, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLeader {
    pub leader_id: Option<NodeId>,
}

/// The node's Raft handle: a running openraft engine, or none (a node pinned to the agent role).
#[derive(Clone)]
pub struct HerdRaft {
    engine: Option<OpenRaft>,
    absent: Option<Arc<Absent>>,
}

/// What stands in for the engine on a pinned agent: metrics that never change (no leader, no
/// membership, nothing applied) and an empty registry replica. The senders are kept so that
/// watchers wait instead of seeing a closed channel.
struct Absent {
    id: NodeId,
    metrics: WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>>,
    _metrics_tx: WatchSenderOf<TypeConfig, RaftMetrics<TypeConfig>>,
    _registry_tx: watch::Sender<Arc<Registry>>,
}

impl HerdRaft {
    pub(crate) fn running(engine: OpenRaft) -> HerdRaft {
        HerdRaft {
            engine: Some(engine),
            absent: None,
        }
    }

    /// No engine. Returns the handle and the (always empty) registry replica.
    pub(crate) fn absent(id: NodeId) -> (HerdRaft, watch::Receiver<Arc<Registry>>) {
        let (_metrics_tx, metrics) = TypeConfig::watch_channel(RaftMetrics::new_initial(id));
        let (_registry_tx, registry) = watch::channel(Arc::new(Registry::default()));
        let absent = Absent {
            id,
            metrics,
            _metrics_tx,
            _registry_tx,
        };
        let raft = HerdRaft {
            engine: None,
            absent: Some(Arc::new(absent)),
        };
        (raft, registry)
    }

    /// The openraft engine, if this node runs one.
    pub fn engine(&self) -> Option<&OpenRaft> {
        self.engine.as_ref()
    }

    pub fn node_id(&self) -> &NodeId {
        match (&self.engine, &self.absent) {
            (Some(raft), _) => raft.node_id(),
            (None, Some(a)) => &a.id,
            (None, None) => unreachable!("a HerdRaft is built running or absent"),
        }
    }

    pub fn metrics(&self) -> WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>> {
        match (&self.engine, &self.absent) {
            (Some(raft), _) => raft.metrics(),
            (None, Some(a)) => a.metrics.clone(),
            (None, None) => unreachable!("a HerdRaft is built running or absent"),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.engine.as_ref().is_some_and(|r| r.is_leader())
    }

    /// `Ok` if this node leads and its leadership is confirmed (openraft's `as_leader`).
    pub fn as_leader(&self) -> Result<(), NotLeader> {
        match &self.engine {
            Some(raft) => raft.as_leader().map(|_| ()).map_err(|f| NotLeader {
                leader_id: f.leader_id,
            }),
            None => Err(NotLeader {
                leader_id: self.metrics().borrow_watched().current_leader,
            }),
        }
    }

    /// Whether the engine holds a membership; a node with no engine never does.
    pub async fn is_initialized(&self) -> Result<bool, openraft::error::Fatal<TypeConfig>> {
        match &self.engine {
            Some(raft) => raft.is_initialized().await,
            None => Ok(false),
        }
    }

    /// Stops the engine, if any.
    pub async fn shutdown(&self) -> Result<(), String> {
        match &self.engine {
            Some(raft) => raft.shutdown().await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_engine_answers_like_an_idle_one() {
        let id = NodeId(7);
        let (raft, registry) = HerdRaft::absent(id);
        assert!(raft.engine().is_none());
        assert_eq!(*raft.node_id(), id);
        assert!(!raft.is_leader());
        assert_eq!(raft.as_leader(), Err(NotLeader { leader_id: None }));
        assert!(!raft.is_initialized().await.unwrap());
        let m = raft.metrics().borrow_watched().clone();
        assert_eq!(m.current_leader, None);
        assert_eq!(m.last_applied, None);
        assert!(m.membership_config.membership().get_node(&id).is_none());
        assert_eq!(**registry.borrow(), Registry::default());
        raft.shutdown().await.unwrap();
        // Watchers wait rather than see a closed channel (the node's loops end on a closed one).
        let mut metrics = raft.metrics();
        let mut registry = registry;
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), async {
            tokio::select! {
                r = metrics.changed() => r.is_ok(),
                r = registry.changed() => r.is_ok(),
            }
        })
        .await;
        assert!(waited.is_err(), "no change and no close: {waited:?}");
    }
}
