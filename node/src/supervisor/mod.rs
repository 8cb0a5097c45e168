//! The local supervisor: apps → instances → processes. One table behind one mutex holds
//! every app and instance; every transition happens under it, is traced, and bumps a
//! version counter that wakes the state writer and anyone waiting for a condition.
//! Processes are watched by one small task each (tokio's pidfd-based wait, or a pidfd for
//! processes adopted after a daemon restart); timers are tasks that check a generation
//! number, so a timer or exit notice for an older process never touches a newer one.

pub mod backoff;
pub mod instance;
pub mod logs;
pub mod process;
pub mod spec;

use instance::{AfterExit, ExitRecord, Instance, Status, decide_after_exit};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use spec::AppSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{info, warn};

/// What the user asked of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    pub spec: AppSpec,
    pub desired: Desired,
    /// Sorted by index.
    pub instances: Vec<Instance>,
}

impl App {
    fn new(spec: AppSpec) -> Self {
        let instances = (0..spec.instances).map(Instance::new).collect();
        Self {
            spec,
            desired: Desired::Running,
            instances,
        }
    }

    fn position(&self, index: u32) -> Option<usize> {
        self.instances.iter().position(|i| i.index == index)
    }
}

/// The persisted form of the whole table (`state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub apps: Vec<App>,
}

const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("app `{0}` not found; `herd ps` lists apps")]
    UnknownApp(String),
    #[error("the daemon is shutting down; start it again with `herd up`")]
    ShuttingDown,
}

type Result<T> = std::result::Result<T, SupervisorError>;

struct Table {
    apps: BTreeMap<String, App>,
    /// Set by shutdown: exits are no longer restarted.
    closing: bool,
}

struct Shared {
    table: Mutex<Table>,
    changed: watch::Sender<u64>,
    logs_dir: PathBuf,
}

#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

/// A stop in progress: the stop signal went to the group; this waits for it to empty and
/// SIGKILLs it at the deadline.
struct StopJob {
    name: String,
    index: u32,
    generation: u64,
    pgid: u32,
    timeout: Duration,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Supervisor {
    pub fn new(logs_dir: PathBuf) -> Self {
        let table = Table {
            apps: BTreeMap::new(),
            closing: false,
        };
        let (changed, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                table: Mutex::new(table),
                changed,
                logs_dir,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere must not take the whole supervisor down with a poisoned lock.
        self.shared.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.shared.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes on every transition.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    pub fn log_path(&self, app: &str, index: u32) -> PathBuf {
        logs::log_path(&self.shared.logs_dir, app, index)
    }

    pub fn snapshot(&self) -> Snapshot {
        let t = self.lock();
        Snapshot {
            version: SNAPSHOT_VERSION,
            apps: t.apps.values().cloned().collect(),
        }
    }

    /// Every instance log with its rotation limits.
    pub fn log_targets(&self) -> Vec<(PathBuf, u64, u32)> {
        let t = self.lock();
        t.apps
            .values()
            .flat_map(|a| {
                a.instances.iter().map(move |i| {
                    (
                        self.log_path(&a.spec.name, i.index),
                        a.spec.log_max_bytes,
                        a.spec.log_files,
                    )
                })
            })
            .collect()
    }

    pub fn list(&self, name: Option<&str>) -> Result<Vec<App>> {
        let t = self.lock();
        match name {
            Some(n) => t
                .apps
                .get(n)
                .cloned()
                .map(|a| vec![a])
                .ok_or_else(|| SupervisorError::UnknownApp(n.into())),
            None => Ok(t.apps.values().cloned().collect()),
        }
    }

    fn get(&self, name: &str) -> Result<App> {
        self.list(Some(name)).map(|mut v| v.remove(0))
    }

    /// Waits until `pred` holds. Subscribing before the first check means no wake-up is lost.
    async fn wait_until(&self, mut pred: impl FnMut(&Table) -> bool) {
        let mut rx = self.subscribe();
        loop {
            if pred(&self.lock()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn wait_stopped(&self, name: &str) {
        self.wait_until(|t| {
            t.apps
                .get(name)
                .is_none_or(|a| a.instances.iter().all(|i| i.status != Status::Stopping))
        })
        .await;
    }

    // ----- requests -----

    /// Registers the apps of a file (replacing changed ones) and starts them.
    pub async fn apply(&self, specs: Vec<AppSpec>) -> Result<Vec<App>> {
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            let existing = self.lock().apps.get(&name).map(|a| a.spec.clone());
            match existing {
                Some(old) if old == spec => {}
                Some(_) => {
                    // A changed spec replaces the app: its old instances stop first.
                    self.stop_app(&name, None, Desired::Stopped).await?;
                    self.lock().apps.insert(name.clone(), App::new(spec));
                    info!(app = %name, "app updated");
                }
                None => {
                    let mut t = self.lock();
                    if t.closing {
                        return Err(SupervisorError::ShuttingDown);
                    }
                    t.apps.insert(name.clone(), App::new(spec));
                    info!(app = %name, "app registered");
                }
            }
            out.push(self.start(&name, false)?);
        }
        Ok(out)
    }

    /// Starts every instance that is not running. `fresh` also forgets the crash history of
    /// instances that are already up (a restart).
    pub fn start(&self, name: &str, fresh: bool) -> Result<App> {
        {
            let mut t = self.lock();
            if t.closing {
                return Err(SupervisorError::ShuttingDown);
            }
            let app = t
                .apps
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            app.desired = Desired::Running;
            for index in 0..app.spec.instances {
                if app.position(index).is_none() {
                    app.instances.push(Instance::new(index));
                }
            }
            app.instances.sort_by_key(|i| i.index);
            for pos in 0..app.instances.len() {
                let inst = &mut app.instances[pos];
                if inst.index >= app.spec.instances {
                    continue;
                }
                if fresh {
                    inst.reset_history();
                }
                if matches!(inst.status, Status::Stopped | Status::Crashed) {
                    inst.reset_history();
                    self.spawn_instance(app, pos);
                }
            }
        }
        self.notify();
        self.get(name)
    }

    pub async fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<App> {
        self.stop_app(name, timeout, Desired::Stopped).await?;
        self.get(name)
    }

    pub async fn restart(&self, name: &str) -> Result<App> {
        self.stop_app(name, None, Desired::Running).await?;
        self.start(name, true)
    }

    pub async fn delete(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        self.stop_app(name, timeout, Desired::Stopped).await?;
        self.lock().apps.remove(name);
        info!(app = %name, "app deleted");
        self.notify();
        Ok(())
    }

    pub async fn scale(&self, name: &str, instances: u32) -> Result<App> {
        let jobs = {
            let mut t = self.lock();
            let app = t
                .apps
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            info!(app = %name, from = app.spec.instances, to = instances, "scale");
            app.spec.instances = instances;
            let mut jobs = Vec::new();
            for pos in 0..app.instances.len() {
                if app.instances[pos].index >= instances {
                    jobs.extend(self.begin_stop(app, pos, None));
                }
            }
            jobs
        };
        self.notify();
        self.run_stop_jobs(jobs);
        self.wait_stopped(name).await;
        {
            let mut t = self.lock();
            if let Some(app) = t.apps.get_mut(name) {
                app.instances
                    .retain(|i| i.index < instances || i.status == Status::Stopping);
            }
        }
        if self.get(name)?.desired == Desired::Running {
            self.start(name, false)
        } else {
            self.get(name)
        }
    }

    async fn stop_app(
        &self,
        name: &str,
        timeout: Option<Duration>,
        desired: Desired,
    ) -> Result<()> {
        let jobs = {
            let mut t = self.lock();
            let app = t
                .apps
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            app.desired = desired;
            let mut jobs = Vec::new();
            for pos in 0..app.instances.len() {
                jobs.extend(self.begin_stop(app, pos, timeout));
            }
            jobs
        };
        self.notify();
        self.run_stop_jobs(jobs);
        self.wait_stopped(name).await;
        Ok(())
    }

    /// Stops every app (or none, with `keep_apps`) and refuses further work. Returns how many
    /// instances were stopped and how many were left running.
    pub async fn shutdown(&self, keep_apps: bool, timeout: Option<Duration>) -> (u32, u32) {
        let (jobs, left) = {
            let mut t = self.lock();
            t.closing = true;
            if keep_apps {
                let left = t
                    .apps
                    .values()
                    .flat_map(|a| &a.instances)
                    .filter(|i| i.status.has_process())
                    .count();
                (Vec::new(), left as u32)
            } else {
                let mut jobs = Vec::new();
                // Only live processes: a crashed or backing-off instance keeps its status
                // for the next `herd up` (closing already holds back pending starts).
                for app in t.apps.values_mut() {
                    for pos in 0..app.instances.len() {
                        if app.instances[pos].status.has_process() {
                            jobs.extend(self.begin_stop(app, pos, timeout));
                        }
                    }
                }
                (jobs, 0)
            }
        };
        let stopped = jobs.len() as u32;
        info!(
            stopping = stopped,
            left_running = left,
            "supervisor shutting down"
        );
        self.notify();
        self.run_stop_jobs(jobs);
        self.wait_until(|t| {
            t.apps
                .values()
                .all(|a| a.instances.iter().all(|i| i.status != Status::Stopping))
        })
        .await;
        (stopped, left)
    }

    // ----- transitions (called with the table locked) -----

    fn spawn_instance(&self, app: &mut App, pos: usize) {
        let spec = &app.spec;
        let inst = &mut app.instances[pos];
        let log = self.log_path(&spec.name, inst.index);
        inst.generation += 1;
        inst.next_start_ms = None;
        let now = now_ms();
        inst.started_at_ms = Some(now);
        match process::spawn(spec, inst.index, &log) {
            Ok(child) => {
                let pid = child.id();
                inst.pid = pid;
                inst.signature = pid.and_then(process::start_signature);
                inst.status = Status::Running;
                info!(app = %spec.name, instance = inst.index, pid, restarts = inst.restarts, "started");
                self.watch_child(spec.name.clone(), inst.index, inst.generation, child);
            }
            Err(e) => {
                let reason = format!("spawn failed: cannot run `{}`: {e}", spec.command);
                warn!(app = %spec.name, instance = inst.index, error = %e, "spawn failed");
                process::note_in_log(&log, &reason);
                inst.pid = None;
                inst.signature = None;
                let exit = ExitRecord {
                    at_ms: now,
                    code: None,
                    signal: None,
                    reason,
                };
                self.after_exit(app, pos, exit);
            }
        }
    }

    fn watch_child(
        &self,
        name: String,
        index: u32,
        generation: u64,
        mut child: tokio::process::Child,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => {
                    let (code, signal) = process::describe_exit(status);
                    ExitRecord {
                        at_ms: now_ms(),
                        code,
                        signal,
                        reason: "exited".into(),
                    }
                }
                Err(e) => ExitRecord {
                    at_ms: now_ms(),
                    code: None,
                    signal: None,
                    reason: format!("lost track of the process: {e}"),
                },
            };
            me.on_exit(&name, index, generation, exit);
        });
    }

    /// Watches a process adopted from a previous daemon (not our child: no exit status).
    fn watch_adopted(&self, name: String, index: u32, generation: u64, pid: u32) {
        let me = self.clone();
        tokio::spawn(async move {
            let reason = match process::wait_foreign(pid).await {
                Ok(()) => "exited (adopted process: exit status unknown)".to_string(),
                Err(e) => format!("exited (adopted process, could not watch it: {e})"),
            };
            me.on_exit(
                &name,
                index,
                generation,
                ExitRecord {
                    at_ms: now_ms(),
                    code: None,
                    signal: None,
                    reason,
                },
            );
        });
    }

    fn on_exit(&self, name: &str, index: u32, generation: u64, mut exit: ExitRecord) {
        {
            let mut t = self.lock();
            let closing = t.closing;
            let Some(app) = t.apps.get_mut(name) else {
                return;
            };
            let Some(pos) = app.position(index) else {
                return;
            };
            let inst = &mut app.instances[pos];
            if inst.generation != generation {
                return;
            }
            let pgid = inst.pid.take();
            inst.signature = None;
            if inst.status == Status::Stopping {
                exit.reason = "stopped".into();
                inst.record_exit(exit);
                if pgid.is_none_or(|g| !process::group_alive(g)) {
                    inst.status = Status::Stopped;
                    info!(app = %name, instance = index, "stopped");
                }
            } else {
                info!(app = %name, instance = index, code = exit.code, signal = exit.signal.as_deref(), reason = %exit.reason, "exited");
                // What the leader left behind in its group must not keep ports or files.
                if let Some(g) = pgid {
                    let _ = process::signal_group(g, Signal::SIGKILL);
                }
                if closing {
                    inst.record_exit(exit);
                    inst.status = Status::Stopped;
                } else {
                    self.after_exit(app, pos, exit);
                }
            }
        }
        self.notify();
    }

    /// Applies the restart policy to an exit (or a failed spawn).
    fn after_exit(&self, app: &mut App, pos: usize, exit: ExitRecord) {
        let now = now_ms();
        let failed = exit.failed();
        let inst = &mut app.instances[pos];
        inst.record_exit(exit);
        let name = &app.spec.name;
        match decide_after_exit(&app.spec, inst, failed, now) {
            AfterExit::Stop => {
                inst.status = Status::Stopped;
                info!(app = %name, instance = inst.index, "stopped by policy");
            }
            AfterExit::Crash => {
                inst.status = Status::Crashed;
                warn!(app = %name, instance = inst.index, restarts = inst.restarts, window_s = app.spec.restart_window_s, "crashed: too many restarts; `herd restart` clears it");
            }
            AfterExit::Restart(delay) => {
                inst.status = Status::Backoff;
                inst.next_start_ms = Some(now + delay.as_millis() as u64);
                info!(app = %name, instance = inst.index, delay_ms = delay.as_millis() as u64, restart = inst.restarts, "restarting after delay");
                self.schedule_start(name.clone(), inst.index, inst.generation, delay);
            }
        }
    }

    fn schedule_start(&self, name: String, index: u32, generation: u64, delay: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            me.backoff_elapsed(&name, index, generation);
        });
    }

    fn backoff_elapsed(&self, name: &str, index: u32, generation: u64) {
        {
            let mut t = self.lock();
            if t.closing {
                return;
            }
            let Some(app) = t.apps.get_mut(name) else {
                return;
            };
            let Some(pos) = app.position(index) else {
                return;
            };
            let inst = &app.instances[pos];
            if inst.generation != generation || inst.status != Status::Backoff {
                return;
            }
            self.spawn_instance(app, pos);
        }
        self.notify();
    }

    fn begin_stop(&self, app: &mut App, pos: usize, timeout: Option<Duration>) -> Option<StopJob> {
        let timeout = timeout.unwrap_or(app.spec.stop_timeout());
        let signal = app.spec.signal();
        let inst = &mut app.instances[pos];
        match (inst.status, inst.pid) {
            (Status::Running | Status::Starting, Some(pid)) => {
                inst.status = Status::Stopping;
                info!(app = %app.spec.name, instance = inst.index, pid, signal = signal.as_str(), "stopping");
                if let Err(e) = process::signal_group(pid, signal) {
                    warn!(app = %app.spec.name, instance = inst.index, pid, error = %e, "stop signal failed");
                }
                Some(StopJob {
                    name: app.spec.name.clone(),
                    index: inst.index,
                    generation: inst.generation,
                    pgid: pid,
                    timeout,
                })
            }
            (Status::Stopping, _) => None,
            _ => {
                // Backoff, crashed or already stopped: cancel any pending start.
                inst.generation += 1;
                inst.next_start_ms = None;
                inst.pid = None;
                inst.status = Status::Stopped;
                None
            }
        }
    }

    fn run_stop_jobs(&self, jobs: Vec<StopJob>) {
        for job in jobs {
            let me = self.clone();
            tokio::spawn(async move { me.finish_stop(job).await });
        }
    }

    /// Polls (2 ms, doubling to 50 ms) until the group is empty; SIGKILLs it at the deadline.
    async fn finish_stop(&self, job: StopJob) {
        let start = tokio::time::Instant::now();
        let kill_at = start + job.timeout;
        let mut killed = false;
        let mut poll = Duration::from_millis(2);
        loop {
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(50));
            {
                let mut t = self.lock();
                let Some(app) = t.apps.get_mut(&job.name) else {
                    return;
                };
                let Some(pos) = app.position(job.index) else {
                    return;
                };
                let inst = &mut app.instances[pos];
                if inst.generation != job.generation || inst.status != Status::Stopping {
                    return;
                }
                let leader_gone = inst.pid.is_none();
                let give_up =
                    killed && tokio::time::Instant::now() >= kill_at + Duration::from_secs(10);
                if (leader_gone && !process::group_alive(job.pgid)) || give_up {
                    if give_up {
                        warn!(app = %job.name, instance = job.index, pgid = job.pgid, "processes survive SIGKILL (uninterruptible?); marking stopped");
                        inst.pid = None;
                    }
                    inst.status = Status::Stopped;
                    info!(app = %job.name, instance = job.index, "stopped");
                    drop(t);
                    self.notify();
                    return;
                }
            }
            if !killed && tokio::time::Instant::now() >= kill_at {
                warn!(app = %job.name, instance = job.index, pgid = job.pgid, timeout_s = job.timeout.as_secs(), "stop timeout: SIGKILL to the process group");
                let _ = process::signal_group(job.pgid, Signal::SIGKILL);
                killed = true;
            }
        }
    }

    // ----- recovery -----

    /// Loads a persisted table: adopts instances whose process still runs (same pid and start
    /// signature), applies the restart policy to those that died while the daemon was away,
    /// and starts what is meant to run.
    pub fn restore(&self, snapshot: Snapshot) {
        {
            let mut t = self.lock();
            for mut app in snapshot.apps {
                let name = app.spec.name.clone();
                let mut jobs = Vec::new();
                for pos in 0..app.instances.len() {
                    let inst = &mut app.instances[pos];
                    inst.generation = 1;
                    let alive = match (inst.pid, inst.signature) {
                        (Some(pid), Some(sig)) if inst.status.has_process() => {
                            process::is_same_process(pid, sig)
                        }
                        _ => false,
                    };
                    if alive {
                        let pid = inst.pid.unwrap_or_default();
                        info!(app = %name, instance = inst.index, pid, "adopted running instance");
                        inst.status = Status::Running;
                        self.watch_adopted(name.clone(), inst.index, inst.generation, pid);
                        if app.desired == Desired::Stopped || inst.index >= app.spec.instances {
                            jobs.extend(self.begin_stop(&mut app, pos, None));
                        }
                        continue;
                    }
                    let was = inst.status;
                    inst.pid = None;
                    inst.signature = None;
                    if app.desired == Desired::Stopped || inst.index >= app.spec.instances {
                        inst.status = if was == Status::Crashed {
                            was
                        } else {
                            Status::Stopped
                        };
                        continue;
                    }
                    match was {
                        Status::Running | Status::Starting => {
                            info!(app = %name, instance = inst.index, "instance died while the daemon was down");
                            let exit = ExitRecord {
                                at_ms: now_ms(),
                                code: None,
                                signal: None,
                                reason: "died while the daemon was down".into(),
                            };
                            self.after_exit(&mut app, pos, exit);
                        }
                        Status::Backoff => {
                            let delay = inst
                                .next_start_ms
                                .map(|t| t.saturating_sub(now_ms()))
                                .unwrap_or(0);
                            self.schedule_start(
                                name.clone(),
                                inst.index,
                                inst.generation,
                                Duration::from_millis(delay),
                            );
                        }
                        Status::Stopping | Status::Stopped => {
                            inst.reset_history();
                            self.spawn_instance(&mut app, pos);
                        }
                        Status::Crashed => {}
                    }
                }
                // Instances the spec asks for that were never created.
                let missing: Vec<u32> = (0..app.spec.instances)
                    .filter(|i| app.position(*i).is_none())
                    .collect();
                for index in missing {
                    app.instances.push(Instance::new(index));
                    if app.desired == Desired::Running {
                        let pos = app.instances.len() - 1;
                        self.spawn_instance(&mut app, pos);
                    }
                }
                app.instances.sort_by_key(|i| i.index);
                t.apps.insert(name, app);
                self.run_stop_jobs(jobs);
            }
        }
        self.notify();
    }
}
