//! The master's window on this node: the local replica, the Raft membership, leader-only
//! writes (never forwarded: a master that is not the leader stops), and gRPC heartbeats over
//! the node's shared peer channels.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use super::shared::Served;
use super::shared::Shared;
use crate::master::GrpcTransport;
use crate::master::HeartbeatTransport;
use crate::master::heartbeat::Versions;
use crate::master::io::MasterIo;
use crate::master::io::WriteError;
use crate::master::io::WriteFuture;
use crate::raft::HerdRaft;
use crate::raft::Member;
use crate::registry::NodeId;
use crate::registry::Registry;
use crate::registry::RegistryCommand;

pub(crate) struct RaftIo {
    pub(crate) shared: Arc<Shared>,
}

/// The local replica's applied log index.
pub(crate) fn applied_index(raft: &HerdRaft) -> Option<u64> {
    raft.metrics()
        .borrow_watched()
        .last_applied
        .map(|l| l.index)
}

impl MasterIo for RaftIo {
    fn registry(&self) -> watch::Receiver<Arc<Registry>> {
        self.shared.registry.clone()
    }

    fn members(&self) -> Vec<(NodeId, Member)> {
        let m = self.shared.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    fn membership_version(&self) -> Option<u64> {
        let m = self.shared.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.log_id().as_ref().map(|l| l.index)
    }

    fn versions(&self) -> Versions {
        let raft = self.shared.raft.clone();
        let registry = self.shared.registry.clone();
        Box::new(move |id| {
            // The slice version from a registry at least as new as the index sent with it.
            let applied = applied_index(&raft).unwrap_or(0);
            (applied, registry.borrow().slice_version(id))
        })
    }

    fn transport(&self) -> Arc<dyn HeartbeatTransport> {
        Arc::new(GrpcTransport {
            channels: self.shared.forwarder.channels.clone(),
            auth: self.shared.forwarder.auth.clone(),
        })
    }

    fn write(&self, cmd: RegistryCommand) -> WriteFuture<'_> {
        Box::pin(async move {
            match self.shared.write_local(cmd).await {
                Ok(Served::Done(r)) => Ok(r),
                // Still leader by vote, but the write was turned away: right after a membership
                // change the leader's lease waits for the new quorum's acknowledgement. The term
                // goes on and retries; a real deposition ends it through the leadership watch.
                Ok(Served::NotLeader(_)) if self.shared.raft.as_leader().is_ok() => Err(
                    WriteError::Failed("leadership not yet confirmed by the new quorum".into()),
                ),
                Ok(Served::NotLeader(_)) => Err(WriteError::NotLeader),
                Err(e) => Err(WriteError::Failed(e.to_string())),
            }
        })
    }
}
