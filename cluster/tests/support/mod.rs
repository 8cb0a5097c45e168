//! Test harness: clusters of in-process `ClusterNode`s on loopback, each with its own temp data
//! dir, and polling helpers with deadlines (no sleeps as synchronization).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herd_cluster::ClusterConfig;
use herd_cluster::ClusterNode;
use herd_cluster::Discovery;
use herd_cluster::Registry;
use tokio::time::Instant;

pub const SECRET: &str = "test-secret";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERD_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A free loopback port (bound then released; good enough on a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Polls `check` every 20 ms until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One node slot: its config survives restarts; `node` is `None` while it is down.
pub struct Slot {
    pub cfg: ClusterConfig,
    pub node: Option<ClusterNode>,
}

pub struct TestCluster {
    pub slots: Vec<Slot>,
    _root: tempfile::TempDir,
}

impl TestCluster {
    /// Configs for `n` nodes on 127.0.0.1 with explicit ids 1..=n, not started.
    pub fn configure(n: usize, discovery: impl Fn(&[String]) -> Discovery) -> TestCluster {
        let root = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let discovery = discovery(&addrs);
        let slots = (0..n)
            .map(|i| {
                let listen: SocketAddr = addrs[i].parse().expect("addr");
                let mut cfg = ClusterConfig::new(
                    "test",
                    addrs[i].clone(),
                    listen,
                    discovery.clone(),
                    SECRET,
                    root.path().join(format!("node{}", i + 1)),
                );
                cfg.node_id = Some(i as u64 + 1);
                Slot { cfg, node: None }
            })
            .collect();
        TestCluster { slots, _root: root }
    }

    pub fn static_seeds(addrs: &[String]) -> Discovery {
        format!("static:{}", addrs.join(","))
            .parse()
            .expect("static discovery")
    }

    pub async fn start_all(&mut self) {
        for i in 0..self.slots.len() {
            self.start(i).await;
        }
    }

    pub async fn start(&mut self, i: usize) {
        let node = ClusterNode::start(self.slots[i].cfg.clone())
            .await
            .expect("start node");
        self.slots[i].node = Some(node);
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.slots[i].node.take() {
            node.shutdown().await;
        }
    }

    pub fn node(&self, i: usize) -> &ClusterNode {
        self.slots[i].node.as_ref().expect("node is running")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.slots[i].cfg.data_dir.clone()
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &ClusterNode)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (i, n)))
    }

    /// Waits until every running node agrees on one leader that is itself running; returns its
    /// slot index.
    pub async fn agreed_leader(&self, timeout: Duration) -> usize {
        eventually(
            "one leader agreed by all running nodes",
            timeout,
            || async {
                let mut leader = None;
                for (_, n) in self.running() {
                    let s = n.status().await;
                    let l = s.leader_id?;
                    if leader.is_some_and(|x| x != l) {
                        return None;
                    }
                    leader = Some(l);
                }
                let l = leader?;
                self.running().find(|(_, n)| n.id() == l).map(|(i, _)| i)
            },
        )
        .await
    }

    /// Waits until every running node's local replica satisfies `pred`.
    pub async fn all_replicas(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Registry) -> bool,
    ) {
        eventually(what, timeout, || async {
            for (_, n) in self.running() {
                let r: Arc<Registry> = n.read(true).await.ok()?;
                if !pred(&r) {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// Waits until the membership (as the leader reports it) has `voters` voters and `learners`
    /// learners.
    pub async fn membership(&self, voters: usize, learners: usize, timeout: Duration) {
        eventually(
            &format!("{voters} voters and {learners} learners"),
            timeout,
            || async {
                for (_, n) in self.running() {
                    let s = n.status().await;
                    if s.leader_id != Some(n.id()) {
                        continue;
                    }
                    let v = s.members.iter().filter(|m| m.role == "voter").count();
                    let l = s.members.iter().filter(|m| m.role == "learner").count();
                    return (v == voters && l == learners).then_some(());
                }
                None
            },
        )
        .await
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.slots.len() {
            self.stop(i).await;
        }
    }
}

/// A throwaway `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
}

impl RedisServer {
    /// Starts redis-server (required: the test fails if it is not installed) with a password.
    pub async fn start(password: &str) -> RedisServer {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", password])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server must be installed for this test (apt-get install -y redis-server): {e}"));
        let server = RedisServer { port, child };
        eventually(
            "redis-server accepting connections",
            Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        server
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
