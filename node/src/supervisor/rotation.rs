//! Keeps instance logs under their caps. The kernel tells herd which log files were written
//! to (inotify, IN_MODIFY), so quiet apps cost nothing; a file that was written is checked at
//! most every 100 ms, so a flooding app overshoots its cap by what it writes in 100 ms. A
//! full check every minute (and after an inotify queue overflow) catches anything missed. A
//! log is also checked the moment it is first watched (at daemon start, for a new instance),
//! since bytes written before the watch existed raise no event.
//! Without inotify it falls back to checking every log every second.
//!
//! The daemon's own `daemon.log` (when `herd up` detached it) is one more target, with its own
//! cap (`daemon_log_max_bytes`, `daemon_log_files`).

use super::{Supervisor, logs};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use tokio_stream::StreamExt;
use tracing::{info, warn};

/// How soon a written log is checked again.
const HOT: Duration = Duration::from_millis(100);
/// How often every log is checked anyway.
const FULL: Duration = Duration::from_secs(60);
/// Transitions this close together share one look at which logs exist.
const TARGETS_COALESCE: Duration = Duration::from_millis(50);
/// Without inotify: how often every log is checked.
const POLL: Duration = Duration::from_secs(1);

type Targets = HashMap<PathBuf, (u64, u32)>;

/// A log file outside the apps' (path, max bytes, files kept), e.g. `daemon.log`.
pub type LogTarget = (PathBuf, u64, u32);

impl Supervisor {
    pub async fn run_log_rotation(&self, also: Vec<LogTarget>) {
        let stream = Inotify::init().and_then(|i| i.into_event_stream(vec![0u8; 64 * 1024]));
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "inotify unavailable; checking every log every second");
                return self.poll_logs(&also).await;
            }
        };
        let mut watches = stream.watches();
        let mut by_wd: HashMap<WatchDescriptor, PathBuf> = HashMap::new();
        let mut watched: HashMap<PathBuf, WatchDescriptor> = HashMap::new();
        let mut changes = self.subscribe();
        let mut targets = self.targets(&also);
        let mut last_full = crate::supervisor::clock::monotonic();
        loop {
            // Follow the set of instances: watch new logs, forget removed ones. A log is
            // checked as soon as it is watched: it may have been written before the watch
            // existed (a burst at spawn, before this loop woke) or while the daemon was down,
            // and no IN_MODIFY will ever tell of those bytes.
            let mut fresh: Vec<PathBuf> = Vec::new();
            for path in targets.keys() {
                if !watched.contains_key(path)
                    && let Ok(wd) = watches.add(path, WatchMask::MODIFY)
                {
                    by_wd.insert(wd.clone(), path.clone());
                    watched.insert(path.clone(), wd);
                    fresh.push(path.clone());
                }
            }
            if !fresh.is_empty() {
                let check = checks(&targets, fresh);
                let _ = tokio::task::spawn_blocking(move || rotate_all(check)).await;
            }
            watched.retain(|path, wd| {
                let keep = targets.contains_key(path);
                if !keep {
                    let _ = watches.remove(wd.clone());
                    by_wd.remove(wd);
                }
                keep
            });

            let mut dirty: HashSet<PathBuf> = HashSet::new();
            let mut everything = false;
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() { return }
                    // A storm of transitions (1,000 apps starting) is one look at the table,
                    // not one per transition: each look walks every instance under its lock.
                    tokio::time::sleep(TARGETS_COALESCE).await;
                    changes.borrow_and_update();
                    targets = self.targets(&also);
                    continue;
                }
                _ = tokio::time::sleep_until(last_full + FULL) => everything = true,
                event = stream.next() => match event {
                    Some(Ok(e)) if e.mask.contains(EventMask::Q_OVERFLOW) => everything = true,
                    Some(Ok(e)) => dirty.extend(by_wd.get(&e.wd).cloned()),
                    Some(Err(e)) => {
                        warn!(error = %e, "inotify failed; checking every log every second");
                        return self.poll_logs(&also).await;
                    }
                    None => return self.poll_logs(&also).await,
                },
            }
            if !everything {
                // Let a burst of writes settle into one check, then take every event queued.
                tokio::time::sleep(HOT).await;
                while let Ok(Some(Ok(e))) =
                    tokio::time::timeout(Duration::ZERO, stream.next()).await
                {
                    if e.mask.contains(EventMask::Q_OVERFLOW) {
                        everything = true;
                    }
                    dirty.extend(by_wd.get(&e.wd).cloned());
                }
            }
            if everything {
                last_full = crate::supervisor::clock::monotonic();
                dirty = targets.keys().cloned().collect();
            }
            let check = checks(&targets, dirty);
            let _ = tokio::task::spawn_blocking(move || rotate_all(check)).await;
        }
    }

    fn targets(&self, also: &[LogTarget]) -> Targets {
        self.log_targets()
            .into_iter()
            .chain(also.iter().cloned())
            .map(|(p, m, f)| (p, (m, f)))
            .collect()
    }

    async fn poll_logs(&self, also: &[LogTarget]) {
        loop {
            tokio::time::sleep(POLL).await;
            let mut check = self.log_targets();
            check.extend(also.iter().cloned());
            let _ = tokio::task::spawn_blocking(move || rotate_all(check)).await;
        }
    }
}

/// The limits of each of `paths` that is still a target.
fn checks(targets: &Targets, paths: impl IntoIterator<Item = PathBuf>) -> Vec<LogTarget> {
    paths
        .into_iter()
        .filter_map(|p| targets.get(&p).map(|(m, f)| (p, *m, *f)))
        .collect()
}

fn rotate_all(check: Vec<LogTarget>) {
    for (path, max, files) in check {
        match logs::rotate_if_needed(&path, max, files) {
            Ok(true) => info!(file = %path.display(), "log rotated"),
            Ok(false) => {}
            Err(e) => warn!(file = %path.display(), error = %e, "log rotation failed"),
        }
    }
}
