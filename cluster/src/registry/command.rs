//! The registry's write vocabulary. Commands travel through the Raft log as JSON, so variants may
//! be added but never changed in meaning. Commands are designed to be idempotent where they can
//! be (set semantics, sample de-duplication), because a write forwarded during a leader change may
//! be retried and applied twice.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use super::App;
use super::NodeId;
use super::NodeRecord;
use super::NodeStatus;
use super::UptimeBucket;
use super::access::AccessChange;
use super::jobs::ClusterJob;
use super::jobs::ClusterRun;
use super::jobs::RunEnd;
use crate::Term;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RegistryCommand {
    /// Create or replace an app. Existing assignments beyond the new instance count are dropped.
    PutApp { name: String, app: App },
    /// Remove an app and its assignments. Removing a missing app changes nothing.
    RemoveApp { name: String },
    /// Change the desired instance count; assignments of removed instances are dropped.
    ScaleApp { name: String, instances: u32 },
    /// Place instances on nodes. Rejected as a whole if any entry names an unknown app, an
    /// instance index beyond the desired count, or an unknown node.
    Assign { assignments: Vec<Assignment> },
    /// Remove placements; entries that are not assigned are ignored.
    Unassign { instances: Vec<InstanceRef> },
    /// Create or replace a node record.
    UpsertNode { node: NodeRecord },
    /// Change node statuses in one write (the health sweep); unknown ids are ignored.
    SetNodeStatus { updates: Vec<(NodeId, NodeStatus)> },
    /// Add uptime samples to the day buckets; a sample not newer than its bucket's last sample is
    /// ignored. Masters wrote one per sweep before `SetUptime` rollups; still applied for the
    /// logs and snapshots that hold them. `bucket_ms` (default one day) is the bucket width; a different width than the
    /// registry's current one starts the history afresh.
    RecordUptime {
        samples: Vec<UptimeSample>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bucket_ms: Option<u64>,
    },
    /// Drop uptime buckets that end at or before `before_ms`.
    PruneUptime { before_ms: u64 },
    /// The master's uptime rollup: the absolute counters of the buckets that changed since its
    /// last rollup, `(node, bucket index, counters)`. A bucket replaces the registry's only if it
    /// is newer (by `last_sample_ms`, then `total_samples`, then `up_samples`), so a retried or
    /// duplicated rollup changes nothing and a late, older one never lowers the counts.
    /// `bucket_ms` (default one day) is the bucket width, as for `RecordUptime`. In the log each
    /// bucket is a bare array `[node, index, up_samples, total_samples, last_sample_ms]`: a
    /// rollup carries one per node, so field names would double its size.
    SetUptime {
        #[serde(with = "compact_buckets")]
        buckets: Vec<(NodeId, u64, UptimeBucket)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bucket_ms: Option<u64>,
    },
    /// Set a scratch key (tests, benchmarks).
    Put { key: String, value: String },
    /// Does nothing; a cheap write for probing the write path.
    Noop,
    /// Records for Raft members: a new id gets a record as given; an existing one keeps its
    /// status and drain flag but takes the new address and labels (a `Left` node that is a member
    /// again becomes `Online`).
    UpsertNodes { nodes: Vec<NodeRecord> },
    /// Mark a node for draining (`Draining`, takes no new instances, its instances are moved
    /// away) or undo it. The flag survives the node going offline and coming back.
    DrainNode { node: NodeId, drain: bool },
    /// Place instances on new nodes while their old node keeps its copy running until the master
    /// sees the new one running ("start new, then stop old"), see `FinishMoves`. Validated like
    /// `Assign`, as a whole.
    Move { moves: Vec<InstanceMove> },
    /// The moved instances run on their new node: their old nodes may stop them.
    FinishMoves { instances: Vec<InstanceRef> },
    /// Ask for a rolling restart of every placed instance of `name`: `generation` must be higher
    /// than the app's current one (otherwise nothing changes, which makes retries harmless).
    RestartApp { name: String, generation: u64 },
    /// These instances of `app` are restarted to `generation` (the master advances a rolling
    /// restart node by node). Entries already there are ignored.
    RollInstances {
        app: String,
        instances: Vec<u32>,
        generation: u64,
    },
    /// A master's command, valid only in the Raft term it was decided in: applied as `command`
    /// if the log entry carrying it was appended in `term`, rejected otherwise (a deposed master
    /// whose write lands after a new election is fenced off).
    Fenced {
        term: Term,
        command: Box<RegistryCommand>,
    },
    /// A change to the tokens and secrets (`access::AccessChange`).
    Access { change: AccessChange },
    /// A node (an agent, usually) registers itself: created as given, or an existing record
    /// takes the new address, labels, version and role pin and keeps its status and drain flag
    /// (a `Left` node is back). Any other record at the same address is `Left`: its node was
    /// wiped or replaced and came back under a new id.
    RegisterNode { node: NodeRecord },
    /// Several `RegisterNode`s in one write, in order (agents joining together: one log entry
    /// instead of one each).
    RegisterNodes { nodes: Vec<NodeRecord> },
    /// Create or replace a job (`jobs.rs`); `now_ms` starts a new schedule's count.
    PutJob {
        name: String,
        job: ClusterJob,
        now_ms: u64,
    },
    /// Remove a job; its running runs are left to their nodes (their slices drop them).
    RemoveJob { name: String },
    /// `herd run`: the master dispatches the request once (`request` makes a retry harmless).
    RequestRun {
        job: String,
        request: u64,
        #[serde(default)]
        args: Vec<String>,
    },
    /// The master gives a run to a node (fenced): a tick at or before the job's last one, or a
    /// request already dispatched, is refused.
    DispatchRun {
        job: String,
        run: ClusterRun,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// A tick that does not run, recorded (fenced).
    SkipTick {
        job: String,
        tick_ms: u64,
        end: RunEnd,
    },
    /// A run ended: reported by its node, or `lost` with its node (the master).
    FinishRun { job: String, run: u64, end: RunEnd },
}

/// An instance going from one node to another, the old copy running until the new one does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMove {
    pub app: String,
    pub instance: u32,
    pub from: NodeId,
    pub to: NodeId,
}

/// One instance of an app placed on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub app: String,
    pub instance: u32,
    pub node: NodeId,
}

/// `SetUptime` buckets as `[node, index, up_samples, total_samples, last_sample_ms]` arrays.
mod compact_buckets {
    use serde::Deserialize;
    use serde::Deserializer;
    use serde::Serializer;

    use super::NodeId;
    use super::UptimeBucket;

    type Row = (NodeId, u64, u64, u64, u64);

    pub(super) fn serialize<S: Serializer>(
        buckets: &[(NodeId, u64, UptimeBucket)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            buckets
                .iter()
                .map(|(n, i, b)| (*n, *i, b.up_samples, b.total_samples, b.last_sample_ms)),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(NodeId, u64, UptimeBucket)>, D::Error> {
        let rows = Vec::<Row>::deserialize(d)?;
        Ok(rows
            .into_iter()
            .map(|(n, i, up, total, last)| {
                (
                    n,
                    i,
                    UptimeBucket {
                        up_samples: up,
                        total_samples: total,
                        last_sample_ms: last,
                    },
                )
            })
            .collect())
    }
}

/// Names one instance of an app.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceRef {
    pub app: String,
    pub instance: u32,
}

/// One health observation of a node, taken by the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UptimeSample {
    pub node: NodeId,
    pub at_ms: u64,
    pub up: bool,
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RegistryResponse {
    /// The command is in effect; `changed` is false when it already was (e.g. a retry).
    Applied { changed: bool },
    /// The command was committed but refused by the registry; nothing changed.
    Rejected { reason: String },
}

impl RegistryResponse {
    pub fn is_applied(&self) -> bool {
        matches!(self, RegistryResponse::Applied { .. })
    }
}

/// The fence's refusal of a master command decided in one term and committed by the leader of
/// another: the master that decided it no longer leads, and its term is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("stale master: decided in term {decided}, committed in term {committed}")]
pub struct StaleTerm {
    pub decided: Term,
    pub committed: Term,
}

/// What applying one log entry did, as Raft hands it back to the writer: the registry's
/// response, or the fence's typed refusal of a stale master command (the master ends its term
/// on it). Only the master's own, never forwarded, writes can meet the fence; every other
/// writer, and the wire, sees a `StaleTerm` as `RegistryResponse::Rejected` with the same text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOutcome {
    Response(RegistryResponse),
    StaleTerm(StaleTerm),
}

impl ApplyOutcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, ApplyOutcome::Response(r) if r.is_applied())
    }
}

impl From<RegistryResponse> for ApplyOutcome {
    fn from(r: RegistryResponse) -> ApplyOutcome {
        ApplyOutcome::Response(r)
    }
}

impl From<ApplyOutcome> for RegistryResponse {
    fn from(o: ApplyOutcome) -> RegistryResponse {
        match o {
            ApplyOutcome::Response(r) => r,
            ApplyOutcome::StaleTerm(stale) => RegistryResponse::Rejected {
                reason: stale.to_string(),
            },
        }
    }
}

/// Short, log-friendly description (openraft requires `Display` on log payloads).
impl fmt::Display for RegistryCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryCommand::PutApp { name, app } => {
                write!(f, "put_app({name}, instances={})", app.instances)
            }
            RegistryCommand::RemoveApp { name } => write!(f, "remove_app({name})"),
            RegistryCommand::ScaleApp { name, instances } => {
                write!(f, "scale_app({name}, {instances})")
            }
            RegistryCommand::Assign { assignments } => {
                write!(f, "assign({} instances)", assignments.len())
            }
            RegistryCommand::Unassign { instances } => {
                write!(f, "unassign({} instances)", instances.len())
            }
            RegistryCommand::UpsertNode { node } => write!(f, "upsert_node({})", node.id),
            RegistryCommand::SetNodeStatus { updates } => {
                write!(f, "set_node_status({} nodes)", updates.len())
            }
            RegistryCommand::RecordUptime { samples, .. } => {
                write!(f, "record_uptime({} samples)", samples.len())
            }
            RegistryCommand::PruneUptime { before_ms } => write!(f, "prune_uptime({before_ms})"),
            RegistryCommand::SetUptime { buckets, .. } => {
                write!(f, "set_uptime({} buckets)", buckets.len())
            }
            RegistryCommand::Put { key, .. } => write!(f, "put({key})"),
            RegistryCommand::Noop => write!(f, "noop"),
            RegistryCommand::UpsertNodes { nodes } => write!(f, "upsert_nodes({})", nodes.len()),
            RegistryCommand::DrainNode { node, drain } => write!(f, "drain_node({node}, {drain})"),
            RegistryCommand::Move { moves } => write!(f, "move({} instances)", moves.len()),
            RegistryCommand::FinishMoves { instances } => {
                write!(f, "finish_moves({} instances)", instances.len())
            }
            RegistryCommand::RestartApp { name, generation } => {
                write!(f, "restart_app({name}, generation={generation})")
            }
            RegistryCommand::RollInstances {
                app,
                instances,
                generation,
            } => write!(
                f,
                "roll_instances({app}, {} instances, generation={generation})",
                instances.len()
            ),
            RegistryCommand::RegisterNode { node } => write!(f, "register_node({})", node.id),
            RegistryCommand::RegisterNodes { nodes } => {
                write!(f, "register_nodes({} nodes)", nodes.len())
            }
            RegistryCommand::Fenced { term, command } => write!(f, "{command} @term {term}"),
            RegistryCommand::PutJob { name, .. } => write!(f, "put_job({name})"),
            RegistryCommand::RemoveJob { name } => write!(f, "remove_job({name})"),
            RegistryCommand::RequestRun { job, request, .. } => {
                write!(f, "request_run({job}, {request})")
            }
            RegistryCommand::DispatchRun { job, run, .. } => {
                write!(
                    f,
                    "dispatch_run({job}, run {} to node {})",
                    run.id, run.node
                )
            }
            RegistryCommand::SkipTick { job, tick_ms, .. } => {
                write!(f, "skip_tick({job}, {tick_ms})")
            }
            RegistryCommand::FinishRun { job, run, end } => {
                write!(f, "finish_run({job}, run {run}, {})", end.reason)
            }
            // Names and accessors only: never a hash or a sealed value in a log line.
            RegistryCommand::Access { change } => match change {
                AccessChange::CreateToken { token } => {
                    write!(f, "create_token({})", token.accessor)
                }
                AccessChange::RevokeToken { accessor, .. } => write!(f, "revoke_token({accessor})"),
                AccessChange::PutSecret { name, .. } => write!(f, "put_secret({name})"),
                AccessChange::DeleteSecret { name } => write!(f, "delete_secret({name})"),
            },
        }
    }
}
