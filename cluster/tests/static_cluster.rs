//! Three in-process nodes on loopback with `static:` discovery: election, forwarding, secret
//! check, failover, restart and catch-up by snapshot.

mod support;

use std::time::Duration;

use herd_cluster::Leadership;
use herd_cluster::RegistryCommand;
use herd_cluster::RegistryResponse;
use herd_proto::cluster::ProbeRequest;
use herd_proto::cluster::cluster_api_client::ClusterApiClient;
use openraft::async_runtime::WatchReceiver;
use support::TestCluster;
use support::eventually;
use support::init_tracing;

const FORM: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(15);

fn put(key: &str, value: &str) -> RegistryCommand {
    RegistryCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}

async fn formed_cluster() -> TestCluster {
    init_tracing();
    let mut c = TestCluster::configure(3, TestCluster::static_seeds);
    c.start_all().await;
    c.agreed_leader(FORM).await;
    c.membership(3, 0, FORM).await;
    // The master records every member (a registry write): let it land before the test starts,
    // so tests that count log entries or snapshot indexes do not race with it.
    c.all_replicas("a node record per member", FORM, |r| r.nodes.len() == 3)
        .await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_one_leader_and_apply_a_follower_write_everywhere() {
    let c = formed_cluster().await;
    let leader = c.agreed_leader(FORM).await;
    let follower = (leader + 1) % 3;

    let status = c.node(follower).status().await;
    assert_eq!(status.cluster, "test");
    assert_eq!(status.leader_id, Some(c.node(leader).id()));
    assert_eq!(
        status.leader_addr.as_deref(),
        Some(c.slots[leader].cfg.advertise.as_str())
    );
    assert_eq!(status.members.len(), 3);
    assert!(
        status.members.iter().all(|m| m.reachable == Some(true)),
        "a follower reports the leader's reachability view: {status:?}"
    );

    // The leadership signal the master duties follow: exactly one node leads, in the Raft term.
    let term = c.node(leader).status().await.term;
    eventually("leader sees itself leading", CONVERGE, || async {
        (*c.node(leader).leader_changes().borrow() == Leadership::Leader { term }).then_some(())
    })
    .await;
    for (i, n) in c.running() {
        if i != leader {
            assert!(!n.leader_changes().borrow().is_leader());
        }
    }

    let resp = c
        .node(follower)
        .write(put("greeting", "hello"))
        .await
        .expect("write via follower");
    assert_eq!(resp, RegistryResponse::Applied { changed: true });
    c.all_replicas("the follower's write on every replica", CONVERGE, |r| {
        r.kv.get("greeting").map(String::as_str) == Some("hello")
    })
    .await;

    // A linearizable read from any node sees the write at once.
    for (_, n) in c.running() {
        let r = n.read(false).await.expect("linearizable read");
        assert_eq!(r.kv.get("greeting").map(String::as_str), Some("hello"));
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_with_a_wrong_secret_is_refused() {
    let c = formed_cluster().await;
    let addr = format!("http://{}", c.slots[0].cfg.advertise);
    let mut client = ClusterApiClient::connect(addr).await.expect("connect");

    let mut req = tonic::Request::new(ProbeRequest {});
    req.metadata_mut()
        .insert("x-herd-secret", "not-the-secret".parse().expect("ascii"));
    req.metadata_mut()
        .insert("x-herd-cluster", "test".parse().expect("ascii"));
    let err = client
        .probe(req)
        .await
        .expect_err("wrong secret must be refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let err = client
        .probe(ProbeRequest {})
        .await
        .expect_err("missing secret must be refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let mut req = tonic::Request::new(ProbeRequest {});
    req.metadata_mut()
        .insert("x-herd-secret", support::SECRET.parse().expect("ascii"));
    req.metadata_mut()
        .insert("x-herd-cluster", "test".parse().expect("ascii"));
    let probe = client
        .probe(req)
        .await
        .expect("right secret accepted")
        .into_inner();
    assert!(probe.initialized);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_shutdown_elects_a_new_leader_that_has_prior_writes_and_the_old_one_catches_up() {
    let mut c = formed_cluster().await;
    let old = c.agreed_leader(FORM).await;
    c.node(old)
        .write(put("before", "failover"))
        .await
        .expect("write");
    c.all_replicas("write replicated", CONVERGE, |r| {
        r.kv.contains_key("before")
    })
    .await;
    let old_id = c.node(old).id();

    let lost = c.node((old + 1) % 3).leader_changes();
    c.stop(old).await;
    let new = c.agreed_leader(FORM).await;
    assert_ne!(c.node(new).id(), old_id);
    eventually("new leader's leadership signal", CONVERGE, || async {
        c.node(new)
            .leader_changes()
            .borrow()
            .is_leader()
            .then_some(())
    })
    .await;
    assert!(
        lost.has_changed().expect("sender alive"),
        "followers see the leader change"
    );
    let r = c.node(new).read(false).await.expect("read on new leader");
    assert_eq!(r.kv.get("before").map(String::as_str), Some("failover"));

    // Writes go on with two of three nodes; the old leader comes back and catches up.
    c.node(new)
        .write(put("during", "outage"))
        .await
        .expect("write without old leader");
    c.start(old).await;
    c.all_replicas("restarted node caught up", CONVERGE, |r| {
        r.kv.contains_key("before") && r.kv.contains_key("during")
    })
    .await;
    c.agreed_leader(FORM).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_an_emptied_data_dir_catches_up_by_snapshot() {
    let mut c = formed_cluster().await;
    let leader = c.agreed_leader(FORM).await;
    let victim = (leader + 1) % 3;
    for i in 0..50 {
        c.node(leader)
            .write(put(&format!("k{i}"), "v"))
            .await
            .expect("write");
    }
    c.all_replicas("50 keys everywhere", CONVERGE, |r| r.kv.len() == 50)
        .await;

    c.stop(victim).await;
    std::fs::remove_dir_all(c.data_dir(victim)).expect("empty the data dir");
    c.node(leader)
        .write(put("after-wipe", "v"))
        .await
        .expect("write");

    // Snapshot and purge on every running node (whichever leads next), so the wiped node cannot
    // be served from the log.
    c.all_replicas("last write on the running nodes", CONVERGE, |r| {
        r.kv.contains_key("after-wipe")
    })
    .await;
    let mut last = 0;
    for (_, n) in c.running() {
        let raft = n.raft().engine().expect("a voter runs a Raft engine");
        let upto = eventually("snapshot of everything applied", CONVERGE, || async {
            let m = raft.metrics().borrow_watched().clone();
            let applied = m.last_applied?.index;
            if m.snapshot.map(|s| s.index) == Some(applied) {
                return Some(applied);
            }
            raft.trigger().snapshot().await.expect("trigger snapshot");
            None
        })
        .await;
        raft.trigger().purge_log(upto).await.expect("trigger purge");
        eventually("log purged", CONVERGE, || async {
            let m = raft.metrics().borrow_watched().clone();
            (m.purged.map(|p| p.index) == Some(upto)).then_some(())
        })
        .await;
        last = last.max(upto);
    }

    c.start(victim).await;
    c.all_replicas("wiped node caught up", CONVERGE, |r| {
        r.kv.len() == 51 && r.kv.contains_key("after-wipe")
    })
    .await;
    // Raft publishes its metrics after the state machine publishes the installed registry.
    let raft = c.node(victim).raft();
    eventually(
        "the wiped node to report the leader's snapshot installed",
        CONVERGE,
        || async {
            let m = raft.metrics().borrow_watched().clone();
            m.snapshot.is_some_and(|s| s.index >= last).then_some(())
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn step_down_hands_leadership_to_another_voter() {
    let c = formed_cluster().await;
    let old = c.agreed_leader(FORM).await;
    let follower = (old + 1) % 3;
    // Asked on a follower: forwarded to the leader.
    c.node(follower).step_down().await.expect("step down");
    let new = c.agreed_leader(FORM).await;
    assert_ne!(new, old);
    c.node(follower)
        .write(put("after", "step-down"))
        .await
        .expect("write");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_can_serve_the_cluster_rpcs_on_its_own_server() {
    init_tracing();
    let mut c = TestCluster::configure(3, TestCluster::static_seeds);
    c.slots[2].cfg.serve_rpc = false;
    c.start_all().await;
    // The "daemon" mounts the cluster services next to its own on one port.
    let listen = c.slots[2].cfg.listen;
    let routes = c.node(2).rpc_routes();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_shutdown(listen, async {
                let _ = stop_rx.await;
            })
            .await
    });
    c.agreed_leader(FORM).await;
    c.membership(3, 0, FORM).await;
    c.node(2).write(put("mounted", "yes")).await.expect("write");
    c.all_replicas("write everywhere", CONVERGE, |r| {
        r.kv.contains_key("mounted")
    })
    .await;
    c.shutdown().await;
    let _ = stop_tx.send(());
    server.await.expect("join").expect("daemon server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pinned_agent_runs_no_raft_engine_yet_names_the_leader_and_forwards_writes() {
    init_tracing();
    let mut c = TestCluster::configure(4, TestCluster::static_seeds);
    c.slots[3].cfg.role = herd_cluster::NodeRole::Agent;
    // Seeds are the voters only (voters bootstrap among the seeds they can reach).
    let voters: Vec<String> = c.slots[..3]
        .iter()
        .map(|s| s.cfg.advertise.clone())
        .collect();
    for slot in &mut c.slots {
        slot.cfg.discovery = TestCluster::static_seeds(&voters);
    }
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.agreed_leader(FORM).await;
    c.membership(3, 0, FORM).await;
    let leader_id = c.node(leader).id();
    c.start(3).await;
    let agent = c.node(3);
    assert!(
        agent.raft().engine().is_none(),
        "a pinned agent starts no openraft engine"
    );
    assert!(!agent.raft().is_leader());
    assert!(
        !c.data_dir(3).join("raft.redb").exists(),
        "a pinned agent keeps no Raft files"
    );
    // It registers through the leader and learns the leader from the master's heartbeats.
    eventually("the leader to register the agent", FORM, || async {
        let r = c.node(leader).read(false).await.ok()?;
        r.nodes.contains_key(&agent.id()).then_some(())
    })
    .await;
    eventually("the agent to name its leader", FORM, || async {
        let s = agent.status().await;
        (s.role == "agent" && s.leader_id == Some(leader_id)).then_some(())
    })
    .await;
    // Writes and linearizable reads from the agent are answered by the leader.
    let resp = agent
        .write(put("from", "agent"))
        .await
        .expect("write via the agent");
    assert_eq!(resp, RegistryResponse::Applied { changed: true });
    let r = agent.read(false).await.expect("read via the agent");
    assert_eq!(r.kv.get("from").map(String::as_str), Some("agent"));
    // It never joined the Raft membership.
    let m = c.node(leader).status().await;
    assert!(
        m.members.iter().all(|s| s.id != agent.id()),
        "the agent holds no Raft seat: {m:?}"
    );
    c.shutdown().await;
}
