//! The replies of the ClusterAdmin service, one type each, shared by the daemon that builds them
//! and the CLI that reads them. JSON is the wire format and what `--json` prints, so field names
//! are a contract with scripts and tests: rename nothing here.

use herd_cluster::NodeId;
use herd_cluster::registry::{NodeStatus, OnDisconnect, Placement, RestartState, UptimeBucket};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use herd_cluster::ClusterStatus;
pub use herd_cluster::DrainStatus;

/// `cluster status`: the Raft view of `ClusterStatus` (every field of it, `members` included,
/// at the top level as before) plus `nodes`, every node of the cluster with its health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    #[serde(flatten)]
    pub status: ClusterStatus,
    /// Raft members and agents, by id; what `cluster nodes --json` prints.
    #[serde(default)]
    pub nodes: Vec<NodeView>,
}

/// One node of the cluster as `cluster nodes` shows it: the Raft membership's view (role,
/// reachability) merged with the master's (health, heartbeats, what the node reports).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub addr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// "voter" and "standby" (a Raft learner) are Raft members; "agent" is a node the master
    /// knows that is not in the Raft membership.
    pub role: String,
    /// Raft members only, as in `members`: as seen by the leader (`None`: not asked).
    pub reachable: Option<bool>,
    /// Raft members only: milliseconds since the leader last heard from it.
    pub last_contact_ms: Option<u64>,
    /// Raft members only: highest log index known to be replicated to it.
    pub matched_index: Option<u64>,
    /// The master's view: online | offline | draining | left; `None` when no master
    /// answered or the master does not know the node (yet).
    pub health: Option<NodeStatus>,
    /// Milliseconds since the node last answered the master's heartbeat (`None`: not yet in
    /// this master's term, or no master answered).
    pub last_heartbeat_ms: Option<u64>,
    /// Instances the node reports in its heartbeat answers (`None`: no master answered).
    pub instances: Option<u64>,
    /// Host resources the node reports (cpus, cpu_percent, load1, mem_*); `null` if unknown.
    #[serde(default)]
    pub resources: serde_json::Value,
    /// The herd version the node reports.
    pub version: Option<String>,
}

/// `cluster step-down`: the leader that stepped down (none known: `null`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteppedDown {
    pub stepped_down: Option<NodeId>,
}

/// `cluster leave`: the node that left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    pub left: NodeId,
}

/// `cluster deploy`: the apps written to the registry, in file order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub deployed: Vec<String>,
    /// Jobs of the file, registered for the master to dispatch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
}

/// `cluster undeploy`: the app removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undeployed {
    pub undeployed: String,
}

/// `cluster scale`: the app and its new instance count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaled {
    pub scaled: String,
    pub instances: u32,
}

/// `cluster restart`: the app and the roll generation its instances must reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarting {
    pub restarting: String,
    pub generation: u64,
}

/// `cluster uptime`: every node's daily samples; day `d` starts at `d * day_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uptime {
    pub day_ms: u64,
    pub nodes: Vec<NodeUptime>,
}

/// One node's uptime record: day number → samples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUptime {
    pub id: NodeId,
    pub addr: String,
    pub status: NodeStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub days: BTreeMap<u64, UptimeBucket>,
}

/// `cluster apps`: one deployed app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedApp {
    pub name: String,
    pub desired: u32,
    pub placement: Placement,
    pub on_disconnect: OnDisconnect,
    /// instance → node.
    pub assignments: BTreeMap<u32, NodeId>,
    /// The rolling restart in progress, if any.
    pub restart: Option<RestartState>,
    /// Where instances run per the master's last heartbeats; `None` when no master answered.
    pub running: Option<Vec<RunningInstance>>,
}

/// One instance of an app as a node last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningInstance {
    pub node: NodeId,
    pub instance: u32,
    /// The supervisor's status string (starting | running | backoff | stopping | stopped |
    /// crashed), as the master received it.
    pub status: String,
    pub pid: Option<u32>,
    pub generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    /// Today's JSON (as `json!` built it) parses into the type and comes back identical.
    fn round_trips<T: Serialize + DeserializeOwned>(today: serde_json::Value) {
        let typed: T = serde_json::from_value(today.clone()).expect("parses");
        assert_eq!(serde_json::to_value(&typed).unwrap(), today);
    }

    #[test]
    fn status_keeps_every_cluster_status_field_at_the_top_and_adds_nodes() {
        let status = json!({
            "cluster": "e2e", "node_id": 1, "advertise": "127.0.0.1:7001", "role": "leader",
            "leader_id": 1, "leader_addr": "127.0.0.1:7001", "term": 2,
            "last_log_index": 9, "committed_index": 9, "applied_index": 9,
            "members": [{
                "id": 1, "addr": "127.0.0.1:7001", "labels": {}, "role": "learner",
                "reachable": true, "last_contact_ms": 0, "matched_index": 9,
            }],
        });
        // What older daemons sent still parses, with no nodes.
        let old: StatusReply = serde_json::from_value(status.clone()).unwrap();
        assert!(old.nodes.is_empty());
        let mut today = status;
        today["nodes"] = json!([{
            "id": 1, "addr": "127.0.0.1:7001", "labels": { "zone": "a" }, "role": "standby",
            "reachable": true, "last_contact_ms": 0, "matched_index": 9,
            "health": "online", "last_heartbeat_ms": 120, "instances": 2,
            "resources": { "cpus": 4 }, "version": "0.1.0",
        }, {
            "id": 7, "addr": "127.0.0.1:7007", "labels": {}, "role": "agent",
            "reachable": null, "last_contact_ms": null, "matched_index": null,
            "health": null, "last_heartbeat_ms": null, "instances": null,
            "resources": null, "version": null,
        }]);
        round_trips::<StatusReply>(today);
    }

    #[test]
    fn small_replies_keep_their_field_names() {
        round_trips::<SteppedDown>(json!({ "stepped_down": 3 }));
        round_trips::<SteppedDown>(json!({ "stepped_down": null }));
        round_trips::<Left>(json!({ "left": 2 }));
        round_trips::<Deployed>(json!({ "deployed": ["api", "web"] }));
        round_trips::<Undeployed>(json!({ "undeployed": "api" }));
        round_trips::<Scaled>(json!({ "scaled": "api", "instances": 4 }));
        round_trips::<Restarting>(json!({ "restarting": "api", "generation": 7 }));
    }

    #[test]
    fn uptime_keeps_its_shape() {
        round_trips::<Uptime>(json!({
            "day_ms": 86_400_000u64,
            "nodes": [{
                "id": 1, "addr": "127.0.0.1:7001", "status": "online", "labels": { "zone": "a" },
                "days": { "20000": { "up_samples": 5, "total_samples": 6, "last_sample_ms": 9 } },
            }],
        }));
    }

    #[test]
    fn apps_keep_their_shape_with_and_without_a_master() {
        let app = |running: serde_json::Value| {
            json!({
                "name": "api",
                "desired": 2,
                "placement": serde_json::to_value(Placement::default()).unwrap(),
                "on_disconnect": "keep",
                "assignments": { "0": 1, "1": 2 },
                "restart": { "generation": 3, "pending": { "1": 2 } },
                "running": running,
            })
        };
        round_trips::<DeployedApp>(app(json!([
            { "node": 1, "instance": 0, "status": "running", "pid": 42, "generation": 3 },
            { "node": 2, "instance": 1, "status": "backoff", "pid": null, "generation": 2 },
        ])));
        round_trips::<DeployedApp>(app(json!(null)));
    }
}
