//! `herd-bench`: measures the real release `herd` binary (found next to this executable),
//! each scenario against its own daemon in a fresh temporary `HERD_HOME`.
//!
//! What it measures, and why:
//! 1. **Start-up at scale**: for each N in `--apps`, the time from launching
//!    `herd start FILE` (N apps running `sleep 100000`) until `herd ps --json` shows all N
//!    instances `running`, then the time `herd down` takes to stop them all. This is what an
//!    operator waits for when a host boots or is drained.
//! 2. **Supervisor memory**: the daemon's RSS and PSS (from `/proc/PID/smaps_rollup`) idle and
//!    with N apps running. herd has no per-app shim processes (children write their logs
//!    directly), so the supervisor's footprint is the daemon's alone.
//! 3. **Restart latency**: SIGKILL a `restart = "always"` app with no backoff and time until
//!    its replacement process has started: the replacement (this binary's hidden `child`
//!    mode) stamps the wall clock as its very first action, so the figure covers exit
//!    detection, the restart decision, fork/exec and the new process reaching `main`.
//! 4. **CLI round trip**: whole `herd ps` / `herd ps --json` invocations (spawn to exit) with
//!    100 apps registered — the cost every script and status check pays.
//!
//! 5. **Idle**: 100 apps of `sleep 100000` under the daemon, metrics at their default 5 s
//!    interval; after a 10 s settle, the daemon's CPU over `--idle-secs` (utime + stime from
//!    `/proc/PID/stat`) and its RSS / PSS at both ends; also the start of the 100 apps through
//!    the CLI and SIGKILL restarts timed by watching `/proc`. With `--compare`, the same for
//!    PM2 and supervisord (installed on demand from npm and PyPI), s6 and runit (from the
//!    distribution with `apt-get`, as root); each is skipped if its install fails.
//! 6. **Churn**: 100 apps, 20 of them crash-looping, a `herd restart` and a `herd scale` every
//!    second for `--churn-secs`; the daemon's RSS every 10 s and its least-squares slope.
//!
//! 7. **Cluster** (`--cluster`, see `cluster/`): 3 herd daemons against a 3-member etcd on
//!    loopback: leader failover after kill -9, durable writes/s, idle CPU.
//!
//! Run: `cargo build --release -p herd -p herd-bench && target/release/herd-bench
//! [--apps 100,1000] [--restarts 50] [--ps-runs 200] [--idle-secs 120] [--churn-secs 300]
//! [--kills 30] [--compare] [--only apps,restart,ps,idle,churn] [--json FILE]`, or
//! `target/release/herd-bench --cluster [--cluster-kills 20]`.

mod args;
mod child;
mod churn;
mod cleanup;
mod cluster;
mod error;
mod herd;
mod idle;
mod procfs;
mod report;
mod scenarios;
mod stats;
mod tools;

use args::{Options, Scenario};
use error::{Context, Result};
use report::{Compared, Results};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tools::Supervisor;

fn main() -> ExitCode {
    // The helper mode must stamp before doing anything else: it is the restart-latency probe.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == child::SUBCOMMAND)
    {
        child::run();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let Some(opts) = args::parse(std::env::args().skip(1))? else {
        println!("{}", args::USAGE);
        return Ok(());
    };
    let exes = Binaries::locate()?;
    let env = scenarios::environment(&exes.herd)?;
    eprintln!(
        "herd-bench: using {} ({}, built {})",
        exes.herd.display(),
        env.herd_version,
        env.herd_built
    );
    let mut results = Results {
        env,
        apps: Vec::new(),
        restart: None,
        ps: None,
        idle: None,
        compare: Vec::new(),
        churn: None,
    };

    if opts.runs(Scenario::Apps) {
        for &n in &opts.apps {
            eprintln!("herd-bench: starting {n} apps ...");
            results.apps.push(scenarios::apps(&exes.herd, n)?);
        }
    }
    if opts.runs(Scenario::Restart) {
        eprintln!("herd-bench: {} SIGKILL restarts ...", opts.restarts);
        results.restart = Some(scenarios::restart_latency(&exes, opts.restarts)?);
    }
    if opts.runs(Scenario::Ps) {
        eprintln!("herd-bench: {} `herd ps` runs ...", opts.ps_runs);
        results.ps = Some(scenarios::ps_round_trip(&exes.herd, opts.ps_runs)?);
    }
    if opts.runs(Scenario::Idle) {
        let mut herd =
            tools::herd::HerdTool::up(&exes.herd, &results.env.herd_version, idle::APPS)?;
        results.idle = Some(measure_idle(&mut herd, &opts)?);
    }
    if opts.compare {
        let cache = tools::cache_dir(&exes.bench);
        results.compare.push(compared("PM2", || {
            let (bin, version) = tools::pm2::install(&cache)?;
            let mut pm2 = tools::pm2::Pm2::up(&bin, &version, idle::APPS)?;
            measure_idle(&mut pm2, &opts)
        }));
        results.compare.push(compared("supervisord", || {
            let (bin, version) = tools::supervisord::install(&cache)?;
            let mut sup = tools::supervisord::Supervisord::up(&bin, &version, idle::APPS)?;
            measure_idle(&mut sup, &opts)
        }));
        results.compare.push(compared("s6", || {
            let mut s6 = tools::s6::S6::up(&tools::s6::install()?, idle::APPS)?;
            measure_idle(&mut s6, &opts)
        }));
        results.compare.push(compared("runit", || {
            let mut runit = tools::runit::Runit::up(&tools::runit::install()?, idle::APPS)?;
            measure_idle(&mut runit, &opts)
        }));
    }
    if opts.runs(Scenario::Churn) {
        eprintln!(
            "herd-bench: churn for {} s (memory every {} s) ...",
            opts.churn_secs,
            churn::SAMPLE_EVERY
        );
        results.churn = Some(churn::churn(&exes.herd, opts.churn_secs)?);
    }

    let clustered = opts
        .cluster
        .as_ref()
        .map(|knobs| (cluster::run(&exes.herd, knobs), knobs));

    report::print(&results);
    if let Some((outcomes, knobs)) = &clustered {
        cluster::report::print(outcomes, knobs);
    }
    if let Some(path) = &opts.json {
        let mut json = report::to_json(&results);
        if let Some((outcomes, knobs)) = &clustered {
            json["cluster"] = cluster::report::to_json(outcomes, knobs);
        }
        write_json(&json, path)?;
    }
    Ok(())
}

/// The idle scenario for one supervisor, then its orderly shutdown.
fn measure_idle(sup: &mut dyn Supervisor, opts: &Options) -> Result<idle::IdleResult> {
    let result = idle::measure(sup, Duration::from_secs(opts.idle_secs), opts.kills)?;
    sup.shut_down()
        .context(|| format!("{}: shutting down", result.label))?;
    Ok(result)
}

/// Another supervisor's run: any failure, of its install included, skips it with the reason.
fn compared(tool: &str, run: impl FnOnce() -> Result<idle::IdleResult>) -> Compared {
    match run() {
        Ok(m) => Compared::Measured(Box::new(m)),
        Err(reason) => {
            eprintln!("herd-bench: skipping {tool}: {reason}");
            Compared::Skipped {
                tool: tool.to_string(),
                reason,
            }
        }
    }
}

fn write_json(json: &serde_json::Value, path: &Path) -> Result<()> {
    let text =
        serde_json::to_string_pretty(json).context(|| "cannot encode the results".to_string())?;
    std::fs::write(path, text + "\n").context(|| format!("cannot write {}", path.display()))?;
    eprintln!("herd-bench: wrote {}", path.display());
    Ok(())
}

/// The binaries under test: `herd`, and this one (the restart probe).
pub struct Binaries {
    pub herd: PathBuf,
    pub bench: PathBuf,
}

impl Binaries {
    fn locate() -> Result<Self> {
        let bench =
            std::env::current_exe().context(|| "cannot find this executable".to_string())?;
        let dir = bench
            .parent()
            .ok_or("this executable has no parent directory")?;
        let herd = dir.join("herd");
        if !herd.is_file() {
            return Err(format!(
                "no herd binary at {}; build both with `cargo build --release -p herd -p herd-bench`",
                herd.display()
            ));
        }
        Ok(Self { herd, bench })
    }
}
