//! One chaos run from start to end: stand up the lab, deploy the workload, inject the seeded
//! faults while a client writes and observers watch, heal everything, let the cluster settle,
//! read every control node's registry and every agent's held slice, `herd down` every node and look for orphans, then tear the lab
//! down. Returns the recorded history; judging it is the invariants' job.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::client;
use crate::client::ClientConfig;
use crate::client::Writer;
use crate::faults;
use crate::faults::FaultCtx;
use crate::faults::Schedule;
use crate::history::AgentSlice;
use crate::history::DownCheck;
use crate::history::Heal;
use crate::history::History;
use crate::history::JobTick;
use crate::history::MeasureKind;
use crate::history::Measurement;
use crate::history::Recorder;
use crate::history::RegistryApp;
use crate::history::RegistrySnapshot;
use crate::invariants;
use crate::invariants::Verdict;
use crate::lab::Lab;
use crate::lab::LabConfig;
use crate::lab::MasterTiming;
use crate::lab::interrupt;
use crate::lab::preflight;
use crate::observer;
use crate::observer::ObserveConfig;
use crate::profile::Profile;
use crate::workload;

pub struct RunOptions {
    pub profile: Profile,
    pub seed: u64,
    pub herd: PathBuf,
    pub keep_dir: bool,
    /// Where each node's `daemon.log` and `events.jsonl` are copied before the lab goes away.
    pub logs_dir: PathBuf,
}

/// How the run was set up, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Settings {
    pub herd: String,
    /// Control nodes (Raft voters).
    pub nodes: usize,
    /// Agents (`role = "agent"`).
    pub agents: usize,
    pub raft_timing_ms: (u64, u64, u64),
    /// `None`: the herd under test refused them, the master ran with its defaults.
    pub master_timing: Option<MasterTiming>,
    pub netem: String,
    pub scale_supported: bool,
    pub offline_observable: bool,
    /// Some outages last long enough for the master to mark the node offline.
    pub offline_timed: bool,
    pub fault_phase_s: u64,
    pub failover_limit_ms: u64,
    pub recovery_limit_ms: u64,
    pub convergence_deadline_ms: u64,
    pub duration_s: f64,
    pub work_dir: Option<String>,
}

/// Sets a flag when dropped, so observer threads stop even if the scope unwinds.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn run(opts: &RunOptions) -> anyhow::Result<(History, Settings)> {
    preflight::check(&opts.herd)?;
    interrupt::install()?;
    let p = &opts.profile;
    let mut lab = Lab::create(&LabConfig {
        nodes: p.nodes,
        agents: p.agents,
        herd: opts.herd.clone(),
        master_timing: Some(p.master_timing),
        keep_dir: opts.keep_dir,
    })?;
    let started = Instant::now();
    let result = drive(&mut lab, opts);
    copy_logs(&lab, &opts.logs_dir);
    let kept = if result.is_err() || opts.keep_dir {
        Some(lab.keep_work_dir())
    } else {
        None
    };
    lab.teardown();
    if let Some(dir) = &kept {
        eprintln!(
            "herd-chaos: the work dir (homes, daemon logs) is kept at {}",
            dir.display()
        );
    }
    let (history, mut settings) = result?;
    settings.duration_s = started.elapsed().as_secs_f64();
    settings.work_dir = kept.map(|d| d.display().to_string());
    Ok((history, settings))
}

fn drive(lab: &mut Lab, opts: &RunOptions) -> anyhow::Result<(History, Settings)> {
    let p = &opts.profile;
    let rec = Recorder::new(opts.seed, &p.name, lab.node_infos());
    lab.start_all(&rec)?;
    let lab: &Lab = lab;
    let leader = lab.wait_formed(Duration::from_secs(60))?;
    eprintln!(
        "herd-chaos: {} control nodes and {} agent(s) formed one cluster (leader {leader}) after {:.1} s",
        lab.control().len(),
        lab.agents().len(),
        rec.now_ms() as f64 / 1000.0
    );
    let scale = lab.nodes[0]
        .cli(&["cluster", "--help"], Duration::from_secs(5))
        .is_ok_and(|o| {
            o.stdout
                .lines()
                .any(|l| l.trim_start().starts_with("scale"))
        });
    if !scale {
        rec.note("`herd cluster scale` does not exist in this herd; the client deploys and undeploys only");
    }
    let writer = Writer::new(lab, &rec);
    let apps_dir = lab.work_dir().join("apps");
    std::fs::create_dir_all(&apps_dir)?;
    workload::deploy(&writer, &apps_dir)?;
    let ticks_log = match workload::deploy_job(lab, &apps_dir) {
        Ok(log) => Some(log),
        Err(e) => {
            rec.note(format!("no scheduled job: {e}"));
            None
        }
    };
    let local_targets = workload::start_local(lab)?;
    interrupt::sleep(Duration::from_secs(3))?;
    let observable = faults::offline_observable(lab);
    let share = if lab.master_timing.is_some() {
        p.long_outage_share
    } else {
        p.long_outage_share_default_timing
    };
    let detect = observable && share > 0.0;
    if !observable {
        rec.note("offline detection cannot be timed: neither `herd cluster uptime --json` nor `herd cluster nodes --json` shows the master's online/offline status of the nodes (needs master duties: health sweep)");
    } else if !detect {
        rec.note(format!(
            "offline detection is not timed in the {} profile: the master keeps its default timing (this herd refused the shortened keys), so an outage would have to last {} s",
            p.name,
            p.detection_window(None).as_secs()
        ));
    }
    if let Err(why) = &lab.netem {
        rec.note(format!(
            "added latency is unsupported here ({why}); latency-loss faults inject 20% random packet loss with nftables instead"
        ));
    }
    let long_ms = detect.then(|| p.detection_window(lab.master_timing).as_millis() as u64);
    let mut settings = Settings {
        herd: opts.herd.display().to_string(),
        nodes: lab.control().len(),
        agents: lab.agents().len(),
        raft_timing_ms: crate::lab::RAFT_TIMING,
        master_timing: lab.master_timing,
        netem: match &lab.netem {
            Ok(()) => "available".into(),
            Err(why) => format!("unsupported: {why}"),
        },
        scale_supported: scale,
        offline_observable: observable,
        offline_timed: detect,
        fault_phase_s: p.fault_phase.as_secs(),
        failover_limit_ms: p.failover_limit.as_millis() as u64,
        recovery_limit_ms: p.recovery_limit.as_millis() as u64,
        convergence_deadline_ms: p.convergence_deadline.as_millis() as u64,
        ..Settings::default()
    };
    let ctx = FaultCtx {
        lab,
        rec: &rec,
        profile: p,
        detect_offline: detect,
    };
    let observe_stop = AtomicBool::new(false);
    let client_stop = AtomicBool::new(false);
    let observe = ObserveConfig {
        status_every: p.status_every,
        ps_every: p.ps_every,
        census_every: p.census_every,
        singleton: workload::SINGLETON.to_string(),
    };
    let client_cfg = ClientConfig {
        seed: opts.seed.wrapping_add(1),
        pause_ms: p.client_pause_ms,
        scale,
        dir: apps_dir.clone(),
    };
    std::thread::scope(|s| -> anyhow::Result<()> {
        let _stop_observers = StopOnDrop(&observe_stop);
        observer::spawn(s, lab, &rec, &observe_stop, &observe);
        let client = {
            let _stop_client = StopOnDrop(&client_stop);
            let client = s.spawn(|| client::run(&writer, &client_stop, &client_cfg));
            let schedule = Schedule::new(opts.seed, p.gap_ms, p.short_fault_ms, long_ms, share);
            fault_phase(&ctx, schedule, p.fault_phase)?;
            client
        };
        match client.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("the client thread panicked"),
        }
        heal_and_settle(&ctx, &local_targets)?;
        if let Some(log) = &ticks_log {
            read_job(lab, &rec, log);
        }
        Ok(())
    })?;
    final_downs(lab, &rec);
    let mut history = rec.snapshot();
    for n in &lab.nodes {
        observer::daemon_log::read_into(&mut history, n.index, &n.path("daemon.log"));
    }
    settings.duration_s = rec.now_ms() as f64 / 1000.0;
    Ok((history, settings))
}

/// Keeps the daemons' own account of the run next to the report (best effort).
fn copy_logs(lab: &Lab, to: &std::path::Path) {
    for n in &lab.nodes {
        let dir = to.join(format!("h{}", n.index));
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        for file in ["daemon.log", "events.jsonl", "config.toml"] {
            let _ = std::fs::copy(n.path(file), dir.join(file));
        }
    }
    eprintln!("herd-chaos: daemon logs copied to {}", to.display());
}

/// Faults until the phase is over, but at least one of every kind.
fn fault_phase(ctx: &FaultCtx, mut schedule: Schedule, phase: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < phase || schedule.in_first_round() {
        let Some(plan) = schedule.next() else { break };
        faults::run_fault(ctx, &plan)?;
    }
    eprintln!(
        "herd-chaos: {:>6.1} s fault phase over; healing everything",
        ctx.rec.now_ms() as f64 / 1000.0
    );
    Ok(())
}

fn heal_and_settle(
    ctx: &FaultCtx,
    local_targets: &BTreeMap<usize, BTreeMap<String, u32>>,
) -> anyhow::Result<()> {
    let (lab, rec, p) = (ctx.lab, ctx.rec, ctx.profile);
    faults::heal_everything(ctx)?;
    let recovered = faults::wait_recovered(lab, p.recovery_limit)?;
    rec.with(|h| {
        h.measurements.push(Measurement {
            kind: MeasureKind::Recovery,
            fault: None,
            ms: recovered,
            limit_ms: p.recovery_limit.as_millis() as u64,
            note: "final heal; every node names one leader".into(),
        })
    });
    let healed_ms = rec.now_ms();
    let targets = local_targets.clone();
    rec.with(|h| {
        h.heal = Some(Heal {
            healed_ms,
            deadline_ms: p.convergence_deadline.as_millis() as u64,
            local_targets: targets,
        })
    });
    read_final_registries(lab, rec)?;
    // Let the apps converge (or the deadline pass) while the observers keep recording.
    let deadline = Instant::now() + p.convergence_deadline;
    while Instant::now() < deadline {
        interrupt::sleep(Duration::from_secs(1))?;
        let h = rec.snapshot();
        let done = |c: invariants::Check| matches!(c.verdict, Verdict::Pass | Verdict::NoData);
        if done(invariants::convergence::cluster_apps_converge(&h))
            && done(invariants::convergence::local_apps_converge(&h))
        {
            interrupt::sleep(Duration::from_secs(2))?;
            break;
        }
    }
    eprintln!(
        "herd-chaos: {:>6.1} s settled {:.1} s after healing",
        rec.now_ms() as f64 / 1000.0,
        (rec.now_ms() - healed_ms) as f64 / 1000.0
    );
    read_agent_slices(lab, rec)
}

/// The scheduled job's runs as its log has them, and the registry's record of its runs and
/// skipped ticks (from the first node that answers), for invariant 7.
fn read_job(lab: &Lab, rec: &Recorder, log: &Path) {
    let ticks: Vec<JobTick> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.rsplitn(3, ':');
            let trigger = parts.next()?.trim().to_string();
            let tick_s = parts.next()?.trim().parse().ok()?;
            let home = parts.next()?.to_string();
            Some(JobTick {
                tick_s,
                home,
                trigger,
            })
        })
        .collect();
    let record = lab.nodes.iter().find_map(|n| {
        let out = n
            .cli(
                &["jobs", "history", workload::JOB, "--json"],
                Duration::from_secs(10),
            )
            .ok()?;
        if !out.ok() {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&out.stdout).ok()
    });
    if record.is_none() {
        rec.note("no node answered `herd jobs history` for the scheduled job");
    }
    rec.with(|h| {
        h.job_ticks = ticks;
        h.job_record = record;
    });
}

/// Each agent's held slice beside the registry, read again while they differ (an agent
/// refetches only once a heartbeat tells it that its slice moved) for up to 15 s; the last
/// reading is what the history keeps, and invariant 6 judges it.
fn read_agent_slices(lab: &Lab, rec: &Recorder) -> anyhow::Result<()> {
    for i in lab.agents() {
        let started = Instant::now();
        loop {
            let s = read_agent_slice(lab, i, rec);
            if invariants::slices::compare(&s).is_ok()
                || started.elapsed() > Duration::from_secs(15)
            {
                rec.with(|h| h.agent_slices.push(s));
                break;
            }
            interrupt::sleep(Duration::from_millis(500))?;
        }
    }
    Ok(())
}

fn read_agent_slice(lab: &Lab, index: usize, rec: &Recorder) -> AgentSlice {
    let node = lab.node(index);
    let node_id = node
        .status(crate::lab::node::CLI_TIMEOUT)
        .and_then(|s| s["node_id"].as_u64())
        .or_else(|| node.node_id());
    // The registry through the leader, asked first of the control nodes.
    let order = lab.control().into_iter().chain(lab.agents());
    let mut errors = Vec::new();
    let mut registry = None;
    for j in order {
        match lab
            .node(j)
            .cli(&["cluster", "apps", "--json"], Duration::from_secs(5))
        {
            Ok(o) if o.ok() => match serde_json::from_str::<Value>(&o.stdout) {
                Ok(v) => {
                    registry = Some(v);
                    break;
                }
                Err(e) => errors.push(format!("node {j}: unreadable JSON ({e})")),
            },
            Ok(o) => errors.push(format!("node {j}: {}", o.failure())),
            Err(e) => errors.push(format!("node {j}: {e:#}")),
        }
    }
    let t_ms = rec.now_ms();
    let held = match std::fs::read_to_string(node.path("raft/slice.json")) {
        Ok(text) => Some(serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            errors.push(format!("slice.json: {e}"));
            None
        }
    };
    let live = node.daemon_pid().is_some();
    if !live {
        errors.push("its daemon is not running".into());
    }
    AgentSlice {
        t_ms,
        node: index,
        node_id,
        live,
        version: held.as_ref().and_then(|h| h["slice"]["version"].as_u64()),
        held,
        registry,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

fn parse_apps(text: &str) -> Option<Vec<RegistryApp>> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.as_array()?
        .iter()
        .map(|a| {
            Some(RegistryApp {
                name: a["name"].as_str()?.to_string(),
                desired: a["desired"].as_u64()? as u32,
                on_disconnect: a["on_disconnect"].as_str().unwrap_or("keep").to_string(),
                assignments: a["assignments"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Every control node's local replica (`--stale`), read until they agree on names and counts
/// (or 30 s pass); the last reading is what the history keeps. Agents hold no replica (asked,
/// they would forward to the leader); invariant 6 checks their slices instead.
fn read_final_registries(lab: &Lab, rec: &Recorder) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let snaps: Vec<RegistrySnapshot> = lab
            .nodes
            .iter()
            .filter(|n| !n.agent)
            .map(|n| {
                let out = n.cli(
                    &["cluster", "apps", "--json", "--stale"],
                    Duration::from_secs(5),
                );
                let t_ms = rec.now_ms();
                match out {
                    Ok(o) if o.ok() => match parse_apps(&o.stdout) {
                        Some(apps) => RegistrySnapshot {
                            t_ms,
                            node: n.index,
                            apps: Some(apps),
                            error: None,
                        },
                        None => RegistrySnapshot {
                            t_ms,
                            node: n.index,
                            apps: None,
                            error: Some("unreadable JSON".into()),
                        },
                    },
                    Ok(o) => RegistrySnapshot {
                        t_ms,
                        node: n.index,
                        apps: None,
                        error: Some(o.failure()),
                    },
                    Err(e) => RegistrySnapshot {
                        t_ms,
                        node: n.index,
                        apps: None,
                        error: Some(format!("{e:#}")),
                    },
                }
            })
            .collect();
        let key = |s: &RegistrySnapshot| {
            s.apps.as_ref().map(|a| {
                a.iter()
                    .map(|a| (a.name.clone(), a.desired))
                    .collect::<Vec<_>>()
            })
        };
        let agree = snaps
            .iter()
            .all(|s| s.apps.is_some() && key(s) == key(&snaps[0]));
        if agree || started.elapsed() > Duration::from_secs(30) {
            rec.with(|h| h.final_registries = snaps);
            return Ok(());
        }
        interrupt::sleep(Duration::from_millis(500))?;
    }
}

/// `herd down` on every node, then a look for app processes that outlived it.
fn final_downs(lab: &Lab, rec: &Recorder) {
    for n in &lab.nodes {
        let out = n.cli_in_host(&["down"], Duration::from_secs(60));
        let t_ms = rec.now_ms();
        let (down_ok, down_error) = match &out {
            Ok(o) if o.ok() => (true, None),
            Ok(o) => (false, Some(o.failure())),
            Err(e) => (false, Some(format!("{e:#}"))),
        };
        std::thread::sleep(faults::DOWN_GRACE);
        let survivors = faults::survivors_of(lab, n);
        rec.with(|h| {
            h.downs.push(DownCheck {
                t_ms,
                node: n.index,
                down_ok,
                down_error,
                survivors,
                grace_ms: faults::DOWN_GRACE.as_millis() as u64,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_apps_json_becomes_registry_apps() {
        let apps = parse_apps(
            r#"[{"assignments":{"0":11,"1":22},"desired":2,"name":"web","on_disconnect":"keep","placement":{}},
                {"assignments":{},"desired":1,"name":"solo","on_disconnect":"stop"}]"#,
        )
        .expect("parses");
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].assignments.get("1"), Some(&22));
        assert_eq!(
            (apps[1].name.as_str(), apps[1].on_disconnect.as_str()),
            ("solo", "stop")
        );
        assert!(parse_apps("{}").is_none());
    }
}
