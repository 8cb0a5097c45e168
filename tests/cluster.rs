//! The cluster core end to end: real `herd` daemons (each its own HERD_HOME and its own
//! address on 127.0.0.x) and a real `redis-server` on a free port. Nodes find each other
//! through Redis, form one Raft group, elect one leader, keep acknowledged registry writes
//! through kills and restarts, refuse a peer with the wrong secret, and shrug off Redis
//! going away.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[test]
fn three_nodes_form_one_cluster_through_redis_and_later_nodes_join_as_learners() {
    let redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    assert!([a.id(), b.id(), c.id()].contains(&leader));
    let s = a.status().unwrap();
    assert_eq!(s["cluster"], "e2e");
    assert!(
        s["term"].as_u64() >= Some(1) && s["committed_index"].as_u64() >= Some(1),
        "{s}"
    );
    let leader_line = a.herd.ok(&["cluster", "leader"]);
    assert!(leader_line.contains(&leader.to_string()), "{leader_line}");

    let (d, e) = (
        Node::new(4, &url, 3, "s3cret"),
        Node::new(5, &url, 3, "s3cret"),
    );
    wait_formed(&[&a, &b, &c, &d, &e], 3, 2);
    let nodes = a.herd.ok(&["cluster", "nodes"]);
    assert!(
        nodes.contains("standby") && nodes.contains(&d.addr) && nodes.contains("HEALTH"),
        "{nodes}"
    );
}

#[test]
fn with_voters_5_every_one_of_five_nodes_votes() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes: Vec<Node> = (1..=5).map(|i| Node::new(i, &url, 5, "s3cret")).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_formed(&refs, 5, 0);
}

#[test]
fn killing_the_leader_elects_another_that_has_every_acknowledged_write() {
    let redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    let all = [&a, &b, &c];
    let leader = wait_formed(&all, 3, 0);
    // A write sent to a follower is applied through the leader.
    let follower = all.iter().find(|n| n.id() != leader).unwrap();
    follower.deploy("before-kill");
    assert!(
        by_id(&all, leader)
            .apps(false)
            .contains(&"before-kill".to_string()),
        "the leader does not have the follower's write"
    );

    by_id(&all, leader).herd.ok(&["kill"]);
    let survivors: Vec<&Node> = all.iter().copied().filter(|n| n.id() != leader).collect();
    let mut new_leader = 0;
    wait_until("the survivors to elect a new leader", FORM, || {
        let ls: Vec<Option<u64>> = survivors.iter().map(|n| n.leader()).collect();
        new_leader = ls[0].unwrap_or(0);
        ls.iter()
            .all(|l| l.is_some() && *l == ls[0] && *l != Some(leader))
    });
    let on_new = by_id(&survivors, new_leader);
    assert!(
        on_new.apps(false).contains(&"before-kill".to_string()),
        "the new leader lost an acknowledged write"
    );
    // And it takes new writes.
    on_new.deploy("after-kill");
    assert!(
        survivors
            .iter()
            .all(|n| n.apps(false).contains(&"after-kill".to_string()))
    );
}

#[test]
fn an_acknowledged_write_survives_a_restart_of_every_node() {
    let redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    wait_formed(&[&a, &b, &c], 3, 0);
    b.deploy("durable");
    for n in [&a, &b, &c] {
        n.herd.ok(&["down"]);
    }
    for n in [&a, &b, &c] {
        n.herd.ok(&["up"]);
    }
    wait_formed(&[&a, &b, &c], 3, 0);
    for n in [&a, &b, &c] {
        assert!(
            n.apps(false).contains(&"durable".to_string()),
            "a node lost the write"
        );
    }
}

#[test]
fn a_node_with_a_wiped_raft_dir_catches_up() {
    let redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    let victim = [&a, &b, &c].into_iter().find(|n| n.id() != leader).unwrap();
    a.deploy("one");
    c.deploy("two");
    victim.herd.ok(&["down"]);
    std::fs::remove_dir_all(victim.herd.path("raft")).unwrap();
    victim.herd.ok(&["up"]);
    wait_until("the wiped node to catch up", FORM, || {
        let apps = victim.apps(true);
        apps.contains(&"one".to_string()) && apps.contains(&"two".to_string())
    });
}

#[test]
fn a_wiped_node_joins_the_live_cluster_even_when_redis_restarted_empty() {
    let mut redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    let victim = [&a, &b, &c].into_iter().find(|n| n.id() != leader).unwrap();
    a.deploy("one");
    // Redis loses everything (no persistence) and the victim loses its Raft state at once: the
    // board is empty, yet a cluster lives, and the victim must join it, not found another.
    let port = redis.port;
    redis.stop();
    victim.herd.ok(&["down"]);
    std::fs::remove_dir_all(victim.herd.path("raft")).unwrap();
    let _redis = Redis::on(port);
    victim.herd.ok(&["up"]);
    wait_until(
        "the wiped node to hold the live cluster's registry",
        FORM,
        || victim.apps(true).contains(&"one".to_string()),
    );
    let s = victim.status().unwrap();
    assert_eq!(s["leader_id"].as_u64(), Some(leader), "{s}");
}

#[test]
fn stopping_redis_disturbs_nothing_and_a_restarted_node_rejoins() {
    let mut redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    let term = a.status().unwrap()["term"].as_u64();
    redis.stop();
    // Writes keep working and the leadership does not move while Redis is gone.
    a.deploy("no-redis");
    std::thread::sleep(Duration::from_secs(3));
    for n in [&a, &b, &c] {
        let s = n.status().unwrap();
        assert_eq!(
            (s["leader_id"].as_u64(), s["term"].as_u64()),
            (Some(leader), term),
            "{s}"
        );
    }
    let follower = [&a, &b, &c].into_iter().find(|n| n.id() != leader).unwrap();
    follower.herd.ok(&["down"]);
    follower.herd.ok(&["up"]);
    wait_formed(&[&a, &b, &c], 3, 0);
    assert!(follower.apps(false).contains(&"no-redis".to_string()));
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused() {
    let redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    let intruder = Node::new(4, &url, 3, "guess");
    let intruder_id = intruder.id();
    // It never gets in, and the refusal is logged.
    wait_until("a refusal in a member's log", FORM, || {
        [&a, &b, &c].iter().any(|n| {
            std::fs::read_to_string(n.herd.path("daemon.log"))
                .is_ok_and(|l| l.contains("refused cluster RPC"))
        })
    });
    let s = by_id(&[&a, &b, &c], leader).status().unwrap();
    let members: Vec<u64> = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(members.len(), 3, "{s}");
    assert!(!members.contains(&intruder_id));
    assert!(intruder.apps(true).is_empty());
}

#[test]
fn standalone_daemons_have_no_cluster() {
    let h = Herd::up();
    let err = h.fails(&["cluster", "status"]);
    assert!(err.contains("runs standalone"), "{err}");
}

/// Watches, from a thread, how many distinct instances of a cluster app run across the nodes
/// (from each node's `herd ps`), for as long as an operation lasts; keeps the fewest seen.
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Watch {
    fn start(nodes: &[&Node], app: &str) -> Self {
        let homes: Vec<std::path::PathBuf> = nodes
            .iter()
            .map(|n| n.herd.home.path().to_path_buf())
            .collect();
        let prefix = format!("{app}@");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut worst = usize::MAX;
                // At least one look, however short the operation.
                loop {
                    let mut idx: Vec<u64> = Vec::new();
                    for h in &homes {
                        let out = Command::new(herd_bin())
                            .args(["ps", "--json"])
                            .env("HERD_HOME", h)
                            .output()
                            .unwrap();
                        let rows: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                        idx.extend(
                            rows.as_array()
                                .into_iter()
                                .flatten()
                                .filter(|r| r["status"] == "running")
                                .filter_map(|r| {
                                    r["name"]
                                        .as_str()?
                                        .strip_prefix(&prefix)?
                                        .parse::<u64>()
                                        .ok()
                                }),
                        );
                    }
                    idx.sort();
                    idx.dedup();
                    worst = worst.min(idx.len());
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
                worst
            })
        };
        Self { stop, thread }
    }

    /// Stops watching; the fewest instances seen running at once.
    fn worst(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn instances_of_a_dead_node_run_elsewhere_and_nothing_runs_twice_when_it_returns() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_formed(&all, 3, 0);
    let file = all[0].herd.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 3\n",
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("3 instances of web running across the nodes", FORM, || {
        let mut all_idx: Vec<u64> = placement_of(&all, "web").concat();
        all_idx.sort();
        all_idx == [0, 1, 2]
    });
    let apps = all[1].herd.json(&["cluster", "apps", "--json"]);
    assert_eq!(apps[0]["desired"], 3, "{apps}");
    // `cluster nodes` (asked of a follower too) lists every node with the master's view.
    let follower = *all.iter().find(|n| n.id() != leader).unwrap();
    wait_until("every node listed online by cluster nodes", FORM, || {
        let v = follower.herd.json(&["cluster", "nodes", "--json"]);
        let rows = v.as_array().unwrap();
        rows.len() == 3
            && all
                .iter()
                .all(|n| health_of(&v, n.id()).as_deref() == Some("online"))
            && rows.iter().all(|r| {
                r["role"] == "voter"
                    && r["reachable"] == true
                    && r["version"].is_string()
                    && r["instances"].is_u64()
                    && r["last_heartbeat_ms"].is_u64()
                    && r.get("matched_index").is_some()
            })
    });
    wait_until("reports to sum to 3", SECS_10, || {
        follower
            .herd
            .json(&["cluster", "nodes", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["instances"].as_u64())
            .sum::<u64>()
            == 3
    });
    let view = follower.herd.json(&["cluster", "nodes", "--json"]);
    let instances: u64 = view
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["instances"].as_u64())
        .sum();
    assert_eq!(instances, 3, "{view}");
    let status = follower.status().unwrap();
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    let text = follower.herd.ok(&["cluster", "status"]);
    assert!(text.contains("HEALTH") && text.contains("online"), "{text}");

    // A follower that runs something dies with its apps, as a host would.
    let victim = *all
        .iter()
        .find(|n| n.id() != leader && !running_here(n, "web").is_empty())
        .expect("a follower runs web");
    let lost = running_here(victim, "web");
    kill_with_apps(victim);
    let survivors: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| n.id() != victim.id())
        .collect();
    wait_until(
        "the dead node's instances to run on the survivors",
        FORM,
        || {
            let mut idx: Vec<u64> = placement_of(&survivors, "web").concat();
            idx.sort();
            idx == [0, 1, 2]
        },
    );
    let nodes_view = by_id(&all, leader)
        .herd
        .json(&["cluster", "uptime", "--json"]);
    let victim_status = nodes_view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_u64() == Some(victim.id()))
        .map(|n| n["status"].clone());
    assert_eq!(victim_status, Some(Value::from("offline")), "{nodes_view}");
    assert!(!lost.is_empty());
    wait_until(
        "cluster nodes to show the dead node offline",
        SECS_10,
        || {
            let v = by_id(&all, leader)
                .herd
                .json(&["cluster", "nodes", "--json"]);
            health_of(&v, victim.id()).as_deref() == Some("offline")
                && survivors
                    .iter()
                    .all(|n| health_of(&v, n.id()).as_deref() == Some("online"))
        },
    );
    // The master's daemon said so in its events (where hooks take `node_offline` from).
    let offline_events = by_id(&all, leader)
        .herd
        .ok(&["events", "--json", "-n", "1000"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "node_offline" && e["node"].as_u64() == Some(victim.id()))
        .count();
    assert_eq!(offline_events, 1, "one node_offline event for the victim");

    // It comes back: online again, and once settled no instance runs twice.
    victim.herd.ok(&["up"]);
    wait_until("the node to be online again", FORM, || {
        let v = by_id(&all, leader)
            .herd
            .json(&["cluster", "uptime", "--json"]);
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"].as_u64() == Some(victim.id()) && n["status"] == "online")
    });
    wait_until("exactly one copy of each instance", FORM, || {
        let mut idx: Vec<u64> = placement_of(&all, "web").concat();
        idx.sort();
        idx == [0, 1, 2]
    });
}

#[test]
fn a_new_master_takes_over_without_marking_live_nodes_offline() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_formed(&all, 3, 0);
    wait_until("every node recorded online", FORM, || {
        let v = all[0].herd.json(&["cluster", "uptime", "--json"]);
        all.iter()
            .all(|n| node_status(&v, n.id()).as_deref() == Some("online"))
    });
    by_id(&all, leader).herd.ok(&["kill"]);
    let survivors: Vec<&Node> = all.iter().copied().filter(|n| n.id() != leader).collect();
    wait_until("a new leader", FORM, || {
        survivors
            .iter()
            .all(|n| n.leader().is_some_and(|l| l != leader))
    });
    // Well past the offline timeout: the dead node goes offline, the live ones never do.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut dead_offline = false;
    while std::time::Instant::now() < deadline {
        let v = survivors[0]
            .herd
            .json(&["cluster", "uptime", "--json", "--days", "1"]);
        for n in &survivors {
            assert_eq!(
                node_status(&v, n.id()).as_deref(),
                Some("online"),
                "a live node was marked offline: {v}"
            );
        }
        dead_offline |= node_status(&v, leader).as_deref() == Some("offline");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(dead_offline, "the killed leader was never marked offline");
}

#[test]
fn drain_moves_every_instance_and_stops_none_early() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let file = all[0].herd.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 3\n",
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("3 instances running", FORM, || {
        let mut idx: Vec<u64> = placement_of(&all, "web").concat();
        idx.sort();
        idx == [0, 1, 2]
    });
    let target = *all
        .iter()
        .find(|n| !running_here(n, "web").is_empty())
        .unwrap();
    // Watch the whole time: the set of running instances never loses one.
    let watch = Watch::start(&all, "web");
    let out = all[0].herd.ok(&[
        "cluster",
        "drain",
        &target.id().to_string(),
        "--timeout",
        "60",
    ]);
    let worst = watch.worst();
    assert!(out.contains("drained"), "{out}");
    assert!(
        running_here(target, "web").is_empty(),
        "the drained node still runs web"
    );
    assert_eq!(
        worst, 3,
        "an instance was stopped before its replacement ran"
    );
    let mut idx: Vec<u64> = placement_of(&all, "web").concat();
    idx.sort();
    assert_eq!(idx, [0, 1, 2]);
    all[0]
        .herd
        .ok(&["cluster", "undrain", &target.id().to_string()]);
}

#[test]
fn step_down_hands_over_and_leave_removes_the_node() {
    let redis = Redis::start();
    let url = redis.url();
    let [a, b, c] = three(&url);
    let all = [&a, &b, &c];
    let leader = wait_formed(&all, 3, 0);
    let follower = all.iter().find(|n| n.id() != leader).unwrap();
    follower.herd.ok(&["cluster", "step-down"]);
    wait_until(
        "another leader within seconds",
        Duration::from_secs(5),
        || all.iter().all(|n| n.leader().is_some_and(|l| l != leader)),
    );
    let leaving = all.iter().find(|n| n.leader() != Some(n.id())).unwrap();
    leaving.herd.ok(&["cluster", "leave"]);
    let stay: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| n.id() != leaving.id())
        .collect();
    wait_until("the membership to drop the node that left", FORM, || {
        stay.iter().all(|n| {
            n.status().is_some_and(|s| {
                let ids: Vec<u64> = s["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["id"].as_u64())
                    .collect();
                ids.len() == 2 && !ids.contains(&leaving.id())
            })
        })
    });
}

#[test]
fn placement_honours_constraints_spread_and_max_per_node() {
    let redis = Redis::start();
    let url = redis.url();
    // h1: web in zone a; h2: web in zone b; h3: db in zone b.
    let labels = [
        "role = \"web\", zone = \"a\"",
        "role = \"web\", zone = \"b\"",
        "role = \"db\", zone = \"b\"",
    ];
    let nodes: Vec<Node> = (1..=3u8)
        .map(|i| Node::labeled(i, &url, 3, "s3cret", labels[i as usize - 1], FAST_MASTER))
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    // Placement spreads over the nodes the master knows; it does not rebalance later.
    wait_until("every node recorded online with its labels", FORM, || {
        let v = all[0].herd.json(&["cluster", "uptime", "--json"]);
        all.iter()
            .all(|n| node_status(&v, n.id()).as_deref() == Some("online"))
    });
    let file = all[0].herd.app_file(
        "placed.toml",
        r#"
[[app]]
name = "front"
command = "sleep"
args = ["1000"]
instances = 4
[app.placement]
constraints = { role = "web" }
spread = "zone"

[[app]]
name = "store"
command = "sleep"
args = ["1000"]
instances = 2
[app.placement]
constraints = { role = "db" }

[[app]]
name = "edge"
command = "sleep"
args = ["1000"]
instances = 4
[app.placement]
max_per_node = 1
"#,
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    // Constraints: front only on role=web, store only on role=db; spread: front evenly over
    // zones a and b (a placement made before every node answered is evened out by moves).
    wait_until(
        "front spread over the zones, store and edge running",
        FORM,
        || {
            counts_of(&all, "front") == [2, 2, 0]
                && counts_of(&all, "store").iter().sum::<usize>() == 2
                && counts_of(&all, "edge").iter().sum::<usize>() == 3
        },
    );
    assert_eq!(counts_of(&all, "store"), [0, 0, 2]);
    // max_per_node = 1 on 3 nodes: one each, and the fourth waits for a node rather than
    // doubling up.
    assert_eq!(counts_of(&all, "edge"), [1, 1, 1]);
    let apps = all[1].herd.json(&["cluster", "apps", "--json"]);
    let edge = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "edge")
        .unwrap();
    assert_eq!(edge["desired"], 4, "{edge}");
    assert_eq!(
        edge["assignments"].as_object().map(|m| m.len()),
        Some(3),
        "{edge}"
    );

    // Zone b's only web node dies: its front instances go to zone a, the one web node left.
    kill_with_apps(all[1]);
    let alive = [all[0], all[2]];
    wait_until("front all on h1 while h2 is down", FORM, || {
        counts_of(&alive, "front") == [4, 0]
    });
    // It returns: the spread is evened out again, one move at a time.
    all[1].herd.ok(&["up"]);
    wait_until("front back to two per zone", FORM, || {
        counts_of(&all, "front") == [2, 2, 0]
    });
}

/// Today's up/total samples of node `id` from `herd cluster uptime --json --days 1`.
fn today_samples(view: &Value, id: u64) -> Option<(u64, u64)> {
    let n = view["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"].as_u64() == Some(id))?;
    let day = &n["days"][0];
    Some((day["up_samples"].as_u64()?, day["total_samples"].as_u64()?))
}

#[test]
fn uptime_buckets_show_a_node_outage() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_formed(&all, 3, 0);
    let master = by_id(&all, leader);
    let victim = *all.iter().find(|n| n.id() != leader).unwrap();
    let uptime = || {
        master
            .herd
            .json(&["cluster", "uptime", "--json", "--days", "1"])
    };
    wait_until("a few up samples for every node", FORM, || {
        let v = uptime();
        all.iter()
            .all(|n| today_samples(&v, n.id()).is_some_and(|(up, total)| up >= 3 && up == total))
    });
    victim.herd.ok(&["kill"]);
    wait_until("the victim offline with down samples", FORM, || {
        let v = uptime();
        node_status(&v, victim.id()).as_deref() == Some("offline")
            && today_samples(&v, victim.id()).is_some_and(|(up, total)| total >= up + 3)
    });
    let v = uptime();
    // The survivors' buckets stay whole; the victim's shows the outage.
    for n in all.iter().filter(|n| n.id() != victim.id()) {
        let (up, total) = today_samples(&v, n.id()).unwrap();
        assert_eq!(up, total, "a live node has down samples: {v}");
    }
    let pct = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_u64() == Some(victim.id()))
        .and_then(|n| n["days"][0]["uptime_percent"].as_f64())
        .unwrap();
    assert!(pct < 100.0, "{v}");
    // The status page draws the victim's day below green, the others green.
    let text = master.herd.ok(&["cluster", "uptime", "--days", "1"]);
    let line = |id: u64| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
            .unwrap_or_default()
            .to_string()
    };
    assert!(!line(victim.id()).contains('█'), "{text}");
    assert!(line(leader).contains('█'), "{text}");
}

#[test]
fn an_on_disconnect_stop_singleton_stops_when_cut_off_and_runs_once_after() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let file = all[0].herd.app_file(
        "solo.toml",
        "[[app]]\nname = \"solo\"\ncommand = \"sleep\"\nargs = [\"1000\"]\non_disconnect = \"stop\"\n\n[[app]]\nname = \"keep\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 3\n[app.placement]\nmax_per_node = 1\n",
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("solo once and keep on every node", FORM, || {
        counts_of(&all, "solo").iter().sum::<usize>() == 1 && counts_of(&all, "keep") == [1, 1, 1]
    });
    // Cut the singleton's node off: both other daemons die, so no master can be elected and
    // no heartbeat reaches it.
    let holder = *all
        .iter()
        .find(|n| !running_here(n, "solo").is_empty())
        .unwrap();
    let others: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| n.id() != holder.id())
        .collect();
    for n in &others {
        n.herd.ok(&["kill"]);
    }
    wait_until("the singleton stopped on its cut-off node", FORM, || {
        running_here(holder, "solo").is_empty()
    });
    // Apps without on_disconnect = "stop" keep running there.
    assert_eq!(running_here(holder, "keep").len(), 1);
    // The others come back: a master again, and the singleton runs exactly once.
    for n in &others {
        n.herd.ok(&["up"]);
    }
    wait_formed(&all, 3, 0);
    wait_until("solo running again", FORM, || {
        counts_of(&all, "solo").iter().sum::<usize>() == 1
    });
    // Never twice while it settles.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert!(counts_of(&all, "solo").iter().sum::<usize>() <= 1);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `app@index` → pid of each running cluster instance on these nodes.
fn pids_of(nodes: &[&Node], app: &str) -> std::collections::BTreeMap<String, u64> {
    let prefix = format!("{app}@");
    nodes
        .iter()
        .flat_map(|n| n.herd.ps())
        .filter(|r| r["status"] == "running")
        .filter(|r| r["name"].as_str().is_some_and(|s| s.starts_with(&prefix)))
        .filter_map(|r| Some((r["name"].as_str()?.to_string(), r["pid"].as_u64()?)))
        .collect()
}

#[test]
fn a_rolling_restart_replaces_every_instance_one_node_at_a_time() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let file = all[0].herd.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 3\n[app.placement]\nmax_per_node = 1\n",
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("one web instance on each node", FORM, || {
        counts_of(&all, "web") == [1, 1, 1]
    });
    let before = pids_of(&all, "web");
    // One node at a time: never fewer than two of the three instances running.
    let watch = Watch::start(&all, "web");
    let out = all[1]
        .herd
        .ok(&["cluster", "restart", "web", "--wait", "--timeout", "60"]);
    let worst = watch.worst();
    assert!(out.contains("rolling restart of web done"), "{out}");
    let after = pids_of(&all, "web");
    assert_eq!(after.len(), 3, "{after:?}");
    for (name, pid) in &before {
        assert_ne!(after.get(name), Some(pid), "{name} was not restarted");
    }
    assert!(worst >= 2, "{worst} of 3 instances running during the roll");
}

#[test]
fn a_singleton_dies_with_its_daemon_and_runs_once_elsewhere() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let file = all[0].herd.app_file(
        "solo.toml",
        "[[app]]\nname = \"solo\"\ncommand = \"sleep\"\nargs = [\"1000\"]\non_disconnect = \"stop\"\n",
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("solo running once", FORM, || {
        counts_of(&all, "solo").iter().sum::<usize>() == 1
    });
    let holder = *all
        .iter()
        .find(|n| !running_here(n, "solo").is_empty())
        .unwrap();
    let pid = pids_of(&[holder], "solo")["solo@0"];
    let holder_id = holder.id();
    // Apps outlive a SIGKILLed daemon, but not a singleton: nothing could stop it once the
    // master places it elsewhere, so the lease keeper kills it with the daemon.
    holder.herd.ok(&["kill"]);
    wait_until("the orphaned singleton to be killed", SECS_10, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err()
    });
    let others: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| n.id() != holder_id)
        .collect();
    wait_until("solo running on another node", FORM, || {
        counts_of(&others, "solo").iter().sum::<usize>() == 1
    });
    // The old node comes back and does not start it again.
    holder.herd.ok(&["up"]);
    wait_until("the returning node back online", FORM, || {
        let v = others[0]
            .herd
            .json(&["cluster", "uptime", "--json", "--days", "1"]);
        node_status(&v, holder_id).as_deref() == Some("online")
    });
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(counts_of(&all, "solo").iter().sum::<usize>(), 1);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_tcp_api_shares_the_cluster_port_and_drives_the_cluster_remotely() {
    let redis = Redis::start();
    let url = redis.url();
    let token = "cluster-api-token-0123456789";
    let key = tempfile::tempdir().unwrap();
    let token_file = key.path().join("api.token");
    std::fs::write(&token_file, token).unwrap();
    // [api] listen = [cluster] listen: one port carries Raft, heartbeats and the user API.
    let api = format!(
        "[api]\nlisten = \"{{addr}}\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::with(i, &url, 3, "s3cret", &api))
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_formed(&all, 3, 0);

    let cli = Herd::new();
    std::fs::create_dir_all(cli.home.path()).unwrap();
    let tf = token_file.display().to_string();
    let remote = |node: &Node, args: &[&str]| {
        let mut full = vec!["--host", node.addr.as_str(), "--token-file", tf.as_str()];
        full.extend_from_slice(args);
        cli.ok(&full)
    };
    let status: Value =
        serde_json::from_str(&remote(all[1], &["cluster", "status", "--json"])).unwrap();
    assert_eq!(status["leader_id"].as_u64(), Some(leader), "{status}");
    let file = cli.app_file(
        "far.toml",
        "[[app]]\nname = \"far\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 3\n[app.placement]\nmax_per_node = 1\n",
    );
    remote(all[2], &["cluster", "deploy", &file]);
    wait_until("far on every node", FORM, || {
        counts_of(&all, "far") == [1, 1, 1]
    });
    // A wrong token is refused on the shared port (the cluster secret is not an API token).
    let err = cli.fails(&[
        "--host",
        &all[0].addr,
        "--token-file",
        &cli.app_file("bad.token", "s3cret"),
        "cluster",
        "status",
    ]);
    assert!(err.contains("token is missing or wrong"), "{err}");

    // Tokens live in the replicated registry: one made on node 1 opens node 3, with its role;
    // revoked on node 1, node 3 refuses it within one heartbeat interval (2 s).
    let made = all[0].herd.json(&[
        "token", "create", "--role", "viewer", "--name", "dev", "--json",
    ]);
    let accessor = made["accessor"].as_str().unwrap().to_string();
    let viewer_file = cli.app_file("viewer.token", made["secret"].as_str().unwrap());
    let as_viewer = |node: &Node, args: &[&str]| {
        let mut full = vec![
            "--host",
            node.addr.as_str(),
            "--token-file",
            viewer_file.as_str(),
        ];
        full.extend_from_slice(args);
        cli.run(&full)
    };
    wait_until("node 1's new token opens node 3", SECS_10, || {
        as_viewer(all[2], &["cluster", "status", "--json"])
            .status
            .success()
    });
    let denied = as_viewer(all[2], &["cluster", "undeploy", "far"]);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && err.contains("permission denied: role viewer may not"),
        "{err}"
    );
    assert_eq!(
        counts_of(&all, "far"),
        [1, 1, 1],
        "a refused call changed nothing"
    );
    all[0].herd.ok(&["token", "revoke", &accessor]);
    wait_until(
        "node 3 refuses the revoked token",
        Duration::from_secs(2),
        || {
            let o = as_viewer(all[2], &["cluster", "status"]);
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("token revoked")
        },
    );
    let listed = all[1].herd.json(&["token", "list", "--json"]);
    let row = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["accessor"] == accessor.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["state"], "revoked", "{listed}");
    assert!(
        !listed
            .to_string()
            .contains(made["secret"].as_str().unwrap())
    );
}

/// The values the app's instances wrote, one file per process.
fn seen_values(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_secret_set_on_one_node_reaches_its_app_on_every_node_and_only_as_ciphertext() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let value = "cluster-pw-31d8e0-only-in-apps";
    all[0].herd.put_secret("db/pass", value);
    // Every node is given the same key file; the sealed values travel through Raft.
    let key = std::fs::read(all[0].herd.path("secrets.key")).unwrap();
    for n in &all[1..] {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(n.herd.path("secrets.key"))
            .unwrap();
        std::io::Write::write_all(&mut f, &key).unwrap();
    }
    // A file naming a secret nobody set is refused, naming it.
    let missing = all[1].herd.app_file(
        "missing.toml",
        "[[app]]\nname = \"m\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nenv = { P = \"secret:nope\" }\n",
    );
    let err = all[1].herd.fails(&["cluster", "deploy", &missing]);
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );

    let out = tempfile::tempdir().unwrap();
    let file = all[1].herd.app_file(
        "db.toml",
        &format!(
            "[[app]]\nname = \"db\"\ncommand = \"sh\"\nargs = [\"-c\", \"printf %s \\\"$PASS\\\" > {}/seen.$$; exec sleep 1000\"]\nenv = {{ PASS = \"secret:db/pass\" }}\ninstances = 3\n[app.placement]\nmax_per_node = 1\n",
            out.path().display()
        ),
    );
    all[1].herd.ok(&["cluster", "deploy", &file]);
    wait_until("db on every node with the value", FORM, || {
        counts_of(&all, "db") == [1, 1, 1] && seen_values(out.path()) == vec![value; 3]
    });
    // A new value, set on another node, restarts the instances on every node.
    all[2].herd.put_secret("db/pass", "second-value");
    wait_until("every instance restarted with the new value", FORM, || {
        let seen = seen_values(out.path());
        seen.iter().filter(|v| *v == "second-value").count() == 3
    });
    // Raft log, snapshots, state, events, logs of every node: ciphertext only.
    for n in &all {
        let mut stack = vec![n.herd.home.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                // A live home: a temp file may be renamed away between listing and looking.
                let Ok(meta) = std::fs::symlink_metadata(&p) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(p);
                } else if meta.is_file() {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    for needle in [value, "second-value"] {
                        assert!(
                            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                            "{} holds a secret value in clear",
                            p.display()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn with_mutual_tls_the_nodes_form_and_a_node_without_the_cluster_ca_cannot_join() {
    let redis = Redis::start();
    let url = redis.url();
    let certs = tempfile::tempdir().unwrap();
    let sans = "IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:127.0.0.4,IP:127.0.0.5";
    let (ca, cert, key) = certificates(certs.path(), sans);
    let tls = |ca: &str, cert: &str, key: &str| {
        format!("tls_ca = \"{ca}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n{FAST_MASTER}")
    };
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::with(i, &url, 3, "s3cret", &tls(&ca, &cert, &key)))
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait_formed(&all, 3, 0);
    // Raft, forwarding and the master's heartbeats all run over TLS: a deploy lands and runs.
    all[1].deploy("sealed");
    wait_until("sealed running on one node", FORM, || {
        counts_of(&all, "sealed").iter().sum::<usize>() == 1
    });

    // The right secret but a certificate from another CA, and the right secret without TLS.
    let other = tempfile::tempdir().unwrap();
    let (oca, ocert, okey) = certificates(other.path(), sans);
    let outsider = Node::with(4, &url, 3, "s3cret", &tls(&oca, &ocert, &okey));
    let plain = Node::with(5, &url, 3, "s3cret", FAST_MASTER);
    for n in [&outsider, &plain] {
        wait_until("the outsider's probes of the members to fail", FORM, || {
            std::fs::read_to_string(n.herd.path("daemon.log"))
                .unwrap_or_default()
                .contains("cannot probe peer")
        });
    }
    let status = by_id(&all, leader).status().expect("leader status");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    for n in [&outsider, &plain] {
        assert_ne!(
            n.leader(),
            Some(leader),
            "a node outside the CA found the leader"
        );
    }
}

#[test]
fn a_renewed_node_certificate_is_served_after_reload_and_a_new_ca_or_a_bad_pair_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path(), "IP:127.0.0.1");
    let tls = format!("tls_ca = \"{ca}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n");
    let node = Node::with(1, "static:{addr}", 1, "s3cret", &tls);
    node.herd
        .ok(&["start", "--name", "local", "--", "sleep", "1000"]);
    let app = pid_of(&node.herd.instance("local", 0));
    // The cluster port is mutual TLS: s_client presents a certificate from the cluster CA.
    let (client_cert, client_key) =
        certificate_signed_by(certs.path(), "client", "herd client", "IP:127.0.0.1");
    let served = || served_certificate(&node.addr, Some((&client_cert, &client_key)));
    assert_eq!(served(), Some(pem_file_body(&cert)));

    let (renewed_cert, renewed_key) =
        certificate_signed_by(certs.path(), "renewed", "herd renewed", "IP:127.0.0.1");
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    let renewed = pem_file_body(&renewed_cert);
    let out = node.herd.ok(&["reload-config"]);
    assert!(out.contains("cluster.tls"), "{out}");
    wait_until(
        "new cluster connections to be served the renewed certificate",
        Duration::from_secs(10),
        || served().as_ref() == Some(&renewed),
    );

    // A new CA is restart-only, and a key of another certificate is refused naming the file.
    let ca_text = std::fs::read(&ca).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = certificates(other.path(), "IP:127.0.0.1");
    std::fs::copy(&other_ca, &ca).unwrap();
    let err = node.herd.fails(&["reload-config"]);
    assert!(
        err.contains("tls_ca changed") && err.contains("restart"),
        "{err}"
    );
    std::fs::write(&ca, ca_text).unwrap();
    std::fs::copy(&client_key, &key).unwrap();
    let err = node.herd.fails(&["reload-config"]);
    assert!(err.contains(&key) && err.contains("tls_key"), "{err}");
    assert_eq!(served().as_ref(), Some(&renewed));
    assert_eq!(
        pid_of(&node.herd.instance("local", 0)),
        app,
        "the app was touched"
    );
}
