//! Ordering and the record of what happened: depends_on on start and stop, cycle rejection,
//! the event log of a crash loop, stop_exit_codes, config reloads that keep the old config
//! when the new one is bad, and no duplicate process after a crash before the state write.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

fn stamp_app(h: &Herd, name: &str, deps: &[&str], ready_after: &str) -> String {
    let log = h.path("order");
    let deps = deps
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[[app]]
name = "{name}"
command = "sh"
args = ["-c", "echo start {name} >> {log}; trap 'echo stop {name} >> {log}; exit 0' TERM; sleep {ready_after}; touch {home}/{name}.ready; while :; do sleep 0.05; done"]
depends_on = [{deps}]
[app.health]
exec = ["test", "-e", "{home}/{name}.ready"]
interval_s = 0.1
grace_s = 5
"#,
        log = log.display(),
        home = h.home.path().display()
    )
}

#[test]
fn depends_on_orders_start_and_stop_and_graph_shows_it() {
    let h = Herd::up();
    // Listed dependents first, to prove the order comes from depends_on.
    let text = [
        stamp_app(&h, "web", &["api"], "0"),
        stamp_app(&h, "api", &["db"], "0.3"),
        stamp_app(&h, "db", &[], "0.5"),
    ]
    .concat();
    let file = h.app_file("apps.toml", &text);
    h.ok(&["start", &file]);
    h.wait_ps("all running", SECS_10, |rows| {
        rows.len() == 3 && rows.iter().all(|r| r["status"] == "running")
    });
    let order = read_lines(&h.path("order"));
    assert_eq!(order, ["start db", "start api", "start web"]);
    // api started only once db was healthy.
    assert!(h.path("db.ready").exists());

    let graph = h.ok(&["graph", "web"]);
    assert_eq!(graph, "web\n└── api\n    └── db\n");
    let g = h.json(&["graph", "web", "--json"]);
    assert_eq!(g["depends_on"][0]["depends_on"][0]["name"], "db");

    h.ok(&["down"]);
    let order = read_lines(&h.path("order"));
    assert_eq!(&order[3..], ["stop web", "stop api", "stop db"]);

    // Resurrection by `herd up` follows the same order.
    std::fs::remove_file(h.path("order")).unwrap();
    for n in ["web", "api", "db"] {
        let _ = std::fs::remove_file(h.path(&format!("{n}.ready")));
    }
    h.ok(&["up"]);
    h.wait_ps("all running again", SECS_10, |rows| {
        rows.iter().all(|r| r["status"] == "running")
    });
    assert_eq!(
        read_lines(&h.path("order")),
        ["start db", "start api", "start web"]
    );
}

#[test]
fn cycles_and_unknown_dependencies_reject_the_file() {
    let h = Herd::up();
    let cycle = h.app_file(
        "cycle.toml",
        "[[app]]\nname = \"a\"\ncommand = \"true\"\ndepends_on = [\"b\"]\n[[app]]\nname = \"b\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
    );
    let err = h.fails(&["start", &cycle]);
    assert!(err.contains("dependency cycle a -> b -> a"), "{err}");
    let unknown = h.app_file(
        "unknown.toml",
        "[[app]]\nname = \"a\"\ncommand = \"true\"\ndepends_on = [\"ghost\"]\n",
    );
    let err = h.fails(&["start", &unknown]);
    assert!(
        err.contains("app `a`: key `depends_on`: unknown app `ghost`"),
        "{err}"
    );
    assert!(h.ps().is_empty());
}

#[test]
fn a_crash_loop_is_recorded_in_order_with_its_fields() {
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        "[[app]]\nname = \"flaky\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\nbackoff_initial_ms = 50\nmax_restarts = 2\n",
    );
    h.ok(&["start", &file]);
    h.wait_status("flaky", 0, "crashed", SECS_10);
    let events: Vec<Value> = h
        .ok(&["events", "flaky", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "registered",
            "started",
            "exited",
            "restarting",
            "started",
            "exited",
            "restarting",
            "started",
            "exited",
            "crashed"
        ]
    );
    let exited = events.iter().find(|e| e["event"] == "exited").unwrap();
    assert_eq!(
        (exited["code"].as_i64(), exited["instance"].as_u64()),
        (Some(3), Some(0))
    );
    assert!(exited["pid"].is_u64() && exited["ts_ms"].is_u64());
    let delays: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "restarting")
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, [50, 100]);
    assert_eq!(events.last().unwrap()["restarts"], 2);
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64())
    );
    // The same facts are in events.jsonl, one JSON object per line.
    let on_disk = std::fs::read_to_string(h.path("events.jsonl")).unwrap();
    assert_eq!(
        on_disk
            .lines()
            .filter(|l| l.contains("\"crashed\""))
            .count(),
        1
    );
    let text = h.ok(&["events", "flaky"]);
    assert!(
        text.lines().last().unwrap().contains("flaky/0 crashed"),
        "{text}"
    );
}

#[test]
fn events_follow_streams_new_facts() {
    let h = Herd::up();
    let mut child = h
        .cmd(&["events", "--follow", "--json", "--lines", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut child);
    // The follower is subscribed once the daemon has answered; give it its first event.
    std::thread::sleep(Duration::from_millis(300));
    h.ok(&["start", "--name", "s", "--", "sleep", "1000"]);
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Value| e["event"] == "started") {
        let line = rx.recv_timeout(SECS_10).expect("an event");
        seen.push(serde_json::from_str(&line).unwrap());
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|e| e["event"] == "registered" && e["app"] == "s")
    );
}

#[test]
fn stop_exit_codes_are_never_restarted() {
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        "[[app]]\nname = \"done\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 2\"]\nrestart = \"always\"\nstop_exit_codes = [0, 2]\n",
    );
    h.ok(&["start", &file]);
    let row = h.wait_status("done", 0, "stopped", SECS_10);
    assert_eq!(
        (row["restarts"].as_u64(), row["last_exit"]["code"].as_i64()),
        (Some(0), Some(2))
    );
}

#[test]
fn a_bad_config_on_sighup_or_reload_config_keeps_the_running_one() {
    let h = Herd::new();
    std::fs::create_dir_all(h.home.path()).unwrap();
    std::fs::write(h.path("config.toml"), "metrics_interval_s = 1\n").unwrap();
    h.ok(&["up"]);
    h.ok(&["start", "--name", "s", "--", "sleep", "1000"]);
    let pid = pid_of(&h.wait_status("s", 0, "running", SECS_10));

    std::fs::write(
        h.path("config.toml"),
        "metrics_interval_s = \"often\"\nbogus = 1\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.daemon_pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until("the refusal in the log", SECS_10, || {
        std::fs::read_to_string(h.path("daemon.log"))
            .is_ok_and(|l| l.contains("config reload refused"))
    });
    let err = h.fails(&["reload-config"]);
    assert!(
        err.contains("config not reloaded, the running one stays") && err.contains("config.toml"),
        "{err}"
    );
    h.ok(&["ping"]);
    assert_eq!(pid_of(&h.instance("s", 0)), pid, "the app was touched");

    // The running config is still the old one: reloading the old text changes nothing.
    std::fs::write(h.path("config.toml"), "metrics_interval_s = 1\n").unwrap();
    let r = h.json(&["reload-config", "--json"]);
    assert_eq!(r["changed"], serde_json::json!([]));
    std::fs::write(h.path("config.toml"), "metrics_interval_s = 2\n").unwrap();
    let r = h.json(&["reload-config", "--json"]);
    assert_eq!(r["changed"], serde_json::json!(["metrics_interval_s"]));
}

#[test]
fn a_process_whose_pid_never_reached_the_state_is_adopted_not_duplicated() {
    let h = Herd::up();
    h.ok(&["start", "--name", "s", "--", "sleep", "1000"]);
    let pid = pid_of(&h.wait_status("s", 0, "running", SECS_10));
    h.ok(&["kill"]);
    // As if the daemon died between spawning and writing the pid.
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(h.path("state.json")).unwrap()).unwrap();
    state["apps"][0]["instances"][0]["pid"] = Value::Null;
    state["apps"][0]["instances"][0]["status"] = "stopped".into();
    std::fs::write(h.path("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    h.ok(&["up"]);
    let row = h.wait_status("s", 0, "running", SECS_10);
    assert_eq!(
        pid_of(&row),
        pid,
        "a second process was started for the slot"
    );
    let sleeps = std::process::Command::new("pgrep")
        .args(["-f", "-x", "sleep 1000"])
        .output()
        .unwrap();
    let ours = String::from_utf8_lossy(&sleeps.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|e| {
                String::from_utf8_lossy(&e).contains(&*h.home.path().to_string_lossy())
            })
        })
        .count();
    assert_eq!(ours, 1);
}
