//! The replicated registry: what the cluster runs and where. Every node holds a replica that
//! changes only by applying committed [`RegistryCommand`]s in log order, so `apply` must stay a
//! pure, deterministic function of (registry, command).

pub mod access;
mod apply;
mod command;
pub mod jobs;
mod moves;
mod nodes;
mod slice;
mod uptime;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

pub use command::ApplyOutcome;
pub use command::Assignment;
pub use command::InstanceMove;
pub use command::InstanceRef;
pub use command::RegistryCommand;
pub use command::RegistryResponse;
pub use command::StaleTerm;
pub use command::UptimeSample;
pub use slice::NodeSlice;

pub use crate::ids::NodeId;

/// One day in milliseconds: the width of an uptime bucket.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The whole replicated state. Cheap to share as `Arc<Registry>`; cloned once per applied batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Apps by name.
    pub apps: BTreeMap<String, App>,
    /// Cluster nodes as the master sees them.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// app name → instance index → node running it.
    pub assignments: BTreeMap<String, BTreeMap<u32, NodeId>>,
    /// node → day index (`ms / DAY_MS`) → samples.
    pub uptime: BTreeMap<NodeId, BTreeMap<u64, UptimeBucket>>,
    /// Scratch key/value space for tests and benchmarks (`RegistryCommand::Put`).
    pub kv: BTreeMap<String, String>,
    /// Moves in progress: app → instance → the node still running its old copy (the new node
    /// is the one in `assignments`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub moves: BTreeMap<String, BTreeMap<u32, NodeId>>,
    /// Rolling restarts: app → restart generation and the instances still to restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restarts: BTreeMap<String, RestartState>,
    /// Width of the uptime buckets in `uptime` (`None`: one day, keys are day indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_bucket_ms: Option<u64>,
    /// API tokens (hashes) and sealed secrets, the same on every node.
    #[serde(default, skip_serializing_if = "access::AccessBook::is_empty")]
    pub access: access::AccessBook,
    /// node → log index of the last applied command that may have changed the node's slice
    /// (what it runs, see [`Registry::slice_for`]): agents hold no replica and refetch their
    /// slice only when this moves. Absent: unchanged since before versions were kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slice_versions: BTreeMap<NodeId, u64>,
    /// Log index of the last applied change to `access`, which every slice carries whole.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub access_version: u64,
    /// Jobs by name, with their runs (`jobs.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, jobs::ClusterJob>,
}

/// For `skip_serializing_if`: a version never bumped stays out of snapshots.
fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Registry {
    /// Instances of `app` assigned to `node`, in instance order.
    pub fn instances_on(&self, node: NodeId) -> Vec<InstanceRef> {
        let mut out = Vec::new();
        for (app, instances) in &self.assignments {
            for (&instance, &n) in instances {
                if n == node {
                    out.push(InstanceRef {
                        app: app.clone(),
                        instance,
                    });
                }
            }
        }
        out
    }

    /// Instances whose move away from `node` is not finished: `node` keeps running them.
    pub fn moving_from(&self, node: NodeId) -> Vec<InstanceRef> {
        let mut out = Vec::new();
        for (app, instances) in &self.moves {
            for (&instance, &n) in instances {
                if n == node {
                    out.push(InstanceRef {
                        app: app.clone(),
                        instance,
                    });
                }
            }
        }
        out
    }

    /// The node an instance is assigned to.
    pub fn assigned_node(&self, app: &str, instance: u32) -> Option<NodeId> {
        self.assignments.get(app)?.get(&instance).copied()
    }

    /// The node still running the old copy of a moving instance.
    pub fn moving_from_node(&self, app: &str, instance: u32) -> Option<NodeId> {
        self.moves.get(app)?.get(&instance).copied()
    }

    /// The restart generation instance `instance` of `app` should run at (0 before any restart).
    pub fn generation_of(&self, app: &str, instance: u32) -> u64 {
        self.restarts
            .get(app)
            .map_or(0, |r| r.generation_of(instance))
    }

    /// Width of the uptime buckets.
    pub fn uptime_bucket_ms(&self) -> u64 {
        self.uptime_bucket_ms.unwrap_or(DAY_MS)
    }
}

/// A rolling restart: the generation asked for, and the instances still running an older one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartState {
    pub generation: u64,
    /// instance → the generation it runs at until the master rolls it (absent: `generation`).
    #[serde(default)]
    pub pending: BTreeMap<u32, u64>,
}

impl RestartState {
    pub fn generation_of(&self, instance: u32) -> u64 {
        self.pending
            .get(&instance)
            .copied()
            .unwrap_or(self.generation)
    }
}

/// A deployed app: its spec is opaque to the cluster (the supervisor owns its meaning).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub spec: serde_json::Value,
    /// Desired number of instances.
    pub instances: u32,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub on_disconnect: OnDisconnect,
}

/// Where instances may run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Node labels an eligible node must carry (all of them, exact values).
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    /// Spread instances across the values of this node label (e.g. "zone").
    #[serde(default)]
    pub spread: Option<String>,
    #[serde(default)]
    pub max_per_node: Option<u32>,
}

/// What the instances of a node that lost contact with the master should do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    /// Keep running (the default): a network blip must not stop workloads.
    #[default]
    Keep,
    Stop,
}

/// A node as recorded by the master.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub addr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub status: NodeStatus,
    pub last_seen_ms: u64,
    /// CPU, memory, ... as reported in heartbeats; opaque here.
    #[serde(default)]
    pub resources: serde_json::Value,
    /// An operator asked to drain this node (`herd cluster drain`): it stays `Draining` while
    /// reachable, also after being offline, until undrained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
    /// The herd version the node registered with (agents register; members are recorded by
    /// the master from the Raft membership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The node's config pins it to the agent role: never made a standby or voter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_only: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    #[default]
    Online,
    Offline,
    /// Takes no new instances; existing ones are moved away by the master.
    Draining,
    /// Left the cluster on purpose.
    Left,
}

/// Uptime samples of one node for one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UptimeBucket {
    pub up_samples: u64,
    pub total_samples: u64,
    /// Time of the newest sample counted; older or equal samples are ignored, which makes a
    /// retried `RecordUptime` harmless.
    pub last_sample_ms: u64,
}
