//! A master's heartbeat as the agent checks it, and why the agent refuses one. Acceptance is
//! domain logic (`AgentState::accept`); only the gRPC service turns a refusal into a status.

use herd_proto::cluster as pb;
use tonic::Status;

use crate::NodeId;
use crate::Term;

/// One heartbeat from a master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub master_id: NodeId,
    /// The master's Raft term.
    pub term: Term,
    /// The node the master means to reach (`None`, 0 on the wire: whoever answers).
    pub node_id: Option<NodeId>,
    /// The version of this node's slice in the master's registry when it sent this.
    pub slice_version: u64,
    /// The latest reply (its sequence number) the master received from this node; 0 = none.
    pub lease_ack: u64,
}

impl From<&pb::HeartbeatRequest> for Heartbeat {
    fn from(req: &pb::HeartbeatRequest) -> Heartbeat {
        Heartbeat {
            master_id: NodeId(req.master_id),
            term: Term(req.term),
            node_id: (req.node_id != 0).then_some(NodeId(req.node_id)),
            slice_version: req.slice_version,
            lease_ack: req.lease_ack,
        }
    }
}

/// Why a heartbeat was refused. The messages are what masters receive (and match on), so they
/// must not change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// This address is now served by another node (it was taken over).
    #[error("this address serves node {serves}, not node {asked}")]
    WrongNode { serves: NodeId, asked: NodeId },
    /// The master's term is below the highest this node has seen or its own Raft term.
    #[error("stale master term {term}: this node has seen term {seen}")]
    StaleTerm { term: Term, seen: Term },
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        match refusal {
            Refusal::StaleTerm { term, seen } => super::fence::stale_term(term, seen),
            other => Status::failed_precondition(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_reach_the_master_as_failed_preconditions_with_todays_messages() {
        let s = Status::from(Refusal::StaleTerm {
            term: Term(5),
            seen: Term(6),
        });
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "stale master term 5: this node has seen term 6"
        );
        let s = Status::from(Refusal::WrongNode {
            serves: NodeId(7),
            asked: NodeId(8),
        });
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(s.message(), "this address serves node 7, not node 8");
    }

    #[test]
    fn a_request_becomes_a_heartbeat_field_by_field() {
        let req = pb::HeartbeatRequest {
            master_id: 1,
            term: 2,
            node_id: 3,
            applied_index: 9,
            lease_ack: 5,
            slice_version: 4,
            master_addr: String::new(),
            report_ack: 0,
        };
        assert_eq!(
            Heartbeat::from(&req),
            Heartbeat {
                master_id: NodeId(1),
                term: Term(2),
                node_id: Some(NodeId(3)),
                slice_version: 4,
                lease_ack: 5,
            }
        );
    }
}
