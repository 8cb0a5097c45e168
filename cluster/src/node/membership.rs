//! The leader's membership keeper: the only place that changes the Raft membership, one change
//! at a time. Raft holds only the voters and up to `standbys` caught-up learners; every other
//! node is an agent, registered in the registry (one small write) and outside Raft. It serves
//! join and leave requests and, every second, keeps the seats filled:
//! - fewer voters than configured and a caught-up learner → promote the learner;
//! - fewer standbys than configured → add an online agent that may hold a seat as a learner;
//! - more learners than standbys (and the voters complete) → the least caught-up one leaves
//!   Raft and goes on as an agent;
//! - a voter unreachable for `replace_voter_after_ms` (or whose address is now served by
//!   another member, i.e. it was wiped and came back under a new id) → replace it by a
//!   caught-up learner and drop it from the cluster;
//! - a learner whose address is now served by another member → drop it.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::time::Instant;

use super::shared::Served;
use super::shared::Shared;
use super::status::MemberStatus;
use super::status::local_status;
use crate::NodeId;
use crate::error::ClusterError;
use crate::raft::Member;
use crate::registry::NodeRecord;
use crate::registry::NodeStatus;
use crate::registry::RegistryCommand;
use crate::registry::RegistryResponse;

/// How a join ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    Voter,
    Learner,
    /// Registered in the registry, outside Raft.
    Agent,
}

impl JoinOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JoinOutcome::Voter => "voter",
            JoinOutcome::Learner => "learner",
            JoinOutcome::Agent => "agent",
        }
    }
}

/// A node asking to join.
#[derive(Clone, Debug)]
pub(crate) struct Joiner {
    pub id: NodeId,
    pub member: Member,
    /// Pinned to the agent role by its config.
    pub agent_only: bool,
    pub version: Option<String>,
}

impl Joiner {
    fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.id,
            addr: self.member.addr.clone(),
            labels: self.member.labels.clone(),
            version: self.version.clone(),
            agent_only: self.agent_only,
            ..NodeRecord::default()
        }
    }
}

pub(crate) enum MembershipOp {
    Join {
        joiner: Joiner,
        reply: oneshot::Sender<Result<Served<JoinOutcome>, ClusterError>>,
    },
    Leave {
        id: NodeId,
        reply: oneshot::Sender<Result<Served<()>, ClusterError>>,
    },
}

/// A learner this close to the leader's last log index may become a voter.
const CAUGHT_UP_LAG: u64 = 100;
/// Bound on waiting for a new learner to catch up before answering its join.
const ADD_LEARNER_TIMEOUT: Duration = Duration::from_secs(10);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct MembershipKeeper {
    shared: Arc<Shared>,
    ops: mpsc::Receiver<MembershipOp>,
    /// Voters seen unreachable, and since when (reset when this node loses leadership).
    unreachable_since: HashMap<NodeId, Instant>,
}

impl MembershipKeeper {
    pub(crate) fn new(shared: Arc<Shared>, ops: mpsc::Receiver<MembershipOp>) -> MembershipKeeper {
        MembershipKeeper {
            shared,
            ops,
            unreachable_since: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                op = self.ops.recv() => match op {
                    Some(op) => self.handle_batch(op).await,
                    None => break,
                },
                _ = tick.tick() => {
                    if let Err(e) = self.maintain().await {
                        tracing::warn!(error = %e, "membership maintenance failed");
                    }
                }
            }
        }
    }

    /// Serves `first` and whatever else is already queued. Agents joining together (hundreds at
    /// once when a fleet starts) are registered in one write: one log entry and one registry
    /// copy for the lot instead of one each.
    async fn handle_batch(&mut self, first: MembershipOp) {
        const MAX_BATCH: usize = 512;
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match self.ops.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut agents = Vec::new();
        for op in ops {
            match op {
                MembershipOp::Join { joiner, reply } if self.joins_as_agent(&joiner) => {
                    agents.push((joiner, reply));
                }
                other => self.handle(other).await,
            }
        }
        if agents.is_empty() {
            return;
        }
        let joiners: Vec<&Joiner> = agents.iter().map(|(j, _)| j).collect();
        let outcome = self.register(&joiners).await;
        for (joiner, reply) in agents {
            let answer = match &outcome {
                Ok(Served::Done(())) => {
                    tracing::info!(node = joiner.id.get(), addr = %joiner.member.addr, agent_only = joiner.agent_only, "node registered as an agent");
                    Ok(Served::Done(JoinOutcome::Agent))
                }
                Ok(Served::NotLeader(hint)) => Ok(Served::NotLeader(*hint)),
                Err(e) => Err(ClusterError::Membership(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }

    /// A joiner this leader will register as an agent: not a member, and no seat for it.
    fn joins_as_agent(&self, joiner: &Joiner) -> bool {
        if self.not_leader().is_some() {
            return false;
        }
        let m = self.shared.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&joiner.id).is_some() {
            return false;
        }
        let voters = membership.voter_ids().count();
        let learners = membership.learner_ids().count();
        joiner.agent_only
            || (voters >= self.shared.cfg.voters && learners >= self.shared.cfg.standbys)
    }

    async fn handle(&mut self, op: MembershipOp) {
        match op {
            MembershipOp::Join { joiner, reply } => {
                let _ = reply.send(self.join(joiner).await);
            }
            MembershipOp::Leave { id, reply } => {
                let _ = reply.send(self.leave(id).await);
            }
        }
    }

    fn not_leader(&self) -> Option<Option<NodeId>> {
        self.shared.raft.as_leader().err().map(|f| f.leader_id)
    }

    async fn join(&mut self, joiner: Joiner) -> Result<Served<JoinOutcome>, ClusterError> {
        if let Some(hint) = self.not_leader() {
            return Ok(Served::NotLeader(hint));
        }
        let id = joiner.id;
        let m = self.shared.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_some() {
            let voter = membership.voter_ids().any(|v| v == id);
            return Ok(Served::Done(if voter {
                JoinOutcome::Voter
            } else {
                JoinOutcome::Learner
            }));
        }
        let voters = membership.voter_ids().count();
        let learners = membership.learner_ids().count();
        // Registered first, whatever its seat: the node is in the registry (and heartbeated)
        // even while a seat in Raft is still being arranged.
        if let Served::NotLeader(hint) = self.register(&[&joiner]).await? {
            return Ok(Served::NotLeader(hint));
        }
        let wanted = self.shared.cfg.voters;
        let seat = !joiner.agent_only && (voters < wanted || learners < self.shared.cfg.standbys);
        if !seat {
            tracing::info!(node = id.get(), addr = %joiner.member.addr, agent_only = joiner.agent_only, "node registered as an agent");
            return Ok(Served::Done(JoinOutcome::Agent));
        }
        tracing::info!(node = id.get(), addr = %joiner.member.addr, "adding node as learner");
        match tokio::time::timeout(
            ADD_LEARNER_TIMEOUT,
            self.shared.engine()?.add_learner(id, joiner.member, true),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if let Some(f) = e.forward_to_leader() {
                    return Ok(Served::NotLeader(f.leader_id));
                }
                return Err(ClusterError::Membership(format!(
                    "add node {id} as learner: {e}"
                )));
            }
            Err(_) => {
                // Added, but not caught up yet: maintenance promotes it once it is.
                tracing::info!(
                    node = id.get(),
                    "learner still catching up; promotion deferred"
                );
                return Ok(Served::Done(JoinOutcome::Learner));
            }
        }
        let voters = self
            .shared
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if voters >= wanted {
            return Ok(Served::Done(JoinOutcome::Learner));
        }
        self.change(
            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            "promote joining node",
        )
        .await?;
        Ok(Served::Done(JoinOutcome::Voter))
    }

    /// The joiners' registry records in one write, leaving out those the registry already
    /// holds as given (nothing is written when none is new).
    async fn register(&self, joiners: &[&Joiner]) -> Result<Served<()>, ClusterError> {
        let nodes: Vec<NodeRecord> = {
            let reg = self.shared.registry.borrow();
            joiners
                .iter()
                .map(|j| j.record())
                .filter(|record| {
                    !reg.nodes.get(&record.id).is_some_and(|r| {
                        r.addr == record.addr
                            && r.labels == record.labels
                            && r.version == record.version
                            && r.agent_only == record.agent_only
                            && r.status != NodeStatus::Left
                    })
                })
                .collect()
        };
        if nodes.is_empty() {
            return Ok(Served::Done(()));
        }
        let count = nodes.len();
        let cmd = match <[NodeRecord; 1]>::try_from(nodes) {
            Ok([node]) => RegistryCommand::RegisterNode { node },
            Err(nodes) => RegistryCommand::RegisterNodes { nodes },
        };
        match self.shared.write_local(cmd).await? {
            Served::Done(o) if o.is_applied() => Ok(Served::Done(())),
            Served::Done(o) => Err(ClusterError::Membership(format!(
                "register {count} node(s): {:?}",
                RegistryResponse::from(o)
            ))),
            Served::NotLeader(hint) => Ok(Served::NotLeader(hint)),
        }
    }

    async fn leave(&mut self, id: NodeId) -> Result<Served<()>, ClusterError> {
        if let Some(hint) = self.not_leader() {
            return Ok(Served::NotLeader(hint));
        }
        let view = self.view();
        let Some(leaving) = view.members.iter().find(|s| s.id == id) else {
            // An agent: only its record says it is part of the cluster.
            return self.mark_left(id).await;
        };
        if leaving.role == "learner" {
            self.change(
                ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                "remove leaving learner",
            )
            .await?;
            return self.mark_left(id).await;
        }
        let mut voters: BTreeSet<NodeId> = view.voters().filter(|&v| v != id).collect();
        if voters.is_empty() {
            return Err(ClusterError::Membership(format!(
                "node {id} is the last voter; a cluster cannot leave itself"
            )));
        }
        if voters.len() < self.shared.cfg.voters
            && let Some(l) = view.best_learner(&[])
        {
            voters.insert(l);
        }
        tracing::info!(node = id.get(), ?voters, "removing leaving voter");
        self.change(
            ChangeMembers::ReplaceAllVoters(voters),
            "remove leaving voter",
        )
        .await?;
        self.mark_left(id).await
    }

    /// Records that `id` left on purpose: the master stops heartbeating it and moves its work.
    async fn mark_left(&self, id: NodeId) -> Result<Served<()>, ClusterError> {
        let known = self.shared.registry.borrow().nodes.contains_key(&id);
        if !known {
            return Ok(Served::Done(()));
        }
        let cmd = RegistryCommand::SetNodeStatus {
            updates: vec![(id, NodeStatus::Left)],
        };
        Ok(self.shared.write_local(cmd).await?.map(|_| ()))
    }

    /// One corrective membership change at most per call.
    async fn maintain(&mut self) -> Result<(), ClusterError> {
        if self.not_leader().is_some() {
            self.unreachable_since.clear();
            return Ok(());
        }
        let m = self.shared.metrics();
        if m.membership_config.log_id() != m.committed_membership_config.log_id() {
            return Ok(()); // a change is still in flight
        }
        let view = self.view();
        let now = crate::clock::now();
        for s in &view.members {
            if s.reachable == Some(true) || s.id == self.shared.id {
                self.unreachable_since.remove(&s.id);
            } else {
                self.unreachable_since.entry(s.id).or_insert(now);
            }
        }
        let voters: BTreeSet<NodeId> = view.voters().collect();
        let wanted = self.shared.cfg.voters;
        let replace_after = Duration::from_millis(self.shared.cfg.replace_voter_after_ms);

        if voters.len() < wanted
            && let Some(l) = view.best_learner(&[])
        {
            tracing::info!(
                node = l.get(),
                voters = voters.len(),
                wanted,
                "promoting learner to voter"
            );
            return self
                .change(
                    ChangeMembers::AddVoterIds(BTreeSet::from([l])),
                    "promote learner",
                )
                .await;
        }

        for s in &view.members {
            let Some(since) = self.unreachable_since.get(&s.id) else {
                continue;
            };
            let superseded = view.address_taken_over(s);
            if s.role == "learner" {
                if superseded {
                    tracing::info!(node = s.id.get(), addr = %s.addr, "removing learner whose address now serves another node");
                    return self
                        .change(
                            ChangeMembers::RemoveNodes(BTreeSet::from([s.id])),
                            "remove superseded learner",
                        )
                        .await;
                }
                continue;
            }
            if !(superseded || now.duration_since(*since) >= replace_after) {
                continue;
            }
            let Some(l) = view.best_learner(&[s.id]) else {
                continue;
            };
            let mut next = voters.clone();
            next.remove(&s.id);
            next.insert(l);
            tracing::warn!(
                dead = s.id.get(),
                promoted = l.get(),
                superseded,
                "replacing unreachable voter"
            );
            return self
                .change(
                    ChangeMembers::ReplaceAllVoters(next),
                    "replace unreachable voter",
                )
                .await;
        }
        self.keep_standbys(&view, voters.len() >= wanted).await
    }

    /// Keeps `standbys` learners: an unreachable one leaves Raft after `replace_voter_after_ms`
    /// (it goes on as an agent), extra ones leave once the voters are complete, and a missing
    /// one is filled by an online agent that may hold a seat.
    async fn keep_standbys(
        &mut self,
        view: &View,
        voters_complete: bool,
    ) -> Result<(), ClusterError> {
        let now = crate::clock::now();
        let replace_after = Duration::from_millis(self.shared.cfg.replace_voter_after_ms);
        let learners: Vec<&MemberStatus> = view
            .members
            .iter()
            .filter(|s| s.role == "learner")
            .collect();
        let lost = learners.iter().find(|s| {
            self.unreachable_since
                .get(&s.id)
                .is_some_and(|since| now.duration_since(*since) >= replace_after)
        });
        if let Some(lost) = lost {
            tracing::warn!(
                node = lost.id.get(),
                "standby unreachable: it leaves raft and goes on as an agent"
            );
            return self
                .change(
                    ChangeMembers::RemoveNodes(BTreeSet::from([lost.id])),
                    "remove unreachable standby",
                )
                .await;
        }
        let standbys = self.shared.cfg.standbys;
        if voters_complete && learners.len() > standbys {
            let Some(extra) = learners.iter().min_by_key(|s| {
                (
                    s.reachable == Some(true),
                    s.matched_index,
                    std::cmp::Reverse(s.id),
                )
            }) else {
                return Ok(());
            };
            tracing::info!(
                node = extra.id.get(),
                standbys,
                "more standbys than wanted: one goes on as an agent"
            );
            return self
                .change(
                    ChangeMembers::RemoveNodes(BTreeSet::from([extra.id])),
                    "remove extra standby",
                )
                .await;
        }
        let seats_wanted = standbys + usize::from(!voters_complete);
        if learners.len() >= seats_wanted {
            return Ok(());
        }
        let Some(candidate) = self.seat_candidate(view) else {
            return Ok(());
        };
        tracing::info!(node = candidate.0.get(), addr = %candidate.1.addr, "adding an agent as standby");
        match tokio::time::timeout(
            CHANGE_TIMEOUT,
            self.shared
                .engine()?
                .add_learner(candidate.0, candidate.1, false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ClusterError::Membership(format!(
                "add node {} as standby: {e}",
                candidate.0
            ))),
            Err(_) => Err(ClusterError::Timeout {
                what: "add a standby".into(),
                after_ms: CHANGE_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// An online agent the registry says may hold a seat, lowest id first; never one whose
    /// address a member already serves.
    fn seat_candidate(&self, view: &View) -> Option<(NodeId, Member)> {
        let reg = self.shared.registry.borrow().clone();
        reg.nodes
            .values()
            .filter(|n| n.status == NodeStatus::Online && !n.agent_only)
            .filter(|n| {
                !view
                    .members
                    .iter()
                    .any(|m| m.id == n.id || m.addr == n.addr)
            })
            .map(|n| {
                (
                    n.id,
                    Member {
                        addr: n.addr.clone(),
                        labels: n.labels.clone(),
                    },
                )
            })
            .next()
    }

    fn view(&self) -> View {
        let m = self.shared.metrics();
        let status = local_status(
            &self.shared.cfg.name,
            &self.shared.cfg.advertise,
            self.shared.cfg.heartbeat_ms,
            &m,
        );
        View {
            members: status.members,
            last_log_index: m.last_log_index.unwrap_or(0),
        }
    }

    async fn change(
        &self,
        change: ChangeMembers<NodeId, Member>,
        what: &str,
    ) -> Result<(), ClusterError> {
        match tokio::time::timeout(
            CHANGE_TIMEOUT,
            self.shared.engine()?.change_membership(change, false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ClusterError::Membership(format!("{what}: {e}"))),
            Err(_) => Err(ClusterError::Timeout {
                what: what.to_string(),
                after_ms: CHANGE_TIMEOUT.as_millis() as u64,
            }),
        }
    }
}

/// The leader's view of the members, for choosing changes.
struct View {
    members: Vec<MemberStatus>,
    last_log_index: u64,
}

impl View {
    fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|s| s.role == "voter")
            .map(|s| s.id)
    }

    /// The reachable, caught-up learner with the most log, not in `exclude`.
    fn best_learner(&self, exclude: &[NodeId]) -> Option<NodeId> {
        self.members
            .iter()
            .filter(|s| {
                s.role == "learner" && s.reachable == Some(true) && !exclude.contains(&s.id)
            })
            .filter(|s| s.matched_index.unwrap_or(0) + CAUGHT_UP_LAG >= self.last_log_index)
            .max_by_key(|s| (s.matched_index, std::cmp::Reverse(s.id)))
            .map(|s| s.id)
    }

    /// Another, reachable member now answers at `s`'s address: `s` is gone for good.
    fn address_taken_over(&self, s: &MemberStatus) -> bool {
        self.members
            .iter()
            .any(|o| o.id != s.id && o.addr == s.addr && o.reachable == Some(true))
    }
}
