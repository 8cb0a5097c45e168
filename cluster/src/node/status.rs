//! What `herd cluster status` shows, read from openraft's metrics; reachability is only known
//! by the leader, so followers ask it (see `ClusterNode::status`).

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::Instant as _;
use openraft::RaftMetrics;
use openraft::ServerState;
use serde::Deserialize;
use serde::Serialize;

use crate::NodeId;
use crate::Term;
use crate::raft::TypeConfig;

/// A point-in-time view of the cluster from one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub node_id: NodeId,
    pub advertise: String,
    /// "leader", "follower", "candidate" or "learner".
    pub role: String,
    pub leader_id: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub term: Term,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// "voter" or "learner".
    pub role: String,
    /// As seen by the leader; `None` when the leader could not be asked.
    pub reachable: Option<bool>,
    /// Milliseconds since the leader last heard from this member (0 for the leader itself).
    pub last_contact_ms: Option<u64>,
    /// Highest log index known to be replicated to this member.
    pub matched_index: Option<u64>,
}

/// A member counts as reachable if the leader heard from it within this window.
pub(crate) fn reachable_window(heartbeat_ms: u64) -> Duration {
    Duration::from_millis((heartbeat_ms * 20).max(2_000))
}

/// This node's own view; reachability is filled in only when this node is the leader.
pub(crate) fn local_status(
    cluster: &str,
    advertise: &str,
    heartbeat_ms: u64,
    m: &RaftMetrics<TypeConfig>,
) -> ClusterStatus {
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let is_leader = m.state == ServerState::Leader;
    let window = reachable_window(heartbeat_ms);
    let members = membership
        .nodes()
        .map(|(&id, node)| {
            let contact = if id == m.id && is_leader {
                Some(Duration::ZERO)
            } else {
                m.heartbeat
                    .as_ref()
                    .and_then(|h| h.get(&id).cloned().flatten())
                    .map(|t| t.elapsed())
            };
            let matched_index = if id == m.id {
                m.last_log_index
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
            };
            MemberStatus {
                id,
                addr: node.addr.clone(),
                labels: node.labels.clone(),
                role: if voters.contains(&id) {
                    "voter"
                } else {
                    "learner"
                }
                .to_string(),
                reachable: is_leader.then(|| contact.is_some_and(|c| c < window)),
                last_contact_ms: contact.map(|c| c.as_millis() as u64),
                matched_index: if is_leader || id == m.id {
                    matched_index
                } else {
                    None
                },
            }
        })
        .collect();
    let leader_addr = m
        .current_leader
        .and_then(|l| membership.get_node(&l))
        .map(|n| n.addr.clone());
    ClusterStatus {
        cluster: cluster.to_string(),
        node_id: m.id,
        advertise: advertise.to_string(),
        role: role_name(m.state, voters.contains(&m.id)).to_string(),
        leader_id: m.current_leader,
        leader_addr,
        term: Term(m.current_term),
        last_log_index: m.last_log_index,
        committed_index: m.local_committed.map(|l| l.index),
        applied_index: m.last_applied.map(|l| l.index),
        members,
    }
}

fn role_name(state: ServerState, is_voter: bool) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower if is_voter => "follower",
        _ => "learner",
    }
}
