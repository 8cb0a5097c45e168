//! What a master term needs from the world, as a trait: the local registry replica, the Raft
//! membership, a way to write, and a heartbeat transport. The node implements it over Raft and
//! gRPC; unit tests use an in-memory registry and fake nodes under a paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use super::heartbeat::HeartbeatTransport;
use super::heartbeat::Versions;
use crate::raft::Member;
use crate::registry::ApplyOutcome;
use crate::registry::NodeId;
use crate::registry::Registry;
use crate::registry::RegistryCommand;

#[derive(Debug)]
pub(crate) enum WriteError {
    /// This node no longer leads: the term is over.
    NotLeader,
    /// Anything else; the next pass tries again.
    Failed(String),
}

pub(crate) type WriteFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ApplyOutcome, WriteError>> + Send + 'a>>;

pub(crate) trait MasterIo: Send + Sync + 'static {
    fn registry(&self) -> watch::Receiver<Arc<Registry>>;
    /// The Raft members (voters and learners) with their address and labels.
    fn members(&self) -> Vec<(NodeId, Member)>;
    /// Changes whenever the membership changes (cheap to poll).
    fn membership_version(&self) -> Option<u64>;
    /// The local replica's applied log index and a node's slice version, sent with heartbeats.
    fn versions(&self) -> Versions;
    fn transport(&self) -> Arc<dyn HeartbeatTransport>;
    /// Applies `cmd` through Raft on this node only (never forwarded). A fenced command from a
    /// term that is over comes back as `ApplyOutcome::StaleTerm`.
    fn write(&self, cmd: RegistryCommand) -> WriteFuture<'_>;
}
