//! s6 from the distribution (`apt-get install s6`), run the way s6 is meant to be: the bench
//! starts `s6-svscan` on a private scan directory in a temporary home, which spawns one
//! `s6-supervise` per service directory; each `s6-supervise` forks and execs its service's
//! `run` script. The supervisor measured is `s6-svscan` plus its 100 `s6-supervise`
//! processes. s6 has no command that reports on many services: its status is one
//! `s6-svstat DIR` per service, and its start one `s6-svc -u DIR` per service.

use super::{
    Supervisor, ToolHome, apt_install, package_version, reap, service_dirs, wait_until, which,
    write_service_dirs,
};
use crate::cleanup::MARKER;
use crate::error::Result;
use crate::herd::{DEADLINE, failure, run_any_status, run_within};
use crate::procfs::children_named;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub struct S6 {
    /// The directory of the s6 programs (`/usr/bin`).
    bin: PathBuf,
    label: String,
    scan: PathBuf,
    services: Vec<PathBuf>,
    /// `s6-svscan`, a child of the bench; `None` once reaped.
    svscan: Option<Child>,
    /// Last field: dropped after [`S6::drop`] stopped `s6-svscan`.
    home: ToolHome,
}

/// Installs s6 if `s6-svscan` is missing (root only); returns its version.
pub fn install() -> Result<String> {
    apt_install("s6", "s6-svscan")?;
    Ok(package_version("s6").unwrap_or_else(|| "(version unknown)".into()))
}

impl S6 {
    /// Starts `s6-svscan` on `apps` service directories that each hold a `down` file, and
    /// waits until every `s6-supervise` answers `s6-svstat`: the services are supervised but
    /// not started.
    pub fn up(version: &str, apps: usize) -> Result<Self> {
        let home = ToolHome::new("herd-bench-s6-")?;
        let scan = home.path().join("scan");
        write_service_dirs(&scan, &which("sleep")?, apps)?;
        let svscan = which("s6-svscan")?;
        let bin = svscan.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut cmd = home.command(&svscan);
        cmd.arg(&scan);
        let svscan = home.spawn(cmd, "`s6-svscan`", "s6-svscan.log")?;
        let s6 = Self {
            bin,
            label: format!("s6 {version}"),
            services: service_dirs(&scan, apps),
            scan,
            svscan: Some(svscan),
            home,
        };
        wait_until("every s6-supervise to answer `s6-svstat`", || {
            let answered = s6.services.iter().all(|d| {
                s6.svstat(d)
                    .is_ok_and(|out| out.status.success() && !out.stdout.is_empty())
            });
            answered.then_some(())
        })?;
        let supervisors = s6.processes()?.len() - 1;
        if supervisors != apps {
            return Err(format!(
                "s6-svscan runs {supervisors} s6-supervise processes, not {apps}"
            ));
        }
        Ok(s6)
    }

    /// An s6 program by its absolute path, with the home's marker.
    fn command(&self, program: &str) -> Command {
        self.home.command(&self.bin.join(program))
    }

    fn svstat(&self, service: &Path) -> Result<Output> {
        let mut cmd = self.command("s6-svstat");
        cmd.arg(service);
        run_any_status(&mut cmd, "`s6-svstat`", DEADLINE).map(|(out, _)| out)
    }

    /// Asks `s6-svscan` to bring every service down and exit (`s6-svscanctl -t`).
    fn terminate(&self) -> Result<()> {
        let mut cmd = self.command("s6-svscanctl");
        cmd.arg("-t").arg(&self.scan);
        run_within(&mut cmd, "`s6-svscanctl -t`", DEADLINE).map(|_| ())
    }
}

/// Whether one `s6-svstat` output says the service is up (`up (pid 123) 5 seconds, ...`).
fn is_up(svstat: &str) -> bool {
    svstat.starts_with("up ")
}

impl Supervisor for S6 {
    fn label(&self) -> &str {
        &self.label
    }

    fn marker(&self) -> (&'static str, &Path) {
        (MARKER, self.home.path())
    }

    fn pid(&self) -> Result<u32> {
        self.svscan
            .as_ref()
            .map(Child::id)
            .ok_or("s6-svscan is no longer running".into())
    }

    fn processes(&self) -> Result<Vec<u32>> {
        let svscan = self.pid()?;
        let mut all = vec![svscan];
        all.extend(children_named(svscan, "s6-supervise"));
        Ok(all)
    }

    fn start_all(&self) -> Result<Duration> {
        let t = Instant::now();
        for service in &self.services {
            let mut cmd = self.command("s6-svc");
            cmd.arg("-u").arg(service);
            run_within(&mut cmd, "`s6-svc -u`", DEADLINE)?;
        }
        Ok(t.elapsed())
    }

    fn running(&self) -> Result<usize> {
        let mut up = 0;
        for service in &self.services {
            let out = self.svstat(service)?;
            if !out.status.success() {
                return Err(failure(&format!("`s6-svstat {}`", service.display()), &out));
            }
            up += usize::from(is_up(&String::from_utf8_lossy(&out.stdout)));
        }
        Ok(up)
    }

    fn status_command(&self) -> String {
        format!(
            "{} × `s6-svstat DIR` (one per service: s6 has no status of many services)",
            self.services.len()
        )
    }

    fn notes(&self) -> Vec<String> {
        vec![
            format!(
                "supervisor = s6-svscan + its {} s6-supervise processes, CPU and memory added up",
                self.services.len()
            ),
            "running = `s6-svstat DIR` says `up`, one run per service; start = one `s6-svc -u DIR` per service (each has a `down` file, so s6-svscan starts the supervisors but not the services)".into(),
            "restarts: s6-supervise always restarts a service that wants up (no limit); it waits about 1 s after a death before it spawns `run` again, its guard against busy loops (s6 2.11 has no setting for it)".into(),
        ]
    }

    fn shut_down(&mut self) -> Result<()> {
        self.terminate()?;
        let mut svscan = self.svscan.take().ok_or("s6-svscan is no longer running")?;
        if !reap(&mut svscan, DEADLINE) {
            return Err(format!(
                "s6-svscan (pid {}) still ran {} s after `s6-svscanctl -t`; killed it",
                svscan.id(),
                DEADLINE.as_secs()
            ));
        }
        if !self.home.wait_empty(Duration::from_secs(10)) {
            return Err("s6-supervise or services still run 10 s after s6-svscan exited".into());
        }
        Ok(())
    }
}

impl Drop for S6 {
    fn drop(&mut self) {
        if let Some(mut svscan) = self.svscan.take() {
            if let Err(e) = self.terminate() {
                eprintln!("herd-bench: `s6-svscanctl -t` failed: {e}");
            }
            reap(&mut svscan, Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_is_read_from_svstat() {
        assert!(is_up("up (pid 26704) 0 seconds, normally down\n"));
        assert!(!is_up(
            "down (signal SIGKILL) 0 seconds, want up, ready 0 seconds\n"
        ));
        assert!(!is_up(""));
    }
}
