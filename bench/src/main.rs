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
//! Run: `cargo build --release -p herd -p herd-bench && target/release/herd-bench
//! [--apps 100,1000] [--restarts 50] [--ps-runs 200] [--json FILE]`.

mod args;
mod child;
mod error;
mod herd;
mod report;
mod scenarios;
mod stats;

use error::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

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
    eprintln!("herd-bench: using {}", exes.herd.display());

    let mut apps = Vec::new();
    for &n in &opts.apps {
        eprintln!("herd-bench: starting {n} apps ...");
        apps.push(scenarios::apps(&exes.herd, n)?);
    }
    eprintln!("herd-bench: {} SIGKILL restarts ...", opts.restarts);
    let restart = scenarios::restart_latency(&exes, opts.restarts)?;
    eprintln!("herd-bench: {} `herd ps` runs ...", opts.ps_runs);
    let ps = scenarios::ps_round_trip(&exes.herd, opts.ps_runs)?;

    let results = report::Results {
        env,
        apps,
        restart,
        ps,
    };
    report::print(&results);
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report::to_json(&results))
            .context(|| "cannot encode the results".to_string())?;
        std::fs::write(path, text + "\n").context(|| format!("cannot write {}", path.display()))?;
        eprintln!("herd-bench: wrote {}", path.display());
    }
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
