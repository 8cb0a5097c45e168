//! Deliveries on disk, so they survive the daemon (even a SIGKILL): one JSON file per
//! delivery, `$HERD_HOME/hooks/pending/<hook>/<id>.json` while it waits and
//! `$HERD_HOME/hooks/dead/<id>.json` once it gave up. Every file is written whole (temp,
//! fsync, rename, fsync of the directory), 0600 in 0700 directories, and nothing is opened
//! through a symlink. An id is a zero-padded counter seeded from the clock, so names sort in
//! the order deliveries were made.
//!
//! Everything here blocks: callers run it on a blocking thread.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Pending deliveries kept per hook; past it a new delivery becomes a dead letter at once
/// (reason `queue full`), so what is queued keeps its order.
pub const MAX_PENDING: usize = 10_000;
/// Dead letters kept (all hooks together): the newest.
pub const MAX_DEAD: usize = 1_000;
/// Largest delivery file read back (a payload is a few KiB: 20 lines of at most 1 KiB).
const MAX_FILE: u64 = 256 * 1024;

/// One event on its way to one hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub hook: String,
    /// The event's kind, app and instance (also in `payload`; here for listings and env).
    pub event: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    pub created_ms: u64,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it became a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_ms: Option<u64>,
    /// What the hook receives.
    pub payload: Value,
}

/// Makes delivery ids: unique in this home, increasing (across daemons too).
pub struct Ids(AtomicU64);

impl Ids {
    pub fn new() -> Self {
        Self(AtomicU64::new(crate::supervisor::clock::now_us()))
    }
    pub fn next(&self) -> String {
        format!("{:020}", self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// An id is what `Ids` makes: digits only, so it is a safe file name.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The hooks' directory in a home.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(home: &Path) -> Self {
        Self {
            root: home.join("hooks"),
        }
    }

    pub fn pending_dir(&self, hook: &str) -> PathBuf {
        self.root.join("pending").join(hook)
    }

    pub fn dead_dir(&self) -> PathBuf {
        self.root.join("dead")
    }

    /// Creates (0700) and checks `hooks/`, `hooks/pending/`, `hooks/dead/`, and removes the
    /// temp files of writes a crash cut short. Only here, before any worker runs: a listing
    /// must never touch a temp file, which may be a write in flight.
    pub fn ensure(&self) -> io::Result<()> {
        for d in [
            self.root.clone(),
            self.root.join("pending"),
            self.dead_dir(),
        ] {
            private_dir(&d)?;
        }
        sweep_temps(&self.dead_dir());
        if let Ok(hooks) = std::fs::read_dir(self.root.join("pending")) {
            for h in hooks.flatten() {
                if h.file_type().is_ok_and(|t| t.is_dir()) {
                    sweep_temps(&h.path());
                }
            }
        }
        Ok(())
    }

    /// Writes a new pending delivery; it counts as queued only once this returns.
    pub fn enqueue(&self, d: &Delivery) -> io::Result<()> {
        let dir = self.pending_dir(&d.hook);
        private_dir(&dir)?;
        write_json(&dir, &d.id, d)
    }

    /// Rewrites a pending delivery (its attempts and last error).
    pub fn update(&self, d: &Delivery) -> io::Result<()> {
        write_json(&self.pending_dir(&d.hook), &d.id, d)
    }

    pub fn load(&self, hook: &str, id: &str) -> io::Result<Delivery> {
        read_json(&self.pending_dir(hook).join(format!("{id}.json")))
    }

    /// Removes a delivered one.
    pub fn remove(&self, hook: &str, id: &str) -> io::Result<()> {
        remove(&self.pending_dir(hook), id)
    }

    /// The ids pending for `hook`, oldest first.
    pub fn pending(&self, hook: &str) -> Vec<String> {
        ids_in(&self.pending_dir(hook))
    }

    /// Moves a delivery to the dead letters (written there before it leaves the queue), then
    /// drops the oldest dead letters past `MAX_DEAD`.
    pub fn bury(&self, d: &Delivery, pending: bool) -> io::Result<()> {
        let dead = self.dead_dir();
        write_json(&dead, &d.id, d)?;
        if pending {
            remove(&self.pending_dir(&d.hook), &d.id)?;
        }
        let ids = ids_in(&dead);
        for id in ids.iter().take(ids.len().saturating_sub(MAX_DEAD)) {
            tracing::warn!(delivery = %id, kept = MAX_DEAD, "dead letters full: dropping the oldest");
            let _ = remove(&dead, id);
        }
        Ok(())
    }

    /// Every dead letter, oldest first (unreadable files are skipped and logged).
    pub fn dead(&self) -> Vec<Delivery> {
        let dir = self.dead_dir();
        ids_in(&dir)
            .into_iter()
            .filter_map(|id| {
                read_json(&dir.join(format!("{id}.json")))
                    .map_err(
                        |e| tracing::warn!(delivery = %id, error = %e, "unreadable dead letter"),
                    )
                    .ok()
            })
            .collect()
    }

    /// Puts dead letter `id` back in its hook's queue with a fresh count of attempts.
    pub fn revive(&self, id: &str) -> io::Result<Delivery> {
        let dead = self.dead_dir();
        let mut d: Delivery = read_json(&dead.join(format!("{id}.json")))?;
        d.attempts = 0;
        d.last_error = None;
        d.dead_ms = None;
        self.enqueue(&d)?;
        remove(&dead, id)?;
        Ok(d)
    }
}

/// `dir` as a directory of ours, 0700, never a symlink.
fn private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ));
        }
    }
    let m = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !m.is_dir() || m.uid() != me {
        return Err(io::Error::other(format!(
            "{} is not a directory of the daemon's user (a symlink?); move it aside",
            dir.display()
        )));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    Ok(())
}

fn write_json<T: Serialize>(dir: &Path, id: &str, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{id}.json.tmp"));
    let dst = dir.join(format!("{id}.json"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", tmp.display())))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &dst)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?
        .sync_all()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

fn remove(dir: &Path, id: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(format!("{id}.json"))) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the `<id>.json.tmp` files in `dir` (writes a crash cut short).
fn sweep_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".json.tmp"))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The ids of the `<id>.json` files in `dir`, sorted (oldest first). Temp files are left alone:
/// one may be a write in flight (`ensure` sweeps those a crash left).
fn ids_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".json")
            && valid_id(id)
        {
            ids.push(id.to_string());
        }
    }
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(ids: &Ids, hook: &str) -> Delivery {
        Delivery {
            id: ids.next(),
            hook: hook.into(),
            event: "crashed".into(),
            app: "api".into(),
            instance: Some(0),
            created_ms: 1,
            attempts: 0,
            last_error: None,
            dead_ms: None,
            payload: serde_json::json!({ "event": "crashed" }),
        }
    }

    #[test]
    fn a_delivery_goes_pending_then_dead_then_back() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(home.path());
        store.ensure().unwrap();
        let ids = Ids::new();
        let (a, b) = (delivery(&ids, "pager"), delivery(&ids, "pager"));
        store.enqueue(&b).unwrap();
        store.enqueue(&a).unwrap();
        assert_eq!(store.pending("pager"), vec![a.id.clone(), b.id.clone()]);
        let mode = std::fs::metadata(store.pending_dir("pager").join(format!("{}.json", a.id)))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut dead = store.load("pager", &a.id).unwrap();
        dead.attempts = 3;
        store.bury(&dead, true).unwrap();
        assert_eq!(store.pending("pager"), vec![b.id.clone()]);
        assert_eq!(store.dead()[0].attempts, 3);
        let back = store.revive(&a.id).unwrap();
        assert_eq!(back.attempts, 0);
        assert!(store.dead().is_empty());
        assert_eq!(store.pending("pager").len(), 2);
    }

    #[test]
    fn listing_leaves_a_write_in_flight_alone_and_ensure_sweeps_a_crashed_one() {
        // `herd hooks dead` lists while a worker writes a dead letter: the listing used to
        // delete the worker's temp file, and its rename then failed (seen in CI).
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(home.path());
        store.ensure().unwrap();
        let in_flight = store.dead_dir().join("00000000000000000001.json.tmp");
        std::fs::write(&in_flight, b"{").unwrap();
        assert!(store.dead().is_empty());
        assert!(store.pending("pager").is_empty());
        assert!(in_flight.exists(), "a listing removed a write in flight");
        std::fs::create_dir_all(store.pending_dir("pager")).unwrap();
        let pending_tmp = store
            .pending_dir("pager")
            .join("00000000000000000002.json.tmp");
        std::fs::write(&pending_tmp, b"{").unwrap();
        store.ensure().unwrap();
        assert!(!in_flight.exists() && !pending_tmp.exists());
    }

    #[test]
    fn dead_letters_keep_the_newest() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(home.path());
        store.ensure().unwrap();
        let ids = Ids::new();
        let all: Vec<Delivery> = (0..MAX_DEAD + 3).map(|_| delivery(&ids, "h")).collect();
        for d in &all {
            store.bury(d, false).unwrap();
        }
        let kept = store.dead();
        assert_eq!(kept.len(), MAX_DEAD);
        assert_eq!(kept[0].id, all[3].id);
    }

    #[test]
    fn a_symlinked_queue_directory_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(home.path());
        store.ensure().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), store.pending_dir("evil")).unwrap();
        let ids = Ids::new();
        assert!(store.enqueue(&delivery(&ids, "evil")).is_err());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
