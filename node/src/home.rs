//! Where a daemon keeps its files. Everything lives under one directory, `$HERD_HOME`
//! (default `~/.herd`), so several daemons can share a host (tests do).
//!
//! Whoever can write the home can make the daemon run their commands (`state.json`) or write
//! through a planted symlink, and the daemon usually runs as root. So, like OpenSSH's
//! `StrictModes`, herd uses a home only when nobody but its own user can change it: see
//! [`Home::ensure`] and the `safety` module.

use std::path::{Path, PathBuf};

mod safety;

pub use safety::UnsafeHome;

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$HERD_HOME`, else `$HOME/.herd`.
    pub fn from_env() -> anyhow::Result<Self> {
        if let Some(dir) = std::env::var_os("HERD_HOME").filter(|v| !v.is_empty()) {
            return Ok(Self::at(PathBuf::from(dir)));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("neither HERD_HOME nor HOME is set; set HERD_HOME to the directory herd should use"))?;
        Ok(Self::at(PathBuf::from(home).join(".herd")))
    }

    pub fn at(root: PathBuf) -> Self {
        // Absolute, so a daemon started from another directory finds the same files.
        let root = std::path::absolute(&root).unwrap_or(root);
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("daemon.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn events_file(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// Makes sure the home exists and only this process's user controls it, or says why not
    /// and how to fix it. Checked: every parent (as written and as resolved) is owned by root
    /// or by us and is not writable by others unless sticky (like `/tmp`); the home and each
    /// directory in it are ours and writable by nobody else. A missing home is created 0700
    /// (the socket's safety rests on it too); an existing one of ours is tightened to 0700,
    /// but a home someone else owns or can write is refused, never repaired: they may already
    /// have planted something in it.
    pub fn ensure(&self) -> Result<(), UnsafeHome> {
        let me = rustix::process::geteuid().as_raw();
        safety::check_parents(&self.root, me)?;
        safety::create_private_dir(&self.root, true)?;
        let real = safety::check_resolved(&self.root, me)?;
        safety::tighten(&real)?;
        safety::create_private_dir(&self.logs_dir(), false)?;
        safety::check_subdirs(&real, me)
    }
}
