//! Hooks end to end: the real daemon, real crashing apps, a real HTTP receiver on loopback
//! and real hook programs. Retries, dead letters and replay, deliveries that outlive a
//! SIGKILLed daemon, an exec hook's environment, config errors at reload, and a slow hook
//! that holds up nothing else.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tiny HTTP server on 127.0.0.1: answers each POST with the status `answer(n)` gives for
/// the n-th request (0-based) and keeps every request's status and JSON body.
struct Receiver {
    got: Arc<Mutex<Vec<(u16, Value)>>>,
    port: u16,
}

impl Receiver {
    fn start(port: u16, answer: impl Fn(usize) -> u16 + Send + 'static) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
        let seen = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let Some(body) = read_request(&mut s) else {
                    continue;
                };
                let mut seen = seen.lock().unwrap();
                let code = answer(seen.len());
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.push((code, json));
                drop(seen);
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
                );
            }
        });
        Self { got, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/herd", self.port)
    }

    fn requests(&self) -> Vec<(u16, Value)> {
        self.got.lock().unwrap().clone()
    }

    fn successes(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|(c, _)| *c == 200)
            .map(|(_, v)| v)
            .collect()
    }
}

fn read_request(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + len].to_vec())
}

/// A webhook hook on `kinds` with quick retries.
fn webhook(name: &str, url: &str, kinds: &str, retries: u32) -> String {
    format!(
        "[[hook]]\nname = \"{name}\"\non = [{kinds}]\nwebhook = \"{url}\"\nretries = {retries}\ntimeout_s = 5\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n"
    )
}

/// A daemon whose config.toml is `config`.
fn daemon(config: &str) -> Herd {
    let h = Herd::new();
    std::fs::write(h.path("config.toml"), config).unwrap();
    h.ok(&["up"]);
    h
}

/// Starts an app that prints two lines and exits 3: it ends `crashed` after one restart,
/// or, with `restart = "never"`, just `exited` once.
fn crash_app(h: &Herd, name: &str, restart: &str) {
    let file = h.app_file(
        &format!("{name}.toml"),
        &format!(
            r#"
[[app]]
name = "{name}"
command = "sh"
args = ["-c", "echo first line; echo boom; exit 3"]
restart = "{restart}"
backoff_initial_ms = 50
backoff_max_ms = 50
max_restarts = 1
restart_window_s = 60
"#
        ),
    );
    h.ok(&["start", &file]);
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn hook_row(h: &Herd, name: &str) -> Value {
    let v = h.json(&["hooks", "--json"]);
    v["hooks"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no hook {name} in {v}"))
}

fn dead_letters(h: &Herd) -> Vec<Value> {
    h.json(&["hooks", "dead", "--json"])["dead"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_receiver_failing_twice_gets_three_attempts_and_one_success_with_the_last_log_lines() {
    let rx = Receiver::start(0, |n| if n < 2 { 500 } else { 200 });
    let h = daemon(&webhook("pager", &rx.url(), "\"crashed\"", 5));
    crash_app(&h, "api", "on-failure");
    let ok = wait_for("a successful delivery", Duration::from_secs(20), || {
        rx.successes().into_iter().next()
    });
    // Nothing more comes: the success ended the delivery.
    std::thread::sleep(Duration::from_millis(600));
    let codes: Vec<u16> = rx.requests().iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, [500, 500, 200], "exactly three attempts");
    assert_eq!(ok["event"], "crashed");
    assert_eq!(ok["app"], "api");
    assert_eq!(ok["instance"], 0);
    assert_eq!(ok["hook"], "pager");
    assert!(ok["node"].as_str().is_some_and(|n| !n.is_empty()), "{ok}");
    assert!(ok["seq"].is_u64() && ok["ts_ms"].is_u64(), "{ok}");
    let logs: Vec<&str> = ok["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        logs.contains(&"boom") && logs.contains(&"first line"),
        "{logs:?}"
    );
    assert!(logs.len() <= 20, "{logs:?}");
    let row = wait_for("the counters", Duration::from_secs(5), || {
        let r = hook_row(&h, "pager");
        (r["pending"] == 0).then_some(r)
    });
    assert_eq!(row["delivered"], 1, "{row}");
    assert_eq!(row["failed"], 0, "{row}");
    assert_eq!(row["failed_attempts"], 2, "{row}");
    assert_eq!(row["dead"], 0, "{row}");
    assert!(dead_letters(&h).is_empty());
}

#[test]
fn a_dead_receiver_fills_the_dead_letters_and_replay_delivers_once_it_is_back() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/herd");
    let h = daemon(&webhook("pager", &url, "\"exited\"", 2));
    crash_app(&h, "api", "never");
    let dead = wait_for("a dead letter", Duration::from_secs(20), || {
        let d = dead_letters(&h);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["hook"], "pager");
    assert_eq!(dead[0]["event"], "exited");
    assert_eq!(dead[0]["app"], "api");
    assert_eq!(dead[0]["attempts"], 3, "the first attempt and two retries");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{dead:?}"
    );
    let row = hook_row(&h, "pager");
    assert_eq!(
        (&row["failed"], &row["dead"], &row["pending"]),
        (&1.into(), &1.into(), &0.into())
    );
    // The text form lists it too.
    assert!(
        h.ok(&["hooks", "dead"])
            .contains(dead[0]["id"].as_str().unwrap())
    );

    // An unknown id is "not found" (exit 3).
    let out = h.run(&["hooks", "replay", "12345"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let rx = Receiver::start(port, |_| 200);
    let replayed = h.json(&["hooks", "replay", "--all", "--json"]);
    assert_eq!(
        replayed["replayed"].as_array().unwrap().len(),
        1,
        "{replayed}"
    );
    let got = wait_for("the replayed delivery", Duration::from_secs(10), || {
        rx.successes().into_iter().next()
    });
    assert_eq!(got["event"], "exited");
    assert_eq!(got["code"], 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.requests().len(), 1, "delivered exactly once");
    assert!(dead_letters(&h).is_empty());
    let row = hook_row(&h, "pager");
    assert_eq!((&row["delivered"], &row["pending"]), (&1.into(), &0.into()));
}

#[test]
fn deliveries_pending_across_a_daemon_sigkill_are_delivered_once_after_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/herd");
    let h = daemon(&webhook("pager", &url, "\"exited\"", 1000));
    crash_app(&h, "api", "never");
    wait_for(
        "a pending delivery that failed",
        Duration::from_secs(10),
        || {
            let r = hook_row(&h, "pager");
            (r["pending"] == 1 && r["failed_attempts"].as_u64() >= Some(1)).then_some(())
        },
    );
    let pending: Vec<String> = std::fs::read_dir(h.path("hooks/pending/pager"))
        .unwrap()
        .filter_map(|e| {
            Some(
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        pending.len(),
        1,
        "the delivery is a file on disk: {pending:?}"
    );
    let pid = h.daemon_pid().expect("daemon pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Dead once every thread is and its lock is free: the leader turns zombie first, while
    // another thread (in the kernel, say) may still hold the pid file open.
    wait_until("the daemon is dead", Duration::from_secs(10), || {
        let f = std::fs::File::open(h.path("daemon.pid")).unwrap();
        !alive(pid)
            && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |d| d.count() <= 1)
            && nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock).is_ok()
    });

    let rx = Receiver::start(port, |_| 200);
    h.ok(&["up"]);
    // (The daemon may restart the app when it comes back, which makes new deliveries: the
    // one that was pending is what counts.)
    let ours = |rx: &Receiver| {
        rx.successes()
            .into_iter()
            .filter(|v| v["delivery"] == pending[0].as_str())
            .collect::<Vec<_>>()
    };
    let got = wait_for("the delivery after up", Duration::from_secs(15), || {
        ours(&rx).into_iter().next()
    });
    assert_eq!(
        (got["event"].as_str(), got["app"].as_str()),
        (Some("exited"), Some("api"))
    );
    wait_for("an empty queue", Duration::from_secs(5), || {
        (hook_row(&h, "pager")["pending"] == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ours(&rx).len(),
        1,
        "delivered exactly once: {:?}",
        rx.requests()
    );
}

#[test]
fn an_exec_hook_gets_the_event_in_its_env_and_on_stdin_and_none_of_the_daemons_env() {
    let h = Herd::new();
    let out = h.path("hook-out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(
        h.path("config.toml"),
        format!(
            "[[hook]]\nname = \"notify\"\non = [\"exited\"]\napps = [\"ap*\"]\nexec = [\"sh\", \"-c\", \"env > {d}/env.tmp && mv {d}/env.tmp {d}/env; cat > {d}/stdin.tmp && mv {d}/stdin.tmp {d}/stdin.json; ls /proc/self/fd > {d}/fds\"]\n",
            d = out.display()
        ),
    )
    .unwrap();
    let up = h
        .cmd(&["up"])
        .env("HERD_TEST_SECRET_X", "do-not-leak")
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    let daemon_env = std::fs::read(format!("/proc/{}/environ", h.daemon_pid().unwrap())).unwrap();
    assert!(
        String::from_utf8_lossy(&daemon_env).contains("HERD_TEST_SECRET_X=do-not-leak"),
        "the daemon itself has the secret (else this test proves nothing)"
    );
    // Filtered out by `apps`: no delivery.
    crash_app(&h, "other", "never");
    h.wait_status("other", 0, "stopped", Duration::from_secs(10));
    crash_app(&h, "api", "never");
    let stdin = wait_for("the hook's stdin", Duration::from_secs(15), || {
        std::fs::read_to_string(out.join("stdin.json")).ok()
    });
    let env = wait_for("the hook's env", Duration::from_secs(5), || {
        std::fs::read_to_string(out.join("env")).ok()
    });
    let event: Value = serde_json::from_str(&stdin).expect("JSON on stdin");
    assert_eq!(
        (event["event"].as_str(), event["app"].as_str()),
        (Some("exited"), Some("api"))
    );
    assert!(
        event["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "boom"),
        "{event}"
    );
    let vars: Vec<&str> = env.lines().collect();
    for want in ["HERD_EVENT=exited", "HERD_APP=api", "HERD_INSTANCE=0"] {
        assert!(vars.contains(&want), "{want} in {vars:?}");
    }
    assert!(
        !env.contains("HERD_TEST_SECRET_X"),
        "the daemon's env leaked: {env}"
    );
    assert!(!env.contains("HERD_HOME"), "the daemon's env leaked: {env}");
    // Only stdin, stdout, stderr (and the directory `ls` opens).
    let fds = wait_for("the hook's fds", Duration::from_secs(5), || {
        std::fs::read_to_string(out.join("fds"))
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert!(fds.lines().count() <= 4, "inherited descriptors: {fds}");
    std::thread::sleep(Duration::from_millis(300));
    let row = hook_row(&h, "notify");
    assert_eq!(
        row["delivered"], 1,
        "`other` is filtered out by apps: {row}"
    );
}

#[test]
fn a_hook_config_error_is_refused_at_reload_naming_hook_and_key_and_the_old_hooks_keep_working() {
    let rx = Receiver::start(0, |_| 200);
    let good = webhook("pager", &rx.url(), "\"exited\"", 3);
    let h = daemon(&good);
    let bad = [
        (
            good.replace("\"exited\"", "\"exitted\""),
            "key `on`: unknown event kind `exitted`",
        ),
        (
            format!("{good}exec = [\"/bin/true\"]\n"),
            "keys `webhook` and `exec`",
        ),
        (
            "[[hook]]\nname = \"pager\"\non = [\"exited\"]\n".to_string(),
            "give `webhook",
        ),
        (good.replace(&rx.url(), "not a url"), "key `webhook`"),
    ];
    for (config, why) in bad {
        std::fs::write(h.path("config.toml"), &config).unwrap();
        let err = h.fails(&["reload-config"]);
        assert!(err.contains("config.toml"), "names the file: {err}");
        assert!(err.contains("[[hook]] `pager`"), "names the hook: {err}");
        assert!(err.contains(why), "{why} in {err}");
    }
    // The running hooks are untouched.
    crash_app(&h, "api", "never");
    wait_for(
        "a delivery by the old hook",
        Duration::from_secs(15),
        || rx.successes().into_iter().next(),
    );
    // And at `herd up` the same error refuses to start.
    let h2 = Herd::new();
    std::fs::write(
        h2.path("config.toml"),
        good.replace("\"exited\"", "\"nope\""),
    )
    .unwrap();
    let err = h2.fails(&["up"]);
    assert!(err.contains("[[hook]] `pager`: key `on`"), "{err}");

    // A good reload applies a new hook.
    let rx2 = Receiver::start(0, |_| 200);
    std::fs::write(
        h.path("config.toml"),
        format!("{good}{}", webhook("second", &rx2.url(), "\"exited\"", 3)),
    )
    .unwrap();
    h.ok(&["reload-config"]);
    h.ok(&["restart", "api"]);
    wait_for(
        "a delivery by the new hook",
        Duration::from_secs(15),
        || rx2.successes().into_iter().next(),
    );
}

#[test]
fn a_slow_hook_delays_neither_another_hook_nor_an_apps_restarts() {
    let rx = Receiver::start(0, |_| 200);
    let h = daemon(&format!(
        "{}[[hook]]\nname = \"slow\"\non = [\"exited\"]\nexec = [\"sleep\", \"30\"]\ntimeout_s = 8\nretries = 0\n",
        webhook("fast", &rx.url(), "\"exited\"", 3)
    ));
    let starts = h.path("starts");
    let file = h.app_file(
        "loop.toml",
        &format!(
            r#"
[[app]]
name = "loop"
command = "sh"
args = ["-c", "echo x >> {}; exit 1"]
restart = "always"
backoff_initial_ms = 100
backoff_max_ms = 100
max_restarts = 1000
restart_window_s = 60
"#,
            starts.display()
        ),
    );
    let begun = Instant::now();
    h.ok(&["start", &file]);
    // The slow hook's first attempt alone takes 8 s; the others must not wait for it.
    wait_for(
        "five exits delivered by the fast hook",
        Duration::from_secs(7),
        || (rx.successes().len() >= 5).then_some(()),
    );
    let took = begun.elapsed();
    assert!(read_lines(&starts).len() >= 5, "the app's restarts waited");
    let slow = hook_row(&h, "slow");
    assert!(
        took < Duration::from_secs(7) && slow["failed_attempts"] == 0 && slow["delivered"] == 0,
        "the slow hook is still in its first attempt ({took:?}): {slow}"
    );
    // The slow program is killed at its timeout and its delivery becomes a dead letter.
    let dead = wait_for(
        "the slow hook's dead letter",
        Duration::from_secs(20),
        || {
            let d = dead_letters(&h);
            d.into_iter().find(|d| d["hook"] == "slow")
        },
    );
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("longer than 8 s"),
        "{dead}"
    );
    h.ok(&["stop", "loop"]);
}

#[test]
fn an_https_webhook_refuses_a_certificate_no_public_root_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = certificates(dir.path(), "IP:127.0.0.1");
    let port = free_port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-accept", &port.to_string(), "-www", "-quiet"])
        .args(["-cert", &cert, "-key", &key])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    wait_until("the TLS server listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("https://127.0.0.1:{port}/herd");
    let h = daemon(&webhook("tls", &url, "\"exited\"", 0));
    crash_app(&h, "api", "never");
    let dead = wait_for("the refused delivery", Duration::from_secs(15), || {
        dead_letters(&h).into_iter().next()
    });
    let _ = server.kill();
    let _ = server.wait();
    let error = dead["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("TLS") && error.contains("invalid peer certificate"),
        "{error}"
    );
}
