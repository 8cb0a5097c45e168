//! The leader's membership keeper: the only place that changes the Raft membership, one change
//! at a time. It serves join and leave requests and, every second, keeps the voter count up:
//! - fewer voters than configured and a caught-up learner → promote the learner;
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
use crate::error::ClusterError;
use crate::raft::Member;

/// How a join ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    Voter,
    Learner,
}

impl JoinOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JoinOutcome::Voter => "voter",
            JoinOutcome::Learner => "learner",
        }
    }
}

pub(crate) enum MembershipOp {
    Join {
        id: u64,
        member: Member,
        reply: oneshot::Sender<Result<Served<JoinOutcome>, ClusterError>>,
    },
    Leave {
        id: u64,
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
    unreachable_since: HashMap<u64, Instant>,
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
                    Some(op) => self.handle(op).await,
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

    async fn handle(&mut self, op: MembershipOp) {
        match op {
            MembershipOp::Join { id, member, reply } => {
                let _ = reply.send(self.join(id, member).await);
            }
            MembershipOp::Leave { id, reply } => {
                let _ = reply.send(self.leave(id).await);
            }
        }
    }

    fn not_leader(&self) -> Option<Option<u64>> {
        self.shared.raft.as_leader().err().map(|f| f.leader_id)
    }

    async fn join(&mut self, id: u64, member: Member) -> Result<Served<JoinOutcome>, ClusterError> {
        if let Some(hint) = self.not_leader() {
            return Ok(Served::NotLeader(hint));
        }
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
        tracing::info!(node = id, addr = %member.addr, "adding node as learner");
        match tokio::time::timeout(
            ADD_LEARNER_TIMEOUT,
            self.shared.raft.add_learner(id, member, true),
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
                tracing::info!(node = id, "learner still catching up; promotion deferred");
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
        if voters >= self.shared.cfg.voters {
            return Ok(Served::Done(JoinOutcome::Learner));
        }
        self.change(
            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            "promote joining node",
        )
        .await?;
        Ok(Served::Done(JoinOutcome::Voter))
    }

    async fn leave(&mut self, id: u64) -> Result<Served<()>, ClusterError> {
        if let Some(hint) = self.not_leader() {
            return Ok(Served::NotLeader(hint));
        }
        let view = self.view();
        let Some(leaving) = view.members.iter().find(|s| s.id == id) else {
            return Ok(Served::Done(()));
        };
        if leaving.role == "learner" {
            self.change(
                ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                "remove leaving learner",
            )
            .await?;
            return Ok(Served::Done(()));
        }
        let mut voters: BTreeSet<u64> = view.voters().filter(|&v| v != id).collect();
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
        tracing::info!(node = id, ?voters, "removing leaving voter");
        self.change(
            ChangeMembers::ReplaceAllVoters(voters),
            "remove leaving voter",
        )
        .await?;
        Ok(Served::Done(()))
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
        let now = Instant::now();
        for s in &view.members {
            if s.reachable == Some(true) || s.id == self.shared.id {
                self.unreachable_since.remove(&s.id);
            } else {
                self.unreachable_since.entry(s.id).or_insert(now);
            }
        }
        let voters: BTreeSet<u64> = view.voters().collect();
        let wanted = self.shared.cfg.voters;
        let replace_after = Duration::from_millis(self.shared.cfg.replace_voter_after_ms);

        if voters.len() < wanted
            && let Some(l) = view.best_learner(&[])
        {
            tracing::info!(
                node = l,
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
                    tracing::info!(node = s.id, addr = %s.addr, "removing learner whose address now serves another node");
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
                dead = s.id,
                promoted = l,
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
        Ok(())
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
        change: ChangeMembers<u64, Member>,
        what: &str,
    ) -> Result<(), ClusterError> {
        match tokio::time::timeout(
            CHANGE_TIMEOUT,
            self.shared.raft.change_membership(change, false),
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
    fn voters(&self) -> impl Iterator<Item = u64> + '_ {
        self.members
            .iter()
            .filter(|s| s.role == "voter")
            .map(|s| s.id)
    }

    /// The reachable, caught-up learner with the most log, not in `exclude`.
    fn best_learner(&self, exclude: &[u64]) -> Option<u64> {
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
