//! Reading a small secret file of the daemon's own (`instance.key`, `secrets.key`): never
//! through a symlink, only a regular file owned by the daemon's user that nobody else may
//! read. Each caller words the fix for its own file.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a private file is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Symlink,
    NotRegular,
    /// Owned by this uid, not the daemon's.
    Owner(u32),
    /// These permission bits (`& 0o777`) let others read it.
    Mode(u32),
    Io(String),
}

/// The first `max` bytes of `path` as text; `Ok(None)` when it does not exist.
pub fn read(path: &Path, max: u64) -> Result<Option<String>, Refusal> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Refusal::Symlink),
        Err(e) => return Err(Refusal::Io(format!("cannot open {}: {e}", path.display()))),
    };
    let meta = f
        .metadata()
        .map_err(|e| Refusal::Io(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(Refusal::Owner(meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(Refusal::Mode(meta.mode() & 0o777));
    }
    let mut text = String::new();
    f.take(max)
        .read_to_string(&mut text)
        .map_err(|e| Refusal::Io(format!("cannot read {}: {e}", path.display())))?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_private_regular_file_of_ours_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        assert_eq!(read(&p, 64), Ok(None));
        std::fs::write(&p, "abc").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&p, 64), Ok(Some("abc".into())));
        assert_eq!(read(&p, 2), Ok(Some("ab".into())));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read(&p, 64), Err(Refusal::Mode(0o640)));
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read(&link, 64), Err(Refusal::Symlink));
        assert_eq!(read(dir.path(), 64), Err(Refusal::NotRegular));
    }
}
