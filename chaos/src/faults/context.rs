//! What every fault acts through: the lab, the history it records into and the profile, with
//! the moves several faults share (signal a process, wait for live voters, heal everything).
//! `inject`, `outage` and `process` build on it; it depends on none of them.

use std::time::Duration;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::PlannedFault;
use super::network;
use super::watch;
use crate::history::FaultRecord;
use crate::history::FaultState;
use crate::history::MeasureKind;
use crate::history::Measurement;
use crate::history::Recorder;
use crate::lab::Lab;
use crate::lab::Node;
use crate::lab::interrupt;
use crate::profile::Profile;

/// What a fault needs to act and to record.
pub struct FaultCtx<'a> {
    pub lab: &'a Lab,
    pub rec: &'a Recorder,
    pub profile: &'a Profile,
    /// The master's offline verdict is visible, so detection can be timed.
    pub detect_offline: bool,
}

impl FaultCtx<'_> {
    pub(super) fn begin(&self, plan: &PlannedFault, targets: &[usize], detail: String) {
        self.begin_at(plan, targets, detail, self.rec.now_ms());
    }

    /// Records a fault that took effect at `started_ms` (before its detail was known).
    pub(super) fn begin_at(
        &self,
        plan: &PlannedFault,
        targets: &[usize],
        detail: String,
        started_ms: u64,
    ) {
        eprintln!(
            "herd-chaos: {:>6.1} s fault #{} {} on {:?}: {detail}",
            started_ms as f64 / 1000.0,
            plan.id,
            plan.kind.name(),
            targets
        );
        self.rec.with(|h| {
            h.faults.push(FaultRecord {
                id: plan.id,
                kind: plan.kind.name().to_string(),
                targets: targets.to_vec(),
                detail,
                started_ms,
                ended_ms: None,
                state: FaultState::Injected,
            })
        });
    }

    pub(super) fn end(&self, plan: &PlannedFault, more: Option<String>) {
        let t = self.rec.now_ms();
        self.rec.with(|h| {
            if let Some(f) = h.faults.iter_mut().rev().find(|f| f.id == plan.id) {
                f.ended_ms = Some(t);
                if let Some(m) = more {
                    f.detail = format!("{}; {m}", f.detail);
                }
            }
        });
    }

    pub(super) fn not_injected(&self, plan: &PlannedFault, targets: &[usize], state: FaultState) {
        eprintln!(
            "herd-chaos: {:>6.1} s fault #{} {}: {}",
            self.rec.now_ms() as f64 / 1000.0,
            plan.id,
            plan.kind.name(),
            state.describe()
        );
        let t = self.rec.now_ms();
        self.rec.with(|h| {
            h.faults.push(FaultRecord {
                id: plan.id,
                kind: plan.kind.name().to_string(),
                targets: targets.to_vec(),
                detail: String::new(),
                started_ms: t,
                ended_ms: Some(t),
                state,
            })
        });
    }

    pub(super) fn measure(
        &self,
        kind: MeasureKind,
        plan: &PlannedFault,
        ms: Option<u64>,
        limit: Duration,
        note: String,
    ) {
        self.rec.with(|h| {
            h.measurements.push(Measurement {
                kind,
                fault: Some(plan.id),
                ms,
                limit_ms: limit.as_millis() as u64,
                note,
            })
        });
    }

    pub(super) fn up(&self, node: &Node) {
        if let Err(e) = self.lab.up(node, self.rec) {
            self.rec
                .note(format!("restarting node {} failed: {e:#}", node.index));
        }
    }
}

/// Every voter in the leader's membership is a live node's current id (waits up to `limit`).
pub(super) fn voters_live(ctx: &FaultCtx, limit: Duration) -> anyhow::Result<bool> {
    let started = Instant::now();
    loop {
        if let Some((l, _)) = watch::current_leader(ctx.lab)
            && let Some(s) = ctx.lab.node(l).status(Duration::from_secs(1))
        {
            let live: Vec<u64> = ctx.lab.nodes.iter().filter_map(|n| n.node_id()).collect();
            let ok = s["members"].as_array().is_some_and(|m| {
                m.iter()
                    .filter(|m| m["role"] == "voter")
                    .all(|m| m["id"].as_u64().is_some_and(|id| live.contains(&id)))
            });
            if ok {
                return Ok(true);
            }
        }
        if started.elapsed() >= limit {
            return Ok(false);
        }
        interrupt::sleep(Duration::from_millis(500))?;
    }
}

pub(super) fn signal(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
}

/// Undoes anything a fault may have left: thaws every process, lifts every network rule,
/// starts Redis and every daemon that is not running.
pub fn heal_everything(ctx: &FaultCtx) -> anyhow::Result<()> {
    let lab = ctx.lab;
    for i in 1..=lab.nodes.len() {
        for p in lab.net.pids(i) {
            signal(p, Signal::SIGCONT);
        }
        network::heal(lab, i);
        if crate::lab::node::faketime_available() {
            let _ = lab.node(i).set_clock_offset(0);
        }
        if lab.netem.is_ok() {
            network::netem_heal(lab, i);
        }
    }
    if !lab.redis.running() {
        lab.redis.start()?;
    }
    for n in &lab.nodes {
        if n.daemon_pid().is_none() {
            ctx.up(n);
        }
    }
    Ok(())
}
