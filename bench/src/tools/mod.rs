//! The supervisors the idle / start / restart measurements run against: herd, and for
//! `--compare` PM2 and supervisord, installed on demand from their registries into
//! `target/bench-tools/`, and s6 and runit, installed on demand from the distribution
//! (`apt-get`, as root). Each one lives in a temporary home whose guard ([`ToolHome`], or
//! [`crate::herd::Herd`] for herd) kills whatever it left running, on every path.

pub mod herd;
pub mod pm2;
pub mod runit;
pub mod s6;
pub mod supervisord;

use crate::cleanup::{MARKER, kill_all_with_env, processes_with_env};
use crate::error::{Context, Result};
use crate::herd::{DEADLINE, run_any_status, run_within};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long an install from a registry may take.
pub const INSTALL_DEADLINE: Duration = Duration::from_secs(600);

/// One supervisor with [`crate::idle::APPS`] `sleep 100000` programs configured (not yet
/// started) and its daemon up.
pub trait Supervisor {
    /// `herd 0.1.0`, `PM2 6.0.5`, `supervisord 4.3.0`.
    fn label(&self) -> &str;
    /// The daemon: herd's, PM2's God Daemon, supervisord, `s6-svscan`, `runsvdir`.
    fn pid(&self) -> Result<u32>;
    /// Every process whose CPU and memory are the supervisor's: the daemon alone, or with its
    /// per-service supervisors for s6 (`s6-supervise`) and runit (`runsv`).
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

/// A temporary home for PM2, supervisord, s6 or runit. Every command made by
/// [`ToolHome::command`] carries [`MARKER`]`=HOME`, inherited by the daemon and its apps;
/// dropping the home SIGKILLs every process that still has it, then deletes the directory.
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
        let path = self.log_to(&mut cmd, log)?;
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

impl ToolHome {
    /// Starts a daemon that stays in the foreground (`s6-svscan`, `runsvdir`) as a child of
    /// the bench, with its output going to `log` in the home.
    pub fn spawn(&self, mut cmd: Command, what: &str, log: &str) -> Result<Child> {
        self.log_to(&mut cmd, log)?;
        cmd.spawn().context(|| format!("cannot run {what}"))
    }

    /// Sends `cmd`'s stdout and stderr to the new file `log` in the home; returns its path.
    fn log_to(&self, cmd: &mut Command, log: &str) -> Result<PathBuf> {
        let path = self.path().join(log);
        let file =
            std::fs::File::create(&path).context(|| format!("cannot create {}", path.display()))?;
        let err = file
            .try_clone()
            .context(|| format!("cannot reopen {}", path.display()))?;
        cmd.stdout(file).stderr(err);
        Ok(path)
    }
}

impl ToolHome {
    /// Waits up to `limit` until no process of this home is left; true if none is.
    pub fn wait_empty(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !processes_with_env(MARKER, self.path()).is_empty() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// Ends a daemon the bench spawned: waits up to `limit` for it to exit (after the caller asked
/// it to), SIGKILLs it if it did not, and reaps it. True if it exited by itself.
pub fn reap(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Service directories `a0` ... in `scan` for s6 and runit: a `run` script that execs
/// `sleep 100000`, and a `down` file, so that the scanner starts each service's supervisor
/// but not the service, which the tool's start command then brings up (and timed apart).
pub fn write_service_dirs(scan: &Path, sleep: &Path, apps: usize) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for i in 0..apps {
        let dir = scan.join(format!("a{i}"));
        std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        let run = dir.join("run");
        std::fs::write(&run, run_script(sleep))
            .context(|| format!("cannot write {}", run.display()))?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))
            .context(|| format!("cannot make {} executable", run.display()))?;
        let down = dir.join("down");
        std::fs::write(&down, "").context(|| format!("cannot write {}", down.display()))?;
    }
    Ok(())
}

fn run_script(sleep: &Path) -> String {
    format!("#!/bin/sh\nexec {} 100000\n", sleep.display())
}

/// The service directories [`write_service_dirs`] made, in order.
pub fn service_dirs(scan: &Path, apps: usize) -> Vec<PathBuf> {
    (0..apps).map(|i| scan.join(format!("a{i}"))).collect()
}

/// Makes sure `program` is installed, from the distribution package `package` if it is not:
/// `apt-get install -y --no-install-recommends PACKAGE`, which needs root. Without
/// recommends, because runit's recommend `runit-run` makes runit the machine's own service
/// supervisor (an inittab entry, a systemd unit); the bench runs its own scanner instead.
pub fn apt_install(package: &str, program: &str) -> Result<PathBuf> {
    if let Ok(path) = which(program) {
        return Ok(path);
    }
    if !is_root() {
        return Err(format!(
            "`{program}` is not on PATH and the bench is not root, so it cannot install it; \
             run `apt-get install --no-install-recommends {package}` first"
        ));
    }
    let apt = which("apt-get").context(|| format!("cannot install {package}"))?;
    let what = format!("`apt-get install -y --no-install-recommends {package}`");
    let out = install_step(
        Command::new(apt)
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &what,
    )?;
    which(program).context(|| {
        format!(
            "{what} succeeded but did not install `{program}`: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

/// The installed version of a distribution package without its Debian revision
/// (`2.11.3.2-1` -> `2.11.3.2`), or `None` if `dpkg-query` does not know it.
pub fn package_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    upstream_version(&text)
}

fn upstream_version(debian: &str) -> Option<String> {
    let v = debian.trim();
    // An epoch (`1:`) first, a Debian revision (`-54`) last.
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    let v = v.rsplit_once('-').map_or(v, |(up, _)| up);
    (!v.is_empty()).then(|| v.to_string())
}

/// Whether this process's effective user is root (`Uid:` of `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_lose_epoch_and_revision() {
        assert_eq!(
            upstream_version("2.11.3.2-1\n").as_deref(),
            Some("2.11.3.2")
        );
        assert_eq!(upstream_version("1:2.1.2-54").as_deref(), Some("2.1.2"));
        assert_eq!(upstream_version("4.3").as_deref(), Some("4.3"));
        assert_eq!(upstream_version(""), None);
    }

    #[test]
    fn service_dirs_exec_sleep_and_start_down() {
        let tmp = tempfile::tempdir().unwrap();
        write_service_dirs(tmp.path(), Path::new("/bin/sleep"), 2).unwrap();
        let dirs = service_dirs(tmp.path(), 2);
        assert_eq!(dirs[1], tmp.path().join("a1"));
        for d in &dirs {
            let run = std::fs::read_to_string(d.join("run")).unwrap();
            assert_eq!(run, "#!/bin/sh\nexec /bin/sleep 100000\n");
            assert!(d.join("down").is_file());
        }
    }
}
