//! herd runs as root, so its apps are untrusted and so is anything they (or another local
//! user) can write: an app never sees the daemon's credentials, a process that merely claims
//! to be an instance is never adopted, `state.json` is checked like an app file, and no
//! user-supplied number can panic a task, fork-loop the host or sneak a NUL byte to exec.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon's environment in these tests: every secret and piece of plumbing herd may
/// be given, none of which an app may see.
const DAEMON_SECRETS: [(&str, &str); 9] = [
    ("HERD_API_TOKEN", "api-token-secret-0123456789abcdef"),
    ("HERD_TOKEN", "cli-token-secret"),
    ("HERD_CLUSTER_SECRET", "cluster-secret"),
    ("HERD_REDIS_PASSWORD", "redis-password"),
    ("HERD_SOME_FUTURE_SECRET", "future"),
    ("NOTIFY_SOCKET", "/run/systemd/notify"),
    ("WATCHDOG_USEC", "1000000"),
    ("LISTEN_FDS", "2"),
    ("LISTEN_PID", "1"),
];

fn up_with_secrets(extra: &[(&str, &str)]) -> Herd {
    let h = Herd::new();
    // HERD_API_TOKEN turns the TCP API on: on a port of its own, not the default 9700.
    std::fs::write(
        h.path("config.toml"),
        format!("[api]\nlisten = \"127.0.0.1:{}\"\n", free_port()),
    )
    .unwrap();
    let mut up = h.cmd(&["up"]);
    up.envs(DAEMON_SECRETS).envs(extra.iter().copied());
    let out = up.output().expect("run herd up");
    assert!(
        out.status.success(),
        "herd up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h
}

/// Starts `name` whose process writes its environment to a file, and returns it parsed.
fn env_of_app(h: &Herd, name: &str, extra_keys: &str) -> BTreeMap<String, String> {
    let out = h.path(&format!("{name}.env"));
    let file = h.app_file(
        &format!("{name}.toml"),
        &format!(
            "[[app]]\nname = \"{name}\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"env > {tmp}; mv {tmp} {out}; exec sleep 1000\"]\n{extra_keys}\n",
            tmp = h.path(&format!("{name}.env.tmp")).display(),
            out = out.display(),
        ),
    );
    h.ok(&["start", &file]);
    wait_until("the app wrote its environment", SECS_10, || out.exists());
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_apps_environment_holds_none_of_the_daemons_secrets() {
    let h = up_with_secrets(&[("KEEP_ME", "yes")]);
    let env = env_of_app(&h, "web", "");
    for (k, _) in DAEMON_SECRETS {
        assert!(!env.contains_key(k), "the app sees {k}: {env:?}");
    }
    assert!(
        !env.values().any(|v| v.contains("secret")),
        "a secret value leaked: {env:?}"
    );
    // What herd sets for the instance, and the rest of the daemon's environment, remain.
    assert_eq!(env.get("HERD_APP").map(String::as_str), Some("web"));
    assert_eq!(env.get("HERD_SLOT").map(String::as_str), Some("0"));
    assert_eq!(env.get("HERD_INSTANCE").map(String::as_str), Some("0"));
    assert_eq!(
        env.get("HERD_HOME").map(String::as_str),
        Some(h.home.path().to_str().unwrap())
    );
    assert_eq!(env.get("KEEP_ME").map(String::as_str), Some("yes"));
}

#[test]
fn env_clear_gives_only_path_home_lang_the_allowed_and_the_apps_own() {
    let h = up_with_secrets(&[
        ("KEEP_ME", "no"),
        ("ALLOWED_ONE", "1"),
        ("ALLOWED_TWO", "2"),
    ]);
    let env = env_of_app(
        &h,
        "clean",
        "env_clear = true\nenv_allow = [\"ALLOWED_*\", \"HERD_*\"]\nenv = { MINE = \"m\" }",
    );
    let expected = [
        "PATH",
        "HOME",
        "LANG",
        "ALLOWED_ONE",
        "ALLOWED_TWO",
        "MINE",
        "HERD_APP",
        "HERD_SLOT",
        "HERD_INSTANCE",
        "HERD_HOME",
        "HERD_MARKER",
    ];
    // What the shell adds by itself.
    let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
    for k in env.keys() {
        assert!(
            expected.contains(&k.as_str()) || shell.contains(&k.as_str()),
            "unexpected variable {k} with env_clear: {env:?}"
        );
    }
    for k in expected {
        assert!(env.contains_key(k), "{k} missing: {env:?}");
    }
    assert_eq!(env["MINE"], "m");
    // `HERD_*` in env_allow cannot let the daemon's own variables through.
    assert!(!env.contains_key("HERD_API_TOKEN"), "{env:?}");
    // `herd inspect` shows the keys.
    let spec = h.ok(&["inspect", "clean", "--json"]);
    assert!(
        spec.contains("env_clear") && spec.contains("ALLOWED_*"),
        "{spec}"
    );
    // A bad pattern is refused naming the app and the key.
    let bad = h.app_file(
        "bad.toml",
        "[[app]]\nname = \"bad\"\ncommand = \"true\"\nenv_clear = true\nenv_allow = [\"A*B\"]\n",
    );
    let err = h.fails(&["start", &bad]);
    assert!(
        err.contains("app `bad`") && err.contains("key `env_allow`"),
        "{err}"
    );
}

/// Runs `sleep` as the leader of its own process group, posing as instance `slot` of `app`
/// of `h`'s home; `user` runs it as nobody; `marker` forges `HERD_MARKER`.
fn impostor(h: &Herd, app: &str, slot: u32, nobody: bool, marker: Option<&str>) -> Child {
    let mut cmd = if nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "1000",
        ]);
        c
    } else {
        let mut c = Command::new("sleep");
        c.arg("1000");
        c
    };
    cmd.env("HERD_HOME", h.home.path())
        .env("HERD_APP", app)
        .env("HERD_SLOT", slot.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(m) = marker {
        cmd.env("HERD_MARKER", m);
    }
    let child = cmd.spawn().expect("spawn the impostor");
    // setpriv execs sleep in place: wait until the uid switch is done.
    let pid = child.id();
    wait_until("the impostor runs sleep", SECS_10, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    child
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Kills the daemon and `app`'s instances, starts the impostors, brings the daemon back,
/// and checks that each slot runs a new process of root's, the impostors untouched.
fn impostors_are_not_adopted(instances: u32, make: impl Fn(&Herd) -> Vec<Child>) {
    let h = Herd::up();
    let file = h.app_file(
        "web.toml",
        &format!(
            "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = {instances}\n"
        ),
    );
    h.ok(&["start", &file]);
    let real: Vec<u32> = (0..instances)
        .map(|i| pid_of(&h.wait_status("web", u64::from(i), "running", SECS_10)))
        .collect();
    h.ok(&["kill"]);
    for pid in &real {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_until("the real instances gone", SECS_10, || {
        real.iter().all(|p| !alive(*p))
    });
    let mut fakes = make(&h);
    h.ok(&["up"]);
    let fake_pids: Vec<u32> = fakes.iter().map(Child::id).collect();
    for i in 0..instances {
        let row = h.wait_status("web", u64::from(i), "running", SECS_10);
        let pid = pid_of(&row);
        assert!(
            !fake_pids.contains(&pid),
            "web@{i} adopted the impostor {pid}: {row}"
        );
        assert_eq!(uid_of(pid), 0, "web@{i} runs as another user");
    }
    // Left alone: neither adopted nor killed.
    for (f, pid) in fakes.iter_mut().zip(&fake_pids) {
        assert!(
            f.try_wait().unwrap().is_none() && alive(*pid),
            "the impostor {pid} was killed"
        );
    }
    let log = std::fs::read_to_string(h.path("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("not adopting a process that claims to be an instance"),
        "{log}"
    );
    for mut f in fakes {
        let _ = f.kill();
        let _ = f.wait();
    }
}

#[test]
fn a_process_of_nobody_with_forged_variables_is_not_adopted() {
    impostors_are_not_adopted(1, |h| {
        // Even a guess at the marker's variable does not help.
        vec![impostor(
            h,
            "web",
            0,
            true,
            Some("00000000000000000000000000000000"),
        )]
    });
}

#[test]
fn a_root_group_leader_without_the_right_marker_is_not_adopted() {
    impostors_are_not_adopted(2, |h| {
        vec![
            impostor(h, "web", 0, false, None),
            impostor(h, "web", 1, false, Some("0123456789abcdef0123456789abcdef")),
        ]
    });
}

/// The state file's pid and start signature are proof enough: no other process can have
/// both. An app that drops its privileges itself (exec'd through `setpriv`) keeps its pid
/// and signature under another uid, and must be adopted, not started a second time.
#[test]
fn an_app_that_drops_privileges_itself_is_adopted_from_the_state_file() {
    let h = Herd::up();
    let file = h.app_file(
        "drop.toml",
        "[[app]]\nname = \"drop\"\ncommand = \"setpriv\"\nargs = [\"--reuid=65534\", \"--regid=65534\", \"--clear-groups\", \"--\", \"sleep\", \"1000\"]\n",
    );
    h.ok(&["start", &file]);
    let pid = pid_of(&h.wait_status("drop", 0, "running", SECS_10));
    wait_until("the app to run as nobody", SECS_10, || uid_of(pid) == 65534);
    h.ok(&["kill"]);
    h.ok(&["up"]);
    let row = h.wait_status("drop", 0, "running", SECS_10);
    assert_eq!(pid_of(&row), pid, "not adopted: {row}");
    let copies = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v == format!("HERD_HOME={}", h.home.path().display()).as_bytes())
            }) && std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep\0"))
        })
        .count();
    assert_eq!(copies, 1, "the app runs {copies} times");
    h.ok(&["stop", "drop", "--timeout", "2"]);
    wait_until("the app stopped", SECS_10, || !alive(pid));
}

/// Runs herd in the background (a stop that may wait a long time).
fn spawn_herd(h: &Herd, args: &[&str]) -> Child {
    h.cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herd")
}

/// Waits for a background herd to exit (killing it after `timeout`); `succeeds`: and
/// insists that it succeeded.
fn returns(mut child: Child, what: &str, timeout: Duration, succeeds: bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!succeeds || status.success(), "{what} failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not return within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stop_timeout_beyond_a_hundred_years_is_refused_naming_the_key() {
    let h = Herd::up();
    let absurd = h.app_file(
        "absurd.toml",
        "[[app]]\nname = \"absurd\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nstop_timeout_s = 9223372036854775807\n",
    );
    let err = h.fails(&["start", &absurd]);
    assert!(
        err.contains("app `absurd`") && err.contains("key `stop_timeout_s`"),
        "{err}"
    );
}

#[test]
fn huge_stop_timeouts_neither_panic_nor_wedge_a_stop() {
    let h = Herd::up();
    // 95 years (allowed), and an app that ignores SIGTERM.
    let file = h.app_file(
        "stubborn.toml",
        "[[app]]\nname = \"stubborn\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; while :; do sleep 0.2; done\"]\nstop_timeout_s = 3000000000\n",
    );
    h.ok(&["start", &file]);
    let pid = pid_of(&h.wait_status("stubborn", 0, "running", SECS_10));

    // `--timeout` of u64::MAX seconds: the stop waits (the app ignores SIGTERM) ...
    let long = spawn_herd(
        &h,
        &["stop", "stubborn", "--timeout", &u64::MAX.to_string()],
    );
    h.wait_status("stubborn", 0, "stopping", SECS_10);
    // ... and a later stop with a short timeout brings the SIGKILL forward; both return.
    let short = spawn_herd(&h, &["stop", "stubborn", "--timeout", "1"]);
    returns(short, "herd stop --timeout 1", SECS_10, true);
    returns(long, "herd stop --timeout u64::MAX", SECS_10, true);
    assert_eq!(h.instance("stubborn", 0)["status"], "stopped");
    assert!(!group_alive(pid));

    // The spec's own 95 years, then `delete --timeout 1`.
    h.ok(&["start", "stubborn"]);
    let pid = pid_of(&h.wait_status("stubborn", 0, "running", SECS_10));
    let long = spawn_herd(&h, &["stop", "stubborn"]);
    h.wait_status("stubborn", 0, "stopping", SECS_10);
    let delete = spawn_herd(&h, &["delete", "stubborn", "--timeout", "1"]);
    returns(delete, "herd delete --timeout 1", SECS_10, true);
    // It may answer that the app is gone by then: what matters is that it returns.
    returns(long, "herd stop (spec timeout)", SECS_10, false);
    assert!(!group_alive(pid));
    assert!(h.ps().is_empty());
}

#[test]
fn a_crash_loop_at_zero_backoff_is_held_to_ten_starts_a_second() {
    let h = Herd::up();
    let starts = h.path("starts");
    let file = h.app_file(
        "loop.toml",
        &format!(
            "[[app]]\nname = \"loop\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"echo x >> {}\"]\nrestart = \"always\"\nbackoff_initial_ms = 0\nbackoff_max_ms = 0\nrestart_window_s = 0\n",
            starts.display()
        ),
    );
    h.ok(&["start", &file]);
    let count = || read_lines(&starts).len();
    // The first 50 starts are a burst allowed at once; measure after it.
    wait_until("the burst spent", Duration::from_secs(30), || count() >= 60);
    let (c0, t0) = (count(), Instant::now());
    // A measurement window, not a synchronisation: count what happens in it.
    std::thread::sleep(Duration::from_secs(2));
    let (c1, elapsed) = (count(), t0.elapsed());
    let spawns = c1 - c0;
    // One start per 100 ms at most: elapsed / 100 ms (+1 for the edges), with a margin.
    let bound = (elapsed.as_millis() / 100) as usize + 3;
    assert!(
        spawns <= bound,
        "{spawns} spawns in {elapsed:?} (bound {bound}): the start-rate limit is not held"
    );
    assert!(spawns >= 2, "the app stopped restarting: {spawns} spawns");
    h.ok(&["stop", "loop"]);
}

#[test]
fn nul_bytes_in_args_env_or_command_are_refused_naming_the_key() {
    let h = Herd::up();
    for (key, line) in [
        ("args", "command = \"echo\"\nargs = [\"a\\u0000b\"]"),
        ("env", "command = \"echo\"\nenv = { A = \"x\\u0000y\" }"),
        ("command", "command = \"ec\\u0000ho\""),
        ("cwd", "command = \"echo\"\ncwd = \"/tm\\u0000p\""),
    ] {
        let file = h.app_file("nul.toml", &format!("[[app]]\nname = \"nul\"\n{line}\n"));
        let err = h.fails(&["start", &file]);
        assert!(
            err.contains("app `nul`")
                && err.contains(&format!("key `{key}`"))
                && err.contains("NUL"),
            "{key}: {err}"
        );
    }
    assert!(h.ps().is_empty());
}

/// A state written by a daemon that ran `web`, with the daemon down.
fn home_with_state() -> (Herd, serde_json::Value) {
    let h = Herd::up();
    let file = h.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    h.ok(&["start", &file]);
    h.wait_status("web", 0, "running", SECS_10);
    h.ok(&["down", "--timeout", "1"]);
    let text = std::fs::read_to_string(h.path("state.json")).unwrap();
    (h, serde_json::from_str(&text).unwrap())
}

#[test]
fn absurd_state_values_fall_back_to_the_backup() {
    let (h, mut state) = home_with_state();
    // A good backup, and a primary asking for 4294967295 instances.
    std::fs::write(h.path("state.json.bak"), state.to_string()).unwrap();
    state["apps"][0]["spec"]["instances"] = serde_json::json!(4_294_967_295u64);
    std::fs::write(h.path("state.json"), state.to_string()).unwrap();
    let out = h.cmd(&["up"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herd up: {stderr}");
    assert!(
        stderr.contains("key `instances`") && stderr.contains("state.json.bak"),
        "{stderr}"
    );
    h.wait_status("web", 0, "running", SECS_10);
    assert_eq!(h.ps().len(), 1);
}

#[test]
fn a_state_from_a_newer_herd_is_refused_and_left_as_it_is() {
    let (h, mut state) = home_with_state();
    std::fs::write(h.path("state.json.bak"), state.to_string()).unwrap();
    state["version"] = serde_json::json!(99);
    state["apps"][0]["spec"]["some_future_key"] = serde_json::json!(true);
    let text = state.to_string();
    std::fs::write(h.path("state.json"), &text).unwrap();
    let err = h.fails(&["up"]);
    assert!(err.contains("written by a newer herd"), "{err}");
    assert_eq!(std::fs::read_to_string(h.path("state.json")).unwrap(), text);
    h.fails(&["ps"]);
}
