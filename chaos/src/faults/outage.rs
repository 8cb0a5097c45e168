//! Taking hosts away: a killed or frozen daemon, a frozen host, an isolated host, a split.
//! While the hosts are gone the watch times the failover (if the leader was among them) and,
//! for long outages, the master's offline verdict; then the hosts come back.

use std::time::Duration;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::PlannedFault;
use super::context::FaultCtx;
use super::context::heal_everything;
use super::context::signal;
use super::network;
use super::network::Cut;
use super::watch;
use super::watch::Detect;
use super::watch::Failover;
use super::watch::Watch;
use crate::history::FaultState;
use crate::history::MeasureKind;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Outage {
    Kill,
    FreezeDaemon,
    FreezeHost,
    Isolate,
    Split,
}

pub(super) fn outage(
    ctx: &FaultCtx,
    plan: &PlannedFault,
    how: Outage,
    targets: Vec<usize>,
    leader: Option<(usize, u64)>,
) -> anyhow::Result<()> {
    let lab = ctx.lab;
    let survivors: Vec<usize> = (1..=lab.nodes.len())
        .filter(|i| !targets.contains(i))
        .collect();
    let ips = |nodes: &[usize]| {
        nodes
            .iter()
            .map(|&i| lab.node(i).ip.clone())
            .collect::<Vec<_>>()
    };
    let mut frozen = Vec::new();
    let mut detail = Vec::new();
    let mut failed = None;
    // The clock starts as the first blow lands: a failover can finish while the rest of the
    // injection (another host, the check that packets are dropped) is still under way.
    let started = Instant::now();
    let started_ms = ctx.rec.now_ms();
    for &t in &targets {
        let node = lab.node(t);
        match how {
            Outage::Kill => match node.kill_daemon() {
                Some(pid) => detail.push(format!("SIGKILL daemon {pid} of node {t}")),
                None => failed = Some(format!("node {t} has no running daemon")),
            },
            Outage::FreezeDaemon => match node.signal_daemon(Signal::SIGSTOP) {
                Some(pid) => {
                    frozen.push(pid);
                    detail.push(format!("SIGSTOP daemon {pid} of node {t}"));
                }
                None => failed = Some(format!("node {t} has no running daemon")),
            },
            Outage::FreezeHost => {
                let pids = lab.net.pids(t);
                for &p in &pids {
                    signal(p, Signal::SIGSTOP);
                }
                detail.push(format!("SIGSTOP all {} processes of host {t}", pids.len()));
                frozen.extend(pids);
            }
            Outage::Isolate => network::apply(lab, t, &Cut::Everything)?,
            Outage::Split => network::apply(lab, t, &Cut::Peers(ips(&survivors)))?,
        }
    }
    if how == Outage::Split {
        for &s in &survivors {
            network::apply(lab, s, &Cut::Peers(ips(&targets)))?;
        }
        detail.push(format!(
            "nft splits {targets:?} from {survivors:?} (Redis reachable from both)"
        ));
    }
    if how == Outage::Isolate {
        for &t in &targets {
            let proof = if network::unreachable_from_bridge(&lab.node(t).ip) {
                "verified: its port 9701 no longer answers"
            } else {
                "NOT verified: its port still answers"
            };
            detail.push(format!("nft drops every packet of node {t} ({proof})"));
        }
    }
    if let Some(why) = failed {
        ctx.not_injected(plan, &targets, FaultState::Failed(why));
        heal_everything(ctx)?;
        return Ok(());
    }
    ctx.begin_at(plan, &targets, detail.join("; "), started_ms);
    // Failover is the Raft voters' business: the control nodes left must agree on a new
    // leader (agents learn it later, from the new master's heartbeats). Control nodes ask for
    // the master's view first; an agent would forward the question to the leader anyway.
    let (control_left, agents_left): (Vec<usize>, Vec<usize>) =
        survivors.iter().partition(|&&i| !lab.node(i).agent);
    let mut w = Watch {
        askers: control_left.iter().chain(&agents_left).copied().collect(),
        ..Watch::default()
    };
    if let Some((l, id)) = leader
        && targets.contains(&l)
    {
        w.failover = Some(Failover {
            old: id,
            survivors: control_left,
            done_ms: None,
        });
    }
    if plan.long && ctx.detect_offline {
        w.detect = targets
            .iter()
            .filter_map(|&t| {
                Some(Detect {
                    node: t,
                    id: lab.node(t).node_id()?,
                    done_ms: None,
                    seen_online: false,
                })
            })
            .collect();
    }
    let planned = Duration::from_millis(plan.duration_ms);
    watch::during(lab, started, planned, ctx.profile.failover_limit, &mut w)?;
    match how {
        Outage::Kill => targets.iter().for_each(|&t| ctx.up(lab.node(t))),
        Outage::FreezeDaemon | Outage::FreezeHost => {
            frozen.iter().for_each(|&p| signal(p, Signal::SIGCONT))
        }
        Outage::Isolate | Outage::Split => {
            (1..=lab.nodes.len()).for_each(|i| network::heal(lab, i))
        }
    }
    ctx.end(plan, None);
    if let Some(f) = w.failover {
        ctx.measure(
            MeasureKind::Failover,
            plan,
            f.done_ms,
            ctx.profile.failover_limit,
            format!(
                "{}: nodes {:?} agree on a leader other than {}",
                plan.kind.name(),
                f.survivors,
                f.old
            ),
        );
    }
    for d in w.detect {
        if !d.seen_online {
            ctx.rec.note(format!(
                "fault #{}: the master's view never showed node {} online during the outage (still offline from an earlier fault, or no answer); its detection is not timed",
                plan.id, d.node
            ));
            continue;
        }
        ctx.measure(
            MeasureKind::OfflineDetection,
            plan,
            d.done_ms,
            planned,
            format!(
                "{}: the master marks node {} ({}) offline",
                plan.kind.name(),
                d.node,
                d.id
            ),
        );
    }
    Ok(())
}
