//! The daemon's pid lock: `daemon.pid` holds the pid and the process-start signature on two
//! lines, and the daemon keeps an exclusive `flock` on it for its whole life. The kernel drops
//! the lock when the process dies, so a stale file — even one whose pid now belongs to some
//! other process — never blocks a new daemon, and two racing daemons cannot both win.

use crate::supervisor::process::{is_same_process, start_signature};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Held for the daemon's lifetime; dropping it releases the lock.
pub struct PidLock {
    path: PathBuf,
    file: Flock<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// `owner`: `pid N`, or why the winner cannot be named.
    #[error("herd is already running ({owner}) with home {home}; `herd down` stops it")]
    Held { owner: String, home: String },
    #[error("cannot use pid file {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// The pid and signature written in a pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub signature: u64,
}

impl Owner {
    pub fn is_alive(&self) -> bool {
        is_same_process(self.pid, self.signature)
    }
}

pub fn read_owner(path: &Path) -> Option<Owner> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let signature = lines.next()?.trim().parse().ok()?;
    Some(Owner { pid, signature })
}

impl PidLock {
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        loop {
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .mode(0o600)
                // A symlink planted as daemon.pid must not get its target truncated.
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| io_err(crate::supervisor::logs::explain_symlink(e, path)))?;
            let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    let home = path
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    return Err(LockError::Held {
                        owner: describe_owner(wait_for_live_owner(path)),
                        home,
                    });
                }
                Err((_, e)) => return Err(io_err(io::Error::from(e))),
            };
            // A daemon that was exiting may have unlinked the file we just locked: only a
            // lock on the file that is at `path` now counts.
            let on_disk = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e)),
            };
            let held = file.metadata().map_err(io_err)?;
            if (on_disk.dev(), on_disk.ino()) != (held.dev(), held.ino()) {
                continue;
            }
            let me = std::process::id();
            let signature = start_signature(me).unwrap_or(0);
            file.set_len(0).map_err(io_err)?;
            file.write_all(format!("{me}\n{signature}\n").as_bytes())
                .map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            return Ok(Self {
                path: path.to_path_buf(),
                file,
            });
        }
    }

    /// Removes the pid file while still holding the lock (a racing daemon re-checks the inode).
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// The daemon that holds the lock on `path`, as its pid file names it. The winner of a race
/// locks the file before it writes its pid, so until then the file still names the previous
/// owner, who is dead: only a live process with the recorded start signature counts. Polls
/// for up to a second; `None` when no live owner was written by then.
pub fn wait_for_live_owner(path: &Path) -> Option<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        if let Some(owner) = read_owner(path).filter(Owner::is_alive) {
            return Some(owner.pid);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `pid N`, or what can be said without one.
pub fn describe_owner(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "another daemon holds the lock; its pid could not be told yet".into(),
    }
}

/// Whether some daemon holds the lock on `path` right now (without taking it).
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_file_is_refused_with_the_owner_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.pid");
        let lock = PidLock::acquire(&p).unwrap();
        assert!(is_locked(&p));
        let owner = read_owner(&p).unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert!(owner.is_alive());
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts just like another process would.
        match PidLock::acquire(&p) {
            Err(LockError::Held { owner, .. }) => {
                assert_eq!(owner, format!("pid {}", std::process::id()))
            }
            other => panic!("expected Held, got {:?}", other.map(|_| ())),
        }
        lock.release();
        assert!(!p.exists());
    }

    #[test]
    fn a_loser_names_the_winner_never_the_dead_owner_the_file_still_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.pid");
        // A previous owner that has died: a real process, reaped, with its real signature.
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let dead = child.id();
        let signature = start_signature(dead).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::write(&p, format!("{dead}\n{signature}\n")).unwrap();
        // The winner has locked the file but not yet written its pid.
        let winner = File::open(&p).unwrap();
        let winner = Flock::lock(winner, FlockArg::LockExclusiveNonblock).unwrap();
        match PidLock::acquire(&p) {
            Err(e @ LockError::Held { .. }) => {
                let msg = e.to_string();
                assert!(!msg.contains(&dead.to_string()), "{msg}");
                assert!(msg.contains("could not be told"), "{msg}");
            }
            other => panic!("expected Held, got {:?}", other.map(|_| ())),
        }
        // Once the winner has written itself, the loser names it.
        let me = std::process::id();
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let sig = start_signature(me).unwrap();
                std::fs::write(&p, format!("{me}\n{sig}\n")).unwrap();
            })
        };
        match PidLock::acquire(&p) {
            Err(LockError::Held { owner, .. }) => assert_eq!(owner, format!("pid {me}")),
            other => panic!("expected Held, got {:?}", other.map(|_| ())),
        }
        writer.join().unwrap();
        drop(winner);
    }

    #[test]
    fn stale_file_with_a_recycled_pid_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.pid");
        // Our own (live) pid with a start signature that is not ours: a recycled pid.
        std::fs::write(&p, format!("{}\n1\n", std::process::id())).unwrap();
        assert!(!read_owner(&p).unwrap().is_alive());
        let lock = PidLock::acquire(&p).unwrap();
        assert!(read_owner(&p).unwrap().is_alive());
        drop(lock);
    }

    #[test]
    fn a_symlinked_pid_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious\n").unwrap();
        let p = dir.path().join("daemon.pid");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let err = PidLock::acquire(&p).err().expect("refused").to_string();
        assert!(err.contains("daemon.pid is a symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    }
}
