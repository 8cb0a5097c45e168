//! herd under systemd. This machine runs no systemd, so the daemon talks to a fake notify
//! socket: a Unix datagram socket the test binds and hands over as NOTIFY_SOCKET, as systemd
//! does for a `Type=notify` unit. The daemon runs as the unit runs it: `herd up --foreground`.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the fake systemd heard: each datagram's lines, with when it came.
struct FakeSystemd {
    socket: UnixDatagram,
    heard: Vec<(Instant, String)>,
}

impl FakeSystemd {
    fn bind(h: &Herd) -> Self {
        let socket = UnixDatagram::bind(h.path("notify.sock")).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Self {
            socket,
            heard: Vec::new(),
        }
    }

    /// Reads until `line` arrives (returns its time) or `timeout` passes (None).
    fn until(&mut self, line: &str, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let now = Instant::now();
            let mut found = false;
            for l in String::from_utf8_lossy(&buf[..n]).lines() {
                found |= l == line;
                self.heard.push((now, l.to_string()));
            }
            if found {
                return Some(now);
            }
        }
        None
    }

    /// Everything that arrives within `d`.
    fn drain_for(&mut self, d: Duration) {
        self.until("\0never", d);
    }

    fn count(&self, line: &str, after: Instant) -> usize {
        self.heard
            .iter()
            .filter(|(t, l)| *t >= after && l == line)
            .count()
    }

    fn statuses(&self) -> Vec<&str> {
        self.heard
            .iter()
            .filter_map(|(_, l)| l.strip_prefix("STATUS="))
            .collect()
    }
}

/// The daemon as the unit starts it, with systemd's variables. `sh -c 'exec'` so that
/// WATCHDOG_PID can name the daemon's own pid (the shell's `$$` becomes herd's).
fn daemon_under_systemd(h: &Herd, watchdog_pid: &str) -> Child {
    let log = std::fs::File::create(h.path("daemon.log")).unwrap();
    let script =
        format!("WATCHDOG_PID={watchdog_pid}; export WATCHDOG_PID; exec \"$0\" up --foreground");
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script, herd_bin()]);
    // The harness's environment for herd (its home, no HTTP server).
    for (k, v) in h.cmd(&[]).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("NOTIFY_SOCKET", h.path("notify.sock"))
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start the daemon")
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn under_systemd_the_daemon_is_ready_once_it_answers_then_reports_pings_and_stops() {
    let h = Herd::up();
    h.ok(&["start", "--name", "kept", "--", "sleep", "1000"]);
    let kept = pid_of(&h.wait_status("kept", 0, "running", SECS_10));
    // The daemon goes, the app stays: the daemon under systemd must adopt it before READY.
    h.ok(&["kill"]);

    let mut systemd = FakeSystemd::bind(&h);
    let mut daemon = daemon_under_systemd(&h, "$$");
    let ready = systemd
        .until("READY=1", SECS_10)
        .expect("no READY=1 from the daemon");
    // At READY the socket answers and the app that outlived the old daemon is adopted.
    let row = h.instance("kept", 0);
    assert_eq!(row["status"], "running", "{row}");
    assert_eq!(pid_of(&row), kept, "not adopted: {row}");
    assert_eq!(h.daemon_pid(), Some(daemon.id()));
    assert!(
        systemd
            .heard
            .iter()
            .all(|(t, l)| *t == ready || l == "WATCHDOG=1"),
        "only watchdog pings may come before READY=1: {:?}",
        systemd.heard
    );
    assert_eq!(systemd.statuses(), ["1 app, 1 instance running"]);

    // An app this daemon starts inherits none of systemd's plumbing.
    h.ok(&["start", "--name", "fresh", "--", "sleep", "1000"]);
    let fresh = pid_of(&h.wait_status("fresh", 0, "running", SECS_10));
    let env = environ(fresh);
    assert!(env.iter().any(|v| v == "HERD_APP=fresh"), "{env:?}");
    for v in &env {
        assert!(
            !v.starts_with("NOTIFY_SOCKET=") && !v.starts_with("WATCHDOG_"),
            "the app inherited {v}"
        );
    }

    // WATCHDOG_USEC=400000: a ping every 200 ms, so 7 or so in 1.5 s.
    let window = Instant::now();
    systemd.drain_for(Duration::from_millis(1500));
    let pings = systemd.count("WATCHDOG=1", window);
    assert!((3..=12).contains(&pings), "{pings} watchdog pings in 1.5 s");
    // The status follows the counts (looked at every 2 s).
    systemd.drain_for(Duration::from_millis(2500));
    assert!(
        systemd.statuses().contains(&"2 apps, 2 instances running"),
        "{:?}",
        systemd.statuses()
    );
    assert_eq!(systemd.count("STOPPING=1", ready), 0);

    let asked = Instant::now();
    h.ok(&["down"]);
    let stopping = systemd
        .until("STOPPING=1", SECS_10)
        .expect("no STOPPING=1 on herd down");
    assert!(stopping >= asked);
    assert!(wait_exit(&mut daemon, SECS_10).success());
    assert!(!alive(kept) && !alive(fresh));
}

#[test]
fn a_watchdog_meant_for_another_pid_is_not_pinged() {
    let h = Herd::new();
    let mut systemd = FakeSystemd::bind(&h);
    // Pid 1 is not the daemon: the watchdog is someone else's (sd_watchdog_enabled(3)).
    let mut daemon = daemon_under_systemd(&h, "1");
    let ready = systemd
        .until("READY=1", SECS_10)
        .expect("no READY=1 from the daemon");
    systemd.drain_for(Duration::from_millis(1500));
    assert_eq!(systemd.count("WATCHDOG=1", ready), 0, "{:?}", systemd.heard);
    assert_eq!(systemd.statuses(), ["0 apps, 0 instances running"]);
    // SIGTERM, as `systemctl stop` sends after ExecStop: STOPPING=1 too.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(systemd.until("STOPPING=1", SECS_10).is_some());
    assert!(wait_exit(&mut daemon, SECS_10).success());
}

#[test]
fn a_background_daemon_does_not_speak_for_the_unit_that_ran_herd_up() {
    // `herd up` detaches: its daemon is not the unit's main process, and with the default
    // NotifyAccess=main systemd would drop (and log) whatever it sent.
    let h = Herd::new();
    let mut systemd = FakeSystemd::bind(&h);
    let out = h
        .cmd(&["up"])
        .env("NOTIFY_SOCKET", h.path("notify.sock"))
        .env("WATCHDOG_USEC", "400000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = h.daemon_pid().expect("a daemon");
    assert!(alive(pid));
    systemd.drain_for(Duration::from_millis(1000));
    assert!(systemd.heard.is_empty(), "{:?}", systemd.heard);
}

#[test]
fn startup_print_shows_the_notify_unit_with_this_binary_and_home() {
    let h = Herd::new();
    let unit = h.ok(&["startup", "--print"]);
    let bin = std::fs::canonicalize(herd_bin()).unwrap();
    for line in [
        "Type=notify".to_string(),
        format!("ExecStart={} up --foreground", bin.display()),
        format!("ExecStop={} down", bin.display()),
        format!("Environment=HERD_HOME={}", h.home.path().display()),
        "WatchdogSec=30".into(),
        "KillMode=process".into(),
        "Delegate=yes".into(),
        "Restart=on-failure".into(),
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in:\n{unit}");
    }
    assert!(!unit.lines().any(|l| l.starts_with("User=")), "{unit}");
    let as_nobody = h.ok(&["startup", "--user", "nobody", "--print"]);
    assert!(as_nobody.lines().any(|l| l == "User=nobody"), "{as_nobody}");
    let err = h.fails(&["startup", "--user", "no-such-user-here", "--print"]);
    assert!(err.contains("does not exist"), "{err}");

    // The unit as installed passes systemd's own check, where systemd's tools are here.
    let has_analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_analyze {
        eprintln!("systemd-analyze is not installed: `verify` of the unit skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herd.service");
    std::fs::write(&file, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn startup_without_systemd_prints_the_unit_and_says_what_to_do() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("this host runs systemd: `herd startup` would install the unit; skipped");
        return;
    }
    let h = Herd::new();
    let out = h.cmd(&["startup"]).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.lines().any(|l| l == "Type=notify"), "{stdout}");
    assert!(stderr.contains("does not run systemd"), "{stderr}");
    assert!(stderr.contains("systemctl enable --now herd"), "{stderr}");
    // Nothing was installed, and no daemon was needed or started.
    assert!(h.daemon_pid().is_none());
}
