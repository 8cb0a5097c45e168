//! The daemon's side of the cluster: the `[cluster]` section of its config, and the local
//! admin API behind `herd cluster ...`. The cluster itself (Raft, registry, discovery) lives
//! in the `herd-cluster` crate; this module only wires it into the daemon.

pub mod admin;
pub mod bridge;
pub mod offline;
pub mod replies;
mod section;

pub use section::ClusterSection;
