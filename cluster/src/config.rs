//! What the daemon tells the cluster library: identity, addresses, discovery, secret, timing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::discovery::Discovery;
use crate::discovery::split_host_port;
use crate::error::ClusterError;

/// Cluster settings of one node. `Debug` hides the secret.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Cluster name; one Redis can serve several clusters. `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// `None`: pick a random id once and keep it in `data_dir/node_id`.
    pub node_id: Option<u64>,
    /// host:port other nodes use to reach this node's cluster gRPC.
    pub advertise: String,
    /// Where this node serves the cluster gRPC (Raft + ClusterApi), if `serve_rpc`.
    pub listen: SocketAddr,
    /// Serve the cluster gRPC on `listen` (default). `false`: the daemon mounts
    /// `ClusterNode::rpc_routes()` on its own server instead (e.g. one port for everything).
    pub serve_rpc: bool,
    pub discovery: Discovery,
    /// Voting members wanted (3 or 5).
    pub voters: usize,
    /// Caught-up learners kept ready to replace a lost voter; every node beyond the voters and
    /// the standbys is an agent (no Raft log, no replica: it fetches its own slice).
    pub standbys: usize,
    /// `Auto` lets this node become a voter or standby when the cluster needs one; `Agent`
    /// never joins Raft (and keeps no Raft log on disk).
    pub role: NodeRole,
    /// Shared secret every node-to-node call must present (printable ASCII).
    pub secret: String,
    pub labels: BTreeMap<String, String>,
    /// Raft log, vote and snapshots (`raft.redb`) and the auto node id live here.
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and purge the log) after this many applied entries.
    pub snapshot_every: u64,
    /// A voter unreachable from the leader this long is replaced by a caught-up learner.
    pub replace_voter_after_ms: u64,
    /// How often the master heartbeats every node (spread over the interval per node).
    pub heartbeat_interval_ms: u64,
    /// How often the master judges node health and records uptime.
    pub health_sweep_interval_ms: u64,
    /// A node silent this long is offline (master side); an agent that has not heard from a
    /// master this long stops its `on_disconnect = "stop"` instances.
    pub offline_timeout_ms: u64,
    /// Width of an uptime bucket.
    pub uptime_bucket_ms: u64,
    /// Uptime buckets older than this are pruned.
    pub uptime_retention_days: u64,
    /// How often the master writes its uptime counters (the changed buckets, one write) to the
    /// registry; a master failover loses at most this much uptime history. `None`: five sweeps,
    /// at most `DEFAULT_UPTIME_ROLLUP_MS` and at least one sweep (see `uptime_rollup_interval_ms`).
    pub uptime_rollup_ms: Option<u64>,
    /// Nodes the sweep probes at once before declaring them offline.
    pub sweep_concurrency: usize,
    /// Heartbeats in flight at once.
    pub heartbeat_concurrency: usize,
    /// Mutual TLS between nodes: `None` speaks plain HTTP/2 (the secret still guards calls).
    pub tls: Option<PeerTls>,
}

/// Whether a node may hold a seat in Raft.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeRole {
    /// A voter or standby when the cluster needs one, an agent otherwise.
    #[default]
    Auto,
    /// Always an agent.
    Agent,
}

impl std::str::FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeRole, String> {
        match s {
            "auto" => Ok(NodeRole::Auto),
            "agent" => Ok(NodeRole::Agent),
            other => Err(format!("role `{other}`: use \"auto\" or \"agent\"")),
        }
    }
}

/// One node's TLS material (PEM): the CA every node's certificate is signed by, and this
/// node's certificate and key, used both to serve and to call peers. Peers are verified by
/// the host of their address, so each certificate names its node's advertise host (an IP SAN
/// for an IP).
#[derive(Clone)]
pub struct PeerTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerTls { .. }")
    }
}

impl ClusterConfig {
    /// 50 ms heartbeats and a 100–200 ms election timeout. openraft lets a follower campaign
    /// only `election_max + rand(election_min..election_max)` after the last heartbeat (a leader
    /// lease comes first), so a killed leader is replaced after 300–400 ms, and an idle cluster
    /// needs 6 heartbeats in a row to go missing before anyone campaigns.
    pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
    pub const DEFAULT_ELECTION_MIN_MS: u64 = 100;
    pub const DEFAULT_ELECTION_MAX_MS: u64 = 200;
    pub const DEFAULT_STANDBYS: usize = 2;
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 5_000;
    pub const DEFAULT_REPLACE_VOTER_AFTER_MS: u64 = 30_000;
    pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 2_000;
    pub const DEFAULT_HEALTH_SWEEP_INTERVAL_MS: u64 = 60_000;
    pub const DEFAULT_OFFLINE_TIMEOUT_MS: u64 = 90_000;
    pub const DEFAULT_UPTIME_BUCKET_MS: u64 = crate::registry::DAY_MS;
    pub const DEFAULT_UPTIME_RETENTION_DAYS: u64 = 90;
    /// The uptime rollup interval with the default sweep interval (five sweeps of 60 s).
    pub const DEFAULT_UPTIME_ROLLUP_MS: u64 = 300_000;
    pub const DEFAULT_SWEEP_CONCURRENCY: usize = 20;
    pub const DEFAULT_HEARTBEAT_CONCURRENCY: usize = 256;

    /// A config with default timing, 3 voters, no labels and an automatic node id.
    pub fn new(
        name: impl Into<String>,
        advertise: impl Into<String>,
        listen: SocketAddr,
        discovery: Discovery,
        secret: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> ClusterConfig {
        ClusterConfig {
            name: name.into(),
            node_id: None,
            advertise: advertise.into(),
            listen,
            serve_rpc: true,
            discovery,
            voters: 3,
            standbys: Self::DEFAULT_STANDBYS,
            role: NodeRole::Auto,
            secret: secret.into(),
            labels: BTreeMap::new(),
            data_dir: data_dir.into(),
            heartbeat_ms: Self::DEFAULT_HEARTBEAT_MS,
            election_min_ms: Self::DEFAULT_ELECTION_MIN_MS,
            election_max_ms: Self::DEFAULT_ELECTION_MAX_MS,
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
            replace_voter_after_ms: Self::DEFAULT_REPLACE_VOTER_AFTER_MS,
            heartbeat_interval_ms: Self::DEFAULT_HEARTBEAT_INTERVAL_MS,
            health_sweep_interval_ms: Self::DEFAULT_HEALTH_SWEEP_INTERVAL_MS,
            offline_timeout_ms: Self::DEFAULT_OFFLINE_TIMEOUT_MS,
            uptime_bucket_ms: Self::DEFAULT_UPTIME_BUCKET_MS,
            uptime_retention_days: Self::DEFAULT_UPTIME_RETENTION_DAYS,
            uptime_rollup_ms: None,
            sweep_concurrency: Self::DEFAULT_SWEEP_CONCURRENCY,
            heartbeat_concurrency: Self::DEFAULT_HEARTBEAT_CONCURRENCY,
            tls: None,
        }
    }

    /// Checks everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Config(m));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return bad(format!(
                "cluster name `{}` must be non-empty and use only letters, digits, `_`, `.`, `-`",
                self.name
            ));
        }
        if self.node_id == Some(0) {
            return bad("node_id 0 is reserved; use another id or \"auto\"".into());
        }
        if split_host_port(&self.advertise).is_none() {
            return bad(format!(
                "advertise address `{}` is not host:port",
                self.advertise
            ));
        }
        if self.advertise.starts_with("0.0.0.0:") || self.advertise.starts_with("[::]:") {
            return bad(format!(
                "advertise address `{}` is a wildcard; other nodes need a reachable address",
                self.advertise
            ));
        }
        if !(1..=7).contains(&self.voters) {
            return bad(format!(
                "voters = {} must be between 1 and 7 (use 3 or 5)",
                self.voters
            ));
        }
        if self.standbys > 7 {
            return bad(format!(
                "standbys = {} must be at most 7 (2 is plenty: each one replicates the whole log)",
                self.standbys
            ));
        }
        if self.secret.is_empty() {
            return bad("the cluster secret is empty; every node needs the same secret".into());
        }
        if !self
            .secret
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return bad("the cluster secret must be printable ASCII".into());
        }
        if !(self.heartbeat_ms < self.election_min_ms
            && self.election_min_ms < self.election_max_ms)
        {
            return bad(format!(
                "raft timing needs heartbeat_ms < election_min_ms < election_max_ms (got {} / {} / {})",
                self.heartbeat_ms, self.election_min_ms, self.election_max_ms
            ));
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every must be at least 1".into());
        }
        self.validate_master_timing()
    }

    /// How often the master writes its uptime rollup: `uptime_rollup_ms` if set, else five
    /// sweeps capped at `DEFAULT_UPTIME_ROLLUP_MS` (5 min with the default 60 s sweep, 2.5 s
    /// with a 500 ms test sweep), and never less than one sweep.
    pub fn uptime_rollup_interval_ms(&self) -> u64 {
        let sweep = self.health_sweep_interval_ms;
        self.uptime_rollup_ms.unwrap_or_else(|| {
            sweep
                .saturating_mul(5)
                .min(Self::DEFAULT_UPTIME_ROLLUP_MS)
                .max(sweep)
        })
    }

    /// The master's and agent's timing: heartbeats must fit several times into the offline
    /// timeout, or a single lost heartbeat would mark a node offline.
    fn validate_master_timing(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Config(m));
        // Durations a user writes are added to clock instants and multiplied: keep them in a
        // range where that cannot overflow (a week is already far past any sane setting).
        const WEEK_MS: u64 = 7 * 24 * 60 * 60 * 1000;
        for (key, v) in [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("health_sweep_interval_ms", self.health_sweep_interval_ms),
            ("offline_timeout_ms", self.offline_timeout_ms),
            ("replace_voter_after_ms", self.replace_voter_after_ms),
            ("uptime_rollup_ms", self.uptime_rollup_ms.unwrap_or(0)),
        ] {
            if v > WEEK_MS {
                return bad(format!(
                    "{key} = {v} is too large (at most {WEEK_MS}, a week)"
                ));
            }
        }
        if self.heartbeat_interval_ms < 10 {
            return bad(format!(
                "heartbeat_interval_ms = {} is too small (at least 10)",
                self.heartbeat_interval_ms
            ));
        }
        if self.offline_timeout_ms < 3 * self.heartbeat_interval_ms {
            return bad(format!(
                "offline_timeout_ms = {} must be at least 3 × heartbeat_interval_ms ({})",
                self.offline_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.health_sweep_interval_ms < self.heartbeat_interval_ms {
            return bad(format!(
                "health_sweep_interval_ms = {} must be at least heartbeat_interval_ms ({})",
                self.health_sweep_interval_ms, self.heartbeat_interval_ms
            ));
        }
        if self.uptime_bucket_ms < 1_000 {
            return bad(format!(
                "uptime_bucket_ms = {} is too small (at least 1000)",
                self.uptime_bucket_ms
            ));
        }
        if self.uptime_retention_days == 0 {
            return bad("uptime_retention_days must be at least 1".into());
        }
        if let Some(rollup) = self.uptime_rollup_ms
            && rollup < self.health_sweep_interval_ms
        {
            return bad(format!(
                "uptime_rollup_ms = {rollup} must be at least health_sweep_interval_ms ({})",
                self.health_sweep_interval_ms
            ));
        }
        if self.sweep_concurrency == 0 || self.heartbeat_concurrency == 0 {
            return bad("sweep_concurrency and heartbeat_concurrency must be at least 1".into());
        }
        Ok(())
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("name", &self.name)
            .field("node_id", &self.node_id)
            .field("advertise", &self.advertise)
            .field("listen", &self.listen)
            .field("serve_rpc", &self.serve_rpc)
            .field("discovery", &self.discovery)
            .field("voters", &self.voters)
            .field("standbys", &self.standbys)
            .field("role", &self.role)
            .field("secret", &"***")
            .field("labels", &self.labels)
            .field("data_dir", &self.data_dir)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("election_min_ms", &self.election_min_ms)
            .field("election_max_ms", &self.election_max_ms)
            .field("snapshot_every", &self.snapshot_every)
            .field("replace_voter_after_ms", &self.replace_voter_after_ms)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("health_sweep_interval_ms", &self.health_sweep_interval_ms)
            .field("offline_timeout_ms", &self.offline_timeout_ms)
            .field("uptime_bucket_ms", &self.uptime_bucket_ms)
            .field("uptime_retention_days", &self.uptime_retention_days)
            .field("uptime_rollup_ms", &self.uptime_rollup_ms)
            .field("sweep_concurrency", &self.sweep_concurrency)
            .field("heartbeat_concurrency", &self.heartbeat_concurrency)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig::new(
            "prod",
            "10.0.0.11:9700",
            "0.0.0.0:9700".parse().expect("addr"),
            "static:10.0.0.11:9700".parse().expect("discovery"),
            "s3cret",
            "/tmp/herd",
        )
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().expect("valid");
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn rejects_wildcard_advertise_bad_timing_and_bad_names() {
        let mut c = config();
        c.advertise = "0.0.0.0:9700".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.election_min_ms = c.heartbeat_ms;
        assert!(c.validate().is_err());
        let mut c = config();
        c.name = "a b".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.secret = String::new();
        assert!(c.validate().is_err());
    }

    #[test]
    fn master_timing_defaults_and_checks() {
        let c = config();
        assert_eq!(
            (
                c.heartbeat_interval_ms,
                c.health_sweep_interval_ms,
                c.offline_timeout_ms
            ),
            (2_000, 60_000, 90_000)
        );
        assert_eq!(
            (c.uptime_bucket_ms, c.uptime_retention_days),
            (86_400_000, 90)
        );
        assert_eq!(c.sweep_concurrency, 20);
        assert_eq!(
            c.uptime_rollup_interval_ms(),
            300_000,
            "five sweeps of 60 s"
        );
        let mut c = config();
        c.health_sweep_interval_ms = 500;
        assert_eq!(c.uptime_rollup_interval_ms(), 2_500, "five short sweeps");
        c.health_sweep_interval_ms = 600_000;
        assert_eq!(
            c.uptime_rollup_interval_ms(),
            600_000,
            "never below one sweep"
        );
        c.uptime_rollup_ms = Some(900_000);
        assert_eq!(c.uptime_rollup_interval_ms(), 900_000);
        let mut c = config();
        c.offline_timeout_ms = 2 * c.heartbeat_interval_ms;
        assert!(c.validate().is_err());
        let mut c = config();
        c.health_sweep_interval_ms = 100;
        assert!(c.validate().is_err());
        let mut c = config();
        c.uptime_retention_days = 0;
        assert!(c.validate().is_err());
        let mut c = config();
        c.uptime_rollup_ms = Some(c.health_sweep_interval_ms - 1);
        assert!(c.validate().is_err());
        c.uptime_rollup_ms = Some(c.health_sweep_interval_ms);
        assert!(c.validate().is_ok());
        let mut c = config();
        c.sweep_concurrency = 0;
        assert!(c.validate().is_err());
        let mut c = config();
        c.offline_timeout_ms = u64::MAX;
        assert!(
            c.validate().is_err(),
            "a duration that would overflow is refused"
        );
    }
}
