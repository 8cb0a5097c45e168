//! The on-disk home of one node's Raft state: a single redb file holding the log, the vote, the
//! committed pointer and the latest snapshot. Shared by the log store and the state machine.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;
use std::time::Instant;

use redb::Database;
use redb::TableDefinition;

use crate::error::ClusterError;

/// Log entries by index, JSON-encoded.
pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small singletons: vote, committed, last purged log id.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The latest snapshot: "meta" (JSON SnapshotMeta) and "data" (registry JSON).
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_PURGED: &str = "last_purged";

/// An open Raft database.
#[derive(Clone)]
pub(crate) struct RaftStorage {
    pub(crate) db: Arc<Database>,
    pub(crate) path: PathBuf,
}

impl RaftStorage {
    /// Opens (or creates) `dir/raft.redb`. A database still held by a node of this process that
    /// is shutting down reports `DatabaseAlreadyOpen`; wait for it a little instead of failing.
    pub(crate) fn open(dir: &Path) -> Result<RaftStorage, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::Storage {
            path: dir.to_path_buf(),
            message: format!("create data dir: {e}"),
        })?;
        let path = dir.join("raft.redb");
        let deadline = Instant::now() + Duration::from_secs(5);
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(ClusterError::Storage {
                        path,
                        message: format!("open: {e}"),
                    });
                }
            }
        };
        let storage = RaftStorage {
            db: Arc::new(db),
            path,
        };
        storage.create_tables()?;
        Ok(storage)
    }

    fn create_tables(&self) -> Result<(), ClusterError> {
        let err = |e: &dyn std::fmt::Display| ClusterError::Storage {
            path: self.path.clone(),
            message: format!("create tables: {e}"),
        };
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(LOGS).map_err(|e| err(&e))?;
        txn.open_table(META).map_err(|e| err(&e))?;
        txn.open_table(SNAPSHOT).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))
    }

    /// A handle that tells when every user of the database has let go of it.
    pub(crate) fn closed_watch(&self) -> Weak<Database> {
        Arc::downgrade(&self.db)
    }
}

/// Any redb error as an `io::Error`, the error type openraft's storage traits speak.
pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
