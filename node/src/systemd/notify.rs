//! The daemon's side of sd_notify(3), when systemd started it with `Type=notify`
//! (`NOTIFY_SOCKET` set): `READY=1` once the socket answers and the apps are adopted or
//! started, `STATUS=` with counts, `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1` when
//! the shutdown begins. Every message comes from the daemon itself, the unit's main pid, so
//! the unit keeps the default `NotifyAccess=main`.

use crate::supervisor::{Census, Supervisor};
use sd_notify::NotifyState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// How often the status line is looked at again (it is sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// The daemon's link to systemd; there is one only when `NOTIFY_SOCKET` was set.
#[derive(Debug)]
pub struct Notifier {
    /// Half of `WATCHDOG_USEC`, when the watchdog is on and meant for this pid.
    watchdog_every: Option<Duration>,
    stopping_sent: AtomicBool,
    ready_sent: AtomicBool,
    /// The last `STATUS=` sent, so an unchanged line is not sent again.
    last_status: Mutex<String>,
}

impl Notifier {
    /// Reads systemd's variables once and removes `WATCHDOG_USEC`/`WATCHDOG_PID` from the
    /// daemon's environment. `NOTIFY_SOCKET` stays (the `sd-notify` crate reads it on every
    /// send); `app_env::is_scrubbed` keeps it, and `WATCHDOG_*`, from every app and probe.
    ///
    /// # Safety
    /// Changes the process environment: call it before any other thread exists (first thing
    /// in `daemon::run`, before the async runtime starts).
    pub unsafe fn from_env() -> Option<Arc<Notifier>> {
        // WATCHDOG_PID names the process the watchdog is for (sd_watchdog_enabled(3)); a
        // watchdog meant for another pid, or of 0 µs, is off.
        // SAFETY: the caller guarantees no other thread runs yet.
        let watchdog =
            unsafe { sd_notify::watchdog_enabled_and_unset_env() }.filter(|d| !d.is_zero());
        std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
        Some(Arc::new(Notifier {
            watchdog_every: watchdog.map(|d| d / 2),
            stopping_sent: AtomicBool::new(false),
            ready_sent: AtomicBool::new(false),
            last_status: Mutex::new(String::new()),
        }))
    }

    /// `READY=1` with the first status line; sent once.
    pub fn ready(&self, census: Census) {
        // The status lock is held from the flag to the record, so `run` cannot see "ready"
        // with no status recorded yet and send the same line a second time.
        let mut last = self.last_status.lock().unwrap_or_else(|p| p.into_inner());
        if !self.ready_sent.swap(true, Ordering::SeqCst) {
            let status = status_line(census);
            self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            info!(status = %status, "told systemd: ready");
            *last = status;
        }
    }

    /// `STOPPING=1`; sent once, however many paths report the shutdown.
    pub fn stopping(&self) {
        if !self.stopping_sent.swap(true, Ordering::SeqCst) {
            self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        // Best effort: systemd gone or the socket full must never take the daemon down.
        if let Err(e) = sd_notify::notify(states) {
            warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Runs for the daemon's life: the watchdog pings, the status line, and `STOPPING=1` as
    /// soon as the supervisor starts closing. Each round reads the supervisor's table, so a
    /// wedged supervisor (or a stalled runtime) stops the pings and systemd restarts the
    /// daemon, which adopts the apps.
    pub async fn run(self: Arc<Self>, supervisor: Supervisor) {
        let mut changes = supervisor.subscribe();
        let mut status = tokio::time::interval(STATUS_EVERY);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog = self.watchdog_every.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let ping = tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    false
                }
                _ = status.tick() => false,
                _ = async {
                    match watchdog.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let census = supervisor.census();
            if ping {
                self.send(&[NotifyState::Watchdog]);
            }
            if census.closing {
                self.stopping();
                continue;
            }
            // Before READY=1 the first status goes with it (see `ready`).
            if self.ready_sent.load(Ordering::SeqCst) {
                let line = status_line(census);
                let mut last = self.last_status.lock().unwrap_or_else(|p| p.into_inner());
                if *last != line {
                    self.send(&[NotifyState::Status(&line)]);
                    *last = line;
                }
            }
        }
    }
}

/// The `STATUS=` text systemd shows in `systemctl status herd`.
pub fn status_line(c: Census) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}, {} running",
        plural(c.apps, "app", "apps"),
        plural(c.running, "instance", "instances")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_apps_and_running_instances() {
        let c = Census {
            apps: 12,
            running: 30,
            closing: false,
        };
        assert_eq!(status_line(c), "12 apps, 30 instances running");
        let c = Census {
            apps: 1,
            running: 1,
            closing: false,
        };
        assert_eq!(status_line(c), "1 app, 1 instance running");
    }
}
