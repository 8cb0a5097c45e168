//! Errors of the cluster library. Each names the thing involved (node, address, path) so the
//! daemon can show it as is.

use std::path::PathBuf;

use crate::discovery::DiscoveryError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid cluster config: {0}")]
    Config(String),

    #[error("raft storage at {}: {message}", path.display())]
    Storage { path: PathBuf, message: String },

    #[error("cannot listen for cluster traffic on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("no leader is known; the cluster may still be forming or has lost its quorum")]
    NoLeader,

    #[error("request to node {node_id} at {addr} failed: {message}")]
    Peer {
        node_id: u64,
        addr: String,
        message: String,
    },

    #[error("raft: {0}")]
    Raft(String),

    #[error("timed out after {after_ms} ms waiting for {what}")]
    Timeout { what: String, after_ms: u64 },

    #[error("membership change refused: {0}")]
    Membership(String),

    #[error(transparent)]
    Discovery(#[from] DiscoveryError),

    #[error("the cluster node is shutting down")]
    Shutdown,

    #[error("{what} refused: {reason}")]
    Rejected { what: String, reason: String },
}
