//! A master term against fake nodes and an in-memory registry, on a paused tokio clock:
//! offline after the timeout, the grace after an election, rescheduling at the sweep, uptime
//! buckets and pruning, and stopping when leadership goes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::MasterView;
use super::storm::RescheduleMode;
use super::term::MasterTerm;
use super::term::TermSettings;
use super::testing::FakeWorld;
use crate::Term;
use crate::clock::WallClock;
use crate::ids::ids;
use crate::raft::Leadership;
use crate::registry::App;
use crate::registry::DAY_MS;
use crate::registry::NodeId;
use crate::registry::NodeStatus;
use crate::registry::Registry;
use crate::registry::RegistryCommand;
use crate::registry::UptimeBucket;

const TERM: Term = Term(7);

fn settings() -> TermSettings {
    TermSettings {
        heartbeat_interval: Duration::from_secs(2),
        sweep_interval: Duration::from_secs(60),
        offline_timeout: Duration::from_secs(90),
        sweep_concurrency: 20,
        heartbeat_concurrency: 64,
        bucket_ms: DAY_MS,
        retention_days: 90,
        rollup_interval: Duration::from_secs(60),
        master_addr: "10.0.0.1:9700".into(),
    }
}

fn start(world: &Arc<FakeWorld>, clock: WallClock) -> tokio::task::JoinHandle<()> {
    start_with(world, clock, settings())
}

fn start_with(
    world: &Arc<FakeWorld>,
    clock: WallClock,
    settings: TermSettings,
) -> tokio::task::JoinHandle<()> {
    let term = MasterTerm::new(world.clone(), NodeId(1), TERM, settings, clock);
    tokio::spawn(async move {
        term.run().await;
    })
}

/// The uptime rollups the master wrote, each as its `(node, bucket, up, total)` entries.
fn rollups(world: &FakeWorld) -> Vec<Vec<(NodeId, u64, u64, u64)>> {
    world
        .written(|c| matches!(c, RegistryCommand::SetUptime { .. }))
        .into_iter()
        .filter_map(|c| match c {
            RegistryCommand::SetUptime { buckets, .. } => Some(
                buckets
                    .iter()
                    .map(|(n, i, b)| (*n, *i, b.up_samples, b.total_samples))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn status_writes(world: &FakeWorld) -> Vec<Vec<(NodeId, NodeStatus)>> {
    world
        .written(|c| matches!(c, RegistryCommand::SetNodeStatus { .. }))
        .into_iter()
        .filter_map(|c| match c {
            RegistryCommand::SetNodeStatus { updates } => Some(updates),
            _ => None,
        })
        .collect()
}

async fn at(secs: u64, started: tokio::time::Instant) {
    tokio::time::sleep_until(started + Duration::from_millis(secs * 1000 + 500)).await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_goes_offline_at_the_first_sweep_after_90_s_and_back_online_when_it_answers()
{
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    world.nodes.set_down(NodeId(3), true);
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(1_000 * DAY_MS));

    at(1, t0).await;
    let r = world.registry_now();
    assert_eq!(r.nodes.len(), 3, "a record for every member, in one write");
    assert_eq!(
        world
            .written(|c| matches!(c, RegistryCommand::UpsertNodes { .. }))
            .len(),
        1
    );

    at(60, t0).await;
    assert!(
        status_writes(&world).is_empty(),
        "60 s of silence is not 90"
    );
    at(120, t0).await;
    assert_eq!(
        status_writes(&world),
        vec![vec![(NodeId(3), NodeStatus::Offline)]]
    );
    assert_eq!(
        world.registry_now().nodes[&NodeId(3)].status,
        NodeStatus::Offline
    );

    world.nodes.set_down(NodeId(3), false);
    at(179, t0).await;
    assert_eq!(
        status_writes(&world).len(),
        1,
        "back online only at the next sweep"
    );
    at(180, t0).await;
    assert_eq!(
        status_writes(&world)[1],
        vec![(NodeId(3), NodeStatus::Online)]
    );
    // Heartbeat cadence: about one per node per 2 s over 180 s.
    let n = world.nodes.calls_to(NodeId(1));
    assert!((89..=91).contains(&n), "{n} heartbeats to node 1 in 180 s");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_node_back_from_a_long_silence_gets_no_lease_until_a_sweep_settled_it() {
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    world.nodes.set_down(NodeId(3), true);
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(1_000 * DAY_MS));
    let secs = |s: u64| t0 + Duration::from_secs(s);

    at(120, t0).await;
    assert_eq!(
        status_writes(&world),
        vec![vec![(NodeId(3), NodeStatus::Offline)]]
    );
    let steady = world.nodes.acks_to(NodeId(1), secs(10), secs(120));
    assert!(
        !steady.is_empty() && steady.iter().all(|&a| a != 0),
        "a node that answers is acknowledged every time: {steady:?}"
    );
    // Back at 130 s, after 130 s of silence: answered, but no lease until the sweep at 180 s
    // has written it online.
    world.nodes.set_down(NodeId(3), false);
    at(179, t0).await;
    let waiting = world.nodes.acks_to(NodeId(3), secs(130), secs(179));
    assert!(
        waiting.len() >= 20 && waiting.iter().all(|&a| a == 0),
        "{waiting:?}"
    );
    at(184, t0).await;
    assert_eq!(
        status_writes(&world)[1],
        vec![(NodeId(3), NodeStatus::Online)]
    );
    let settled = world.nodes.acks_to(NodeId(3), secs(181), secs(184));
    assert!(
        !settled.is_empty() && settled.iter().all(|&a| a != 0),
        "{settled:?}"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_node_the_registry_holds_offline_gets_no_lease_from_a_new_master_until_a_sweep() {
    // A previous master marked node 3 offline (its instances may already run elsewhere, or
    // this term's rescheduler may move them any moment). It answers the new master at once:
    // acknowledging it then would let it start a singleton that is being moved away (chaos
    // quick seed 3 saw `solo@0` on two nodes for 0.4 s that way).
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    world.user_write(RegistryCommand::UpsertNodes {
        nodes: (1..=3)
            .map(|id| crate::registry::NodeRecord {
                id: NodeId(id),
                addr: format!("n{id}"),
                ..Default::default()
            })
            .collect(),
    });
    world.user_write(RegistryCommand::SetNodeStatus {
        updates: vec![(NodeId(3), NodeStatus::Offline)],
    });
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(1_000 * DAY_MS));
    let secs = |s: u64| t0 + Duration::from_secs(s);
    at(59, t0).await;
    let before = world.nodes.acks_to(NodeId(3), t0, secs(59));
    assert!(
        before.len() >= 20 && before.iter().all(|&a| a == 0),
        "answered, but no lease before a sweep: {before:?}"
    );
    let others = world.nodes.acks_to(NodeId(2), secs(5), secs(59));
    assert!(
        !others.is_empty() && others.iter().all(|&a| a != 0),
        "{others:?}"
    );
    at(64, t0).await;
    assert_eq!(
        status_writes(&world).last(),
        Some(&vec![(NodeId(3), NodeStatus::Online)])
    );
    let settled = world.nodes.acks_to(NodeId(3), secs(61), secs(64));
    assert!(
        !settled.is_empty() && settled.iter().all(|&a| a != 0),
        "{settled:?}"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_fresh_master_gives_every_node_a_full_offline_timeout_from_its_election() {
    // The registry says all three are online: a previous master saw them.
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    for id in ids([2, 3]) {
        world.nodes.set_down(id, true);
    }
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(1_000 * DAY_MS));
    // Node 2 was only slow to answer the new master: 80 s after the election.
    at(80, t0).await;
    world.nodes.set_down(NodeId(2), false);
    at(60 + 60, t0).await;
    assert_eq!(
        status_writes(&world),
        vec![vec![(NodeId(3), NodeStatus::Offline)]],
        "only the node silent for a full timeout since the election"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn instances_of_an_offline_node_are_rescheduled_at_that_sweep() {
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    world.user_write(RegistryCommand::PutApp {
        name: "api".into(),
        app: App {
            instances: 3,
            ..App::default()
        },
    });
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(1_000 * DAY_MS));
    at(5, t0).await;
    let placed = world.registry_now().assignments["api"].clone();
    let mut nodes: Vec<NodeId> = placed.values().copied().collect();
    nodes.sort();
    assert_eq!(nodes, ids([1, 2, 3]), "one instance per node");
    let victim = placed[&0];
    world.nodes.set_down(victim, true);

    at(119, t0).await;
    assert_eq!(
        world.registry_now().assignments["api"][&0],
        victim,
        "silent 114 s but no sweep yet"
    );
    at(120, t0).await;
    let r = world.registry_now();
    assert_eq!(r.nodes[&victim].status, NodeStatus::Offline);
    assert_ne!(
        r.assignments["api"][&0], victim,
        "rescheduled right after the sweep"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_fresh_master_places_once_every_node_answered_or_after_two_intervals() {
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    world.user_write(RegistryCommand::PutApp {
        name: "api".into(),
        app: App {
            instances: 2,
            ..App::default()
        },
    });
    world.nodes.set_down(NodeId(3), true);
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(1_000 * DAY_MS));
    // Nodes 1 and 2 answered within the first interval; node 3, online in the registry, not.
    at(3, t0).await;
    assert!(
        world.registry_now().assignments.is_empty(),
        "nothing placed while an online node is unheard"
    );
    // After two intervals it places on the nodes that answered.
    at(4, t0).await;
    let mut nodes: Vec<NodeId> = world.registry_now().assignments["api"]
        .values()
        .copied()
        .collect();
    nodes.sort();
    assert_eq!(nodes, ids([1, 2]));
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn uptime_samples_land_in_the_bucket_of_their_day_across_midnight() {
    let world = FakeWorld::new(TERM, &[NodeId(1), NodeId(2)], Registry::default());
    world.nodes.set_down(NodeId(2), true);
    let day = 20_000;
    // The term starts 150 s before midnight: sweeps at 60 s, 120 s (day `day - 1`), 180 s (day).
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(day * DAY_MS - 150_000));
    at(180, t0).await;
    let r = world.registry_now();
    let bucket = |node: NodeId, d: u64| r.uptime[&node].get(&d).copied().unwrap_or_default();
    assert_eq!(
        (
            bucket(NodeId(1), day - 1).up_samples,
            bucket(NodeId(1), day - 1).total_samples
        ),
        (2, 2)
    );
    assert_eq!(
        (
            bucket(NodeId(1), day).up_samples,
            bucket(NodeId(1), day).total_samples
        ),
        (1, 1)
    );
    // Node 2: up at 60 s (grace), offline at 120 s (down since the election), still at 180 s.
    assert_eq!(
        (
            bucket(NodeId(2), day - 1).up_samples,
            bucket(NodeId(2), day - 1).total_samples
        ),
        (1, 2)
    );
    assert_eq!(
        (
            bucket(NodeId(2), day).up_samples,
            bucket(NodeId(2), day).total_samples
        ),
        (0, 1)
    );
    assert_eq!(
        world
            .written(|c| matches!(c, RegistryCommand::SetUptime { .. }))
            .len(),
        3,
        "a rollup interval of one sweep: one rollup per sweep"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn uptime_goes_to_the_registry_once_per_rollup_interval_not_every_sweep() {
    let world = FakeWorld::new(TERM, &[NodeId(1), NodeId(2)], Registry::default());
    let day = 20_000;
    let t0 = crate::clock::now();
    let five_sweeps = TermSettings {
        rollup_interval: Duration::from_secs(300),
        ..settings()
    };
    let task = start_with(&world, WallClock::at(day * DAY_MS + 3_600_000), five_sweeps);
    at(240, t0).await;
    assert!(rollups(&world).is_empty(), "four sweeps, no rollup yet");
    assert!(world.registry_now().uptime.is_empty());
    at(300, t0).await;
    assert_eq!(
        rollups(&world),
        vec![vec![(NodeId(1), day, 5, 5), (NodeId(2), day, 5, 5)]],
        "five sweeps, one write with each changed bucket"
    );
    // Node 2 goes silent: up at 360 s, offline from 420 s (the first sweep after 90 s).
    world.nodes.set_down(NodeId(2), true);
    at(600, t0).await;
    let r = rollups(&world);
    assert_eq!(r.len(), 2, "ten sweeps, two rollups: {r:?}");
    assert_eq!(
        r[1],
        vec![(NodeId(1), day, 10, 10), (NodeId(2), day, 6, 10)]
    );
    assert!(
        world
            .written(|c| matches!(c, RegistryCommand::RecordUptime { .. }))
            .is_empty(),
        "no per-sweep sample batches any more"
    );
    let bucket = world.registry_now().uptime[&NodeId(2)][&day];
    assert_eq!((bucket.up_samples, bucket.total_samples), (6, 10));
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_new_term_continues_the_uptime_counts_from_the_registry() {
    let world = FakeWorld::new(TERM, &[NodeId(1)], Registry::default());
    let day = 20_000;
    let base = day * DAY_MS + 3_600_000;
    let five_sweeps = TermSettings {
        rollup_interval: Duration::from_secs(300),
        ..settings()
    };
    let t0 = crate::clock::now();
    let first = start_with(&world, WallClock::at(base), five_sweeps.clone());
    // Rolled up at 300 s (5 samples); 360 s and 420 s are counted but not written yet.
    at(420, t0).await;
    first.abort();
    assert_eq!(rollups(&world), vec![vec![(NodeId(1), day, 5, 5)]]);
    // The failover: a new master starts from the registry, losing only the unwritten samples.
    let second = start_with(&world, WallClock::at(base + 420_500), five_sweeps);
    // Its first rollup is due 300 s after it started (420.5 s).
    at(421 + 300, t0).await;
    assert_eq!(
        rollups(&world)[1..],
        [vec![(NodeId(1), day, 10, 10)]],
        "5 samples from the registry, 5 of its own"
    );
    let bucket = world.registry_now().uptime[&NodeId(1)][&day];
    assert_eq!((bucket.up_samples, bucket.total_samples), (10, 10));
    second.abort();
}

#[tokio::test(start_paused = true)]
async fn buckets_older_than_90_days_are_pruned_at_a_sweep() {
    let today = 20_000;
    let mut reg = Registry::default();
    let old = UptimeBucket {
        up_samples: 1,
        total_samples: 1,
        last_sample_ms: 0,
    };
    for d in [today - 91, today - 90, today - 89] {
        reg.uptime.entry(NodeId(1)).or_default().insert(d, old);
    }
    let world = FakeWorld::new(TERM, &[NodeId(1)], reg);
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(today * DAY_MS + 3_600_000));
    at(60, t0).await;
    let days: Vec<u64> = world.registry_now().uptime[&NodeId(1)]
        .keys()
        .copied()
        .collect();
    assert_eq!(
        days,
        vec![today - 90, today - 89, today],
        "the day ending more than 90 days ago is gone"
    );
    assert_eq!(
        world
            .written(|c| matches!(c, RegistryCommand::PruneUptime { .. }))
            .len(),
        1
    );
    at(120, t0).await;
    assert_eq!(
        world
            .written(|c| matches!(c, RegistryCommand::PruneUptime { .. }))
            .len(),
        1,
        "no prune when nothing is due"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_write_the_fence_refuses_as_stale_ends_the_term() {
    // The log's leader is already in the next term: the first fenced write is refused.
    let world = FakeWorld::new(
        Term(TERM.0 + 1),
        &[NodeId(1), NodeId(2)],
        Registry::default(),
    );
    let term = MasterTerm::new(
        world.clone(),
        NodeId(1),
        TERM,
        settings(),
        WallClock::at(DAY_MS),
    );
    let deposed = tokio::time::timeout(Duration::from_secs(60), term.run())
        .await
        .expect("the term ends at its first refused write");
    assert!(
        deposed
            .0
            .ends_with("stale master: decided in term 7, committed in term 8"),
        "{}",
        deposed.0
    );
    assert!(
        world.registry_now().nodes.is_empty(),
        "the refused write changed nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn master_duties_stop_the_moment_leadership_is_lost() {
    let world = FakeWorld::new(TERM, &[NodeId(1), NodeId(2)], Registry::default());
    let (lead_tx, lead_rx) = watch::channel(Leadership::Follower {
        term: Term(TERM.0 - 1),
        leader: Some(NodeId(2)),
    });
    let (_stop_tx, stop_rx) = watch::channel(false);
    let view = Arc::new(MasterView::default());
    let task = tokio::spawn(super::run(
        world.clone(),
        NodeId(1),
        settings(),
        lead_rx,
        view.clone(),
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        world.nodes.calls_to(NodeId(2)),
        0,
        "a follower does not heartbeat"
    );
    lead_tx.send_replace(Leadership::Leader { term: TERM });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(world.nodes.calls_to(NodeId(2)) >= 4);
    let reg = world.registry_now();
    let rt = view
        .runtime(NodeId(1), &reg)
        .expect("a runtime view while leading");
    assert_eq!(rt.term, TERM);
    assert!(rt.nodes.iter().all(|n| n.last_seen_ms.is_some()));
    assert!(
        world
            .writes
            .lock()
            .expect("lock")
            .iter()
            .all(|w| matches!(w, RegistryCommand::Fenced { term: TERM, .. })),
        "every master write carries its term"
    );

    lead_tx.send_replace(Leadership::Follower {
        term: Term(TERM.0 + 1),
        leader: Some(NodeId(2)),
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = world.nodes.calls_to(NodeId(2));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        world.nodes.calls_to(NodeId(2)),
        before,
        "no heartbeat after losing leadership"
    );
    assert!(view.runtime(NodeId(1), &reg).is_none());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_crash_looping_instance_moves_at_most_three_times_an_hour() {
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    world.user_write(RegistryCommand::PutApp {
        name: "bad".into(),
        app: App {
            instances: 1,
            ..App::default()
        },
    });
    // Wherever it runs, it crashes.
    for id in (1..=3).map(NodeId) {
        world.nodes.instances.lock().expect("lock").insert(
            id,
            vec![herd_proto::cluster::InstanceStatus {
                app: "bad".into(),
                instance: 0,
                status: "crashed".into(),
                pid: None,
                restarts: 5,
                generation: 0,
            }],
        );
    }
    let t0 = crate::clock::now();
    let task = start(&world, WallClock::at(1_000 * DAY_MS));
    at(600, t0).await;
    let assigns = world.written(|c| matches!(c, RegistryCommand::Assign { .. }));
    assert_eq!(
        assigns.len(),
        4,
        "placed once, then moved three times: {assigns:?}"
    );
    let nodes: Vec<NodeId> = assigns
        .iter()
        .filter_map(|c| match c {
            RegistryCommand::Assign { assignments } => Some(assignments[0].node),
            _ => None,
        })
        .collect();
    assert!(
        nodes.windows(2).all(|w| w[0] != w[1]),
        "each move goes elsewhere: {nodes:?}"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_flaps_within_its_term_still_finds_a_dead_node_offline() {
    // Under load a leader's quorum acknowledgement can go stale for a moment: it calls itself
    // follower, then leader again, in the same term. Each return must not grant every node a
    // fresh grace period, or a dead node is never found offline while the flapping lasts.
    let world = FakeWorld::new(
        TERM,
        &[NodeId(1), NodeId(2), NodeId(3)],
        Registry::default(),
    );
    world.nodes.set_down(NodeId(3), true);
    let (lead_tx, lead_rx) = watch::channel(Leadership::Leader { term: TERM });
    let (_stop_tx, stop_rx) = watch::channel(false);
    let view = Arc::new(MasterView::default());
    let fast = TermSettings {
        sweep_interval: Duration::from_secs(5),
        offline_timeout: Duration::from_secs(30),
        ..settings()
    };
    let task = tokio::spawn(super::run(
        world.clone(),
        NodeId(1),
        fast,
        lead_rx,
        view.clone(),
        stop_rx,
    ));
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        lead_tx.send_replace(Leadership::Follower {
            term: TERM,
            leader: None,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        lead_tx.send_replace(Leadership::Leader { term: TERM });
    }
    assert!(
        status_writes(&world)
            .iter()
            .flatten()
            .any(|(id, s)| *id == NodeId(3) && *s == NodeStatus::Offline),
        "node 3 was never found offline: {:?}",
        status_writes(&world)
    );
    task.abort();
}

fn ten_nodes_running(instances: u32) -> Arc<FakeWorld> {
    let world = FakeWorld::new(
        TERM,
        &(1..=10).map(NodeId).collect::<Vec<_>>(),
        Registry::default(),
    );
    world.user_write(RegistryCommand::PutApp {
        name: "api".into(),
        app: App {
            instances,
            ..App::default()
        },
    });
    world
}

/// Every assignment the master wrote, in order: (instance, node).
fn assigned(world: &FakeWorld) -> Vec<Vec<(u32, NodeId)>> {
    world
        .written(|c| matches!(c, RegistryCommand::Assign { .. }))
        .into_iter()
        .filter_map(|c| match c {
            RegistryCommand::Assign { assignments } => Some(
                assignments
                    .into_iter()
                    .map(|a| (a.instance, a.node))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn on_nodes(world: &FakeWorld, nodes: &[NodeId]) -> usize {
    world.registry_now().assignments["api"]
        .values()
        .filter(|n| nodes.contains(n))
        .count()
}

/// No instance was given a node twice after `initial` assignment writes.
fn each_moved_at_most_once(writes: &[Vec<(u32, NodeId)>], initial: usize) {
    let mut seen = std::collections::HashSet::new();
    for (i, _) in writes[initial..].iter().flatten() {
        assert!(
            seen.insert(*i),
            "instance {i} rescheduled twice: {writes:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn four_of_ten_nodes_failing_at_once_are_rescheduled_at_a_bounded_rate() {
    let world = ten_nodes_running(30);
    let t0 = crate::clock::now();
    let term = MasterTerm::new(
        world.clone(),
        NodeId(1),
        TERM,
        settings(),
        WallClock::at(DAY_MS),
    );
    let health = term.health();
    let task = tokio::spawn(async move {
        term.run().await;
    });
    at(5, t0).await;
    let dead: Vec<NodeId> = (7..=10).map(NodeId).collect();
    assert_eq!(on_nodes(&world, &dead), 12, "three instances per node");
    let initial = assigned(&world).len();
    for &id in &dead {
        world.nodes.set_down(id, true);
    }

    at(120, t0).await;
    let mut offline = status_writes(&world).concat();
    offline.sort();
    assert_eq!(
        offline,
        dead.iter()
            .map(|&id| (id, NodeStatus::Offline))
            .collect::<Vec<_>>(),
        "all four marked offline at once"
    );
    // 6 online nodes: one instance per second, a pass (2 s) holds at most two.
    assert_eq!(
        health.reschedule_mode(),
        RescheduleMode::Throttled { per_second: 1 }
    );
    assert_eq!(on_nodes(&world, &dead), 10, "two moved at the sweep");
    at(125, t0).await;
    assert!(
        on_nodes(&world, &dead) >= 4,
        "not all at once: {}",
        on_nodes(&world, &dead)
    );
    at(150, t0).await;
    assert_eq!(on_nodes(&world, &dead), 0, "all rescheduled in the end");
    let writes = assigned(&world);
    assert!(
        writes[initial..].iter().all(|w| w.len() <= 2),
        "at most two per pass: {writes:?}"
    );
    assert_eq!(writes[initial..].concat().len(), 12);
    each_moved_at_most_once(&writes, initial);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn six_of_ten_nodes_silent_freeze_rescheduling_until_enough_answer_again() {
    let world = ten_nodes_running(30);
    let t0 = crate::clock::now();
    let term = MasterTerm::new(
        world.clone(),
        NodeId(1),
        TERM,
        settings(),
        WallClock::at(DAY_MS),
    );
    let health = term.health();
    let task = tokio::spawn(async move {
        term.run().await;
    });
    at(5, t0).await;
    let before = world.registry_now().assignments["api"].clone();
    let initial = assigned(&world).len();
    let silent: Vec<NodeId> = (5..=10).map(NodeId).collect();
    for &id in &silent {
        world.nodes.set_down(id, true);
    }

    at(120, t0).await;
    let r = world.registry_now();
    assert!(
        silent
            .iter()
            .all(|id| r.nodes[id].status == NodeStatus::Offline),
        "health is the truth: marked offline"
    );
    assert_eq!(health.reschedule_mode(), RescheduleMode::Frozen);
    at(170, t0).await;
    assert_eq!(assigned(&world).len(), initial, "nothing rescheduled");
    assert_eq!(world.registry_now().assignments["api"], before);

    // Half of them answer again: 3 of 10 silent, a third, back to normal at the next sweep.
    for id in (5..=7).map(NodeId) {
        world.nodes.set_down(id, false);
    }
    at(180, t0).await;
    let r = world.registry_now();
    assert_eq!(health.reschedule_mode(), RescheduleMode::Normal);
    assert!((5..=7).all(|id| r.nodes[&NodeId(id)].status == NodeStatus::Online));
    assert_eq!(
        on_nodes(&world, &[NodeId(8), NodeId(9), NodeId(10)]),
        0,
        "the rest moved at once"
    );
    for (i, n) in &before {
        if (1..=7).contains(&n.get()) {
            assert_eq!(r.assignments["api"][i], *n, "instance {i} stayed on {n}");
        }
    }
    at(300, t0).await;
    each_moved_at_most_once(&assigned(&world), initial);
    assert_eq!(assigned(&world)[initial..].concat().len(), 9);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_new_master_inherits_the_freeze_from_the_registry() {
    let world = ten_nodes_running(10);
    world.user_write(RegistryCommand::UpsertNodes {
        nodes: (1..=10)
            .map(|id| crate::registry::NodeRecord {
                id: NodeId(id),
                addr: format!("n{id}"),
                ..Default::default()
            })
            .collect(),
    });
    world.user_write(RegistryCommand::Assign {
        assignments: (0..10)
            .map(|i| crate::registry::Assignment {
                app: "api".into(),
                instance: i,
                node: NodeId(u64::from(i) + 1),
            })
            .collect(),
    });
    world.user_write(RegistryCommand::SetNodeStatus {
        updates: (5..=10)
            .map(|id| (NodeId(id), NodeStatus::Offline))
            .collect(),
    });
    for id in (5..=10).map(NodeId) {
        world.nodes.set_down(id, true);
    }
    let t0 = crate::clock::now();
    let term = MasterTerm::new(
        world.clone(),
        NodeId(1),
        TERM,
        settings(),
        WallClock::at(DAY_MS),
    );
    let health = term.health();
    let task = tokio::spawn(async move {
        term.run().await;
    });
    at(30, t0).await;
    assert_eq!(health.reschedule_mode(), RescheduleMode::Frozen);
    assert!(assigned(&world).is_empty(), "{:?}", assigned(&world));
    task.abort();
}
