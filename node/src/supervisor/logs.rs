//! Instance logs. The child writes its stdout and stderr straight into
//! `logs/<app>-<instance>.log`, opened with O_APPEND; the daemon is never in the data path,
//! so an app keeps logging while the daemon is down. Rotation is copy-then-truncate: the live
//! file keeps its inode (the child's descriptor stays valid) and O_APPEND puts the child's
//! next write at the new end. Bytes written in the few microseconds between the last copy
//! and the truncate are the one thing this can lose.
//!
//! Nothing here opens a path through a symlink (O_NOFOLLOW): the daemon usually runs as root,
//! and a link planted as `logs/web-0.log -> /etc/shadow` must not get that file appended to,
//! truncated or read. Opening such a link fails with an error that says so.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub fn log_path(dir: &Path, app: &str, index: u32) -> PathBuf {
    dir.join(format!("{app}-{index}.log"))
}

/// `web-0.log.1` is the newest rotated file, `.log.{files-1}` the oldest.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Removes an instance's log and every rotated file of it (a job run that left the history).
/// Rotation numbers are tried until one is missing; unlink never follows a symlink.
pub fn remove_all(dir: &Path, app: &str, index: u32) {
    let path = log_path(dir, app, index);
    let _ = std::fs::remove_file(&path);
    for n in 1..=100_000 {
        if std::fs::remove_file(rotated(&path, n)).is_err() {
            break;
        }
    }
}

pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| explain_symlink(e, path))
}

fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| explain_symlink(e, path))
}

/// O_NOFOLLOW's ELOOP ("too many levels of symbolic links") in words a user can act on.
pub fn explain_symlink(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() != Some(libc::ELOOP) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "{} is a symbolic link, which herd never follows in its home; remove it (herd then creates the file itself)",
            path.display()
        ),
    )
}

/// Rotates `path` when it has grown past `max_bytes`, keeping `files` files in all (the live
/// one included). Returns whether it rotated. The live file is opened once, without following
/// a symlink, and truncated through that descriptor; rotated files are created anew (0600).
pub fn rotate_if_needed(path: &Path, max_bytes: u64, files: u32) -> io::Result<bool> {
    let mut live = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(explain_symlink(e, path)),
    };
    let meta = live.metadata()?;
    if !meta.is_file() {
        // A fifo or device planted in the home is never read or truncated.
        return Err(io::Error::other(format!(
            "{} is not a regular file; herd leaves it alone (remove it)",
            path.display()
        )));
    }
    let len = meta.len();
    if len <= max_bytes {
        return Ok(false);
    }
    if files <= 1 {
        // Nothing to keep: the live file simply starts over.
        live.set_len(0)?;
        return Ok(true);
    }
    for n in (1..files - 1).rev() {
        let from = rotated(path, n);
        // rename moves the entry itself, never what a symlink points at.
        if std::fs::symlink_metadata(&from).is_ok() {
            std::fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    // Copy from `max_bytes` before the end to whatever the end is now (the app may still be
    // writing) into a private temp file, then truncate at once: the window for lost bytes is a
    // few syscalls. The copy stops at twice the cap: on a loaded host, chasing an app that
    // writes as fast as it is read would hold the rotation (and let the live file grow) for as
    // long as the app floods. The kernel copies (copy_file_range), so a 10 MiB cap costs no
    // 10 MiB buffer: one such buffer, freed, stayed in a blocking thread's malloc arena and
    // raised the daemon's anonymous memory by the cap for good (seen in an hours-long soak).
    // The rotated file starts at a line start.
    let begin = next_line_start(&live, len - max_bytes, len)?;
    let temp = rotation_temp(path);
    remove_if_there(&temp)?;
    let mut copy = create_private(&temp)?;
    live.seek(SeekFrom::Start(begin))?;
    let copied = io::copy(&mut (&live).take(max_bytes.saturating_mul(2)), &mut copy);
    let truncated = live.set_len(0);
    let kept = copied
        .and_then(|copied| truncated.map(|()| copied))
        .and_then(|copied| {
            let first = rotated(path, 1);
            remove_if_there(&first)?;
            if copied <= max_bytes {
                return std::fs::rename(&temp, &first);
            }
            // The app wrote during the copy: keep the last `max_bytes`, from a line start.
            let start = next_line_start(&copy, copied - max_bytes, copied)?;
            let mut dst = create_private(&first)?;
            copy.seek(SeekFrom::Start(start))?;
            io::copy(&mut copy, &mut dst).map(drop)
        });
    let _ = std::fs::remove_file(&temp);
    kept.map(|()| true)
}

/// Where a rotation of `path` copies to before the truncate: hidden, so a listing of an app's
/// log files never shows it.
fn rotation_temp(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".rotating-{name}"))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A new file only herd can read (never through a symlink, never an existing one).
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The offset just past the first newline at or after `from` in `file` (`len` bytes), if it is
/// not the last byte; else `from`. Reads 64 KiB at a time.
fn next_line_start(mut file: &File, from: u64, len: u64) -> io::Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    file.seek(SeekFrom::Start(from))?;
    let mut at = from;
    while at < len {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(nl) = buf[..n].iter().position(|b| *b == b'\n') {
            let start = at + nl as u64 + 1;
            return Ok(if start < len { start } else { from });
        }
        at += n as u64;
    }
    Ok(from)
}

/// The last `lines` lines of an instance's log, reaching into rotated files when the live one
/// is short. Returns the bytes and the live file's length (where following resumes).
pub fn tail(path: &Path, lines: usize, files: u32) -> io::Result<(Vec<u8>, u64)> {
    let live_len = std::fs::symlink_metadata(path)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut found = 0usize;
    for n in 0..files.max(1) {
        let p = if n == 0 {
            path.to_path_buf()
        } else {
            rotated(path, n)
        };
        let Ok(data) = read_tail_bytes(&p, if n == 0 { Some(live_len) } else { None }) else {
            continue;
        };
        let (start, count) = last_lines_start(&data, lines - found);
        found += count;
        chunks.push(data[start..].to_vec());
        if found >= lines {
            break;
        }
    }
    let mut out = Vec::new();
    for c in chunks.into_iter().rev() {
        out.extend_from_slice(&c);
    }
    Ok((out, live_len))
}

/// Reads a whole log file, at most its last 16 MiB (a tail never needs more).
fn read_tail_bytes(path: &Path, len: Option<u64>) -> io::Result<Vec<u8>> {
    let mut f = open_read(path)?;
    let len = match len {
        Some(l) => l,
        None => f.metadata()?.len(),
    };
    let start = len.saturating_sub(16 * 1024 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut data = Vec::with_capacity((len - start) as usize);
    f.take(len - start).read_to_end(&mut data)?;
    Ok(data)
}

/// Where the last `want` lines of `data` begin, and how many lines that is.
fn last_lines_start(data: &[u8], want: usize) -> (usize, usize) {
    if want == 0 || data.is_empty() {
        return (data.len(), 0);
    }
    // A trailing newline ends the last line rather than starting an empty one.
    let body = if data.ends_with(b"\n") {
        &data[..data.len() - 1]
    } else {
        data
    };
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == want {
                return (i + 1, count);
            }
        }
    }
    (0, count + 1)
}

/// Reads what was appended to `path` since `offset`; a file that shrank was rotated, so
/// reading restarts from its beginning.
pub fn read_new(path: &Path, offset: &mut u64) -> io::Result<Vec<u8>> {
    let mut f = match open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len < *offset {
        *offset = 0;
    }
    if len == *offset {
        return Ok(Vec::new());
    }
    f.seek(SeekFrom::Start(*offset))?;
    let mut data = Vec::new();
    f.take(len - *offset).read_to_end(&mut data)?;
    *offset = len;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-0.log");
        for round in 0..6 {
            std::fs::write(&p, vec![b'a' + round; 5000]).unwrap();
            assert!(rotate_if_needed(&p, 4096, 3).unwrap());
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        }
        assert!(rotated(&p, 1).exists() && rotated(&p, 2).exists());
        assert!(!rotated(&p, 3).exists());
        assert_eq!(std::fs::read(rotated(&p, 1)).unwrap()[0], b'a' + 5);
        assert_eq!(std::fs::read(rotated(&p, 2)).unwrap()[0], b'a' + 4);
    }

    #[test]
    fn an_overshooting_file_keeps_only_its_last_max_bytes_from_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-0.log");
        let text: String = (0..2000).map(|i| format!("line {i:05}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        assert!(rotate_if_needed(&p, 4096, 2).unwrap());
        let kept = std::fs::read_to_string(rotated(&p, 1)).unwrap();
        assert!(kept.len() <= 4096 && kept.len() > 4000, "{}", kept.len());
        assert!(kept.starts_with("line ") && kept.ends_with("line 01999\n"));
    }

    #[test]
    fn small_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-0.log");
        std::fs::write(&p, b"hello\n").unwrap();
        assert!(!rotate_if_needed(&p, 4096, 3).unwrap());
    }

    #[test]
    fn tail_spans_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-0.log");
        std::fs::write(rotated(&p, 1), b"l1\nl2\nl3\n").unwrap();
        std::fs::write(&p, b"l4\nl5\n").unwrap();
        let (out, len) = tail(&p, 4, 3).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "l2\nl3\nl4\nl5\n");
        assert_eq!(len, 6);
        let (out, _) = tail(&p, 1, 3).unwrap();
        assert_eq!(out, b"l5\n");
    }

    #[test]
    fn read_new_follows_appends_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-0.log");
        std::fs::write(&p, b"abc").unwrap();
        let mut off = 0;
        assert_eq!(read_new(&p, &mut off).unwrap(), b"abc");
        open_append(&p).unwrap().write_all(b"def").unwrap();
        assert_eq!(read_new(&p, &mut off).unwrap(), b"def");
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(read_new(&p, &mut off).unwrap(), b"x");
    }

    #[test]
    fn a_planted_symlink_is_neither_appended_to_truncated_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, vec![b'v'; 10_000]).unwrap();
        let p = dir.path().join("a-0.log");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let e = open_append(&p).unwrap_err().to_string();
        assert!(e.contains("a-0.log is a symbolic link"), "{e}");
        let e = rotate_if_needed(&p, 4096, 3).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(rotate_if_needed(&p, 4096, 1).is_err());
        assert!(tail(&p, 10, 1).unwrap().0.is_empty());
        let mut off = 0;
        assert!(read_new(&p, &mut off).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), vec![b'v'; 10_000]);

        // A link planted where the newest rotated file goes is replaced, not written through.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, vec![b'x'; 5000]).unwrap();
        std::os::unix::fs::symlink(&victim, rotated(&p, 1)).unwrap();
        assert!(rotate_if_needed(&p, 4096, 2).unwrap());
        assert_eq!(std::fs::read(&victim).unwrap(), vec![b'v'; 10_000]);
        assert!(
            !std::fs::symlink_metadata(rotated(&p, 1))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn rotated_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a-0.log");
        for _ in 0..3 {
            open_append(&p).unwrap().write_all(&[b'a'; 5000]).unwrap();
            assert!(rotate_if_needed(&p, 4096, 3).unwrap());
        }
        for f in [p.clone(), rotated(&p, 1), rotated(&p, 2)] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
}
