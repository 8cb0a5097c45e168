//! A full disk under one voter of a three-voter cluster. herd keeps a node's Raft data in
//! `$HERD_HOME/raft` (not configurable), so each node's whole home — state, logs and Raft —
//! sits on a small tmpfs of its own (the tests run as root, as CI does), and one of them is
//! filled to the last byte: once while that node follows, once while it leads. The cluster
//! must keep acknowledging writes through the healthy nodes (a full leader hands leadership
//! over), the full node's daemon must stay up, answer and keep its apps running, and once
//! space returns it must catch up without a restart, with everything on its own disk.

mod common;

use common::cluster::*;
use common::disk::{Tmpfs, fill};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long one write may take to be acknowledged, across a change of leader.
const WRITE: Duration = Duration::from_secs(15);
/// How long leadership may take to leave a full leader.
const HAND_OVER: Duration = Duration::from_secs(5);
/// How long the full node may take to catch up once space returns.
const CATCH_UP: Duration = Duration::from_secs(20);
/// Writes made while the disk is full.
const WRITES: usize = 6;
/// Each write carries this much, so the full node's Raft log needs new pages to take it.
const PAD: usize = 48 * 1024;

/// Three voters, each with its home on a 16 MiB tmpfs of its own.
struct Cluster {
    nodes: Vec<Node>,
    // Dropped after the nodes: a daemon is stopped before its filesystem is unmounted.
    disks: Vec<Tmpfs>,
}

impl Cluster {
    fn start(url: &str) -> Cluster {
        let disks: Vec<Tmpfs> = (0..3).map(|_| Tmpfs::new("16m")).collect();
        let nodes = disks
            .iter()
            .zip(1u8..)
            .map(|(d, host)| Node::in_home(d.home(), host, url, 3, "s3cret", "", ""))
            .collect();
        Cluster { nodes, disks }
    }

    fn all(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }
}

/// An app file in `via`'s home: a one-instance `sleep` app carrying `PAD` bytes of env.
fn padded_app(via: &Node, name: &str) -> String {
    let pad = "x".repeat(PAD);
    via.herd.app_file(
        &format!("{name}.toml"),
        &format!(
            "[[app]]\nname = \"{name}\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nenv = {{ PAD = \"{pad}\" }}\n"
        ),
    )
}

/// `herd cluster deploy FILE` through `via`, retried until acknowledged (a write refused or
/// timed out across a change of leader was never acknowledged). Panics if no attempt is
/// acknowledged within `WRITE`.
fn deploy_until_acknowledged(via: &Node, file: &str) {
    let deadline = Instant::now() + WRITE;
    loop {
        let out = via.herd.run(&["cluster", "deploy", file]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster stopped acknowledging writes: deploy {file} through node {}: {}",
            via.id(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The app names in `n`'s own replica (`--stale`: the node answers from what it has applied),
/// sorted; `None` if it does not answer.
fn replica_apps(n: &Node) -> Option<Vec<String>> {
    let out = n.herd.run(&["cluster", "apps", "--json", "--stale"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut names: Vec<String> = v
        .as_array()?
        .iter()
        .filter_map(|a| a["name"].as_str().map(String::from))
        .collect();
    names.sort();
    Some(names)
}

/// What the current leader (asked through `via`) says it has replicated to node `id` (0 when
/// nothing is known to be), and its own last log index.
fn replication_to(via: &Node, id: u64) -> Option<(u64, u64)> {
    let s = via.status()?;
    let leader = s["leader_id"].as_u64()?;
    let members = s["members"].as_array()?;
    let matched = members.iter().find(|m| m["id"] == id)?["matched_index"]
        .as_u64()
        .unwrap_or(0);
    let last = members.iter().find(|m| m["id"] == leader)?["matched_index"].as_u64()?;
    Some((matched, last))
}

/// The log index `n` has applied to its own replica, from its own status.
fn applied(n: &Node) -> Option<u64> {
    n.status()?["applied_index"].as_u64()
}

/// `n` has applied at least `index` itself and its replica names exactly what every node in
/// `others` names. (A node whose Raft stopped answers `cluster apps --stale` from the leader,
/// so the applied index is what shows its own replica caught up.)
fn agrees(n: &Node, index: u64, others: &[&Node]) -> bool {
    if applied(n).is_none_or(|a| a < index) {
        return false;
    }
    let Some(mine) = replica_apps(n) else {
        return false;
    };
    others
        .iter()
        .all(|o| replica_apps(o).as_ref() == Some(&mine))
}

/// Waits until every healthy node names a healthy leader.
fn wait_handed_over(healthy: &[&Node], full: &Node) {
    wait_until(
        "leadership to move from the full node to a healthy one",
        HAND_OVER,
        || {
            healthy.iter().all(|n| {
                n.leader()
                    .is_some_and(|l| l != full.id() && healthy.iter().any(|h| h.id() == l))
            })
        },
    );
}

/// Every node of `all` but `full`.
fn others<'a>(all: &[&'a Node], full: &Node) -> Vec<&'a Node> {
    all.iter()
        .copied()
        .filter(|n| n.id() != full.id())
        .collect()
}

/// Which node is filled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Follower,
    Leader,
}

fn a_full_voter_stays_up_and_catches_up(role: Role) {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis.url());
    let all = cluster.all();
    let leader = wait_formed(&all, 3, 0);
    // One instance on every node: the full node's own app must run on through it all.
    let file = all[0].herd.app_file(
        "steady.toml",
        "[[app]]\nname = \"steady\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 3\n[app.placement]\nmax_per_node = 1\n",
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("one steady instance on every node", FORM, || {
        all.iter().all(|n| running_here(n, "steady").len() == 1)
    });

    let full_at = all
        .iter()
        .position(|n| (n.id() == leader) == (role == Role::Leader))
        .unwrap();
    let full = all[full_at];
    let healthy = others(&all, full);
    let daemon_pid = full.herd.daemon_pid().expect("the full node's daemon pid");
    let steady = full
        .herd
        .ps()
        .into_iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.starts_with("steady@")))
        .expect("a steady instance on the full node");
    let steady_pid = pid_of(&steady);

    let filler = cluster.disks[full_at].path().join("filler");
    assert!(fill(&filler) > 0);
    let filled = Instant::now();

    // The healthy nodes take every write, whoever leads. The first reaches the full node's
    // Raft log at once (a leader's log takes every write; a follower's is sent it).
    let mut acknowledged = Vec::new();
    let mut slowest = Duration::ZERO;
    let first = padded_app(healthy[0], "while-full-0");
    let started = Instant::now();
    let in_flight = healthy[0]
        .herd
        .cmd(&["cluster", "deploy", &first])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run herd cluster deploy");
    if role == Role::Leader {
        wait_handed_over(&healthy, full);
        eprintln!("leadership moved {:?} after the fill", filled.elapsed());
    }
    // A write in flight at a leader when its disk fills may time out (unacknowledged, so
    // retried): that leader's Raft waits on its disk once it has seen the new term.
    let answered = in_flight
        .wait_with_output()
        .expect("wait for herd cluster deploy");
    if !answered.status.success() {
        deploy_until_acknowledged(healthy[0], &first);
    }
    slowest = slowest.max(started.elapsed());
    acknowledged.push("while-full-0".to_string());
    let mut write = |i: usize| {
        let name = format!("while-full-{i}");
        let via = healthy[i % 2];
        let file = padded_app(via, &name);
        let started = Instant::now();
        deploy_until_acknowledged(via, &file);
        slowest = slowest.max(started.elapsed());
        acknowledged.push(name);
    };
    for i in 1..WRITES {
        write(i);
    }
    // The fault bit: the leader has not replicated everything to the full node.
    wait_until("the leader to see the full node fall behind", WRITE, || {
        replication_to(healthy[0], full.id()).is_some_and(|(matched, last)| matched < last)
    });
    // The full node's daemon is the same process, answers, and its app runs on.
    assert_eq!(full.herd.daemon_pid(), Some(daemon_pid));
    assert!(alive(daemon_pid), "the full node's daemon died");
    full.herd.ok(&["ps", "--json"]);
    full.herd.ok(&["cluster", "status", "--json"]);
    assert!(
        alive(steady_pid),
        "the full node's app died of the full disk"
    );
    // Every acknowledged write is on the healthy nodes; `last_write` is a log index at or after
    // the last of them.
    let last_write = healthy
        .iter()
        .filter_map(|n| n.status()?["committed_index"].as_u64())
        .max()
        .expect("a healthy node's committed index");
    for n in &healthy {
        let apps = replica_apps(n).unwrap_or_default();
        for name in &acknowledged {
            assert!(
                apps.contains(name),
                "node {} lacks {name}: {apps:?}",
                n.id()
            );
        }
    }
    eprintln!(
        "{role:?} full: {} writes acknowledged in {:?}, the slowest in {slowest:?}",
        acknowledged.len(),
        filled.elapsed()
    );

    // Space returns: the full node catches up without a restart.
    std::fs::remove_file(&filler).unwrap();
    let back = Instant::now();
    wait_until(
        "the formerly full node to apply every acknowledged write and agree with the others",
        CATCH_UP,
        || agrees(full, last_write, &healthy),
    );
    let mine = replica_apps(full).unwrap_or_default();
    for name in &acknowledged {
        assert!(mine.contains(name), "the full node lacks {name}: {mine:?}");
    }
    wait_until("the leader to see the node caught up", CATCH_UP, || {
        replication_to(healthy[0], full.id()).is_some_and(|(matched, last)| matched + 5 >= last)
    });
    assert_eq!(
        full.herd.daemon_pid(),
        Some(daemon_pid),
        "the node caught up by restarting"
    );
    assert!(alive(daemon_pid) && alive(steady_pid));
    eprintln!(
        "{role:?} caught up {:?} after space returned",
        back.elapsed()
    );

    // Its Raft data is on its disk: restarted while the others are down (so nobody can send it
    // anything), its own log holds every acknowledged write. Then it rejoins and agrees.
    full.herd.ok(&["down"]);
    for n in &healthy {
        n.herd.ok(&["down"]);
    }
    full.herd.ok(&["up"]);
    let mut alone = None;
    wait_until("the restarted node to answer alone", CATCH_UP, || {
        alone = full.status().and_then(|s| s["last_log_index"].as_u64());
        alone.is_some()
    });
    assert!(
        alone >= Some(last_write),
        "the restarted node's own log ends at {alone:?}, before the last acknowledged write at {last_write}"
    );
    for n in &healthy {
        n.herd.ok(&["up"]);
    }
    wait_formed(&all, 3, 0);
    wait_until(
        "the restarted node to agree with the others",
        CATCH_UP,
        || agrees(full, last_write, &healthy),
    );
}

#[test]
fn a_follower_with_a_full_disk_stays_up_and_catches_up_when_space_returns() {
    a_full_voter_stays_up_and_catches_up(Role::Follower);
}

#[test]
fn a_leader_with_a_full_disk_hands_over_and_catches_up_when_space_returns() {
    a_full_voter_stays_up_and_catches_up(Role::Leader);
}

/// `herd down` on a former leader whose disk is full (its Raft waits on a vote it cannot save)
/// stops the daemon, and once space returns `herd up` brings it back into the cluster.
#[test]
fn a_full_former_leader_goes_down_on_request_and_rejoins_when_space_returns() {
    let redis = Redis::start();
    let cluster = Cluster::start(&redis.url());
    let all = cluster.all();
    let leader = wait_formed(&all, 3, 0);
    let full_at = all.iter().position(|n| n.id() == leader).unwrap();
    let full = all[full_at];
    let healthy = others(&all, full);
    let daemon_pid = full.herd.daemon_pid().expect("the full node's daemon pid");
    let filler = cluster.disks[full_at].path().join("filler");
    assert!(fill(&filler) > 0);
    deploy_until_acknowledged(healthy[0], &padded_app(healthy[0], "while-full"));
    wait_handed_over(&healthy, full);
    let last_write = healthy
        .iter()
        .filter_map(|n| n.status()?["committed_index"].as_u64())
        .max()
        .expect("a healthy node's committed index");

    let asked = Instant::now();
    let down = full.herd.run(&["down"]);
    assert!(
        down.status.success(),
        "herd down on the full node failed after {:?}: {}",
        asked.elapsed(),
        String::from_utf8_lossy(&down.stderr)
    );
    wait_until("the full node's daemon to exit", HAND_OVER, || {
        !alive(daemon_pid)
    });
    eprintln!("the full node went down in {:?}", asked.elapsed());

    std::fs::remove_file(&filler).unwrap();
    full.herd.ok(&["up"]);
    wait_formed(&all, 3, 0);
    wait_until("the node to rejoin and agree", CATCH_UP, || {
        agrees(full, last_write, &healthy)
    });
}
