//! herd's chaos suite: stands up a real cluster (one network namespace per host), injects a
//! seeded schedule of faults while a client writes and observers watch, checks the cluster's
//! promises on the recorded history, and reports. Exits 1 when an invariant fails (with the
//! evidence), 2 when the suite itself could not run, 130 when interrupted.
//!
//!     cargo build --release -p herd && sudo cargo run -p herd-chaos -- --profile quick

mod client;
mod faults;
mod history;
mod invariants;
mod lab;
mod observer;
mod profile;
mod report;
mod scenario;
mod workload;

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::history::History;
use crate::invariants::Verdict;
use crate::profile::Profile;

#[derive(Parser, Debug)]
#[command(
    name = "herd-chaos",
    about = "Break a real herd cluster on purpose and check what it promised"
)]
struct Args {
    /// `quick` (3 control nodes + 1 agent, a few minutes) or `soak` (5 control nodes + 3
    /// agents, 30 minutes).
    #[arg(long, default_value = "quick", value_parser = ["quick", "soak"])]
    profile: String,
    /// Seed of the fault schedule and the client (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of control hosts, the Raft voters (overrides the profile).
    #[arg(long, value_parser = ["3", "5"])]
    nodes: Option<String>,
    /// Number of agent hosts, pinned with `role = "agent"` (overrides the profile).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=8))]
    agents: Option<u64>,
    /// Where the JSON report goes; the full history (`*.history.json`) and the daemons' logs
    /// (`*.logs/`) go next to it.
    #[arg(long, default_value = "chaos-report.json")]
    report: PathBuf,
    /// The herd binary under test (default: target/release/herd of this build).
    #[arg(long)]
    herd: Option<PathBuf>,
    /// Length of the fault phase in seconds (overrides the profile; every fault kind still
    /// fires once).
    #[arg(long, value_name = "SECS")]
    fault_phase: Option<u64>,
    /// Keep the work dir (homes, daemon logs) after the run.
    #[arg(long)]
    keep_dir: bool,
    /// Judge a recorded history again instead of running (no root needed).
    #[arg(long, value_name = "HISTORY_JSON", conflicts_with_all = ["seed", "nodes", "agents", "herd", "fault_phase"])]
    check: Option<PathBuf>,
}

/// target/release/herd of the tree this binary was built in, else a `herd` beside it.
fn default_herd() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let dir = exe.parent().context("this binary has no directory")?;
    let release = dir.parent().map(|t| t.join("release").join("herd"));
    Ok(release
        .filter(|p| p.is_file())
        .unwrap_or_else(|| dir.join("herd")))
}

fn history_path(report: &Path) -> PathBuf {
    let stem = report.file_stem().unwrap_or_default().to_string_lossy();
    report.with_file_name(format!("{stem}.history.json"))
}

fn logs_path(report: &Path) -> PathBuf {
    let stem = report.file_stem().unwrap_or_default().to_string_lossy();
    report.with_file_name(format!("{stem}.logs"))
}

fn print_failures(results: &[invariants::InvariantResult]) {
    for inv in results.iter().filter(|i| i.verdict == Verdict::Fail) {
        for c in inv.checks.iter().filter(|c| c.verdict == Verdict::Fail) {
            eprintln!(
                "herd-chaos: VIOLATED invariant {} ({}):",
                inv.number, c.name
            );
            for e in &c.evidence {
                eprintln!("  {e}");
            }
        }
    }
}

fn check_only(path: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let h: History = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a chaos history", path.display()))?;
    let results = invariants::check_all(&h);
    let r = report::build(
        &h,
        scenario::Settings::default(),
        results.clone(),
        format!("herd-chaos --check {}", path.display()),
        Some(path.display().to_string()),
    );
    eprint!("{}", report::summary(&r));
    print_failures(&results);
    Ok(if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.check {
        return check_only(path);
    }
    let mut profile = Profile::named(&args.profile).context("unknown profile")?;
    if let Some(n) = &args.nodes {
        profile.nodes = n.parse().context("--nodes is 3 or 5")?;
    }
    if let Some(a) = args.agents {
        profile.agents = a as usize;
    }
    if let Some(s) = args.fault_phase {
        profile.fault_phase = std::time::Duration::from_secs(s);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let herd = match &args.herd {
        Some(p) => p.clone(),
        None => default_herd()?,
    };
    let herd = herd.canonicalize().unwrap_or(herd);
    let mut command = format!(
        "cargo run -p herd-chaos -- --profile {} --seed {seed} --nodes {} --agents {}",
        profile.name, profile.nodes, profile.agents
    );
    if let Some(s) = args.fault_phase {
        command.push_str(&format!(" --fault-phase {s}"));
    }
    if let Some(h) = &args.herd {
        command.push_str(&format!(" --herd {}", h.display()));
    }
    eprintln!(
        "herd-chaos: profile {}, seed {seed}, {} control nodes + {} agent(s), herd {}",
        profile.name,
        profile.nodes,
        profile.agents,
        herd.display()
    );
    let opts = scenario::RunOptions {
        profile,
        seed,
        herd,
        keep_dir: args.keep_dir,
        logs_dir: logs_path(&args.report),
    };
    let (history, settings) = scenario::run(&opts)?;
    let results = invariants::check_all(&history);
    let hist_path = history_path(&args.report);
    report::write_json(&hist_path, &history)?;
    let r = report::build(
        &history,
        settings,
        results.clone(),
        command,
        Some(hist_path.display().to_string()),
    );
    report::write_json(&args.report, &r)?;
    eprint!("{}", report::summary(&r));
    eprintln!(
        "report: {}  history: {}",
        args.report.display(),
        hist_path.display()
    );
    print_failures(&results);
    Ok(if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e)
            if e.downcast_ref::<lab::interrupt::Interrupted>().is_some()
                || lab::interrupt::was_requested() =>
        {
            eprintln!("herd-chaos: interrupted; the lab was cleaned up ({e:#})");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("herd-chaos: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
