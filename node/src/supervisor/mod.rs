//! The local supervisor: apps → instances → processes. One table behind one mutex holds
//! every app and instance. An instance changes only through its state machine
//! (`machine::step`), applied by the runtime (`runtime.rs`) under the lock; each step's facts
//! are traced and recorded as events, and the version counter that wakes the state writer and
//! anyone waiting for a condition is bumped. What a step asks of the world — fork/exec,
//! signals, timers, watchers — is performed after the lock is released (debug builds check
//! it). Processes are watched by one small task each (tokio's pidfd-based wait, or a pidfd
//! for processes adopted after a daemon restart); timers and probes carry a spawn_id
//! number, so nothing meant for an older process touches a newer one.
#![deny(clippy::disallowed_methods)]

pub mod adoption;
pub mod app_env;
pub mod backoff;
pub mod cgroup;
pub mod clock;
mod cron;
pub mod deps;
pub mod events;
pub mod facts;
pub mod file_watch;
mod group_stop;
mod health;
pub mod identity;
pub mod instance;
pub mod lease;
pub mod limits;
pub mod logs;
pub mod machine;
pub mod managed;
pub mod marker;
pub mod metrics;
pub mod notify;
pub mod probe_spec;
pub mod process;
mod recovery;
mod reload;
mod requests;
pub mod rotation;
mod runtime;
pub mod secret_env;
mod snapshot;
mod sockets;
pub mod spec;
#[cfg(test)]
mod testing;
mod vfork;
mod watchers;

use events::EventLog;
use instance::{Instance, Status};
use metrics::HostMetrics;
use serde::{Deserialize, Serialize};
pub use snapshot::validate_snapshot;
use spec::AppSpec;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

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

/// Who asked for an app: a user of this host (`herd start`), the cluster agent (an
/// instance the master assigned to this node), or the jobs module (one run of a job). Each
/// only ever touches its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Local,
    Cluster,
    /// One run of a job (`crate::jobs`): an instance that runs once and is never started
    /// again by the supervisor, not even when a daemon comes back (the jobs module decides).
    Job,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    pub spec: AppSpec,
    pub desired: Desired,
    /// Sorted by index.
    pub instances: Vec<Instance>,
    #[serde(default)]
    pub origin: Origin,
    /// `herd watch NAME off`: the `watch` keys stay but nothing is watched. Kept in
    /// `state.json`, so the choice survives a daemon restart; a changed app file resets it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub watch_off: bool,
}

impl App {
    fn new(spec: AppSpec, origin: Origin) -> Self {
        let instances = (0..spec.instances).map(Instance::new).collect();
        Self {
            spec,
            desired: Desired::Running,
            instances,
            origin,
            watch_off: false,
        }
    }

    /// The app has `watch` keys and they are not turned off (`herd watch NAME off`).
    pub fn is_watching(&self) -> bool {
        !self.spec.watch.is_empty() && !self.watch_off
    }

    /// A cluster instance that must never run on two nodes (`on_disconnect = "stop"`): it
    /// runs only under the master's lease (see `lease`).
    fn is_singleton(&self) -> bool {
        self.origin == Origin::Cluster && self.spec.on_disconnect == Some(spec::OnDisconnect::Stop)
    }

    fn position(&self, index: u32) -> Option<usize> {
        self.instances.iter().position(|i| i.index == index)
    }

    /// Every wanted instance runs (and, with a probe, is healthy): dependents may start.
    fn is_ready(&self) -> bool {
        self.desired == Desired::Running
            && self
                .instances
                .iter()
                .filter(|i| i.index < self.spec.instances)
                .all(|i| i.status == Status::Running)
    }
}

/// The persisted form of the whole table (`state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// The boot the file was written in (`clock::boot_id`): the boot-clock times in it
    /// (uptime, crash window, backoff) are dropped when it is not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    pub apps: Vec<App>,
}

/// The `version` this herd writes; a `state.json` with a higher one is refused.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("app `{0}` not found; `herd ps` lists apps")]
    UnknownApp(String),
    #[error("the daemon is shutting down; start it again with `herd up`")]
    ShuttingDown,
    #[error("{0}")]
    Invalid(String),
    #[error("reload of `{app}` aborted: {why}; the old instances keep serving")]
    ReloadAborted { app: String, why: String },
}

type Result<T> = std::result::Result<T, SupervisorError>;

/// A count of the supervisor's table at one moment (see `Supervisor::census`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub apps: usize,
    /// Instances in `running`.
    pub running: usize,
    /// `herd down` or a stop signal has begun the shutdown.
    pub closing: bool,
}

struct Table {
    apps: BTreeMap<String, App>,
    /// Set by shutdown: exits are no longer restarted.
    closing: bool,
}

struct Shared {
    table: Mutex<Table>,
    changed: watch::Sender<u64>,
    logs_dir: PathBuf,
    /// `$HERD_HOME`, given to every instance (it identifies herd's processes after a crash).
    home: PathBuf,
    /// The home's secret, given to every instance: the proof a process is ours (see `marker`).
    marker: marker::Marker,
    /// The daemon's effective uid: a process of any other uid is never taken for an instance.
    uid: u32,
    events: EventLog,
    host: Mutex<Option<HostMetrics>>,
    sockets: sockets::Sockets,
    /// One sd_notify socket per slot of an app with `ready = "notify"`.
    notify: notify::Sockets,
    lease: lease::Lease,
    /// Where secret references in an app's env are opened at spawn (set once by the daemon).
    secrets: std::sync::OnceLock<Arc<dyn secret_env::SecretSource>>,
    /// Spawns, signals and watches processes (`RealOs`, or a fake in tests).
    os: Arc<dyn process::Os>,
}

thread_local! {
    /// This thread holds the table lock: fork/exec and killpg must wait (see `RealOs`).
    static TABLE_HELD: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread holds the table lock.
pub(crate) fn table_held() -> bool {
    TABLE_HELD.with(|h| h.get())
}

/// The locked table; notes on its thread that the lock is held.
struct TableGuard<'a>(MutexGuard<'a, Table>);

impl std::ops::Deref for TableGuard<'_> {
    type Target = Table;
    fn deref(&self) -> &Table {
        &self.0
    }
}

impl std::ops::DerefMut for TableGuard<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.0
    }
}

impl Drop for TableGuard<'_> {
    fn drop(&mut self) {
        TABLE_HELD.with(|h| h.set(false));
    }
}

#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

pub use clock::now_ms;

/// A fresh spawn_id number, unique across all instances of this daemon.
fn next_spawn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Supervisor {
    pub fn new(logs_dir: PathBuf, home: PathBuf, events: EventLog, marker: marker::Marker) -> Self {
        Self::with_os(
            logs_dir,
            home,
            events,
            marker,
            Arc::new(process::RealOs::new()),
        )
    }

    fn with_os(
        logs_dir: PathBuf,
        home: PathBuf,
        events: EventLog,
        marker: marker::Marker,
        os: Arc<dyn process::Os>,
    ) -> Self {
        let table = Table {
            apps: BTreeMap::new(),
            closing: false,
        };
        let (changed, _) = watch::channel(0);
        let uid = rustix::process::geteuid().as_raw();
        let notify = notify::Sockets::new(&home, uid);
        let shared = Shared {
            table: Mutex::new(table),
            changed,
            logs_dir,
            home,
            notify,
            marker,
            uid,
            events,
            host: Mutex::new(None),
            sockets: sockets::Sockets::default(),
            lease: lease::Lease::default(),
            secrets: std::sync::OnceLock::new(),
            os,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    fn lock(&self) -> TableGuard<'_> {
        // A panic elsewhere must not take the whole supervisor down with a poisoned lock.
        let guard = self.shared.table.lock().unwrap_or_else(|p| p.into_inner());
        TABLE_HELD.with(|h| h.set(true));
        TableGuard(guard)
    }

    fn notify(&self) {
        self.shared.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records an app-level fact (no instance).
    fn record(&self, app: &str, fact: facts::Fact) {
        fact.record(&self.shared.events, app, None, None);
    }

    /// Gives the supervisor the store that `secret:` env values are opened from.
    pub fn set_secrets(&self, source: Arc<dyn secret_env::SecretSource>) {
        let _ = self.shared.secrets.set(source);
    }

    pub fn events(&self) -> &EventLog {
        &self.shared.events
    }

    /// Wakes on every transition.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    pub fn log_path(&self, app: &str, index: u32) -> PathBuf {
        logs::log_path(&self.shared.logs_dir, app, index)
    }

    /// At a clean `down`, once every instance has stopped: the per-home directories herd keeps
    /// outside the home (notify sockets under `/run/herd`, the cgroup subtree) go where empty.
    pub fn release_host_dirs(&self) {
        self.shared.notify.release();
        cgroup::release();
    }

    /// The cgroup directories of the instance whose group `pgid` leads (none without
    /// cgroups). Reads the OS: call it without the table lock.
    pub fn cgroup_paths(&self, pgid: u32) -> Vec<String> {
        self.shared.os.cgroup_paths(pgid)
    }

    pub fn snapshot(&self) -> Snapshot {
        let t = self.lock();
        Snapshot {
            version: SNAPSHOT_VERSION,
            boot_id: clock::boot_id().map(str::to_string),
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

    /// How many apps and instances there are, how many instances run, and whether the
    /// supervisor is shutting down: what the daemon reports to systemd. Takes the table lock,
    /// so a caller that gets an answer has proof the supervisor is not wedged.
    pub fn census(&self) -> Census {
        let t = self.lock();
        let instances = t.apps.values().flat_map(|a| &a.instances);
        Census {
            apps: t.apps.len(),
            running: instances
                .filter(|i| i.status == instance::Status::Running)
                .count(),
            closing: t.closing,
        }
    }

    /// Whether the supervisor is shutting down (what `census` says, without counting).
    pub fn closing(&self) -> bool {
        self.lock().closing
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

    pub fn host_metrics(&self) -> Option<HostMetrics> {
        *self.shared.host.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The dependency tree below `name`.
    pub fn graph(&self, name: &str) -> Result<deps::Node> {
        let t = self.lock();
        if !t.apps.contains_key(name) {
            return Err(SupervisorError::UnknownApp(name.into()));
        }
        let edges = t
            .apps
            .iter()
            .map(|(n, a)| (n.clone(), a.spec.depends_on.clone()))
            .collect();
        Ok(deps::tree(name, &edges))
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
}
