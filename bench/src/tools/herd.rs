//! herd as a [`Supervisor`]: a daemon in a fresh `HERD_HOME` and an app file of `sleep 100000`
//! apps, restarted at once when they die.

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
/// first delay is 1 s; PM2's `restart_delay` and supervisord's are 0).
fn app_file(apps: usize) -> String {
    (0..apps)
        .map(|i| {
            format!(
                "[[app]]\nname = \"a{i}\"\ncommand = \"sleep\"\nargs = [\"100000\"]\n\
                 restart = \"always\"\nbackoff_initial_ms = 0\n\n"
            )
        })
        .collect()
}

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

    fn notes(&self) -> Vec<String> {
        vec![
            "running = `herd ps --json` status `running` (set once the process is spawned)".into(),
            "apps: restart = \"always\", backoff_initial_ms = 0; metrics sampled every 5 s (the default)"
                .into(),
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
    }
}
