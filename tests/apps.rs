//! Apps under the supervisor: restart policies, backoff, crash limit, stopping whole process
//! trees, and app files that are accepted whole or not at all.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn stamps(h: &Herd, file: &str) -> Vec<u128> {
    read_lines(&h.path(file))
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn crash_restarts_follow_exponential_backoff_then_crashed() {
    let h = Herd::up();
    let stamp = h.path("starts");
    let file = h.app_file(
        "apps.toml",
        &format!(
            r#"
[[app]]
name = "flaky"
command = "sh"
args = ["-c", "date +%s%N >> {}; exit 1"]
backoff_initial_ms = 200
backoff_max_ms = 1000
max_restarts = 4
restart_window_s = 60
"#,
            stamp.display()
        ),
    );
    h.ok(&["start", &file]);
    let row = h.wait_status("flaky", 0, "crashed", Duration::from_secs(20));
    assert_eq!(row["restarts"], 4);
    assert_eq!(row["last_exit"]["code"], 1);
    assert!(row["pid"].is_null());

    let starts = stamps(&h, "starts");
    assert_eq!(starts.len(), 5, "one start and four restarts: {starts:?}");
    let gaps_ms: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .collect();
    // 200, 400, 800, then capped at 1000.
    for (gap, want) in gaps_ms.iter().zip([200.0, 400.0, 800.0, 1000.0]) {
        assert!(
            *gap >= want - 5.0 && *gap <= want + 250.0,
            "restart delay {gap:.0} ms, expected {want} ms; all gaps {gaps_ms:?}"
        );
    }
    // Crashed means no more restarts.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stamps(&h, "starts").len(), 5);

    // `herd restart` clears crashed.
    h.ok(&["restart", "flaky"]);
    wait_until("a start after restart", SECS_10, || {
        stamps(&h, "starts").len() >= 6
    });
    let inspect = h.json(&["inspect", "flaky", "--json"]);
    assert!(
        inspect["instances"][0]["exits"]
            .as_array()
            .is_some_and(|e| e.len() >= 5),
        "{inspect}"
    );
}

#[test]
fn exit_zero_and_failures_follow_each_policy() {
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        r#"
[[app]]
name = "ok-on-failure"
command = "sh"
args = ["-c", "exit 0"]

[[app]]
name = "fail-never"
command = "sh"
args = ["-c", "exit 7"]
restart = "never"

[[app]]
name = "ok-always"
command = "sh"
args = ["-c", "sleep 0.2; exit 0"]
restart = "always"
backoff_initial_ms = 50
"#,
    );
    h.ok(&["start", &file]);
    let r = h.wait_status("ok-on-failure", 0, "stopped", SECS_10);
    assert_eq!(
        (r["restarts"].as_u64(), r["last_exit"]["code"].as_i64()),
        (Some(0), Some(0))
    );
    let r = h.wait_status("fail-never", 0, "stopped", SECS_10);
    assert_eq!(
        (r["restarts"].as_u64(), r["last_exit"]["code"].as_i64()),
        (Some(0), Some(7))
    );
    h.wait_ps("ok-always restarted after exit 0", SECS_10, |rows| {
        rows.iter()
            .any(|r| r["name"] == "ok-always" && r["restarts"].as_u64() >= Some(2))
    });
    // Nothing restarted the two that were meant to stay stopped.
    assert_eq!(h.instance("ok-on-failure", 0)["restarts"], 0);
    assert_eq!(h.instance("fail-never", 0)["restarts"], 0);
}

#[test]
fn a_signal_counts_as_failure_and_is_reported() {
    let h = Herd::up();
    h.ok(&["start", "--name", "victim", "--", "sleep", "1000"]);
    let pid = pid_of(&h.wait_status("victim", 0, "running", SECS_10));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let rows = h.wait_ps("victim restarted", SECS_10, |rows| {
        rows[0]["restarts"] == 1 && rows[0]["status"] == "running"
    });
    assert_eq!(rows[0]["last_exit"]["signal"], "SIGKILL");
    assert_ne!(pid_of(&rows[0]), pid);
}

#[test]
fn stop_reaches_grandchildren_and_kills_what_ignores_the_signal() {
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        r#"
[[app]]
name = "tree"
command = "sh"
args = ["-c", "sleep 1000 & sleep 1000 & wait"]

[[app]]
name = "stubborn"
command = "sh"
args = ["-c", "trap '' TERM; sleep 1000 & wait; wait"]
stop_timeout_s = 1
"#,
    );
    h.ok(&["start", &file]);
    let tree = pid_of(&h.wait_status("tree", 0, "running", SECS_10));
    let stubborn = pid_of(&h.wait_status("stubborn", 0, "running", SECS_10));
    wait_until("grandchildren spawned", SECS_10, || {
        std::fs::read_to_string(format!("/proc/{tree}/task/{tree}/children"))
            .is_ok_and(|c| c.split_whitespace().count() == 2)
    });
    h.ok(&["stop", "tree"]);
    assert!(
        !group_alive(tree),
        "a process of tree's group survived its stop"
    );
    assert_eq!(h.instance("tree", 0)["status"], "stopped");

    let t0 = Instant::now();
    h.ok(&["stop", "stubborn"]);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "SIGKILL came before stop_timeout_s: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(
        !group_alive(stubborn),
        "the group that ignored SIGTERM survived"
    );
}

#[test]
fn a_crashed_leader_takes_its_orphans_with_it() {
    let h = Herd::up();
    let child_pid = h.path("child.pid");
    h.ok(&[
        "start",
        "--name",
        "leaky",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        &format!(
            "sleep 1000 & echo $! > {}; sleep 0.3; exit 1",
            child_pid.display()
        ),
    ]);
    h.wait_status("leaky", 0, "stopped", SECS_10);
    let orphan: u32 = std::fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the orphan to be killed", SECS_10, || !alive(orphan));
}

#[test]
fn malformed_app_files_are_rejected_whole_with_a_precise_message() {
    let h = Herd::up();
    let cases = [
        (
            "unknown.toml",
            "[[app]]\nname = \"a\"\ncommand = \"true\"\n\n[[app]]\nname = \"b\"\ncommand = \"true\"\nbogus = 1\n",
            "unknown.toml: app `b`: unknown key `bogus`",
        ),
        (
            "nocmd.toml",
            "[[app]]\nname = \"a\"\ncommand = \"true\"\n\n[[app]]\nname = \"b\"\n",
            "nocmd.toml: app `b`: missing required key `command`",
        ),
        (
            "dup.toml",
            "[[app]]\nname = \"a\"\ncommand = \"true\"\n\n[[app]]\nname = \"a\"\ncommand = \"true\"\n",
            "dup.toml: app `a`: key `name`: `a` is used by more than one app",
        ),
        (
            "sig.toml",
            "[[app]]\nname = \"a\"\ncommand = \"true\"\nstop_signal = \"SIGNOPE\"\n",
            "sig.toml: app `a`: key `stop_signal`: `SIGNOPE` is not a signal name",
        ),
        ("syntax.toml", "[[app]\nname = \"a\"\n", "syntax.toml: "),
    ];
    for (file, text, want) in cases {
        let path = h.app_file(file, text);
        let err = h.fails(&["start", &path]);
        let want = want.replace(file, &path);
        assert!(
            err.contains(&want),
            "for {file}: expected `{want}` in: {err}"
        );
        assert!(
            h.ps().is_empty(),
            "{file} registered something: {:?}",
            h.ps()
        );
    }
    // The daemon is still serving.
    h.ok(&["ping"]);
}

#[test]
fn scale_delete_and_unknown_names() {
    let h = Herd::up();
    h.ok(&[
        "start",
        "--name",
        "web",
        "--instances",
        "2",
        "--",
        "sleep",
        "1000",
    ]);
    h.wait_ps("two running", SECS_10, |rows| {
        rows.len() == 2 && rows.iter().all(|r| r["status"] == "running")
    });
    let env = std::fs::read_to_string(format!("/proc/{}/environ", pid_of(&h.instance("web", 1))))
        .unwrap();
    assert!(
        env.split('\0').any(|kv| kv == "HERD_INSTANCE=1"),
        "HERD_INSTANCE missing"
    );

    h.ok(&["scale", "web", "4"]);
    h.wait_ps("four running", SECS_10, |rows| {
        rows.len() == 4 && rows.iter().all(|r| r["status"] == "running")
    });
    let third = pid_of(&h.instance("web", 3));
    h.ok(&["scale", "web", "1"]);
    let rows = h.ps();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(!alive(third));

    let err = h.fails(&["stop", "nope"]);
    assert!(
        err.contains("app `nope` not found; `herd ps` lists apps"),
        "{err}"
    );
    let web = pid_of(&h.instance("web", 0));
    h.ok(&["delete", "web"]);
    assert!(h.ps().is_empty());
    assert!(!alive(web));
}

#[test]
fn start_by_name_restarts_a_stopped_app() {
    let h = Herd::up();
    h.ok(&["start", "--name", "s", "--", "sleep", "1000"]);
    h.wait_status("s", 0, "running", SECS_10);
    h.ok(&["stop", "s"]);
    assert_eq!(h.instance("s", 0)["status"], "stopped");
    h.ok(&["start", "s"]);
    h.wait_status("s", 0, "running", SECS_10);
}
