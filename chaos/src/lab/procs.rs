//! A census of the lab's processes straight from `/proc`, independent of what any daemon says:
//! every process herd starts carries `HERD_HOME` (and apps `HERD_APP`) in its environment,
//! which tells which node it belongs to even after its daemon is gone.

use std::path::Path;

/// A process carrying a `HERD_HOME` under the lab's work dir.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcInfo {
    pub pid: i32,
    pub herd_home: String,
    /// Set for app processes (`HERD_APP`); daemons and CLIs have none.
    pub app: Option<String>,
    /// The instance slot herd gave the process (`HERD_SLOT`).
    pub slot: Option<String>,
    /// One of `R S D T t Z X I`; `T` is stopped (SIGSTOP), `Z` a zombie.
    pub state: char,
    pub cmdline: String,
}

impl ProcInfo {
    /// Running or able to run: neither stopped, traced, nor dead.
    pub fn live(&self) -> bool {
        !matches!(self.state, 'T' | 't' | 'Z' | 'X')
    }
}

fn env_of(raw: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    raw.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .filter_map(|kv| kv.split_once('='))
}

/// The state letter of `/proc/<pid>/stat`, which follows the `(comm)` field.
fn state_of(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn read(pid: i32, under: &str) -> Option<ProcInfo> {
    let base = Path::new("/proc").join(pid.to_string());
    let environ = std::fs::read(base.join("environ")).ok()?;
    let mut home = None;
    let mut app = None;
    let mut slot = None;
    for (k, v) in env_of(&environ) {
        match k {
            "HERD_HOME" => home = Some(v.to_string()),
            "HERD_APP" => app = Some(v.to_string()),
            "HERD_SLOT" => slot = Some(v.to_string()),
            _ => {}
        }
    }
    let home = home.filter(|h| h.starts_with(under))?;
    let state = state_of(&std::fs::read_to_string(base.join("stat")).ok()?)?;
    let cmdline = std::fs::read(base.join("cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        herd_home: home,
        app,
        slot,
        state,
        cmdline,
    })
}

/// Every process whose `HERD_HOME` starts with `under`.
pub fn scan(under: &Path) -> Vec<ProcInfo> {
    let under = under.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| read(pid, &under))
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| state_of(&s))
        .is_some_and(|s| !matches!(s, 'Z' | 'X'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_last_parenthesis() {
        assert_eq!(state_of("12 (sleep) S 1 12"), Some('S'));
        assert_eq!(state_of("12 (we(ird) n) T 1"), Some('T'));
        assert_eq!(state_of("garbage"), None);
    }

    #[test]
    fn a_child_with_a_herd_home_is_found_and_its_app_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("h1");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("HERD_HOME", &home)
            .env("HERD_APP", "solo@0")
            .spawn()
            .expect("sleep");
        // Until the child has exec'd, /proc shows the parent's environment: scan again until
        // it is there (this raced once under load).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let me = loop {
            let found = scan(dir.path());
            if let Some(me) = found.into_iter().find(|p| p.pid == child.id() as i32) {
                break me;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child is in the census"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(me.app.as_deref(), Some("solo@0"));
        assert_eq!(me.herd_home, home.to_string_lossy());
        assert!(me.live() && me.cmdline.starts_with("sleep 30"));
        assert!(!alive(child.id() as i32));
    }
}
