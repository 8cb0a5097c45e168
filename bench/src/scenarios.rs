//! The measurements. Each one starts its own daemon in a fresh home and stops it with
//! `herd down` when it is done (the [`Herd`] guard cleans up on any error path).

use crate::Binaries;
use crate::error::{Context, Result};
use crate::herd::{DEADLINE, Herd, Instance, run_checked};
use crate::procfs::{Memory, memory};
use crate::stats::Summary;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the run happened.
pub struct Environment {
    pub nproc: usize,
    pub herd_version: String,
    pub herd_path: String,
    /// When the binary was written (UTC): an old one means the last build of herd failed.
    pub herd_built: String,
    pub kernel: String,
    /// Soft `RLIMIT_NOFILE` the daemon inherits: it holds about one descriptor per instance.
    pub open_files_limit: String,
}

pub fn environment(herd: &Path) -> Result<Environment> {
    let mut version = Command::new(herd);
    version
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (out, _) = run_checked(&mut version, "`herd --version`")?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context(|| "cannot read the kernel release".to_string())?;
    Ok(Environment {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        herd_version: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        herd_path: herd.display().to_string(),
        herd_built: std::fs::metadata(herd)
            .and_then(|m| m.modified())
            .map(utc)
            .unwrap_or_else(|_| "unknown".into()),
        kernel: kernel.trim().to_string(),
        open_files_limit: open_files_limit().unwrap_or_else(|| "unknown".into()),
    })
}

/// `2026-11-22 00:43 UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The soft limit from the `Max open files` line of `/proc/self/limits`.
fn open_files_limit() -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .map(String::from)
}

/// Writes an app file with `apps` apps, each one instance of `sleep 100000`.
fn write_sleep_apps(dir: &Path, apps: usize) -> Result<PathBuf> {
    let mut text = String::new();
    for i in 0..apps {
        text += &format!(
            "[[app]]\nname = \"sleep-{i:05}\"\ncommand = \"sleep\"\nargs = [\"100000\"]\n\n"
        );
    }
    write_file(&dir.join(format!("sleep-{apps}.toml")), &text)
}

fn write_file(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text).context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A TOML basic string: JSON's string escapes are all valid in TOML.
fn toml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn all_running(rows: &[Instance], n: usize) -> bool {
    rows.len() == n && rows.iter().all(|r| r.status == "running")
}

/// Scenario 1 and 2 for one app count.
pub struct AppsResult {
    pub apps: usize,
    /// The `herd start FILE` invocation alone.
    pub start_cmd: Duration,
    /// From launching `herd start` until `herd ps` showed every instance running.
    pub all_running: Duration,
    /// `herd ps --json` calls that took (the first one after `start` included).
    pub ps_polls: u32,
    pub idle: Memory,
    /// About a second after all were running.
    pub loaded: Memory,
    pub down: Duration,
}

pub fn apps(herd_exe: &Path, apps: usize) -> Result<AppsResult> {
    let herd = Herd::up(herd_exe)?;
    let pid = herd.daemon_pid()?;
    let idle = memory(pid)?;
    let file = write_sleep_apps(herd.home(), apps)?;
    let file = file.to_string_lossy();

    let t0 = Instant::now();
    let start_cmd = herd.time(["start", &file])?;
    let (_, ps_polls) = herd.wait_for(&format!("all {apps} instances to be running"), |rows| {
        all_running(rows, apps)
    })?;
    let all_running = t0.elapsed();

    std::thread::sleep(Duration::from_secs(1));
    let loaded = memory(pid)?;
    let down = herd.down()?;
    Ok(AppsResult {
        apps,
        start_cmd,
        all_running,
        ps_polls,
        idle,
        loaded,
        down,
    })
}

/// Scenario 3.
pub struct RestartResult {
    pub latency: Summary,
    pub samples_ms: Vec<f64>,
}

const PROBE: &str = "probe";

pub fn restart_latency(exes: &Binaries, kills: usize) -> Result<RestartResult> {
    let herd = Herd::up(&exes.herd)?;
    let stamps = herd.home().join("stamps");
    let file = write_file(
        &herd.home().join("probe.toml"),
        &probe_app(&exes.bench, &stamps),
    )?;
    herd.run(["start", &file.to_string_lossy()])?;
    let mut pid = wait_for_probe(&herd, None)?;
    wait_for_stamps(&stamps, 1)?;

    let mut samples_ms = Vec::with_capacity(kills);
    for done in 0..kills {
        let before = read_stamps(&stamps)?.len();
        let killed_at = now_ns();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .context(|| format!("cannot SIGKILL the probe (pid {pid})"))?;
        let stamp = *wait_for_stamps(&stamps, before + 1)?.last().unwrap_or(&0);
        samples_ms.push((stamp as i128 - killed_at as i128) as f64 / 1e6);
        pid = wait_for_probe(&herd, Some(pid)).context(|| format!("after kill {}", done + 1))?;
    }
    check_probe_counts(&herd, &stamps, kills)?;
    herd.down()?;
    let latency = Summary::of_ms(&samples_ms).ok_or("no restarts measured")?;
    Ok(RestartResult {
        latency,
        samples_ms,
    })
}

/// The app the restart scenario kills: this binary in `child` mode, restarted at once, forever.
fn probe_app(bench: &Path, stamps: &Path) -> String {
    format!(
        "[[app]]\nname = \"{PROBE}\"\ncommand = {}\nargs = [\"{}\", {}]\nrestart = \"always\"\n\
         backoff_initial_ms = 0\nmax_restarts = 1000000\nrestart_window_s = 1\n",
        toml_str(&bench.to_string_lossy()),
        crate::child::SUBCOMMAND,
        toml_str(&stamps.to_string_lossy()),
    )
}

/// Waits until `ps` shows the probe running with a pid other than `old`; returns the pid.
fn wait_for_probe(herd: &Herd, old: Option<u32>) -> Result<u32> {
    let fresh =
        |r: &Instance| r.name == PROBE && r.status == "running" && r.pid.is_some() && r.pid != old;
    let (rows, _) = herd.wait_for("the probe to run with a new pid", |rows| {
        rows.iter().any(fresh)
    })?;
    rows.iter()
        .find(|r| fresh(r))
        .and_then(|r| r.pid)
        .ok_or_else(|| "the probe vanished".to_string())
}

fn read_stamps(path: &Path) -> Result<Vec<u128>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    // Only whole lines: the last one may be in the middle of being written.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| {
            l.parse()
                .context(|| format!("{}: `{l}` is not a timestamp", path.display()))
        })
        .collect()
}

/// Polls the stamp file until it has `count` lines; returns them.
fn wait_for_stamps(path: &Path, count: usize) -> Result<Vec<u128>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stamps = read_stamps(path)?;
        if stamps.len() >= count {
            return Ok(stamps);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {} s waiting for stamp {count} in {} (the restarted probe never started?)",
                DEADLINE.as_secs(),
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Every kill caused exactly one restart, and herd counted each one.
fn check_probe_counts(herd: &Herd, stamps: &Path, kills: usize) -> Result<()> {
    let starts = read_stamps(stamps)?.len();
    if starts != kills + 1 {
        return Err(format!(
            "{kills} kills should give {} probe starts, the stamp file has {starts}",
            kills + 1
        ));
    }
    let restarts = herd
        .ps()?
        .iter()
        .find(|r| r.name == PROBE)
        .map(|r| r.restarts)
        .ok_or("the probe is gone from `herd ps`")?;
    if restarts != kills as u64 {
        return Err(format!(
            "{kills} kills but `herd ps` counts {restarts} restarts"
        ));
    }
    Ok(())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Scenario 4.
pub struct PsResult {
    pub apps: usize,
    pub table: Summary,
    pub json: Summary,
    /// `herd --version`: process start-up with no daemon round trip, for comparison.
    pub version: Summary,
}

pub const PS_APPS: usize = 100;

pub fn ps_round_trip(herd_exe: &Path, runs: usize) -> Result<PsResult> {
    let herd = Herd::up(herd_exe)?;
    let file = write_sleep_apps(herd.home(), PS_APPS)?;
    herd.run(["start", &file.to_string_lossy()])?;
    herd.wait_for(&format!("all {PS_APPS} instances to be running"), |rows| {
        all_running(rows, PS_APPS)
    })?;
    let table = time_runs(&herd, ["ps"], runs)?;
    let json = time_runs(&herd, ["ps", "--json"], runs)?;
    let version = time_runs(&herd, ["--version"], runs)?;
    herd.down()?;
    Ok(PsResult {
        apps: PS_APPS,
        table,
        json,
        version,
    })
}

/// Times `runs` sequential invocations, after one untimed warm-up run.
fn time_runs<const N: usize>(herd: &Herd, args: [&str; N], runs: usize) -> Result<Summary> {
    herd.time(args)?;
    let samples = (0..runs)
        .map(|_| herd.time(args))
        .collect::<Result<Vec<_>>>()?;
    Summary::of_durations(&samples).ok_or_else(|| "no runs".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_308_740);
        assert_eq!(utc(t), "2026-11-22 00:52 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc(leap), "2000-02-29 00:00 UTC");
    }
}
