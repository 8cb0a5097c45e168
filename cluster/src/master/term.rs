//! One master term: everything the leader does while it leads in `term`, stopped by dropping
//! the future (the heartbeat tasks go with it). Every write is `Fenced` with the term, so a
//! write decided by a deposed master cannot land in a later term.
//!
//! Each pass (on every registry change and every heartbeat interval): node records for the Raft
//! members, heartbeat targets, finished moves, placement (instances leave offline nodes only as
//! fast as `storm.rs` allows), rolling-restart steps. Each sweep: status changes (one write), an
//! uptime sample per node counted in memory, pruning (when due). Every rollup interval (at a
//! sweep): the counters of the uptime buckets that changed, as absolute values (one `SetUptime`
//! write), instead of a write of every sample every sweep.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio::time::MissedTickBehavior;

use super::decisions::CrashBudget;
use super::decisions::Reports;
use super::decisions::finished_moves;
use super::decisions::next_rolls;
use super::health::HealthTable;
use super::health::judge;
use super::heartbeat::HeartbeatConfig;
use super::heartbeat::Heartbeater;
use super::io::MasterIo;
use super::io::WriteError;
use super::placement;
use super::placement::PlacementInput;
use super::placement::PlacementMemo;
use super::stats::UptimeCounters;
use super::storm::RescheduleBudget;
use super::storm::RescheduleMode;
use super::storm::StormView;
use super::storm::decide;
use crate::Term;
use crate::agent::lease_length;
use crate::agent::status_is_live;
use crate::clock::WallClock;
use crate::config::ClusterConfig;
use crate::registry::ApplyOutcome;
use crate::registry::DAY_MS;
use crate::registry::InstanceRef;
use crate::registry::NodeId;
use crate::registry::NodeRecord;
use crate::registry::NodeStatus;
use crate::registry::Registry;
use crate::registry::RegistryCommand;
use crate::registry::RegistryResponse;
use crate::registry::UptimeSample;

/// The master's timing, from `ClusterConfig`.
#[derive(Clone, Debug)]
pub(crate) struct TermSettings {
    pub heartbeat_interval: Duration,
    pub sweep_interval: Duration,
    pub offline_timeout: Duration,
    pub sweep_concurrency: usize,
    pub heartbeat_concurrency: usize,
    pub bucket_ms: u64,
    pub retention_days: u64,
    /// How often the uptime counters are written to the registry (a multiple of the sweep
    /// interval in effect: the rollup goes out at the first sweep it is due).
    pub rollup_interval: Duration,
    /// This node's cluster address, sent with heartbeats (agents learn the leader from them).
    pub master_addr: String,
}

impl TermSettings {
    pub(crate) fn from_config(cfg: &ClusterConfig) -> TermSettings {
        TermSettings {
            heartbeat_interval: Duration::from_millis(cfg.heartbeat_interval_ms),
            sweep_interval: Duration::from_millis(cfg.health_sweep_interval_ms),
            offline_timeout: Duration::from_millis(cfg.offline_timeout_ms),
            sweep_concurrency: cfg.sweep_concurrency,
            heartbeat_concurrency: cfg.heartbeat_concurrency,
            bucket_ms: cfg.uptime_bucket_ms,
            retention_days: cfg.uptime_retention_days,
            rollup_interval: Duration::from_millis(cfg.uptime_rollup_interval_ms()),
            master_addr: cfg.advertise.clone(),
        }
    }
}

/// How often the membership is checked for changes between passes.
const MEMBERSHIP_POLL: Duration = Duration::from_millis(200);

/// The term ended: this node no longer leads (or its writes are refused as stale).
#[derive(Debug)]
pub(crate) struct Deposed(pub(crate) String);

pub(crate) struct MasterTerm {
    io: Arc<dyn MasterIo>,
    term: Term,
    settings: TermSettings,
    health: Arc<HealthTable>,
    heartbeater: Heartbeater,
    crashes: CrashBudget,
    /// Apps placement found settled, skipped while their inputs stay the same.
    placement: PlacementMemo,
    /// How many instances may still leave offline nodes while rescheduling is throttled.
    reschedule: RescheduleBudget,
    /// Uptime samples counted since the term began, written every rollup interval.
    uptime: UptimeCounters,
    /// When the next uptime rollup is due (a sweep at or after it writes one).
    next_rollup: Instant,
    /// When this term began (it runs right after it is made): placement waits a little for
    /// every node's first answer.
    started: Instant,
    /// The next job tick (wall ms), when a pass must run even if nothing else happens.
    job_wake: Option<u64>,
}

impl MasterTerm {
    #[cfg(test)]
    pub(crate) fn new(
        io: Arc<dyn MasterIo>,
        master_id: NodeId,
        term: Term,
        settings: TermSettings,
        clock: WallClock,
    ) -> MasterTerm {
        Self::resuming(io, master_id, term, settings, clock, None)
    }

    /// A term that continues `health` when given: this node led in the same term a moment
    /// ago (a leader whose quorum acknowledgement went briefly stale under load calls itself
    /// follower, then leader again, without an election). A term number has one leader, so
    /// what that master heard is still true; starting over would grant every node a fresh
    /// grace period each time and delay offline detection for as long as the flapping lasts.
    pub(crate) fn resuming(
        io: Arc<dyn MasterIo>,
        master_id: NodeId,
        term: Term,
        settings: TermSettings,
        clock: WallClock,
        health: Option<Arc<HealthTable>>,
    ) -> MasterTerm {
        let health = health.unwrap_or_else(|| {
            Arc::new(HealthTable::new(clock).with_lease(lease_length(settings.offline_timeout)))
        });
        let heartbeater = Heartbeater::new(
            HeartbeatConfig {
                master_id,
                term,
                interval: settings.heartbeat_interval,
                timeout: settings.heartbeat_interval,
                concurrency: settings.heartbeat_concurrency,
                master_addr: settings.master_addr.clone(),
            },
            io.transport(),
            health.clone(),
            io.versions(),
        );
        let reschedule = RescheduleBudget::new(settings.heartbeat_interval);
        let started = crate::clock::now();
        MasterTerm {
            io,
            term,
            uptime: UptimeCounters::new(settings.bucket_ms),
            next_rollup: started + settings.rollup_interval,
            settings,
            health,
            heartbeater,
            crashes: CrashBudget::default(),
            placement: PlacementMemo::default(),
            reschedule,
            started,
            job_wake: None,
        }
    }

    pub(crate) fn health(&self) -> Arc<HealthTable> {
        self.health.clone()
    }

    /// Runs until deposed; drop the future to stop at once.
    pub(crate) async fn run(mut self) -> Deposed {
        let started = self.started;
        let mut registry = self.io.registry();
        let mut sweep = tokio::time::interval_at(
            started + self.settings.sweep_interval,
            self.settings.sweep_interval,
        );
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval_at(
            started + self.settings.heartbeat_interval,
            self.settings.heartbeat_interval,
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A joining node gets its record (and heartbeats) without waiting for the next tick.
        let mut membership = tokio::time::interval(MEMBERSHIP_POLL);
        membership.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut members_seen = self.io.membership_version();
        loop {
            let reg = registry.borrow_and_update().clone();
            if let Err(d) = self.pass(&reg).await {
                return d;
            }
            let job_due = match self.job_wake {
                Some(at) => {
                    let wait = at.saturating_sub(self.health.clock.now_ms());
                    crate::clock::now() + Duration::from_millis(wait)
                }
                None => crate::clock::now() + Duration::from_secs(3600),
            };
            loop {
                tokio::select! {
                    r = registry.changed() => if r.is_err() { return Deposed("registry closed".into()) },
                    _ = tokio::time::sleep_until(job_due) => {}
                    _ = tick.tick() => {}
                    _ = sweep.tick() => if let Err(d) = self.sweep().await { return d },
                    _ = membership.tick() => {
                        let now = self.io.membership_version();
                        if now == members_seen {
                            continue;
                        }
                        members_seen = now;
                    }
                }
                break;
            }
        }
    }

    async fn write(&self, cmd: RegistryCommand) -> Result<bool, Deposed> {
        let what = cmd.to_string();
        let fenced = RegistryCommand::Fenced {
            term: self.term,
            command: Box::new(cmd),
        };
        match self.io.write(fenced).await {
            Ok(ApplyOutcome::Response(RegistryResponse::Applied { .. })) => {
                tracing::debug!(term = self.term.get(), %what, "master write");
                Ok(true)
            }
            Ok(ApplyOutcome::StaleTerm(stale)) => Err(Deposed(format!("{what}: {stale}"))),
            Ok(ApplyOutcome::Response(RegistryResponse::Rejected { reason })) => {
                tracing::warn!(term = self.term.get(), %what, %reason, "master write refused");
                Ok(false)
            }
            Err(WriteError::NotLeader) => Err(Deposed(format!("{what}: not the leader"))),
            Err(WriteError::Failed(e)) => {
                tracing::warn!(term = self.term.get(), %what, error = %e, "master write failed; retrying next pass");
                Ok(false)
            }
        }
    }

    async fn pass(&mut self, reg: &Registry) -> Result<(), Deposed> {
        self.sync_records(reg).await?;
        self.heartbeater.sync(
            reg.nodes
                .values()
                .filter(|n| n.status != NodeStatus::Left && !n.addr.is_empty())
                .map(|n| (n.id, n.addr.as_str(), n.status == NodeStatus::Offline)),
        );
        let health = self.health.snapshot();
        let reports: Reports<'_> = health
            .iter()
            .filter_map(|(id, h)| h.report.as_deref().map(|r| (*id, r)))
            .collect();
        let live: BTreeSet<NodeId> = health
            .iter()
            .filter(|(_, h)| h.last_answer.is_some())
            .map(|(id, _)| *id)
            .collect();

        let mode = self.reschedule_mode(reg);

        // Jobs: ticks, requests and runs lost with their node, decided only once some node
        // answered this term (a fresh master would otherwise find no node for a tick).
        if !reg.jobs.is_empty() && !live.is_empty() {
            // A run goes only to a node that answered lately (two heartbeat intervals): one
            // that went silent a moment ago would hold the tick until it is judged lost.
            let recent = self.settings.heartbeat_interval.saturating_mul(2);
            let now = crate::clock::now();
            let online: BTreeSet<NodeId> = health
                .iter()
                .filter(|(_, h)| {
                    h.last_answer
                        .is_some_and(|t| now.saturating_duration_since(t) <= recent)
                })
                .map(|(id, _)| *id)
                .filter(|id| {
                    reg.nodes
                        .get(id)
                        .is_some_and(|n| n.status == NodeStatus::Online)
                })
                .collect();
            let plan = super::jobs::plan(reg, &online, self.health.clock.now_ms());
            self.job_wake = plan.wake_ms;
            for write in plan.writes {
                tracing::info!(term = self.term.get(), %write, "job decision");
                self.write(write).await?;
            }
        } else if !reg.jobs.is_empty() {
            // Look again once the first heartbeats are in.
            self.job_wake = Some(
                self.health
                    .clock
                    .now_ms()
                    .saturating_add(self.settings.heartbeat_interval.as_millis() as u64 / 2),
            );
        }

        let done = finished_moves(reg, &reports);
        if !done.is_empty() {
            tracing::info!(
                term = self.term.get(),
                instances = done.len(),
                "moves finished: old copies may stop"
            );
            self.write(RegistryCommand::FinishMoves { instances: done })
                .await?;
        }

        let now = crate::clock::now();
        // A fresh master has heard nobody yet: placing now would crowd the nodes that answered
        // first. It waits until every online node answered, or two heartbeat intervals.
        let unheard: Vec<NodeId> = reg
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Online && !live.contains(&n.id))
            .map(|n| n.id)
            .collect();
        if !unheard.is_empty()
            && now < self.started + self.settings.heartbeat_interval.saturating_mul(2)
        {
            tracing::debug!(
                term = self.term.get(),
                ?unheard,
                "placement waits for every node's first answer"
            );
            return Ok(());
        }
        let relocate = self.crashes.candidates(reg, &reports, now);
        let input = PlacementInput {
            usage: reports.iter().map(|(id, r)| (*id, r.usage)).collect(),
            live: live.clone(),
            relocate: relocate.clone(),
            running: reports
                .iter()
                .filter(|(id, _)| {
                    reg.nodes.get(id).is_some_and(|n| {
                        !matches!(n.status, NodeStatus::Offline | NodeStatus::Left)
                    })
                })
                .flat_map(|(_, r)| {
                    r.instances
                        .iter()
                        .filter(|i| status_is_live(&i.status))
                        .map(|i| InstanceRef {
                            app: i.app.clone(),
                            instance: i.instance,
                        })
                })
                .collect(),
            reschedule_budget: self.reschedule.allowance(mode, now),
        };
        let plan = placement::plan_with(reg, &input, &mut self.placement);
        self.reschedule.spend(plan.rescheduled);
        if plan.held > 0 {
            tracing::debug!(
                term = self.term.get(),
                ?mode,
                rescheduled = plan.rescheduled,
                held = plan.held,
                "rescheduling from offline nodes is limited: the rest waits for later passes"
            );
        }
        if !plan.unassign.is_empty() {
            self.write(RegistryCommand::Unassign {
                instances: plan.unassign,
            })
            .await?;
        }
        if !plan.assign.is_empty() {
            tracing::info!(
                term = self.term.get(),
                instances = plan.assign.len(),
                "placing instances"
            );
            let placed: HashSet<(String, u32)> = plan
                .assign
                .iter()
                .map(|a| (a.app.clone(), a.instance))
                .collect();
            if self
                .write(RegistryCommand::Assign {
                    assignments: plan.assign,
                })
                .await?
            {
                for (inst, node) in relocate {
                    if placed.contains(&(inst.app.clone(), inst.instance)) {
                        tracing::warn!(app = %inst.app, instance = inst.instance, from = node.get(), "instance crashed; moved to another node");
                        self.crashes.record(inst, now);
                    }
                }
            }
        }
        if !plan.moves.is_empty() {
            tracing::info!(
                term = self.term.get(),
                instances = plan.moves.len(),
                "moving instances (start new, then stop old)"
            );
            self.write(RegistryCommand::Move { moves: plan.moves })
                .await?;
        }
        for roll in next_rolls(reg, &reports, &live) {
            tracing::info!(term = self.term.get(), %roll, "rolling restart step");
            self.write(roll).await?;
        }
        Ok(())
    }

    /// How instances of offline nodes may be rescheduled now (`storm.rs`), from the registry's
    /// node statuses (so a new master inherits a freeze at once); logged when it changes.
    fn reschedule_mode(&self, reg: &Registry) -> RescheduleMode {
        let view = StormView::of(reg);
        let mode = decide(&view);
        let before = self.health.set_reschedule_mode(mode);
        if before != mode {
            let waiting: usize = reg
                .assignments
                .values()
                .flat_map(|a| a.values())
                .filter(|n| {
                    reg.nodes
                        .get(n)
                        .is_some_and(|r| r.status == NodeStatus::Offline)
                })
                .count();
            let zone = view.throttling_zone();
            match mode {
                RescheduleMode::Frozen => tracing::warn!(
                    term = self.term.get(),
                    nodes = view.total,
                    offline = view.offline,
                    waiting,
                    "more than half of the nodes are offline: this master assumes it is cut off \
                     and reschedules nothing until they answer again"
                ),
                RescheduleMode::Throttled { per_second } => tracing::warn!(
                    term = self.term.get(),
                    nodes = view.total,
                    offline = view.offline,
                    ?zone,
                    waiting,
                    per_second,
                    "many nodes offline at once: rescheduling their instances at a bounded rate"
                ),
                RescheduleMode::Normal => tracing::info!(
                    term = self.term.get(),
                    nodes = view.total,
                    offline = view.offline,
                    waiting,
                    ?before,
                    "rescheduling from offline nodes is back to normal"
                ),
            }
        }
        mode
    }

    /// A record for every Raft member (one write). A node that leaves Raft keeps its record: it
    /// goes on as an agent (or is judged offline by the sweep if it is gone); only a `leave` or
    /// a new node registering at its address marks it `Left`.
    async fn sync_records(&self, reg: &Registry) -> Result<(), Deposed> {
        let members = self.io.members();
        if members.is_empty() {
            return Ok(());
        }
        let upserts: Vec<NodeRecord> = members
            .iter()
            .filter(|(id, m)| {
                reg.nodes.get(id).is_none_or(|rec| {
                    rec.addr != m.addr || rec.labels != m.labels || rec.status == NodeStatus::Left
                })
            })
            .map(|(id, m)| NodeRecord {
                id: *id,
                addr: m.addr.clone(),
                labels: m.labels.clone(),
                ..NodeRecord::default()
            })
            .collect();
        if !upserts.is_empty() {
            tracing::info!(
                term = self.term.get(),
                nodes = upserts.len(),
                "recording cluster members"
            );
            self.write(RegistryCommand::UpsertNodes { nodes: upserts })
                .await?;
        }
        Ok(())
    }

    async fn sweep(&mut self) -> Result<(), Deposed> {
        let reg = self.io.registry().borrow().clone();
        let now = crate::clock::now();
        let health = self.health.snapshot();
        let verdict = judge(&reg.nodes, &health, now, self.settings.offline_timeout);
        let mut offline = verdict.offline;
        if !offline.is_empty() {
            // One last direct try before declaring a node dead.
            let probe = offline
                .iter()
                .filter_map(|id| health.get(id).map(|h| (*id, h.addr.clone())))
                .collect();
            let budget = self
                .settings
                .heartbeat_interval
                .saturating_mul(2)
                .min(self.settings.sweep_interval);
            let answered = self
                .heartbeater
                .probe(probe, self.settings.sweep_concurrency, budget)
                .await;
            offline.retain(|id| !answered.contains(id));
        }
        let updates: Vec<(NodeId, NodeStatus)> = offline
            .iter()
            .map(|&id| (id, NodeStatus::Offline))
            .chain(verdict.online.iter().map(|&id| (id, NodeStatus::Online)))
            .collect();
        let mut written = true;
        if !updates.is_empty() {
            tracing::info!(term = self.term.get(), offline = ?offline, online = ?verdict.online, "health sweep: node status changes");
            written = self
                .write(RegistryCommand::SetNodeStatus {
                    updates: updates.clone(),
                })
                .await?;
        }
        let changed: HashMap<NodeId, NodeStatus> = updates.into_iter().collect();
        if written {
            // Whatever this sweep decided is in the registry now, and every later heartbeat
            // carries an index past it: nodes online again may hold leases again.
            let timeout = self.settings.offline_timeout;
            self.health.restore_leases(|id, h| {
                let status = changed
                    .get(&id)
                    .copied()
                    .or_else(|| reg.nodes.get(&id).map(|n| n.status));
                matches!(status, Some(NodeStatus::Online | NodeStatus::Draining))
                    && h.last_answer
                        .is_some_and(|a| now.duration_since(a) <= timeout)
            });
        }
        let at_ms = self.health.clock.now_ms();
        let samples: Vec<UptimeSample> = reg
            .nodes
            .values()
            .filter(|n| n.status != NodeStatus::Left)
            .map(|n| UptimeSample {
                node: n.id,
                at_ms,
                up: changed.get(&n.id).copied().unwrap_or(n.status) != NodeStatus::Offline,
            })
            .collect();
        self.uptime.record(&reg, &samples);
        if now >= self.next_rollup {
            self.roll_up_uptime(at_ms, now).await?;
        }
        let cutoff = at_ms.saturating_sub(self.settings.retention_days.saturating_mul(DAY_MS));
        if reg.has_uptime_before(cutoff) {
            tracing::info!(
                term = self.term.get(),
                before_ms = cutoff,
                "pruning uptime history"
            );
            self.write(RegistryCommand::PruneUptime { before_ms: cutoff })
                .await?;
        }
        Ok(())
    }

    /// Writes the changed uptime buckets (one write, absolute counters). A write that fails
    /// leaves them pending and is tried again at the next sweep.
    async fn roll_up_uptime(&mut self, at_ms: u64, now: Instant) -> Result<(), Deposed> {
        let buckets = self.uptime.pending();
        if !buckets.is_empty() {
            let bucket_ms = (self.settings.bucket_ms != DAY_MS).then_some(self.settings.bucket_ms);
            let written = self
                .write(RegistryCommand::SetUptime {
                    buckets: buckets.clone(),
                    bucket_ms,
                })
                .await?;
            if !written {
                return Ok(());
            }
        }
        self.uptime.rolled_up(&buckets, at_ms);
        while self.next_rollup <= now {
            self.next_rollup += self.settings.rollup_interval.max(Duration::from_millis(1));
        }
        Ok(())
    }
}
