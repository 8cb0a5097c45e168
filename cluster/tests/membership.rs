//! Membership upkeep with `static:` discovery: learners beyond `voters`, leaving, replacing a
//! lost voter, and a wiped node that comes back under a new id.

mod support;

use std::time::Duration;

use herd_cluster::RegistryCommand;
use support::TestCluster;
use support::eventually;
use support::init_tracing;

const FORM: Duration = Duration::from_secs(30);

fn put(key: &str) -> RegistryCommand {
    RegistryCommand::Put {
        key: key.into(),
        value: "v".into(),
    }
}

/// Ids of the voters, as the current leader reports them.
async fn voter_ids(c: &TestCluster) -> Vec<herd_cluster::NodeId> {
    let leader = c.agreed_leader(FORM).await;
    let s = c.node(leader).status().await;
    let mut ids: Vec<herd_cluster::NodeId> = s
        .members
        .iter()
        .filter(|m| m.role == "voter")
        .map(|m| m.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_voter_is_replaced_by_the_learner() {
    init_tracing();
    let mut c = TestCluster::configure(4, TestCluster::static_seeds);
    c.start_all().await;
    c.agreed_leader(FORM).await;
    c.membership(3, 1, FORM).await;

    let leader = c.agreed_leader(FORM).await;
    let voters = voter_ids(&c).await;
    let learner = (0..4)
        .find(|&i| !voters.contains(&c.node(i).id()))
        .expect("one learner");
    let leaving = (0..4)
        .find(|&i| i != leader && i != learner)
        .expect("a follower voter");
    let (learner_id, leaving_id) = (c.node(learner).id(), c.node(leaving).id());

    c.node(leaving).leave().await.expect("leave");
    c.membership(3, 0, FORM).await;
    let voters = voter_ids(&c).await;
    assert!(voters.contains(&learner_id), "learner promoted: {voters:?}");
    assert!(!voters.contains(&leaving_id), "leaver gone: {voters:?}");
    c.stop(leaving).await;

    // The leader can leave too: leadership moves on and writes keep working.
    let leader = c.agreed_leader(FORM).await;
    c.node(leader).leave().await.expect("leader leaves");
    c.stop(leader).await;
    c.membership(2, 0, FORM).await;
    let new_leader = c.agreed_leader(FORM).await;
    c.node(new_leader)
        .write(put("after-leaves"))
        .await
        .expect("write");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_voter_is_replaced_and_rejoins_as_a_learner() {
    init_tracing();
    let mut c = TestCluster::configure(4, TestCluster::static_seeds);
    for s in &mut c.slots {
        s.cfg.replace_voter_after_ms = 1_000;
    }
    c.start_all().await;
    c.agreed_leader(FORM).await;
    c.membership(3, 1, FORM).await;
    let leader = c.agreed_leader(FORM).await;
    let voters = voter_ids(&c).await;
    let lost = (0..4)
        .find(|&i| i != leader && voters.contains(&c.node(i).id()))
        .expect("a follower voter");
    let lost_id = c.node(lost).id();

    c.stop(lost).await;
    eventually("lost voter replaced", FORM, || async {
        let v = voter_ids(&c).await;
        (v.len() == 3 && !v.contains(&lost_id)).then_some(())
    })
    .await;
    c.membership(3, 0, FORM).await;

    // Back again: it asks to be added and becomes the learner.
    c.node(leader)
        .write(put("while-gone"))
        .await
        .expect("write");
    c.start(lost).await;
    c.membership(3, 1, FORM).await;
    c.all_replicas("returning node caught up", FORM, |r| {
        r.kv.contains_key("while-gone")
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_with_an_automatic_id_comes_back_under_a_new_id_and_replaces_itself() {
    init_tracing();
    let mut c = TestCluster::configure(3, TestCluster::static_seeds);
    for s in &mut c.slots {
        s.cfg.node_id = None;
    }
    c.start_all().await;
    c.agreed_leader(FORM).await;
    c.membership(3, 0, FORM).await;
    let leader = c.agreed_leader(FORM).await;
    let victim = (leader + 1) % 3;
    let old_id = c.node(victim).id();
    c.node(leader)
        .write(put("before-wipe"))
        .await
        .expect("write");

    c.stop(victim).await;
    std::fs::remove_dir_all(c.data_dir(victim)).expect("wipe");
    c.start(victim).await;
    let new_id = c.node(victim).id();
    assert_ne!(new_id, old_id, "ids are never reused");

    eventually("new id replaces the old one as voter", FORM, || async {
        let v = voter_ids(&c).await;
        (v.len() == 3 && v.contains(&new_id) && !v.contains(&old_id)).then_some(())
    })
    .await;
    c.membership(3, 0, FORM).await;
    c.all_replicas("wiped node caught up", FORM, |r| {
        r.kv.contains_key("before-wipe")
    })
    .await;
    c.shutdown().await;
}
