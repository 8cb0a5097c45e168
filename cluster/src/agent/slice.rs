//! The node's slice of the registry: what it must run (its instances, their apps' specs,
//! restart generations) and the access book, fetched from the leader only when a heartbeat
//! names a newer version, and kept on disk so a node restarted while no master is reachable
//! keeps running what it ran. Every node reconciles from its slice, whether or not it holds a
//! Raft replica: one path, the same for voters, standbys and agents.
//!
//! In sync means "the slice held is at least the version the latest heartbeat of the highest
//! term names". That is sound although versions are only the log index of the last change: a
//! slice fetched at a registry index below the master's has a version at least the master's
//! only if nothing of this node's changed in between.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use super::AgentState;
use crate::NodeId;
use crate::error::ClusterError;
use crate::registry::NodeSlice;

/// The file a node keeps its slice in, inside the cluster data dir.
pub const SLICE_FILE: &str = "slice.json";

/// A slice as this node holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldSlice {
    /// The registry index of the node that served it, when it did.
    pub as_of: u64,
    pub slice: NodeSlice,
}

impl HeldSlice {
    pub fn version(&self) -> u64 {
        self.slice.version
    }
}

pub(crate) type SliceFuture = Pin<Box<dyn Future<Output = Result<HeldSlice, ClusterError>> + Send>>;
/// Fetches this node's slice from the leader (or serves it locally on the leader).
pub(crate) type SliceFetch = Box<dyn Fn() -> SliceFuture + Send + Sync>;

/// The held slice: published to the reconcile loop, written to disk before it is published.
pub(crate) struct SliceStore {
    path: PathBuf,
    held: watch::Sender<Option<Arc<HeldSlice>>>,
}

impl SliceStore {
    /// Loads `dir/slice.json` if it holds this node's slice; a missing or unreadable file means
    /// no slice (the node waits for a master before it runs any cluster instance).
    pub(crate) fn open(dir: &Path, node: NodeId) -> SliceStore {
        let path = dir.join(SLICE_FILE);
        let held = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<HeldSlice>(&bytes) {
                Ok(h) if h.slice.node == node => Some(Arc::new(h)),
                Ok(h) => {
                    tracing::warn!(file = %path.display(), held_for = h.slice.node.get(), node = node.get(), "slice file belongs to another node id; ignored");
                    None
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "slice file unreadable; ignored (the master sends a fresh one)");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read slice file; ignored");
                None
            }
        };
        if let Some(h) = &held {
            tracing::info!(version = h.version(), "slice loaded from disk");
        }
        SliceStore {
            path,
            held: watch::channel(held).0,
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<HeldSlice>>> {
        self.held.subscribe()
    }

    pub(crate) fn version(&self) -> Option<u64> {
        self.held.borrow().as_ref().map(|h| h.version())
    }

    /// Keeps `new` if it is newer than the held slice: on disk first, then published. A slice
    /// that cannot be written is still published (the node runs it) and the failure logged:
    /// the file only serves a restart without a master.
    pub(crate) async fn offer(&self, new: HeldSlice) {
        let newer = self
            .held
            .borrow()
            .as_ref()
            .is_none_or(|h| (new.version(), new.as_of) > (h.version(), h.as_of));
        if !newer {
            return;
        }
        let path = self.path.clone();
        let bytes = match serde_json::to_vec(&new) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode slice");
                return;
            }
        };
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot keep the slice on disk")
            }
            Err(e) => tracing::warn!(error = %e, "slice writer failed"),
        }
        tracing::debug!(version = new.version(), as_of = new.as_of, "new slice");
        self.held.send_replace(Some(Arc::new(new)));
    }
}

/// Temp file (0600: the slice holds app specs and their env values), fsync, rename, fsync the
/// directory: never half a file, never readable by another user.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?; // create_new: O_EXCL, which never follows a link
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Fetches the slice whenever the latest heartbeat names a newer one than the node holds
/// (first contact included), retrying with a short backoff until it gets one at least that new.
pub(crate) async fn fetch_loop(
    state: Arc<AgentState>,
    store: Arc<SliceStore>,
    fetch: SliceFetch,
    mut shutdown: watch::Receiver<bool>,
) {
    const FIRST_RETRY: Duration = Duration::from_millis(100);
    const MAX_RETRY: Duration = Duration::from_secs(2);
    let mut wake = state.wake_signal();
    let mut retry = FIRST_RETRY;
    loop {
        let view = state.view(crate::clock::now());
        let wanted = view.slice_version;
        let behind = view.heard && store.version().is_none_or(|held| held < wanted);
        if behind {
            match fetch().await {
                Ok(new) if new.version() >= wanted => {
                    store.offer(new).await;
                    retry = FIRST_RETRY;
                    continue;
                }
                Ok(new) => {
                    tracing::debug!(
                        got = new.version(),
                        wanted,
                        "slice server behind the master; retrying"
                    );
                    store.offer(new).await;
                }
                Err(e) => tracing::debug!(error = %e, wanted, "cannot fetch slice; retrying"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            r = wake.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::registry::Registry;

    fn held(node: u64, version: u64) -> HeldSlice {
        HeldSlice {
            as_of: version,
            slice: NodeSlice {
                node: NodeId(node),
                version,
                registry: Registry::default(),
            },
        }
    }

    #[tokio::test]
    async fn a_newer_slice_is_kept_on_disk_privately_and_read_back_an_older_one_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SliceStore::open(dir.path(), NodeId(7));
        assert_eq!(store.version(), None);
        store.offer(held(7, 5)).await;
        let file = dir.path().join(SLICE_FILE);
        let mode = std::fs::metadata(&file)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "app env values are in there");
        store.offer(held(7, 3)).await;
        assert_eq!(store.version(), Some(5), "never back to an older slice");
        let again = SliceStore::open(dir.path(), NodeId(7));
        assert_eq!(again.version(), Some(5), "a restart keeps the slice");
        let other = SliceStore::open(dir.path(), NodeId(8));
        assert_eq!(other.version(), None, "another node id ignores it");
    }
}
