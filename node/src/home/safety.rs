//! The home's ownership and mode checks (OpenSSH `StrictModes`, applied to `$HERD_HOME`).
//!
//! Rules, in the words of the error messages:
//! - a parent of the home must be owned by root or by herd's user, and be writable by nobody
//!   else unless it has the sticky bit (then others cannot rename or remove what is ours in it,
//!   which is why a home under `/tmp` is fine). Every parent up to `/` is checked, both along
//!   the path as written (a symlink is only as safe as the directory holding it) and along the
//!   resolved path (the real directories the files end up in);
//! - the home and every directory directly in it (`logs/`, `raft/`, ...) must be owned by
//!   herd's user and writable by neither group nor others.
//!
//! The judgement is a pure function of (owner, mode) so the rules are tested without chown.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why herd refuses a home; the message names the path, what is wrong and the fix.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeHome {
    #[error(
        "{path} is owned by uid {owner}, but herd runs as uid {me}: that user could replace \
         state.json and have herd run their commands as uid {me}. Fix: point HERD_HOME at a \
         directory uid {me} owns, or if {path} is really yours, check its contents and \
         `chown -R {me} {path}`"
    )]
    NotOwned { path: String, owner: u32, me: u32 },
    #[error(
        "{path} is writable by {who} (mode {mode:04o}): another user could plant files or \
         symlinks in it for herd (uid {me}) to follow. Fix: check its contents and \
         `chmod go-w {path}`"
    )]
    Writable {
        path: String,
        who: &'static str,
        mode: u32,
        me: u32,
    },
    #[error(
        "{path}, a parent of herd home {home}, is owned by uid {owner}, neither root nor herd's \
         uid {me}: that user could move the home aside and put their own in its place. Fix: \
         choose a HERD_HOME whose parents belong to root or uid {me}"
    )]
    ParentNotOwned {
        path: String,
        home: String,
        owner: u32,
        me: u32,
    },
    #[error(
        "{path}, a parent of herd home {home}, is writable by {who} without the sticky bit \
         (mode {mode:04o}): another user could move the home aside and put their own in its \
         place. Fix: `chmod go-w {path}` (or `chmod +t {path}` for a shared directory like \
         /tmp), or choose a HERD_HOME whose parents only root and uid {me} can write"
    )]
    ParentWritable {
        path: String,
        home: String,
        who: &'static str,
        mode: u32,
        me: u32,
    },
    #[error(
        "{path} is not a directory; point HERD_HOME at a directory (herd creates it if missing)"
    )]
    NotADirectory { path: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnsafeHome {
    let path = path.display().to_string();
    move |source| UnsafeHome::Io {
        action,
        path,
        source,
    }
}

fn writers(mode: u32) -> Option<&'static str> {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("its group and everyone"),
        (true, false) => Some("its group"),
        (false, true) => Some("everyone"),
        (false, false) => None,
    }
}

/// The home itself, or a directory in it.
pub(super) fn judge_own(path: &Path, owner: u32, mode: u32, me: u32) -> Result<(), UnsafeHome> {
    let path = path.display().to_string();
    if owner != me {
        return Err(UnsafeHome::NotOwned { path, owner, me });
    }
    match writers(mode) {
        Some(who) => Err(UnsafeHome::Writable {
            path,
            who,
            mode: mode & 0o7777,
            me,
        }),
        None => Ok(()),
    }
}

/// A parent of the home.
pub(super) fn judge_parent(
    path: &Path,
    home: &Path,
    owner: u32,
    mode: u32,
    me: u32,
) -> Result<(), UnsafeHome> {
    let (path, home) = (path.display().to_string(), home.display().to_string());
    if owner != 0 && owner != me {
        return Err(UnsafeHome::ParentNotOwned {
            path,
            home,
            owner,
            me,
        });
    }
    let sticky = mode & 0o1000 != 0;
    match writers(mode) {
        Some(who) if !sticky => Err(UnsafeHome::ParentWritable {
            path,
            home,
            who,
            mode: mode & 0o7777,
            me,
        }),
        _ => Ok(()),
    }
}

/// Every existing parent of `home` along the path as written (symlinks followed to judge the
/// directory each one names; the directory holding a symlink is itself a parent checked here).
pub(super) fn check_parents(home: &Path, me: u32) -> Result<(), UnsafeHome> {
    for parent in home.ancestors().skip(1) {
        if parent.as_os_str().is_empty() {
            continue;
        }
        match std::fs::metadata(parent) {
            Ok(m) => judge_parent(parent, home, m.uid(), m.mode(), me)?,
            // Created below by herd itself, 0700.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", parent)(e)),
        }
    }
    Ok(())
}

/// Resolves the home and checks the real directory and all its real parents. Returns the
/// resolved path.
pub(super) fn check_resolved(home: &Path, me: u32) -> Result<PathBuf, UnsafeHome> {
    let real = std::fs::canonicalize(home).map_err(io_err("resolve", home))?;
    let m = std::fs::metadata(&real).map_err(io_err("inspect", &real))?;
    if !m.is_dir() {
        return Err(UnsafeHome::NotADirectory {
            path: home.display().to_string(),
        });
    }
    judge_own(&real, m.uid(), m.mode(), me)?;
    for parent in real.ancestors().skip(1) {
        let pm = std::fs::metadata(parent).map_err(io_err("inspect", parent))?;
        judge_parent(parent, home, pm.uid(), pm.mode(), me)?;
    }
    Ok(real)
}

/// Each directory directly in the home (not symlinks: nothing in the home is opened through
/// one, see `supervisor::logs::open_append`).
pub(super) fn check_subdirs(real: &Path, me: u32) -> Result<(), UnsafeHome> {
    let entries = std::fs::read_dir(real).map_err(io_err("list", real))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", real))?;
        let path = entry.path();
        let m = std::fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
        if m.is_dir() {
            judge_own(&path, m.uid(), m.mode(), me)?;
        }
    }
    Ok(())
}

/// Creates `dir` 0700 when missing (and its missing parents with `recursive`).
pub(super) fn create_private_dir(dir: &Path, recursive: bool) -> Result<(), UnsafeHome> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create", dir)(e)),
    }
}

/// Our own home, already judged safe: drop any read/execute bits for others (the socket
/// inside relies on a 0700 home).
pub(super) fn tighten(real: &Path) -> Result<(), UnsafeHome> {
    let m = std::fs::metadata(real).map_err(io_err("inspect", real))?;
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(real, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod 700", real))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;
    use std::os::unix::fs::PermissionsExt;

    const ME: u32 = 1000;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_rules_on_owner_and_mode() {
        let (p, h) = (Path::new("/x"), Path::new("/x/home"));
        assert!(judge_own(p, ME, 0o40700, ME).is_ok());
        assert!(
            judge_own(p, ME, 0o40755, ME).is_ok(),
            "readable is not writable"
        );
        let e = judge_own(p, 0, 0o40700, ME).unwrap_err().to_string();
        assert!(
            e.contains("/x is owned by uid 0") && e.contains("chown"),
            "{e}"
        );
        let e = judge_own(p, ME, 0o40770, ME).unwrap_err().to_string();
        assert!(
            e.contains("its group (mode 0770)") && e.contains("chmod go-w /x"),
            "{e}"
        );
        assert!(
            judge_own(p, ME, 0o41777, ME).is_err(),
            "sticky does not save the home"
        );

        assert!(judge_parent(p, h, 0, 0o40755, ME).is_ok());
        assert!(judge_parent(p, h, ME, 0o40755, ME).is_ok());
        assert!(judge_parent(p, h, 0, 0o41777, ME).is_ok(), "/tmp");
        let e = judge_parent(p, h, 0, 0o40777, ME).unwrap_err().to_string();
        assert!(
            e.contains("a parent of herd home /x/home")
                && e.contains("everyone without the sticky bit"),
            "{e}"
        );
        assert!(
            judge_parent(p, h, 0, 0o40775, ME).is_err(),
            "group-writable"
        );
        let e = judge_parent(p, h, 65534, 0o40755, ME)
            .unwrap_err()
            .to_string();
        assert!(e.contains("owned by uid 65534, neither root"), "{e}");
    }

    // The tests below run on real directories; they need root (to chown), as the e2e tests.
    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn a_new_home_is_created_0700_with_its_logs() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("a/b/home"));
        home.ensure().unwrap();
        for d in [home.root().to_path_buf(), home.logs_dir()] {
            let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // Our own readable home is tightened, not refused.
        chmod(home.root(), 0o755);
        home.ensure().unwrap();
        assert_eq!(
            std::fs::metadata(home.root()).unwrap().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_home_writable_by_others_or_owned_by_another_uid_is_refused_and_left_alone() {
        if !root() {
            return eprintln!("skipped: needs root to chown");
        }
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        home.ensure().unwrap();

        chmod(home.root(), 0o777);
        let e = home.ensure().unwrap_err().to_string();
        assert!(
            e.contains("writable by its group and everyone (mode 0777)"),
            "{e}"
        );
        assert_eq!(
            std::fs::metadata(home.root()).unwrap().mode() & 0o777,
            0o777
        );
        chmod(home.root(), 0o700);

        std::os::unix::fs::chown(home.root(), Some(65534), None).unwrap();
        let e = home.ensure().unwrap_err().to_string();
        assert!(
            e.contains("is owned by uid 65534, but herd runs as uid 0"),
            "{e}"
        );
        std::os::unix::fs::chown(home.root(), Some(0), None).unwrap();

        std::os::unix::fs::chown(home.logs_dir(), Some(65534), None).unwrap();
        let e = home.ensure().unwrap_err().to_string();
        assert!(e.contains("logs is owned by uid 65534"), "{e}");
    }

    #[test]
    fn a_parent_writable_by_others_needs_the_sticky_bit() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o777);
        let home = Home::at(shared.join("home"));
        let e = home.ensure().unwrap_err().to_string();
        assert!(e.contains("without the sticky bit"), "{e}");
        assert!(
            !home.root().exists(),
            "nothing is created under an unsafe parent"
        );
        chmod(&shared, 0o1777);
        home.ensure().unwrap();
    }

    #[test]
    fn a_symlinked_home_is_judged_by_the_link_s_directory_and_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let link = open.join("home");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::fs::create_dir(&real).unwrap();
        // The link sits in a world-writable directory: anyone could re-point it.
        assert!(Home::at(link).ensure().is_err());
        // A link in a safe directory to a safe target is followed.
        let safe_link = dir.path().join("home");
        std::os::unix::fs::symlink(&real, &safe_link).unwrap();
        Home::at(safe_link).ensure().unwrap();
        // ... but not to a target under an unsafe parent.
        let bad_real = open.join("real");
        std::fs::create_dir(&bad_real).unwrap();
        chmod(&bad_real, 0o700);
        let link2 = dir.path().join("home2");
        std::os::unix::fs::symlink(&bad_real, &link2).unwrap();
        let e = Home::at(link2).ensure().unwrap_err().to_string();
        assert!(e.contains("without the sticky bit"), "{e}");
    }
}
