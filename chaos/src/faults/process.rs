//! Faults on a host's processes: app processes killed under a live supervisor, a daemon
//! killed while it starts a burst of instances, a graceful `herd down`/`herd up` (with the
//! orphan check), and a daemon restarted with its Raft data wiped.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use nix::sys::signal::Signal;
use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::PlannedFault;
use super::context::FaultCtx;
use super::context::signal;
use super::context::voters_live;
use crate::history::DownCheck;
use crate::history::FaultState;
use crate::history::MeasureKind;
use crate::history::Survivor;
use crate::lab::Lab;
use crate::lab::Node;
use crate::lab::interrupt;
use crate::lab::procs;

/// Instances a `kill-while-starting` burst asks for.
const BURST: u32 = 60;
/// After `herd down` returns, app processes still alive this much later are orphans.
pub const DOWN_GRACE: Duration = Duration::from_millis(1_000);
/// Returns whether the wipe happened.
pub(super) fn wipe_raft(
    ctx: &FaultCtx,
    plan: &PlannedFault,
    target: usize,
) -> anyhow::Result<bool> {
    if !voters_live(ctx, ctx.profile.recovery_limit)? {
        ctx.not_injected(
            plan,
            &[target],
            FaultState::Skipped(
                "an earlier wipe's dead voter is not replaced yet; a second would cost the quorum"
                    .into(),
            ),
        );
        return Ok(false);
    }
    let node = ctx.lab.node(target);
    let old_id = node.node_id();
    let Some(pid) = node.kill_daemon() else {
        ctx.not_injected(
            plan,
            &[target],
            FaultState::Failed(format!("node {target} has no running daemon")),
        );
        return Ok(false);
    };
    std::fs::remove_dir_all(node.raft_dir())?;
    ctx.begin(
        plan,
        &[target],
        format!(
            "SIGKILL daemon {pid}, rm -rf {} (was Raft node {})",
            node.raft_dir().display(),
            old_id.map_or_else(|| "?".to_string(), |i| i.to_string())
        ),
    );
    interrupt::sleep(Duration::from_millis(plan.duration_ms.min(3_000)))?;
    ctx.up(node);
    ctx.end(plan, Some("restarted with an empty raft dir".into()));
    Ok(true)
}

pub(super) fn kill_apps(ctx: &FaultCtx, plan: &PlannedFault, target: usize, rng: &mut StdRng) {
    let node = ctx.lab.node(target);
    let home = node.home.to_string_lossy();
    let mut apps: Vec<procs::ProcInfo> = procs::scan(ctx.lab.work_dir())
        .into_iter()
        .filter(|p| p.herd_home == home && p.app.is_some() && p.live())
        .collect();
    if apps.is_empty() {
        ctx.not_injected(
            plan,
            &[target],
            FaultState::Skipped(format!("no app process runs on node {target}")),
        );
        return;
    }
    apps.shuffle(rng);
    let k = rng.random_range(1..=apps.len().min(3));
    let killed: Vec<String> = apps[..k]
        .iter()
        .map(|p| {
            signal(p.pid, Signal::SIGKILL);
            format!("{} (pid {})", p.app.as_deref().unwrap_or("?"), p.pid)
        })
        .collect();
    ctx.begin(
        plan,
        &[target],
        format!("SIGKILL app processes {}", killed.join(", ")),
    );
    ctx.end(plan, None);
}

pub(super) fn kill_while_starting(
    ctx: &FaultCtx,
    plan: &PlannedFault,
    target: usize,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    let node = ctx.lab.node(target);
    let app = format!("burst-{}", plan.id);
    let burst = BURST.to_string();
    let mut child = node
        .command_in_host(&[
            "start",
            "--name",
            &app,
            "--instances",
            &burst,
            "--restart",
            "always",
            "--",
            "sleep",
            "100000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Kill once the first instance exists (and a random few ms more), so the daemon dies
    // between spawning some instances and recording them all.
    let home = node.home.to_string_lossy().into_owned();
    let count = || {
        procs::scan(ctx.lab.work_dir())
            .iter()
            .filter(|p| p.herd_home == home && p.app.as_deref().is_some_and(|a| a == app))
            .count()
    };
    let waited = Instant::now();
    while count() == 0 && waited.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(rng.random_range(0..=30u64)));
    let into = waited.elapsed().as_millis();
    let Some(pid) = node.kill_daemon() else {
        let _ = child.kill();
        let _ = child.wait();
        ctx.not_injected(
            plan,
            &[target],
            FaultState::Failed(format!("node {target} has no running daemon")),
        );
        return Ok(());
    };
    let started = count();
    ctx.begin(
        plan,
        &[target],
        format!(
            "SIGKILL daemon {pid} {into} ms into `herd start` of {BURST} instances of `{app}`, with {started} of them started"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let acked = loop {
        match child.try_wait()? {
            Some(status) => break status.success(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    interrupt::sleep(Duration::from_millis(plan.duration_ms))?;
    ctx.up(node);
    let restarted = Instant::now();
    // The restarted daemon must end up with every instance exactly once: adopted or started,
    // never twice (two live processes with one HERD_SLOT), and strays of an app it does not
    // know stopped. `herd ps` shows its view; `/proc` shows the truth.
    let limit = Duration::from_secs(15);
    let (mut converged, mut last, mut registered) = (None, String::new(), false);
    while restarted.elapsed() < limit {
        interrupt::sleep(Duration::from_millis(250))?;
        let rows = node
            .cli(&["ps", &app, "--json"], Duration::from_secs(3))
            .ok()
            .filter(|o| o.ok())
            .and_then(|o| crate::observer::parse_ps(&o.stdout))
            .unwrap_or_default();
        registered = rows.iter().any(|r| r.name == app);
        let want = if registered || acked {
            BURST as usize
        } else {
            0
        };
        let running: BTreeSet<u32> = rows
            .iter()
            .filter(|r| r.status == "running" && r.pid.is_some())
            .map(|r| r.instance)
            .collect();
        let live: Vec<procs::ProcInfo> = procs::scan(ctx.lab.work_dir())
            .into_iter()
            .filter(|p| p.herd_home == home && p.app.as_deref() == Some(app.as_str()) && p.live())
            .collect();
        let slots: BTreeSet<&str> = live.iter().filter_map(|p| p.slot.as_deref()).collect();
        last = format!(
            "wants {want}: `herd ps` shows {} running, /proc has {} live processes over {} slots",
            running.len(),
            live.len(),
            slots.len()
        );
        if running.len() == want && live.len() == want && slots.len() == want {
            converged = Some(restarted.elapsed().as_millis() as u64);
            break;
        }
    }
    ctx.measure(
        MeasureKind::RestartConvergence,
        plan,
        converged,
        limit,
        format!("node {target}, `{app}` after the restart: {last}"),
    );
    if acked && !registered {
        ctx.rec.note(format!(
            "node {target}: `herd start` of `{app}` was acknowledged, but after the daemon's restart `herd ps` does not know it"
        ));
    }
    // Keep the process count bounded over a long run.
    let _ = node.cli_in_host(&["delete", &app, "--timeout", "5"], Duration::from_secs(20));
    ctx.end(
        plan,
        Some(format!(
            "start {}acknowledged; after restart the app is {}registered; {last}; then deleted",
            if acked { "" } else { "not " },
            if registered { "" } else { "not " }
        )),
    );
    Ok(())
}

pub(super) fn graceful_restart(ctx: &FaultCtx, plan: &PlannedFault, target: usize) {
    let node = ctx.lab.node(target);
    ctx.begin(
        plan,
        &[target],
        format!("`herd down` on node {target}, look for orphans, `herd up`"),
    );
    let down = node.cli_in_host(&["down"], Duration::from_secs(60));
    let t_ms = ctx.rec.now_ms();
    let (down_ok, down_error) = match &down {
        Ok(o) if o.ok() => (true, None),
        Ok(o) => (false, Some(o.failure())),
        Err(e) => (false, Some(format!("{e:#}"))),
    };
    std::thread::sleep(DOWN_GRACE);
    let survivors = survivors_of(ctx.lab, node);
    ctx.rec.with(|h| {
        h.downs.push(DownCheck {
            t_ms,
            node: target,
            down_ok,
            down_error,
            survivors,
            grace_ms: DOWN_GRACE.as_millis() as u64,
        })
    });
    ctx.up(node);
    ctx.end(plan, None);
}

/// App processes of `node`'s home that are still alive.
pub fn survivors_of(lab: &Lab, node: &Node) -> Vec<Survivor> {
    let home = node.home.to_string_lossy();
    procs::scan(lab.work_dir())
        .into_iter()
        .filter(|p| p.herd_home == home && p.app.is_some() && p.state != 'Z')
        .map(|p| Survivor {
            pid: p.pid,
            herd_home: p.herd_home,
            app: p.app,
            cmdline: p.cmdline,
        })
        .collect()
}
