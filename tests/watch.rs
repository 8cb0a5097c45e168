//! `watch`: a real daemon, a real app that logs continuously, real files written under its
//! cwd. Each test waits for the app's `watch_started` event before it writes, so a change is
//! never made before the watches are in place.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const DEBOUNCE_MS: u64 = 300;

/// Prints a line every 20 ms: its log file (in the home's `logs/`) changes all the time.
const CHATTY: &str = r#"command = "sh"
args = ["-c", "while true; do echo tick; sleep 0.02; done"]"#;

fn events(h: &Herd, app: &str, kind: &str) -> Vec<Value> {
    h.ok(&["events", app, "--json", "--lines", "1000"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == kind)
        .collect()
}

/// Starts `name` from an app file in the home (so its cwd is the home) with these watch keys,
/// and waits until it runs and its watches are in place. Returns its pid.
fn start_watched(h: &Herd, name: &str, keys: &str) -> u32 {
    std::fs::create_dir_all(h.path("src/pkg")).unwrap();
    std::fs::create_dir_all(h.path("config")).unwrap();
    std::fs::write(h.path("src/app.py"), "print('v1')\n").unwrap();
    let file = h.app_file(
        &format!("{name}.toml"),
        &format!(
            "[[app]]\nname = \"{name}\"\n{CHATTY}\nwatch_debounce_ms = {DEBOUNCE_MS}\n{keys}\n"
        ),
    );
    h.ok(&["start", &file]);
    let pid = pid_of(&h.wait_status(name, 0, "running", SECS_10));
    wait_watch_started(h, name, 1);
    pid
}

fn wait_watch_started(h: &Herd, name: &str, count: usize) {
    wait_until(&format!("{name}'s watch_started #{count}"), SECS_10, || {
        events(h, name, "watch_started").len() >= count
    });
}

/// Waits for `name` to run with a pid other than `old`; returns the new pid.
fn wait_new_pid(h: &Herd, name: &str, old: u32) -> u32 {
    let rows = h.wait_ps(
        &format!("{name} restarted (pid not {old})"),
        SECS_10,
        |rows| {
            rows.iter().any(|r| {
                r["name"] == name
                    && r["status"] == "running"
                    && r["pid"].as_u64().is_some_and(|p| p != u64::from(old))
            })
        },
    );
    pid_of(rows.iter().find(|r| r["name"] == name).unwrap())
}

/// Asserts that `name` keeps `pid` for a bounded time: the debounce window twice over, plus
/// the debouncer's own delay (one window) — the longest a change takes to act.
fn assert_not_restarted(h: &Herd, name: &str, pid: u32, why: &str) {
    let until = Instant::now() + Duration::from_millis(DEBOUNCE_MS * 3 + 200);
    while Instant::now() < until {
        let row = h.instance(name, 0);
        assert_eq!(row["pid"].as_u64(), Some(u64::from(pid)), "{why}: {row}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let restarts = events(h, name, "watch_restart");
    assert!(restarts.is_empty(), "{why}: {restarts:?}");
}

fn append(h: &Herd, rel: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(h.path(rel))
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

#[test]
fn a_burst_of_twenty_writes_restarts_the_app_once() {
    let h = Herd::up();
    let pid = start_watched(
        &h,
        "api",
        r#"watch = ["src/**/*.py", "config/"]
watch_ignore = ["**/__pycache__/**", "*.log"]"#,
    );
    for i in 0..20 {
        let rel = match i % 3 {
            0 => "src/app.py".to_string(),
            1 => format!("src/pkg/m{i}.py"),
            _ => "config/app.toml".to_string(),
        };
        append(&h, &rel, &format!("# write {i}"));
        // Closer together than the debounce window, but the burst as a whole lasts longer
        // than it: one restart needs the window to restart with every change.
        std::thread::sleep(Duration::from_millis(DEBOUNCE_MS / 8));
    }
    let new = wait_new_pid(&h, "api", pid);
    // No second restart: the debounce window twice over, then the count.
    std::thread::sleep(Duration::from_millis(DEBOUNCE_MS * 2));
    assert_eq!(pid_of(&h.instance("api", 0)), new, "restarted again");
    let restarts = events(&h, "api", "watch_restart");
    assert_eq!(restarts.len(), 1, "{restarts:#?}");
    assert_eq!(
        restarts[0]["reload"], false,
        "no probe, no listen: a restart"
    );
    let starts = events(&h, "api", "started");
    assert_eq!(starts.len(), 2, "one start, one restart: {starts:#?}");
}

#[test]
fn ignored_files_and_herds_own_log_files_do_not_restart_the_app() {
    let h = Herd::up();
    // The whole cwd is watched, and the cwd is herd's home: the app's own log file
    // (logs/quiet-0.log, written every 20 ms), events.jsonl and state.json are inside it.
    // `*.log` is deliberately not ignored: herd must leave out its own files by itself.
    let pid = start_watched(
        &h,
        "quiet",
        r#"watch = true
watch_ignore = ["**/__pycache__/**", "*.tmp"]"#,
    );
    let log = h.path("logs/quiet-0.log");
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    std::fs::create_dir_all(h.path("src/__pycache__")).unwrap();
    append(&h, "src/__pycache__/app.cpython-311.pyc", "bytecode");
    append(&h, "notes.tmp", "scratch");
    append(&h, "deep.tmp", "scratch");
    assert_not_restarted(
        &h,
        "quiet",
        pid,
        "an ignored file or herd's own log restarted it",
    );
    assert!(
        std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > size,
        "the app's log inside the watched tree grew meanwhile"
    );
    // The watch is live: a file that counts restarts it.
    append(&h, "src/app.py", "print('v2')");
    wait_new_pid(&h, "quiet", pid);
}

#[test]
fn watch_off_stops_restarts_and_on_brings_them_back_and_the_choice_is_kept() {
    let h = Herd::up();
    let pid = start_watched(&h, "web", r#"watch = ["src/"]"#);
    assert_eq!(h.instance("web", 0)["watching"], true);

    let off = h.json(&["watch", "web", "off", "--json"]);
    assert_eq!(off, serde_json::json!({ "name": "web", "watching": false }));
    assert_eq!(h.instance("web", 0)["watching"], false);
    assert_eq!(h.json(&["inspect", "web", "--json"])["watching"], false);
    append(&h, "src/app.py", "print('while off')");
    assert_not_restarted(&h, "web", pid, "restarted while watch was off");

    // Kept across a daemon restart (state.json): the app is adopted, still not watched.
    h.ok(&["kill"]);
    h.ok(&["up"]);
    h.wait_status("web", 0, "running", SECS_10);
    assert_eq!(h.json(&["inspect", "web", "--json"])["watching"], false);
    assert_eq!(events(&h, "web", "watch_started").len(), 1);

    let on = h.json(&["watch", "web", "on", "--json"]);
    assert_eq!(on["watching"], true);
    wait_watch_started(&h, "web", 2);
    append(&h, "src/app.py", "print('on again')");
    wait_new_pid(&h, "web", pid);
    assert_eq!(events(&h, "web", "watching").len(), 2, "off and on");
}

#[test]
fn the_event_names_the_file_that_changed() {
    let h = Herd::up();
    let pid = start_watched(&h, "named", r#"watch = ["src/**/*.py", "config/"]"#);
    append(&h, "config/settings.toml", "port = 1");
    wait_new_pid(&h, "named", pid);
    let restarts = events(&h, "named", "watch_restart");
    assert_eq!(restarts.len(), 1, "{restarts:#?}");
    assert_eq!(restarts[0]["path"], "config/settings.toml");
    assert_eq!(restarts[0]["overflow"], false);
}

#[test]
fn bad_watch_values_are_refused_at_start_naming_the_key() {
    let h = Herd::up();
    for (keys, key, says) in [
        (
            r#"watch = ["src"]
watch_debounce_ms = 0"#,
            "watch_debounce_ms",
            "outside 10..=600000",
        ),
        (
            r#"watch = ["src"]
watch_debounce_ms = 99999999999"#,
            "watch_debounce_ms",
            "outside 10..=600000",
        ),
        (r#"watch = ["src/[a"]"#, "watch", "is not a glob"),
        (r#"watch = ["../etc"]"#, "watch", "leaves the app's cwd"),
        (
            r#"watch = ["src"]
watch_ignore = ["{a"]"#,
            "watch_ignore",
            "is not a glob",
        ),
        (
            r#"watch_ignore = ["*.log"]"#,
            "watch_ignore",
            "only applies with `watch`",
        ),
    ] {
        let file = h.app_file(
            "bad.toml",
            &format!("[[app]]\nname = \"bad\"\ncommand = \"true\"\n{keys}\n"),
        );
        let err = h.fails(&["start", &file]);
        assert!(
            err.contains("bad.toml")
                && err.contains(&format!("app `bad`: key `{key}`: "))
                && err.contains(says),
            "{keys}: {err}"
        );
    }
    let err = h.fails(&["watch", "nope", "on"]);
    assert!(err.contains("app `nope` not found"), "{err}");
    assert!(h.ps().is_empty(), "nothing was started");
}

#[test]
fn an_app_restored_after_a_daemon_restart_is_watched_again() {
    let h = Herd::up();
    let pid = start_watched(&h, "kept", r#"watch = ["src/"]"#);
    h.ok(&["kill"]);
    h.ok(&["up"]);
    assert_eq!(
        pid_of(&h.wait_status("kept", 0, "running", SECS_10)),
        pid,
        "adopted, not restarted"
    );
    wait_watch_started(&h, "kept", 2);
    append(&h, "src/app.py", "print('after the daemon restart')");
    wait_new_pid(&h, "kept", pid);
}

#[test]
fn an_app_with_a_probe_is_reloaded_rather_than_restarted() {
    let h = Herd::up();
    let pid = start_watched(
        &h,
        "probed",
        r#"watch = ["src/"]
[app.health]
exec = ["true"]
interval_s = 0.1
grace_s = 0"#,
    );
    append(&h, "src/app.py", "print('v2')");
    wait_new_pid(&h, "probed", pid);
    let restarts = events(&h, "probed", "watch_restart");
    assert_eq!(restarts.len(), 1, "{restarts:#?}");
    assert_eq!(restarts[0]["reload"], true);
    wait_until("the reload done", SECS_10, || {
        events(&h, "probed", "reload")
            .iter()
            .any(|e| e["step"] == "done")
    });
    assert!(!alive(pid), "the old process was retired");
}
