//! A full disk under `$HERD_HOME`: the home sits on a small tmpfs of its own (the tests run as
//! root, as CI does), which a filler file then fills to the last byte. The apps must keep
//! running, the daemon keep answering, a change it acknowledges must survive a restart (one it
//! cannot save is refused, not acknowledged), `state.json` must stay whole, and everything
//! must work again once space returns.

mod common;

use common::disk::{Tmpfs, fill};
use common::*;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A daemon whose home sits on `fs`.
fn daemon_on(fs: &Tmpfs) -> Herd {
    let h = fs.home();
    h.ok(&["up"]);
    h
}

fn app_names(h: &Herd) -> Vec<String> {
    let mut names: Vec<String> = h
        .ps()
        .iter()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect();
    names.dedup();
    names
}

#[test]
fn a_full_disk_keeps_apps_running_and_loses_no_acknowledged_change() {
    let fs = Tmpfs::new("6m");
    let h = daemon_on(&fs);
    let chatty = h.app_file(
        "chatty.toml",
        "[[app]]\nname = \"chatty\"\ncommand = \"sh\"\nargs = [\"-c\", \"while :; do echo chatty line; sleep 0.01; done\"]\nlog_max_bytes = 65536\nlog_files = 2\n\n[[app]]\nname = \"quiet\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    h.ok(&["start", &chatty]);
    let chatty_pid = pid_of(&h.wait_status("chatty", 0, "running", WAIT));
    let quiet_pid = pid_of(&h.wait_status("quiet", 0, "running", WAIT));
    // Written before the disk fills: the app file of the change tried while it is full.
    let late: PathBuf = h
        .app_file(
            "late.toml",
            "[[app]]\nname = \"late\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
        )
        .into();

    let filler = fs.path().join("filler");
    assert!(fill(&filler) > 0);

    // The daemon answers, and the apps run on.
    h.ok(&["ping"]);
    h.ok(&["ps"]);
    // A change while full: acknowledged (then it must survive) or refused saying why.
    let tried = h.run(&["start", late.to_str().unwrap()]);
    let acknowledged = tried.status.success();
    if !acknowledged {
        // Refused as not durable, but applied in memory (and saved once the disk takes it).
        let err = String::from_utf8_lossy(&tried.stderr);
        assert!(
            err.contains("state not saved") && err.contains("applied in memory"),
            "a refusal says why: {err}"
        );
    }
    assert!(app_names(&h).iter().any(|n| n == "late"));
    // A stop is a change too.
    let stop = h.run(&["stop", "quiet"]);
    let stop_acknowledged = stop.status.success();
    for _ in 0..20 {
        assert!(alive(chatty_pid), "an app died of the full disk");
        h.ok(&["ps", "--json"]);
        std::thread::sleep(Duration::from_millis(25));
    }
    let state = std::fs::read(h.path("state.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&state).expect("state.json is whole");

    // Space returns: everything works again, and nothing acknowledged was lost.
    std::fs::remove_file(&filler).unwrap();
    h.wait_status("late", 0, "running", WAIT);
    wait_until("quiet stopped", WAIT, || !alive(quiet_pid));
    // What was refused as not durable reaches the disk once it has room (retried every second).
    wait_until("the state file catches up", WAIT, || {
        std::fs::read(h.path("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.to_string().contains("\"late\""))
    });
    h.ok(&["down", "--keep-apps"]);
    let state = std::fs::read(h.path("state.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&state).expect("state.json is whole");
    h.ok(&["up"]);
    let names = app_names(&h);
    for app in ["chatty", "quiet", "late"] {
        assert!(names.iter().any(|n| n == app), "{app} lost: {names:?}");
    }
    assert_eq!(
        pid_of(&h.wait_status("chatty", 0, "running", WAIT)),
        chatty_pid,
        "chatty kept running through it all and was adopted"
    );
    assert_eq!(
        h.instance("quiet", 0)["status"],
        "stopped",
        "the stop was kept"
    );
    eprintln!(
        "while full: start acknowledged: {acknowledged}, stop acknowledged: {stop_acknowledged}"
    );
    h.ok(&["down"]);
}

#[test]
fn logs_stop_growing_on_a_full_disk_and_grow_again_after() {
    let fs = Tmpfs::new("4m");
    let h = daemon_on(&fs);
    let file = h.app_file(
        "spew.toml",
        "[[app]]\nname = \"spew\"\ncommand = \"sh\"\nargs = [\"-c\", \"while :; do echo spew line; sleep 0.005; done\"]\nlog_max_bytes = 262144\nlog_files = 2\n",
    );
    h.ok(&["start", &file]);
    let pid = pid_of(&h.wait_status("spew", 0, "running", WAIT));
    let log = h.path("logs/spew-0.log");
    wait_until("the app writes its log", WAIT, || {
        std::fs::metadata(&log).is_ok_and(|m| m.len() > 0)
    });
    let filler = fs.path().join("filler");
    fill(&filler);
    let full = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    // tmpfs allocates whole pages: a write may still fill the page the file already has.
    let page_end = full.div_ceil(4096).max(1) * 4096;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(20));
        let now = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        assert!(
            now <= page_end,
            "the log grew on a full disk: {full} -> {now}"
        );
    }
    let full = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(alive(pid), "the app lives on with its writes refused");
    std::fs::remove_file(&filler).unwrap();
    wait_until("the log grows again once space returns", WAIT, || {
        let now = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        now > full || now < full / 2 // grown, or rotated and growing
    });
    h.ok(&["down"]);
}
