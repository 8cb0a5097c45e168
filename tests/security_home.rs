//! The home only the daemon's user controls, files in it never opened through a symlink, and
//! no change acknowledged that is not on disk (issue 11, items 3–5). Runs as root, like the
//! daemon it tests: the scenarios chown to `nobody` (65534) and mount a small tmpfs.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `herd ARGS` with an arbitrary `HERD_HOME` (the harness's homes are always safe ones).
fn herd_in(home: &Path, args: &[&str]) -> Output {
    Command::new(herd_bin())
        .args(args)
        .env("HERD_HOME", home)
        .env_remove("HERD_LOG")
        .env("HERD_HTTP_LISTEN", "")
        .output()
        .expect("run herd")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_home_owned_by_another_uid_is_refused_with_the_owner_and_the_fix() {
    let h = Herd::new();
    let home = h.home.path().to_path_buf();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let err = h.fails(&["up"]);
    // Give it back before any assert, so the harness can clean up whatever happens.
    std::os::unix::fs::chown(&home, Some(0), Some(0)).unwrap();
    assert!(
        err.contains(&format!("{} is owned by uid 65534", home.display()))
            && err.contains("herd runs as uid 0")
            && err.contains("chown"),
        "{err}"
    );
    assert!(h.daemon_pid().is_none(), "no daemon took the home");
}

#[test]
fn a_world_writable_home_is_refused_and_not_silently_repaired() {
    let h = Herd::new();
    chmod(h.home.path(), 0o777);
    let err = h.fails(&["up"]);
    assert!(
        err.contains(&h.home.path().display().to_string())
            && err.contains("mode 0777")
            && err.contains("chmod go-w"),
        "{err}"
    );
    assert_eq!(mode_of(h.home.path()), 0o777, "refused, not chmodded");
    chmod(h.home.path(), 0o700);
    h.ok(&["up"]);
}

#[test]
fn a_home_under_a_parent_others_can_write_needs_the_sticky_bit() {
    let outer = tempfile::tempdir().unwrap();
    let shared = outer.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let home = shared.join("herd");
    let _cleanup = Down(home.clone());
    let out = herd_in(&home, &["up"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "accepted a home in a 0777 directory");
    assert!(
        err.contains(&format!(
            "{}, a parent of herd home {}",
            shared.display(),
            home.display()
        )) && err.contains("without the sticky bit"),
        "{err}"
    );
    assert!(!home.exists(), "nothing is created under an unsafe parent");

    // Sticky like /tmp: others cannot move our home away, so it is fine (as every temp home).
    chmod(&shared, 0o1777);
    let out = herd_in(&home, &["up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode_of(&home), 0o700);
    let ps = herd_in(&home, &["ps"]);
    assert!(ps.status.success(), "{}", stderr(&ps));
    let down = herd_in(&home, &["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
}

/// Stops a daemon of a home outside the harness, even when the test failed halfway.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = herd_in(&self.0, &["down", "--timeout", "1"]);
        let _ = herd_in(&self.0, &["kill"]);
    }
}

/// A victim file outside the home, and its content.
fn victim(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let p = dir.join(name);
    let content = format!("{name}: must stay exactly as it is\n").into_bytes();
    std::fs::write(&p, &content).unwrap();
    (p, content)
}

#[test]
fn a_symlink_planted_in_logs_is_not_followed_and_the_victim_is_untouched() {
    let outside = tempfile::tempdir().unwrap();
    let (target, before) = victim(outside.path(), "victim");
    let h = Herd::up();
    std::os::unix::fs::symlink(&target, h.path("logs/flood-0.log")).unwrap();
    // Writes far past the cap at once: rotation would truncate the link's target.
    let file = h.app_file(
        "flood.toml",
        r#"
[[app]]
name = "flood"
command = "sh"
args = ["-c", "pad=$(printf '%0500d' 0); while :; do echo \"$pad\"; done"]
log_max_bytes = 4096
log_files = 2
restart = "never"
"#,
    );
    h.ok(&["start", &file]);
    let events = h.path("events.jsonl");
    wait_until("a spawn_failed event naming the symlink", SECS_10, || {
        read_lines(&events)
            .iter()
            .any(|l| l.contains("\"spawn_failed\"") && l.contains("flood-0.log is a symbolic link"))
    });
    assert_eq!(
        std::fs::read(&target).unwrap(),
        before,
        "the victim changed"
    );
    assert!(
        std::fs::symlink_metadata(h.path("logs/flood-0.log"))
            .unwrap()
            .is_symlink(),
        "the link is left for the admin to see"
    );
}

#[test]
fn symlinks_planted_as_daemon_log_or_events_are_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let (log_victim, log_before) = victim(outside.path(), "log-victim");
    let (events_victim, events_before) = victim(outside.path(), "events-victim");
    let h = Herd::new();
    std::os::unix::fs::symlink(&log_victim, h.path("daemon.log")).unwrap();
    let err = h.fails(&["up"]);
    assert!(err.contains("daemon.log is a symbolic link"), "{err}");
    assert_eq!(std::fs::read(&log_victim).unwrap(), log_before);

    std::fs::remove_file(h.path("daemon.log")).unwrap();
    std::os::unix::fs::symlink(&events_victim, h.path("events.jsonl")).unwrap();
    h.ok(&["up"]);
    h.ok(&["start", "--name", "quick", "--", "sleep", "60"]);
    h.wait_status("quick", 0, "running", SECS_10);
    let log = h.path("daemon.log");
    wait_until("the refusal in daemon.log", SECS_10, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("events.jsonl is a symbolic link")
    });
    assert_eq!(std::fs::read(&events_victim).unwrap(), events_before);
}

#[test]
fn rotated_logs_are_private_like_live_ones() {
    let h = Herd::up();
    let file = h.app_file(
        "chatty.toml",
        r#"
[[app]]
name = "chatty"
command = "sh"
args = ["-c", "pad=$(printf '%0200d' 0); while :; do echo \"$pad\"; sleep 0.001; done"]
log_max_bytes = 4096
log_files = 3
"#,
    );
    h.ok(&["start", &file]);
    let rotated = h.path("logs/chatty-0.log.2");
    wait_until("two rotations", Duration::from_secs(20), || {
        rotated.exists()
    });
    // Stopped, so no rotation is shifting `.1` to `.2` while the modes are read (between
    // that rename and the next copy `.1` does not exist: the test read it then, once, in CI).
    h.ok(&["stop", "chatty"]);
    let files = ["chatty-0.log", "chatty-0.log.1", "chatty-0.log.2"];
    wait_until("the three files after the stop", SECS_10, || {
        files.iter().all(|f| h.path("logs").join(f).exists())
    });
    for f in files {
        assert_eq!(mode_of(&h.path("logs").join(f)), 0o600, "{f}");
    }
}

#[test]
fn a_state_written_by_a_newer_herd_is_refused_and_left_byte_for_byte() {
    let h = Herd::new();
    let newer = br#"{"version":99,"apps":[{"a shape":"this herd does not know"}],"extra":1}"#;
    std::fs::write(h.path("state.json"), newer).unwrap();
    std::fs::write(h.path("state.json.bak"), br#"{"version":1,"apps":[]}"#).unwrap();
    let err = h.fails(&["up"]);
    assert!(
        err.contains(&h.path("state.json").display().to_string())
            && err.contains("state version 99")
            && err.contains("understands version 1")
            && err.contains("move the file"),
        "{err}"
    );
    assert_eq!(std::fs::read(h.path("state.json")).unwrap(), newer);

    // One that parses as this herd's state but says it is newer: refused the same way.
    let parses = br#"{"version":2,"apps":[]}"#;
    std::fs::write(h.path("state.json"), parses).unwrap();
    let err = h.fails(&["up"]);
    assert!(err.contains("state version 2"), "{err}");
    assert_eq!(std::fs::read(h.path("state.json")).unwrap(), parses);
}

/// A small tmpfs, unmounted (lazily, so a busy mount cannot stop it) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs (the tests run as root): {}",
            stderr(&out)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let fill = self.path().join("fill");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", fill.display()))
            .output();
        let probe = std::fs::write(self.path().join("probe"), [0u8; 4096]);
        assert!(probe.is_err(), "the tmpfs is not full");
        let _ = std::fs::remove_file(self.path().join("probe"));
        fill
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

#[test]
fn a_full_disk_makes_start_fail_and_nothing_is_lost_after_a_daemon_sigkill() {
    // Declared first, dropped last: the daemon is down before the unmount.
    let fs = Tmpfs::mount("8m");
    let h = Herd {
        home: tempfile::Builder::new()
            .prefix("herd-e2e-")
            .tempdir_in(fs.path())
            .unwrap(),
    };
    h.ok(&["up"]);
    let file = h.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"600\"]\n",
    );
    let fill = fs.fill();

    let err = h.fails(&["start", &file]);
    assert!(
        err.contains("state not saved") && err.contains("No space left on device"),
        "{err}"
    );
    // The daemon is up, answers, and runs the app it could not yet record.
    let pid = pid_of(&h.wait_status("web", 0, "running", SECS_10));

    std::fs::remove_file(fill).unwrap();
    wait_until("web in state.json once space returns", SECS_10, || {
        std::fs::read_to_string(h.path("state.json"))
            .is_ok_and(|s| s.contains("\"web\"") && s.contains(&format!("\"pid\":{pid}")))
    });
    h.ok(&["kill"]);
    h.ok(&["up"]);
    let row = h.wait_status("web", 0, "running", SECS_10);
    assert_eq!(pid_of(&row), pid, "the app was not adopted");
    assert!(alive(pid), "the app was killed");
}
