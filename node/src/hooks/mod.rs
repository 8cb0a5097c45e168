//! Hooks: tell the outside world when something happens. Each `[[hook]]` of `config.toml`
//! (`spec`) names event kinds and a webhook or a program. `EventLog::emit` hands every event
//! to a bounded channel without waiting (`feed_hooks`); one dispatcher task matches it
//! against the hooks and writes one delivery per matching hook to disk (`queue`) before it
//! counts as queued; one worker per hook (`worker`) sends them (`delivery`) with retries and
//! moves those that keep failing to the dead letters. `service` serves `herd hooks`.
//!
//! Nothing here can hold up the supervisor: emitting never blocks, disk work runs on blocking
//! threads, and a slow hook delays only its own queue. A reload applies hook changes: new
//! hooks start, removed ones stop (their pending files stay for when they come back).

pub mod delivery;
pub mod queue;
pub mod service;
pub mod spec;
pub mod worker;

use crate::config::DaemonConfig;
use crate::supervisor::events::{Event, EventLog};
use queue::{Delivery, Ids, Store};
use serde_json::{Value, json};
use spec::HookSpec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};
use worker::Stats;

/// Events waiting for the dispatcher; past it `emit` drops them for hooks (counted, logged).
const EVENT_BUFFER: usize = 8192;
/// Log lines attached to an exit, and the most bytes kept of each.
const LOG_LINES: usize = 20;
const MAX_LINE: usize = 1024;
/// The events that get the instance's last log lines.
const EXIT_KINDS: &[&str] = &[
    "exited",
    "crashed",
    "killed",
    "died_while_down",
    "unhealthy_restart",
    "memory_limit",
    "watchdog",
];

/// The hooks of a running daemon.
#[derive(Clone)]
pub struct HookRunner {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ids: Ids,
    node: String,
    logs_dir: PathBuf,
    events: EventLog,
    hooks: Mutex<BTreeMap<String, Running>>,
}

/// A configured hook and its worker.
struct Running {
    spec: watch::Sender<HookSpec>,
    filter: Option<globset::GlobSet>,
    queued: mpsc::UnboundedSender<String>,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HookRunner {
    /// Starts the dispatcher and one worker per configured hook, and follows reloads. Call
    /// before anything emits events (inside the runtime).
    pub fn start(
        home: &Path,
        logs_dir: PathBuf,
        events: &EventLog,
        mut config: watch::Receiver<DaemonConfig>,
    ) -> Self {
        let store = Store::new(home);
        if let Err(e) = store.ensure() {
            error!(error = %e, "cannot prepare the hooks' queue directory; deliveries will fail to queue");
        }
        let runner = Self {
            inner: Arc::new(Inner {
                store,
                ids: Ids::new(),
                node: hostname(),
                logs_dir,
                events: events.clone(),
                hooks: Mutex::new(BTreeMap::new()),
            }),
        };
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        events.feed_hooks(tx);
        runner.sync(&config.borrow_and_update().hooks);
        tokio::spawn(runner.clone().dispatch(rx));
        let follow = runner.clone();
        tokio::spawn(async move {
            while config.changed().await.is_ok() {
                let hooks = config.borrow_and_update().hooks.clone();
                follow.sync(&hooks);
            }
        });
        runner
    }

    /// Makes the running hooks those of `specs` (already validated).
    fn sync(&self, specs: &[HookSpec]) {
        let mut hooks = self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner());
        let before = hooks.len();
        hooks.retain(|name, _| {
            let keep = specs.iter().any(|s| &s.name == name);
            if !keep {
                info!(hook = %name, "hook removed; its pending deliveries stay on disk");
            }
            keep
        });
        for spec in specs {
            let filter = spec.app_filter().unwrap_or_else(|e| {
                warn!(hook = %spec.name, error = %e, "hook filter does not compile; matching no app");
                Some(globset::GlobSet::empty())
            });
            match hooks.get_mut(&spec.name) {
                Some(r) => {
                    if *r.spec.borrow() != *spec {
                        info!(hook = %spec.name, "hook changed");
                        r.spec.send_replace(spec.clone());
                        r.filter = filter;
                    }
                }
                None => {
                    let (spec_tx, spec_rx) = watch::channel(spec.clone());
                    let (queued, queued_rx) = mpsc::unbounded_channel();
                    let stats = Arc::new(Stats::default());
                    let task = tokio::spawn(worker::run(
                        self.inner.store.clone(),
                        spec_rx,
                        queued_rx,
                        stats.clone(),
                        self.inner.node.clone(),
                    ));
                    if before > 0 {
                        info!(hook = %spec.name, "hook added");
                    }
                    hooks.insert(
                        spec.name.clone(),
                        Running {
                            spec: spec_tx,
                            filter,
                            queued,
                            stats,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// Turns events into deliveries on disk, in the order they were emitted.
    async fn dispatch(self, mut rx: mpsc::Receiver<Event>) {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            let events: Vec<(Event, Vec<Target>)> = batch
                .drain(..)
                .filter_map(|e| {
                    let targets = self.matching(&e);
                    (!targets.is_empty()).then_some((e, targets))
                })
                .collect();
            if events.is_empty() {
                continue;
            }
            let me = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || me.enqueue(events)).await {
                error!(error = %e, "hooks: the queueing task failed");
            }
        }
    }

    /// The hooks that take `e`.
    fn matching(&self, e: &Event) -> Vec<Target> {
        let hooks = self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks
            .iter()
            .filter(|(_, r)| {
                let spec = r.spec.borrow();
                spec.on.contains(&e.event)
                    && (e.app == "-" || r.filter.as_ref().is_none_or(|f| f.is_match(&e.app)))
            })
            .map(|(name, r)| Target {
                hook: name.clone(),
                queued: r.queued.clone(),
                stats: r.stats.clone(),
            })
            .collect()
    }

    /// Blocking: writes each event's deliveries, then tells the workers.
    fn enqueue(&self, events: Vec<(Event, Vec<Target>)>) {
        let inner = &self.inner;
        for (e, targets) in events {
            let payload = payload(&e, &inner.node, &inner.logs_dir);
            for t in targets {
                let mut p = payload.clone();
                let id = inner.ids.next();
                if let Value::Object(m) = &mut p {
                    m.insert("hook".into(), json!(t.hook));
                    m.insert("delivery".into(), json!(id));
                }
                let mut d = Delivery {
                    id: id.clone(),
                    hook: t.hook.clone(),
                    event: e.event.clone(),
                    app: e.app.clone(),
                    instance: e.instance,
                    created_ms: crate::supervisor::now_ms(),
                    attempts: 0,
                    last_error: None,
                    dead_ms: None,
                    payload: p,
                };
                if t.stats.pending.load(Ordering::Relaxed) >= queue::MAX_PENDING as u64 {
                    d.last_error = Some("queue full".into());
                    d.dead_ms = Some(d.created_ms);
                    warn!(hook = %t.hook, delivery = %id, event = %e.event, app = %e.app, pending = queue::MAX_PENDING, "hook: queue full; the delivery goes to the dead letters");
                    match inner.store.bury(&d, false) {
                        Ok(()) => {
                            t.stats.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            error!(hook = %t.hook, delivery = %id, error = %err, "hook: cannot write the dead letter; the delivery is lost")
                        }
                    }
                    continue;
                }
                match inner.store.enqueue(&d) {
                    Ok(()) => {
                        t.stats.pending.fetch_add(1, Ordering::Relaxed);
                        let _ = t.queued.send(id);
                    }
                    Err(err) => {
                        error!(hook = %t.hook, delivery = %id, event = %e.event, app = %e.app, error = %err, "hook: cannot queue the delivery on disk; it is lost")
                    }
                }
            }
        }
    }

    /// `herd hooks`: each hook with its counters.
    pub fn list(&self) -> Value {
        let dead = self.inner.store.dead();
        let hooks = self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner());
        let rows: Vec<Value> = hooks
            .iter()
            .map(|(name, r)| {
                let spec = r.spec.borrow();
                let s = &r.stats;
                json!({
                    "name": name,
                    "target": describe_target(&spec),
                    "on": spec.on,
                    "apps": spec.apps,
                    "delivered": s.delivered.load(Ordering::Relaxed),
                    "failed": s.failed.load(Ordering::Relaxed),
                    "failed_attempts": s.failed_attempts.load(Ordering::Relaxed),
                    "pending": s.pending.load(Ordering::Relaxed),
                    "dead": dead.iter().filter(|d| &d.hook == name).count(),
                    "last_error": *s.last_error.lock().unwrap_or_else(|p| p.into_inner()),
                    "last_delivered_ms": match s.last_delivered_ms.load(Ordering::Relaxed) {
                        0 => Value::Null,
                        ms => json!(ms),
                    },
                })
            })
            .collect();
        json!({ "hooks": rows, "dropped_events": self.inner.events.hooks_dropped() })
    }

    /// `herd hooks dead`: the dead letters, oldest first (without their payloads).
    pub fn dead(&self) -> Value {
        let rows: Vec<Value> = self
            .inner
            .store
            .dead()
            .into_iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "hook": d.hook,
                    "event": d.event,
                    "app": d.app,
                    "instance": d.instance,
                    "created_ms": d.created_ms,
                    "dead_ms": d.dead_ms,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                })
            })
            .collect();
        json!({ "dead": rows })
    }

    /// `herd hooks replay ID|--all`: dead letters back into their hooks' queues.
    pub fn replay(&self, id: Option<&str>) -> Result<Value, ReplayError> {
        let single = id.is_some();
        let ids: Vec<(String, String)> = match id {
            Some(id) => {
                let found = queue::valid_id(id)
                    .then(|| self.inner.store.dead().into_iter().find(|d| d.id == id))
                    .flatten()
                    .ok_or_else(|| ReplayError::NotFound(id.to_string()))?;
                vec![(found.id, found.hook)]
            }
            None => self
                .inner
                .store
                .dead()
                .into_iter()
                .map(|d| (d.id, d.hook))
                .collect(),
        };
        let mut replayed = Vec::new();
        let mut skipped = Vec::new();
        for (id, hook) in ids {
            let target = {
                let hooks = self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner());
                hooks
                    .get(&hook)
                    .map(|r| (r.queued.clone(), r.stats.clone()))
            };
            let Some((queued, stats)) = target else {
                let why = format!("hook `{hook}` is not configured any more");
                if single {
                    return Err(ReplayError::NoHook(format!(
                        "dead letter {id}: {why}; add it back to config.toml and `herd reload-config`"
                    )));
                }
                skipped.push(json!({ "id": id, "reason": why }));
                continue;
            };
            match self.inner.store.revive(&id) {
                Ok(_) => {
                    info!(hook = %hook, delivery = %id, "hook: dead letter replayed");
                    stats.pending.fetch_add(1, Ordering::Relaxed);
                    let _ = queued.send(id.clone());
                    replayed.push(json!(id));
                }
                Err(e) => skipped.push(json!({ "id": id, "reason": e.to_string() })),
            }
        }
        Ok(json!({ "replayed": replayed, "skipped": skipped }))
    }
}

#[derive(Debug)]
pub enum ReplayError {
    NotFound(String),
    NoHook(String),
}

/// A hook an event goes to, as the dispatcher needs it.
struct Target {
    hook: String,
    queued: mpsc::UnboundedSender<String>,
    stats: Arc<Stats>,
}

/// `webhook https://host/path` (no query: it may hold a token) or `exec PROGRAM`.
fn describe_target(spec: &HookSpec) -> String {
    match (&spec.webhook, &spec.exec) {
        (Some(url), _) => {
            let shown = url.split(['?', '#']).next().unwrap_or(url);
            format!("webhook {shown}")
        }
        (_, Some(argv)) => format!("exec {}", argv.first().map_or("", String::as_str)),
        _ => "-".into(),
    }
}

/// What a hook receives: the event's fields, the host that reports it (`host`, and `node`
/// unless the event names a node of its own), and for an exit of an instance the last lines
/// of its log.
fn payload(e: &Event, node: &str, logs_dir: &Path) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        // `node_offline`, `drain`, ... name the node they are about in `node`: kept as is.
        m.insert("host".into(), json!(node));
        m.entry("node").or_insert_with(|| json!(node));
        if let Some(index) = e.instance
            && EXIT_KINDS.contains(&e.event.as_str())
        {
            m.insert("logs".into(), json!(last_lines(logs_dir, &e.app, index)));
        }
        // A job run's end: the last lines of that run's own log (`JOB~RUN`).
        if e.event == "job_finished"
            && let Some(run) = e.fields.get("run").and_then(Value::as_u64)
        {
            let app = crate::jobs::state::app_name(&e.app, run);
            m.insert("logs".into(), json!(last_lines(logs_dir, &app, 0)));
        }
    }
    v
}

fn last_lines(logs_dir: &Path, app: &str, index: u32) -> Vec<String> {
    let path = crate::supervisor::logs::log_path(logs_dir, app, index);
    let Ok((bytes, _)) = crate::supervisor::logs::tail(&path, LOG_LINES, 2) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .rev()
        .take(LOG_LINES)
        .map(|l| {
            let mut end = l.len().min(MAX_LINE);
            while !l.is_char_boundary(end) {
                end -= 1;
            }
            l[..end].to_string()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, instance: Option<u32>) -> Event {
        Event {
            seq: 7,
            ts_ms: 8,
            event: kind.into(),
            app: "api".into(),
            instance,
            pid: Some(9),
            fields: json!({ "code": 3 }).as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn an_exit_carries_the_last_20_log_lines_each_cut_at_1_kib() {
        let logs = tempfile::tempdir().unwrap();
        let mut text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        text.push_str(&format!("{}\n", "é".repeat(1000)));
        std::fs::write(
            crate::supervisor::logs::log_path(logs.path(), "api", 0),
            text,
        )
        .unwrap();
        let p = payload(&event("exited", Some(0)), "host-a", logs.path());
        assert_eq!(
            (p["event"].as_str(), p["node"].as_str(), p["code"].as_i64()),
            (Some("exited"), Some("host-a"), Some(3))
        );
        let lines = p["logs"].as_array().unwrap();
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[0], "line 11");
        let last = lines[19].as_str().unwrap();
        assert!(
            last.len() <= MAX_LINE && last.starts_with('é'),
            "{}",
            last.len()
        );
        assert_eq!(p["host"], "host-a");
        // An event about a node keeps its `node`.
        let mut offline = event("node_offline", None);
        offline.fields.insert("node".into(), json!(3));
        let p = payload(&offline, "host-a", logs.path());
        assert_eq!(
            (p["node"].as_u64(), p["host"].as_str()),
            (Some(3), Some("host-a"))
        );
        // Not an exit, or not an instance: no logs.
        assert!(payload(&event("started", Some(0)), "h", logs.path())["logs"].is_null());
        assert!(payload(&event("exited", None), "h", logs.path())["logs"].is_null());
    }

    #[test]
    fn a_webhook_is_shown_without_its_query() {
        let t: toml::Table = toml::from_str(
            "name = \"p\"\non = [\"exited\"]\nwebhook = \"https://h.example/x?token=secret\"\n",
        )
        .unwrap();
        let spec: HookSpec = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(describe_target(&spec), "webhook https://h.example/x");
    }
}
