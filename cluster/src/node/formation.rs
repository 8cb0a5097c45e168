//! Forming and joining: the background loop that gets this node into a Raft group and keeps it
//! there. A node that has a leader does nothing. A node without one for a while (or never
//! initialized) asks known peers to add it — peers come from discovery *and* from the stored
//! membership, so a restart while Redis is down still works. Only a pristine node may
//! bootstrap: with Redis, the holder of the bootstrap lock when no cluster-id exists; with
//! `static:`, the lowest-sorting seed that is this node's advertise address, when no seed
//! reports an initialized cluster.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herd_proto::cluster as pb;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use tokio::sync::watch;
use tokio::time::Instant;

use super::shared::Shared;
use crate::config::NodeRole;
use crate::discovery::Announcement;
use crate::discovery::ClusterIdRecord;
use crate::discovery::Discovery;
use crate::discovery::RedisBoard;
use crate::raft::Member;

/// How long a node may go without hearing from a leader before it asks peers to (re)add it.
const REJOIN_AFTER: Duration = Duration::from_secs(3);
/// Redis announcement lifetime.
pub(crate) const ANNOUNCE_TTL: Duration = Duration::from_secs(15);
/// How often a member refreshes its announcement, and how soon it retries after a failure.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
const ANNOUNCE_RETRY: Duration = Duration::from_millis(500);
/// A Redis that restarted empty forgot every member; they are all back within this (a refresh,
/// a reconnect, a retry). Until Redis has been up this long — or, where INFO is not allowed,
/// until the board has looked empty this long — an empty board proves nothing, and a
/// pristine node must not bootstrap a second cluster next to the live one.
const REANNOUNCE_WINDOW: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Formation {
    shared: Arc<Shared>,
    board: Option<RedisBoard>,
    started: Instant,
    /// When the operator was last told why this node is still waiting (rate limit).
    last_hint: std::sync::Mutex<Option<Instant>>,
    /// Since when the Redis board has looked empty (no cluster id), without a break.
    empty_since: std::sync::Mutex<Option<Instant>>,
    /// When each peer's failed probe was last reported (rate limit).
    probe_warned: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

/// What one round of asking peers found out.
#[derive(Default)]
struct Round {
    joined: bool,
    /// Some peer answered that it belongs to an initialized cluster.
    initialized_peer: bool,
}

impl Formation {
    pub(crate) fn new(shared: Arc<Shared>, board: Option<RedisBoard>) -> Formation {
        Formation {
            shared,
            board,
            started: crate::clock::now(),
            last_hint: std::sync::Mutex::new(None),
            probe_warned: std::sync::Mutex::default(),
            empty_since: std::sync::Mutex::new(None),
        }
    }

    /// Logs why this node is still not in a cluster: after 30 s of trying, then once a minute.
    fn hint(&self, msg: &str) {
        if self.started.elapsed() < Duration::from_secs(30) {
            return;
        }
        let mut last = self.last_hint.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(crate::clock::now());
            tracing::warn!(node_id = self.shared.id.get(), cluster = %self.shared.cfg.name, "{msg}");
        }
    }

    /// A peer that answers but refuses us, or whose TLS handshake fails, is worth a warning
    /// (once a minute per peer): a wrong secret or certificate keeps this node out for good.
    fn probe_failed(&self, addr: &str, status: &tonic::Status) {
        let mut warned = self.probe_warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned
            .get(addr)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        warned.insert(addr.to_string(), crate::clock::now());
        let cause = crate::error::with_causes(status.message(), status);
        tracing::warn!(node_id = self.shared.id.get(), peer = %addr, code = ?status.code(), %cause, "cannot probe peer (a wrong secret or TLS certificate keeps this node out)");
    }

    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = self.step(&mut backoff).await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass; returns how long to wait before the next.
    async fn step(&self, backoff: &mut Duration) -> Duration {
        const SETTLED: Duration = Duration::from_millis(500);
        if self.shared.left.load(Ordering::SeqCst) {
            return SETTLED;
        }
        if self.shared.raft.is_leader() {
            return SETTLED;
        }
        // A pristine node asks at once; a member only after its leader went quiet, an agent only
        // after its master did (it hears no Raft traffic, only heartbeats).
        let initialized = self.shared.raft.is_initialized().await.unwrap_or(true);
        let quiet = if self.shared.registered_agent.load(Ordering::SeqCst) {
            let rejoin_after =
                Duration::from_millis(self.shared.cfg.heartbeat_interval_ms.saturating_mul(3))
                    .max(REJOIN_AFTER);
            self.shared
                .agent
                .silent_for()
                .is_none_or(|s| s >= rejoin_after)
                && self.shared.leader_contact.elapsed() >= REJOIN_AFTER
        } else {
            !initialized || self.shared.leader_contact.elapsed() >= REJOIN_AFTER
        };
        if !quiet {
            *backoff = Duration::from_millis(100);
            return Duration::from_millis(200);
        }
        let round = self.ask_peers().await;
        if round.joined {
            return SETTLED;
        }
        let may_bootstrap = self.shared.cfg.role != NodeRole::Agent;
        if may_bootstrap && !initialized && !round.initialized_peer && self.bootstrap().await {
            return SETTLED;
        }
        let pause = jitter(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        pause
    }

    /// Peer addresses worth asking: discovered ones plus the stored membership, minus self.
    async fn candidates(&self) -> Vec<String> {
        let mut addrs = BTreeSet::new();
        match (&self.shared.cfg.discovery, &self.board) {
            (Discovery::Static { seeds }, _) => addrs.extend(seeds.iter().cloned()),
            (Discovery::Redis(_), Some(board)) => match board.peers().await {
                Ok(peers) => addrs.extend(
                    peers
                        .into_iter()
                        .filter(|p| p.id != self.shared.id)
                        .map(|p| p.advertise),
                ),
                Err(e) => tracing::debug!(error = %e, "cannot list peers in redis"),
            },
            (Discovery::Redis(_), None) => {}
        }
        let m = self.shared.metrics();
        for (&id, node) in m.membership_config.membership().nodes() {
            if id != self.shared.id {
                addrs.insert(node.addr.clone());
            }
        }
        addrs.remove(&self.shared.cfg.advertise);
        addrs.into_iter().collect()
    }

    async fn ask_peers(&self) -> Round {
        let mut round = Round::default();
        let req = pb::JoinRequest {
            node_id: self.shared.id.get(),
            addr: self.shared.cfg.advertise.clone(),
            labels: self.shared.cfg.labels.clone().into_iter().collect(),
            agent_only: self.shared.cfg.role == NodeRole::Agent,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        for addr in self.candidates().await {
            let Ok(mut client) = self.shared.forwarder.client(&addr) else {
                continue;
            };
            let probe =
                tokio::time::timeout(PROBE_TIMEOUT, client.probe(pb::ProbeRequest {})).await;
            let probe = match probe {
                Ok(Ok(p)) => p,
                Ok(Err(status)) => {
                    self.probe_failed(&addr, &status);
                    continue;
                }
                Err(_) => continue,
            };
            let probe = probe.into_inner();
            if !probe.initialized {
                continue;
            }
            round.initialized_peer = true;
            if probe.leader_id == 0 {
                continue;
            }
            match tokio::time::timeout(JOIN_TIMEOUT, client.join(req.clone())).await {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    tracing::info!(node_id = self.shared.id.get(), via = %addr, leader = reply.leader_id, role = %reply.role, "joined cluster");
                    self.shared
                        .registered_agent
                        .store(reply.role == "agent", Ordering::SeqCst);
                    round.joined = true;
                    return round;
                }
                Ok(Err(status)) => {
                    tracing::debug!(via = %addr, code = ?status.code(), msg = status.message(), "join refused")
                }
                Err(_) => tracing::debug!(via = %addr, "join timed out"),
            }
        }
        round
    }

    /// Tries to initialize a one-node cluster; true if this node did (or already had).
    async fn bootstrap(&self) -> bool {
        match (&self.shared.cfg.discovery, &self.board) {
            (Discovery::Static { seeds }, _) => {
                let lowest = seeds.iter().min();
                if lowest != Some(&self.shared.cfg.advertise) {
                    self.hint(&format!(
                        "waiting to join: no seed answers as part of a cluster yet; the lowest seed ({}) forms it",
                        lowest.map_or("none", String::as_str)
                    ));
                    return false;
                }
                tracing::info!(node_id = self.shared.id.get(), advertise = %self.shared.cfg.advertise, "lowest seed and no initialized peer: bootstrapping");
                self.initialize().await
            }
            (Discovery::Redis(_), Some(board)) => self.bootstrap_with_redis(board).await,
            (Discovery::Redis(_), None) => false,
        }
    }

    async fn bootstrap_with_redis(&self, board: &RedisBoard) -> bool {
        let me = self.shared.id;
        match board.cluster_id().await {
            Err(e) => {
                tracing::debug!(error = %e, "cannot read cluster id");
                return false;
            }
            // Chosen before, but did not finish initializing (crash): finish now.
            Ok(Some(rec)) if rec.bootstrapper == me => return self.initialize().await,
            // The cluster exists: only ever join it.
            Ok(Some(rec)) => {
                *self.empty_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.hint(&format!(
                    "waiting to join: redis says this cluster was formed (id {}) but no member answers; \
                     if every member's data was wiped, delete the redis key herd:{}:cluster-id to form it anew",
                    rec.cluster_id, self.shared.cfg.name
                ));
                return false;
            }
            Ok(None) => {}
        }
        if !self.board_quiet_long_enough(board).await {
            return false;
        }
        let token = format!("{me}-{:016x}", rand::random::<u64>());
        match board.try_lock_bootstrap(&token).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::debug!(error = %e, "cannot take bootstrap lock");
                return false;
            }
        }
        let record = ClusterIdRecord {
            cluster_id: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            bootstrapper: me,
        };
        let done = match board.claim_cluster_id(&record).await {
            Ok(true) => {
                tracing::info!(node_id = me.get(), cluster_id = %record.cluster_id, "bootstrapping a new cluster");
                self.initialize().await
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write cluster id");
                false
            }
        };
        if let Err(e) = board.release_bootstrap(&token).await {
            tracing::debug!(error = %e, "cannot release bootstrap lock (it expires by itself)");
        }
        done
    }

    /// An empty board means "no cluster" only once live members had time to re-announce
    /// after a Redis restart (see `REANNOUNCE_WINDOW`).
    async fn board_quiet_long_enough(&self, board: &RedisBoard) -> bool {
        let seen_empty = {
            let mut since = self.empty_since.lock().unwrap_or_else(|p| p.into_inner());
            since.get_or_insert_with(crate::clock::now).elapsed()
        };
        let waited = match board.uptime().await {
            Ok(Some(up)) => up,
            Ok(None) | Err(_) => seen_empty,
        };
        if waited < REANNOUNCE_WINDOW {
            tracing::debug!(
                waited_ms = waited.as_millis() as u64,
                "redis is freshly (re)started or the board just emptied: waiting for live members to re-announce before bootstrapping"
            );
            return false;
        }
        true
    }

    async fn initialize(&self) -> bool {
        let member = Member {
            addr: self.shared.cfg.advertise.clone(),
            labels: self.shared.cfg.labels.clone(),
        };
        // A pinned agent never bootstraps (and runs no engine to bootstrap).
        let Some(raft) = self.shared.raft.engine() else {
            return false;
        };
        match raft
            .initialize(BTreeMap::from([(self.shared.id, member)]))
            .await
        {
            Ok(()) => true,
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot initialize the cluster");
                false
            }
        }
    }
}

/// Keeps this node's Redis announcement fresh (every `ANNOUNCE_EVERY`) until shutdown.
pub(crate) async fn announce_loop(
    shared: Arc<Shared>,
    board: RedisBoard,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = Announcement {
        id: shared.id,
        advertise: shared.cfg.advertise.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut healthy = true;
    loop {
        if !shared.left.load(Ordering::SeqCst) {
            // A Redis that restarted empty learns of every member within one refresh.
            match board.announce(&me, ANNOUNCE_TTL).await {
                Ok(()) if !healthy => {
                    healthy = true;
                    tracing::info!("redis reachable again; announcing");
                }
                Ok(()) => {}
                Err(e) if healthy => {
                    healthy = false;
                    tracing::warn!(error = %e, "cannot announce in redis (the running cluster is unaffected)");
                }
                Err(_) => {}
            }
        }
        let pause = if healthy {
            ANNOUNCE_EVERY
        } else {
            ANNOUNCE_RETRY
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// `d` ± 25 %, so nodes started together do not ask in lockstep.
fn jitter(d: Duration) -> Duration {
    let factor: f64 = rand::random_range(0.75..1.25);
    d.mul_f64(factor)
}
