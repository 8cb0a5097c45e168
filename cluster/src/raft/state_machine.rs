//! The registry as an openraft state machine.
//!
//! The registry lives in memory and is published through a watch channel after every applied
//! batch. Durability comes from the log plus snapshots: snapshots are written to redb, and on
//! restart openraft installs the latest one and re-applies the log up to the persisted committed
//! index. A node with an empty disk receives a snapshot from the leader.

use std::io;
use std::sync::Arc;

use futures_util::Stream;
use futures_util::TryStreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use redb::ReadableDatabase;
use tokio::sync::watch;

use super::TypeConfig;
use super::storage::RaftStorage;
use super::storage::SNAPSHOT;
use super::storage::io_err;
use crate::Term;
use crate::registry::Registry;
use crate::registry::RegistryResponse;

type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
/// A snapshot's payload: the registry as JSON.
pub type SnapshotData = Vec<u8>;
type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;

pub struct StateMachine {
    registry: Arc<Registry>,
    last_applied: Option<LogId>,
    membership: Membership,
    snapshots: SnapshotStore,
    published: watch::Sender<Arc<Registry>>,
}

impl StateMachine {
    /// An empty state machine; openraft restores it from the stored snapshot and log on start.
    pub(crate) fn new(storage: &RaftStorage) -> (StateMachine, watch::Receiver<Arc<Registry>>) {
        let (tx, rx) = watch::channel(Arc::new(Registry::default()));
        let sm = StateMachine {
            registry: Arc::new(Registry::default()),
            last_applied: None,
            membership: Membership::default(),
            snapshots: SnapshotStore {
                storage: storage.clone(),
            },
            published: tx,
        };
        (sm, rx)
    }

    fn publish(&self) {
        self.published.send_replace(self.registry.clone());
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => RegistryResponse::Applied { changed: false }.into(),
                EntryPayload::Normal(cmd) => Arc::make_mut(&mut self.registry).apply_at(
                    Some(Term(entry.log_id.leader_id.term)),
                    entry.log_id.index,
                    &cmd,
                ),
                EntryPayload::Membership(m) => {
                    self.membership = Membership::new(Some(entry.log_id), m);
                    RegistryResponse::Applied { changed: true }.into()
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        self.publish();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            registry: self.registry.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: SnapshotData,
    ) -> Result<(), io::Error> {
        let registry: Registry = serde_json::from_slice(&data).map_err(io_err)?;
        // Persist first: once installed, the log before it may be purged.
        self.snapshots.save(meta.clone(), data).await?;
        self.registry = Arc::new(registry);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        tracing::info!(last_log_id = ?meta.last_log_id.map(|l| l.index), "installed registry snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        self.snapshots.load().await
    }
}

pub struct SnapshotBuilder {
    registry: Arc<Registry>,
    last_applied: Option<LogId>,
    membership: Membership,
    snapshots: SnapshotStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let registry = self.registry.clone();
        let data = tokio::task::spawn_blocking(move || serde_json::to_vec(&*registry))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        self.snapshots.save(meta.clone(), data.clone()).await?;
        tracing::debug!(last_log_id = ?meta.last_log_id.map(|l| l.index), bytes = data.len(), "built registry snapshot");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

/// The latest snapshot in redb (one at a time: saving replaces the previous one atomically).
#[derive(Clone)]
struct SnapshotStore {
    storage: RaftStorage,
}

impl SnapshotStore {
    /// Saves a snapshot; while the disk refuses it, holds it and tries again on a reopened
    /// database, as the log writer does (`log_store`): openraft takes a storage error as fatal
    /// and would stop this node's Raft until a restart. A build waits meanwhile (the log it
    /// would purge stays), an install keeps the follower where it was. An error only once the
    /// node is stopping.
    async fn save(&self, meta: SnapshotMeta, data: SnapshotData) -> io::Result<()> {
        let mut pause = super::log_store::RETRY_FIRST;
        let mut refused = false;
        loop {
            match self.try_save(meta.clone(), data.clone()).await {
                Ok(()) => {
                    if refused {
                        tracing::info!("raft snapshot saved; the disk takes writes again");
                    }
                    return Ok(());
                }
                Err(e) if self.storage.is_stopping() => return Err(e),
                Err(e) => {
                    if !refused {
                        tracing::error!(error = %e, "raft snapshot not saved; holding it and retrying until the disk takes it");
                    }
                    refused = true;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(super::log_store::RETRY_LAST);
            let storage = self.storage.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || storage.reopen()).await {
                tracing::debug!(error = %e, "raft database not reopened yet");
            }
        }
    }

    async fn try_save(&self, meta: SnapshotMeta, data: SnapshotData) -> io::Result<()> {
        let db = self.storage.db()?;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let meta = serde_json::to_vec(&meta).map_err(io_err)?;
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(SNAPSHOT).map_err(io_err)?;
                table.insert("meta", meta.as_slice()).map_err(io_err)?;
                table.insert("data", data.as_slice()).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        })
        .await
        .map_err(io_err)?
    }

    async fn load(&self) -> io::Result<Option<Snapshot>> {
        let db = self.storage.db()?;
        tokio::task::spawn_blocking(move || -> io::Result<Option<Snapshot>> {
            let txn = db.begin_read().map_err(io_err)?;
            let table = txn.open_table(SNAPSHOT).map_err(io_err)?;
            let (Some(meta), Some(data)) = (
                table.get("meta").map_err(io_err)?,
                table.get("data").map_err(io_err)?,
            ) else {
                return Ok(None);
            };
            let meta: SnapshotMeta = serde_json::from_slice(meta.value()).map_err(io_err)?;
            Ok(Some(Snapshot {
                meta,
                snapshot: data.value().to_vec(),
            }))
        })
        .await
        .map_err(io_err)?
    }
}
