//! Finding and killing what a supervisor under test left running. Every process the bench
//! starts for a supervisor carries one environment variable naming that supervisor's
//! temporary home (`HERD_HOME` for herd, [`MARKER`] for the others); its daemon and apps
//! inherit it, so a scan of `/proc/*/environ` finds them all, wherever they were re-parented.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// Set on every command the bench runs for PM2, supervisord, s6 or runit, to their temporary
/// home.
pub const MARKER: &str = "HERD_BENCH_HOME";

/// Every live process (other than this one) whose environment has `var=value`.
pub fn processes_with_env(var: &str, value: &Path) -> Vec<u32> {
    let mut needle = format!("{var}=").into_bytes();
    needle.extend_from_slice(value.as_os_str().as_encoded_bytes());
    let me = std::process::id();
    crate::procfs::pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // Unreadable (another user's, or gone) and zombies (empty) never match.
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle))
        })
        .collect()
}

/// SIGKILL to each process with `var=value` (and to the process group it leads) until none
/// is left, for at most 10 s. Says on stderr what it could not kill.
pub fn kill_all_with_env(var: &str, value: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with_env(var, value);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!(
                "herd-bench: could not kill pids {left:?} ({var}={})",
                value.display()
            );
            return;
        }
        for pid in left {
            kill_group(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL to the group `pid` leads (apps are group leaders) and to `pid` itself.
pub fn kill_group(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
}

/// Waits up to `limit` for `pid` to be gone (or a zombie); true if it is.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rfind(')').and_then(|i| s.get(i + 2..i + 3)) != Some("Z"));
        if !alive {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
