//! The lab: N real herd daemons (the first ones control nodes, all Raft voters; the last ones
//! agents pinned with `role = "agent"`), each its own host in its own network namespace with its own
//! HERD_HOME under one temporary work dir, a real redis-server on the bridge, and a cleanup
//! that always runs (on `Drop`, also while unwinding from a signal or a panic) and then checks
//! that no namespace, interface or process of ours is left.

pub mod exec;
pub mod interrupt;
pub mod netns;
pub mod node;
pub mod preflight;
pub mod procs;
pub mod redis;

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::Serialize;

use crate::history::DaemonStart;
use crate::history::NodeInfo;
use crate::history::Recorder;
pub use netns::LabNet;
pub use node::Node;
pub use redis::Redis;

/// The master's timing, shortened so a few-minute run sees offline detection. Written into
/// `[cluster]` only if the herd under test accepts these keys.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MasterTiming {
    pub heartbeat_interval_ms: u64,
    pub health_sweep_interval_ms: u64,
    pub offline_timeout_ms: u64,
}

#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Control nodes (nodes 1..=nodes): every one a Raft voter.
    pub nodes: usize,
    /// Agents after them (`role = "agent"`).
    pub agents: usize,
    pub herd: PathBuf,
    pub master_timing: Option<MasterTiming>,
    /// Keep the work dir (homes, daemon logs) after cleanup.
    pub keep_dir: bool,
}

/// Raft timing of every lab node: herd's short defaults, written out so the report shows them.
pub const RAFT_TIMING: (u64, u64, u64) = (50, 100, 200);

const SECRET: &str = "chaos-cluster-secret";
const REDIS_PASSWORD: &str = "chaos-redis-password";

pub struct Lab {
    pub net: LabNet,
    pub nodes: Vec<Node>,
    pub redis: Redis,
    work: Option<tempfile::TempDir>,
    work_path: PathBuf,
    /// `Some` once the daemons accepted the shortened master timing.
    pub master_timing: Option<MasterTiming>,
    /// Whether `tc netem` works here, or why not.
    pub netem: Result<(), String>,
    keep_dir: bool,
    torn_down: AtomicBool,
}

impl Lab {
    /// Creates the network, Redis and the homes (no daemon runs yet; see [`Lab::start_all`]).
    pub fn create(cfg: &LabConfig) -> anyhow::Result<Lab> {
        let net = LabNet::chaos();
        if !net.namespaces().is_empty() || net.bridge_exists() {
            eprintln!("herd-chaos: removing what an earlier, killed run left behind");
            net.down()?;
        }
        let work = tempfile::Builder::new()
            .prefix("herd-chaos-")
            .tempdir()
            .context("cannot create the work dir")?;
        let work_path = work.path().to_path_buf();
        let total = cfg.nodes + cfg.agents;
        let nodes = (1..=total)
            .map(|i| {
                Node::new(
                    i,
                    net.namespace(i),
                    net.ip(i),
                    work_path.join(format!("h{i}")),
                    i > cfg.nodes,
                    cfg.herd.clone(),
                )
            })
            .collect();
        eprintln!(
            "herd-chaos: network: {total} hosts ({} control, {} agents) on {}",
            cfg.nodes, cfg.agents, net.bridge
        );
        // Until `Lab` exists its `Drop` cannot clean up, so a half-made network goes here.
        let made = net.up(total).and_then(|()| {
            std::fs::create_dir_all(work_path.join("redis"))?;
            Redis::new(&net.bridge_ip(), work_path.join("redis"), REDIS_PASSWORD)
        });
        let redis = match made {
            Ok(r) => r,
            Err(e) => {
                interrupt::start_cleaning();
                let _ = net.down();
                return Err(e);
            }
        };
        let mut lab = Lab {
            net: net.clone(),
            nodes,
            redis,
            work: Some(work),
            work_path: work_path.clone(),
            master_timing: cfg.master_timing,
            netem: Err("not probed".into()),
            keep_dir: cfg.keep_dir,
            torn_down: AtomicBool::new(false),
        };
        lab.netem = preflight::netem(&net.namespace(1));
        lab.redis.start()?;
        std::fs::write(work_path.join("cluster.key"), SECRET)?;
        for n in &lab.nodes {
            std::fs::create_dir_all(&n.home)?;
            lab.write_config(n, lab.master_timing)?;
        }
        Ok(lab)
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_path
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index - 1]
    }

    /// The control nodes (Raft voters), by index.
    pub fn control(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| !n.agent)
            .map(|n| n.index)
            .collect()
    }

    /// The agents, by index.
    pub fn agents(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.agent)
            .map(|n| n.index)
            .collect()
    }

    pub fn node_infos(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|n| NodeInfo {
                node: n.index,
                namespace: n.namespace.clone(),
                ip: n.ip.clone(),
                home: n.home.display().to_string(),
                agent: n.agent,
            })
            .collect()
    }

    fn write_config(&self, n: &Node, timing: Option<MasterTiming>) -> anyhow::Result<()> {
        let (hb, emin, emax) = RAFT_TIMING;
        let zone = if n.index % 2 == 1 { "a" } else { "b" };
        let mut text = format!(
            "[cluster]\nenabled = true\nname = \"chaos\"\nadvertise = \"{ip}:9701\"\nlisten = \"{ip}:9701\"\n\
             discovery = \"{url}\"\nvoters = {voters}\nsecret_file = \"{key}\"\n\
             labels = {{ host = \"h{i}\", zone = \"{zone}\" }}\n\
             heartbeat_ms = {hb}\nelection_min_ms = {emin}\nelection_max_ms = {emax}\n",
            ip = n.ip,
            url = self.redis.url(),
            voters = self.control().len(),
            key = self.work_path.join("cluster.key").display(),
            i = n.index,
        );
        if n.agent {
            text.push_str("role = \"agent\"\n");
        }
        if let Some(t) = timing {
            text.push_str(&format!(
                "heartbeat_interval_ms = {}\nhealth_sweep_interval_ms = {}\noffline_timeout_ms = {}\n",
                t.heartbeat_interval_ms, t.health_sweep_interval_ms, t.offline_timeout_ms
            ));
        }
        std::fs::write(n.path("config.toml"), text).context("cannot write config.toml")
    }

    /// `herd up` on `node` inside its host, recorded in the history.
    pub fn up(&self, node: &Node, rec: &Recorder) -> anyhow::Result<()> {
        let t_ms = rec.now_ms();
        let (incarnation, pid) = node.up()?;
        rec.with(|h| {
            h.daemon_starts.push(DaemonStart {
                t_ms,
                node: node.index,
                incarnation,
                pid,
            })
        });
        Ok(())
    }

    /// Starts every daemon. If the herd under test refuses the shortened master timing keys,
    /// they are dropped (and the report says so).
    pub fn start_all(&mut self, rec: &Recorder) -> anyhow::Result<()> {
        let first = &self.nodes[0];
        if let Err(e) = self.up(first, rec) {
            let msg = format!("{e:#}");
            if self.master_timing.is_none() || !msg.contains("unknown") {
                return Err(e);
            }
            rec.note(format!(
                "this herd does not accept master timing keys in [cluster] ({msg}); the master runs with its defaults"
            ));
            self.master_timing = None;
            for n in &self.nodes {
                self.write_config(n, None)?;
            }
            self.up(&self.nodes[0], rec)?;
        }
        for n in &self.nodes[1..] {
            self.up(n, rec)?;
        }
        Ok(())
    }

    /// Waits until every node (agents too: they hear the leader through the master's
    /// heartbeats) names the same leader, and that leader counts every control node as a voter
    /// and no agent as a member. Returns the leader's Raft id.
    pub fn wait_formed(&self, limit: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            interrupt::check()?;
            let statuses: Vec<_> = self
                .nodes
                .iter()
                .map(|n| n.status(node::CLI_TIMEOUT))
                .collect();
            let leaders: Vec<Option<u64>> = statuses
                .iter()
                .map(|s| s.as_ref().and_then(|s| s["leader_id"].as_u64()))
                .collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
            {
                let members = statuses
                    .iter()
                    .flatten()
                    .find(|s| s["node_id"].as_u64() == Some(*leader))
                    .and_then(|s| s["members"].as_array().cloned())
                    .unwrap_or_default();
                let voters = members.iter().filter(|m| m["role"] == "voter").count();
                let agent_ids: Vec<u64> = statuses
                    .iter()
                    .zip(&self.nodes)
                    .filter(|(_, n)| n.agent)
                    .filter_map(|(s, _)| s.as_ref()?["node_id"].as_u64())
                    .collect();
                let agent_in_raft = members
                    .iter()
                    .any(|m| m["id"].as_u64().is_some_and(|id| agent_ids.contains(&id)));
                if voters == self.control().len() && !agent_in_raft {
                    return Ok(*leader);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} nodes did not form one cluster within {} s (leaders seen: {leaders:?}); see {}/h*/daemon.log",
                    self.nodes.len(),
                    limit.as_secs(),
                    self.work_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node whose daemon currently has Raft id `id`.
    pub fn by_id(&self, id: u64) -> Option<&Node> {
        self.nodes.iter().find(|n| n.node_id() == Some(id))
    }

    /// Kills everything of ours, removes the network, and says what (if anything) survived.
    /// Idempotent; runs from `Drop` too.
    pub fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        interrupt::start_cleaning();
        eprintln!(
            "herd-chaos: cleanup: stopping every process of the lab and removing the network"
        );
        for round in 0..3 {
            let mut pids: Vec<i32> = (1..=self.nodes.len())
                .flat_map(|i| self.net.pids(i))
                .collect();
            pids.extend(procs::scan(&self.work_path).iter().map(|p| p.pid));
            pids.sort_unstable();
            pids.dedup();
            if pids.is_empty() {
                break;
            }
            if round == 0 {
                eprintln!("  kill -9 {} processes", pids.len());
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        self.redis.kill();
        if let Err(e) = self.net.down() {
            eprintln!("herd-chaos: cleanup: {e:#}");
        }
        let left_ns = self.net.namespaces();
        let left_if = self.net.interfaces();
        let left_procs: Vec<i32> = procs::scan(&self.work_path)
            .iter()
            .filter(|p| p.state != 'Z')
            .map(|p| p.pid)
            .collect();
        if left_ns.is_empty() && left_if.is_empty() && left_procs.is_empty() {
            eprintln!("herd-chaos: cleanup: no namespace, interface or process of the lab is left");
        } else {
            eprintln!(
                "herd-chaos: cleanup INCOMPLETE: namespaces {left_ns:?}, interfaces {left_if:?}, processes {left_procs:?}; run `HERD_LAB_PREFIX={} HERD_LAB_BRIDGE={} deploy/netns-lab.sh down`",
                self.net.prefix, self.net.bridge
            );
        }
    }

    /// Keeps the work dir (daemon logs, homes) past the run; returns its path.
    pub fn keep_work_dir(&mut self) -> PathBuf {
        if let Some(dir) = self.work.take() {
            let _ = dir.keep();
        }
        self.work_path.clone()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
        if self.keep_dir {
            self.keep_work_dir();
        }
    }
}
