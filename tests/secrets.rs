//! Secrets end to end, with the real daemon and real apps: a value set with `herd secret put`
//! reaches an app's environment and nothing else (not the home, not the daemon's environment,
//! not a CLI output); a new value restarts or signals the apps that use it; a file naming a
//! missing secret is refused; a wrong or missing key is named and starts nothing that needs it.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn put(h: &Herd, name: &str, value: &str) -> serde_json::Value {
    h.put_secret(name, value)
}

/// Every file under `dir` (recursively) that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_holding(&p, needle));
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(p.display().to_string());
        }
    }
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn an_app_sees_its_secret_and_the_value_is_nowhere_else() {
    let h = Herd::up();
    let out = tempfile::tempdir().unwrap();
    let value = "pw-7f9a2c-only-in-the-app";
    let v = put(&h, "db/pass", value);
    assert_eq!(v["version"], 1, "{v}");
    let seen = out.path().join("seen");
    let file = h.app_file(
        "web.toml",
        &format!(
            "[[app]]\nname = \"web\"\ncommand = \"sh\"\nargs = [\"-c\", \"printf %s \\\"$DB_PASS\\\" > {}; echo started; exec sleep 1000\"]\nenv = {{ DB_PASS = \"secret:db/pass\", PLAIN = \"plain\" }}\n",
            seen.display()
        ),
    );
    h.ok(&["start", &file]);
    let row = h.wait_status("web", 0, "running", WAIT);
    wait_until("the app wrote what it saw", WAIT, || read(&seen) == value);
    let app_pid = pid_of(&row);
    assert!(
        holds(&environ(app_pid), value),
        "the app's own environment has it"
    );
    assert!(
        !holds(&environ(app_pid), "HERD_SECRETS_KEY"),
        "the key variable never reaches an app"
    );
    // A restart opens it again (the value is not kept anywhere between spawns).
    h.ok(&["restart", "web"]);
    wait_until("restarted", WAIT, || {
        h.ps()
            .iter()
            .any(|r| r["name"] == "web" && r["status"] == "running" && pid_of(r) != app_pid)
    });

    // Every CLI output shows the reference, never the value.
    let mut printed = String::new();
    for args in [
        &["ps", "--json"][..],
        &["ps"],
        &["inspect", "web", "--json"],
        &["inspect", "web"],
        &["events", "--json"],
        &["logs", "web"],
        &["secret", "list", "--json"],
        &["secret", "list"],
    ] {
        let o = h.run(args);
        printed.push_str(&String::from_utf8_lossy(&o.stdout));
        printed.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        printed.contains("secret:db/pass"),
        "inspect shows the reference"
    );
    assert!(!printed.contains(value), "a CLI output shows the value");
    // On disk: not in state.json, access.json, events, logs, daemon.log — anywhere in the home.
    assert_eq!(
        files_holding(h.home.path(), value.as_bytes()),
        Vec::<String>::new()
    );
    let daemon = h.daemon_pid().expect("daemon pid");
    assert!(!holds(&environ(daemon), value), "/proc/DAEMON/environ");
    // An admin may read it back (the socket is admin), byte for byte.
    assert_eq!(h.ok(&["secret", "get", "db/pass"]), value);
    // The key file was made on first use, 0600.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(h.path("secrets.key")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[test]
fn a_new_value_restarts_the_apps_that_use_it_or_signals_them() {
    let h = Herd::up();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    put(&h, "api/key", "first");
    let file = h.app_file(
        "two.toml",
        &format!(
            r#"[[app]]
name = "r"
command = "sh"
args = ["-c", "printf %s \"$KEY\" > {o}/r; exec sleep 1000"]
env = {{ KEY = "secret:api/key" }}

[[app]]
name = "s"
command = "sh"
args = ["-c", "trap 'echo hup >> {o}/hup' HUP; printf %s \"$KEY\" > {o}/s; while :; do sleep 1 & wait $!; done"]
env = {{ KEY = "secret:api/key" }}
on_secret_change = "signal:SIGHUP"

[[app]]
name = "other"
command = "sleep"
args = ["1000"]
"#
        ),
    );
    h.ok(&["start", &file]);
    let r0 = pid_of(&h.wait_status("r", 0, "running", WAIT));
    let s0 = pid_of(&h.wait_status("s", 0, "running", WAIT));
    let other0 = pid_of(&h.wait_status("other", 0, "running", WAIT));
    wait_until("both saw the first value", WAIT, || {
        read(&out.path().join("r")) == "first" && read(&out.path().join("s")) == "first"
    });

    // The same value again changes nothing.
    let same = put(&h, "api/key", "first");
    assert_eq!(same["changed"], false, "{same}");
    assert_eq!(same["version"], 1, "{same}");

    let v = put(&h, "api/key", "second");
    assert_eq!(v["version"], 2, "{v}");
    wait_until("r restarted with the new value", WAIT, || {
        read(&out.path().join("r")) == "second"
    });
    assert_ne!(pid_of(&h.wait_status("r", 0, "running", WAIT)), r0);
    wait_until("s got SIGHUP", WAIT, || {
        read(&out.path().join("hup")).contains("hup")
    });
    assert_eq!(
        pid_of(&h.instance("s", 0)),
        s0,
        "a signalled app keeps running"
    );
    assert_eq!(
        pid_of(&h.instance("other", 0)),
        other0,
        "an app without it is untouched"
    );
    let events = h.ok(&["events", "--json"]);
    let changed: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "secret_changed")
        .collect();
    assert!(
        changed
            .iter()
            .any(|e| e["app"] == "r" && e["action"] == "restart" && e["secret"] == "api/key"),
        "{events}"
    );
    assert!(
        changed
            .iter()
            .any(|e| e["app"] == "s" && e["action"] == "signal:SIGHUP"),
        "{events}"
    );
    assert!(!events.contains("second"), "an event carries the value");
}

#[test]
fn a_file_naming_a_missing_secret_is_refused_and_a_wrong_or_missing_key_is_named() {
    let h = Herd::up();
    let file = h.app_file(
        "db.toml",
        "[[app]]\nname = \"db\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nenv = { PASS = \"secret:db/pass\" }\n",
    );
    let err = h.fails(&["start", &file]);
    assert!(
        err.contains("db/pass") && err.contains("does not exist") && err.contains("env.PASS"),
        "{err}"
    );
    assert!(h.ps().is_empty(), "nothing of a refused file is registered");
    let bad = h.app_file(
        "bad.toml",
        "[[app]]\nname = \"b\"\ncommand = \"true\"\non_secret_change = \"reboot\"\n",
    );
    let err = h.fails(&["start", &bad]);
    assert!(err.contains("on_secret_change"), "{err}");
    // A value with a NUL byte cannot be an environment variable.
    let mut child = h
        .cmd(&["secret", "put", "nul"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a\0b").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("NUL"));

    put(&h, "db/pass", "right");
    h.ok(&["start", &file]);
    h.wait_status("db", 0, "running", WAIT);
    let key = std::fs::read_to_string(h.path("secrets.key")).unwrap();

    // Another key on the host: the daemon says which key sealed it and starts nothing.
    h.ok(&["down"]);
    let other = "ab".repeat(32);
    std::fs::write(h.path("secrets.key"), format!("{other}\n")).unwrap();
    h.ok(&["up"]);
    let err = h.fails(&["secret", "get", "db/pass"]);
    assert!(
        err.contains("sealed with key") && err.contains("secrets.key"),
        "{err}"
    );
    let err = h.fails(&["start", &file]);
    assert!(err.contains("sealed with key"), "{err}");
    // The restored app could not be spawned: its failure names the key, nothing runs.
    wait_until(
        "the restored app's spawn failed naming the key",
        WAIT,
        || {
            h.ok(&["events", "--json"])
                .lines()
                .any(|l| l.contains("spawn_failed") && l.contains("sealed with key"))
        },
    );
    assert!(
        h.ps()
            .iter()
            .all(|r| r["name"] != "db" || r["status"] != "running"),
        "an app started without its secret"
    );

    // No key at all: said so, with the fix.
    h.ok(&["down"]);
    std::fs::remove_file(h.path("secrets.key")).unwrap();
    h.ok(&["up"]);
    let err = h.fails(&["secret", "get", "db/pass"]);
    assert!(err.contains("no secrets key"), "{err}");

    // The right key from HERD_SECRETS_KEY instead of the file: the app runs again, and the
    // variable is not passed on to it.
    h.ok(&["down"]);
    let up = h
        .cmd(&["up"])
        .env("HERD_SECRETS_KEY", key.trim())
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    h.ok(&["start", &file]);
    let row = h.wait_status("db", 0, "running", WAIT);
    let env = environ(pid_of(&row));
    assert!(holds(&env, "PASS=right"));
    assert!(!holds(&env, key.trim()) && !holds(&env, "HERD_SECRETS_KEY"));
    assert!(
        !h.path("secrets.key").exists(),
        "no key file made when the variable gives one"
    );
}
