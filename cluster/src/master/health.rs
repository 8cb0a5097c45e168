//! What one master term knows about every node's health, in memory: when it last answered,
//! since when this master watches it (the grace period after an election), and its latest
//! report. `judge` turns that into status changes for the sweep.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use herd_proto::cluster as pb;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use super::stats::HeartbeatStats;
use super::storm::RescheduleMode;
use crate::clock::WallClock;
use crate::registry::NodeId;
use crate::registry::NodeRecord;
use crate::registry::NodeStatus;

/// One cluster instance as a node last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedInstance {
    pub app: String,
    pub instance: u32,
    /// starting | running | backoff | stopping | stopped | crashed
    pub status: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// The restart generation the instance was (re)started for.
    pub generation: u64,
}

/// The host resources placement looks at (the full JSON is kept as reported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub cpu_percent: f64,
    pub mem_used_bytes: f64,
    pub mem_total_bytes: f64,
    pub load1: f64,
}

impl Usage {
    /// Lower is less busy: CPU share plus memory share.
    pub fn score(&self) -> f64 {
        let mem = if self.mem_total_bytes > 0.0 {
            self.mem_used_bytes / self.mem_total_bytes
        } else {
            0.0
        };
        self.cpu_percent / 100.0 + mem
    }
}

/// A node's latest heartbeat reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub version: String,
    /// The resources JSON as the node sent it (parsed on demand: most are never looked at).
    pub resources_json: String,
    pub usage: Usage,
    pub instances: Vec<ReportedInstance>,
    /// The node's version of `instances` (0: a node that does not number its reports).
    #[serde(default)]
    pub report_version: u64,
}

impl NodeReport {
    /// The report a reply makes, given the one held before (`prev`): a reply that leaves its
    /// instance list out (unchanged since the version acknowledged) keeps `prev`'s, and one
    /// without resources keeps `prev`'s resources. A reply that says "unchanged" about a
    /// version this master does not hold keeps what it has but is numbered 0, so the next
    /// heartbeat asks for everything.
    pub(crate) fn from_reply(reply: pb::HeartbeatReply, prev: Option<&NodeReport>) -> NodeReport {
        let (instances, report_version) = if reply.report_unchanged {
            match prev {
                Some(p) if p.report_version == reply.report_version => {
                    (p.instances.clone(), reply.report_version)
                }
                Some(p) => (p.instances.clone(), 0),
                None => (Vec::new(), 0),
            }
        } else {
            let list = reply
                .instances
                .into_iter()
                .map(|i| ReportedInstance {
                    app: i.app,
                    instance: i.instance,
                    status: i.status,
                    pid: i.pid,
                    restarts: i.restarts,
                    generation: i.generation,
                })
                .collect();
            (list, reply.report_version)
        };
        let (resources_json, usage) = match prev {
            Some(p) if reply.resources_json.is_empty() => (p.resources_json.clone(), p.usage),
            _ => (
                reply.resources_json.clone(),
                serde_json::from_str(&reply.resources_json).unwrap_or_default(),
            ),
        };
        NodeReport {
            version: reply.version,
            usage,
            resources_json,
            instances,
            report_version,
        }
    }

    pub fn resources(&self) -> serde_json::Value {
        serde_json::from_str(&self.resources_json).unwrap_or(serde_json::Value::Null)
    }

    pub fn instance(&self, app: &str, instance: u32) -> Option<&ReportedInstance> {
        self.instances
            .iter()
            .find(|i| i.app == app && i.instance == instance)
    }
}

#[derive(Clone, Debug)]
pub struct NodeHealth {
    pub addr: String,
    /// When this master started watching the node: its election, or when the node appeared.
    pub watched_since: Instant,
    /// The last heartbeat this master got an answer to.
    pub last_answer: Option<Instant>,
    pub last_rtt: Option<Duration>,
    /// Shared, so snapshots of thousands of nodes stay cheap.
    pub report: Option<Arc<NodeReport>>,
    pub last_error: Option<String>,
    /// The latest reply number it sent, acknowledged in the next heartbeat (its lease).
    pub reply_seq: u64,
    /// It answered after a silence longer than a lease: no acknowledgement (no lease) until a
    /// sweep has settled its status, so a lease can never overlap a move decided meanwhile.
    pub lapsed: bool,
}

impl NodeHealth {
    /// The node has been silent since this instant (the grace period counts as heard).
    pub fn silent_since(&self) -> Instant {
        self.last_answer
            .map_or(self.watched_since, |a| a.max(self.watched_since))
    }
}

/// Health of every node watched by one master term. Heartbeat tasks write it; the sweep, the
/// planner and `ClusterNode::runtime` read it.
pub struct HealthTable {
    nodes: Mutex<HashMap<NodeId, NodeHealth>>,
    pub clock: WallClock,
    pub stats: HeartbeatStats,
    /// How long a node's singleton lease lasts (an answer after a longer silence has lapsed).
    lease: Duration,
    /// How the term reschedules instances of offline nodes now (`storm.rs`), for the runtime view.
    reschedule_mode: Mutex<RescheduleMode>,
}

impl HealthTable {
    pub fn new(clock: WallClock) -> HealthTable {
        HealthTable {
            nodes: Mutex::new(HashMap::new()),
            clock,
            stats: HeartbeatStats::default(),
            lease: Duration::MAX,
            reschedule_mode: Mutex::new(RescheduleMode::Normal),
        }
    }

    /// Nodes hold singleton leases of `lease` (7/8 of the offline timeout).
    pub fn with_lease(mut self, lease: Duration) -> HealthTable {
        self.lease = lease;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, NodeHealth>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `id` (grace from now) or updates its address. A node the registry
    /// holds offline starts lapsed: a previous master decided it was gone and may have moved
    /// its instances (or this term's rescheduler is about to), so however soon it answers this
    /// master, it holds no singleton lease until a sweep has written it online again.
    pub fn watch(&self, id: NodeId, addr: &str, now: Instant, offline: bool) {
        let mut nodes = self.lock();
        match nodes.get_mut(&id) {
            Some(h) => {
                if h.addr != addr {
                    h.addr = addr.to_string();
                }
            }
            None => {
                nodes.insert(
                    id,
                    NodeHealth {
                        addr: addr.to_string(),
                        watched_since: now,
                        last_answer: None,
                        last_rtt: None,
                        report: None,
                        last_error: None,
                        reply_seq: 0,
                        lapsed: offline,
                    },
                );
            }
        }
    }

    pub fn forget(&self, id: NodeId) {
        self.lock().remove(&id);
    }

    /// An answer (reply number `seq`) received `at`.
    pub fn record_answer(
        &self,
        id: NodeId,
        at: Instant,
        rtt: Duration,
        seq: u64,
        report: NodeReport,
    ) {
        if let Some(h) = self.lock().get_mut(&id) {
            let silence = at.saturating_duration_since(h.silent_since());
            if silence >= self.lease && !h.lapsed {
                tracing::info!(
                    node = id.get(),
                    silent_ms = silence.as_millis() as u64,
                    "node answered after its lease lapsed: no lease until a sweep settles it"
                );
                h.lapsed = true;
            }
            h.reply_seq = seq;
            h.last_answer = Some(at);
            h.last_rtt = Some(rtt);
            h.report = Some(Arc::new(report));
            h.last_error = None;
        }
    }

    pub fn record_failure(&self, id: NodeId, error: String) {
        if let Some(h) = self.lock().get_mut(&id) {
            h.last_error = Some(error);
        }
    }

    /// The latest report of `id`, if any.
    pub fn report_of(&self, id: NodeId) -> Option<Arc<NodeReport>> {
        self.lock().get(&id).and_then(|h| h.report.clone())
    }

    /// The report version of `id` this master holds (0: none, ask for everything).
    pub fn report_ack(&self, id: NodeId) -> u64 {
        self.lock()
            .get(&id)
            .and_then(|h| h.report.as_ref())
            .map_or(0, |r| r.report_version)
    }

    /// The reply to acknowledge in the next heartbeat to `id`: 0 (none) while it is lapsed.
    pub fn lease_ack(&self, id: NodeId) -> u64 {
        self.lock()
            .get(&id)
            .filter(|h| !h.lapsed)
            .map_or(0, |h| h.reply_seq)
    }

    /// After a sweep's status changes are written: lapsed nodes for which `settled` holds
    /// (online again in the registry, answering) get leases again.
    pub fn restore_leases(&self, settled: impl Fn(NodeId, &NodeHealth) -> bool) {
        for (id, h) in self.lock().iter_mut() {
            if h.lapsed && settled(*id, h) {
                tracing::info!(
                    node = id.get(),
                    "node settled: its lease is acknowledged again"
                );
                h.lapsed = false;
            }
        }
    }

    pub fn reschedule_mode(&self) -> RescheduleMode {
        *self
            .reschedule_mode
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records `mode`, returning the previous one.
    pub fn set_reschedule_mode(&self, mode: RescheduleMode) -> RescheduleMode {
        std::mem::replace(
            &mut *self
                .reschedule_mode
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            mode,
        )
    }

    pub fn get(&self, id: NodeId) -> Option<NodeHealth> {
        self.lock().get(&id).cloned()
    }

    pub fn snapshot(&self) -> HashMap<NodeId, NodeHealth> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Status changes a sweep decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// Online or draining nodes silent for longer than the offline timeout.
    pub offline: Vec<NodeId>,
    /// Offline nodes that answered within the offline timeout.
    pub online: Vec<NodeId>,
}

/// Judges every recorded node not `Left`. A node this master does not watch yet is left alone:
/// its grace starts when it is watched.
pub fn judge(
    records: &BTreeMap<NodeId, NodeRecord>,
    health: &HashMap<NodeId, NodeHealth>,
    now: Instant,
    offline_timeout: Duration,
) -> Judgement {
    let mut j = Judgement::default();
    for (id, rec) in records {
        let Some(h) = health.get(id) else { continue };
        match rec.status {
            NodeStatus::Online | NodeStatus::Draining => {
                if now.duration_since(h.silent_since()) > offline_timeout {
                    j.offline.push(*id);
                }
            }
            NodeStatus::Offline => {
                if h.last_answer
                    .is_some_and(|a| now.duration_since(a) <= offline_timeout)
                {
                    j.online.push(*id);
                }
            }
            NodeStatus::Left => {}
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ids;

    fn records(statuses: &[(NodeId, NodeStatus)]) -> BTreeMap<NodeId, NodeRecord> {
        statuses
            .iter()
            .map(|&(id, status)| {
                (
                    id,
                    NodeRecord {
                        id,
                        status,
                        ..NodeRecord::default()
                    },
                )
            })
            .collect()
    }

    fn report() -> NodeReport {
        NodeReport {
            version: "t".into(),
            resources_json: String::new(),
            usage: Usage::default(),
            instances: vec![],
            report_version: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_after_a_silence_longer_than_the_lease_is_acknowledged_only_once_settled() {
        let lease = Duration::from_secs(7);
        let t = HealthTable::new(WallClock::at(0)).with_lease(lease);
        t.watch(NodeId(1), "a", crate::clock::now(), false);
        assert_eq!(t.lease_ack(NodeId(1)), 0, "nothing received yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        t.record_answer(
            NodeId(1),
            crate::clock::now(),
            Duration::from_millis(1),
            5,
            report(),
        );
        assert_eq!(t.lease_ack(NodeId(1)), 5);
        tokio::time::advance(lease - Duration::from_millis(1)).await;
        t.record_answer(
            NodeId(1),
            crate::clock::now(),
            Duration::from_millis(1),
            6,
            report(),
        );
        assert_eq!(t.lease_ack(NodeId(1)), 6, "just within the lease");
        tokio::time::advance(lease).await;
        t.record_answer(
            NodeId(1),
            crate::clock::now(),
            Duration::from_millis(1),
            7,
            report(),
        );
        assert_eq!(
            t.lease_ack(NodeId(1)),
            0,
            "silent for a whole lease: lapsed"
        );
        t.record_answer(
            NodeId(1),
            crate::clock::now(),
            Duration::from_millis(1),
            8,
            report(),
        );
        assert_eq!(
            t.lease_ack(NodeId(1)),
            0,
            "answering again does not end the lapse"
        );
        t.restore_leases(|_, _| false);
        assert_eq!(t.lease_ack(NodeId(1)), 0);
        t.restore_leases(|id, h| id == NodeId(1) && h.last_answer.is_some());
        assert_eq!(t.lease_ack(NodeId(1)), 8, "settled by a sweep");
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_silent_past_the_timeout_is_offline_and_answering_brings_it_back() {
        let timeout = Duration::from_secs(90);
        let t = HealthTable::new(WallClock::at(0));
        let start = crate::clock::now();
        t.watch(NodeId(1), "a", start, false);
        t.watch(NodeId(2), "b", start, false);
        t.record_answer(NodeId(1), start, Duration::from_millis(1), 1, report());
        t.record_answer(NodeId(2), start, Duration::from_millis(1), 1, report());
        let recs = records(&[
            (NodeId(1), NodeStatus::Online),
            (NodeId(2), NodeStatus::Draining),
        ]);
        tokio::time::advance(Duration::from_secs(90)).await;
        t.record_answer(
            NodeId(2),
            crate::clock::now(),
            Duration::from_millis(1),
            1,
            report(),
        );
        assert_eq!(
            judge(&recs, &t.snapshot(), crate::clock::now(), timeout),
            Judgement::default()
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let j = judge(&recs, &t.snapshot(), crate::clock::now(), timeout);
        assert_eq!(j.offline, ids([1]), "90 s and 1 ms of silence");

        let recs = records(&[
            (NodeId(1), NodeStatus::Offline),
            (NodeId(2), NodeStatus::Online),
        ]);
        assert!(
            judge(&recs, &t.snapshot(), crate::clock::now(), timeout)
                .online
                .is_empty()
        );
        t.record_answer(
            NodeId(1),
            crate::clock::now(),
            Duration::from_millis(1),
            1,
            report(),
        );
        assert_eq!(
            judge(&recs, &t.snapshot(), crate::clock::now(), timeout).online,
            ids([1])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_master_gives_every_node_a_full_timeout_before_judging() {
        let timeout = Duration::from_secs(90);
        // The previous master heard nobody for a while; this one was just elected.
        tokio::time::advance(Duration::from_secs(500)).await;
        let t = HealthTable::new(WallClock::at(0));
        let elected = crate::clock::now();
        for id in (1..=3).map(NodeId) {
            t.watch(id, "x", elected, false);
        }
        let recs = records(&[
            (NodeId(1), NodeStatus::Online),
            (NodeId(2), NodeStatus::Online),
            (NodeId(3), NodeStatus::Offline),
        ]);
        tokio::time::advance(timeout).await;
        let j = judge(&recs, &t.snapshot(), crate::clock::now(), timeout);
        assert_eq!(j, Judgement::default(), "no verdict within the grace");
        assert!(
            j.online.is_empty(),
            "an offline node is not made online by the grace alone"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            judge(&recs, &t.snapshot(), crate::clock::now(), timeout).offline,
            ids([1, 2])
        );
    }
}
