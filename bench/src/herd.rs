//! One daemon of the real `herd` binary in a fresh temporary home, driven through its CLI.
//! Dropping it always leaves nothing behind: whatever still runs with its `HERD_HOME`
//! (daemon or apps) is killed — `herd kill`, then SIGKILL to each process group.

use crate::cleanup::{kill_all_with_env, processes_with_env};
use crate::error::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::cell::Cell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The longest any single `herd` command or any wait for a condition may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The daemon settings an environment variable could override (`HERD_METRICS_INTERVAL_S`,
/// ...): removed, so every daemon the bench starts runs with herd's defaults.
const CONFIG_OVERRIDES: [&str; 6] = [
    "HERD_LOG_LEVEL",
    "HERD_METRICS_INTERVAL_S",
    "HERD_RECOVERY_SWEEP_S",
    "HERD_STATE_FLUSH_S",
    "HERD_EVENTS_MAX_BYTES",
    "HERD_EVENTS_FILES",
];

/// One row of `herd ps --json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    pub instance: u64,
    pub pid: Option<u32>,
    pub status: String,
    pub restarts: u64,
}

pub struct Herd {
    exe: PathBuf,
    /// `HERD_HOME`; the bench's own files (app files, stamps) live here too.
    home: TempDir,
    /// Set once `herd down` succeeded: anything still alive after that is herd's fault.
    down: Cell<bool>,
}

impl Herd {
    /// Starts a daemon in a new temporary home (`herd up` returns once it answers).
    pub fn up(exe: &Path) -> Result<Self> {
        let home = tempfile::Builder::new()
            .prefix("herd-bench-")
            .tempdir()
            .context(|| "cannot create a temporary HERD_HOME".to_string())?;
        let herd = Self {
            exe: exe.to_path_buf(),
            home,
            down: Cell::new(false),
        };
        herd.run(["up"])?;
        Ok(herd)
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A `herd` command for this home, stdin closed, stdout and stderr captured.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).env("HERD_HOME", self.home());
        for var in CONFIG_OVERRIDES {
            cmd.env_remove(var);
        }
        // The user's own herd contexts must not send the bench's commands to another daemon.
        cmd.env_remove("HERD_CONTEXT")
            .env_remove("HERD_HOST")
            .env("XDG_CONFIG_HOME", self.home().join("xdg-config"));
        // The HTTP server stays on, as it is by default, on a port of its own (so a herd
        // already running on this host does not make the run fail).
        cmd.env("HERD_HTTP_LISTEN", "127.0.0.1:0");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `herd ARGS` and returns its stdout; a failure carries herd's stderr.
    pub fn run<const N: usize>(&self, args: [&str; N]) -> Result<String> {
        let (out, _) = run_checked(&mut self.command(args), &describe(&args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Times a whole `herd ARGS` invocation, spawn to exit, with its stdout discarded.
    pub fn time<const N: usize>(&self, args: [&str; N]) -> Result<Duration> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::null());
        run_checked(&mut cmd, &describe(&args)).map(|(_, took)| took)
    }

    /// `herd ps --json`.
    pub fn ps(&self) -> Result<Vec<Instance>> {
        let text = self.run(["ps", "--json"])?;
        parse_ps(&text).context(|| {
            format!(
                "cannot read the output of `herd ps --json` ({})",
                text.trim()
            )
        })
    }

    /// The daemon's pid: the first line of `$HERD_HOME/daemon.pid`.
    pub fn daemon_pid(&self) -> Result<u32> {
        let file = self.home().join("daemon.pid");
        let text =
            std::fs::read_to_string(&file).context(|| format!("cannot read {}", file.display()))?;
        let first = text.lines().next().unwrap_or("").trim();
        first
            .parse()
            .context(|| format!("{}: `{first}` is not a pid", file.display()))
    }

    /// `herd down`, timed (it returns once the apps and the daemon are gone).
    pub fn down(&self) -> Result<Duration> {
        let took = self.time(["down"])?;
        self.down.set(true);
        Ok(took)
    }

    /// Polls `ps` until `done` holds for its rows; fails after [`DEADLINE`] with `what` and the
    /// last rows seen. Returns the rows and how many `ps` calls it took.
    pub fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[Instance]) -> bool,
    ) -> Result<(Vec<Instance>, u32)> {
        let deadline = Instant::now() + DEADLINE;
        let mut polls = 0;
        loop {
            let rows = self.ps()?;
            polls += 1;
            if done(&rows) {
                return Ok((rows, polls));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {} s waiting for {what}; `herd ps` shows {}",
                    DEADLINE.as_secs(),
                    status_counts(&rows)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills everything still running with this home, telling why.
    fn clean_up(&self) {
        let left = processes_with_env("HERD_HOME", self.home());
        if left.is_empty() {
            return;
        }
        if self.down.get() {
            eprintln!(
                "herd-bench: WARNING: `herd down` succeeded but {} processes of home {} are still alive (pids {left:?}); killing them",
                left.len(),
                self.home().display()
            );
        } else {
            eprintln!(
                "herd-bench: cleaning up home {}: killing the daemon and {} processes",
                self.home().display(),
                left.len()
            );
        }
        if let Err(e) = self.run(["kill"]) {
            eprintln!("herd-bench: `herd kill` failed: {e}");
        }
        kill_all_with_env("HERD_HOME", self.home());
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// Runs `cmd`, killing it after [`DEADLINE`]; fails unless it exits 0. Returns its output and
/// how long it took from spawn to exit.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<(Output, Duration)> {
    run_within(cmd, what, DEADLINE)
}

/// [`run_checked`] with another deadline (installs take minutes).
pub fn run_within(cmd: &mut Command, what: &str, limit: Duration) -> Result<(Output, Duration)> {
    let (out, took) = run_any_status(cmd, what, limit)?;
    if !out.status.success() {
        return Err(failure(what, &out));
    }
    Ok((out, took))
}

/// "`X` failed (exit status: 1): STDERR" (stdout when stderr is empty).
pub fn failure(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout)
    } else {
        stderr
    };
    format!("{what} failed ({}): {}", out.status, text.trim())
}

/// Runs `cmd`, killing it after `limit`, whatever its exit status. Returns its output and how
/// long it took from spawn to exit.
pub fn run_any_status(
    cmd: &mut Command,
    what: &str,
    limit: Duration,
) -> Result<(Output, Duration)> {
    let start = Instant::now();
    let child = cmd.spawn().context(|| format!("cannot run {what}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // The waiting thread takes the end time itself, so the channel adds nothing to the figure.
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, start.elapsed()));
    });
    let (out, took) = match rx.recv_timeout(limit) {
        Ok(done) => done,
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(format!(
                "{what} did not finish within {} s (killed it)",
                limit.as_secs()
            ));
        }
    };
    let out = out.context(|| format!("cannot wait for {what}"))?;
    Ok((out, took))
}

fn describe(args: &[&str]) -> String {
    format!("`herd {}`", args.join(" "))
}

fn parse_ps(text: &str) -> Result<Vec<Instance>> {
    let rows: Vec<Value> = serde_json::from_str(text).context(|| "not a JSON array".to_string())?;
    rows.iter().map(parse_row).collect()
}

fn parse_row(row: &Value) -> Result<Instance> {
    let str_field = |k: &str| {
        row[k]
            .as_str()
            .map(String::from)
            .ok_or(format!("row without a `{k}` string: {row}"))
    };
    let num_field = |k: &str| {
        row[k]
            .as_u64()
            .ok_or(format!("row without a `{k}` number: {row}"))
    };
    Ok(Instance {
        name: str_field("name")?,
        instance: num_field("instance")?,
        pid: row["pid"].as_u64().map(|p| p as u32),
        status: str_field("status")?,
        restarts: num_field("restarts")?,
    })
}

/// "98 running, 2 backoff" — for error messages.
pub fn status_counts(rows: &[Instance]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for r in rows {
        *counts.entry(r.status.as_str()).or_insert(0) += 1;
    }
    if counts.is_empty() {
        return "no instances".into();
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_are_read() {
        let text = r#"[{"name":"a","instance":0,"pid":12,"status":"running","restarts":3,"uptime_s":1,"last_exit":null},
                       {"name":"a","instance":1,"pid":null,"status":"backoff","restarts":0,"uptime_s":null,"last_exit":null}]"#;
        let rows = parse_ps(text).unwrap();
        assert_eq!(
            rows[0],
            Instance {
                name: "a".into(),
                instance: 0,
                pid: Some(12),
                status: "running".into(),
                restarts: 3
            }
        );
        assert_eq!(rows[1].pid, None);
        assert_eq!(status_counts(&rows), "1 backoff, 1 running");
        assert!(parse_ps("[{}]").unwrap_err().contains("`name`"));
    }
}
