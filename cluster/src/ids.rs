//! The two numbers that cross every module of the cluster crate, as types of their own, so a
//! node id is never passed where a term is expected (both were bare `u64`s): the master's term
//! fences its writes and heartbeats; node ids key the registry and the Raft membership. Both
//! serialize as the plain number they wrap (the Raft log, the registry and the wire keep their
//! formats).

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// A Raft term, as the master carries it: the term it was elected in. A write decided in one
/// term is refused when committed in another; a node refuses a heartbeat from a term older than
/// the highest it has seen.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Term(pub u64);

impl Term {
    /// The number on the wire and in Raft.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Debug prints the bare number too, so `?leader` in a log line reads `Some(5)`.
impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Term {
    fn from(term: u64) -> Term {
        Term(term)
    }
}

/// A node's id: random, chosen once per data dir, never reused. It keys the registry's nodes,
/// the Raft membership and every assignment.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The number on the wire, in Raft and in logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> NodeId {
        NodeId(id)
    }
}

impl std::str::FromStr for NodeId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<NodeId, Self::Err> {
        s.parse().map(NodeId)
    }
}

/// Node ids from numbers, for tests: `ids([1, 2])`.
#[cfg(test)]
pub(crate) fn ids<const N: usize>(numbers: [u64; N]) -> Vec<NodeId> {
    numbers.into_iter().map(NodeId).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_serializes_as_its_number_and_orders_like_it() {
        assert_eq!(serde_json::to_string(&Term(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<Term>("7").unwrap(), Term(7));
        assert!(Term(2) < Term(10));
        assert_eq!(Term(3).to_string(), "3");
    }

    #[test]
    fn a_node_id_serializes_as_its_number_also_as_a_map_key() {
        let ids: std::collections::BTreeMap<NodeId, u8> = [(NodeId(12), 1)].into();
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(json, r#"{"12":1}"#);
        assert_eq!(
            serde_json::from_str::<std::collections::BTreeMap<NodeId, u8>>(&json).unwrap(),
            ids
        );
        assert_eq!("42".parse::<NodeId>().unwrap(), NodeId(42));
    }
}
