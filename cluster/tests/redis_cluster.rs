//! Cluster formation through a real `redis-server` (required: this test fails, not skips, when
//! it is missing). Proves: three nodes form one cluster with one leader through Redis; a fourth
//! joins as a learner (voters = 3); stopping Redis changes nothing for the running cluster, and a
//! node restarted while Redis is down rejoins from its stored membership.

mod support;

use std::time::Duration;

use herd_cluster::RegistryCommand;
use support::RedisServer;
use support::TestCluster;
use support::init_tracing;

const FORM: Duration = Duration::from_secs(30);
const PASSWORD: &str = "redis-pw";

fn redis_keys(port: u16) -> Vec<String> {
    let client =
        redis::Client::open(format!("redis://:{PASSWORD}@127.0.0.1:{port}/0")).expect("client");
    let mut conn = client.get_connection().expect("connect to test redis");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("herd:test:*")
        .query(&mut conn)
        .expect("KEYS");
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_form_a_cluster_through_redis_and_survive_a_redis_outage() {
    init_tracing();
    let mut redis = RedisServer::start(PASSWORD).await;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port);
    let mut c = TestCluster::configure(4, |_| url.parse().expect("redis discovery"));
    for slot in &mut c.slots {
        slot.cfg.node_id = None; // auto ids, kept in the data dir
    }
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.agreed_leader(FORM).await;
    c.membership(3, 0, FORM).await;

    let keys = redis_keys(redis.port);
    assert!(
        keys.contains(&"herd:test:cluster-id".to_string()),
        "{keys:?}"
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("herd:test:node:"))
            .count(),
        3,
        "{keys:?}"
    );
    assert!(
        !keys.contains(&"herd:test:bootstrap".to_string()),
        "bootstrap lock released: {keys:?}"
    );

    // A fourth node finds the cluster through Redis and joins as a learner.
    c.start(3).await;
    c.membership(3, 1, FORM).await;
    let follower = (leader + 1) % 3;
    c.node(3)
        .write(RegistryCommand::Put {
            key: "via".into(),
            value: "learner".into(),
        })
        .await
        .expect("write through a learner");

    // Redis goes away: the cluster keeps its leader and keeps taking writes.
    redis.stop();
    let leader_id = c.node(leader).id();
    for i in 0..20 {
        c.node(follower)
            .write(RegistryCommand::Put {
                key: format!("outage-{i}"),
                value: "ok".into(),
            })
            .await
            .expect("write while redis is down");
    }
    assert_eq!(c.node(follower).status().await.leader_id, Some(leader_id));

    // A node restarted while Redis is down rejoins from its stored membership.
    c.stop(follower).await;
    c.node(leader)
        .write(RegistryCommand::Put {
            key: "while-away".into(),
            value: "ok".into(),
        })
        .await
        .expect("write while a follower is down");
    c.start(follower).await;
    c.all_replicas("restarted node caught up without redis", FORM, |r| {
        r.kv.contains_key("while-away") && r.kv.contains_key("via") && r.kv.len() == 22
    })
    .await;
    assert_eq!(c.agreed_leader(FORM).await, leader);
    c.shutdown().await;
}
