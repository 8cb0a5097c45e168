//! The supervisors the idle / start / restart measurements run against: herd, and for
//! `--compare` PM2 and supervisord, installed on demand from their registries into
//! `target/bench-tools/`. Each one lives in a temporary home whose guard ([`ToolHome`], or
//! [`crate::herd::Herd`] for herd) kills whatever it left running, on every path.

pub mod herd;
pub mod pm2;
pub mod supervisord;

use crate::cleanup::{MARKER, kill_all_with_env, processes_with_env};
use crate::error::{Context, Result};
use crate::herd::{DEADLINE, run_any_status, run_within};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long an install from a registry may take.
pub const INSTALL_DEADLINE: Duration = Duration::from_secs(600);

/// One supervisor with [`crate::idle::APPS`] `sleep 100000` programs configured (not yet
/// started) and its daemon up.
pub trait Supervisor {
    /// `herd 0.1.0`, `PM2 6.0.5`, `supervisord 4.3.0`.
    fn label(&self) -> &str;
    /// The daemon: herd's, PM2's God Daemon, supervisord.
    fn pid(&self) -> Result<u32>;
    /// Every process whose CPU and memory are the supervisor's: the daemon alone unless a
    /// tool runs per-service supervisors beside it.
    fn processes(&self) -> Result<Vec<u32>> {
        Ok(vec![self.pid()?])
    }
    /// The environment variable and value every process of this tool's home carries (see
    /// [`crate::cleanup`]): how the bench checks that no helper process escapes the figures.
    fn marker(&self) -> (&'static str, &Path);
    /// Runs the tool's command that starts every app; returns how long it took.
    fn start_all(&self) -> Result<Duration>;
    /// One status query through the tool's own CLI: how many apps it reports running.
    fn running(&self) -> Result<usize>;
    /// What [`Supervisor::running`] runs, for the report: `herd ps --json`.
    fn status_command(&self) -> String;
    /// What [`Supervisor::running`] counts, and any setting that shapes the figures.
    fn notes(&self) -> Vec<String>;
    /// The orderly stop of apps and daemon (the guard still kills whatever is left).
    fn shut_down(&mut self) -> Result<()>;
}

/// `target/bench-tools`, next to `target/release` where this executable lives.
pub fn cache_dir(bench_exe: &Path) -> PathBuf {
    bench_exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("bench-tools")
}

/// The absolute path of `program` on `PATH` (PM2 and supervisord get `sleep` by path).
pub fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(format!("`{program}` is not on PATH"))
}

/// A temporary home for PM2 or supervisord. Every command made by [`ToolHome::command`]
/// carries [`MARKER`]`=HOME`, inherited by the daemon and its apps; dropping the home
/// SIGKILLs every process that still has it, then deletes the directory.
pub struct ToolHome {
    dir: TempDir,
}

impl ToolHome {
    pub fn new(prefix: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context(|| format!("cannot create a temporary directory {prefix}*"))?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `program` with the marker set, stdin closed, stdout and stderr captured.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env(MARKER, self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs a command that starts a daemon with its stdout and stderr going to `log` in the
    /// home (a daemon that kept a pipe open would leave the bench waiting for its end).
    pub fn launch(&self, mut cmd: Command, what: &str, log: &str) -> Result<()> {
        let path = self.path().join(log);
        let file =
            std::fs::File::create(&path).context(|| format!("cannot create {}", path.display()))?;
        let err = file
            .try_clone()
            .context(|| format!("cannot reopen {}", path.display()))?;
        cmd.stdout(file).stderr(err);
        let (out, _) = run_any_status(&mut cmd, what, DEADLINE)?;
        if !out.status.success() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(format!("{what} failed ({}): {}", out.status, text.trim()));
        }
        Ok(())
    }
}

impl Drop for ToolHome {
    fn drop(&mut self) {
        let left = processes_with_env(MARKER, self.path());
        if !left.is_empty() {
            eprintln!(
                "herd-bench: cleaning up {}: killing {} processes",
                self.path().display(),
                left.len()
            );
            kill_all_with_env(MARKER, self.path());
        }
    }
}

/// `cmd` with stdin closed and its output captured, not mixed into the bench's own.
pub fn captured(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

/// Runs an install step with [`INSTALL_DEADLINE`], saying on stderr what it does.
pub fn install_step(cmd: &mut Command, what: &str) -> Result<Output> {
    eprintln!("herd-bench: {what} ...");
    let started = Instant::now();
    let (out, _) = run_within(captured(cmd), what, INSTALL_DEADLINE)?;
    eprintln!(
        "herd-bench: {what}: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Polls `ready` every 50 ms until it gives a value, for at most [`DEADLINE`].
pub fn wait_until<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {} s waiting for {what}",
                DEADLINE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first line of a pid file, as a pid.
pub fn read_pid_file(path: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    let first = text.lines().next().unwrap_or("").trim();
    first
        .parse()
        .context(|| format!("{}: `{first}` is not a pid", path.display()))
}
