//! The master's live view of the cluster for `herd cluster nodes/apps`: per node its status,
//! when it last answered, its resources and the instances it reports. Built on the leader from
//! the registry and the term's `HealthTable`; other nodes forward the question.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use super::health::HealthTable;
use super::health::ReportedInstance;
use super::storm::RescheduleMode;
use crate::Term;
use crate::registry::NodeId;
use crate::registry::NodeStatus;
use crate::registry::Registry;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterRuntime {
    /// The master (leader) that answered, and its term.
    pub master: NodeId,
    pub term: Term,
    /// Wall-clock milliseconds when this view was taken.
    pub at_ms: u64,
    pub nodes: Vec<NodeRuntime>,
    pub heartbeats: HeartbeatTotals,
    /// How instances of offline nodes are rescheduled (`Frozen`: the master believes it is cut
    /// off). Absent in views from older masters.
    #[serde(default)]
    pub reschedule_mode: RescheduleMode,
}

impl ClusterRuntime {
    pub fn node(&self, id: NodeId) -> Option<&NodeRuntime> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Where each instance of `app` runs, as reported: (node, instance).
    pub fn running(&self, app: &str) -> Vec<(NodeId, &ReportedInstance)> {
        let mut out: Vec<(NodeId, &ReportedInstance)> = self
            .nodes
            .iter()
            .flat_map(|n| {
                n.instances
                    .iter()
                    .filter(|i| i.app == app)
                    .map(move |i| (n.id, i))
            })
            .collect();
        out.sort_by_key(|(n, i)| (i.instance, *n));
        out
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRuntime {
    pub id: NodeId,
    pub addr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub status: NodeStatus,
    pub draining: bool,
    /// Wall-clock ms of the last heartbeat answer in this master's term (`None`: not yet).
    pub last_seen_ms: Option<u64>,
    /// Milliseconds since the last answer (or since this master started watching the node).
    pub silent_ms: u64,
    pub rtt_us: Option<u64>,
    pub version: Option<String>,
    pub resources: serde_json::Value,
    pub instances: Vec<ReportedInstance>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatTotals {
    pub sent_total: u64,
    pub ok_total: u64,
    pub failed_total: u64,
    pub fenced_total: u64,
    pub rtt_p50_us: Option<u64>,
    pub rtt_p99_us: Option<u64>,
    /// Round trips per bound of `RTT_BOUNDS_US` (+Inf last), not cumulative; empty from
    /// older masters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtt_buckets: Vec<u64>,
    #[serde(default)]
    pub rtt_sum_us: u64,
}

pub(crate) fn build(
    master: NodeId,
    term: Term,
    reg: &Registry,
    health: &HealthTable,
) -> ClusterRuntime {
    use std::sync::atomic::Ordering::Relaxed;
    let now = crate::clock::now();
    let seen = health.snapshot();
    let nodes = reg
        .nodes
        .values()
        .map(|rec| {
            let h = seen.get(&rec.id);
            let report = h.and_then(|h| h.report.as_ref());
            NodeRuntime {
                id: rec.id,
                addr: rec.addr.clone(),
                labels: rec.labels.clone(),
                status: rec.status,
                draining: rec.drain,
                last_seen_ms: h.and_then(|h| h.last_answer).map(|t| health.clock.ms_at(t)),
                silent_ms: h.map_or(0, |h| {
                    now.duration_since(h.silent_since()).as_millis() as u64
                }),
                rtt_us: h.and_then(|h| h.last_rtt).map(|d| d.as_micros() as u64),
                version: report.map(|r| r.version.clone()),
                resources: report.map_or(serde_json::Value::Null, |r| r.resources()),
                instances: report.map(|r| r.instances.clone()).unwrap_or_default(),
                last_error: h.and_then(|h| h.last_error.clone()),
            }
        })
        .collect();
    let s = &health.stats;
    let (rtt_buckets, rtt_sum_us) = s.rtt.classic();
    ClusterRuntime {
        master,
        term,
        at_ms: health.clock.now_ms(),
        nodes,
        heartbeats: HeartbeatTotals {
            sent_total: s.sent_total.load(Relaxed),
            ok_total: s.ok_total.load(Relaxed),
            failed_total: s.failed_total.load(Relaxed),
            fenced_total: s.fenced_total.load(Relaxed),
            rtt_p50_us: s.rtt.quantile(0.5).map(|d| d.as_micros() as u64),
            rtt_p99_us: s.rtt.quantile(0.99).map(|d| d.as_micros() as u64),
            rtt_buckets,
            rtt_sum_us,
        },
        reschedule_mode: health.reschedule_mode(),
    }
}
