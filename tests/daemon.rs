//! The daemon's own life: the pid lock, racing starts, surviving its own death with the
//! apps still running (and adopting them), and a state file that can be trusted.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn two_sleepers(h: &Herd) -> (u32, u32) {
    let file = h.app_file(
        "apps.toml",
        "[[app]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\n[[app]]\nname = \"b\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nrestart = \"always\"\n",
    );
    h.ok(&["start", &file]);
    let a = pid_of(&h.wait_status("a", 0, "running", SECS_10));
    let b = pid_of(&h.wait_status("b", 0, "running", SECS_10));
    (a, b)
}

#[test]
fn ping_reports_pid_version_and_uptime() {
    let h = Herd::up();
    let v = h.json(&["ping", "--json"]);
    assert_eq!(v["pid"].as_u64(), h.daemon_pid().map(u64::from));
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_s"].is_u64());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(h.path("daemon.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
}

#[test]
fn second_up_fails_with_the_running_pid() {
    let h = Herd::up();
    let pid = h.daemon_pid().unwrap();
    let err = h.fails(&["up"]);
    assert!(
        err.contains(&format!("already running (pid {pid})")),
        "{err}"
    );
    h.ok(&["ping"]);
}

#[test]
fn racing_ups_start_exactly_one_daemon() {
    let h = Herd::new();
    // The file still names an earlier daemon that died: a loser must never report it.
    std::fs::create_dir_all(h.home.path()).unwrap();
    let mut gone = Command::new("sleep").arg("1000").spawn().unwrap();
    let dead = gone.id();
    let stat = std::fs::read_to_string(format!("/proc/{dead}/stat")).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 2..]
        .split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    gone.kill().unwrap();
    gone.wait().unwrap();
    std::fs::write(h.path("daemon.pid"), format!("{dead}\n{start}\n")).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            h.cmd(&["up"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "{outs:?}");
    let pid = h.daemon_pid().unwrap();
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already running"), "{err}");
        // The winner, or an honest "could not tell": never the dead owner's pid.
        assert!(
            err.contains(&format!("(pid {pid})")) || err.contains("could not be told"),
            "{err}"
        );
        assert!(!err.contains(&format!("pid {dead}")), "{err}");
    }
    assert!(alive(pid));
    let daemons = Command::new("pgrep")
        .args(["-f", "herd up --foreground"])
        .output()
        .unwrap();
    let ours: Vec<u32> = String::from_utf8_lossy(&daemons.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p: &u32| {
            std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|e| {
                String::from_utf8_lossy(&e).contains(&*h.home.path().to_string_lossy())
            })
        })
        .collect();
    assert_eq!(ours, vec![pid]);
}

#[test]
fn a_stale_pid_file_with_a_recycled_pid_is_reclaimed() {
    let h = Herd::new();
    // A live process that is not a herd daemon, recorded with another start signature.
    let mut bystander = Command::new("sleep").arg("1000").spawn().unwrap();
    std::fs::create_dir_all(h.home.path()).unwrap();
    std::fs::write(h.path("daemon.pid"), format!("{}\n12345\n", bystander.id())).unwrap();
    // `kill` must not touch the bystander: the signature does not match.
    let out = h.ok(&["kill"]);
    assert!(out.contains("no daemon running"), "{out}");
    assert!(alive(bystander.id()));
    std::fs::write(h.path("daemon.pid"), format!("{}\n12345\n", bystander.id())).unwrap();
    h.ok(&["up"]);
    assert_ne!(h.daemon_pid(), Some(bystander.id()));
    assert!(alive(bystander.id()));
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn apps_survive_a_killed_daemon_and_are_adopted_with_the_same_pids() {
    let h = Herd::up();
    let (a, b) = two_sleepers(&h);
    let daemon = h.daemon_pid().unwrap();
    let out = h.ok(&["kill"]);
    assert!(out.contains(&format!("pid {daemon}")), "{out}");
    assert!(!alive(daemon));
    assert!(alive(a) && alive(b), "apps died with the daemon");
    h.fails(&["ps"]);

    h.ok(&["up"]);
    let rows = h.ps();
    assert_eq!(pid_of(&h.instance("a", 0)), a, "{rows:?}");
    assert_eq!(pid_of(&h.instance("b", 0)), b, "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "running"), "{rows:?}");

    // An adopted process is still supervised: its death is noticed and it is restarted.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let rows = h.wait_ps("b restarted", SECS_10, |rows| {
        rows.iter()
            .any(|r| r["name"] == "b" && r["status"] == "running" && r["pid"] != b)
    });
    assert!(rows.iter().any(|r| r["name"] == "b" && r["restarts"] == 1));
}

#[test]
fn apps_that_died_while_the_daemon_was_down_are_restarted_per_policy() {
    let h = Herd::up();
    let (a, b) = two_sleepers(&h);
    h.ok(&["kill"]);
    for pid in [a, b] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    wait_until("apps gone", SECS_10, || !alive(a) && !alive(b));
    h.ok(&["up"]);
    for name in ["a", "b"] {
        let row = h.wait_status(name, 0, "running", SECS_10);
        assert_eq!(row["restarts"], 1);
        assert_eq!(row["last_exit"]["reason"], "died while the daemon was down");
    }
}

#[test]
fn an_app_whose_policy_let_it_end_stays_ended_across_a_daemon_sigkill_and_down_up() {
    // `restart = "never"` (exit 3) and `"on-failure"` (exit 0) both end for good; the
    // daemon that comes back used to start them again as if they had never run.
    let h = Herd::up();
    let (once, clean) = (h.path("once"), h.path("clean"));
    let file = h.app_file(
        "apps.toml",
        &format!(
            "[[app]]\nname = \"once\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo run >> {}; exit 3\"]\nrestart = \"never\"\n\n[[app]]\nname = \"clean\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo run >> {}\"]\nrestart = \"on-failure\"\n",
            once.display(),
            clean.display()
        ),
    );
    h.ok(&["start", &file]);
    for name in ["once", "clean"] {
        h.wait_ps(&format!("{name} ended"), SECS_10, |rows| {
            rows.iter()
                .any(|r| r["name"] == name && r["status"] == "stopped" && !r["last_exit"].is_null())
        });
    }
    let runs = |path: &std::path::Path| read_lines(path).len();
    assert_eq!((runs(&once), runs(&clean)), (1, 1));
    for how in ["kill", "down"] {
        h.ok(&[how]);
        h.ok(&["up"]);
        // A probe app started after the comeback: the restore (which would start the two
        // again) spawns before the daemon takes requests, so once the probe has run and
        // ended, a start of the two would have shown.
        let probe = h.path(&format!("probe-{how}"));
        let probe_file = h.app_file(
            &format!("probe-{how}.toml"),
            &format!(
                "[[app]]\nname = \"probe-{how}\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo run >> {}\"]\nrestart = \"never\"\n",
                probe.display()
            ),
        );
        h.ok(&["start", &probe_file]);
        h.wait_ps("the probe ended", SECS_10, |rows| {
            rows.iter().any(|r| {
                r["name"] == format!("probe-{how}").as_str()
                    && r["status"] == "stopped"
                    && !r["last_exit"].is_null()
            })
        });
        assert_eq!(runs(&probe), 1);
        assert_eq!(
            (runs(&once), runs(&clean)),
            (1, 1),
            "an app that had ended ran again after `herd {how}` and `herd up`"
        );
        for name in ["once", "clean"] {
            assert_eq!(
                h.instance(name, 0)["status"],
                "stopped",
                "{name} after {how}"
            );
        }
    }
    // Asked for, it runs again.
    h.ok(&["restart", "once"]);
    wait_until("once ran again", SECS_10, || runs(&once) == 2);
}

#[test]
fn down_stops_apps_and_up_brings_back_what_was_meant_to_run() {
    let h = Herd::up();
    let (a, b) = two_sleepers(&h);
    h.ok(&["start", "--name", "idle", "--", "sleep", "1000"]);
    h.wait_status("idle", 0, "running", SECS_10);
    h.ok(&["stop", "idle"]);
    h.ok(&["down"]);
    assert!(!alive(a) && !alive(b), "down left apps running");
    assert!(!h.path("daemon.pid").exists() && !h.path("daemon.sock").exists());
    h.ok(&["up"]);
    h.wait_status("a", 0, "running", SECS_10);
    h.wait_status("b", 0, "running", SECS_10);
    assert_eq!(
        h.instance("idle", 0)["status"],
        "stopped",
        "a stopped app came back"
    );
}

#[test]
fn down_keep_apps_leaves_them_for_the_next_daemon() {
    let h = Herd::up();
    let (a, b) = two_sleepers(&h);
    let out = h.ok(&["down", "--keep-apps"]);
    assert!(out.contains("2 instances left running"), "{out}");
    assert!(alive(a) && alive(b));
    h.ok(&["up"]);
    assert_eq!(pid_of(&h.instance("a", 0)), a);
    assert_eq!(pid_of(&h.instance("b", 0)), b);
}

#[test]
fn a_corrupt_state_file_falls_back_to_the_backup() {
    let h = Herd::up();
    two_sleepers(&h);
    h.ok(&["down"]);
    assert!(h.path("state.json.bak").exists());
    std::fs::write(h.path("state.json"), b"{\"version\": 1, \"apps\": [ trunc").unwrap();
    let out = h.run(&["up"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.json is unreadable") && err.contains("state.json.bak"),
        "{err}"
    );
    h.wait_status("a", 0, "running", SECS_10);
    h.wait_status("b", 0, "running", SECS_10);
}

#[test]
fn both_state_files_unreadable_refuses_to_start_and_names_them() {
    let h = Herd::new();
    std::fs::create_dir_all(h.home.path()).unwrap();
    std::fs::write(h.path("state.json"), b"nope").unwrap();
    std::fs::write(h.path("state.json.bak"), b"nope either").unwrap();
    let err = h.fails(&["up"]);
    assert!(
        err.contains("state.json (not valid state JSON")
            && err.contains("state.json.bak (not valid state JSON"),
        "{err}"
    );
    assert!(h.fails(&["ping"]).contains("not running"));
    assert_eq!(
        std::fs::read(h.path("state.json")).unwrap(),
        b"nope",
        "the bad file was touched"
    );
}

#[test]
fn state_write_failure_keeps_daemon_and_apps_alive() {
    let h = Herd::up();
    let (a, _) = two_sleepers(&h);
    // A directory where the temp file goes makes every write fail.
    std::fs::create_dir(h.path("state.json.tmp")).unwrap();
    // The change is made but not on disk: the request says so rather than claim success.
    let err = h.fails(&["start", "--name", "later", "--", "sleep", "1000"]);
    assert!(
        err.contains("state not saved") && err.contains("applied in memory"),
        "{err}"
    );
    h.wait_status("later", 0, "running", SECS_10);
    assert!(alive(a));
    let log = std::fs::read_to_string(h.path("daemon.log")).unwrap();
    assert!(log.contains("cannot write the state file"), "{log}");
    std::fs::remove_dir(h.path("state.json.tmp")).unwrap();
    wait_until(
        "the state to be written again",
        Duration::from_secs(5),
        || std::fs::read_to_string(h.path("state.json")).is_ok_and(|s| s.contains("\"later\"")),
    );
}

#[test]
fn daemon_log_is_rotated_under_its_own_cap() {
    let h = Herd::new();
    std::fs::create_dir_all(h.home.path()).unwrap();
    std::fs::write(
        h.path("config.toml"),
        "daemon_log_max_bytes = 4096\ndaemon_log_files = 3\n",
    )
    .unwrap();
    h.ok(&["up"]);
    let log = h.path("daemon.log");
    let rotated = |n: u32| h.path(&format!("daemon.log.{n}"));
    // Every start and delete logs a few lines: a few dozen fill 4 KiB twice.
    let churn = || {
        h.ok(&["start", "--name", "churn", "--", "sleep", "1000"]);
        h.ok(&["delete", "churn"]);
    };
    wait_until("daemon.log rotated twice", Duration::from_secs(60), || {
        churn();
        rotated(2).exists()
    });
    for _ in 0..20 {
        churn();
    }
    assert!(
        !rotated(3).exists(),
        "daemon_log_files = 3 keeps .1 and .2 only"
    );
    for n in [1, 2] {
        let len = std::fs::metadata(rotated(n)).unwrap().len();
        assert!(len <= 4096, "daemon.log.{n} is {len} bytes, over the cap");
    }
    // The daemon keeps writing to the live file after a rotation.
    let before = std::fs::metadata(&log).unwrap().len();
    wait_until("new lines in daemon.log", SECS_10, || {
        churn();
        std::fs::metadata(&log).is_ok_and(|m| m.len() != before)
    });
    h.ok(&["ping"]);
}

/// A process group of its own running `sleep`, and its start signature (`/proc` start time).
fn guarded_sleeper() -> (std::process::Child, u32, u64) {
    use std::os::unix::process::CommandExt;
    let child = Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    (child, pid, start)
}

/// Waits for `child` to end; how long that took.
fn time_to_exit(child: &mut std::process::Child, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < limit,
            "the guarded process still runs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[test]
fn the_lease_keeper_kills_a_guarded_group_when_the_lease_lapses_and_when_the_daemon_goes() {
    use std::io::Write;
    let mut keeper = Command::new(herd_bin())
        .arg("lease-keeper")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_keeper = keeper.stdin.take().unwrap();
    // Lapse: guarded under a 1.5 s lease, the group lives that long and not much longer.
    let (mut lapsing, pid, sig) = guarded_sleeper();
    writeln!(to_keeper, "lease 1500\nguard {pid} {sig}").unwrap();
    let lived = time_to_exit(&mut lapsing, SECS_10);
    assert!(
        lived >= Duration::from_millis(1_300) && lived < Duration::from_secs(3),
        "killed after {lived:?}, lease 1.5 s"
    );
    // A renewed lease keeps the next one alive; the daemon's end closing kills it at once.
    let (mut orphaned, pid, sig) = guarded_sleeper();
    writeln!(to_keeper, "lease 60000\nguard {pid} {sig}").unwrap();
    to_keeper.flush().unwrap();
    assert!(orphaned.try_wait().unwrap().is_none());
    drop(to_keeper);
    let lived = time_to_exit(&mut orphaned, SECS_10);
    assert!(lived < Duration::from_secs(2), "killed after {lived:?}");
    assert!(keeper.wait().unwrap().success());
    let mut said = String::new();
    std::io::Read::read_to_string(&mut keeper.stderr.take().unwrap(), &mut said).unwrap();
    assert!(
        said.contains("the lease lapsed: killed process group"),
        "{said}"
    );
    assert!(
        said.contains("the daemon is gone: killed process group"),
        "{said}"
    );
}
