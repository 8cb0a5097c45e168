//! herd's cluster layer: a Raft group (openraft over gRPC, durable in redb) that owns the
//! replicated app registry, with Redis or static-seed discovery for forming and joining.
//!
//! The daemon embeds one [`ClusterNode`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), herd_cluster::ClusterError> {
//! use herd_cluster::{ClusterConfig, ClusterNode, RegistryCommand};
//! let cfg = ClusterConfig::new(
//!     "prod",
//!     "10.0.0.11:9701",
//!     "0.0.0.0:9701".parse().unwrap(),
//!     "redis://10.0.0.5:6379/0".parse()?,
//!     "shared-secret",
//!     "/var/lib/herd/raft",
//! );
//! let node = ClusterNode::start(cfg).await?;
//! node.write(RegistryCommand::Noop).await?;
//! let registry = node.read(false).await?;
//! # let _ = registry;
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Master duties ([`master`]) run on the leader; every node runs the [`agent`], which drives the
//! daemon's local supervisor through [`LocalSupervisor`] (see [`ClusterNode::run_agent`]).

pub mod agent;
pub mod clock;
mod config;
pub mod discovery;
mod error;
mod ids;
pub mod master;
mod node;
pub mod raft;
pub mod registry;
pub mod schedule;
mod transport;

pub use agent::DesiredInstance;
pub use agent::DesiredRun;
pub use agent::InstanceReport;
pub use agent::InstanceStatus;
pub use agent::LocalSupervisor;
pub use agent::Resources;
pub use config::ClusterConfig;
pub use config::NodeRole;
pub use config::PeerTls;
pub use discovery::Discovery;
pub use error::ClusterError;
pub use error::with_causes;
pub use ids::NodeId;
pub use ids::Term;
pub use master::ClusterRuntime;
pub use master::DrainStatus;
pub use master::NodeRuntime;
pub use node::ClusterNode;
pub use node::ClusterStatus;
pub use node::MemberStatus;
pub use node::TlsRenewal;
pub use raft::Leadership;
pub use registry::Registry;
pub use registry::RegistryCommand;
pub use registry::RegistryResponse;
pub use transport::constant_time_eq;
pub use transport::limits;
pub use transport::throttle;
pub use transport::tls;
