//! Jobs in a cluster, end to end: three real daemons and a real `redis-server`; the master
//! dispatches each tick of a deployed job to one node, through Raft, so killing the leader
//! around the ticks neither drops a tick nor runs one twice.

mod common;

use common::cluster::*;
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Milliseconds past the last multiple of `period_ms` on the wall clock.
fn phase(period_ms: u128) -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % period_ms
}

/// `home:tick` lines, by tick.
fn ticks(path: &std::path::Path) -> BTreeMap<u64, Vec<String>> {
    let mut by_tick: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in read_lines(path) {
        let (home, tick) = line.rsplit_once(':').expect("home:tick");
        by_tick
            .entry(tick.trim().parse().expect("a tick"))
            .or_default()
            .push(home.to_string());
    }
    by_tick
}

#[test]
fn each_tick_of_a_cluster_job_runs_once_on_one_node_while_the_leader_is_killed() {
    let redis = Redis::start();
    let nodes = fast_three(&redis.url());
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let out = tempfile::NamedTempFile::new().unwrap();
    let path = out.path().to_path_buf();
    let file = nodes[0].herd.app_file(
        "tick.toml",
        &format!(
            "[[job]]\nname = \"tick\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo $HERD_HOME:$HERD_TICK >> {}\"]\nschedule = \"*/2 * * * * *\"\n",
            path.display()
        ),
    );
    nodes[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("three ticks", Duration::from_secs(30), || {
        ticks(&path).len() >= 3
    });
    // Kill the leader three times, each a few hundred ms before a tick, and bring it back.
    for round in 0..3 {
        let leader = wait_formed(&all, 3, 0);
        let victim = by_id(&all, leader);
        wait_until("300 ms before a tick", Duration::from_secs(3), || {
            (1_650..1_750).contains(&phase(2_000))
        });
        victim.herd.ok(&["kill"]);
        let survivors: Vec<&Node> = all.iter().copied().filter(|n| n.id() != leader).collect();
        wait_until(&format!("a new leader (round {round})"), FORM, || {
            let ls: Vec<Option<u64>> = survivors.iter().map(|n| n.leader()).collect();
            ls.iter()
                .all(|l| l.is_some() && *l == ls[0] && *l != Some(leader))
        });
        victim.herd.ok(&["up"]);
    }
    wait_formed(&all, 3, 0);
    // Three more ticks after the last kill, then the job goes and its last run ends.
    let seen = ticks(&path).len();
    wait_until("three more ticks", Duration::from_secs(30), || {
        ticks(&path).len() >= seen + 3
    });
    nodes[0].herd.ok(&["cluster", "undeploy", "tick"]);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let by_tick = ticks(&path);
    eprintln!("ticks run: {by_tick:?}");
    let doubled: Vec<(&u64, &Vec<String>)> = by_tick.iter().filter(|(_, h)| h.len() > 1).collect();
    assert!(doubled.is_empty(), "ticks run more than once: {doubled:?}");
    let first = *by_tick.keys().next().unwrap();
    let last = *by_tick.keys().last().unwrap();
    let missing: Vec<u64> = (first..=last)
        .step_by(2)
        .filter(|t| !by_tick.contains_key(t))
        .collect();
    assert!(
        missing.is_empty(),
        "ticks that never ran: {missing:?} (ran: {:?})",
        by_tick.keys()
    );
    let homes: std::collections::BTreeSet<&String> = by_tick.values().flatten().collect();
    assert!(
        homes.len() >= 2,
        "the ticks spread over the nodes: {homes:?}"
    );
}

#[test]
fn herd_run_of_a_deployed_job_runs_it_once_on_a_node_of_its_placement() {
    let redis = Redis::start();
    let nodes = fast_three(&redis.url());
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let out = tempfile::NamedTempFile::new().unwrap();
    let path = out.path().to_path_buf();
    let file = nodes[1].herd.app_file(
        "once.toml",
        &format!(
            "[[job]]\nname = \"once\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo $HERD_HOME:$1 >> {}\", \"sh\"]\n[job.placement]\nconstraints = {{ host = \"h3\" }}\n",
            path.display()
        ),
    );
    nodes[1].herd.ok(&["cluster", "deploy", &file]);
    let v = nodes[0].herd.json(&["run", "once", "--json", "--", "7"]);
    assert_eq!(v["cluster"], true, "{v}");
    wait_until("the run", Duration::from_secs(20), || {
        !read_lines(&path).is_empty()
    });
    let runs = nodes[0].herd.json(&["jobs", "history", "once", "--json"]);
    wait_until("its end in the registry", Duration::from_secs(20), || {
        nodes[0].herd.json(&["jobs", "history", "once", "--json"])["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["end"]["reason"] == "succeeded"))
    });
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1, "{lines:?} {runs}");
    let home3 = nodes[2].herd.home.path().display().to_string();
    assert_eq!(lines[0], format!("{home3}:7"), "placed by its constraint");
}
