//! `state.json`, written so that a crash at any instant leaves a readable file: write
//! `state.json.tmp`, fsync it, move the current file to `state.json.bak`, rename the temp
//! file into place, fsync the directory. Reading falls back to the backup when the primary
//! is missing, unreadable or fails validation — unless validation refuses the file outright
//! (a state written by a newer herd): then nothing is loaded and nothing is replaced.
//!
//! No path here is opened through a symlink (O_NOFOLLOW): a link planted in the home must not
//! make the daemon read or write some other file.

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
    /// The validation refused the file outright; the files are left as they are.
    #[error("cannot use {path}: {why}")]
    Refused { path: String, why: String },
}

/// What a validation found wrong with a state that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not usable (limits, inconsistent values): try the backup instead.
    Invalid(String),
    /// Must not be used nor replaced (e.g. written by a newer herd): refuse to start.
    Refuse(String),
}

/// `validate(s)?` with a `Result<(), String>` validator means "invalid, try the backup".
impl From<String> for Rejection {
    fn from(why: String) -> Self {
        Rejection::Invalid(why)
    }
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

    /// Without validation (the daemon always validates; tests check the file mechanics).
    #[cfg(test)]
    pub fn load<T: DeserializeOwned>(&self) -> Result<Loaded<T>, LoadError> {
        self.load_validated(|_: &T| Ok(()))
    }

    /// Like `load`, and a file whose content `validate` rejects counts as unreadable (the
    /// backup is tried), except that a `Rejection::Refuse` of either file stops the load.
    pub fn load_validated<T: DeserializeOwned>(
        &self,
        validate: impl Fn(&T) -> Result<(), Rejection>,
    ) -> Result<Loaded<T>, LoadError> {
        let checked = |path: &Path| -> Result<Result<Option<T>, String>, LoadError> {
            Ok(match read_json::<T>(path) {
                Ok(Some(v)) => match validate(&v) {
                    Ok(()) => Ok(Some(v)),
                    Err(Rejection::Invalid(why)) => Err(format!("invalid: {why}")),
                    Err(Rejection::Refuse(why)) => {
                        return Err(LoadError::Refused {
                            path: path.display().to_string(),
                            why,
                        });
                    }
                },
                other => other,
            })
        };
        let primary_err = match checked(&self.path)? {
            Ok(Some(v)) => return Ok(Loaded::Primary(v)),
            Ok(None) => "missing".to_string(),
            Err(e) => e,
        };
        let backup = self.backup_path();
        match checked(&backup)? {
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
        // A fresh file every time: whatever is at the temp path (a leftover, or a planted
        // symlink) is removed, never written through.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
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
    let bytes = match read_nofollow(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("not valid state JSON: {e}"))
}

/// The whole file, refusing a symlink (ELOOP is reported as what it means).
pub fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| crate::supervisor::logs::explain_symlink(e, path))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
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

    #[test]
    fn an_invalid_primary_falls_back_and_a_refusal_stops_the_load_touching_nothing() {
        let (_d, f) = file();
        f.save(&vec![1u32]).unwrap();
        f.save(&vec![2u32, 99]).unwrap();
        let small = |v: &Vec<u32>| -> Result<(), Rejection> {
            if v.iter().any(|n| *n > 50) {
                Err(format!("{v:?} holds a value over 50"))?
            }
            Ok(())
        };
        match f.load_validated(small).unwrap() {
            Loaded::Backup(v, why) => {
                assert_eq!(v, vec![1]);
                assert!(
                    why.contains("invalid: [2, 99] holds a value over 50"),
                    "{why}"
                );
            }
            other => panic!("expected the backup, got {other:?}"),
        }
        let before = std::fs::read(f.path()).unwrap();
        let refuse = |v: &Vec<u32>| match v.first() {
            Some(2) => Err(Rejection::Refuse("written by a newer herd".into())),
            _ => Ok(()),
        };
        let err = f.load_validated(refuse).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot use {}: written by a newer herd", f.path().display())
        );
        assert_eq!(std::fs::read(f.path()).unwrap(), before);
    }

    #[test]
    fn symlinks_are_neither_read_nor_written_through() {
        let (d, f) = file();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"[7]").unwrap();
        std::os::unix::fs::symlink(&victim, f.path()).unwrap();
        // A linked primary is unreadable, not the victim's content.
        let err = f.load::<Vec<u32>>().unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        // A link planted at the temp path is replaced, not written through.
        let tmp = d.path().join("state.json.tmp");
        std::fs::remove_file(f.path()).unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        f.save(&vec![3u32]).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"[7]");
        assert_eq!(f.load::<Vec<u32>>().unwrap(), Loaded::Primary(vec![3]));
    }
}
