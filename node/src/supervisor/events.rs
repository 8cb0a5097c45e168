//! Lifecycle facts (started, exited, restarting, crashed, health changed, memory limit hit,
//! reload steps, ...): one JSON object per line in `$HERD_HOME/events.jsonl`, rotated like
//! logs, and broadcast live to `herd events --follow`. Emitting never blocks a transition:
//! events go through a channel to one writer task. The file is opened like an instance log
//! (`logs::open_append`: 0600, never through a symlink).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Increases with every event of this daemon (and across daemons: seeded from the clock).
    pub seq: u64,
    pub ts_ms: u64,
    /// What happened: `started`, `exited`, `restarting`, `crashed`, `stopped`, `health`, ...
    pub event: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The fact's own fields (`code`, `signal`, `delay_ms`, `from`, `to`, ...).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::UnboundedSender<Event>,
    live: broadcast::Sender<Event>,
    seq: std::sync::Arc<AtomicU64>,
    path: PathBuf,
    /// Events emitted since the daemon started, by kind (for `/metrics`).
    kinds: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    /// The hooks' own channel (`hooks::HookRunner`), set once at start: unlike the broadcast,
    /// it never drops an event for being slow to read, only when full (counted and logged).
    hooks: std::sync::Arc<std::sync::OnceLock<HookFeed>>,
}

struct HookFeed {
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

/// Most kinds counted apart; kinds past it are counted as `other` (kinds come from herd's own
/// code, so this only guards against a mistake).
const MAX_KINDS: usize = 256;

impl EventLog {
    /// The log and the task that writes it (spawn it on the runtime).
    pub fn new(path: PathBuf, max_bytes: u64, files: u32) -> (Self, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (live, _) = broadcast::channel(1024);
        // Microseconds since the epoch: later daemons continue above earlier ones.
        let seed = crate::supervisor::clock::now_us();
        let log = Self {
            tx,
            live,
            seq: std::sync::Arc::new(AtomicU64::new(seed)),
            path: path.clone(),
            kinds: Default::default(),
            hooks: Default::default(),
        };
        (log, write_events(rx, path, max_bytes, files))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn emit(
        &self,
        app: &str,
        instance: Option<u32>,
        pid: Option<u32>,
        event: &str,
        fields: Value,
    ) {
        let mut fields = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        // Caused by a call: say whose (`by`, see `access::caller`).
        if let Some(caller) = crate::access::caller::current() {
            caller.stamp(&mut fields);
        }
        let e = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            ts_ms: super::now_ms(),
            event: event.to_string(),
            app: app.to_string(),
            instance,
            pid,
            fields,
        };
        self.count(event);
        if let Some(feed) = self.hooks.get()
            && feed.tx.try_send(e.clone()).is_err()
        {
            let n = feed.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                warn!(
                    dropped = n + 1,
                    "the hooks' event queue is full or closed; events are not handed to hooks"
                );
            }
        }
        let _ = self.live.send(e.clone());
        let _ = self.tx.send(e);
    }

    fn count(&self, kind: &str) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = kinds.get_mut(kind) {
            *n += 1;
        } else if kinds.len() < MAX_KINDS {
            kinds.insert(kind.to_string(), 1);
        } else {
            *kinds.entry("other".to_string()).or_default() += 1;
        }
    }

    /// Events emitted since the daemon started, by kind.
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The audit line of a change `caller` made that is not an instance's transition (a token,
    /// a secret, a cluster deploy): `by` says who. `app` is `-` when it concerns no app.
    pub fn audit(&self, caller: &crate::access::Caller, app: &str, event: &str, mut fields: Value) {
        if let Some(map) = fields.as_object_mut() {
            caller.stamp(map);
        }
        self.emit(app, None, None, event, fields);
    }

    /// Hands every event from now on to `tx` too, without ever waiting (see `hooks`).
    pub fn feed_hooks(&self, tx: mpsc::Sender<Event>) {
        let _ = self.hooks.set(HookFeed {
            tx,
            dropped: AtomicU64::new(0),
        });
    }

    /// Events the hooks' channel had no room for, since the daemon started.
    pub fn hooks_dropped(&self) -> u64 {
        self.hooks
            .get()
            .map_or(0, |f| f.dropped.load(Ordering::Relaxed))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

async fn write_events(
    mut rx: mpsc::UnboundedReceiver<Event>,
    path: PathBuf,
    max_bytes: u64,
    files: u32,
) {
    let mut file = open(&path);
    // The size of what was opened (never of a symlink's target: `open` refuses links).
    let mut size = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.len())
        .unwrap_or(0);
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut buf = Vec::with_capacity(batch.len() * 160);
        for e in batch.drain(..) {
            let Ok(mut line) = serde_json::to_vec(&e) else {
                continue;
            };
            line.push(b'\n');
            let pending = size + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > max_bytes && files > 1 {
                append(&mut file, &path, &mut buf, &mut size);
                rotate(&path, files);
                file = open(&path);
                size = 0;
            }
            buf.extend_from_slice(&line);
        }
        append(&mut file, &path, &mut buf, &mut size);
    }
}

fn append(file: &mut Option<File>, path: &Path, buf: &mut Vec<u8>, size: &mut u64) {
    if buf.is_empty() {
        return;
    }
    if let Some(f) = file.as_mut() {
        match f.write_all(buf) {
            Ok(()) => *size += buf.len() as u64,
            Err(e) => warn!(file = %path.display(), error = %e, "cannot append to the event log"),
        }
    }
    buf.clear();
}

fn open(path: &Path) -> Option<File> {
    match super::logs::open_append(path) {
        Ok(f) => Some(f),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot open the event log");
            None
        }
    }
}

/// `events.jsonl` → `.1` → ... → `.{files-1}`; the daemon owns the file, so plain renames do.
fn rotate(path: &Path, files: u32) {
    let name = |n: u32| {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    };
    for n in (1..files - 1).rev() {
        let _ = std::fs::rename(name(n), name(n + 1));
    }
    let _ = std::fs::rename(path, name(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_written_one_json_object_per_line_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (log, writer) = EventLog::new(path.clone(), 600, 3);
        let task = tokio::spawn(writer);
        let mut live = log.subscribe();
        for i in 0..10 {
            log.emit(
                "web",
                Some(0),
                Some(100 + i),
                "started",
                serde_json::json!({ "restarts": i }),
            );
        }
        assert_eq!(live.recv().await.unwrap().pid, Some(100));
        drop(log);
        task.await.unwrap();
        let mut lines: Vec<Event> = Vec::new();
        for p in [
            path.with_extension("jsonl.2"),
            path.with_extension("jsonl.1"),
            path.clone(),
        ] {
            for l in std::fs::read_to_string(&p).unwrap_or_default().lines() {
                lines.push(serde_json::from_str(l).unwrap());
            }
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 600);
        assert!(
            lines.windows(2).all(|w| w[1].seq == w[0].seq + 1),
            "events out of order or lost"
        );
        let last = lines.last().unwrap();
        assert_eq!(
            (last.event.as_str(), last.app.as_str(), last.pid),
            ("started", "web", Some(109))
        );
        assert_eq!(last.fields["restarts"], 9);
    }
}
