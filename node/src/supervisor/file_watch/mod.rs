//! `watch`: restart an app when its files change. `run_watch` keeps one task per watched app
//! (the app has `watch`, is wanted running, and `herd watch NAME off` has not paused it) and
//! ends the task when that stops being so; the task owns a notify debouncer (inotify under
//! it) whose thread hands batches of changes over a channel, so nothing here ever waits on,
//! or holds, the table lock while the file system is busy.
//!
//! A burst is one restart: the first change that counts (`rules`) opens a quiet window of
//! `watch_debounce_ms`; every change that counts inside it extends it; when it closes the app
//! is restarted once (reloaded, zero-downtime, when it has a probe or `listen` sockets), by the
//! same path as `herd restart`/`herd reload` (a burst that never pauses is cut after
//! `BURST_WINDOWS` windows). Changes that happened before that restart began are spent. A
//! lost inotify queue (overflow) is one restart too: something changed, and what can no
//! longer be told.

pub mod rules;
mod tree;

use super::facts::Fact;
use super::{Desired, Result, Supervisor, SupervisorError};
use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, RemoveKind};
use notify_debouncer_full::{DebounceEventResult, Debouncer, NoCache, new_debouncer_opt};
use rules::Rules;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

/// Batches waiting for a busy task (one arrives per debouncer tick at most); a full channel
/// is counted as an overflow rather than blocking the debouncer's thread.
const CHANNEL: usize = 64;

/// The longest burst, in debounce windows, before the app is restarted anyway.
const BURST_WINDOWS: u32 = 20;

/// What a watcher was started for; when any of it changes, a new watcher replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchKey {
    cwd: PathBuf,
    watch: Vec<String>,
    ignore: Vec<String>,
    debounce: Duration,
}

/// Aborts the watcher task (dropping its debouncer, which ends the inotify watches) when the
/// entry leaves the table of running watchers.
struct Running(JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One change that counts, as the event will name it.
enum Change {
    Path(PathBuf),
    /// The kernel's queue overflowed (or a batch was dropped): changes were lost.
    Overflow,
}

type Watcher = Debouncer<notify::RecommendedWatcher, NoCache>;

impl Supervisor {
    /// `herd watch NAME on|off`: whether the app's `watch` keys are acted on. Returns whether
    /// it is watched now. An app without `watch` keys cannot be turned on: there is nothing
    /// to watch, and guessing (its whole cwd) could put thousands of watches in place.
    pub fn set_watching(&self, name: &str, on: bool) -> Result<bool> {
        {
            let mut t = self.lock();
            let app = t
                .apps
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            if on && app.spec.watch.is_empty() {
                return Err(SupervisorError::Invalid(format!(
                    "app `{name}` has no `watch` key; add `watch = [\"src/\"]` (or `watch = true` for its whole cwd) to its app file and `herd start` it again"
                )));
            }
            let off = !on;
            if app.watch_off == off {
                return Ok(app.is_watching());
            }
            app.watch_off = off;
        }
        self.record(name, Fact::Watching { on });
        self.notify();
        Ok(on)
    }

    /// Starts and stops the apps' watchers as the table changes; runs for the daemon's life.
    /// Apps restored after a daemon restart are watched again from here, like new ones.
    pub async fn run_watch(&self) {
        let mut running: HashMap<String, (WatchKey, Running)> = HashMap::new();
        let mut changes = self.subscribe();
        loop {
            let wanted = self.wanted_watchers();
            running.retain(|name, (key, _)| wanted.get(name) == Some(key));
            for (name, key) in wanted {
                if running.contains_key(&name) {
                    continue;
                }
                let me = self.clone();
                let (n, k) = (name.clone(), key.clone());
                let task = tokio::spawn(async move { me.watch_app(n, k).await });
                running.insert(name, (key, Running(task)));
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    fn wanted_watchers(&self) -> HashMap<String, WatchKey> {
        let t = self.lock();
        if t.closing {
            return HashMap::new();
        }
        t.apps
            .values()
            .filter(|a| a.is_watching() && a.desired == Desired::Running)
            .filter_map(|a| {
                let key = WatchKey {
                    cwd: a.spec.cwd.clone()?,
                    watch: a.spec.watch.clone(),
                    ignore: a.spec.watch_ignore.clone(),
                    debounce: a.spec.watch_debounce(),
                };
                Some((a.spec.name.clone(), key))
            })
            .collect()
    }

    async fn watch_app(self, name: String, key: WatchKey) {
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        let missed = Arc::new(AtomicBool::new(false));
        let home = self.shared.home.clone();
        let logs = self.shared.logs_dir.clone();
        let (k, m) = (key.clone(), missed.clone());
        let setup = tokio::task::spawn_blocking(move || start(&k, &home, &logs, tx, m)).await;
        let (_watcher, rules, dirs) = match setup {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => {
                // Said once: the task ends, and is not started again until the app or its
                // keys change.
                self.record(&name, Fact::WatchRefused { error });
                return;
            }
            Err(_) => return,
        };
        self.record(&name, Fact::WatchStarted { directories: dirs });
        let mut spent = super::clock::std_instant();
        let mut errors_said = false;
        loop {
            let Some(first) =
                next_change(&mut rx, &rules, spent, &missed, &name, &mut errors_said).await
            else {
                return;
            };
            // The quiet window: changes that keep coming belong to the same burst, up to
            // BURST_WINDOWS windows, so a file written without pause (which belongs in
            // `watch_ignore`; the event names it) cannot hold every restart back for ever.
            let cut = super::clock::monotonic() + key.debounce * BURST_WINDOWS;
            loop {
                let quiet = key
                    .debounce
                    .min(cut.saturating_duration_since(super::clock::monotonic()));
                if quiet.is_zero() {
                    break;
                }
                match tokio::time::timeout(
                    quiet,
                    next_change(&mut rx, &rules, spent, &missed, &name, &mut errors_said),
                )
                .await
                {
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            spent = super::clock::std_instant();
            self.restart_for(&name, &rules, first).await;
        }
    }

    /// Restarts (or reloads) the app for `change`, and waits until that is done. The restart
    /// runs as its own task: turning watch off meanwhile ends the watcher, never the restart.
    async fn restart_for(&self, name: &str, rules: &Rules, change: Change) {
        let reload = {
            let t = self.lock();
            let Some(app) = t.apps.get(name) else { return };
            app.spec.health.is_some() || !app.spec.listen.is_empty()
        };
        let fact = match change {
            Change::Path(p) => Fact::WatchRestart {
                path: rules.shown(&p),
                reload,
                overflow: false,
            },
            Change::Overflow => Fact::WatchRestart {
                path: String::new(),
                reload,
                overflow: true,
            },
        };
        self.record(name, fact);
        let me = self.clone();
        let n = name.to_string();
        let job = tokio::spawn(async move {
            if reload {
                me.reload(&n).await.map(|_| ())
            } else {
                me.restart(&n).await.map(|_| ())
            }
        });
        if let Ok(Err(e)) = job.await {
            warn!(app = %name, error = %e, "restart after a file change failed");
        }
    }
}

/// The next change that counts and happened after `spent`; `None` once the debouncer is gone.
async fn next_change(
    rx: &mut mpsc::Receiver<DebounceEventResult>,
    rules: &Rules,
    spent: Instant,
    missed: &AtomicBool,
    app: &str,
    errors_said: &mut bool,
) -> Option<Change> {
    loop {
        if missed.swap(false, Ordering::Relaxed) {
            return Some(Change::Overflow);
        }
        match rx.recv().await? {
            Ok(events) => {
                for e in events {
                    if e.event.need_rescan() {
                        warn!(app, "the file watch queue overflowed; restarting once");
                        return Some(Change::Overflow);
                    }
                    if e.time < spent || !is_a_change(&e.event.kind) {
                        continue;
                    }
                    if let Some(p) = e.event.paths.iter().find(|p| rules.matches(p)) {
                        return Some(Change::Path(p.clone()));
                    }
                }
            }
            Err(errors) => {
                if !*errors_said {
                    *errors_said = true;
                    let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
                    warn!(app, error = %first, "file watch error (further ones are not logged)");
                }
            }
        }
    }
}

/// Whether an event of this kind is a change to the app's files: reading (inotify's open and
/// close events, which notify reports) is not, nor a directory appearing or going (the files
/// in it say so themselves).
fn is_a_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// Checks the tree and puts the watches in place (blocking: walks directories).
fn start(
    key: &WatchKey,
    home: &std::path::Path,
    logs: &std::path::Path,
    tx: mpsc::Sender<DebounceEventResult>,
    missed: Arc<AtomicBool>,
) -> std::result::Result<(Watcher, Rules, usize), String> {
    let cwd = &key.cwd;
    // Resolved only to compare herd's own directories with the app's spelling; what is
    // watched is always reached through `cwd` as written, without following links.
    let real_cwd = cwd.canonicalize().ok();
    let rules = Rules::new(
        cwd,
        &key.watch,
        &key.ignore,
        rules::own_spellings(home, cwd, real_cwd.as_deref()),
        rules::own_spellings(logs, cwd, real_cwd.as_deref()),
    )?;
    let roots = rules::roots(cwd, &key.watch, |p| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
    });
    let roots = tree::usable(cwd, roots)?;
    let dirs = tree::count_dirs(&roots)?;
    let handler = move |r: DebounceEventResult| {
        if tx.try_send(r).is_err() {
            missed.store(true, Ordering::Relaxed);
        }
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher: Watcher = new_debouncer_opt(key.debounce, None, handler, NoCache, config)
        .map_err(|e| e.to_string())?;
    for root in &roots {
        let mode = if root.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher
            .watch(&root.dir, mode)
            .map_err(|e| format!("cannot watch {}: {e}", root.dir.display()))?;
    }
    Ok((watcher, rules, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::AppSpec;
    use crate::supervisor::{App, Origin};
    use notify::event::{DataChange, ModifyKind};

    #[test]
    fn watch_off_is_kept_in_the_state_file_and_an_app_without_watch_cannot_be_turned_on() {
        let sup = crate::supervisor::testing::on_real_os();
        let mut spec = AppSpec::quick("web", "true", vec![]);
        spec.watch = vec!["src".into()];
        spec.cwd = Some("/srv/web".into());
        let plain = AppSpec::quick("plain", "true", vec![]);
        for s in [spec, plain] {
            sup.lock()
                .apps
                .insert(s.name.clone(), App::new(s, Origin::Local));
        }
        assert!(!sup.set_watching("web", false).unwrap());
        let saved = serde_json::to_value(sup.snapshot()).unwrap();
        let web = &saved["apps"].as_array().unwrap()[1];
        assert_eq!(
            (&web["spec"]["name"], &web["watch_off"]),
            (&"web".into(), &true.into())
        );
        assert!(sup.wanted_watchers().is_empty());
        assert!(sup.set_watching("web", true).unwrap());
        assert_eq!(sup.wanted_watchers().len(), 1);
        let err = sup.set_watching("plain", true).unwrap_err().to_string();
        assert!(err.contains("app `plain` has no `watch` key"), "{err}");
        assert!(!sup.set_watching("plain", false).unwrap());
    }

    fn event(kind: EventKind, path: &str, time: Instant) -> notify_debouncer_full::DebouncedEvent {
        let event = notify::Event::new(kind).add_path(PathBuf::from(path));
        notify_debouncer_full::DebouncedEvent::new(event, time)
    }

    #[tokio::test]
    async fn only_new_changes_that_count_come_through_and_an_overflow_is_one() {
        let rules = Rules::new(
            std::path::Path::new("/srv/app"),
            &["src/".into()],
            &["*.log".into()],
            Vec::new(),
            Vec::new(),
        )
        .unwrap();
        let spent = crate::supervisor::clock::std_instant();
        let before = spent - Duration::from_millis(1);
        let after = spent + Duration::from_millis(1);
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let (tx, mut rx) = mpsc::channel(8);
        let missed = AtomicBool::new(false);
        let mut said = false;
        tx.send(Ok(vec![
            event(write, "/srv/app/src/old.py", before),
            event(write, "/srv/app/src/out.log", after),
            event(write, "/srv/app/README", after),
            event(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/srv/app/src/a.py",
                after,
            ),
            event(write, "/srv/app/src/new.py", after),
        ]))
        .await
        .unwrap();
        let next = next_change(&mut rx, &rules, spent, &missed, "app", &mut said).await;
        assert!(
            matches!(next, Some(Change::Path(p)) if p == std::path::Path::new("/srv/app/src/new.py"))
        );

        let rescan = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        tx.send(Ok(vec![notify_debouncer_full::DebouncedEvent::new(
            rescan, after,
        )]))
        .await
        .unwrap();
        let next = next_change(&mut rx, &rules, spent, &missed, "app", &mut said).await;
        assert!(matches!(next, Some(Change::Overflow)));

        // A batch the channel had no room for counts as lost changes.
        missed.store(true, Ordering::Relaxed);
        let next = next_change(&mut rx, &rules, spent, &missed, "app", &mut said).await;
        assert!(matches!(next, Some(Change::Overflow)));

        tx.send(Err(vec![notify::Error::generic("boom")]))
            .await
            .unwrap();
        drop(tx);
        assert!(
            next_change(&mut rx, &rules, spent, &missed, "app", &mut said)
                .await
                .is_none()
        );
        assert!(said, "the error was logged");
    }

    #[test]
    fn reading_a_file_or_making_a_directory_is_not_a_change() {
        assert!(!is_a_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_a_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_a_change(&EventKind::Create(CreateKind::Folder)));
        assert!(is_a_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_a_change(&EventKind::Create(CreateKind::File)));
        assert!(is_a_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(is_a_change(&EventKind::Remove(RemoveKind::File)));
    }
}
