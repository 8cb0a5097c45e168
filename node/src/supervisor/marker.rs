//! The per-home secret that proves a process was started by this herd: a random nonce kept
//! in `$HERD_HOME/instance.key` (0600, owned by the daemon's user), given to every instance
//! as `HERD_MARKER` and looked for in `/proc/PID/environ` when the daemon comes back.
//! Another user can set `HERD_HOME`/`HERD_APP`/`HERD_SLOT` on a process of their own, but
//! cannot read the key nor the environment of root's children, so cannot forge the marker.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The variable that carries the marker into an instance's environment.
pub const MARKER_VAR: &str = "HERD_MARKER";

/// The file, inside the home, that keeps the marker across daemon restarts.
pub const MARKER_FILE: &str = "instance.key";

/// 128 random bits as 32 lowercase hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Marker(String);

impl std::fmt::Debug for Marker {
    // Never printed: a log line must not carry it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Marker(..)")
    }
}

impl Marker {
    /// A fresh random marker.
    pub fn random() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a value found in a process's environment is this marker (constant time, so
    /// probing by timing learns nothing).
    pub fn matches(&self, value: &[u8]) -> bool {
        herd_cluster::constant_time_eq(value, self.0.as_bytes())
    }

    /// The home's marker, created on first use. Refused (with the fix) when the file is a
    /// symlink, not a regular file, not owned by the daemon's user, or readable by others.
    pub fn load_or_create(home: &Path) -> Result<Self, String> {
        let path = home.join(MARKER_FILE);
        match open_existing(&path) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => create(&path),
            Err(e) => Err(e),
        }
    }
}

fn open_existing(path: &Path) -> Result<Option<Marker>, String> {
    use crate::state::private::{self, Refusal};
    let shown = path.display();
    let text = match private::read(path, 1024) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(Refusal::Symlink) => {
            return Err(format!(
                "{shown}: is a symlink; herd keeps its secret marker only in a file of its own — remove the link (a new marker is created)"
            ));
        }
        Err(Refusal::NotRegular) => {
            return Err(format!(
                "{shown}: is not a regular file; remove it and a new marker is created"
            ));
        }
        Err(Refusal::Owner(owner)) => {
            let uid = rustix::process::geteuid().as_raw();
            return Err(format!(
                "{shown}: is owned by uid {owner}, not by the daemon's uid {uid}; another user could forge herd's processes — remove it (a new one is created) or `chown {uid} {shown}`"
            ));
        }
        Err(Refusal::Mode(mode)) => {
            return Err(format!(
                "{shown}: mode {mode:o} lets other users read herd's secret marker; remove it (a new one is created) or `chmod 600 {shown}`"
            ));
        }
        Err(Refusal::Io(e)) => return Err(e),
    };
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{shown}: is not a herd marker (32 hex digits); remove it and a new one is created (instances started with the old one are then not adopted after a daemon crash)"
        ));
    }
    Ok(Some(Marker(text.to_ascii_lowercase())))
}

fn create(path: &PathBuf) -> Result<Marker, String> {
    let marker = Marker::random();
    // O_EXCL + O_NOFOLLOW: a file or link planted meanwhile makes this fail, never followed.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(marker.0.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(marker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_read_back() {
        let home = tempfile::tempdir().unwrap();
        let a = Marker::load_or_create(home.path()).unwrap();
        let b = Marker::load_or_create(home.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 32);
        let meta = std::fs::metadata(home.path().join(MARKER_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_ne!(a, Marker::random());
    }

    #[test]
    fn matches_only_the_exact_value() {
        let m = Marker::random();
        assert!(m.matches(m.as_str().as_bytes()));
        assert!(!m.matches(b""));
        assert!(!m.matches(&m.as_str().as_bytes()[..31]));
        assert!(!m.matches(Marker::random().as_str().as_bytes()));
    }

    #[test]
    fn readable_by_others_or_a_symlink_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(MARKER_FILE);
        Marker::load_or_create(home.path()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Marker::load_or_create(home.path()).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        let err = Marker::load_or_create(home.path()).unwrap_err();
        assert!(err.contains("is a symlink"), "{err}");
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(MARKER_FILE);
        Marker::load_or_create(home.path()).unwrap();
        // The tests run as root (as CI does): hand the file to nobody.
        std::os::unix::fs::chown(&path, Some(65534), None)
            .expect("chown needs root, as the tests run");
        let err = Marker::load_or_create(home.path()).unwrap_err();
        assert!(err.contains("is owned by uid 65534"), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(MARKER_FILE);
        std::fs::write(&path, "hello").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Marker::load_or_create(home.path()).unwrap_err();
        assert!(err.contains("is not a herd marker"), "{err}");
    }
}
