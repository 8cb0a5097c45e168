//! The singleton lease: a cluster instance with `on_disconnect = "stop"` may run on this node
//! only while the node holds a lease from the master. Each accepted heartbeat renews it for a
//! little less than `offline_timeout`, so it lapses before the master could call this node
//! offline and place the instance elsewhere.
//!
//! The daemon refuses to spawn such an instance without a valid lease. Enforcing the lapse
//! cannot be left to the daemon alone: a daemon that is SIGKILLed or frozen stops nothing,
//! while its apps (which outlive it by design) keep running. So a small keeper process
//! (`herd lease-keeper`, see `keeper`) holds the same deadline and SIGKILLs the guarded process
//! groups when it passes, or at once when the daemon's end of the pipe closes (the daemon
//! died). The keeper is started with the first guarded process; a standalone daemon, or one
//! without singletons, never starts it.
//!
//! Both measure the lease on `CLOCK_BOOTTIME`, not `Instant`'s `CLOCK_MONOTONIC`: the monotonic
//! clock stops while the host is suspended, so a host resumed after a suspend longer than the
//! lease would believe its lease still ran while the master had long placed the singleton
//! elsewhere. The keeper also looks at the clock at least every `KEEPER_TICK`, because its
//! waits are measured on the monotonic clock too.

use super::process;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tracing::{info, warn};

/// The longest the keeper sleeps without looking at the boot clock (see the module docs).
const KEEPER_TICK: Duration = Duration::from_millis(250);

/// A point in time on `CLOCK_BOOTTIME`, which keeps counting while the host is suspended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootInstant(Duration);

impl BootInstant {
    pub fn now() -> BootInstant {
        use nix::time::{ClockId, clock_gettime};
        // CLOCK_BOOTTIME exists on every Linux herd supports; should it ever fail, the
        // monotonic clock is the best fallback (it only lacks the suspended time).
        let t = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
            .map(|t| Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().max(0) as u32))
            .unwrap_or_default();
        BootInstant(t)
    }

    /// Milliseconds since boot.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// How long from now until `self`; zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_sub(BootInstant::now().0)
    }

    pub fn passed(self) -> bool {
        BootInstant::now() >= self
    }
}

impl std::ops::Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(d))
    }
}

#[derive(Default)]
pub struct Lease {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    until: Option<BootInstant>,
    /// pid (the group leader) → start signature.
    guarded: HashMap<u32, u64>,
    keeper: Option<Keeper>,
}

struct Keeper {
    child: Child,
    stdin: ChildStdin,
}

impl Lease {
    /// The master acknowledged this node and its agent is in sync: singletons may run for
    /// `valid_for` more.
    pub fn renew(&self, valid_for: Duration) {
        let mut inner = self.lock();
        inner.until = Some(BootInstant::now() + valid_for);
        if inner.keeper.is_some() {
            let line = format!("lease {}\n", valid_for.as_millis());
            inner.send(&line);
        }
    }

    /// May a singleton start now?
    pub fn valid(&self) -> bool {
        self.lock().until.is_some_and(|u| !u.passed())
    }

    /// From now on the keeper kills this process group when the lease lapses (at once if it
    /// already has).
    pub fn guard(&self, pid: u32, signature: u64) {
        let mut inner = self.lock();
        inner.guarded.insert(pid, signature);
        if inner.keeper.is_none() {
            inner.start_keeper();
        } else {
            inner.send(&format!("guard {pid} {signature}\n"));
        }
    }

    /// The process ended (or is no longer a singleton's): nothing to enforce.
    pub fn forget(&self, pid: u32) {
        let mut inner = self.lock();
        if inner.guarded.remove(&pid).is_some() && inner.keeper.is_some() {
            inner.send(&format!("forget {pid}\n"));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn remaining_ms(&self) -> u128 {
        self.until.map(|u| u.remaining().as_millis()).unwrap_or(0)
    }

    /// Starts the keeper and tells it everything: the lease left and every guarded process.
    fn start_keeper(&mut self) {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                warn!(error = %e, "cannot find the herd binary to start the lease keeper");
                return;
            }
        };
        let spawned = Command::new(exe)
            .arg("lease-keeper")
            // Not the unit's main process: systemd's plumbing is not its to use.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own group: a Ctrl-C meant for a foreground daemon must not take it away
            // while the daemon lives on.
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot start the lease keeper");
                return;
            }
        };
        let Some(stdin) = child.stdin.take() else {
            let _ = child.kill();
            return;
        };
        info!(pid = child.id(), "lease keeper started");
        self.keeper = Some(Keeper { child, stdin });
        let mut hello = format!("lease {}\n", self.remaining_ms());
        for (pid, sig) in &self.guarded {
            hello.push_str(&format!("guard {pid} {sig}\n"));
        }
        self.send(&hello);
    }

    /// Writes to the keeper; a keeper that went away is started again (and told everything).
    fn send(&mut self, line: &str) {
        let Some(k) = self.keeper.as_mut() else {
            return;
        };
        if k.stdin.write_all(line.as_bytes()).is_ok() {
            return;
        }
        warn!("the lease keeper went away; starting another");
        let mut old = self.keeper.take();
        if let Some(k) = old.as_mut() {
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
        self.start_keeper();
    }
}

/// `herd lease-keeper`: reads `lease MS`, `guard PID SIGNATURE` and `forget PID` lines from
/// stdin; SIGKILLs every guarded process group whose lease has lapsed, and all of them when
/// stdin closes. Runs until stdin closes.
pub fn keeper_main() -> std::io::Result<()> {
    use std::io::BufRead;
    use std::sync::mpsc;
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    let mut until = BootInstant::now();
    let mut guarded: HashMap<u32, u64> = HashMap::new();
    loop {
        let left = until.remaining();
        if left.is_zero() && !guarded.is_empty() {
            kill_all(&mut guarded, "the lease lapsed");
        }
        let wait = if guarded.is_empty() || left.is_zero() {
            Duration::from_secs(3600)
        } else {
            left.min(KEEPER_TICK)
        };
        match rx.recv_timeout(wait) {
            Ok(Some(line)) => {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("lease"), Some(ms), None) => {
                        if let Ok(ms) = ms.parse::<u64>() {
                            until = BootInstant::now() + Duration::from_millis(ms);
                        }
                    }
                    (Some("guard"), Some(pid), Some(sig)) => {
                        if let (Ok(pid), Ok(sig)) = (pid.parse(), sig.parse()) {
                            guarded.insert(pid, sig);
                        }
                    }
                    (Some("forget"), Some(pid), None) => {
                        if let Ok(pid) = pid.parse::<u32>() {
                            guarded.remove(&pid);
                        }
                    }
                    _ => say(&format!("ignoring `{line}`")),
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                kill_all(&mut guarded, "the daemon is gone");
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

fn kill_all(guarded: &mut HashMap<u32, u64>, why: &str) {
    for (pid, sig) in guarded.drain() {
        if process::is_same_process(pid, sig) {
            let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            say(&format!("{why}: killed process group {pid}"));
        }
    }
}

/// One line on stderr (the daemon's log); a closed stderr is no reason to stop guarding.
fn say(what: &str) {
    let _ = writeln!(std::io::stderr(), "herd lease-keeper: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_valid_from_a_renewal_until_it_lapses() {
        let lease = Lease::default();
        assert!(!lease.valid(), "no lease before the master's word");
        lease.renew(Duration::from_secs(60));
        assert!(lease.valid());
        lease.renew(Duration::ZERO);
        assert!(!lease.valid());
        // Nothing guarded and no keeper: forgetting is a no-op.
        lease.forget(42);
        assert!(lease.lock().keeper.is_none());
    }

    #[test]
    fn boot_instants_pass_and_saturate() {
        let now = BootInstant::now();
        assert!(now.passed());
        let later = now + Duration::from_secs(3600);
        assert!(!later.passed());
        assert!(later.remaining() > Duration::from_secs(3500));
        // A huge lease neither overflows nor panics.
        assert!(!(now + Duration::MAX).passed());
    }
}
