//! The master's heartbeats: one small task per node, each at its own fixed phase within the
//! interval (derived from the node id), so a thousand nodes are spread over the interval instead
//! of answering in one burst. A semaphore bounds the heartbeats in flight. Every heartbeat
//! carries the master's term; answers land in the term's `HealthTable`.

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herd_proto::cluster as pb;
use herd_proto::cluster::agent_client::AgentClient;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::health::HealthTable;
use super::health::NodeReport;
use crate::Term;
use crate::agent::refused_as_stale;
use crate::error::ClusterError;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::registry::NodeId;
use crate::transport::ClientAuth;
use crate::transport::PeerChannels;

/// The future of one heartbeat call.
pub type HeartbeatCall =
    Pin<Box<dyn Future<Output = Result<pb::HeartbeatReply, Status>> + Send + 'static>>;

/// How heartbeats reach nodes: gRPC in production, fakes in unit tests.
pub trait HeartbeatTransport: Send + Sync + 'static {
    /// A link to the node at `addr`, made once per node and reused for every heartbeat.
    fn link(&self, addr: &str) -> Arc<dyn NodeLink>;
    /// The node at `addr` is no longer heartbeated (gone from the registry, or this term
    /// ended): whatever the transport keeps for it may go.
    fn forget(&self, _addr: &str) {}
}

/// One node's end of the heartbeat.
pub trait NodeLink: Send + Sync + 'static {
    fn heartbeat(&self, req: pb::HeartbeatRequest) -> HeartbeatCall;
}

/// The Agent service over the shared per-peer channels, with the cluster secret.
#[derive(Clone)]
pub(crate) struct GrpcTransport {
    pub(crate) channels: PeerChannels,
    pub(crate) auth: ClientAuth,
}

type AgentGrpc = AgentClient<InterceptedService<Channel, ClientAuth>>;

struct GrpcLink {
    client: Result<AgentGrpc, String>,
}

impl HeartbeatTransport for GrpcTransport {
    fn link(&self, addr: &str) -> Arc<dyn NodeLink> {
        let client = self
            .channels
            .get(addr)
            .map(|channel| {
                AgentClient::with_interceptor(channel, self.auth.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|e| e.to_string());
        Arc::new(GrpcLink { client })
    }

    fn forget(&self, addr: &str) {
        self.channels.forget(addr);
    }
}

impl NodeLink for GrpcLink {
    fn heartbeat(&self, req: pb::HeartbeatRequest) -> HeartbeatCall {
        let client = self.client.clone();
        Box::pin(async move {
            let mut client = client.map_err(Status::invalid_argument)?;
            client.heartbeat(req).await.map(|r| r.into_inner())
        })
    }
}

#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    pub master_id: NodeId,
    pub term: Term,
    pub interval: Duration,
    /// A heartbeat not answered within this counts as failed.
    pub timeout: Duration,
    /// Heartbeats in flight at once.
    pub concurrency: usize,
    /// The master's cluster address, sent with every heartbeat.
    pub master_addr: String,
}

struct BeatCtx {
    cfg: HeartbeatConfig,
    transport: Arc<dyn HeartbeatTransport>,
    health: Arc<HealthTable>,
    permits: Semaphore,
    versions: Versions,
}

/// What a heartbeat to a node carries of the master's registry: its applied index and the
/// version of that node's slice.
pub type Versions = Box<dyn Fn(NodeId) -> (u64, u64) + Send + Sync>;

/// Heartbeats every target node until dropped (dropping aborts every heartbeat task).
pub struct Heartbeater {
    ctx: Arc<BeatCtx>,
    tasks: HashMap<NodeId, (String, AbortHandle)>,
}

/// Phases are whole slots of this width: nodes sharing a slot are sent together, which wakes
/// the master once per slot instead of once per node (up to 200 slots per 2 s interval).
const SLOT: Duration = Duration::from_millis(10);

/// The phase of `id` within the interval: spread evenly over the slots by a hash of the id.
pub(crate) fn phase(id: NodeId, interval: Duration) -> Duration {
    let mut z = id.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let slots = (interval.as_nanos() / SLOT.as_nanos()).max(1) as u64;
    SLOT * (z % slots) as u32
}

impl Heartbeater {
    /// `versions` gives the master's applied registry index and a node's slice version, sent
    /// with every heartbeat.
    pub fn new(
        cfg: HeartbeatConfig,
        transport: Arc<dyn HeartbeatTransport>,
        health: Arc<HealthTable>,
        versions: Versions,
    ) -> Heartbeater {
        let permits = Semaphore::new(cfg.concurrency.max(1));
        Heartbeater {
            ctx: Arc::new(BeatCtx {
                cfg,
                transport,
                health,
                permits,
                versions,
            }),
            tasks: HashMap::new(),
        }
    }

    /// Over gRPC with its own channels (benchmarks and tools; a `ClusterNode` shares its own).
    pub fn grpc(
        cluster: &str,
        secret: &str,
        cfg: HeartbeatConfig,
        health: Arc<HealthTable>,
    ) -> Result<Heartbeater, ClusterError> {
        let transport = GrpcTransport {
            channels: PeerChannels::default(),
            auth: ClientAuth::new(cluster, secret)?,
        };
        Ok(Heartbeater::new(
            cfg,
            Arc::new(transport),
            health,
            Box::new(|_| (0, 0)),
        ))
    }

    pub fn health(&self) -> &Arc<HealthTable> {
        &self.ctx.health
    }

    /// Heartbeats exactly these nodes `(id, address, offline in the registry)` from now on: new
    /// ones start (their grace starts now; see `HealthTable::watch` for the offline ones), ones
    /// whose address changed restart, missing ones stop and are forgotten.
    pub fn sync<'a>(&mut self, targets: impl IntoIterator<Item = (NodeId, &'a str, bool)>) {
        let now = crate::clock::now();
        let mut seen = HashSet::new();
        for (id, addr, offline) in targets {
            seen.insert(id);
            match self.tasks.get(&id) {
                Some((a, _)) if a == addr => continue,
                Some((old, task)) => {
                    task.abort();
                    self.ctx.transport.forget(old);
                }
                None => {}
            }
            self.ctx.health.watch(id, addr, now, offline);
            let first = now + phase(id, self.ctx.cfg.interval);
            let task = tokio::spawn(beat(id, addr.to_string(), first, self.ctx.clone()));
            self.tasks
                .insert(id, (addr.to_string(), task.abort_handle()));
        }
        let health = &self.ctx.health;
        let transport = &self.ctx.transport;
        self.tasks.retain(|id, (addr, task)| {
            let keep = seen.contains(id);
            if !keep {
                task.abort();
                health.forget(*id);
                transport.forget(addr);
            }
            keep
        });
    }

    pub fn targets(&self) -> usize {
        self.tasks.len()
    }

    /// One heartbeat to each of `nodes` now, `concurrency` at a time, for at most `budget`; the
    /// ids that answered by then. The budget keeps a mass of blackholed nodes (each costing a
    /// full heartbeat timeout) from holding the master's sweep for minutes: whoever was not
    /// reached in time has been silent for the whole offline timeout already.
    pub async fn probe(
        &self,
        nodes: Vec<(NodeId, String)>,
        concurrency: usize,
        budget: Duration,
    ) -> Vec<NodeId> {
        let ctx = &self.ctx;
        let answers = futures_util::stream::iter(nodes)
            .map(|(id, addr)| async move {
                let link = ctx.transport.link(&addr);
                ctx.beat_once(id, &addr, link.as_ref()).await.then_some(id)
            })
            .buffer_unordered(concurrency.max(1));
        tokio::pin!(answers);
        let deadline = tokio::time::sleep(budget);
        tokio::pin!(deadline);
        let mut answered = Vec::new();
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                next = answers.next() => match next {
                    Some(Some(id)) => answered.push(id),
                    Some(None) => {}
                    None => break,
                },
            }
        }
        answered
    }
}

impl Drop for Heartbeater {
    /// The term is over: no more heartbeats, and no idle connection kept to every node.
    fn drop(&mut self) {
        for (addr, task) in self.tasks.values() {
            task.abort();
            self.ctx.transport.forget(addr);
        }
    }
}

async fn beat(id: NodeId, addr: String, first: Instant, ctx: Arc<BeatCtx>) {
    let interval = ctx.cfg.interval;
    let link = ctx.transport.link(&addr);
    let mut next = first;
    loop {
        tokio::time::sleep_until(next).await;
        ctx.beat_once(id, &addr, link.as_ref()).await;
        next += interval;
        let now = crate::clock::now();
        if next <= now {
            // Fell behind (a slow node): skip the missed slots, keep the phase.
            let behind = now.duration_since(next).as_nanos() / interval.as_nanos().max(1);
            next += interval * (behind as u32 + 1);
        }
    }
}

impl BeatCtx {
    /// One heartbeat; true if the node answered.
    async fn beat_once(&self, id: NodeId, addr: &str, link: &dyn NodeLink) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let (applied_index, slice_version) = (self.versions)(id);
        let req = pb::HeartbeatRequest {
            master_id: self.cfg.master_id.get(),
            term: self.cfg.term.get(),
            node_id: id.get(),
            applied_index,
            lease_ack: self.health.lease_ack(id),
            slice_version,
            master_addr: self.cfg.master_addr.clone(),
            report_ack: self.health.report_ack(id),
        };
        let stats = &self.health.stats;
        stats
            .sent_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = crate::clock::now();
        let result = tokio::time::timeout(self.cfg.timeout, link.heartbeat(req)).await;
        let error = match result {
            Ok(Ok(reply)) if reply.node_id == id.get() => {
                let now = crate::clock::now();
                let rtt = now.duration_since(sent);
                stats
                    .ok_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                stats.rtt.record(rtt);
                let seq = reply.lease_seq;
                let prev = self.health.report_of(id);
                let report = NodeReport::from_reply(reply, prev.as_deref());
                self.health.record_answer(id, now, rtt, seq, report);
                return true;
            }
            Ok(Ok(reply)) => format!("answered as node {}", reply.node_id),
            Ok(Err(status)) => {
                if let Some(seen) = refused_as_stale(&status) {
                    stats
                        .fenced_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        node = id.get(),
                        term = self.cfg.term.get(),
                        seen = seen.get(),
                        reason = status.message(),
                        "heartbeat refused: this master's term is stale"
                    );
                }
                status.message().to_string()
            }
            Err(_) => format!("no answer within {} ms", self.cfg.timeout.as_millis()),
        };
        stats
            .failed_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(node = id.get(), %addr, %error, "heartbeat failed");
        self.health.record_failure(id, error);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallClock;
    use crate::ids::ids;
    use crate::master::testing::FakeNodes;

    #[tokio::test]
    async fn a_node_no_longer_heartbeated_and_an_ended_term_leave_no_channel_behind() {
        let channels = PeerChannels::default();
        let transport = GrpcTransport {
            channels: channels.clone(),
            auth: ClientAuth::new("c", "a-cluster-secret-of-enough-length").expect("auth"),
        };
        let cfg = HeartbeatConfig {
            master_id: NodeId(1),
            term: crate::Term(1),
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(20),
            concurrency: 8,
            master_addr: "127.0.0.1:1".into(),
        };
        let health = Arc::new(HealthTable::new(WallClock::at(0)));
        let mut hb = Heartbeater::new(cfg, Arc::new(transport), health, Box::new(|_| (0, 0)));
        // Nothing listens there: the heartbeats fail, the channels exist all the same.
        hb.sync([
            (NodeId(2), "127.0.0.1:9", false),
            (NodeId(3), "127.0.0.1:10", false),
        ]);
        let until = |n: usize| {
            let channels = channels.clone();
            async move {
                for _ in 0..500 {
                    if channels.cached() == n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                false
            }
        };
        assert!(until(2).await, "{} channels", channels.cached());
        hb.sync([(NodeId(2), "127.0.0.1:9", false)]);
        assert_eq!(channels.cached(), 1, "node 3 is no longer heartbeated");
        drop(hb);
        assert_eq!(channels.cached(), 0, "the term ended");
    }

    fn heartbeater(fake: &Arc<FakeNodes>, interval: Duration) -> Heartbeater {
        Heartbeater::new(
            HeartbeatConfig {
                master_id: NodeId(1),
                term: Term(4),
                interval,
                timeout: interval,
                concurrency: 8,
                master_addr: String::new(),
            },
            Arc::new(fake.clone()),
            Arc::new(HealthTable::new(WallClock::at(0))),
            Box::new(|_| (0, 0)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn every_node_is_heartbeaten_once_per_interval_at_its_own_phase() {
        let fake = Arc::new(FakeNodes::default());
        let interval = Duration::from_secs(2);
        let mut hb = heartbeater(&fake, interval);
        let start = crate::clock::now();
        let addrs: Vec<String> = (1..=50).map(|i| format!("n{i}")).collect();
        hb.sync(
            (1..=50)
                .map(NodeId)
                .zip(addrs.iter().map(String::as_str))
                .map(|(id, a)| (id, a, false)),
        );
        tokio::time::sleep(interval * 10).await;
        let calls = fake.calls.lock().expect("lock").clone();
        let mut first_offsets = Vec::new();
        for id in 1..=50u64 {
            let times: Vec<Instant> = calls
                .iter()
                .filter(|c| c.0 == NodeId(id))
                .map(|c| c.1)
                .collect();
            assert!(
                (9..=10).contains(&times.len()),
                "node {id}: {} heartbeats",
                times.len()
            );
            for w in times.windows(2) {
                assert_eq!(w[1] - w[0], interval, "node {id} keeps the cadence");
            }
            first_offsets.push(times[0] - start);
            assert!(times[0] - start < interval);
        }
        assert!(
            calls.iter().all(|c| c.2 == 4),
            "every heartbeat carries the term"
        );
        // Spread: no 100 ms slot of the interval holds more than a fifth of the nodes.
        let mut slots = [0usize; 20];
        for o in &first_offsets {
            slots[(o.as_millis() / 100) as usize] += 1;
        }
        assert!(
            slots.iter().all(|&n| n <= 10),
            "jitter spreads the nodes: {slots:?}"
        );
        let health = hb.health().snapshot();
        assert!(health.values().all(|h| h.last_answer.is_some()));
    }

    #[tokio::test(start_paused = true)]
    async fn removed_targets_stop_and_probe_reports_who_answers() {
        let fake = Arc::new(FakeNodes::default());
        let interval = Duration::from_secs(2);
        let mut hb = heartbeater(&fake, interval);
        hb.sync([(NodeId(1), "n1", false), (NodeId(2), "n2", false)]);
        tokio::time::sleep(interval * 2).await;
        hb.sync([(NodeId(1), "n1", false)]);
        assert!(hb.health().get(NodeId(2)).is_none());
        let before = fake
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.0 == NodeId(2))
            .count();
        tokio::time::sleep(interval * 3).await;
        let after = fake
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.0 == NodeId(2))
            .count();
        assert_eq!(before, after, "no heartbeats to a removed node");

        fake.set_down(NodeId(3), true);
        let answered = hb
            .probe(
                vec![(NodeId(1), "n1".into()), (NodeId(3), "n3".into())],
                2,
                interval * 2,
            )
            .await;
        assert_eq!(answered, ids([1]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_mass_of_blackholed_nodes_holds_the_probe_no_longer_than_its_budget() {
        let fake = Arc::new(FakeNodes::default());
        let interval = Duration::from_secs(2);
        let hb = heartbeater(&fake, interval);
        fake.blackholed
            .lock()
            .expect("lock")
            .extend((10..1010).map(NodeId));
        let mut nodes: Vec<(NodeId, String)> = (10..1010)
            .map(|id| (NodeId(id), format!("n{id}")))
            .collect();
        nodes.push((NodeId(1), "n1".into()));
        let started = crate::clock::now();
        let answered = hb.probe(nodes, 20, interval * 2).await;
        let took = started.elapsed();
        assert!(
            took <= interval * 2 + Duration::from_millis(1),
            "1,000 blackholed nodes at 20 at a time would take 100 s; the budget ends it: {took:?}"
        );
        assert!(answered.is_empty() || answered == ids([1]), "{answered:?}");
    }
}
