//! Durable Raft log, vote and committed pointer in redb.
//!
//! Every write goes, in call order, to one writer thread that folds whatever is queued into a
//! single fsynced redb transaction (group commit) and only then fires the append callbacks, so
//! the Raft core never blocks on disk and never hears "durable" too early. The non-purged log is
//! mirrored in memory: entries are readable as soon as `append` returns, as openraft requires,
//! and replication reads never touch the disk. The mirror stays small because snapshots purge it.
//!
//! A write the disk refuses (full) is never reported to openraft, which would take it as fatal
//! and stop this node's Raft until a restart. The writer holds it instead and retries it, on a
//! reopened database, until the disk takes it: meanwhile nothing after it is acknowledged (the
//! node drops out of the quorum like a slow peer), `write_refused` says so (a leader hands over),
//! and once space returns the node catches up on its own.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::Weak;
use std::sync::mpsc;
use std::time::Duration;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use redb::Database;
use redb::Durability;
use redb::ReadableDatabase;
use redb::ReadableTable;
use tokio::sync::oneshot;
use tokio::sync::watch;

use super::TypeConfig;
use super::storage::KEY_COMMITTED;
use super::storage::KEY_PURGED;
use super::storage::KEY_VOTE;
use super::storage::LOGS;
use super::storage::META;
use super::storage::RaftStorage;
use super::storage::io_err;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The most operations folded into one transaction.
const MAX_GROUP: usize = 4096;

/// How long a refused write waits before it is tried again: doubling from the first to the
/// last.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(50);
pub(crate) const RETRY_LAST: Duration = Duration::from_secs(1);

/// The log store handed to openraft. Cloning shares the same log.
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<MemLog>>,
    writer: mpsc::Sender<WriteOp>,
    refused: watch::Receiver<bool>,
}

/// Reads the in-memory mirror; never blocks on disk.
#[derive(Clone)]
pub struct LogReader {
    mem: Arc<Mutex<MemLog>>,
}

#[derive(Default)]
struct MemLog {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

enum WriteOp {
    Append(Vec<Entry>, IOFlushed<TypeConfig>),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
    Vote(Vote, oneshot::Sender<io::Result<()>>),
    Committed(Option<LogId>),
}

impl LogStore {
    /// Loads the log from `storage` and starts its writer thread. The thread ends, and lets go of
    /// the database, once every clone of this store is dropped.
    pub(crate) fn open(storage: &RaftStorage) -> io::Result<LogStore> {
        let db = storage.db()?;
        let mem = Arc::new(Mutex::new(load(&db)?));
        drop(db);
        let (tx, rx) = mpsc::channel();
        let (refused_tx, refused) = watch::channel(false);
        let writer = Writer {
            storage: storage.clone(),
            users: Arc::downgrade(&mem),
            refused: refused_tx,
        };
        std::thread::Builder::new()
            .name("herd-raft-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(LogStore {
            mem,
            writer: tx,
            refused,
        })
    }

    /// `true` while the disk refuses this node's log writes (they are held and retried).
    pub(crate) fn write_refused(&self) -> watch::Receiver<bool> {
        self.refused.clone()
    }

    fn mem(&self) -> MutexGuard<'_, MemLog> {
        lock(&self.mem)
    }

    fn send(&self, op: WriteOp) -> io::Result<()> {
        self.writer
            .send(op)
            .map_err(|_| io::Error::other("raft log writer thread has stopped"))
    }
}

fn lock(mem: &Mutex<MemLog>) -> MutexGuard<'_, MemLog> {
    // A panic while holding the lock leaves the mirror consistent (every mutation is one
    // statement), so recover from poisoning instead of propagating it.
    mem.lock().unwrap_or_else(|p| p.into_inner())
}

fn load(db: &Database) -> io::Result<MemLog> {
    let txn = db.begin_read().map_err(io_err)?;
    let logs = txn.open_table(LOGS).map_err(io_err)?;
    let meta = txn.open_table(META).map_err(io_err)?;
    let mut mem = MemLog::default();
    for row in logs.iter().map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        let entry: Entry = serde_json::from_slice(v.value()).map_err(io_err)?;
        mem.entries.insert(k.value(), entry);
    }
    let get = |key: &str| -> io::Result<Option<Vec<u8>>> {
        Ok(meta.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
    };
    if let Some(b) = get(KEY_VOTE)? {
        mem.vote = Some(serde_json::from_slice(&b).map_err(io_err)?);
    }
    if let Some(b) = get(KEY_COMMITTED)? {
        mem.committed = serde_json::from_slice(&b).map_err(io_err)?;
    }
    if let Some(b) = get(KEY_PURGED)? {
        mem.last_purged = serde_json::from_slice(&b).map_err(io_err)?;
    }
    Ok(mem)
}

/// The thread that writes the log, in call order.
struct Writer {
    storage: RaftStorage,
    /// The log's users (the store and its readers): once all are gone the node is stopping,
    /// and a refused write is given up rather than retried forever.
    users: Weak<Mutex<MemLog>>,
    refused: watch::Sender<bool>,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<WriteOp>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            // Failed only when the node stops: then openraft may hear it (its core, perhaps
            // waiting on a vote, must be able to end).
            let result = self.write_until_taken(&group);
            for op in group {
                let r = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                match op {
                    WriteOp::Append(_, cb) => cb.io_completed(r),
                    WriteOp::Vote(_, done) => {
                        let _ = done.send(r);
                    }
                    WriteOp::TruncateAfter(_) | WriteOp::Purge(_) | WriteOp::Committed(_) => {}
                }
            }
        }
    }

    /// Writes `group`, and while the disk refuses it, reopens the database and tries again
    /// with a growing pause. An error only once the node is stopping.
    fn write_until_taken(&self, group: &[WriteOp]) -> io::Result<()> {
        let mut pause = RETRY_FIRST;
        loop {
            match self.storage.db().and_then(|db| write_group(&db, group)) {
                Ok(()) => {
                    if self.refused.send_replace(false) {
                        tracing::info!("raft log writes work again; catching up");
                    }
                    return Ok(());
                }
                Err(e) => {
                    if self.users.strong_count() == 0 || self.storage.is_stopping() {
                        return Err(e);
                    }
                    if !self.refused.send_replace(true) {
                        tracing::error!(error = %e, "raft log write failed; holding it and retrying until the disk takes it (this node acknowledges nothing meanwhile)");
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_LAST);
            if let Err(e) = self.storage.reopen() {
                tracing::debug!(error = %e, "raft database not reopened yet");
            }
        }
    }
}

/// Applies the queued operations, in order, in one durable transaction.
fn write_group(db: &Database, group: &[WriteOp]) -> io::Result<()> {
    let mut txn = db.begin_write().map_err(io_err)?;
    // A group holding only a committed-pointer update need not be fsynced on its own: it becomes
    // durable with the next durable group, and losing it in a crash only means replaying less.
    if group.iter().all(|op| matches!(op, WriteOp::Committed(_))) {
        txn.set_durability(Durability::None).map_err(io_err)?;
    }
    {
        let mut logs = txn.open_table(LOGS).map_err(io_err)?;
        let mut meta = txn.open_table(META).map_err(io_err)?;
        for op in group {
            match op {
                WriteOp::Append(entries, _) => {
                    for e in entries {
                        let bytes = serde_json::to_vec(e).map_err(io_err)?;
                        logs.insert(e.index(), bytes.as_slice()).map_err(io_err)?;
                    }
                }
                WriteOp::TruncateAfter(last) => {
                    let from = last.as_ref().map_or(0, |l| l.index + 1);
                    logs.retain_in(from.., |_, _| false).map_err(io_err)?;
                }
                WriteOp::Purge(upto) => {
                    logs.retain_in(..=upto.index, |_, _| false)
                        .map_err(io_err)?;
                    let bytes = serde_json::to_vec(upto).map_err(io_err)?;
                    meta.insert(KEY_PURGED, bytes.as_slice()).map_err(io_err)?;
                }
                WriteOp::Vote(vote, _) => {
                    let bytes = serde_json::to_vec(vote).map_err(io_err)?;
                    meta.insert(KEY_VOTE, bytes.as_slice()).map_err(io_err)?;
                }
                WriteOp::Committed(c) => {
                    let bytes = serde_json::to_vec(c).map_err(io_err)?;
                    meta.insert(KEY_COMMITTED, bytes.as_slice())
                        .map_err(io_err)?;
                }
            }
        }
    }
    txn.commit().map_err(io_err)
}

fn range_of<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mem = lock(&self.mem);
        Ok(mem
            .entries
            .range(range_of(&range))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.mem).vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mem = self.mem();
        Ok(mem
            .entries
            .range(range_of(&range))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.mem().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = self.mem();
        let last_purged_log_id = mem.last_purged;
        let last_log_id = mem
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id())
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            mem: self.mem.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.mem().vote = Some(*vote);
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Vote(*vote, tx))?;
        rx.await
            .map_err(|_| io::Error::other("raft log writer thread has stopped"))?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Lazily durable: it rides along with the next group. It is only an optimization for
        // replay after restart, and the FIFO order keeps it behind the entries it covers.
        self.mem().committed = committed;
        self.send(WriteOp::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.mem().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut mem = self.mem();
            for e in &entries {
                mem.entries.insert(e.index(), e.clone());
            }
        }
        self.send(WriteOp::Append(entries, callback))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |l| l.index + 1);
        self.mem().entries.split_off(&from);
        self.send(WriteOp::TruncateAfter(last_log_id))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        {
            let mut mem = self.mem();
            let keep = mem.entries.split_off(&(log_id.index + 1));
            mem.entries = keep;
            mem.last_purged = Some(log_id);
        }
        self.send(WriteOp::Purge(log_id))
    }
}

#[cfg(test)]
mod tests {
    use crate::NodeId;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderId;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::vote::RaftVote;

    use super::*;
    use crate::registry::RegistryCommand;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::LogId::new(
            openraft::vote::leader_id_std::LeaderId::<u64, u64>::new_committed(term, 1),
            index,
        )
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new_normal(
            log_id(term, index),
            RegistryCommand::Put {
                key: format!("k{index}"),
                value: "v".into(),
            },
        )
    }

    async fn append(store: &mut LogStore, range: std::ops::RangeInclusive<u64>) {
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(range.map(|i| entry(1, i)), IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("callback").expect("durable");
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(0..)
            .await
            .expect("read")
            .iter()
            .map(|e| e.index())
            .collect()
    }

    fn open(dir: &std::path::Path) -> LogStore {
        let storage = RaftStorage::open(dir).expect("open storage");
        LogStore::open(&storage).expect("open log")
    }

    #[tokio::test]
    async fn appended_entries_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = open(dir.path());
            append(&mut store, 1..=5).await;
            assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5]);
        }
        let mut store = reopen(dir.path()).await;
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5]);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_purged_log_id, None);
    }

    #[tokio::test]
    async fn truncate_after_removes_the_tail_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = open(dir.path());
            append(&mut store, 1..=6).await;
            store
                .truncate_after(Some(log_id(1, 3)))
                .await
                .expect("truncate");
            assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
            // Truncating everything is allowed too.
            append(&mut store, 4..=4).await;
        }
        let mut store = reopen(dir.path()).await;
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
        store.truncate_after(None).await.expect("truncate all");
        assert!(indexes(&mut store).await.is_empty());
    }

    #[tokio::test]
    async fn purge_keeps_the_last_purged_id_across_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = open(dir.path());
            append(&mut store, 1..=10).await;
            store.purge(log_id(1, 7)).await.expect("purge");
            assert_eq!(indexes(&mut store).await, vec![8, 9, 10]);
            // Make the purge durable before dropping: a vote write waits for its group.
            let vote = Vote::from_leader_id(
                openraft::vote::leader_id_std::LeaderId::new(2, NodeId(1)),
                true,
            );
            store.save_vote(&vote).await.expect("vote");
        }
        let mut store = reopen(dir.path()).await;
        assert_eq!(indexes(&mut store).await, vec![8, 9, 10]);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 7)));
        assert_eq!(state.last_log_id, Some(log_id(1, 10)));

        // Purging everything leaves the purged id as the last log id.
        store.purge(log_id(1, 10)).await.expect("purge all");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 10)));
    }

    #[tokio::test]
    async fn vote_and_committed_are_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vote = Vote::from_leader_id(
            openraft::vote::leader_id_std::LeaderId::new(3, NodeId(9)),
            true,
        );
        {
            let mut store = open(dir.path());
            append(&mut store, 1..=2).await;
            store
                .save_committed(Some(log_id(1, 2)))
                .await
                .expect("committed");
            store.save_vote(&vote).await.expect("vote");
        }
        let mut store = reopen(dir.path()).await;
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(
            store.read_committed().await.expect("committed"),
            Some(log_id(1, 2))
        );
        let mut reader = store.get_log_reader().await;
        assert_eq!(
            reader.try_get_log_entries(2..3).await.expect("read").len(),
            1
        );
    }

    /// The writer thread of a dropped store may still hold the file for a moment.
    async fn reopen(dir: &std::path::Path) -> LogStore {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || open(&dir))
            .await
            .expect("join")
    }

    /// Memory that reports ENOSPC on every write, growth and sync while `full` is set. Clones
    /// share the memory, so the database can be opened again over it.
    #[derive(Debug, Clone)]
    struct FullDisk {
        inner: Arc<redb::backends::InMemoryBackend>,
        full: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FullDisk {
        fn check(&self) -> io::Result<()> {
            if self.full.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(28));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FullDisk {
        fn len(&self) -> io::Result<u64> {
            redb::StorageBackend::len(&*self.inner)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            redb::StorageBackend::read(&*self.inner, offset, out)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            if len > redb::StorageBackend::len(&*self.inner)? {
                self.check()?;
            }
            redb::StorageBackend::set_len(&*self.inner, len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.check()?;
            redb::StorageBackend::sync_data(&*self.inner)
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.check()?;
            redb::StorageBackend::write(&*self.inner, offset, data)
        }
    }

    /// A log store on memory that can be made full.
    fn on_a_disk_that_fills() -> (FullDisk, RaftStorage, LogStore) {
        let disk = FullDisk {
            inner: Arc::new(redb::backends::InMemoryBackend::new()),
            full: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let opened = disk.clone();
        let opener = move || {
            redb::Builder::new()
                .create_with_backend(opened.clone())
                .map_err(|e| crate::error::ClusterError::Storage {
                    path: "full-disk".into(),
                    message: e.to_string(),
                })
        };
        let storage = RaftStorage::with_opener(opener, "full-disk".into()).expect("tables");
        let store = LogStore::open(&storage).expect("open log");
        (disk, storage, store)
    }

    /// A full disk holds the write it hits: neither the append callback nor the vote hears of
    /// it (openraft would take an error as fatal and stop this node's Raft until a restart, and
    /// must not take the entry as durable either), `write_refused` says so, and nothing panics.
    /// Once space returns the held writes land, in order, through a reopened database (redb
    /// refuses every write on a handle that saw an I/O error).
    #[tokio::test]
    async fn a_full_disk_holds_the_write_until_space_returns_and_then_takes_it() {
        use std::sync::atomic::Ordering::SeqCst;
        let (disk, storage, mut store) = on_a_disk_that_fills();
        append(&mut store, 1..=2).await;
        let mut refused = store.write_refused();
        assert!(!*refused.borrow_and_update());

        disk.full.store(true, SeqCst);
        let (tx, mut flushed) = TypeConfig::oneshot();
        store
            .append((3..=3).map(|i| entry(1, i)), IOFlushed::signal(tx))
            .await
            .expect("queued");
        let told = tokio::time::timeout(Duration::from_secs(5), refused.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(told, "the refusal is told");
        assert!(
            flushed.try_recv().is_err(),
            "a refused write is reported neither durable nor failed"
        );
        let vote = Vote::from_leader_id(
            openraft::vote::leader_id_std::LeaderId::new(2, NodeId(1)),
            true,
        );
        let mut voter = store.clone();
        let saved = tokio::spawn(async move { voter.save_vote(&vote).await });

        // Space is back: the held append, then the vote, land.
        disk.full.store(false, SeqCst);
        let flushed = tokio::time::timeout(Duration::from_secs(5), flushed)
            .await
            .expect("the held append lands once space returns")
            .expect("the callback is called");
        assert!(flushed.is_ok(), "{flushed:?}");
        let saved = tokio::time::timeout(Duration::from_secs(5), saved)
            .await
            .expect("the held vote lands")
            .expect("join");
        assert!(saved.is_ok(), "{saved:?}");
        assert!(!*refused.borrow(), "the refusal is over");
        // On disk, not only in the mirror.
        let db = storage.db().expect("reopened");
        let on_disk = load(&db).expect("load");
        assert_eq!(
            on_disk.entries.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(on_disk.vote, Some(vote));
    }

    /// A node that stops while its disk refuses a write fails that write instead of holding
    /// it: openraft's core, which may be waiting on a vote, must be able to end (`herd down`
    /// on a full disk).
    #[tokio::test]
    async fn a_stopping_node_fails_the_held_write_so_raft_can_end() {
        use std::sync::atomic::Ordering::SeqCst;
        let (disk, storage, store) = on_a_disk_that_fills();
        let mut refused = store.write_refused();
        disk.full.store(true, SeqCst);
        let vote = Vote::from_leader_id(
            openraft::vote::leader_id_std::LeaderId::new(2, NodeId(1)),
            true,
        );
        let mut voter = store.clone();
        let saved = tokio::spawn(async move { voter.save_vote(&vote).await });
        let told = tokio::time::timeout(Duration::from_secs(5), refused.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(told, "the refusal is told");
        assert!(!saved.is_finished(), "a refused vote is held");

        storage.stop_flag().store(true, SeqCst);
        let saved = tokio::time::timeout(Duration::from_secs(5), saved)
            .await
            .expect("a stopping node gives the held vote up")
            .expect("join");
        assert!(saved.is_err(), "given up, the vote is not reported saved");
    }

    /// A snapshot the full disk refuses is held, not failed (openraft would stop this node's
    /// Raft), and saved once space returns.
    #[tokio::test]
    async fn a_snapshot_the_full_disk_refuses_is_held_until_space_returns() {
        use openraft::RaftSnapshotBuilder;
        use openraft::storage::RaftStateMachine;
        use std::sync::atomic::Ordering::SeqCst;
        let (disk, storage, _store) = on_a_disk_that_fills();
        let (mut sm, _registry) = crate::raft::state_machine::StateMachine::new(&storage);
        let mut builder = sm.get_snapshot_builder().await;
        disk.full.store(true, SeqCst);
        let build = tokio::spawn(async move { builder.build_snapshot().await });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !build.is_finished(),
            "a refused snapshot is held, not failed"
        );
        disk.full.store(false, SeqCst);
        let built = tokio::time::timeout(Duration::from_secs(5), build)
            .await
            .expect("saved within 5 s of space returning")
            .expect("the build task")
            .expect("the snapshot");
        let stored = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(stored.meta, built.meta);
    }
}
