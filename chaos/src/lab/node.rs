//! One lab host: a herd daemon with its own HERD_HOME, started inside its own network
//! namespace. The CLI reaches the daemon over its Unix socket, which is a file, so read-only
//! observation works from the root namespace; writes and `up` run inside the host.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

use super::exec;
use super::exec::Output;
use super::procs;

/// libfaketime (Debian's `faketime`): preloaded into every daemon when present, so the
/// `clock-step` fault can step one daemon's wall clock through [`Node::set_clock_offset`]
/// while the host's clock, and the monotonic and boot clocks, stay as they are.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Whether the daemons run with libfaketime (the `clock-step` fault needs it).
pub fn faketime_available() -> bool {
    std::path::Path::new(LIBFAKETIME).exists()
}

/// How long a CLI call may take before the daemon counts as not answering.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Node {
    pub index: usize,
    pub namespace: String,
    pub ip: String,
    pub home: PathBuf,
    /// Pinned with `role = "agent"`: outside Raft, no raft log, holds only its slice.
    pub agent: bool,
    herd: PathBuf,
    incarnation: AtomicU32,
    /// The Raft node id it last reported (a wiped data dir gets a new one).
    node_id: Mutex<Option<u64>>,
}

impl Node {
    pub fn new(
        index: usize,
        namespace: String,
        ip: String,
        home: PathBuf,
        agent: bool,
        herd: PathBuf,
    ) -> Node {
        Node {
            index,
            namespace,
            ip,
            home,
            agent,
            herd,
            incarnation: AtomicU32::new(0),
            node_id: Mutex::new(None),
        }
    }

    fn env(&self, c: &mut Command) {
        c.env("HERD_HOME", &self.home)
            .env("HERD_LOG_FORMAT", "json")
            .env_remove("HERD_CONFIG")
            .env_remove("HERD_LOG")
            .env_remove("HERD_CLUSTER_SECRET")
            .env_remove("HERD_REDIS_PASSWORD")
            // The operator's own herd contexts must not send the lab's commands elsewhere.
            .env_remove("HERD_CONTEXT")
            .env_remove("HERD_HOST")
            .env("XDG_CONFIG_HOME", self.home.join("xdg-config"));
    }

    /// `herd ARGS` from the root namespace (over the Unix socket).
    pub fn cli(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let mut c = Command::new(&self.herd);
        c.args(args);
        self.env(&mut c);
        exec::run(&mut c, timeout)
    }

    /// `herd ARGS` run inside this host's network namespace.
    pub fn cli_in_host(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.namespace])
            .arg(&self.herd)
            .args(args);
        self.env(&mut c);
        exec::run(&mut c, timeout)
    }

    /// A command (not yet run) for `herd ARGS` inside the host, for callers that must act
    /// while it runs.
    pub fn command_in_host(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.namespace])
            .arg(&self.herd)
            .args(args);
        self.env(&mut c);
        c
    }

    /// The file libfaketime reads the daemon's wall-clock offset from.
    fn clock_offset_file(&self) -> PathBuf {
        self.home.join("wall-clock-offset")
    }

    /// Steps the daemon's wall clock to the host's plus `secs` (seen within a second;
    /// written whole, so it never reads half an offset).
    pub fn set_clock_offset(&self, secs: i64) -> std::io::Result<()> {
        let file = self.clock_offset_file();
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{secs:+}\n"))?;
        std::fs::rename(&tmp, &file)
    }

    /// `herd up` inside the host. Returns the new incarnation and the daemon's pid.
    /// The incarnation counts up before the command runs: the previous daemon is gone by then,
    /// and whatever answers from now on is the new one.
    pub fn up(&self) -> anyhow::Result<(u32, Option<i32>)> {
        let inc = self.incarnation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut c = self.command_in_host(&["up"]);
        if faketime_available() {
            if !self.clock_offset_file().exists() {
                self.set_clock_offset(0)?;
            }
            c.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_offset_file())
                // Wall time only, as a real step: timers and the boot clock run on.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let out = exec::run(&mut c, Duration::from_secs(30))?;
        if !out.ok() {
            bail!("`herd up` on node {} failed: {}", self.index, out.failure());
        }
        Ok((inc, self.daemon_pid()))
    }

    pub fn incarnation(&self) -> u32 {
        self.incarnation.load(Ordering::SeqCst)
    }

    /// The daemon's pid from `daemon.pid`, if that process is alive.
    pub fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.home.join("daemon.pid")).ok()?;
        let pid: i32 = text.split_whitespace().next()?.parse().ok()?;
        procs::alive(pid).then_some(pid)
    }

    /// Sends `sig` to the daemon; returns its pid if there was one.
    pub fn signal_daemon(&self, sig: Signal) -> Option<i32> {
        let pid = self.daemon_pid()?;
        nix::sys::signal::kill(Pid::from_raw(pid), sig).ok()?;
        Some(pid)
    }

    /// SIGKILLs the daemon and waits until it is gone (its apps keep running).
    pub fn kill_daemon(&self) -> Option<i32> {
        let pid = self.signal_daemon(Signal::SIGKILL)?;
        for _ in 0..200 {
            if !procs::alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(pid)
    }

    /// `herd cluster status --json`, or `None` if the daemon does not answer in time.
    pub fn status(&self, timeout: Duration) -> Option<Value> {
        let out = self.cli(&["cluster", "status", "--json"], timeout).ok()?;
        let v: Value = out.ok().then(|| serde_json::from_str(&out.stdout).ok())??;
        if let Some(id) = v["node_id"].as_u64() {
            *self.node_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        }
        Some(v)
    }

    pub fn node_id(&self) -> Option<u64> {
        *self.node_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.home.join("raft")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }
}
