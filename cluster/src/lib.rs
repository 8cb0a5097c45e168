//! herd's cluster layer: Raft group, replicated registry, Redis discovery, the master's
//! duties and the agent that reconciles assignments into the local supervisor.
//!
//! Empty until the cluster-core issue lands; the standalone supervisor does not depend on it.
