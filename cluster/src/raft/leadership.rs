//! Whether this node leads, as the master duties need it, read from openraft's metrics, and
//! the task that publishes it on a watch channel. Raft-level: the master follows it without
//! knowing about the node façade.

use std::time::Duration;

use openraft::Instant as _;
use openraft::RaftMetrics;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::vote::RaftLeaderId;
use tokio::sync::watch;

use super::HerdRaft;
use super::TypeConfig;
use crate::Term;
use crate::registry::NodeId;

/// Whether this node leads, as the master duties need it: a term to fence with, and a clear
/// edge when leadership is gained or lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// This node is the leader, confirmed by a quorum, in `term`.
    Leader { term: Term },
    /// Another node leads (or none is known) in `term`.
    Follower { term: Term, leader: Option<NodeId> },
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }

    pub fn term(&self) -> Term {
        match self {
            Leadership::Leader { term } | Leadership::Follower { term, .. } => *term,
        }
    }

    /// `Leader` needs more than openraft's leader state: the vote must be granted by a quorum
    /// and a quorum must have acknowledged this leader within `lease` (its leader lease). A
    /// leader cut off from the majority therefore stops calling itself leader about when the
    /// others may elect a new one, even before it hears of the higher term.
    pub(crate) fn from_metrics(m: &RaftMetrics<TypeConfig>, lease: Duration) -> Leadership {
        let term = Term(m.current_term);
        let leader_id = m.vote.leader_id();
        let is_self = *leader_id.node_id() == m.id;
        let single_voter = m.membership_config.membership().voter_ids().count() <= 1;
        // No acknowledgement yet (just elected, or the membership just changed) is fine: the
        // quorum-granted vote is fresh. A stale one means this leader may be cut off.
        let lease_ok = single_voter
            || m.last_quorum_acked
                .as_ref()
                .is_none_or(|t| t.elapsed() < lease);
        if m.state == ServerState::Leader && m.vote.is_committed() && is_self && lease_ok {
            Leadership::Leader {
                term: Term(leader_id.term()),
            }
        } else {
            let leader = m.current_leader.filter(|&l| l != m.id || lease_ok);
            Leadership::Follower { term, leader }
        }
    }
}

/// Publishes `Leadership` whenever it changes: on Raft metrics changes, and on a tick, because
/// a lapsing lease changes no metric.
pub(crate) async fn publish(
    raft: HerdRaft,
    lease: Duration,
    tx: watch::Sender<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let node_id = *raft.node_id();
    let mut tick = tokio::time::interval(lease / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Leadership::from_metrics(&metrics.borrow_watched(), lease);
        tx.send_if_modified(|cur| {
            let changed = *cur != now;
            if changed {
                tracing::info!(node_id = node_id.get(), leadership = ?now, "leadership changed");
                *cur = now;
            }
            changed
        });
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            r = metrics.changed() => if r.is_err() { return },
        }
    }
}
