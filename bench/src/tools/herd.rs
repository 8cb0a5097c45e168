//! herd as a [`Supervisor`]: a daemon in a fresh `HERD_HOME` and an app file of `sleep 100000`
//! apps, restarted at once and without limit when they die: the policy PM2, supervisord, s6 and
//! runit get, so the restart figure measures speed, never herd's crash-loop guard.

use super::Supervisor;
use crate::error::{Context, Result};
use crate::herd::Herd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct HerdTool {
    herd: Herd,
    file: PathBuf,
    label: String,
}

impl HerdTool {
    pub fn up(exe: &Path, version: &str, apps: usize) -> Result<Self> {
        let herd = Herd::up(exe)?;
        let file = herd.home().join("idle.toml");
        std::fs::write(&file, app_file(apps))
            .context(|| format!("cannot write {}", file.display()))?;
        Ok(Self {
            herd,
            file,
            label: version.to_string(),
        })
    }
}

/// `apps` apps `a0` ... of `sleep 100000`, each restarted without delay (herd's default
/// first delay is 1 s; PM2's `restart_delay` and supervisord's are 0) and without limit:
/// [`UNLIMITED`] restarts per window, so herd never marks an app `crashed` (by default it does
/// after 5 restarts in 60 s; the peers restart forever).
fn app_file(apps: usize) -> String {
    (0..apps)
        .map(|i| {
            format!(
                "[[app]]\nname = \"a{i}\"\ncommand = \"sleep\"\nargs = [\"100000\"]\n\
                 restart = \"always\"\nbackoff_initial_ms = 0\nmax_restarts = {UNLIMITED}\n\n"
            )
        })
        .collect()
}

/// The largest `max_restarts` herd accepts (a `u32`): no window can hold that many restarts,
/// since herd starts an instance at most 10 times a second after its first 50.
const UNLIMITED: u32 = u32::MAX;

impl Supervisor for HerdTool {
    fn label(&self) -> &str {
        &self.label
    }

    fn marker(&self) -> (&'static str, &Path) {
        ("HERD_HOME", self.herd.home())
    }

    fn pid(&self) -> Result<u32> {
        self.herd.daemon_pid()
    }

    fn start_all(&self) -> Result<Duration> {
        self.herd.time(["start", &self.file.to_string_lossy()])
    }

    fn running(&self) -> Result<usize> {
        let rows = self.herd.ps()?;
        Ok(rows.iter().filter(|r| r.status == "running").count())
    }

    fn status_command(&self) -> String {
        "`herd ps --json` (all apps)".into()
    }

    fn notes(&self) -> Vec<String> {
        vec![
            "running = `herd ps --json` status `running` (set once the process is spawned)".into(),
            format!(
                "apps: restart = \"always\", backoff_initial_ms = 0, max_restarts = {UNLIMITED} (unlimited, like the peers); metrics sampled every 5 s (the default)"
            ),
        ]
    }

    fn shut_down(&mut self) -> Result<()> {
        self.herd.down().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_table_per_app_named_in_order() {
        let text = super::app_file(3);
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("name = "))
            .collect();
        assert_eq!(names, ["\"a0\"", "\"a1\"", "\"a2\""]);
        assert_eq!(text.matches("[[app]]").count(), 3);
        assert_eq!(text.matches("backoff_initial_ms = 0").count(), 3);
        assert_eq!(text.matches("max_restarts = 4294967295\n").count(), 3);
    }
}
