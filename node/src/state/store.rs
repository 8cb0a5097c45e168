//! `state.json`, written so that a crash at any instant leaves a readable file: write
//! `state.json.tmp`, fsync it, move the current file to `state.json.bak`, rename the temp
//! file into place, fsync the directory. Reading falls back to the backup when the primary
//! is missing or unreadable.

use serde::{Serialize, de::DeserializeOwned};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot read the state: {primary} ({primary_err}) and its backup {backup} ({backup_err}); \
         move both aside to start with an empty state, or restore one from a copy"
    )]
    BothUnreadable {
        primary: String,
        primary_err: String,
        backup: String,
        backup_err: String,
    },
}

/// Which file the state came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded<T> {
    Fresh,
    Primary(T),
    /// The primary was missing or unreadable; the reason is kept for the log.
    Backup(T, String),
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    }

    pub fn backup_path(&self) -> PathBuf {
        self.sibling(".bak")
    }

    pub fn load<T: DeserializeOwned>(&self) -> Result<Loaded<T>, LoadError> {
        let primary = read_json::<T>(&self.path);
        let primary_err = match primary {
            Ok(Some(v)) => return Ok(Loaded::Primary(v)),
            Ok(None) => "missing".to_string(),
            Err(e) => e,
        };
        let backup = self.backup_path();
        match read_json::<T>(&backup) {
            Ok(Some(v)) => Ok(Loaded::Backup(v, primary_err)),
            Ok(None) if primary_err == "missing" => Ok(Loaded::Fresh),
            Ok(None) => Err(LoadError::BothUnreadable {
                primary: self.path.display().to_string(),
                primary_err,
                backup: backup.display().to_string(),
                backup_err: "missing".into(),
            }),
            Err(backup_err) => Err(LoadError::BothUnreadable {
                primary: self.path.display().to_string(),
                primary_err,
                backup: backup.display().to_string(),
                backup_err,
            }),
        }
    }

    /// Writes `value` atomically. On error nothing visible has changed except, possibly, a
    /// stray temp file that the next write replaces.
    pub fn save<T: Serialize>(&self, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        self.save_bytes(&bytes)
    }

    pub fn save_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.sibling(".tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        match std::fs::rename(&self.path, self.backup_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// `Ok(None)` when the file does not exist; `Err` with a one-line reason when it is unreadable.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("not valid state JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> (tempfile::TempDir, StateFile) {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path().join("state.json"));
        (dir, f)
    }

    #[test]
    fn nothing_on_disk_is_a_fresh_start() {
        let (_d, f) = file();
        assert_eq!(f.load::<Vec<u32>>().unwrap(), Loaded::Fresh);
    }

    #[test]
    fn save_keeps_the_previous_version_as_backup() {
        let (_d, f) = file();
        f.save(&vec![1u32]).unwrap();
        f.save(&vec![2u32]).unwrap();
        assert_eq!(f.load::<Vec<u32>>().unwrap(), Loaded::Primary(vec![2]));
        assert_eq!(
            std::fs::read_to_string(f.backup_path())
                .unwrap()
                .replace(char::is_whitespace, ""),
            "[1]"
        );
    }

    #[test]
    fn corrupt_primary_falls_back_to_backup() {
        let (_d, f) = file();
        f.save(&vec![1u32]).unwrap();
        f.save(&vec![2u32]).unwrap();
        std::fs::write(f.path(), b"{ half a fi").unwrap();
        match f.load::<Vec<u32>>().unwrap() {
            Loaded::Backup(v, why) => {
                assert_eq!(v, vec![1]);
                assert!(why.contains("not valid state JSON"), "{why}");
            }
            other => panic!("expected the backup, got {other:?}"),
        }
    }

    #[test]
    fn both_unreadable_names_both_files() {
        let (_d, f) = file();
        std::fs::write(f.path(), b"garbage").unwrap();
        std::fs::write(f.backup_path(), b"more garbage").unwrap();
        let err = f.load::<Vec<u32>>().unwrap_err().to_string();
        assert!(
            err.contains("state.json (not valid") && err.contains("state.json.bak (not valid"),
            "{err}"
        );
    }
}
