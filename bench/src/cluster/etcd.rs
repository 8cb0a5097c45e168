//! A three-member etcd from the distribution's packages (Debian's `etcd-server` and
//! `etcd-client`, installed here when missing and the bench runs as root) on
//! 127.0.0.21-23, default election timing, data in a temporary directory. Every member
//! carries the bench's marker in its environment; dropping the cluster SIGKILLs them all and
//! removes the directory.

use super::writes::{self, Load};
use super::{Cluster, MEMBERS, View};
use crate::cleanup::kill_group;
use crate::error::{Context, Result};
use crate::herd::run_any_status;
use crate::tools::{ToolHome, captured, install_step, which};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CLIENT_PORT: u16 = 32379;
const PEER_PORT: u16 = 32380;
/// A status command that takes longer than this counts as "no answer" while polling.
const STATUS_LIMIT: Duration = Duration::from_secs(5);

/// `etcd` and `etcdctl`, installed with apt-get if missing. A service the package starts
/// is stopped: only the bench's own members may run.
pub fn install() -> Result<(PathBuf, PathBuf)> {
    if let (Ok(etcd), Ok(etcdctl)) = (which("etcd"), which("etcdctl")) {
        return Ok((etcd, etcdctl));
    }
    if !running_as_root() {
        return Err(
            "etcd is not installed; run `apt-get install -y etcd-server etcd-client` (as root), \
             or run the bench as root to have it install them"
                .to_string(),
        );
    }
    let before = etcd_pids();
    let apt = |update: bool| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        if update {
            cmd.arg("update");
        } else {
            cmd.args(["install", "-y", "etcd-server", "etcd-client"]);
        }
        cmd
    };
    if install_step(&mut apt(false), "apt-get install etcd-server etcd-client").is_err() {
        install_step(&mut apt(true), "apt-get update")?;
        install_step(&mut apt(false), "apt-get install etcd-server etcd-client")?;
    }
    // The package enables an `etcd` service; where an init system started it, stop it.
    for stop in [
        &["systemctl", "stop", "etcd"][..],
        &["service", "etcd", "stop"][..],
    ] {
        let _ = captured(Command::new(stop[0]).args(&stop[1..])).output();
    }
    for pid in etcd_pids().difference(&before) {
        eprintln!("herd-bench: stopping etcd pid {pid}, started by the package install");
        kill_group(*pid);
    }
    Ok((which("etcd")?, which("etcdctl")?))
}

/// The effective uid (second field of `Uid:` in `/proc/self/status`) is 0.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Every process named `etcd`.
fn etcd_pids() -> HashSet<u32> {
    crate::procfs::pids()
        .into_iter()
        .filter(|&p| crate::procfs::stat(p).is_ok_and(|s| s.comm == "etcd"))
        .collect()
}

pub struct EtcdCluster {
    etcd: PathBuf,
    etcdctl: PathBuf,
    label: String,
    home: ToolHome,
    members: Vec<Option<Child>>,
}

impl EtcdCluster {
    pub fn up(etcd: &Path, etcdctl: &Path) -> Result<Self> {
        let (out, _) = run_any_status(
            captured(Command::new(etcd).arg("--version")),
            "etcd --version",
            Duration::from_secs(10),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("etcd Version:"))
            .map(str::trim)
            .unwrap_or("?");
        let mut cluster = Self {
            etcd: etcd.to_path_buf(),
            etcdctl: etcdctl.to_path_buf(),
            label: format!("etcd {version}"),
            home: ToolHome::new("herd-bench-etcd-")?,
            members: (0..MEMBERS).map(|_| None).collect(),
        };
        for i in 0..MEMBERS {
            cluster.start(i)?;
        }
        Ok(cluster)
    }

    /// Starts member `i` on its data directory (new or existing: with a member directory
    /// there, etcd ignores the `--initial-*` flags and rejoins).
    fn start(&mut self, i: usize) -> Result<()> {
        let log_path = self.home.path().join(format!("e{}.log", i + 1));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .context(|| format!("cannot open {}", log_path.display()))?;
        let err = log
            .try_clone()
            .context(|| format!("cannot reopen {}", log_path.display()))?;
        let cluster: Vec<String> = (0..MEMBERS)
            .map(|m| format!("e{}=http://{}", m + 1, host(m, PEER_PORT)))
            .collect();
        let mut cmd = self.home.command(&self.etcd);
        cmd.args([
            format!("--name=e{}", i + 1),
            format!(
                "--data-dir={}",
                self.home.path().join(format!("e{}", i + 1)).display()
            ),
            format!("--listen-client-urls=http://{}", host(i, CLIENT_PORT)),
            format!("--advertise-client-urls=http://{}", host(i, CLIENT_PORT)),
            format!("--listen-peer-urls=http://{}", host(i, PEER_PORT)),
            format!(
                "--initial-advertise-peer-urls=http://{}",
                host(i, PEER_PORT)
            ),
            format!("--initial-cluster={}", cluster.join(",")),
            "--initial-cluster-state=new".to_string(),
            "--initial-cluster-token=herd-bench".to_string(),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
        ])
        // The package's defaults file is not read, but a user's ETCD_* variables would be.
        .env_clear()
        .env(crate::cleanup::MARKER, self.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(log)
        .stderr(err)
        .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .context(|| format!("cannot start etcd member e{}", i + 1))?;
        self.members[i] = Some(child);
        Ok(())
    }

    fn etcdctl(&self, args: &[String]) -> Command {
        let mut cmd = self.home.command(&self.etcdctl);
        cmd.env("ETCDCTL_API", "3").args(args);
        cmd
    }
}

impl Cluster for EtcdCluster {
    fn label(&self) -> &str {
        &self.label
    }

    fn view(&self, i: usize) -> Result<View> {
        let args = [
            format!("--endpoints=http://{}", host(i, CLIENT_PORT)),
            "--dial-timeout=2s".to_string(),
            "--command-timeout=3s".to_string(),
            "endpoint".to_string(),
            "status".to_string(),
            "-w".to_string(),
            "json".to_string(),
        ];
        let what = format!("etcdctl endpoint status (member e{})", i + 1);
        let (out, _) = run_any_status(&mut self.etcdctl(&args), &what, STATUS_LIMIT)?;
        if !out.status.success() {
            return Err(crate::herd::failure(&what, &out));
        }
        let v: Value =
            serde_json::from_slice(&out.stdout).context(|| format!("{what}: not JSON"))?;
        let status = &v[0]["Status"];
        let me = status["header"]["member_id"]
            .as_u64()
            .ok_or(format!("{what}: no member_id in {v}"))?;
        Ok(View {
            me: format!("{me:x}"),
            // 0 means "no leader" to etcd.
            leader: status["leader"]
                .as_u64()
                .filter(|&l| l != 0)
                .map(|l| format!("{l:x}")),
        })
    }

    fn pid(&self, i: usize) -> Result<u32> {
        self.members[i]
            .as_ref()
            .map(Child::id)
            .ok_or(format!("etcd member e{} is not running", i + 1))
    }

    fn restart(&mut self, i: usize) -> Result<()> {
        if let Some(mut old) = self.members[i].take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.start(i)
    }

    fn write_load(&self, clients: usize, secs: u64) -> Result<Load> {
        let endpoints: Vec<String> = (0..MEMBERS)
            .map(|i| format!("http://{}", host(i, CLIENT_PORT)))
            .collect();
        writes::etcd(&endpoints, clients, secs)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in self.members.iter_mut().flatten() {
            let _ = member.kill();
            let _ = member.wait();
        }
        // The home's own drop SIGKILLs anything else still carrying its marker.
    }
}

fn host(i: usize, port: u16) -> String {
    format!("127.0.0.{}:{port}", 21 + i)
}
