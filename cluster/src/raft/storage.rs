//! The on-disk home of one node's Raft state: a single redb file holding the log, the vote, the
//! committed pointer and the latest snapshot. Shared by the log store and the state machine.
//!
//! redb refuses every operation on a handle that once failed to write (`PreviousIo`), so after
//! a write error (a full disk) the handle is dropped and the file opened again (`reopen`), which
//! also lets redb repair what the failed commit left.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::RwLock;
use std::sync::Weak;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
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

/// The database handle every user of the storage goes through: `None` while a reopen after a
/// write error has not succeeded yet (the disk is still full).
pub(crate) type DbSlot = RwLock<Option<Arc<Database>>>;

/// Opens the database again from scratch (the file, or in tests the same memory).
type Opener = dyn Fn() -> Result<Database, ClusterError> + Send + Sync;

/// An open Raft database.
#[derive(Clone)]
pub(crate) struct RaftStorage {
    slot: Arc<DbSlot>,
    opener: Arc<Opener>,
    /// Set when the node stops: a write the disk refuses is then failed, not held, so that
    /// openraft's core, which may be waiting on it, can end.
    stopping: Arc<AtomicBool>,
    pub(crate) path: PathBuf,
}

impl RaftStorage {
    /// Opens (or creates) `dir/raft.redb`.
    pub(crate) fn open(dir: &Path) -> Result<RaftStorage, ClusterError> {
        let path = dir.join("raft.redb");
        private_files(dir, &path)?;
        let file = path.clone();
        let opener: Arc<Opener> = Arc::new(move || open_database(&file));
        let storage = RaftStorage {
            slot: Arc::new(RwLock::new(Some(Arc::new(opener()?)))),
            opener,
            stopping: Arc::default(),
            path,
        };
        storage.create_tables()?;
        Ok(storage)
    }

    /// The database, unless it could not be reopened since a write failed.
    pub(crate) fn db(&self) -> std::io::Result<Arc<Database>> {
        self.slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{}: not open again yet after a failed write",
                    self.path.display()
                ))
            })
    }

    /// Drops this storage's handle on the database and opens it again: the only way redb
    /// writes again after an I/O error. Waits (a little) for users still holding the old
    /// handle; on failure the slot stays empty until a later reopen succeeds.
    pub(crate) fn reopen(&self) -> Result<(), ClusterError> {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        drop(slot.take());
        *slot = Some(Arc::new((self.opener)()?));
        Ok(())
    }

    /// What the node sets when it stops (see `stopping`).
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The data dir of a node pinned to the agent role: it runs no Raft engine and keeps no
    /// Raft files, but the dir still holds the node id and the slice (app specs, env values):
    /// private.
    pub(crate) fn agent_dir(dir: &Path) -> Result<(), ClusterError> {
        private_files(dir, &dir.join("raft.redb"))
    }

    /// A storage over a database that `opener` opens (tests: a backend that fails like a full
    /// disk).
    #[cfg(test)]
    pub(crate) fn with_opener(
        opener: impl Fn() -> Result<Database, ClusterError> + Send + Sync + 'static,
        path: PathBuf,
    ) -> Result<Self, ClusterError> {
        let storage = RaftStorage {
            slot: Arc::new(RwLock::new(Some(Arc::new(opener()?)))),
            opener: Arc::new(opener),
            stopping: Arc::default(),
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
        let txn = self
            .db()
            .map_err(|e| err(&e))?
            .begin_write()
            .map_err(|e| err(&e))?;
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
    pub(crate) fn closed_watch(&self) -> Weak<DbSlot> {
        Arc::downgrade(&self.slot)
    }
}

/// Opens the database file. One still held by a node of this process that is shutting down
/// (or by a user of the handle a reopen replaces) reports `DatabaseAlreadyOpen`; wait for it a
/// little instead of failing.
fn open_database(path: &Path) -> Result<Database, ClusterError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let file = open_file(path).map_err(|e| ClusterError::Storage {
            path: path.to_path_buf(),
            message: format!("open: {e}"),
        })?;
        let opened = redb::backends::FileBackend::new(file)
            .and_then(|backend| redb::Builder::new().create_with_backend(backend));
        match opened {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(ClusterError::Storage {
                    path: path.to_path_buf(),
                    message: format!("open: {e}"),
                });
            }
        }
    }
}

/// The Raft database holds app env values (secrets, often): the directory is 0700 and the
/// file 0600, also when an older herd created them 0755/0644.
fn private_files(dir: &Path, path: &Path) -> Result<(), ClusterError> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::fs::PermissionsExt;
    let fail = |what: &str, e: std::io::Error| ClusterError::Storage {
        path: dir.to_path_buf(),
        message: format!("{what}: {e}"),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("create data dir", e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail("chmod 700 data dir", e))?;
    if let Ok(m) = std::fs::symlink_metadata(path)
        && !m.file_type().is_file()
    {
        return Err(ClusterError::Storage {
            path: path.to_path_buf(),
            message: "not a regular file (a symlink?); herd does not open it through a link: remove it, the node rejoins and catches up from the cluster".into(),
        });
    }
    Ok(())
}

/// Opens (creating 0600) the database file, never through a symlink (checked just before, in
/// a directory only herd's user can write).
fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
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

    #[test]
    fn the_raft_dir_is_0700_and_its_database_0600_even_when_an_older_herd_made_them_open() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("raft");
        drop(RaftStorage::open(&dir).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("raft.redb")), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.join("raft.redb"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        drop(RaftStorage::open(&dir).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("raft.redb")), 0o600);
    }

    #[test]
    fn a_symlinked_database_is_refused_and_its_target_untouched() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("raft");
        std::fs::create_dir(&dir).unwrap();
        let victim = home.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("raft.redb")).unwrap();
        let err = RaftStorage::open(&dir).err().expect("refused").to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
