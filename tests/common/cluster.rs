//! The cluster harness shared by the cluster end-to-end tests: a real `redis-server` on a free
//! loopback port, and real `herd` daemons (each its own HERD_HOME and address on 127.0.0.x)
//! whose config.toml enables the cluster.

use super::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const FORM: Duration = Duration::from_secs(30);

/// A real redis-server on a free loopback port, killed on drop.
pub struct Redis {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Self {
        Self::on(free_port())
    }

    pub fn on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        wait_until("redis to accept connections", SECS_10, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One cluster node: a herd home whose config.toml enables the cluster.
pub struct Node {
    pub herd: Herd,
    pub addr: String,
    /// Learned from the first status answer; kept so a killed node still has a name.
    id: std::cell::OnceCell<u64>,
}

/// A free port on 127.0.0.`host`.
pub fn free_addr(host: u8) -> String {
    let l = std::net::TcpListener::bind(("127.0.0.".to_string() + &host.to_string(), 0))
        .expect("bind 127.0.0.x");
    l.local_addr().unwrap().to_string()
}

pub fn secret_file(dir: &std::path::Path, secret: &str) -> String {
    let p = dir.join("cluster.key");
    std::fs::write(&p, secret).unwrap();
    p.display().to_string()
}

impl Node {
    pub fn new(host: u8, discovery: &str, voters: usize, secret: &str) -> Self {
        Self::with(host, discovery, voters, secret, "")
    }

    /// `extra`: more `[cluster]` lines (e.g. shortened master intervals).
    pub fn with(host: u8, discovery: &str, voters: usize, secret: &str, extra: &str) -> Self {
        Self::labeled(host, discovery, voters, secret, "", extra)
    }

    /// `labels`: more inline-table entries besides `host`, e.g. `role = "web", zone = "a"`.
    /// `{addr}` in `discovery` and `extra` becomes the node's address.
    pub fn labeled(
        host: u8,
        discovery: &str,
        voters: usize,
        secret: &str,
        labels: &str,
        extra: &str,
    ) -> Self {
        Self::in_home(Herd::new(), host, discovery, voters, secret, labels, extra)
    }

    /// Like `labeled`, in a home the caller made (e.g. on a small filesystem of its own).
    pub fn in_home(
        herd: Herd,
        host: u8,
        discovery: &str,
        voters: usize,
        secret: &str,
        labels: &str,
        extra: &str,
    ) -> Self {
        let sep = if labels.is_empty() { "" } else { ", " };
        std::fs::create_dir_all(herd.home.path()).unwrap();
        let addr = free_addr(host);
        let key = secret_file(herd.home.path(), secret);
        std::fs::write(
            herd.path("config.toml"),
            format!(
                "[cluster]\nenabled = true\nname = \"e2e\"\nadvertise = \"{addr}\"\nlisten = \"{addr}\"\ndiscovery = \"{discovery}\"\nvoters = {voters}\nsecret_file = \"{key}\"\nlabels = {{ host = \"h{host}\"{sep}{labels} }}\n{}",
                extra.replace("{addr}", &addr),
                discovery = discovery.replace("{addr}", &addr),
            ),
        )
        .unwrap();
        let node = Self {
            herd,
            addr,
            id: std::cell::OnceCell::new(),
        };
        node.herd.ok(&["up"]);
        node
    }

    pub fn status(&self) -> Option<Value> {
        let out = self.herd.run(&["cluster", "status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    pub fn leader(&self) -> Option<u64> {
        self.status()?["leader_id"].as_u64()
    }

    pub fn id(&self) -> u64 {
        *self.id.get_or_init(|| {
            let mut id = None;
            wait_until("the node to know its id", SECS_10, || {
                id = self.status().and_then(|s| s["node_id"].as_u64());
                id.is_some()
            });
            id.unwrap_or_default()
        })
    }

    pub fn apps(&self, stale: bool) -> Vec<String> {
        let args: &[&str] = if stale {
            &["cluster", "apps", "--json", "--stale"]
        } else {
            &["cluster", "apps", "--json"]
        };
        let out = self.herd.run(args);
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(String::from))
            .collect()
    }

    pub fn deploy(&self, name: &str) {
        let file = self.herd.app_file(
            &format!("{name}.toml"),
            &format!("[[app]]\nname = \"{name}\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n"),
        );
        self.herd.ok(&["cluster", "deploy", &file]);
    }
}

/// Every node in `nodes` agrees on one leader, which counts `voters` voters and `learners`
/// learners (standbys in `nodes`) among its members. Returns the leader's id.
pub fn wait_formed(nodes: &[&Node], voters: usize, learners: usize) -> u64 {
    let mut leader = 0;
    wait_until(
        &format!(
            "{} nodes to agree on a leader with {voters} voters and {learners} learners",
            nodes.len()
        ),
        FORM,
        || {
            let statuses: Vec<Value> = nodes.iter().filter_map(|n| n.status()).collect();
            if statuses.len() != nodes.len() {
                return false;
            }
            let leaders: Vec<Option<u64>> =
                statuses.iter().map(|s| s["leader_id"].as_u64()).collect();
            let Some(first) = leaders[0] else {
                return false;
            };
            if leaders.iter().any(|l| *l != Some(first)) {
                return false;
            }
            let Some(on_leader) = statuses
                .iter()
                .find(|s| s["node_id"].as_u64() == Some(first))
            else {
                return false;
            };
            let count = |list: &str, role: &str| {
                on_leader[list]
                    .as_array()
                    .map(|m| m.iter().filter(|x| x["role"] == role).count())
                    .unwrap_or(0)
            };
            leader = first;
            // `members` keeps Raft's names; `nodes` calls a learner a standby.
            count("members", "voter") == voters
                && count("members", "learner") == learners
                && count("nodes", "voter") == voters
                && count("nodes", "standby") == learners
        },
    );
    leader
}

/// Three voters with the same secret on 127.0.0.1-3.
pub fn three(url: &str) -> [Node; 3] {
    [1, 2, 3].map(|i| Node::new(i, url, 3, "s3cret"))
}

pub fn by_id<'a>(nodes: &'a [&'a Node], id: u64) -> &'a Node {
    nodes
        .iter()
        .find(|n| n.id() == id)
        .copied()
        .expect("a node with that id")
}

/// Master intervals shortened from 2 s / 60 s / 90 s so a node's death shows in seconds.
pub const FAST_MASTER: &str =
    "heartbeat_interval_ms = 200\nhealth_sweep_interval_ms = 500\noffline_timeout_ms = 2000\n";

/// Three voters on 127.0.0.1-3 with the shortened master intervals.
pub fn fast_three(url: &str) -> Vec<Node> {
    (1..=3)
        .map(|i| Node::with(i, url, 3, "s3cret", FAST_MASTER))
        .collect()
}

/// Cluster instances of `app` this node runs, by instance index, from its own `herd ps`.
pub fn running_here(n: &Node, app: &str) -> Vec<u64> {
    let out = n.herd.run(&["ps", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let prefix = format!("{app}@");
    rows.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "running")
        .filter_map(|r| r["name"].as_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

pub fn placement_of(nodes: &[&Node], app: &str) -> Vec<Vec<u64>> {
    nodes.iter().map(|n| running_here(n, app)).collect()
}

/// SIGKILLs a node's daemon and every app it runs, as a host dying would.
pub fn kill_with_apps(n: &Node) {
    let pids: Vec<u64> = n
        .herd
        .ps()
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    n.herd.ok(&["kill"]);
    for p in pids {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The `health` of node `id` in `cluster nodes --json`.
pub fn health_of(nodes: &Value, id: u64) -> Option<String> {
    nodes
        .as_array()?
        .iter()
        .find(|n| n["id"].as_u64() == Some(id))
        .and_then(|n| n["health"].as_str().map(String::from))
}

pub fn node_status(view: &Value, id: u64) -> Option<String> {
    view["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"].as_u64() == Some(id))
        .and_then(|n| n["status"].as_str().map(String::from))
}

/// Instances of `app` running per node, in the order of `nodes`.
pub fn counts_of(nodes: &[&Node], app: &str) -> Vec<usize> {
    nodes.iter().map(|n| running_here(n, app).len()).collect()
}

/// Until the master has rolled today's uptime samples of all `nodes` into the registry, as
/// `n`'s `herd cluster uptime --json` shows them.
pub fn wait_uptime_samples(n: &Node, nodes: usize) {
    wait_until(
        "uptime samples of every node",
        Duration::from_secs(30),
        || {
            let v = n.herd.json(&["cluster", "uptime", "--json", "--days", "1"]);
            v["nodes"].as_array().is_some_and(|all| {
                all.len() == nodes
                    && all
                        .iter()
                        .all(|n| n["days"][0]["total_samples"].as_u64().unwrap_or(0) > 0)
            })
        },
    );
}
