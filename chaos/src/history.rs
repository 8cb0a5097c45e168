//! The recorded history of one chaos run: everything the suite saw and did, with timestamps in
//! milliseconds since the run started. The invariant checkers read only this, so a history
//! saved as JSON can be checked again later, and a unit test can hand-write one.
//!
//! Nodes are named by their lab index (1..=N), which survives restarts; the Raft node id a
//! node reports can change (a wiped data dir gets a new one), so it is recorded per
//! observation. `incarnation` counts daemon starts of a node, so "what the node had seen by
//! then" never mixes two lives of a daemon.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;
use std::time::SystemTime;

use serde::Deserialize;
use serde::Serialize;

/// A lab node, 1-based.
pub type NodeIndex = usize;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub profile: String,
    /// Wall clock at t = 0, to line up the daemons' own log timestamps.
    pub started_unix_ms: u64,
    pub nodes: Vec<NodeInfo>,
    pub daemon_starts: Vec<DaemonStart>,
    pub leaders: Vec<LeaderObservation>,
    pub heartbeats: Vec<HeartbeatAcceptance>,
    pub master_duties: Vec<MasterDuty>,
    pub writes: Vec<WriteOp>,
    pub instances: Vec<PsSnapshot>,
    pub singletons: Vec<SingletonObservation>,
    pub downs: Vec<DownCheck>,
    pub measurements: Vec<Measurement>,
    pub faults: Vec<FaultRecord>,
    pub heal: Option<Heal>,
    pub final_registries: Vec<RegistrySnapshot>,
    /// Each agent's held slice beside the registry, read once the cluster settled.
    #[serde(default)]
    pub agent_slices: Vec<AgentSlice>,
    /// Things a reader of the report should know (fallbacks taken, capabilities missing).
    pub notes: Vec<String>,
    /// The scheduled job's runs as they happened (its log), and the registry's record of its
    /// runs and skipped ticks (`herd jobs history --json`), read once the cluster settled.
    #[serde(default)]
    pub job_ticks: Vec<JobTick>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_record: Option<serde_json::Value>,
}

/// One run of the scheduled job, from the line it appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobTick {
    /// The tick, seconds since the epoch.
    pub tick_s: u64,
    /// The home of the node that ran it.
    pub home: String,
    /// `schedule`, `catch_up`, `retry`, ...
    pub trigger: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: NodeIndex,
    pub namespace: String,
    pub ip: String,
    pub home: String,
    /// An agent (outside Raft); older histories have only control nodes.
    #[serde(default)]
    pub agent: bool,
}

/// A daemon (re)started on a node; `incarnation` starts at 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonStart {
    pub t_ms: u64,
    pub node: NodeIndex,
    pub incarnation: u32,
    pub pid: Option<i32>,
}

/// One `herd cluster status --json` answer. `t_ms` is when the answer arrived: the node had
/// seen `term` by then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderObservation {
    pub t_ms: u64,
    pub observer: NodeIndex,
    pub incarnation: u32,
    pub node_id: Option<u64>,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
}

/// A node's agent accepted (or refused) a master's heartbeat, from its daemon log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAcceptance {
    pub t_ms: u64,
    pub node: NodeIndex,
    pub incarnation: u32,
    pub term: u64,
    pub master_id: u64,
    pub accepted: bool,
}

/// A node started or stopped acting as master, from its daemon log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MasterDuty {
    pub t_ms: u64,
    pub node: NodeIndex,
    pub node_id: u64,
    pub term: u64,
    pub started: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteKind {
    Deploy,
    Undeploy,
    Scale,
}

/// A registry write sent through one node. `acked` is true only when the command exited 0; a
/// failed or timed-out write may or may not have been applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteOp {
    pub id: u64,
    pub kind: WriteKind,
    pub app: String,
    /// The desired instance count a deploy or scale asked for.
    pub instances: Option<u32>,
    pub node: NodeIndex,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub acked: bool,
    pub error: Option<String>,
}

/// One row of `herd ps --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsRow {
    pub name: String,
    pub instance: u32,
    pub pid: Option<i32>,
    pub status: String,
}

/// A node's whole `herd ps --json` at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsSnapshot {
    pub t_ms: u64,
    pub node: NodeIndex,
    pub rows: Vec<PsRow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The node's daemon said so (`herd ps`).
    Ps,
    /// A process with the app's HERD_APP and the node's HERD_HOME was running (`/proc`),
    /// whatever its daemon says; frozen (SIGSTOPped) processes are not counted.
    Proc,
}

/// The `on_disconnect = "stop"` singleton seen running on a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SingletonObservation {
    pub t_ms: u64,
    pub node: NodeIndex,
    pub app: String,
    pub instance: u32,
    pub pid: i32,
    pub source: Source,
}

/// A process still alive after its node's `herd down` returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Survivor {
    pub pid: i32,
    pub herd_home: String,
    pub app: Option<String>,
    pub cmdline: String,
}

/// `herd down` on a node, then a look for app processes carrying its HERD_HOME.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownCheck {
    pub t_ms: u64,
    pub node: NodeIndex,
    pub down_ok: bool,
    pub down_error: Option<String>,
    /// App processes of that home alive `grace_ms` after `herd down` returned.
    pub survivors: Vec<Survivor>,
    pub grace_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeasureKind {
    /// Fault until the surviving majority agrees on a new leader.
    Failover,
    /// Fault until the master marks the node offline.
    OfflineDetection,
    /// Healing until every app runs its desired count.
    Convergence,
    /// Fault healed until the whole cluster agrees on a leader again.
    Recovery,
    /// A daemon killed mid-start restarted until it runs every instance exactly once.
    RestartConvergence,
}

/// A duration measured around a fault; `ms = None` means it did not happen within `limit_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub kind: MeasureKind,
    pub fault: Option<u64>,
    pub ms: Option<u64>,
    pub limit_ms: u64,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum FaultState {
    Injected,
    /// This machine cannot inject it (e.g. no `sch_netem`); nothing was faked.
    Unsupported(String),
    /// Not injected, because a precondition did not hold (said why).
    Skipped(String),
    /// Injection was attempted and failed.
    Failed(String),
}

impl FaultState {
    /// "injected", or the state and its reason ("unsupported: this kernel has no sch_netem").
    pub fn describe(&self) -> String {
        match self {
            FaultState::Injected => "injected".into(),
            FaultState::Unsupported(why) => format!("unsupported: {why}"),
            FaultState::Skipped(why) => format!("skipped: {why}"),
            FaultState::Failed(why) => format!("failed: {why}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub id: u64,
    pub kind: String,
    pub targets: Vec<NodeIndex>,
    pub detail: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub state: FaultState,
}

/// The moment every fault was healed, and what should then run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heal {
    pub healed_ms: u64,
    pub deadline_ms: u64,
    /// Apps the local supervisors were told to run: node → app → instance count.
    pub local_targets: BTreeMap<NodeIndex, BTreeMap<String, u32>>,
}

/// One app as `herd cluster apps --json --stale` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryApp {
    pub name: String,
    pub desired: u32,
    pub on_disconnect: String,
    /// instance index → Raft node id.
    pub assignments: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    pub t_ms: u64,
    pub node: NodeIndex,
    /// `None` when the node could not answer (then `error` says why).
    pub apps: Option<Vec<RegistryApp>>,
    pub error: Option<String>,
}

/// What an agent held as its slice at the end (`$HERD_HOME/raft/slice.json`), beside the
/// registry as the leader listed it (`herd cluster apps --json`) just before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSlice {
    pub t_ms: u64,
    pub node: NodeIndex,
    /// Its node id, from its `cluster status`.
    pub node_id: Option<u64>,
    /// Its daemon was running.
    pub live: bool,
    /// The held slice's version.
    pub version: Option<u64>,
    /// The held slice as read (`None`: no slice file).
    pub held: Option<serde_json::Value>,
    /// `herd cluster apps --json` (`None`: no node could answer; `error` says why).
    pub registry: Option<serde_json::Value>,
    pub error: Option<String>,
}

impl History {
    /// The incarnation of `node`'s daemon at `t_ms` (0 before its first start).
    pub fn incarnation_at(&self, node: NodeIndex, t_ms: u64) -> u32 {
        self.daemon_starts
            .iter()
            .filter(|s| s.node == node && s.t_ms <= t_ms)
            .map(|s| s.incarnation)
            .max()
            .unwrap_or(0)
    }

    /// Faults touching `node` that were active at some time in `from_ms..=to_ms`, as
    /// "#id kind (start–end s)".
    pub fn faults_on_between(&self, node: NodeIndex, from_ms: u64, to_ms: u64) -> Vec<String> {
        self.faults
            .iter()
            .filter(|f| f.state == FaultState::Injected && f.targets.contains(&node))
            .filter(|f| f.started_ms <= to_ms && f.ended_ms.is_none_or(|e| from_ms <= e))
            .map(|f| {
                let end = f
                    .ended_ms
                    .map_or("-".to_string(), |e| format!("{:.1}", e as f64 / 1000.0));
                format!(
                    "#{} {} ({:.1}–{end} s)",
                    f.id,
                    f.kind,
                    f.started_ms as f64 / 1000.0
                )
            })
            .collect()
    }
}

/// The run's clock: milliseconds since the start, monotonic.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    pub fn start() -> Clock {
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            start_unix_ms: unix,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ms
    }
}

/// Where every thread of a run writes what it saw. Cheap to share by reference.
pub struct Recorder {
    clock: Clock,
    history: Mutex<History>,
}

impl Recorder {
    pub fn new(seed: u64, profile: &str, nodes: Vec<NodeInfo>) -> Recorder {
        let clock = Clock::start();
        Recorder {
            clock,
            history: Mutex::new(History {
                seed,
                profile: profile.to_string(),
                started_unix_ms: clock.start_unix_ms(),
                nodes,
                ..History::default()
            }),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs `f` on the history under the lock; keep `f` short.
    pub fn with<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h)
    }

    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("herd-chaos: note: {note}");
        self.with(|h| h.notes.push(note));
    }

    pub fn snapshot(&self) -> History {
        self.with(|h| h.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_round_trips_through_json() {
        let mut h = History {
            seed: 7,
            ..History::default()
        };
        h.faults.push(FaultRecord {
            id: 1,
            kind: "latency-loss".into(),
            targets: vec![2],
            detail: String::new(),
            started_ms: 5,
            ended_ms: Some(6),
            state: FaultState::Unsupported("no sch_netem".into()),
        });
        let json = serde_json::to_string(&h).expect("serializes");
        let back: History = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.faults, h.faults);
        assert!(json.contains(r#""state":"unsupported","reason":"no sch_netem""#));
    }

    #[test]
    fn incarnation_and_active_faults_follow_the_timeline() {
        let mut h = History::default();
        for (t, inc) in [(0, 1), (100, 2)] {
            h.daemon_starts.push(DaemonStart {
                t_ms: t,
                node: 1,
                incarnation: inc,
                pid: None,
            });
        }
        h.faults.push(FaultRecord {
            id: 3,
            kind: "freeze".into(),
            targets: vec![1],
            detail: String::new(),
            started_ms: 50,
            ended_ms: Some(80),
            state: FaultState::Injected,
        });
        assert_eq!(h.incarnation_at(1, 99), 1);
        assert_eq!(h.incarnation_at(1, 100), 2);
        assert_eq!(h.incarnation_at(2, 100), 0);
        assert_eq!(
            h.faults_on_between(1, 0, 60),
            vec!["#3 freeze (0.1–0.1 s)".to_string()]
        );
        assert!(h.faults_on_between(1, 81, 90).is_empty());
    }
}
