//! PM2 from the npm registry (`npm install pm2@latest`, kept in `target/bench-tools/pm2`), run
//! through its own CLI with `PM2_HOME` in a temporary directory. The process measured is its
//! daemon, `PM2 vX: God Daemon (PM2_HOME)`: in fork mode it spawns each app itself and pipes
//! the apps' output into its log files, so it is PM2's whole supervisor footprint.

use super::{Supervisor, ToolHome, install_step, read_pid_file, which};
use crate::cleanup::MARKER;
use crate::error::{Context, Result};
use crate::herd::{DEADLINE, run_within};
use crate::procfs::cmdline;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Pm2 {
    bin: PathBuf,
    label: String,
    ecosystem: PathBuf,
    /// Set once `pm2 kill` succeeded.
    killed: bool,
    /// Last field: dropped after [`Pm2::drop`] ran `pm2 kill`.
    home: ToolHome,
}

/// The PM2 CLI in `cache` (installing `pm2@latest` there first if it is missing) and its version.
pub fn install(cache: &Path) -> Result<(PathBuf, String)> {
    let dir = cache.join("pm2");
    let package = dir.join("node_modules/pm2/package.json");
    let bin = dir.join("node_modules/pm2/bin/pm2");
    if !bin.is_file() {
        let npm = which("npm").context(|| "cannot install PM2".to_string())?;
        std::fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        install_step(
            Command::new(npm)
                .arg("install")
                .arg("--prefix")
                .arg(&dir)
                .args(["--no-audit", "--no-fund", "pm2@latest"]),
            &format!("`npm install pm2@latest` into {}", dir.display()),
        )?;
    }
    let text = std::fs::read_to_string(&package)
        .context(|| format!("cannot read {}", package.display()))?;
    let version: Value =
        serde_json::from_str(&text).context(|| format!("{} is not JSON", package.display()))?;
    let version = version["version"]
        .as_str()
        .ok_or(format!("{} has no version", package.display()))?;
    Ok((bin, version.to_string()))
}

impl Pm2 {
    /// Starts the daemon (`pm2 ping` spawns it) in a new home, with an ecosystem file of `apps`
    /// apps written but not started.
    pub fn up(bin: &Path, version: &str, apps: usize) -> Result<Self> {
        let home = ToolHome::new("herd-bench-pm2-")?;
        let ecosystem = home.path().join("ecosystem.json");
        let text = ecosystem_file(&which("sleep")?, apps).to_string();
        std::fs::write(&ecosystem, text)
            .context(|| format!("cannot write {}", ecosystem.display()))?;
        let pm2_home = home.path().join("home");
        std::fs::create_dir(&pm2_home)
            .context(|| format!("cannot create {}", pm2_home.display()))?;
        let pm2 = Self {
            bin: bin.to_path_buf(),
            label: format!("PM2 {version}"),
            ecosystem,
            killed: false,
            home,
        };
        pm2.home
            .launch(pm2.command(["ping"]), "`pm2 ping`", "pm2-ping.log")?;
        let pid = pm2.pid()?;
        let process = cmdline(pid)?;
        if !process.contains("God Daemon") {
            return Err(format!(
                "pid {pid} of pm2.pid runs `{process}`, not PM2's God Daemon"
            ));
        }
        Ok(pm2)
    }

    fn pm2_home(&self) -> PathBuf {
        self.home.path().join("home")
    }

    fn command<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut cmd = self.home.command(&self.bin);
        cmd.args(args).env("PM2_HOME", self.pm2_home());
        cmd
    }

    fn run<const N: usize>(&self, args: [&str; N]) -> Result<(String, Duration)> {
        let what = format!("`pm2 {}`", args.join(" "));
        let (out, took) = run_within(&mut self.command(args), &what, DEADLINE)?;
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), took))
    }
}

/// `{"apps": [...]}`: `a0` ... running `sleep 100000` directly (`interpreter: none`), in fork
/// mode, restarted when they exit (`autorestart`, `restart_delay` 0: PM2's defaults).
fn ecosystem_file(sleep: &Path, apps: usize) -> Value {
    let apps: Vec<Value> = (0..apps)
        .map(|i| {
            json!({
                "name": format!("a{i}"),
                "script": sleep,
                "args": ["100000"],
                "interpreter": "none",
                "exec_mode": "fork",
                "autorestart": true,
            })
        })
        .collect();
    json!({ "apps": apps })
}

/// How many entries of `pm2 jlist` are `online`. The array is one line, which may follow
/// messages such as `[PM2] Spawning PM2 daemon`.
fn online(jlist: &str) -> Result<usize> {
    let line = jlist
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("[{") || *l == "[]")
        .ok_or(format!("no JSON array in `{}`", jlist.trim()))?;
    let rows: Vec<Value> =
        serde_json::from_str(line).context(|| "`pm2 jlist` is not JSON".to_string())?;
    Ok(rows
        .iter()
        .filter(|r| r["pm2_env"]["status"] == "online")
        .count())
}

impl Supervisor for Pm2 {
    fn label(&self) -> &str {
        &self.label
    }

    fn marker(&self) -> (&'static str, &Path) {
        (MARKER, self.home.path())
    }

    fn pid(&self) -> Result<u32> {
        read_pid_file(&self.pm2_home().join("pm2.pid"))
    }

    fn start_all(&self) -> Result<Duration> {
        self.run(["start", &self.ecosystem.to_string_lossy()])
            .map(|(_, took)| took)
    }

    fn running(&self) -> Result<usize> {
        online(&self.run(["jlist"])?.0)
    }

    fn status_command(&self) -> String {
        "`pm2 jlist` (all apps)".into()
    }

    fn notes(&self) -> Vec<String> {
        vec![
            "running = `pm2 jlist` status `online` (set once the process is spawned); each `pm2 jlist` is a Node.js CLI run".into(),
            "apps: ecosystem file, fork mode, interpreter none, autorestart (restart_delay 0, PM2's default)".into(),
        ]
    }

    fn shut_down(&mut self) -> Result<()> {
        self.run(["kill"])?;
        self.killed = true;
        Ok(())
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        if !self.killed
            && let Err(e) = self.run(["kill"])
        {
            eprintln!("herd-bench: `pm2 kill` failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecosystem_has_one_app_per_name() {
        let v = ecosystem_file(Path::new("/bin/sleep"), 2);
        assert_eq!(v["apps"][1]["name"], "a1");
        assert_eq!(v["apps"][0]["script"], "/bin/sleep");
        assert_eq!(v["apps"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn online_counts_after_a_warning() {
        let text = "[PM2] Spawning PM2 daemon\n[{\"pm2_env\":{\"status\":\"online\"}},{\"pm2_env\":{\"status\":\"launching\"}}]";
        assert_eq!(online(text).unwrap(), 1);
        assert!(online("nothing").is_err());
    }
}
