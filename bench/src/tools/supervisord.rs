//! supervisord from PyPI (a venv in `target/bench-tools/supervisor` with `pip install
//! supervisor`), driven by `supervisorctl` over a Unix socket in a temporary directory. The
//! process measured is `supervisord` itself: it spawns each program and reads its output
//! through pipes into the log files, so it is supervisor's whole footprint.

use super::{Supervisor, ToolHome, captured, install_step, read_pid_file, wait_until, which};
use crate::cleanup::MARKER;
use crate::error::{Context, Result};
use crate::herd::{DEADLINE, failure, run_any_status, run_within};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Supervisord {
    bin: PathBuf,
    label: String,
    conf: PathBuf,
    /// Set once `supervisorctl shutdown` succeeded.
    down: bool,
    /// Last field: dropped after [`Supervisord::drop`] asked for a shutdown.
    home: ToolHome,
}

/// The venv's `bin` in `cache` (creating it and installing `supervisor` from PyPI first if
/// it is missing) and supervisord's version.
pub fn install(cache: &Path) -> Result<(PathBuf, String)> {
    let venv = cache.join("supervisor");
    let bin = venv.join("bin");
    if !bin.join("supervisord").is_file() {
        let python = which("python3").context(|| "cannot install supervisor".to_string())?;
        std::fs::create_dir_all(cache).context(|| format!("cannot create {}", cache.display()))?;
        install_step(
            Command::new(python).args(["-m", "venv"]).arg(&venv),
            &format!("`python3 -m venv {}`", venv.display()),
        )?;
        install_step(
            Command::new(bin.join("pip")).args([
                "install",
                "--disable-pip-version-check",
                "supervisor",
            ]),
            "`pip install supervisor` into the venv",
        )?;
    }
    let (out, _) = run_within(
        captured(Command::new(bin.join("supervisord")).arg("--version")),
        "`supervisord --version`",
        DEADLINE,
    )?;
    // Older releases print the version on stderr.
    let version = [&out.stdout, &out.stderr]
        .iter()
        .map(|o| String::from_utf8_lossy(o).trim().to_string())
        .find(|v| !v.is_empty())
        .ok_or("`supervisord --version` printed nothing")?;
    Ok((bin, version))
}

impl Supervisord {
    /// Starts supervisord (it daemonizes: `nodaemon = false`) in a new home with `apps`
    /// programs configured, `autostart = false` so that their start can be timed apart.
    pub fn up(bin: &Path, version: &str, apps: usize) -> Result<Self> {
        let home = ToolHome::new("herd-bench-supervisord-")?;
        let conf = home.path().join("supervisord.conf");
        std::fs::write(&conf, config(home.path(), &which("sleep")?, apps))
            .context(|| format!("cannot write {}", conf.display()))?;
        let sup = Self {
            bin: bin.to_path_buf(),
            label: format!("supervisord {version}"),
            conf,
            down: false,
            home,
        };
        let mut start = sup.home.command(&bin.join("supervisord"));
        start.arg("-c").arg(&sup.conf);
        sup.home
            .launch(start, "`supervisord -c supervisord.conf`", "launch.log")?;
        // Up once it answers on its socket.
        wait_until("supervisord to answer `supervisorctl pid`", || {
            let out = sup.ctl(["pid"]).ok()?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        })?;
        Ok(sup)
    }

    fn ctl_command<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut cmd = self.home.command(&self.bin.join("supervisorctl"));
        cmd.arg("-c").arg(&self.conf).args(args);
        cmd
    }

    /// `supervisorctl ARGS`, whatever its exit status (`status` exits 3 while any program
    /// is not running).
    fn ctl<const N: usize>(&self, args: [&str; N]) -> Result<std::process::Output> {
        let what = format!("`supervisorctl {}`", args.join(" "));
        run_any_status(&mut self.ctl_command(args), &what, DEADLINE).map(|(out, _)| out)
    }
}

/// The whole configuration: socket, log and pid file in `home`, and programs `a0` ... of
/// `sleep 100000`, restarted whenever they exit. Every other setting is supervisor's default
/// (`startsecs = 1`: a program is RUNNING only once it has stayed up 1 s).
fn config(home: &Path, sleep: &Path, apps: usize) -> String {
    let h = home.display();
    let mut text = format!(
        "[unix_http_server]\nfile={h}/supervisor.sock\n\n\
         [supervisord]\nlogfile={h}/supervisord.log\npidfile={h}/supervisord.pid\n\
         childlogdir={h}\nnodaemon=false\n\n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{h}/supervisor.sock\n\n"
    );
    for i in 0..apps {
        text += &format!(
            "[program:a{i}]\ncommand={} 100000\nautostart=false\nautorestart=true\n\n",
            sleep.display()
        );
    }
    text
}

/// Lines of `supervisorctl status` whose state is RUNNING (`a0  RUNNING  pid 12, uptime ...`).
fn running_lines(status: &str) -> usize {
    status
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("RUNNING"))
        .count()
}

impl Supervisor for Supervisord {
    fn label(&self) -> &str {
        &self.label
    }

    fn marker(&self) -> (&'static str, &Path) {
        (MARKER, self.home.path())
    }

    fn pid(&self) -> Result<u32> {
        read_pid_file(&self.home.path().join("supervisord.pid"))
    }

    fn start_all(&self) -> Result<Duration> {
        let what = "`supervisorctl start all`";
        let (out, took) = run_any_status(&mut self.ctl_command(["start", "all"]), what, DEADLINE)?;
        if !out.status.success() {
            return Err(failure(what, &out));
        }
        Ok(took)
    }

    fn running(&self) -> Result<usize> {
        let out = self.ctl(["status"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Err(failure("`supervisorctl status`", &out));
        }
        Ok(running_lines(&text))
    }

    fn status_command(&self) -> String {
        "`supervisorctl status` (all programs)".into()
    }

    fn notes(&self) -> Vec<String> {
        vec![
            "running = `supervisorctl status` RUNNING, which supervisord sets only after startsecs = 1 s (its default) of uptime: the start figure includes that second by design; the restart figure does not (it ends when the new process appears)".into(),
            "programs: autostart = false (started with `supervisorctl start all`, which returns once all are RUNNING), autorestart = true".into(),
        ]
    }

    fn shut_down(&mut self) -> Result<()> {
        let pid = self.pid()?;
        let out = self.ctl(["shutdown"])?;
        if !out.status.success() {
            return Err(failure("`supervisorctl shutdown`", &out));
        }
        if !crate::cleanup::wait_gone(pid, DEADLINE) {
            return Err(format!(
                "supervisord (pid {pid}) still runs {} s after `supervisorctl shutdown`",
                DEADLINE.as_secs()
            ));
        }
        self.down = true;
        Ok(())
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if !self.down
            && let Err(e) = self.ctl(["shutdown"])
        {
            eprintln!("herd-bench: `supervisorctl shutdown` failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_every_program() {
        let text = config(Path::new("/t"), Path::new("/bin/sleep"), 3);
        assert!(text.contains("file=/t/supervisor.sock\n"));
        assert!(text.contains("serverurl=unix:///t/supervisor.sock\n"));
        assert!(text.contains("[program:a2]\ncommand=/bin/sleep 100000\n"));
        assert_eq!(text.matches("[program:").count(), 3);
    }

    #[test]
    fn running_lines_are_counted() {
        let status = "a0   RUNNING   pid 10751, uptime 0:00:01\na1   STARTING  \n\
                      a2   RUNNING   pid 10752, uptime 0:00:01\n";
        assert_eq!(running_lines(status), 2);
    }
}
