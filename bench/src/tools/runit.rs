//! runit from the distribution (`apt-get install --no-install-recommends runit`: the package
//! alone starts nothing; its recommend `runit-run` would make runit the machine's supervisor).
//! The bench starts `runsvdir` on a private scan directory in a temporary home, which spawns
//! one `runsv` per service directory; each `runsv` forks and execs its service's `run`
//! script. The supervisor measured is `runsvdir` plus its 100 `runsv` processes; the CLI is
//! `sv`, which takes many services in one run.

use super::{
    Supervisor, ToolHome, apt_install, package_version, reap, service_dirs, wait_until, which,
    write_service_dirs,
};
use crate::cleanup::MARKER;
use crate::error::{Context, Result};
use crate::herd::{DEADLINE, failure, run_any_status};
use crate::procfs::children_named;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

pub struct Runit {
    /// The directory of the runit programs (`/usr/bin`).
    bin: PathBuf,
    label: String,
    services: Vec<PathBuf>,
    /// `runsvdir`, a child of the bench; `None` once reaped.
    runsvdir: Option<Child>,
    /// Last field: dropped after [`Runit::drop`] stopped `runsvdir`.
    home: ToolHome,
}

/// Installs runit if `runsvdir` is missing (root only); returns its version.
pub fn install() -> Result<String> {
    apt_install("runit", "runsvdir")?;
    Ok(package_version("runit").unwrap_or_else(|| "(version unknown)".into()))
}

impl Runit {
    /// Starts `runsvdir` on `apps` service directories that each hold a `down` file, and waits
    /// until `sv status` answers for every one: the services are supervised but not started.
    /// (`runsvdir` ignores a scan directory modified within the current second, so this may
    /// take a second or two; it is not part of the start figure.)
    pub fn up(version: &str, apps: usize) -> Result<Self> {
        let home = ToolHome::new("herd-bench-runit-")?;
        let scan = home.path().join("scan");
        write_service_dirs(&scan, &which("sleep")?, apps)?;
        let runsvdir = which("runsvdir")?;
        let bin = runsvdir.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut cmd = home.command(&runsvdir);
        cmd.arg(&scan);
        let child = home.spawn(cmd, "`runsvdir`", "runsvdir.log")?;
        let runit = Self {
            bin,
            label: format!("runit {version}"),
            services: service_dirs(&scan, apps),
            runsvdir: Some(child),
            home,
        };
        wait_until("every runsv to answer `sv status`", || {
            let out = runit.sv("status").ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            (out.status.success() && states(&text).len() == apps).then_some(())
        })?;
        let supervisors = runit.processes()?.len() - 1;
        if supervisors != apps {
            return Err(format!(
                "runsvdir runs {supervisors} runsv processes, not {apps}"
            ));
        }
        Ok(runit)
    }

    /// `sv ACTION DIR...` for every service, whatever its exit status (the number of services
    /// it could not reach).
    fn sv(&self, action: &str) -> Result<Output> {
        let mut cmd = self.home.command(&self.bin.join("sv"));
        cmd.arg(action).args(&self.services);
        let what = format!("`sv {action}`");
        run_any_status(&mut cmd, &what, DEADLINE).map(|(out, _)| out)
    }

    /// `sv down` for every service, then SIGHUP to `runsvdir`, which sends each `runsv` a
    /// SIGTERM (exit once the service is down) and exits.
    fn stop(&self, runsvdir: u32) -> Result<()> {
        let out = self.sv("down")?;
        if !out.status.success() {
            return Err(failure("`sv down`", &out));
        }
        kill(Pid::from_raw(runsvdir as i32), Signal::SIGHUP)
            .context(|| format!("cannot send SIGHUP to runsvdir (pid {runsvdir})"))
    }
}

/// The state word of each `sv status` line for a service (`run`, `down`, `finish`), skipping
/// `warning:` and `fail:` lines about services it could not reach.
/// A line reads `run: /tmp/x/scan/a0: (pid 27504) 0s, normally down`.
fn states(status: &str) -> Vec<&str> {
    status
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(state, _)| state))
        .filter(|s| matches!(*s, "run" | "down" | "finish"))
        .collect()
}

impl Supervisor for Runit {
    fn label(&self) -> &str {
        &self.label
    }

    fn marker(&self) -> (&'static str, &Path) {
        (MARKER, self.home.path())
    }

    fn pid(&self) -> Result<u32> {
        self.runsvdir
            .as_ref()
            .map(Child::id)
            .ok_or("runsvdir is no longer running".into())
    }

    fn processes(&self) -> Result<Vec<u32>> {
        let runsvdir = self.pid()?;
        let mut all = vec![runsvdir];
        all.extend(children_named(runsvdir, "runsv"));
        Ok(all)
    }

    fn start_all(&self) -> Result<Duration> {
        let mut cmd = self.home.command(&self.bin.join("sv"));
        cmd.arg("up").args(&self.services);
        let (out, took) = run_any_status(&mut cmd, "`sv up`", DEADLINE)?;
        if !out.status.success() {
            return Err(failure("`sv up`", &out));
        }
        Ok(took)
    }

    fn running(&self) -> Result<usize> {
        let out = self.sv("status")?;
        if !out.status.success() {
            return Err(failure("`sv status`", &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(states(&text).iter().filter(|s| **s == "run").count())
    }

    fn status_command(&self) -> String {
        format!(
            "`sv status DIR...` ({} services in one run)",
            self.services.len()
        )
    }

    fn notes(&self) -> Vec<String> {
        vec![
            format!(
                "supervisor = runsvdir + its {} runsv processes, CPU and memory added up",
                self.services.len()
            ),
            "running = `sv status DIR...` says `run`; start = `sv up DIR...` (each service has a `down` file, so runsvdir starts the runsv processes but not the services)".into(),
            "restarts: runsv always restarts a service that wants up (no limit, no delay after a run of 1 s or more)".into(),
        ]
    }

    fn shut_down(&mut self) -> Result<()> {
        let pid = self.pid()?;
        self.stop(pid)?;
        let mut runsvdir = self
            .runsvdir
            .take()
            .ok_or("runsvdir is no longer running")?;
        if !reap(&mut runsvdir, DEADLINE) {
            return Err(format!(
                "runsvdir (pid {pid}) still ran {} s after SIGHUP; killed it",
                DEADLINE.as_secs()
            ));
        }
        if !self.home.wait_empty(Duration::from_secs(10)) {
            return Err("runsv or services still run 10 s after runsvdir exited".into());
        }
        Ok(())
    }
}

impl Drop for Runit {
    fn drop(&mut self) {
        if let Some(mut runsvdir) = self.runsvdir.take() {
            if let Err(e) = self.stop(runsvdir.id()) {
                eprintln!("herd-bench: stopping runsvdir failed: {e}");
            }
            reap(&mut runsvdir, Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_skip_unreachable_services() {
        let text = "run: /t/scan/a0: (pid 27504) 0s, normally down\n\
                    down: /t/scan/a1: 2s\n\
                    warning: /t/scan/a2: unable to open supervise/ok: file does not exist\n\
                    fail: /t/scan/a3: runsv not running\n";
        assert_eq!(states(text), ["run", "down"]);
    }
}
