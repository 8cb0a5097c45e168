//! The file-system side of a watch, checked before any inotify watch is placed: roots reached
//! through a symbolic link are refused (herd is root; a link planted in the app's tree must not
//! turn into a watch on, and events about, a place its user cannot read), and the number of
//! directories is bounded, since inotify watches are a host-wide budget
//! (`fs.inotify.max_user_watches`) shared by every app and every other program.

use super::rules::Root;
use std::path::{Component, Path, PathBuf};
use tracing::warn;

/// The most directories one app may watch. Counted when its watcher starts (directories
/// created later are watched by notify as they appear, uncounted).
pub const MAX_DIRS: usize = 8192;

/// The roots that exist and are reached from `cwd` without a symbolic link; the others are
/// left out with a warning (all of them left out is an error).
pub fn usable(cwd: &Path, roots: Vec<Root>) -> Result<Vec<Root>, String> {
    if roots.is_empty() {
        return Err("nothing to watch".into());
    }
    let mut out = Vec::with_capacity(roots.len());
    for root in roots {
        match check_path(cwd, &root.dir) {
            Ok(()) => out.push(root),
            Err(why) => warn!(path = %root.dir.display(), "not watched: {why}"),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "none of the watched paths is a directory under {} reached without a symbolic link",
            cwd.display()
        ));
    }
    Ok(out)
}

/// `dir` and every directory between `cwd` and it are real directories (lstat, no link).
fn check_path(cwd: &Path, dir: &Path) -> Result<(), String> {
    let rel = dir
        .strip_prefix(cwd)
        .map_err(|_| "outside the app's cwd".to_string())?;
    let mut at: PathBuf = cwd.to_path_buf();
    let mut steps = vec![at.clone()];
    for c in rel.components() {
        match c {
            Component::Normal(part) => {
                at.push(part);
                steps.push(at.clone());
            }
            Component::CurDir => {}
            _ => return Err("outside the app's cwd".into()),
        }
    }
    for step in steps {
        let meta =
            std::fs::symlink_metadata(&step).map_err(|e| format!("{}: {e}", step.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{} is a symbolic link, which herd does not follow",
                step.display()
            ));
        }
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", step.display()));
        }
    }
    Ok(())
}

/// How many directories the roots cover (links not followed); an error past `MAX_DIRS`.
pub fn count_dirs(roots: &[Root]) -> Result<usize, String> {
    let mut count = 0;
    let mut queue: Vec<PathBuf> = Vec::new();
    for root in roots {
        count += 1;
        if root.recursive {
            queue.push(root.dir.clone());
        }
    }
    while let Some(dir) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // `file_type` of a directory entry does not follow a link.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                count += 1;
                if count > MAX_DIRS {
                    return Err(format!(
                        "the watched paths hold more than {MAX_DIRS} directories (inotify watches are a host-wide limit); narrow `watch` to the directories that hold code"
                    ));
                }
                queue.push(entry.path());
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_behind_a_symbolic_link_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        std::fs::create_dir_all(cwd.join("src/pkg")).unwrap();
        std::os::unix::fs::symlink("/etc", cwd.join("etc")).unwrap();
        std::os::unix::fs::symlink(cwd.join("src"), cwd.join("alias")).unwrap();
        let root = |d: &str| Root {
            dir: cwd.join(d),
            recursive: true,
        };
        let kept = usable(
            cwd,
            vec![root("src"), root("etc"), root("alias/pkg"), root("gone")],
        )
        .unwrap();
        assert_eq!(kept, [root("src")]);
        assert!(usable(cwd, vec![root("etc")]).is_err());
    }

    #[test]
    fn directories_are_counted_without_following_links_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        std::fs::create_dir_all(cwd.join("a/b")).unwrap();
        std::fs::create_dir_all(cwd.join("c")).unwrap();
        std::os::unix::fs::symlink("/usr", cwd.join("usr")).unwrap();
        let root = Root {
            dir: cwd.to_path_buf(),
            recursive: true,
        };
        assert_eq!(count_dirs(std::slice::from_ref(&root)).unwrap(), 4);
        for i in 0..MAX_DIRS {
            std::fs::create_dir(cwd.join(format!("c/{i}"))).unwrap();
        }
        let err = count_dirs(&[root]).unwrap_err();
        assert!(err.contains("more than 8192 directories"), "{err}");
    }
}
