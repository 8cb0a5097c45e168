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

/// `head` followed by the causes under `e`, each once. tonic wraps the useful part of a failure
/// (the TLS or HTTP/2 error) in sources its own message leaves out.
pub fn with_causes(head: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = head.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text = format!("{text}: {part}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod cause_tests {
    use super::*;

    #[test]
    fn causes_follow_the_head_once_each() {
        let e = ClusterError::Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::other("address in use"),
        };
        assert_eq!(with_causes("bind", &e), "bind: address in use");
        assert_eq!(
            with_causes("bind failed: address in use", &e),
            "bind failed: address in use",
            "a cause the head already ends with is not repeated"
        );
    }
}
