//! herd's Raft plumbing on openraft: the type configuration (in one place), the durable redb log
//! store, the registry state machine with snapshots, the gRPC network between members, and the
//! leadership signal the master follows.

mod codec;
mod engine;
pub(crate) mod leadership;
pub(crate) mod log_store;
pub(crate) mod network;
pub(crate) mod service;
pub(crate) mod state_machine;
mod storage;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::registry::ApplyOutcome;
use crate::registry::RegistryCommand;

pub(crate) use codec::decode;
pub(crate) use codec::encode;
pub use engine::HerdRaft;
pub use engine::NotLeader;
pub use engine::OpenRaft;
pub use leadership::Leadership;
pub(crate) use log_store::LogStore;
pub(crate) use state_machine::StateMachine;
pub(crate) use storage::DbSlot;
pub(crate) use storage::RaftStorage;

openraft::declare_raft_types!(
    /// herd's Raft types: registry commands in the log, `NodeId`s, members with an address.
    /// Standard Raft leader ids: at most one leader per term, so a term alone fences the
    /// master (openraft's default "advanced" ids allow several leaders in one term, ordered by
    /// node id — the chaos suite saw two nodes start master duties in one term).
    pub TypeConfig:
        D = RegistryCommand,
        R = ApplyOutcome,
        NodeId = crate::NodeId,
        Node = Member,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, crate::NodeId>,
);

/// A member of the Raft group as stored in the membership config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// host:port other nodes use to reach this node's cluster gRPC.
    pub addr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// openraft settings derived from the cluster config. Timing is chosen so a lost leader is
/// replaced fast on a LAN: a follower campaigns `election_max + rand(election_min..election_max)`
/// after the last heartbeat (openraft adds a leader lease of `election_max` first).
pub(crate) fn raft_config(cfg: &ClusterConfig) -> Result<Arc<openraft::Config>, ClusterError> {
    let config = openraft::Config {
        cluster_name: cfg.name.clone(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_min_ms,
        election_timeout_max: cfg.election_max_ms,
        // A snapshot is one gRPC message carrying the whole registry: allow it time.
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
        max_in_snapshot_log_to_keep: 1_000,
        purge_batch_size: 256,
        // Pre-Vote keeps a node that rejoins after a partition from bumping the term.
        enable_pre_vote: Some(true),
        // A node restarted with a wiped data dir keeps its id: let the leader replicate to it
        // from scratch instead of treating its empty log as a protocol violation.
        allow_log_reversion: Some(true),
        // A restarted leader must win an election again: otherwise it briefly believes it still
        // leads its old term, and the master duties would start on a stale term.
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| ClusterError::Config(format!("raft timing: {e}")))
}
