//! Three herd daemons as separate processes on 127.0.0.11-13, static seeds, no Redis, no
//! HTTP (as `bench/idle-agent.sh` starts them). One private temporary directory holds the
//! cluster secret and the three homes; dropping the cluster SIGKILLs whatever still runs with
//! one of those homes and removes the directory.

use super::writes::{self, Load};
use super::{Cluster, MEMBERS, View};
use crate::cleanup::kill_all_with_env;
use crate::error::{Context, Result};
use crate::herd::{DEADLINE, run_any_status, run_checked};
use crate::tools::captured;
use serde_json::Value;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A status command that takes longer than this counts as "no answer" while polling.
const STATUS_LIMIT: Duration = Duration::from_secs(5);

pub struct HerdCluster {
    exe: PathBuf,
    label: String,
    dir: TempDir,
}

impl HerdCluster {
    /// Writes the three configs and runs `herd up` in each home (it returns once the daemon
    /// answers; the cluster forms after).
    pub fn up(exe: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("herd-bench-cluster-")
            .tempdir()
            .context(|| "cannot create a temporary directory".to_string())?;
        let (out, _) = run_checked(
            captured(Command::new(exe).arg("--version")),
            "herd --version",
        )?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let cluster = Self {
            exe: exe.to_path_buf(),
            label: version,
            dir,
        };
        let key = cluster.dir.path().join("cluster.key");
        write_private(&key, "herd-bench-cluster-secret")?;
        let port = free_port()?;
        let seeds: Vec<String> = (0..MEMBERS).map(|i| addr(i, port)).collect();
        for i in 0..MEMBERS {
            let home = cluster.home(i);
            std::fs::create_dir(&home).context(|| format!("cannot create {}", home.display()))?;
            set_mode(&home, 0o700)?;
            let config = format!(
                "[cluster]\nenabled = true\nname = \"bench\"\nadvertise = \"{a}\"\nlisten = \"{a}\"\n\
                 discovery = \"static:{seeds}\"\nvoters = 3\nsecret_file = \"{key}\"\n",
                a = addr(i, port),
                seeds = seeds.join(","),
                key = key.display()
            );
            let file = home.join("config.toml");
            std::fs::write(&file, config).context(|| format!("cannot write {}", file.display()))?;
        }
        for i in 0..MEMBERS {
            cluster.start(i)?;
        }
        Ok(cluster)
    }

    fn home(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}", i + 1))
    }

    fn command(&self, i: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .env("HERD_HOME", self.home(i))
            .env("HERD_HTTP_LISTEN", "")
            .env("XDG_CONFIG_HOME", self.home(i).join("xdg-config"))
            .env_remove("HERD_CONTEXT")
            .env_remove("HERD_HOST")
            .env_remove("HERD_LOG_LEVEL")
            .env_remove("HERD_CLUSTER_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `herd up` in member `i`'s home, its output to `up.log` there (the daemon keeps
    /// whatever it inherits open, and a pipe would leave the bench waiting for its end).
    fn start(&self, i: usize) -> Result<()> {
        let log = self.home(i).join("up.log");
        let file =
            std::fs::File::create(&log).context(|| format!("cannot create {}", log.display()))?;
        let err = file
            .try_clone()
            .context(|| format!("cannot reopen {}", log.display()))?;
        let mut cmd = self.command(i, &["up"]);
        cmd.stdout(file).stderr(err);
        let what = format!("herd up (member {})", i + 1);
        let (out, _) = run_any_status(&mut cmd, &what, DEADLINE)?;
        if !out.status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{what} failed ({}): {}", out.status, text.trim()));
        }
        Ok(())
    }

    fn json(&self, i: usize, args: &[&str], limit: Duration) -> Result<Value> {
        let what = format!("herd {} (member {})", args.join(" "), i + 1);
        let (out, _) = run_any_status(&mut self.command(i, args), &what, limit)?;
        if !out.status.success() {
            return Err(crate::herd::failure(&what, &out));
        }
        serde_json::from_slice(&out.stdout).context(|| format!("{what}: not JSON"))
    }
}

impl Cluster for HerdCluster {
    fn label(&self) -> &str {
        &self.label
    }

    fn view(&self, i: usize) -> Result<View> {
        let v = self.json(i, &["cluster", "status", "--json"], STATUS_LIMIT)?;
        let id = |f: &str| v.get(f).and_then(Value::as_u64).map(|n| n.to_string());
        Ok(View {
            me: id("node_id").ok_or(format!("member {}: status has no node_id", i + 1))?,
            leader: id("leader_id"),
        })
    }

    fn pid(&self, i: usize) -> Result<u32> {
        let v = self.json(i, &["ping", "--json"], DEADLINE)?;
        v.get("pid")
            .and_then(Value::as_u64)
            .map(|p| p as u32)
            .ok_or(format!("member {}: `herd ping --json` has no pid", i + 1))
    }

    fn restart(&mut self, i: usize) -> Result<()> {
        self.start(i)
    }

    fn write_load(&self, clients: usize, secs: u64) -> Result<Load> {
        let sockets: Vec<PathBuf> = (0..MEMBERS)
            .map(|i| self.home(i).join("daemon.sock"))
            .collect();
        writes::herd(&sockets, clients, secs)
    }
}

impl Drop for HerdCluster {
    fn drop(&mut self) {
        for i in 0..MEMBERS {
            let _ = run_any_status(
                &mut self.command(i, &["down"]),
                "herd down",
                Duration::from_secs(15),
            );
            kill_all_with_env("HERD_HOME", &self.home(i));
        }
    }
}

fn addr(i: usize, port: u16) -> String {
    format!("127.0.0.{}:{port}", 11 + i)
}

/// A port free on all three loopback addresses.
fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 11), 0))
            .context(|| "cannot bind 127.0.0.11".to_string())?;
        let port = first
            .local_addr()
            .context(|| "no local address".to_string())?
            .port();
        let others_free = (1..MEMBERS as u8)
            .all(|i| TcpListener::bind((Ipv4Addr::new(127, 0, 0, 11 + i), port)).is_ok());
        if others_free {
            return Ok(port);
        }
    }
    Err("no port free on 127.0.0.11-13".to_string())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).context(|| format!("cannot write {}", path.display()))?;
    set_mode(path, 0o600)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .context(|| format!("cannot chmod {}", path.display()))
}
