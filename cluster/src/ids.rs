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
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
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

impl From<u64> for Term {
    fn from(term: u64) -> Term {
        Term(term)
    }
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
}
