//! The on-disk home of one node's Raft state: a single redb file holding the log, the vote, the
//! committed pointer and the latest snapshot. Shared by the log store and the state machine.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;
use std::time::Instant;

use redb::Database;
use redb::ReadableTable;
use redb::TableDefinition;

use crate::error::ClusterError;

/// Log entries by index, JSON-encoded.
pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small singletons: vote, committed, last purged log id.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The latest snapshot: "meta" (JSON SnapshotMeta) and "data" (registry JSON).
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

pub(crate) const KEY_VOTE: &str = "vote";
/// The on-disk format of this database (see `FORMAT`).
pub(crate) const KEY_FORMAT: &str = "format";

/// Bumped whenever what is stored changes meaning (1: JSON log entries and snapshot, standard
/// one-leader-per-term vote). A database stamped with a newer format is refused rather than
/// misread; one without a stamp predates stamping and is format 1.
pub(crate) const FORMAT: u32 = 1;
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

    /// Creates the tables and checks (or writes) the format stamp, in one transaction.
    fn create_tables(&self) -> Result<(), ClusterError> {
        let err = |e: &dyn std::fmt::Display| ClusterError::Storage {
            path: self.path.clone(),
            message: format!("create tables: {e}"),
        };
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(LOGS).map_err(|e| err(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let found = meta
                .get(KEY_FORMAT)
                .map_err(|e| err(&e))?
                .map(|v| parse_format(v.value()));
            match found {
                Some(Some(f)) if f == FORMAT => {}
                Some(Some(f)) if f > FORMAT => {
                    return Err(ClusterError::Storage {
                        path: self.path.clone(),
                        message: format!(
                            "written in format {f} by a newer herd; this one reads format {FORMAT}. Run the newer herd, or move the raft dir away: the node then rejoins and catches up from the cluster"
                        ),
                    });
                }
                Some(None) | Some(Some(_)) => {
                    return Err(ClusterError::Storage {
                        path: self.path.clone(),
                        message: "the format stamp is unreadable or unknown; move the raft dir away and the node rejoins and catches up from the cluster".into(),
                    });
                }
                None => {
                    meta.insert(KEY_FORMAT, FORMAT.to_string().as_bytes())
                        .map_err(|e| err(&e))?;
                }
            }
        }
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

fn parse_format(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn stamp(dir: &Path) -> Option<String> {
        let db = Database::create(dir.join("raft.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(KEY_FORMAT)
            .unwrap()
            .map(|v| String::from_utf8_lossy(v.value()).into_owned())
    }

    fn set_stamp(dir: &Path, value: &str) {
        let db = Database::create(dir.join("raft.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(KEY_FORMAT, value.as_bytes())
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_new_database_is_stamped_and_a_newer_format_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        drop(RaftStorage::open(dir.path()).unwrap());
        assert_eq!(stamp(dir.path()).as_deref(), Some("1"));
        drop(RaftStorage::open(dir.path()).expect("its own format opens again"));

        set_stamp(dir.path(), "2");
        let err = RaftStorage::open(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("format 2") && err.contains("move the raft dir away"),
            "{err}"
        );
        set_stamp(dir.path(), "garbage");
        let err = RaftStorage::open(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("unreadable"), "{err}");
        assert_eq!(
            stamp(dir.path()).as_deref(),
            Some("garbage"),
            "a refusal writes nothing"
        );
    }
}
