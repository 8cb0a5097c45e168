//! Readiness from the app itself (`ready = "notify"`, issue 16): real python apps speaking
//! sd_notify on the socket herd gives each instance. `starting` until `READY=1`, `STATUS=` as
//! `status_text`, dependents and reloads wait for it, a watchdog restarts a silent app,
//! `MAINPID=` hands the instance to another process, and a datagram from outside the instance
//! is refused. Root is needed (CI runs as root) for the foreign-user sender.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

/// The app, by its first argument. Each waits for SIGUSR1 where it says `go()`, so a test
/// decides when a process becomes ready without sleeping on a guess.
const APP: &str = r#"
import os, signal, socket, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(m):
    s.sendto(m.encode(), os.environ["NOTIFY_SOCKET"])
def go():
    signal.sigwait([signal.SIGUSR1])
mode = sys.argv[1]
if mode == "ready":
    send("STATUS=hello\x1b[31m")
    go()
    send("READY=1")
elif mode == "watchdog":
    send("READY=1")
    for _ in range(3):
        time.sleep(0.3)
        send("WATCHDOG=1")
elif mode == "mainpid":
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(1)
    send("MAINPID=%d\nREADY=1" % child)
    go()
    os._exit(0)
while True:
    time.sleep(1)
"#;

/// An app file with one notifying app `name` in `mode`; `keys` are more keys.
fn notify_app(name: &str, mode: &str, keys: &str) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\ncommand = \"{PYTHON}\"\nargs = [\"-c\", '''{APP}''', \"{mode}\"]\nready = \"notify\"\ncwd = \"/\"\nstop_timeout_s = 2\n{keys}\n"
    )
}

fn events(h: &Herd, app: &str) -> Vec<Value> {
    h.ok(&["events", app, "--json", "--lines", "1000"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn usr1(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .expect("SIGUSR1 to the app");
}

/// One variable of a live process's environment.
fn env_of(pid: u32, var: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Polls `ps` for `dur` and insists that `pred` holds every time (an absence proven over a
/// while, not a sleep before a check).
fn holds_for(h: &Herd, what: &str, dur: Duration, pred: impl Fn(&[Value]) -> bool) {
    let end = std::time::Instant::now() + dur;
    while std::time::Instant::now() < end {
        let rows = h.ps();
        assert!(pred(&rows), "{what} no longer holds: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
}

#[test]
fn an_app_is_starting_until_it_sends_ready_and_its_status_text_shows() {
    let h = Herd::up();
    let file = h.app_file("apps.toml", &notify_app("web", "ready", ""));
    h.ok(&["start", &file]);
    let rows = h.wait_ps("web's STATUS=", SECS_10, |rows| {
        rows[0]["status_text"] == "hello[31m"
    });
    assert_eq!(rows[0]["status"], "starting", "{rows:?}");
    let pid = pid_of(&rows[0]);
    holds_for(&h, "web starting", Duration::from_millis(1500), |rows| {
        rows[0]["status"] == "starting"
    });
    usr1(pid);
    let rows = h.wait_ps("web running", SECS_10, |rows| {
        rows[0]["status"] == "running"
    });
    assert_eq!(pid_of(&rows[0]), pid);
    let inspect = h.json(&["inspect", "web", "--json"]);
    assert_eq!(inspect["instances"][0]["status_text"], "hello[31m");
    assert!(events(&h, "web").iter().any(|e| e["event"] == "ready"));
    // Its socket is its own, and goes with it.
    let socket = env_of(pid, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    assert!(std::path::Path::new(&socket).exists());
    h.ok(&["stop", "web"]);
    wait_until("the socket removed", SECS_10, || {
        !std::path::Path::new(&socket).exists()
    });
}

#[test]
fn a_dependent_starts_only_once_its_notifying_dependency_is_ready() {
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        &format!(
            "{}\n[[app]]\nname = \"api\"\ncommand = \"sleep\"\nargs = [\"600\"]\ndepends_on = [\"db\"]\n",
            notify_app("db", "ready", "")
        ),
    );
    h.ok(&["start", &file]);
    let rows = h.wait_ps("db spawned", SECS_10, |rows| {
        row(rows, "db")["pid"].is_u64() && row(rows, "db")["status_text"] == "hello[31m"
    });
    let db = pid_of(row(&rows, "db"));
    holds_for(&h, "api waiting", Duration::from_millis(1000), |rows| {
        row(rows, "db")["status"] == "starting"
            && row(rows, "api")["status"] == "starting"
            && row(rows, "api")["pid"].is_null()
    });
    usr1(db);
    h.wait_ps("api running", SECS_10, |rows| {
        row(rows, "db")["status"] == "running"
            && row(rows, "api")["status"] == "running"
            && row(rows, "api")["pid"].is_u64()
    });
}

#[test]
fn a_reload_keeps_the_old_process_until_the_new_one_is_ready() {
    let h = Herd::up();
    let file = h.app_file("apps.toml", &notify_app("web", "ready", ""));
    h.ok(&["start", &file]);
    // STATUS= comes once the app waits for SIGUSR1 (before, the signal would end it).
    let rows = h.wait_ps("web spawned", SECS_10, |rows| {
        rows[0]["status_text"] == "hello[31m"
    });
    let old = pid_of(&rows[0]);
    usr1(old);
    h.wait_ps("web running", SECS_10, |rows| {
        rows[0]["status"] == "running"
    });

    let reload = std::thread::spawn({
        let cmd = h.cmd(&["reload", "web"]);
        move || {
            let mut cmd = cmd;
            cmd.output().expect("herd reload")
        }
    });
    let rows = h.wait_ps("the new process spawned", SECS_10, |rows| {
        rows[0]["retiring_pid"] == old
            && rows[0]["pid"].is_u64()
            && pid_of(&rows[0]) != old
            && rows[0]["status_text"] == "hello[31m"
    });
    let new = pid_of(&rows[0]);
    holds_for(
        &h,
        "old kept while new not ready",
        Duration::from_millis(1500),
        |rows| rows[0]["status"] == "starting" && rows[0]["retiring_pid"] == old,
    );
    assert!(
        alive(old),
        "the old process was stopped before the new one was ready"
    );
    assert!(!reload.is_finished(), "the reload finished without READY=1");
    usr1(new);
    // Retired as soon as the new one is ready (not after a fixed wait).
    let ready_at = std::time::Instant::now();
    let out = reload.join().unwrap();
    assert!(
        ready_at.elapsed() < Duration::from_secs(5),
        "the reload took {:?} after READY=1",
        ready_at.elapsed()
    );
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the old process stopped", SECS_10, || !alive(old));
    let rows = h.ps();
    assert_eq!(
        (pid_of(&rows[0]), &rows[0]["status"]),
        (new, &"running".into())
    );
    assert!(rows[0]["retiring_pid"].is_null());
}

#[test]
fn an_app_that_stops_pinging_its_watchdog_is_restarted_with_reason_watchdog() {
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        &notify_app("web", "watchdog", "watchdog_s = 1"),
    );
    h.ok(&["start", &file]);
    let rows = h.wait_ps("web running", SECS_10, |rows| {
        rows[0]["status"] == "running"
    });
    let first = pid_of(&rows[0]);
    assert_eq!(env_of(first, "WATCHDOG_USEC").as_deref(), Some("1000000"));
    assert_eq!(env_of(first, "WATCHDOG_PID"), Some(first.to_string()));
    // Three pings 0.3 s apart, then silence: restarted about a second after the last one.
    let rows = h.wait_ps("web restarted", Duration::from_secs(15), |rows| {
        rows[0]["restarts"].as_u64() >= Some(1)
    });
    assert_eq!(rows[0]["last_exit"]["reason"], "watchdog", "{rows:?}");
    let ev = events(&h, "web");
    let watchdog = ev
        .iter()
        .position(|e| e["event"] == "watchdog" && e["timeout_s"] == 1)
        .expect("a watchdog event");
    let ready = ev
        .iter()
        .position(|e| e["event"] == "ready")
        .expect("a ready event");
    assert!(ready < watchdog);
    // The watchdog fired about a second after the last of the three pings, not before.
    let ms = |i: usize| ev[i]["ts_ms"].as_u64().unwrap();
    assert!(ms(watchdog) - ms(ready) >= 1800, "{ev:?}");
    assert!(
        ev[watchdog..].iter().any(|e| e["event"] == "restarting"),
        "{ev:?}"
    );
    assert!(!alive(first));
}

#[test]
fn datagrams_from_outside_the_instance_are_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test sends as another user and needs root (CI runs as root)"
    );
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        &format!(
            "{}\n{}",
            notify_app("web", "ready", ""),
            notify_app("www", "ready", "user = \"nobody\"")
        ),
    );
    h.ok(&["start", &file]);
    let rows = h.wait_ps("both spawned", SECS_10, |rows| {
        rows.len() == 2 && rows.iter().all(|r| r["status_text"] == "hello[31m")
    });
    let (web, www) = (pid_of(row(&rows, "web")), pid_of(row(&rows, "www")));
    let web_socket = env_of(web, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    let www_socket = env_of(www, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    assert_ne!(web_socket, www_socket, "one socket per instance");

    let send_as_nobody = |socket: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", PYTHON, "-c"])
            .arg("import socket, sys\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ntry:\n    s.sendto(b'READY=1', sys.argv[1]); print('sent')\nexcept OSError as e:\n    print('refused', e.errno)\n")
            .arg(socket)
            .output()
            .expect("setpriv")
    };
    // Another user cannot even send to a root app's socket (0600, the app's user's).
    let out = send_as_nobody(&web_socket);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused 13",
        "{out:?}"
    );
    // The app's own user, from a process outside the instance: sent, and refused by herd.
    let out = send_as_nobody(&www_socket);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent",
        "{out:?}"
    );
    let me = UnixDatagram::unbound().unwrap();
    me.send_to(b"READY=1\nSTATUS=forged", &web_socket)
        .expect("root may send");
    holds_for(
        &h,
        "both still starting",
        Duration::from_millis(1500),
        |rows| {
            rows.iter()
                .all(|r| r["status"] == "starting" && r["status_text"] == "hello[31m")
        },
    );
    // The instances themselves are heard.
    usr1(web);
    usr1(www);
    h.wait_ps("both running", SECS_10, |rows| {
        rows.iter().all(|r| r["status"] == "running")
    });
    let log = std::fs::read_to_string(h.path("daemon.log")).unwrap_or_default();
    assert!(log.contains("not the instance's; refused"), "{log}");
}

#[test]
fn mainpid_hands_the_instance_to_the_named_process() {
    let h = Herd::up();
    let file = h.app_file("apps.toml", &notify_app("web", "mainpid", ""));
    h.ok(&["start", &file]);
    let rows = h.wait_ps("web running on its MAINPID", SECS_10, |rows| {
        rows[0]["status"] == "running" && rows[0]["main_pid"].is_u64()
    });
    let child = rows[0]["main_pid"].as_u64().unwrap() as u32;
    assert_eq!(pid_of(&rows[0]), child, "ps shows the main process");
    // The original process leads the group the child is in (`pgrp`, field 5 of stat).
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
    let leader: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(leader, child);
    // The original process exits: the instance lives on in its main process.
    usr1(leader);
    wait_until("the original process gone", SECS_10, || !alive(leader));
    holds_for(&h, "web running", Duration::from_millis(1000), |rows| {
        rows[0]["status"] == "running" && rows[0]["restarts"] == 0 && pid_of(&rows[0]) == child
    });
    // A daemon restart adopts the instance through its main process (its leader is gone).
    h.ok(&["kill"]);
    h.ok(&["up"]);
    let rows = h.wait_ps("web adopted", SECS_10, |rows| rows[0]["pid"].is_u64());
    assert_eq!(
        (pid_of(&rows[0]), &rows[0]["status"], &rows[0]["restarts"]),
        (child, &"running".into(), &0.into()),
        "{rows:?}"
    );
    // The main process dies: that is the instance's exit.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let rows = h.wait_ps("web restarted", Duration::from_secs(15), |rows| {
        rows[0]["restarts"] == 1 && rows[0]["pid"].is_u64() && pid_of(&rows[0]) != child
    });
    assert!(
        rows[0]["last_exit"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("MAINPID")
    );
    assert!(
        events(&h, "web")
            .iter()
            .any(|e| e["event"] == "main_pid" && e["main_pid"] == child)
    );
}

#[test]
fn an_adopted_notifying_instance_is_heard_by_the_next_daemon() {
    let h = Herd::up();
    let file = h.app_file("apps.toml", &notify_app("web", "ready", ""));
    h.ok(&["start", &file]);
    let rows = h.wait_ps("web spawned", SECS_10, |rows| {
        rows[0]["status_text"] == "hello[31m"
    });
    let pid = pid_of(&rows[0]);
    h.ok(&["kill"]);
    h.ok(&["up"]);
    let rows = h.wait_ps("web adopted", SECS_10, |rows| rows[0]["pid"].is_u64());
    assert_eq!(
        (pid_of(&rows[0]), &rows[0]["status"]),
        (pid, &"starting".into())
    );
    usr1(pid);
    h.wait_ps("web running", SECS_10, |rows| {
        rows[0]["status"] == "running"
    });
}
