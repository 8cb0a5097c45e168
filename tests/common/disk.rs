//! A small filesystem of its own for a herd home, and a filler that leaves it no byte: how
//! the disk-full tests (`disk.rs`, `cluster_disk.rs`) make a full disk without touching the
//! machine's. Mounting needs root, as the tests and CI run.

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// A tmpfs of `size` mounted on a fresh directory; unmounted (lazily) on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(size: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("herd-disk-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs root to mount a small tmpfs (as CI runs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh herd home on this filesystem, no daemon yet.
    pub fn home(&self) -> super::Herd {
        super::Herd {
            home: tempfile::Builder::new()
                .prefix("home-")
                .tempdir_in(self.path())
                .unwrap(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem refuses another byte.
pub fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    // Then byte by byte, so not even a small write fits.
    while f.write(&[0u8]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    let _ = f.sync_all();
    written
}
