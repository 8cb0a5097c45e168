//! Master duties and agents on three in-process nodes (`static:` discovery, shortened timing)
//! with a fake local supervisor per node that runs whatever it is told at once and records
//! every reconcile: deploy, a node lost and rescheduled, leader failover without false alarms,
//! drain (start new, then stop old), rolling restart.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use herd_cluster::ClusterNode;
use herd_cluster::DesiredInstance;
use herd_cluster::InstanceReport;
use herd_cluster::InstanceStatus;
use herd_cluster::LocalSupervisor;
use herd_cluster::Registry;
use herd_cluster::RegistryCommand;
use herd_cluster::Resources;
use herd_cluster::registry::App;
use herd_cluster::registry::NodeId;
use herd_cluster::registry::NodeStatus;
use support::TestCluster;
use support::eventually;
use support::init_tracing;
use tokio::time::Instant;

const FORM: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(20);
const HEARTBEAT_MS: u64 = 100;
const SWEEP_MS: u64 = 500;
const OFFLINE_MS: u64 = 1_000;

type Key = (String, u32);

/// Runs what it is told at once ("running"); keeps every reconcile with its time.
#[derive(Default)]
struct FakeSupervisor {
    history: Mutex<Vec<(Instant, Vec<Key>)>>,
}

impl FakeSupervisor {
    fn current(&self) -> Vec<Key> {
        self.history
            .lock()
            .expect("lock")
            .last()
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    }

    /// When `key` was first wanted, and first not wanted after that.
    fn started_and_stopped(&self, key: &Key) -> (Option<Instant>, Option<Instant>) {
        let h = self.history.lock().expect("lock");
        let started = h.iter().find(|(_, d)| d.contains(key)).map(|(t, _)| *t);
        let stopped = started.and_then(|s| {
            h.iter()
                .find(|(t, d)| *t > s && !d.contains(key))
                .map(|(t, _)| *t)
        });
        (started, stopped)
    }

    fn reconciles_with(&self, key: &Key) -> Vec<bool> {
        self.history
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, d)| d.contains(key))
            .collect()
    }
}

impl LocalSupervisor for FakeSupervisor {
    fn report(&self) -> Vec<InstanceReport> {
        self.current()
            .into_iter()
            .map(|(app, instance)| InstanceReport {
                app,
                instance,
                status: InstanceStatus::Running,
                pid: Some(1_000 + instance),
                restarts: 0,
            })
            .collect()
    }

    fn resources(&self) -> Option<Resources> {
        Some(Resources {
            cpu_percent: 1.0,
            cpus: 1,
            load1: 0.1,
            mem_total_bytes: 4,
            mem_used_bytes: 1,
        })
    }

    fn reconcile(
        &self,
        desired: Vec<DesiredInstance>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let keys = desired.into_iter().map(|d| (d.app, d.instance)).collect();
        self.history
            .lock()
            .expect("lock")
            .push((Instant::now(), keys));
        Box::pin(async {})
    }
}

struct Harness {
    c: TestCluster,
    sups: Vec<Arc<FakeSupervisor>>,
}

impl Harness {
    async fn start() -> Harness {
        init_tracing();
        let mut c = TestCluster::configure(3, TestCluster::static_seeds);
        for s in &mut c.slots {
            s.cfg.heartbeat_interval_ms = HEARTBEAT_MS;
            s.cfg.health_sweep_interval_ms = SWEEP_MS;
            s.cfg.offline_timeout_ms = OFFLINE_MS;
        }
        c.start_all().await;
        let sups: Vec<Arc<FakeSupervisor>> = (0..3)
            .map(|_| Arc::new(FakeSupervisor::default()))
            .collect();
        for (i, sup) in sups.iter().enumerate() {
            c.node(i).run_agent(sup.clone());
        }
        c.agreed_leader(FORM).await;
        c.membership(3, 0, FORM).await;
        // The master records every member.
        c.all_replicas("a node record per member", FORM, |r| {
            r.nodes.len() == 3 && r.nodes.values().all(|n| n.status == NodeStatus::Online)
        })
        .await;
        eventually("the master hears every node", FORM, || async {
            let rt = c.node(0).runtime().await.ok()?;
            (rt.nodes.len() == 3 && rt.nodes.iter().all(|n| n.last_seen_ms.is_some())).then_some(())
        })
        .await;
        Harness { c, sups }
    }

    fn slot_of(&self, id: NodeId) -> usize {
        (0..self.c.slots.len())
            .find(|&i| self.c.slots[i].cfg.node_id == Some(id.get()))
            .expect("slot")
    }

    async fn deploy(&self, name: &str, instances: u32) {
        let leader = self.c.agreed_leader(FORM).await;
        self.c
            .node(leader)
            .write(RegistryCommand::PutApp {
                name: name.into(),
                app: App {
                    spec: serde_json::json!({ "command": "sleep 1000" }),
                    instances,
                    ..App::default()
                },
            })
            .await
            .expect("deploy");
    }

    /// Waits until each running node's supervisor runs exactly what its replica assigns it,
    /// and every instance of `app` is assigned to a running node; returns app instance → node.
    async fn settled(&self, app: &str, instances: u32) -> BTreeMap<u32, NodeId> {
        eventually(&format!("`{app}` placed and running"), SETTLE, || async {
            let (_, n) = self.c.running().next()?;
            let reg: Arc<Registry> = n.read(false).await.ok()?;
            let placed = reg.assignments.get(app)?.clone();
            if placed.len() != instances as usize || !reg.moves.is_empty() {
                return None;
            }
            for (i, node) in self.c.running() {
                let mut want: Vec<Key> = reg
                    .instances_on(node.id())
                    .into_iter()
                    .map(|r| (r.app, r.instance))
                    .collect();
                want.sort();
                let mut have = self.sups[i].current();
                have.sort();
                if want != have {
                    return None;
                }
            }
            let running: Vec<NodeId> = self.c.running().map(|(_, n)| n.id()).collect();
            placed
                .values()
                .all(|n| running.contains(n))
                .then_some(placed)
        })
        .await
    }

    fn any(&self) -> &ClusterNode {
        self.c.running().next().expect("a running node").1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployed_app_is_placed_on_every_node_and_reported_back() {
    let h = Harness::start().await;
    h.deploy("api", 3).await;
    let placed = h.settled("api", 3).await;
    let mut nodes: Vec<NodeId> = placed.values().copied().collect();
    nodes.sort();
    assert_eq!(
        nodes,
        [1, 2, 3].map(herd_cluster::NodeId),
        "least-loaded: one instance per node"
    );
    // The master's runtime view (asked on any node) shows each instance running where placed.
    let rt = eventually("runtime shows the instances", SETTLE, || async {
        let rt = h.any().runtime().await.ok()?;
        (rt.running("api").len() == 3).then_some(rt)
    })
    .await;
    for (node, inst) in rt.running("api") {
        assert_eq!(placed[&inst.instance], node);
        assert_eq!(inst.status, "running");
    }
    assert!(
        rt.nodes
            .iter()
            .all(|n| n.last_seen_ms.is_some() && n.version.is_some())
    );
    assert!(
        rt.nodes
            .iter()
            .all(|n| n.resources["load1"].as_f64() == Some(0.1))
    );
    h.c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_node_goes_offline_after_the_timeout_and_its_instances_run_elsewhere() {
    let mut h = Harness::start().await;
    h.deploy("api", 3).await;
    let placed = h.settled("api", 3).await;
    let leader = h.c.agreed_leader(FORM).await;
    let victim = (leader + 1) % 3;
    let victim_id = h.c.node(victim).id();
    let lost: Vec<u32> = placed
        .iter()
        .filter(|(_, n)| **n == victim_id)
        .map(|(i, _)| *i)
        .collect();
    let t0 = Instant::now();
    h.c.stop(victim).await;

    h.c.all_replicas("the lost node is offline", SETTLE, |r| {
        r.nodes[&victim_id].status == NodeStatus::Offline
    })
    .await;
    let after = t0.elapsed();
    // The timeout runs from the node's last answer, which may precede the stop by up to one
    // heartbeat interval (plus its jitter).
    assert!(
        after >= Duration::from_millis(OFFLINE_MS - 2 * HEARTBEAT_MS),
        "offline after {after:?}: never before the timeout"
    );
    assert!(
        after <= Duration::from_millis(OFFLINE_MS + 2 * SWEEP_MS + 1_000),
        "offline after {after:?}: within a sweep of the timeout"
    );
    let moved = h.settled("api", 3).await;
    for i in lost {
        assert_ne!(moved[&i], victim_id, "instance {i} rescheduled");
    }
    let reg = h.any().read(false).await.expect("read");
    for (id, n) in &reg.nodes {
        if *id != victim_id {
            assert_eq!(n.status, NodeStatus::Online, "node {id} is fine");
        }
    }
    // Uptime shows the outage, once the master's next rollup is written.
    h.c.all_replicas("uptime to show the outage", SETTLE, |r| {
        r.uptime
            .get(&victim_id)
            .and_then(|days| days.values().next_back())
            .is_some_and(|b| b.up_samples < b.total_samples)
    })
    .await;

    // The node comes back: online again, and it runs nothing the master moved away.
    h.c.start(victim).await;
    h.c.node(victim).run_agent(h.sups[victim].clone());
    h.c.all_replicas("the node is back online", SETTLE, |r| {
        r.nodes[&victim_id].status == NodeStatus::Online
    })
    .await;
    h.settled("api", 3).await;
    h.c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_master_takes_over_heartbeats_without_marking_survivors_offline() {
    let mut h = Harness::start().await;
    h.deploy("api", 3).await;
    h.settled("api", 3).await;
    let leader = h.c.agreed_leader(FORM).await;
    let old_id = h.c.node(leader).id();
    h.c.stop(leader).await;
    let new = h.c.agreed_leader(FORM).await;
    let new_id = h.c.node(new).id();
    assert_ne!(new_id, old_id);

    // Watch the registry for a few offline timeouts: only the dead leader may go offline.
    let deadline = Instant::now() + Duration::from_millis(4 * OFFLINE_MS);
    let mut old_offline = false;
    while Instant::now() < deadline {
        let reg = h.c.node(new).read(true).await.expect("read");
        for (id, n) in &reg.nodes {
            if *id == old_id {
                old_offline |= n.status == NodeStatus::Offline;
            } else {
                assert_eq!(
                    n.status,
                    NodeStatus::Online,
                    "survivor {id} marked {:?}",
                    n.status
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(old_offline, "the dead leader is offline");
    let rt = h.c.node(new).runtime().await.expect("runtime");
    assert_eq!(rt.master, new_id);
    for n in &rt.nodes {
        if n.id != old_id {
            assert!(
                n.silent_ms < 1_000,
                "node {} heard by the new master: {n:?}",
                n.id
            );
        }
    }
    // The dead leader's instance runs elsewhere.
    h.settled("api", 3).await;
    h.c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_starts_new_copies_before_stopping_old_ones_and_reports_done_only_then() {
    let h = Harness::start().await;
    h.deploy("api", 6).await;
    let placed = h.settled("api", 6).await;
    let leader = h.c.agreed_leader(FORM).await;
    let drained = (leader + 1) % 3;
    let drained_id = h.c.node(drained).id();
    let leaving: Vec<u32> = placed
        .iter()
        .filter(|(_, n)| **n == drained_id)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(leaving.len(), 2);

    let node = h.c.node(leader);
    assert!(node.drain(drained_id, true).await.expect("drain"));
    let first = node.drain_status(drained_id).await.expect("drain status");
    assert!(first.draining);
    let done = eventually("drain done", SETTLE, || async {
        let s = node.drain_status(drained_id).await.ok()?;
        s.done.then_some(s)
    })
    .await;
    assert!(done.remaining.is_empty());
    assert!(
        h.sups[drained].current().is_empty(),
        "nothing runs on the drained node"
    );

    let moved = h.settled("api", 6).await;
    for i in &leaving {
        let key: Key = ("api".into(), *i);
        let to = h.slot_of(moved[i]);
        assert_ne!(to, drained);
        let (_, stopped_old) = h.sups[drained].started_and_stopped(&key);
        let (started_new, _) = h.sups[to].started_and_stopped(&key);
        let (stopped_old, started_new) = (
            stopped_old.expect("old stopped"),
            started_new.expect("new started"),
        );
        assert!(
            started_new < stopped_old,
            "instance {i}: the new copy started before the old one stopped"
        );
    }
    // Undrain: the node takes work again (a scale-up lands there first: it is the least loaded).
    assert!(node.drain(drained_id, false).await.expect("undrain"));
    assert!(node.scale("api", 7).await.expect("scale"));
    let placed = h.settled("api", 7).await;
    assert_eq!(placed[&6], drained_id);
    h.c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_restarts_every_instance_once() {
    let h = Harness::start().await;
    h.deploy("api", 3).await;
    let placed = h.settled("api", 3).await;
    let node = h.any();
    assert_eq!(node.restart("api").await.expect("restart"), 1);
    h.c.all_replicas("every instance rolled", SETTLE, |r| {
        r.restarts
            .get("api")
            .is_some_and(|s| s.generation == 1 && s.pending.is_empty())
    })
    .await;
    // The registry marks the last node rolled as soon as the roll is written; its agent
    // stops and restarts the instance just after. Wait for every supervisor to have seen it.
    let phases = |i: u32, n: NodeId| {
        let seen = h.sups[h.slot_of(n)].reconciles_with(&("api".into(), i));
        let mut phases: Vec<bool> = seen.iter().copied().skip_while(|w| !w).collect();
        phases.dedup();
        (phases, seen)
    };
    eventually(
        "every instance stopped and started again",
        SETTLE,
        || async {
            placed
                .iter()
                .all(|(&i, &n)| phases(i, n).0.len() >= 3)
                .then_some(())
        },
    )
    .await;
    h.settled("api", 3).await;
    for (&i, &n) in &placed {
        let (phases, seen) = phases(i, n);
        assert_eq!(
            phases,
            vec![true, false, true],
            "instance {i}: running, stopped once, running: {seen:?}"
        );
    }
    h.c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_from_a_stale_term_or_without_the_secret_is_refused() {
    use herd_proto::cluster::HeartbeatRequest;
    use herd_proto::cluster::agent_client::AgentClient;

    let h = Harness::start().await;
    let term = h.any().status().await.term.get();
    let addr = format!("http://{}", h.c.slots[0].cfg.advertise);
    let mut client = AgentClient::connect(addr).await.expect("connect");
    let req = |term: u64| {
        let mut r = tonic::Request::new(HeartbeatRequest {
            master_id: 99,
            term,
            node_id: 0,
            applied_index: 0,
            lease_ack: 0,
            ..Default::default()
        });
        r.metadata_mut()
            .insert("x-herd-secret", support::SECRET.parse().expect("ascii"));
        r.metadata_mut()
            .insert("x-herd-cluster", "test".parse().expect("ascii"));
        r
    };
    let err = client
        .heartbeat(req(term - 1))
        .await
        .expect_err("stale term");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let reply = client
        .heartbeat(req(term))
        .await
        .expect("current term")
        .into_inner();
    assert_eq!(reply.node_id, h.c.node(0).id().get());
    let err = client
        .heartbeat(HeartbeatRequest {
            master_id: 99,
            term,
            node_id: 0,
            applied_index: 0,
            lease_ack: 0,
            ..Default::default()
        })
        .await
        .expect_err("no secret");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    h.c.shutdown().await;
}
