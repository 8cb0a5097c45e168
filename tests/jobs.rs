//! Jobs end to end: the real daemon runs `[[job]]` tables as real processes — schedules,
//! overlap, timeouts, retries, capacity and priority, pause, dedup keys, catch-up, recovery
//! after a daemon SIGKILL, logs and `herd run --wait`.

mod common;

use common::{Herd, read_lines, wait_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn history(h: &Herd, job: &str) -> Vec<Value> {
    h.json(&["jobs", "history", job, "--json"])["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ended<'a>(runs: &'a [Value], reason: &str) -> Vec<&'a Value> {
    runs.iter()
        .filter(|r| r["state"] == "ended" && r["reason"] == reason)
        .collect()
}

/// Polls the job's history until `pred` holds; panics with the history after `timeout`.
fn wait_history(
    h: &Herd,
    job: &str,
    timeout: Duration,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let runs = history(h, job);
        if pred(&runs) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {job}'s history: {}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_file(h: &Herd, toml: &str) {
    let file = h.app_file("jobs.toml", toml);
    h.ok(&["start", &file]);
}

#[test]
fn a_per_second_schedule_runs_each_tick_exactly_once() {
    let h = Herd::up();
    let out = h.path("ticks");
    start_file(
        &h,
        &format!(
            "[[job]]\nname = \"tick\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo $HERD_TICK >> {}\"]\nschedule = \"* * * * * *\"\n",
            out.display()
        ),
    );
    wait_until("six ticks", Duration::from_secs(20), || {
        read_lines(&out).len() >= 6
    });
    h.ok(&["pause"]);
    // Whatever ran has ended (a per-second `echo` is quick) once nothing is running.
    wait_until("no run in flight", Duration::from_secs(10), || {
        h.json(&["jobs", "--json"])["running"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    let lines: Vec<u64> = read_lines(&out)
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let unique: BTreeSet<u64> = lines.iter().copied().collect();
    assert_eq!(unique.len(), lines.len(), "a tick ran twice: {lines:?}");
    let runs = history(&h, "tick");
    let succeeded = ended(&runs, "succeeded");
    assert_eq!(
        succeeded.len(),
        lines.len(),
        "every run wrote its line once"
    );
    // Between the first and the last tick run, every second is accounted for: run, or
    // recorded as skipped (a pass later than half a period under load).
    let skipped: BTreeSet<u64> = runs
        .iter()
        .filter(|r| r["reason"] == "skipped")
        .filter_map(|r| r["tick_ms"].as_u64().map(|t| t / 1000))
        .collect();
    let (first, last) = (*unique.first().unwrap(), *unique.last().unwrap());
    for s in first..=last {
        assert!(
            unique.contains(&s) || skipped.contains(&s),
            "tick {s} neither ran nor was skipped: ran {unique:?}, skipped {skipped:?}"
        );
    }
}

#[test]
fn overlap_forbid_never_has_two_copies_and_skips_the_tick() {
    let h = Herd::up();
    let marker = format!("herd-overlap-{}", std::process::id());
    start_file(
        &h,
        &format!(
            "[[job]]\nname = \"slow\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 2.5 # {marker}\"]\nschedule = \"* * * * * *\"\n"
        ),
    );
    // Distinct runs alive at once, from each process's environment (`sh` may fork a child
    // that shares its command line; every process of a run carries its HERD_RUN).
    let copies = || {
        let mut runs = BTreeSet::new();
        for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            if !String::from_utf8_lossy(&cmd).contains(&marker) {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            for var in env.split(|b| *b == 0) {
                if let Some(run) = var.strip_prefix(b"HERD_RUN=") {
                    runs.insert(run.to_vec());
                }
            }
        }
        runs.len()
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut most = 0;
    while Instant::now() < deadline {
        most = most.max(copies());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(most, 1, "copies seen at once");
    let runs = history(&h, "slow");
    assert!(
        runs.iter()
            .any(|r| r["reason"] == "skipped" && r["detail"] == "overlap"),
        "{runs:?}"
    );
}

#[test]
fn a_timeout_stops_the_run_with_reason_timeout_and_retries_it() {
    let h = Herd::up();
    start_file(
        &h,
        "[[job]]\nname = \"hang\"\ncommand = \"sleep\"\nargs = [\"300\"]\ntimeout_s = 1\nstop_timeout_s = 1\nretries = 1\nbackoff_initial_ms = 100\n",
    );
    let run = h.json(&["run", "hang", "--json"]);
    assert_eq!(run["state"], "queued");
    let runs = wait_history(&h, "hang", Duration::from_secs(20), |r| {
        ended(r, "timeout").len() == 2
    });
    let attempts: Vec<u64> = ended(&runs, "timeout")
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    assert!(
        runs.iter().all(|r| r["state"] == "ended"),
        "no third attempt: {runs:?}"
    );
    for r in ended(&runs, "timeout") {
        assert_eq!(r["signal"], "SIGTERM", "stopped with the stop signal: {r}");
        let took = r["duration_ms"].as_u64().unwrap();
        assert!(
            (900..5_000).contains(&took),
            "stopped after its timeout: {took} ms"
        );
    }
}

#[test]
fn a_failing_run_is_retried_until_it_succeeds() {
    let h = Herd::up();
    let count = h.path("count");
    start_file(
        &h,
        &format!(
            "[[job]]\nname = \"flaky\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo x >> {c}; [ $(wc -l < {c}) -ge 3 ]\"]\nretries = 5\nbackoff_initial_ms = 50\n",
            c = count.display()
        ),
    );
    h.ok(&["run", "flaky"]);
    let runs = wait_history(&h, "flaky", Duration::from_secs(20), |r| {
        !ended(r, "succeeded").is_empty()
    });
    let seen: Vec<(String, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or("").to_string(),
                r["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("failed".into(), 1),
            ("failed".into(), 2),
            ("succeeded".into(), 3)
        ]
    );
    assert_eq!(runs[0]["exit_code"], 1);
}

#[test]
fn two_slots_run_five_queued_runs_in_priority_order() {
    let h = Herd::new();
    std::fs::write(h.path("config.toml"), "[jobs]\nmax_parallel = 2\n").unwrap();
    h.ok(&["up"]);
    let order = h.path("order");
    start_file(
        &h,
        &format!(
            "[[job]]\nname = \"work\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo $HERD_RUN >> {}; sleep 0.7\"]\noverlap = \"allow\"\n",
            order.display()
        ),
    );
    h.ok(&["pause"]);
    let mut by_priority = Vec::new();
    for p in [1, 5, 3, 9, 2] {
        let run = h.json(&["run", "work", "--priority", &p.to_string(), "--json"]);
        assert_eq!(run["paused"], true);
        by_priority.push((p, run["id"].as_u64().unwrap()));
    }
    by_priority.sort_by_key(|(p, _)| -p);
    h.ok(&["resume"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    while ended(&history(&h, "work"), "succeeded").len() < 5 {
        let running = h.json(&["jobs", "--json"])["running"]
            .as_array()
            .map_or(0, Vec::len);
        most = most.max(running);
        assert!(Instant::now() < deadline, "five runs did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 2, "{most} runs at once with max_parallel = 2");
    let started: Vec<u64> = read_lines(&order)
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let expected: Vec<u64> = by_priority.iter().map(|(_, id)| *id).collect();
    // Two start together: the order within each pair of slots is free, the pairs are not.
    let pairs = |v: &[u64]| -> Vec<BTreeSet<u64>> {
        v.chunks(2).map(|c| c.iter().copied().collect()).collect()
    };
    assert_eq!(
        pairs(&started),
        pairs(&expected),
        "started {started:?}, by priority {expected:?}"
    );
}

#[test]
fn pause_skips_ticks_and_resume_runs_them_again() {
    let h = Herd::up();
    let out = h.path("ticks");
    start_file(
        &h,
        &format!(
            "[[job]]\nname = \"tick\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo $HERD_TICK >> {}\"]\nschedule = \"* * * * * *\"\n",
            out.display()
        ),
    );
    wait_until("a first tick", Duration::from_secs(10), || {
        !read_lines(&out).is_empty()
    });
    h.ok(&["pause"]);
    assert_eq!(h.json(&["jobs", "--json"])["paused"], true);
    let runs = wait_history(&h, "tick", Duration::from_secs(10), |r| {
        r.iter().filter(|r| r["detail"] == "paused").count() >= 2
    });
    let ran_before = ended(&runs, "succeeded").len();
    let paused_ticks = runs.iter().filter(|r| r["detail"] == "paused").count();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ended(&history(&h, "tick"), "succeeded").len(),
        ran_before,
        "ran while paused"
    );
    h.ok(&["resume"]);
    wait_history(&h, "tick", Duration::from_secs(10), |r| {
        ended(r, "succeeded").len() > ran_before
    });
    assert!(paused_ticks >= 2);
}

#[test]
fn a_duplicate_key_is_refused_while_the_first_runs() {
    let h = Herd::up();
    start_file(
        &h,
        "[[job]]\nname = \"report\"\ncommand = \"sleep\"\nargs = [\"2\"]\nkey = \"report-{date}\"\noverlap = \"allow\"\n",
    );
    h.ok(&["run", "report"]);
    let err = h.fails(&["run", "report"]);
    assert!(err.contains("key `report-20"), "{err}");
    assert!(err.contains("already"), "{err}");
    let runs = wait_history(&h, "report", Duration::from_secs(10), |r| {
        ended(r, "succeeded").len() == 1
    });
    assert_eq!(runs.len(), 1);
    // Once it has ended the key is free again.
    h.ok(&["run", "report"]);
}

#[test]
fn catch_up_runs_once_for_ticks_missed_while_down_and_without_it_they_are_skipped() {
    let h = Herd::up();
    start_file(
        &h,
        "[[job]]\nname = \"catch\"\ncommand = \"true\"\nschedule = \"*/3 * * * * *\"\ncatch_up = true\n\n[[job]]\nname = \"nocatch\"\ncommand = \"true\"\nschedule = \"*/3 * * * * *\"\n",
    );
    wait_history(&h, "catch", Duration::from_secs(10), |r| {
        !ended(r, "succeeded").is_empty()
    });
    wait_history(&h, "nocatch", Duration::from_secs(10), |r| {
        !ended(r, "succeeded").is_empty()
    });
    h.ok(&["down"]);
    // Down across at least two ticks (every 3 s), and back up 1.7–2.5 s after a tick, so
    // the latest missed tick is past its grace of half a period.
    std::thread::sleep(Duration::from_secs(6));
    wait_until("1.7 s past a tick", Duration::from_secs(4), || {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 3000;
        (1700..2500).contains(&ms)
    });
    h.ok(&["up"]);
    let runs = wait_history(&h, "catch", Duration::from_secs(10), |r| {
        r.iter()
            .any(|r| r["trigger"] == "catch_up" && r["state"] == "ended")
    });
    assert_eq!(
        runs.iter().filter(|r| r["trigger"] == "catch_up").count(),
        1,
        "one run for all missed ticks: {runs:?}"
    );
    let runs = wait_history(&h, "nocatch", Duration::from_secs(10), |r| {
        r.iter().any(|r| r["detail"] == "missed")
    });
    assert!(runs.iter().all(|r| r["trigger"] != "catch_up"), "{runs:?}");
}

/// The run's `sh` process, from the history's pid.
fn running_pid(h: &Herd, job: &str) -> u32 {
    let runs = wait_history(h, job, Duration::from_secs(10), |r| {
        r.iter()
            .any(|r| r["state"] == "running" && r["pid"].is_u64())
    });
    runs.iter().find(|r| r["state"] == "running").unwrap()["pid"]
        .as_u64()
        .unwrap() as u32
}

#[test]
fn a_run_alive_after_a_daemon_sigkill_is_adopted_and_a_vanished_one_is_lost_or_queued_again() {
    let h = Herd::up();
    let done = h.path("done");
    start_file(
        &h,
        &format!(
            "[[job]]\nname = \"long\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 3; echo $HERD_RUN >> {}\"]\n\n[[job]]\nname = \"old\"\ncommand = \"sleep\"\nargs = [\"300\"]\nretries = 1\n\n[[job]]\nname = \"young\"\ncommand = \"sleep\"\nargs = [\"300\"]\n",
            done.display()
        ),
    );
    let long = h.json(&["run", "long", "--json"])["id"].as_u64().unwrap();
    h.ok(&["run", "old"]);
    h.ok(&["run", "young"]);
    let (old_pid, young_pid) = (running_pid(&h, "old"), running_pid(&h, "young"));
    running_pid(&h, "long");
    h.ok(&["kill"]);
    // Both vanish while the daemon is gone; `old` is made to have started 100 s ago.
    for pid in [old_pid, young_pid] {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let path = h.path("jobs.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for r in state["running"].as_array_mut().unwrap() {
        if r["job"] == "old" {
            r["started_ms"] = Value::from(r["started_ms"].as_u64().unwrap() - 100_000);
        }
    }
    std::fs::write(&path, state.to_string()).unwrap();
    h.ok(&["up"]);
    // The live one is adopted and ends (its exit status cannot be seen: reason unknown).
    let runs = wait_history(&h, "long", Duration::from_secs(15), |r| {
        r.iter().any(|r| r["state"] == "ended")
    });
    assert_eq!(runs.len(), 1, "adopted, not started again: {runs:?}");
    assert_eq!(runs[0]["reason"], "unknown");
    assert_eq!(runs[0]["adopted"], true);
    assert_eq!(read_lines(&done), [long.to_string()]);
    // The old one is lost and retried per its policy; the young one runs again as it was.
    let runs = wait_history(&h, "old", Duration::from_secs(10), |r| {
        r.iter().any(|r| r["reason"] == "lost")
            && r.iter()
                .any(|r| r["attempt"] == 2 && r["state"] == "running")
    });
    assert_eq!(ended(&runs, "lost").len(), 1);
    let runs = wait_history(&h, "young", Duration::from_secs(10), |r| {
        r.iter().any(|r| {
            r["state"] == "running" && r["pid"].as_u64().is_some_and(|p| p as u32 != young_pid)
        })
    });
    assert_eq!(
        runs.len(),
        1,
        "queued again as the same run, not judged lost: {runs:?}"
    );
    assert_eq!(runs[0]["attempt"], 1);
    let events = h.ok(&["events", "old", "-n", "100", "--json"]);
    assert!(events.contains("\"job_lost\""), "{events}");
}

#[test]
fn run_wait_streams_the_output_and_exits_with_the_code_and_logs_keep_each_run() {
    let h = Herd::up();
    start_file(
        &h,
        "[[job]]\nname = \"say\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo out-$HERD_RUN-$1; exit 7\", \"sh\"]\n",
    );
    let out = h.run(&["run", "say", "--wait", "--", "extra"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = history(&h, "say")[0]["id"].as_u64().unwrap();
    assert!(stdout.contains(&format!("out-{id}-extra")), "{stdout}");
    h.ok(&["run", "say"]);
    wait_history(&h, "say", Duration::from_secs(10), |r| {
        ended(r, "failed").len() == 2
    });
    let first = h.ok(&["logs", "say", "--run", &id.to_string()]);
    assert!(first.contains(&format!("out-{id}-extra")), "{first}");
    let latest = h.ok(&["logs", "say"]);
    assert!(
        latest.contains(&format!("out-{}-", id + 1)) && !latest.contains("extra"),
        "{latest}"
    );
    assert!(
        h.ok(&["events", "say", "-n", "50", "--json"])
            .contains("\"job_finished\"")
    );
}

#[test]
fn bad_job_keys_refuse_the_whole_file_and_unknown_jobs_are_named() {
    let h = Herd::up();
    for (bad, key) in [
        ("schedule = \"every night\"", "schedule"),
        (
            "schedule = \"0 3 * * *\"\ntimezone = \"Mars/Base\"",
            "timezone",
        ),
        ("overlap = \"sometimes\"", "overlap"),
        ("priority = 99999999", "priority"),
    ] {
        let file = h.app_file(
            "bad.toml",
            &format!("[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"60\"]\n\n[[job]]\nname = \"nightly\"\ncommand = \"true\"\n{bad}\n"),
        );
        let err = h.fails(&["start", &file]);
        assert!(
            err.contains("job `nightly`") && err.contains(key),
            "{bad}: {err}"
        );
        assert!(h.ps().is_empty(), "nothing of a refused file starts");
    }
    let out = h.run(&["run", "nosuch"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job `nosuch` not found"));
}

/// CPU time (user + system, clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_daemon_with_jobs_and_nothing_due_does_not_spin() {
    // Regression: every pass of the scheduler woke itself again, so each daemon spun a core
    // (seen as leader flapping in the chaos suite). Not a speed claim: 2 s of a correct idle
    // daemon cost well under 0.1 s of CPU; the spinning one cost 2 s.
    let h = Herd::up();
    start_file(
        &h,
        "[[job]]\nname = \"nightly\"\ncommand = \"true\"\nschedule = \"0 3 * * *\"\n\n[[job]]\nname = \"manual\"\ncommand = \"true\"\n",
    );
    h.ok(&["run", "manual"]);
    wait_history(&h, "manual", Duration::from_secs(10), |r| {
        !ended(r, "succeeded").is_empty()
    });
    let pid = h.daemon_pid().expect("daemon pid");
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(used < 50, "the idle daemon used {used} ticks of CPU in 2 s");
}
