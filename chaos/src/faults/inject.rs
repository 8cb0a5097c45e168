//! Injecting one planned fault, timing it, healing it, and writing it all into the history.
//! Host outages live in `outage`, process faults in `process`; Redis and latency are here. What
//! they all act through (`FaultCtx`, the final heal) is in `context`.

use std::time::Duration;
use std::time::Instant;

use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::FaultKind;
use super::PlannedFault;
use super::context::FaultCtx;
use super::context::voters_live;
use super::network;
use super::outage::Outage;
use super::outage::outage;
use super::process;
use super::watch;
use crate::history::FaultState;
use crate::history::MeasureKind;
use crate::lab::interrupt;

/// Waits the plan's gap, injects the fault, heals it, and times the recovery.
pub fn run_fault(ctx: &FaultCtx, plan: &PlannedFault) -> anyhow::Result<()> {
    interrupt::sleep(Duration::from_millis(plan.gap_ms))?;
    let lab = ctx.lab;
    let n = lab.nodes.len();
    let mut rng = StdRng::seed_from_u64(plan.pick);
    let random_node = rng.random_range(1..=n);
    // Raft faults (a wiped raft dir, a minority of voters cut off) pick among the control
    // nodes; an agent has no raft dir and no vote.
    let control = lab.control();
    let random_control = control[rng.random_range(0..control.len())];
    let mut agents = lab.agents();
    agents.shuffle(&mut rng);
    if plan.kind.is_outage() && !voters_live(ctx, ctx.profile.recovery_limit)? {
        ctx.not_injected(
            plan,
            &[],
            FaultState::Skipped(format!(
                "a voter is not a live node (an earlier wipe not yet repaired) after {} s; taking hosts away now would cost the quorum",
                ctx.profile.recovery_limit.as_secs()
            )),
        );
        return Ok(());
    }
    let leader = watch::current_leader(lab);
    let no_leader = || FaultState::Skipped("no leader agreed by a majority".into());
    let mut recovery_limit = ctx.profile.recovery_limit;
    match plan.kind {
        FaultKind::KillLeader | FaultKind::IsolateLeader => {
            let Some((l, _)) = leader else {
                ctx.not_injected(plan, &[], no_leader());
                return Ok(());
            };
            let how = if plan.kind == FaultKind::KillLeader {
                Outage::Kill
            } else {
                Outage::Isolate
            };
            outage(ctx, plan, how, vec![l], leader)?;
        }
        FaultKind::KillNode => outage(ctx, plan, Outage::Kill, vec![random_node], leader)?,
        FaultKind::FreezeDaemon => {
            outage(ctx, plan, Outage::FreezeDaemon, vec![random_node], leader)?
        }
        FaultKind::FreezeHost => outage(ctx, plan, Outage::FreezeHost, vec![random_node], leader)?,
        FaultKind::IsolateMinority => {
            // A minority of the voters, and with them some of the agents (maybe none).
            let mut voters = control.clone();
            voters.shuffle(&mut rng);
            let k = rng.random_range(1..=(control.len() - 1) / 2);
            let a = rng.random_range(0..=agents.len());
            let mut targets = voters[..k].to_vec();
            targets.extend(&agents[..a]);
            outage(ctx, plan, Outage::Isolate, targets, leader)?;
        }
        FaultKind::SplitInTwo => {
            // The side taken away holds a minority of the voters (so the other side can
            // elect), and any share of the agents.
            let mut voters = control.clone();
            voters.shuffle(&mut rng);
            let a = rng.random_range(0..=agents.len());
            let mut side = voters[..control.len() / 2].to_vec();
            side.extend(&agents[..a]);
            outage(ctx, plan, Outage::Split, side, leader)?
        }
        FaultKind::RedisRestart => redis_restart(ctx, plan, leader.map(|l| l.1))?,
        FaultKind::WipeRaft => {
            if process::wipe_raft(ctx, plan, random_control)? {
                recovery_limit *= 2;
            }
        }
        FaultKind::KillApps => process::kill_apps(ctx, plan, random_node, &mut rng),
        FaultKind::KillWhileStarting => {
            process::kill_while_starting(ctx, plan, random_node, &mut rng)?
        }
        FaultKind::GracefulRestart => process::graceful_restart(ctx, plan, random_node),
        FaultKind::LatencyLoss => latency_loss(ctx, plan, random_node)?,
        FaultKind::ClockStep => {
            let target = match leader {
                Some((l, _)) if rng.random_bool(0.5) => l,
                _ => random_node,
            };
            let hours = if rng.random_bool(0.5) { 1 } else { 24 };
            let sign = if rng.random_bool(0.5) { 1 } else { -1 };
            clock_step(ctx, plan, target, sign * hours * 3_600)?
        }
    }
    let recovered = watch::wait_recovered(lab, recovery_limit)?;
    ctx.measure(
        MeasureKind::Recovery,
        plan,
        recovered,
        recovery_limit,
        format!("{} healed; every node names one leader", plan.kind.name()),
    );
    if recovered.is_none() {
        ctx.rec.note(format!(
            "after fault #{} ({}) the cluster did not agree on a leader within {} s",
            plan.id,
            plan.kind.name(),
            recovery_limit.as_secs()
        ));
    }
    Ok(())
}

fn redis_restart(ctx: &FaultCtx, plan: &PlannedFault, before: Option<u64>) -> anyhow::Result<()> {
    let lab = ctx.lab;
    lab.redis.kill();
    ctx.begin(
        plan,
        &[],
        format!("SIGKILL redis-server {}:{}", lab.redis.ip, lab.redis.port),
    );
    let started = Instant::now();
    let mut changed = None;
    while started.elapsed() < Duration::from_millis(plan.duration_ms) {
        if let Some((_, l)) = watch::current_leader(lab)
            && Some(l) != before
            && changed.is_none()
        {
            changed = Some(l);
        }
        interrupt::sleep(Duration::from_millis(250))?;
    }
    lab.redis.start()?;
    let what = match (before, changed) {
        (_, None) => "the leader did not change during the outage".to_string(),
        (b, Some(l)) => {
            let msg = format!("the leader changed from {b:?} to {l} during the Redis outage");
            ctx.rec.note(format!("fault #{}: {msg}", plan.id));
            msg
        }
    };
    ctx.end(plan, Some(format!("redis restarted (empty); {what}")));
    Ok(())
}

/// Steps `target`'s wall clock by `secs` for the fault's duration, then back to the host's.
fn clock_step(ctx: &FaultCtx, plan: &PlannedFault, target: usize, secs: i64) -> anyhow::Result<()> {
    if !crate::lab::node::faketime_available() {
        ctx.not_injected(
            plan,
            &[target],
            FaultState::Unsupported(format!(
                "no libfaketime at {} (apt-get install faketime)",
                crate::lab::node::LIBFAKETIME
            )),
        );
        return Ok(());
    }
    let node = ctx.lab.node(target);
    node.set_clock_offset(secs)?;
    ctx.begin(
        plan,
        &[target],
        format!("wall clock stepped {secs:+} s (libfaketime; monotonic and boot clocks untouched)"),
    );
    interrupt::sleep(Duration::from_millis(plan.duration_ms))?;
    node.set_clock_offset(0)?;
    ctx.end(plan, Some("stepped back to the host's time".into()));
    Ok(())
}

fn latency_loss(ctx: &FaultCtx, plan: &PlannedFault, target: usize) -> anyhow::Result<()> {
    if let Err(why) = &ctx.lab.netem {
        // No delay without sch_netem; the loss half is still real, dropped by nftables.
        network::apply(ctx.lab, target, &network::Cut::Loss(20))?;
        ctx.begin(
            plan,
            &[target],
            format!("nftables: 20% random packet loss in and out (no added delay: {why})"),
        );
        interrupt::sleep(Duration::from_millis(plan.duration_ms))?;
        network::heal(ctx.lab, target);
        ctx.end(plan, None);
        return Ok(());
    }
    network::netem(ctx.lab, target, 100, 5)?;
    ctx.begin(
        plan,
        &[target],
        "tc netem: 100 ms ± 20 ms delay, 5% loss on eth0".into(),
    );
    interrupt::sleep(Duration::from_millis(plan.duration_ms))?;
    network::netem_heal(ctx.lab, target);
    ctx.end(plan, None);
    Ok(())
}
