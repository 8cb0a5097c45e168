//! The wall clock stepped backwards and forwards under a running daemon, as `date -s`, a
//! hypervisor resuming a guest or an NTP step does. libfaketime is preloaded into the daemon
//! alone (so the host's clock and every other test stay untouched) with its offset in a file
//! the test rewrites; the monotonic and boot clocks are not faked, exactly as in a real step.
//! The daemon must measure durations on clocks that do not step: the crash window, backoff
//! and uptime stay what they were, and each cron time fires at most once.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const WAIT: Duration = Duration::from_secs(20);
const HOUR_S: i64 = 3_600;

/// A daemon whose wall clock is the host's plus an offset the test sets.
struct SteppedDaemon {
    herd: Herd,
    offset_file: PathBuf,
}

impl SteppedDaemon {
    fn up() -> Self {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "this test needs libfaketime: apt-get install -y faketime (scripts/test installs it)"
        );
        let herd = Herd::new();
        let offset_file = herd.path("wall-offset");
        let me = Self { herd, offset_file };
        me.set_offset(0);
        let out = me
            .herd
            .cmd(&["up"])
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &me.offset_file)
            // Wall time only: tokio's timers and the boot clock run on as on a real host.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            // The file is read again at most a second after it changes.
            .env("FAKETIME_CACHE_DURATION", "1")
            .output()
            .expect("run herd up");
        assert!(
            out.status.success(),
            "herd up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        me
    }

    /// Steps the daemon's wall clock to the host's plus `secs` (written whole: a reader never
    /// sees half an offset).
    fn set_offset(&self, secs: i64) {
        let tmp = self.offset_file.with_extension("tmp");
        std::fs::write(&tmp, format!("{secs:+}\n")).unwrap();
        std::fs::rename(&tmp, &self.offset_file).unwrap();
    }

    /// Steps the clock and waits until the daemon's own records show it: an event stamped
    /// about `secs` away from the host's clock (the test's start of `app` makes one).
    fn step(&self, secs: i64, app: &str) {
        self.set_offset(secs);
        let deadline = Instant::now() + WAIT;
        loop {
            // Each restart records `registered`/`started` events with the daemon's wall time.
            self.herd.ok(&["restart", app]);
            let last = self.events().into_iter().rev().find(|e| e["app"] == app);
            let seen = last
                .and_then(|e| e["ts_ms"].as_i64())
                .map(|ts| ts - host_ms());
            if seen.is_some_and(|d| (d - secs * 1000).abs() < 5_000) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon's clock never showed the step to {secs:+} s (last event {seen:?} ms off)"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.herd.path("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn host_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in ps: {rows:?}"))
}

#[test]
fn a_stepped_wall_clock_changes_no_crash_window_backoff_or_uptime() {
    let d = SteppedDaemon::up();
    let h = &d.herd;
    // `flaky` crashes once a second; two restarts in 2 s would end it `crashed`, which one a
    // second never reaches. `steady` just runs. `marker` is restarted by the test to see the
    // daemon's clock.
    let file = h.app_file(
        "apps.toml",
        r#"
[[app]]
name = "flaky"
command = "sh"
args = ["-c", "sleep 1; exit 1"]
restart = "always"
max_restarts = 2
restart_window_s = 2
backoff_initial_ms = 100
backoff_max_ms = 100

[[app]]
name = "steady"
command = "sleep"
args = ["100000"]

[[app]]
name = "marker"
command = "sleep"
args = ["100000"]
"#,
    );
    h.ok(&["start", &file]);
    h.wait_ps("flaky restarting and steady up 2 s", WAIT, |rows| {
        row(rows, "flaky")["restarts"].as_u64() >= Some(2)
            && row(rows, "steady")["uptime_s"].as_u64() >= Some(2)
    });
    let steady_since =
        Instant::now() - Duration::from_secs(row(&h.ps(), "steady")["uptime_s"].as_u64().unwrap());

    // An hour back. On the wall clock, every restart recorded before the step would stay
    // inside the crash window for that hour, and the next two would end `flaky` crashed;
    // uptime would read 0 for an hour.
    d.step(-HOUR_S, "marker");
    let restarts_at_step = row(&h.ps(), "flaky")["restarts"].as_u64().unwrap();
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        let rows = h.ps();
        let flaky = row(&rows, "flaky");
        assert_ne!(
            flaky["status"], "crashed",
            "a backward step ended the crash loop: {flaky}"
        );
        let uptime = row(&rows, "steady")["uptime_s"].as_u64().unwrap();
        let real = steady_since.elapsed().as_secs();
        assert!(
            uptime + 2 >= real && uptime <= real + 2,
            "steady's uptime reads {uptime} s after the step back; it has run {real} s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let restarts = row(&h.ps(), "flaky")["restarts"].as_u64().unwrap();
    assert!(
        restarts >= restarts_at_step + 3,
        "flaky's restarts went {restarts_at_step} -> {restarts} in the 6 s after the step: its backoff stalled"
    );

    // Two hours forward (one ahead of the host). On the wall clock the crash window would
    // forget the restarts in it, and a crash loop would get its limit again.
    h.ok(&["stop", "flaky"]);
    let looper = h.app_file(
        "looper.toml",
        r#"
[[app]]
name = "looper"
command = "sh"
args = ["-c", "exit 1"]
restart = "always"
max_restarts = 3
restart_window_s = 3600
backoff_initial_ms = 3000
backoff_max_ms = 3000
"#,
    );
    h.ok(&["start", &looper]);
    h.wait_ps("looper's first restart", WAIT, |rows| {
        row(rows, "looper")["restarts"].as_u64() >= Some(1)
    });
    d.step(HOUR_S, "marker");
    assert_ne!(
        h.instance("looper", 0)["status"],
        "crashed",
        "looper ended before the step reached the daemon: the test saw nothing"
    );
    let rows = h.wait_ps("looper crashed", WAIT, |rows| {
        row(rows, "looper")["status"] == "crashed"
    });
    assert_eq!(
        row(&rows, "looper")["restarts"],
        3,
        "a forward step let the crash loop past max_restarts = 3"
    );
    let uptime = row(&rows, "steady")["uptime_s"].as_u64().unwrap();
    let real = steady_since.elapsed().as_secs();
    assert!(
        uptime <= real + 2,
        "steady's uptime reads {uptime} s after the step forward; it has run {real} s"
    );
}

#[test]
fn each_cron_time_fires_at_most_once_across_clock_steps() {
    let d = SteppedDaemon::up();
    let h = &d.herd;
    let file = h.app_file(
        "cron.toml",
        r#"
[[app]]
name = "ticker"
command = "sleep"
args = ["100000"]
cron_restart = "*/2 * * * * *"

[[app]]
name = "marker"
command = "sleep"
args = ["100000"]
"#,
    );
    h.ok(&["start", &file]);
    let cron_restarts = |d: &SteppedDaemon| -> Vec<i64> {
        d.events()
            .iter()
            .filter(|e| e["event"] == "cron_restart" && e["app"] == "ticker")
            .filter_map(|e| e["ts_ms"].as_i64())
            .collect()
    };
    wait_until("two cron restarts", WAIT, || cron_restarts(&d).len() >= 2);

    // An hour forward: the 1,800 cron times skipped fire once together, not 1,800 times,
    // and the schedule goes on every 2 s.
    let before = cron_restarts(&d).len();
    d.step(HOUR_S, "marker");
    let after_step = Instant::now();
    wait_until("cron restarts after the step forward", WAIT, || {
        cron_restarts(&d).len() >= before + 2
    });
    std::thread::sleep(Duration::from_secs(3).saturating_sub(after_step.elapsed()));
    let fired = cron_restarts(&d).len() - before;
    let secs = after_step.elapsed().as_secs() + 2;
    assert!(
        fired as u64 <= secs / 2 + 2,
        "{fired} cron restarts within {secs} s of a forward step: the skipped times fired as a burst"
    );

    // 10 s back: the times between are the clock's second pass over times that already
    // fired; none fires again. The schedule resumes once the clock is past the last one.
    let last_fired = *cron_restarts(&d).last().unwrap();
    d.step(HOUR_S - 10, "marker");
    let stepped = cron_restarts(&d).len();
    wait_until(
        "the cron schedule resumes after the step back",
        Duration::from_secs(60),
        || cron_restarts(&d).len() > stepped,
    );
    let times = cron_restarts(&d);
    let repeated: Vec<i64> = times[stepped..]
        .iter()
        .copied()
        .filter(|t| *t <= last_fired)
        .collect();
    assert!(
        repeated.is_empty(),
        "cron restarts fired again at times already fired before the step back: {repeated:?} (last before: {last_fired})"
    );
}
