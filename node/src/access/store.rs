//! Where the access book lives: `$HERD_HOME/access.json` on a standalone daemon (written like
//! `state.json`: temp file, fsync, rename, `.bak`), the replicated registry in a cluster (a
//! token made on one node opens every node; a revocation reaches every replica as soon as
//! Raft commits it). A change is answered only once it is on disk (standalone) or committed
//! (cluster).

use crate::state::store::{Loaded, StateFile};
use herd_cluster::registry::access::{AccessBook, AccessChange};
use herd_cluster::{ClusterNode, RegistryCommand, RegistryResponse};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;
use tonic::Status;
use tracing::warn;

pub const ACCESS_FILE: &str = "access.json";

struct Local {
    file: StateFile,
    book: watch::Sender<Arc<AccessBook>>,
    /// One change at a time: read, apply, write, publish.
    writing: tokio::sync::Mutex<()>,
}

pub struct AccessStore {
    local: Option<Local>,
    /// Set once the cluster node has started (cluster mode only).
    cluster: OnceLock<Arc<ClusterNode>>,
    /// Bumped after every change of the book, whichever its home.
    changes: watch::Sender<u64>,
}

impl AccessStore {
    /// A standalone daemon's book, read from `access.json` (or its backup).
    pub fn standalone(home: &std::path::Path) -> Result<Arc<Self>, String> {
        let file = StateFile::new(home.join(ACCESS_FILE));
        let book = match file.load_validated(|_: &AccessBook| Ok(())) {
            Ok(Loaded::Fresh) => AccessBook::default(),
            Ok(Loaded::Primary(b)) => b,
            Ok(Loaded::Backup(b, why)) => {
                warn!(file = %file.path().display(), why, "access book read from its backup");
                b
            }
            Err(e) => return Err(e.to_string()),
        };
        Ok(Arc::new(Self {
            local: Some(Local {
                file,
                book: watch::channel(Arc::new(book)).0,
                writing: tokio::sync::Mutex::new(()),
            }),
            cluster: OnceLock::new(),
            changes: watch::channel(0).0,
        }))
    }

    /// A cluster node's book: the registry's, once `attach` has been called.
    pub fn clustered(home: &std::path::Path) -> Arc<Self> {
        let stray = home.join(ACCESS_FILE);
        if stray.exists() {
            warn!(file = %stray.display(), "this node runs in a cluster: the tokens and secrets of its standalone access book are not used (the cluster's are)");
        }
        Arc::new(Self {
            local: None,
            cluster: OnceLock::new(),
            changes: watch::channel(0).0,
        })
    }

    /// Hands the started cluster node to a clustered store, and follows its registry's book.
    pub fn attach(self: &Arc<Self>, node: Arc<ClusterNode>) {
        let mut registry = node.local_view();
        if self.cluster.set(node).is_err() {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = registry.borrow_and_update().access.clone();
            loop {
                if registry.changed().await.is_err() {
                    return;
                }
                let Some(me) = me.upgrade() else { return };
                let now = registry.borrow_and_update().access.clone();
                if now != last {
                    last = now;
                    me.changes.send_modify(|n| *n += 1);
                }
            }
        });
        self.changes.send_modify(|n| *n += 1);
    }

    /// Reads the book as it is now (cheap: no copy).
    pub fn with_book<R>(&self, f: impl FnOnce(&AccessBook) -> R) -> R {
        if let Some(local) = &self.local {
            return f(&local.book.borrow());
        }
        match self.cluster.get() {
            Some(node) => f(&node.local_view().borrow().access),
            None => f(&AccessBook::default()),
        }
    }

    /// Wakes on every change of the book.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Applies `change` and answers once it is durable: `Ok(changed)`, or the refusal.
    pub async fn change(&self, change: AccessChange) -> Result<bool, Status> {
        match &self.local {
            Some(local) => self.change_local(local, change).await,
            None => self.change_cluster(change).await,
        }
    }

    async fn change_local(&self, local: &Local, change: AccessChange) -> Result<bool, Status> {
        let _one = local.writing.lock().await;
        let mut book = AccessBook::clone(&local.book.borrow());
        let changed = book.apply(&change).map_err(Status::failed_precondition)?;
        if !changed {
            return Ok(false);
        }
        let file = local.file.clone();
        let to_save = book.clone();
        let saved = tokio::task::spawn_blocking(move || file.save(&to_save))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Err(e) = saved {
            return Err(Status::unavailable(format!(
                "not saved: cannot write {}: {e}; nothing changed",
                local.file.path().display()
            )));
        }
        local.book.send_replace(Arc::new(book));
        self.changes.send_modify(|n| *n += 1);
        Ok(true)
    }

    async fn change_cluster(&self, change: AccessChange) -> Result<bool, Status> {
        let node = self.cluster.get().ok_or_else(|| {
            Status::unavailable("the cluster node is still starting; try again in a moment")
        })?;
        match node.write(RegistryCommand::Access { change }).await {
            Ok(RegistryResponse::Applied { changed }) => Ok(changed),
            Ok(RegistryResponse::Rejected { reason }) => Err(Status::failed_precondition(reason)),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_cluster::registry::access::SecretRecord;

    fn put(name: &str, sealed: &str) -> AccessChange {
        AccessChange::PutSecret {
            name: name.into(),
            secret: SecretRecord {
                version: 0,
                set_ms: 1,
                key_id: "k".into(),
                sealed: sealed.into(),
                set_by: "local".into(),
            },
        }
    }

    #[tokio::test]
    async fn a_standalone_change_is_on_disk_before_it_is_answered_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::standalone(dir.path()).unwrap();
        let changes = store.subscribe();
        assert!(store.change(put("db/pass", "AAAA")).await.unwrap());
        assert!(changes.has_changed().unwrap());
        let on_disk = std::fs::read_to_string(dir.path().join(ACCESS_FILE)).unwrap();
        assert!(on_disk.contains("db/pass"), "{on_disk}");
        drop(store);
        let again = AccessStore::standalone(dir.path()).unwrap();
        assert_eq!(again.with_book(|b| b.secrets["db/pass"].version), 1);
        let e = again
            .change(AccessChange::DeleteSecret {
                name: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn a_change_that_cannot_be_written_is_refused_and_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::standalone(dir.path()).unwrap();
        // A directory where the temp file must go: the write fails.
        std::fs::create_dir(dir.path().join(format!("{ACCESS_FILE}.tmp"))).unwrap();
        let e = store.change(put("a", "AAAA")).await.unwrap_err();
        assert!(e.message().contains("not saved"), "{e:?}");
        assert!(store.with_book(|b| b.secrets.is_empty()));
    }
}
