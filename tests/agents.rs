//! Agents end to end: a cluster where Raft holds only the voters and the standbys and every
//! other node is an agent — the same `herd` daemon, registered in the registry, holding no
//! Raft log and fetching only its own slice. Real daemons on 127.0.0.x, a real redis-server.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;

/// Short master intervals, a voter replaced after 3 s of silence.
const FAST: &str = "heartbeat_interval_ms = 200\nhealth_sweep_interval_ms = 500\noffline_timeout_ms = 2000\nreplace_voter_after_ms = 3000\nstandbys = 2\n";

fn rows(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn role_of(view: &Value, id: u64) -> Option<String> {
    rows(view)
        .into_iter()
        .find(|n| n["id"].as_u64() == Some(id))
        .and_then(|n| n["role"].as_str().map(String::from))
}

/// `herd cluster nodes --json` asked of `n`, or Null when it cannot answer.
fn nodes_view(n: &Node) -> Value {
    let out = n.herd.run(&["cluster", "nodes", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn count_role(view: &Value, role: &str) -> usize {
    rows(view).iter().filter(|n| n["role"] == role).count()
}

/// Distinct running instances of `app` across `nodes`, sorted.
fn running_across(nodes: &[&Node], app: &str) -> Vec<u64> {
    let mut idx: Vec<u64> = nodes.iter().flat_map(|n| running_here(n, app)).collect();
    idx.sort();
    idx
}

#[test]
fn voters_standbys_and_agents_form_one_cluster_and_agents_keep_their_promises() {
    let redis = Redis::start();
    let url = redis.url();
    // Seven nodes may hold a seat (3 voters + 2 standbys are wanted: two of them end up as
    // agents), three are pinned to the agent role by their config.
    let mut nodes: Vec<Node> = (1..=7)
        .map(|i| Node::labeled(i, &url, 3, "s3cret", "kind = \"auto\"", FAST))
        .collect();
    nodes.extend((8..=10).map(|i| {
        Node::labeled(
            i,
            &url,
            3,
            "s3cret",
            "kind = \"pinned\"",
            &format!("{FAST}role = \"agent\"\n"),
        )
    }));
    let all: Vec<&Node> = nodes.iter().collect();
    let pinned: Vec<&Node> = all[7..].to_vec();

    // All ten are listed, with their role and the master's view of their health.
    wait_until(
        "3 voters, 2 standbys and 5 agents, all online",
        FORM,
        || {
            let v = nodes_view(all[0]);
            rows(&v).len() == 10
                && count_role(&v, "voter") == 3
                && count_role(&v, "standby") == 2
                && count_role(&v, "agent") == 5
                && rows(&v).iter().all(|n| n["health"] == "online")
        },
    );
    // Asked of an agent too (its view comes from the master, forwarded).
    wait_until(
        "an agent to list the pinned nodes as agents",
        SECS_10,
        || {
            let view = nodes_view(all[9]);
            pinned
                .iter()
                .all(|n| role_of(&view, n.id()).as_deref() == Some("agent"))
        },
    );
    for n in &pinned {
        // A pinned agent keeps no Raft log.
        assert!(
            !n.herd.path("raft/raft.redb").exists(),
            "a pinned agent holds no raft files"
        );
    }
    // An agent's own status names the leader it hears from its heartbeats.
    wait_until("an agent to name its leader", SECS_10, || {
        pinned[0]
            .status()
            .is_some_and(|s| s["role"] == "agent" && s["leader_id"].is_u64())
    });

    // Work lands on agents, deployed from an agent (forwarded to the leader).
    let file = pinned[0].herd.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 10\n[app.placement]\nmax_per_node = 2\n",
    );
    pinned[0].herd.ok(&["cluster", "deploy", &file]);
    wait_until("10 instances of web running across the nodes", FORM, || {
        running_across(&all, "web") == (0..10).collect::<Vec<u64>>()
    });
    assert!(
        pinned.iter().any(|n| !running_here(n, "web").is_empty()),
        "agents run instances"
    );
    let apps = pinned[1].herd.json(&["cluster", "apps", "--json"]);
    assert_eq!(
        apps[0]["desired"], 10,
        "an agent reads the registry: {apps}"
    );

    // A voter dies: a standby takes its seat within seconds.
    let view = nodes_view(all[0]);
    let leader = all[0].leader().expect("a leader");
    let voter = *all
        .iter()
        .find(|n| n.id() != leader && role_of(&view, n.id()).as_deref() == Some("voter"))
        .expect("a voter that does not lead");
    let standbys: Vec<u64> = all
        .iter()
        .filter(|n| role_of(&view, n.id()).as_deref() == Some("standby"))
        .map(|n| n.id())
        .collect();
    kill_with_apps(voter);
    let alive: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| n.id() != voter.id())
        .collect();
    wait_until("a standby promoted to voter", FORM, || {
        let v = nodes_view(alive[0]);
        count_role(&v, "voter") == 3
            && role_of(&v, voter.id()).as_deref() != Some("voter")
            && standbys
                .iter()
                .any(|s| role_of(&v, *s).as_deref() == Some("voter"))
    });

    // An agent dies with its apps: offline, and its instances run elsewhere.
    let victim = *pinned
        .iter()
        .find(|n| !running_here(n, "web").is_empty())
        .expect("a pinned agent runs web");
    kill_with_apps(victim);
    let alive: Vec<&Node> = alive
        .iter()
        .copied()
        .filter(|n| n.id() != victim.id())
        .collect();
    wait_until("the dead agent offline and web whole again", FORM, || {
        let v = nodes_view(alive[0]);
        health_of(&v, victim.id()).as_deref() == Some("offline")
            && running_across(&alive, "web") == (0..10).collect::<Vec<u64>>()
    });

    // Every seat holder down: an agent restarted now (its host rebooted) runs its slice again.
    let holder = *pinned
        .iter()
        .filter(|n| n.id() != victim.id())
        .find(|n| !running_here(n, "web").is_empty())
        .expect("another pinned agent runs web");
    let mine = running_here(holder, "web");
    let v = nodes_view(holder);
    for n in &alive {
        if matches!(role_of(&v, n.id()).as_deref(), Some("voter" | "standby")) {
            n.herd.ok(&["kill"]);
        }
    }
    assert!(
        holder.herd.path("raft/slice.json").exists(),
        "the agent keeps its slice on disk"
    );
    kill_with_apps(holder);
    holder.herd.ok(&["up"]);
    wait_until(
        "the restarted agent to run its instances with no master",
        FORM,
        || running_here(holder, "web") == mine,
    );
    assert!(
        holder.leader().is_none(),
        "no master while the agent came back"
    );
}

#[test]
fn a_singleton_on_an_agent_dies_with_its_daemon_and_runs_once_on_another_agent() {
    let redis = Redis::start();
    let url = redis.url();
    let voters: Vec<Node> = (1..=3)
        .map(|i| Node::labeled(i, &url, 3, "s3cret", "kind = \"voter\"", FAST))
        .collect();
    let agents: Vec<Node> = (4..=5)
        .map(|i| {
            Node::labeled(
                i,
                &url,
                3,
                "s3cret",
                "kind = \"agent\"",
                &format!("{FAST}role = \"agent\"\n"),
            )
        })
        .collect();
    let all: Vec<&Node> = voters.iter().chain(agents.iter()).collect();
    wait_until("3 voters and 2 agents online", FORM, || {
        let v = nodes_view(all[0]);
        count_role(&v, "voter") == 3
            && count_role(&v, "agent") == 2
            && rows(&v).iter().all(|n| n["health"] == "online")
    });
    let file = all[0].herd.app_file(
        "solo.toml",
        "[[app]]\nname = \"solo\"\ncommand = \"sleep\"\nargs = [\"1000\"]\non_disconnect = \"stop\"\n[app.placement]\nconstraints = { kind = \"agent\" }\n",
    );
    all[0].herd.ok(&["cluster", "deploy", &file]);
    let on_agents: Vec<&Node> = agents.iter().collect();
    wait_until("solo running once, on an agent", FORM, || {
        counts_of(&all, "solo").iter().sum::<usize>() == 1
            && counts_of(&on_agents, "solo").iter().sum::<usize>() == 1
    });
    let holder = *on_agents
        .iter()
        .find(|n| !running_here(n, "solo").is_empty())
        .expect("an agent runs solo");
    let other = *on_agents
        .iter()
        .find(|n| n.id() != holder.id())
        .expect("the other agent");
    let pid = holder
        .herd
        .ps()
        .iter()
        .find(|r| r["name"] == "solo@0")
        .and_then(|r| r["pid"].as_u64())
        .expect("solo's pid");
    // The agent's daemon dies; its lease keeper kills the singleton, the master moves it.
    holder.herd.ok(&["kill"]);
    // A zombie runs nothing: its orphan waits for pid 1 (here, a lazy reaper) to collect it.
    let old_alive = || alive(pid as u32);
    let mut never_twice = true;
    wait_until("solo running on the other agent", FORM, || {
        let moved = running_here(other, "solo") == [0];
        // Seen from outside the dead daemon: the old process must be gone before the new one.
        never_twice &= !(moved && old_alive());
        moved
    });
    assert!(
        never_twice,
        "the singleton ran on the new agent while the old process still lived"
    );
    // The old agent comes back and does not start it again.
    holder.herd.ok(&["up"]);
    wait_until("the returning agent online again", FORM, || {
        health_of(&nodes_view(all[0]), holder.id()).as_deref() == Some("online")
    });
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(counts_of(&all, "solo").iter().sum::<usize>(), 1);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
