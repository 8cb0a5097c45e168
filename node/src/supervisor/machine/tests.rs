//! The machine without processes: every status against every input (the matrix), then the
//! paths that take several steps (a stop during a spawn, a forced restart, a crash loop).

use super::*;
use crate::supervisor::backoff::RestartPolicy;
use crate::supervisor::instance::Instance;

const NOW_MS: u64 = 1_000_000;
const FRESH: u64 = 99;

fn spec() -> AppSpec {
    let mut s = AppSpec::quick("web", "sleep", vec!["60".into()]);
    s.restart = RestartPolicy::Always;
    s.max_memory_mb = Some(1);
    s
}

fn ctx(now: Instant) -> Ctx {
    Ctx {
        now_ms: NOW_MS,
        boot_ms: NOW_MS,
        now,
        fresh_spawn_id: FRESH,
        closing: false,
        singleton: false,
        one_shot: false,
        lease_valid: false,
    }
}

/// An instance in `status`; the ones that may have a process have pid 10.
fn instance(status: Status, now: Instant) -> Instance {
    let mut i = Instance::new(0);
    i.status = status;
    i.spawn_id = 1;
    if status.has_process() {
        i.pid = Some(10);
        i.signature = Some(5);
        i.started_at_ms = Some(NOW_MS - 5_000);
        i.started_boot_ms = Some(NOW_MS - 5_000);
    }
    if status == Status::Stopping {
        i.kill_at = Some(now + Duration::from_secs(10));
    }
    if status == Status::Running {
        // Its app sent READY=1 and the watchdog is due now.
        i.notified_ready = true;
        i.watchdog_due = Some(now);
    }
    i.retiring = Some(Retiring {
        pid: 9,
        signature: Some(4),
        started_at_ms: Some(0),
        started_boot_ms: Some(0),
        spawn_id: 0,
        exited: false,
    });
    i
}

fn exit(code: i32) -> ExitRecord {
    ExitRecord {
        at_ms: NOW_MS,
        code: Some(code),
        signal: None,
        reason: "exited".into(),
    }
}

/// Effects in a form a table can hold: `emit:started`, `spawn`, `signal:SIGTERM:10`, ...
fn summary(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Fact { fact, .. } => format!("emit:{}", fact.to_event().0),
            Effect::Spawn { .. } => "spawn".into(),
            Effect::SignalGroup { pgid, signal } => format!("signal:{}:{pgid}", signal.as_str()),
            Effect::WatchGroup { pgid, .. } => format!("watch:{pgid}"),
            Effect::Timer { .. } => "timer".into(),
            Effect::WaitDependencies { .. } => "wait_deps".into(),
            Effect::StartProbes { .. } => "probes".into(),
            Effect::WatchAdopted { .. } => "watch_adopted".into(),
            Effect::WatchMain { pid, .. } => format!("watch_main:{pid}"),
            Effect::GuardLease { .. } => "guard".into(),
            Effect::ForgetLease { .. } => "forget".into(),
            Effect::NoteInLog(_) => "note".into(),
            Effect::StopUntracked { pgid, .. } => format!("untracked:{pgid}"),
        })
        .collect()
}

fn inputs() -> Vec<(&'static str, Input)> {
    let old = Retiring {
        pid: 9,
        signature: Some(4),
        started_at_ms: Some(0),
        started_boot_ms: Some(0),
        spawn_id: 0,
        exited: false,
    };
    vec![
        ("start", Input::Start { waiting: vec![] }),
        (
            "start_waiting",
            Input::Start {
                waiting: vec!["db".into()],
            },
        ),
        ("deps_ready", Input::DependenciesReady),
        ("lease", Input::LeaseGranted),
        ("backoff_elapsed", Input::BackoffElapsed),
        (
            "spawned",
            Input::SpawnSucceeded {
                pid: Some(20),
                signature: Some(7),
            },
        ),
        (
            "spawn_failed",
            Input::SpawnFailed {
                error: "no such file".into(),
            },
        ),
        (
            "exited",
            Input::Exited {
                pid: None,
                exit: exit(1),
                group_alive: false,
            },
        ),
        (
            "exited_group_alive",
            Input::Exited {
                pid: None,
                exit: exit(1),
                group_alive: true,
            },
        ),
        ("replaced_exited", Input::ReplacedExited { exit: exit(0) }),
        ("stop", Input::StopRequested { timeout: None }),
        ("group_empty", Input::GroupEmpty),
        (
            "deadline",
            Input::StopDeadline {
                pgid: 10,
                after: Duration::from_secs(10),
            },
        ),
        ("gave_up", Input::GaveUp { pgid: 10 }),
        (
            "probe_ok",
            Input::Probe {
                result: Ok(()),
                counts: true,
            },
        ),
        (
            "probe_err",
            Input::Probe {
                result: Err("refused".into()),
                counts: true,
            },
        ),
        (
            "over_memory",
            Input::Sampled(ProcMetrics {
                rss_bytes: 2 * 1024 * 1024,
                ..Default::default()
            }),
        ),
        (
            "restored_alive",
            Input::Restored {
                alive: true,
                retiring_alive: false,
                wanted: true,
                waiting: vec![],
            },
        ),
        (
            "restored_dead",
            Input::Restored {
                alive: false,
                retiring_alive: false,
                wanted: true,
                waiting: vec![],
            },
        ),
        (
            "reclaimed",
            Input::Reclaimed {
                pid: 30,
                signature: 8,
            },
        ),
        ("replace", Input::Replace),
        (
            "roll_back",
            Input::RollBack {
                old,
                old_alive: true,
            },
        ),
        ("retired", Input::Retired { pid: 9 }),
        ("drop_replaced", Input::DropReplaced),
        ("ready", Input::Ready),
        ("status", Input::Status("warming up".into())),
        ("watchdog_ping", Input::WatchdogPing),
        ("watchdog_elapsed", Input::WatchdogElapsed),
        (
            "main_pid",
            Input::MainPid {
                pid: 11,
                signature: Some(6),
            },
        ),
    ]
}

const STATUSES: [Status; 6] = [
    Status::Starting,
    Status::Running,
    Status::Backoff,
    Status::Stopping,
    Status::Stopped,
    Status::Crashed,
];

/// `(from, input, to, effects)` for every status and input.
#[rustfmt::skip]
const MATRIX: &[(&str, &str, &str, &[&str])] = &[
    // starting
    ("starting", "start", "starting", &[]),
    ("starting", "start_waiting", "starting", &[]),
    ("starting", "deps_ready", "starting", &[]),
    ("starting", "lease", "starting", &[]),
    ("starting", "backoff_elapsed", "starting", &[]),
    ("starting", "spawned", "starting", &["signal:SIGKILL:20"]),
    ("starting", "spawn_failed", "starting", &[]),
    ("starting", "exited", "backoff", &["forget", "emit:exited", "signal:SIGKILL:10", "emit:restarting", "timer"]),
    ("starting", "exited_group_alive", "backoff", &["forget", "emit:exited", "signal:SIGKILL:10", "emit:restarting", "timer"]),
    ("starting", "replaced_exited", "starting", &[]),
    ("starting", "stop", "stopping", &["emit:stopping", "signal:SIGTERM:10", "watch:10"]),
    ("starting", "group_empty", "starting", &[]),
    ("starting", "deadline", "starting", &[]),
    ("starting", "gave_up", "starting", &[]),
    ("starting", "probe_ok", "running", &["emit:health"]),
    ("starting", "probe_err", "starting", &["emit:health"]),
    ("starting", "over_memory", "stopping", &["emit:memory_limit", "emit:stopping", "signal:SIGTERM:10", "watch:10"]),
    ("starting", "restored_alive", "starting", &["emit:adopted", "watch_adopted"]),
    ("starting", "restored_dead", "backoff", &["emit:died_while_down", "emit:restarting", "timer"]),
    ("starting", "reclaimed", "running", &[]),
    ("starting", "replace", "starting", &["emit:reload", "spawn"]),
    ("starting", "roll_back", "running", &["emit:reload"]),
    ("starting", "retired", "starting", &[]),
    ("starting", "drop_replaced", "starting", &["signal:SIGKILL:9"]),
    ("starting", "ready", "running", &["emit:ready"]),
    ("starting", "status", "starting", &[]),
    ("starting", "watchdog_ping", "starting", &[]),
    ("starting", "watchdog_elapsed", "starting", &[]),
    ("starting", "main_pid", "starting", &["emit:main_pid", "watch_main:11"]),
    // running
    ("running", "start", "running", &[]),
    ("running", "start_waiting", "running", &[]),
    ("running", "deps_ready", "running", &[]),
    ("running", "lease", "running", &[]),
    ("running", "backoff_elapsed", "running", &[]),
    ("running", "spawned", "running", &["signal:SIGKILL:20"]),
    ("running", "spawn_failed", "running", &[]),
    ("running", "exited", "backoff", &["forget", "emit:exited", "signal:SIGKILL:10", "emit:restarting", "timer"]),
    ("running", "exited_group_alive", "backoff", &["forget", "emit:exited", "signal:SIGKILL:10", "emit:restarting", "timer"]),
    ("running", "replaced_exited", "running", &[]),
    ("running", "stop", "stopping", &["emit:stopping", "signal:SIGTERM:10", "watch:10"]),
    ("running", "group_empty", "running", &[]),
    ("running", "deadline", "running", &[]),
    ("running", "gave_up", "running", &[]),
    ("running", "probe_ok", "running", &["emit:health"]),
    ("running", "probe_err", "running", &["emit:health"]),
    ("running", "over_memory", "stopping", &["emit:memory_limit", "emit:stopping", "signal:SIGTERM:10", "watch:10"]),
    ("running", "restored_alive", "running", &["emit:adopted", "watch_adopted"]),
    ("running", "restored_dead", "backoff", &["emit:died_while_down", "emit:restarting", "timer"]),
    ("running", "reclaimed", "running", &[]),
    ("running", "replace", "starting", &["emit:reload", "spawn"]),
    ("running", "roll_back", "running", &["emit:reload"]),
    ("running", "retired", "running", &[]),
    ("running", "drop_replaced", "running", &["signal:SIGKILL:9"]),
    ("running", "ready", "running", &[]),
    ("running", "status", "running", &[]),
    ("running", "watchdog_ping", "running", &[]),
    ("running", "watchdog_elapsed", "stopping", &["emit:watchdog", "emit:stopping", "signal:SIGTERM:10", "watch:10"]),
    ("running", "main_pid", "running", &["emit:main_pid", "watch_main:11"]),
    // backoff
    ("backoff", "start", "starting", &["spawn"]),
    ("backoff", "start_waiting", "starting", &["emit:waiting", "wait_deps"]),
    ("backoff", "deps_ready", "backoff", &[]),
    ("backoff", "lease", "backoff", &[]),
    ("backoff", "backoff_elapsed", "starting", &["spawn"]),
    ("backoff", "spawned", "backoff", &["signal:SIGKILL:20"]),
    ("backoff", "spawn_failed", "backoff", &[]),
    ("backoff", "exited", "backoff", &[]),
    ("backoff", "exited_group_alive", "backoff", &[]),
    ("backoff", "replaced_exited", "backoff", &[]),
    ("backoff", "stop", "stopped", &["emit:stopped"]),
    ("backoff", "group_empty", "backoff", &[]),
    ("backoff", "deadline", "backoff", &[]),
    ("backoff", "gave_up", "backoff", &[]),
    ("backoff", "probe_ok", "backoff", &[]),
    ("backoff", "probe_err", "backoff", &[]),
    ("backoff", "over_memory", "backoff", &["emit:memory_limit"]),
    ("backoff", "restored_alive", "backoff", &["timer"]),
    ("backoff", "restored_dead", "backoff", &["timer"]),
    ("backoff", "reclaimed", "running", &[]),
    ("backoff", "replace", "backoff", &[]),
    ("backoff", "roll_back", "running", &["emit:reload"]),
    ("backoff", "retired", "backoff", &[]),
    ("backoff", "drop_replaced", "backoff", &["signal:SIGKILL:9"]),
    ("backoff", "ready", "backoff", &[]),
    ("backoff", "status", "backoff", &[]),
    ("backoff", "watchdog_ping", "backoff", &[]),
    ("backoff", "watchdog_elapsed", "backoff", &[]),
    ("backoff", "main_pid", "backoff", &[]),
    // stopping
    ("stopping", "start", "stopping", &[]),
    ("stopping", "start_waiting", "stopping", &[]),
    ("stopping", "deps_ready", "stopping", &[]),
    ("stopping", "lease", "stopping", &[]),
    ("stopping", "backoff_elapsed", "stopping", &[]),
    ("stopping", "spawned", "stopping", &["signal:SIGKILL:20"]),
    ("stopping", "spawn_failed", "stopping", &[]),
    ("stopping", "exited", "stopped", &["forget", "emit:exited", "emit:stopped"]),
    ("stopping", "exited_group_alive", "stopping", &["forget", "emit:exited"]),
    ("stopping", "replaced_exited", "stopping", &[]),
    ("stopping", "stop", "stopping", &[]),
    ("stopping", "group_empty", "stopping", &[]),
    ("stopping", "deadline", "stopping", &["emit:killed", "signal:SIGKILL:10"]),
    ("stopping", "gave_up", "stopped", &["emit:stopped"]),
    ("stopping", "probe_ok", "stopping", &[]),
    ("stopping", "probe_err", "stopping", &[]),
    ("stopping", "over_memory", "stopping", &["emit:memory_limit"]),
    ("stopping", "restored_alive", "running", &["emit:adopted", "watch_adopted"]),
    ("stopping", "restored_dead", "starting", &["spawn"]),
    ("stopping", "reclaimed", "running", &[]),
    ("stopping", "replace", "stopping", &[]),
    ("stopping", "roll_back", "running", &["emit:reload"]),
    ("stopping", "retired", "stopping", &[]),
    ("stopping", "drop_replaced", "stopping", &["signal:SIGKILL:9"]),
    ("stopping", "ready", "stopping", &[]),
    ("stopping", "status", "stopping", &[]),
    ("stopping", "watchdog_ping", "stopping", &[]),
    ("stopping", "watchdog_elapsed", "stopping", &[]),
    ("stopping", "main_pid", "stopping", &[]),
    // stopped
    ("stopped", "start", "starting", &["spawn"]),
    ("stopped", "start_waiting", "starting", &["emit:waiting", "wait_deps"]),
    ("stopped", "deps_ready", "stopped", &[]),
    ("stopped", "lease", "stopped", &[]),
    ("stopped", "backoff_elapsed", "stopped", &[]),
    ("stopped", "spawned", "stopped", &["signal:SIGKILL:20"]),
    ("stopped", "spawn_failed", "stopped", &[]),
    ("stopped", "exited", "stopped", &[]),
    ("stopped", "exited_group_alive", "stopped", &[]),
    ("stopped", "replaced_exited", "stopped", &[]),
    ("stopped", "stop", "stopped", &[]),
    ("stopped", "group_empty", "stopped", &[]),
    ("stopped", "deadline", "stopped", &[]),
    ("stopped", "gave_up", "stopped", &[]),
    ("stopped", "probe_ok", "stopped", &[]),
    ("stopped", "probe_err", "stopped", &[]),
    ("stopped", "over_memory", "stopped", &["emit:memory_limit"]),
    ("stopped", "restored_alive", "starting", &["spawn"]),
    ("stopped", "restored_dead", "starting", &["spawn"]),
    ("stopped", "reclaimed", "running", &[]),
    ("stopped", "replace", "starting", &["spawn"]),
    ("stopped", "roll_back", "running", &["emit:reload"]),
    ("stopped", "retired", "stopped", &[]),
    ("stopped", "drop_replaced", "stopped", &["signal:SIGKILL:9"]),
    ("stopped", "ready", "stopped", &[]),
    ("stopped", "status", "stopped", &[]),
    ("stopped", "watchdog_ping", "stopped", &[]),
    ("stopped", "watchdog_elapsed", "stopped", &[]),
    ("stopped", "main_pid", "stopped", &[]),
    // crashed
    ("crashed", "start", "starting", &["spawn"]),
    ("crashed", "start_waiting", "starting", &["emit:waiting", "wait_deps"]),
    ("crashed", "deps_ready", "crashed", &[]),
    ("crashed", "lease", "crashed", &[]),
    ("crashed", "backoff_elapsed", "crashed", &[]),
    ("crashed", "spawned", "crashed", &["signal:SIGKILL:20"]),
    ("crashed", "spawn_failed", "crashed", &[]),
    ("crashed", "exited", "crashed", &[]),
    ("crashed", "exited_group_alive", "crashed", &[]),
    ("crashed", "replaced_exited", "crashed", &[]),
    ("crashed", "stop", "stopped", &["emit:stopped"]),
    ("crashed", "group_empty", "crashed", &[]),
    ("crashed", "deadline", "crashed", &[]),
    ("crashed", "gave_up", "crashed", &[]),
    ("crashed", "probe_ok", "crashed", &[]),
    ("crashed", "probe_err", "crashed", &[]),
    ("crashed", "over_memory", "crashed", &["emit:memory_limit"]),
    ("crashed", "restored_alive", "crashed", &[]),
    ("crashed", "restored_dead", "crashed", &[]),
    ("crashed", "reclaimed", "running", &[]),
    ("crashed", "replace", "starting", &["spawn"]),
    ("crashed", "roll_back", "running", &["emit:reload"]),
    ("crashed", "retired", "crashed", &[]),
    ("crashed", "drop_replaced", "crashed", &["signal:SIGKILL:9"]),
    ("crashed", "ready", "crashed", &[]),
    ("crashed", "status", "crashed", &[]),
    ("crashed", "watchdog_ping", "crashed", &[]),
    ("crashed", "watchdog_elapsed", "crashed", &[]),
    ("crashed", "main_pid", "crashed", &[]),
];

fn matrix() -> Vec<(Status, &'static str, Status, Vec<String>)> {
    let now = crate::supervisor::clock::monotonic();
    let mut rows = Vec::new();
    for from in STATUSES {
        for (name, input) in inputs() {
            let mut inst = instance(from, now);
            let effects = step(&mut inst, &spec(), input, &ctx(now));
            rows.push((from, name, inst.status, summary(&effects)));
        }
    }
    rows
}

#[test]
fn every_status_against_every_input() {
    let got = matrix();
    assert_eq!(got.len(), STATUSES.len() * inputs().len());
    assert_eq!(MATRIX.len(), got.len(), "the matrix misses rows");
    for ((from, input, to, effects), row) in got.iter().zip(MATRIX) {
        let expected = (
            row.0,
            row.1,
            row.2,
            row.3.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        assert_eq!(
            (from.as_str(), *input, to.as_str(), effects.clone()),
            expected,
            "{} × {}",
            from.as_str(),
            input
        );
    }
}

/// Prints the matrix as `MATRIX` rows (run with `--ignored --nocapture` after a change,
/// then read every changed row before pasting it).
#[test]
#[ignore]
fn print_matrix() {
    for (from, input, to, effects) in matrix() {
        let effects: Vec<String> = effects.iter().map(|e| format!("{e:?}")).collect();
        println!(
            "(\"{}\", \"{input}\", \"{}\", &[{}]),",
            from.as_str(),
            to.as_str(),
            effects.join(", ")
        );
    }
}

#[test]
fn a_stop_during_a_spawn_signals_the_process_once_it_exists() {
    let now = crate::supervisor::clock::monotonic();
    let mut i = instance(Status::Stopped, now);
    let fx = step(&mut i, &spec(), Input::Start { waiting: vec![] }, &ctx(now));
    assert_eq!(summary(&fx), ["spawn"]);
    assert!(i.spawning && i.pid.is_none() && i.status == Status::Starting);
    assert_eq!(i.spawn_id, FRESH);

    let fx = step(
        &mut i,
        &spec(),
        Input::StopRequested { timeout: None },
        &ctx(now),
    );
    assert_eq!(summary(&fx), ["emit:stopping"]);
    assert_eq!(i.status, Status::Stopping);

    let spawned = Input::SpawnSucceeded {
        pid: Some(20),
        signature: Some(7),
    };
    let fx = step(&mut i, &spec(), spawned, &ctx(now));
    assert_eq!(
        summary(&fx),
        ["emit:started", "signal:SIGTERM:20", "watch:20"]
    );
    assert_eq!(
        (i.status, i.pid, i.spawning),
        (Status::Stopping, Some(20), false)
    );

    let exited = Input::Exited {
        pid: None,
        exit: exit(143),
        group_alive: false,
    };
    let fx = step(&mut i, &spec(), exited, &ctx(now));
    assert_eq!(summary(&fx), ["forget", "emit:exited", "emit:stopped"]);
    assert_eq!(i.status, Status::Stopped);
    assert_eq!(i.last_exit().unwrap().reason, "stopped");
}

#[test]
fn a_spawn_nobody_waits_for_is_killed() {
    let now = crate::supervisor::clock::monotonic();
    let mut i = instance(Status::Stopped, now);
    let spawned = Input::SpawnSucceeded {
        pid: Some(20),
        signature: Some(7),
    };
    let fx = step(&mut i, &spec(), spawned, &ctx(now));
    assert_eq!(summary(&fx), ["signal:SIGKILL:20"]);
    assert_eq!((i.status, i.pid), (Status::Stopped, None));
}

#[test]
fn a_singleton_without_the_lease_waits_for_it() {
    let now = crate::supervisor::clock::monotonic();
    let mut i = instance(Status::Stopped, now);
    let c = Ctx {
        singleton: true,
        ..ctx(now)
    };
    let fx = step(&mut i, &spec(), Input::Start { waiting: vec![] }, &c);
    assert_eq!(summary(&fx), ["emit:awaiting_lease"]);
    assert_eq!(
        (i.status, i.pid, i.spawning),
        (Status::Starting, None, false)
    );
    let granted = Ctx {
        lease_valid: true,
        ..c
    };
    let fx = step(&mut i, &spec(), Input::LeaseGranted, &granted);
    assert_eq!(summary(&fx), ["spawn"]);
    let spawned = Input::SpawnSucceeded {
        pid: Some(20),
        signature: Some(7),
    };
    let fx = step(&mut i, &spec(), spawned, &granted);
    assert_eq!(summary(&fx), ["guard", "emit:started"]);
}

#[test]
fn failed_probes_restart_the_instance_whatever_the_policy() {
    let now = crate::supervisor::clock::monotonic();
    let mut s = spec();
    s.restart = RestartPolicy::Never;
    s.health = Some(toml::from_str("tcp = \"127.0.0.1:1\"\nfailures = 2").unwrap());
    let mut i = instance(Status::Stopped, now);
    step(&mut i, &s, Input::Start { waiting: vec![] }, &ctx(now));
    let spawned = Input::SpawnSucceeded {
        pid: Some(20),
        signature: Some(7),
    };
    let fx = step(&mut i, &s, spawned, &ctx(now));
    assert_eq!(summary(&fx), ["emit:started", "probes"]);
    assert_eq!(
        i.status,
        Status::Starting,
        "not running before a probe passes"
    );
    let fail = || Input::Probe {
        result: Err("refused".into()),
        counts: true,
    };
    assert_eq!(
        summary(&step(&mut i, &s, fail(), &ctx(now))),
        ["emit:health"]
    );
    assert_eq!(
        summary(&step(&mut i, &s, fail(), &ctx(now))),
        [
            "emit:unhealthy_restart",
            "emit:stopping",
            "signal:SIGTERM:20",
            "watch:20"
        ]
    );
    assert!(
        i.restart_reason
            .as_deref()
            .unwrap()
            .starts_with("unhealthy: 2")
    );
    let exited = Input::Exited {
        pid: None,
        exit: exit(143),
        group_alive: true,
    };
    step(&mut i, &s, exited, &ctx(now));
    assert_eq!(i.status, Status::Stopping, "the group still lives");
    let fx = step(&mut i, &s, Input::GroupEmpty, &ctx(now));
    assert_eq!(summary(&fx), ["emit:restarting", "timer"]);
    assert_eq!(i.status, Status::Backoff);
    assert!(i.last_exit().unwrap().reason.starts_with("unhealthy"));
}

#[test]
fn an_explicit_shorter_timeout_brings_the_kill_forward() {
    let now = crate::supervisor::clock::monotonic();
    let mut i = instance(Status::Running, now);
    let fx = step(
        &mut i,
        &spec(),
        Input::StopRequested { timeout: None },
        &ctx(now),
    );
    assert!(
        matches!(fx[2], Effect::WatchGroup { timeout, .. } if timeout == Duration::from_secs(10))
    );
    let first = i.kill_at.unwrap();
    let shorter = Input::StopRequested {
        timeout: Some(Duration::from_secs(1)),
    };
    assert!(step(&mut i, &spec(), shorter, &ctx(now)).is_empty());
    assert!(i.kill_at.unwrap() < first);
    let longer = Input::StopRequested {
        timeout: Some(Duration::from_secs(100)),
    };
    step(&mut i, &spec(), longer, &ctx(now));
    assert!(
        i.kill_at.unwrap() < first,
        "a longer timeout never delays the kill"
    );
}

#[test]
fn exits_while_closing_are_not_restarted() {
    let now = crate::supervisor::clock::monotonic();
    let mut i = instance(Status::Running, now);
    let closing = Ctx {
        closing: true,
        ..ctx(now)
    };
    let exited = Input::Exited {
        pid: None,
        exit: exit(1),
        group_alive: false,
    };
    let fx = step(&mut i, &spec(), exited, &closing);
    assert_eq!(summary(&fx), ["forget", "emit:exited", "signal:SIGKILL:10"]);
    assert_eq!(i.status, Status::Stopped);
}

#[test]
fn a_crash_loop_ends_crashed() {
    let now = crate::supervisor::clock::monotonic();
    let mut s = spec();
    s.max_restarts = 2;
    let mut i = instance(Status::Running, now);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        i.pid = Some(10);
        i.status = Status::Running;
        let exited = Input::Exited {
            pid: None,
            exit: exit(1),
            group_alive: false,
        };
        step(&mut i, &s, exited, &ctx(now));
        statuses.push(i.status);
    }
    assert_eq!(
        statuses,
        [Status::Backoff, Status::Backoff, Status::Crashed]
    );
    assert_eq!(i.restarts, 2);
}

/// Exits at a crash every `every_ms` of boot time while the wall clock reads `wall(k)` at the
/// k-th exit; the statuses after each.
fn crash_every(s: &AppSpec, every_ms: u64, wall: impl Fn(u64) -> u64, n: u64) -> Vec<Status> {
    let now = crate::supervisor::clock::monotonic();
    let mut i = instance(Status::Running, now);
    let mut statuses = Vec::new();
    for k in 1..=n {
        i.pid = Some(10);
        i.status = Status::Running;
        let c = Ctx {
            now_ms: wall(k),
            boot_ms: NOW_MS + k * every_ms,
            ..ctx(now)
        };
        let exited = Input::Exited {
            pid: None,
            exit: exit(1),
            group_alive: false,
        };
        step(&mut i, s, exited, &c);
        statuses.push(i.status);
    }
    statuses
}

#[test]
fn a_wall_clock_stepped_back_keeps_the_crash_window_sliding() {
    // Three restarts allowed per 10 s; one crash every 4 s never reaches it. The wall clock
    // steps back an hour after the second crash: on wall time every restart since would stay
    // inside the window for that hour and the third would end the app `crashed`.
    let mut s = spec();
    s.max_restarts = 3;
    s.restart_window_s = 10;
    let hour = 3_600_000;
    let statuses = crash_every(
        &s,
        4_000,
        |k| {
            if k <= 2 {
                NOW_MS + hour + k * 4_000
            } else {
                NOW_MS + k * 4_000
            }
        },
        12,
    );
    assert!(
        statuses.iter().all(|st| *st == Status::Backoff),
        "{statuses:?}"
    );
}

#[test]
fn a_wall_clock_stepped_forward_does_not_empty_the_crash_window() {
    // Three restarts allowed per hour; a crash every second. The wall clock steps two hours
    // forward after the second crash: on wall time the window would forget the first two and
    // allow three more.
    let mut s = spec();
    s.max_restarts = 3;
    s.restart_window_s = 3_600;
    let statuses = crash_every(
        &s,
        1_000,
        |k| {
            if k <= 2 {
                NOW_MS + k
            } else {
                NOW_MS + 7_200_000 + k
            }
        },
        6,
    );
    use Status::{Backoff, Crashed};
    assert_eq!(
        statuses,
        [Backoff, Backoff, Backoff, Crashed, Crashed, Crashed]
    );
}

fn notify_spec() -> AppSpec {
    let mut s = spec();
    s.max_memory_mb = None;
    s.ready = Some(crate::supervisor::notify::Readiness::Notify);
    s.watchdog_s = Some(2);
    s
}

/// A notifying instance spawned as pid 20 at `now`.
fn notifying(s: &AppSpec, now: Instant) -> Instance {
    let mut i = instance(Status::Stopped, now);
    step(&mut i, s, Input::Start { waiting: vec![] }, &ctx(now));
    let spawned = Input::SpawnSucceeded {
        pid: Some(20),
        signature: Some(7),
    };
    step(&mut i, s, spawned, &ctx(now));
    i
}

#[test]
fn a_notifying_app_runs_at_ready_and_its_watchdog_restarts_it_when_pings_stop() {
    let now = crate::supervisor::clock::monotonic();
    let s = notify_spec();
    let mut i = notifying(&s, now);
    assert_eq!(i.status, Status::Starting, "not running before READY=1");
    assert_eq!(i.watchdog_due, None, "the watchdog waits for READY=1");
    step(&mut i, &s, Input::WatchdogPing, &ctx(now));
    assert_eq!(i.watchdog_due, None, "a ping before READY=1 arms nothing");
    step(&mut i, &s, Input::Status("warming up".into()), &ctx(now));
    assert_eq!(i.status_text.as_deref(), Some("warming up"));

    let fx = step(&mut i, &s, Input::Ready, &ctx(now));
    assert_eq!(summary(&fx), ["emit:ready"]);
    assert_eq!(i.status, Status::Running);
    assert_eq!(i.watchdog_due, Some(now + Duration::from_secs(2)));
    assert!(step(&mut i, &s, Input::Ready, &ctx(now)).is_empty(), "once");

    let at = |secs: u64| ctx(now + Duration::from_secs(secs));
    assert!(step(&mut i, &s, Input::WatchdogPing, &at(1)).is_empty());
    assert_eq!(i.watchdog_due, Some(now + Duration::from_secs(3)));
    // The timer of the earlier deadline fires: pushed back, nothing happens.
    assert!(step(&mut i, &s, Input::WatchdogElapsed, &at(2)).is_empty());
    assert_eq!(i.status, Status::Running);

    let fx = step(&mut i, &s, Input::WatchdogElapsed, &at(3));
    assert_eq!(
        summary(&fx),
        [
            "emit:watchdog",
            "emit:stopping",
            "signal:SIGTERM:20",
            "watch:20"
        ]
    );
    let exited = Input::Exited {
        pid: Some(20),
        exit: exit(143),
        group_alive: false,
    };
    let fx = step(&mut i, &s, exited, &at(3));
    assert_eq!(
        summary(&fx),
        ["forget", "emit:exited", "emit:restarting", "timer"]
    );
    assert_eq!(i.status, Status::Backoff);
    assert_eq!(i.last_exit().unwrap().reason, "watchdog");
    // The next process starts over: no status text, not ready, no watchdog.
    let fx = step(&mut i, &s, Input::BackoffElapsed, &at(4));
    assert_eq!(summary(&fx), ["spawn"]);
    assert_eq!(
        (i.status_text.clone(), i.notified_ready, i.watchdog_due),
        (None, false, None)
    );
}

#[test]
fn with_a_probe_too_a_notifying_app_runs_once_ready_and_healthy() {
    let now = crate::supervisor::clock::monotonic();
    let mut s = notify_spec();
    s.health = Some(toml::from_str("tcp = \"127.0.0.1:1\"").unwrap());
    let ok = || Input::Probe {
        result: Ok(()),
        counts: true,
    };
    let mut i = notifying(&s, now);
    step(&mut i, &s, ok(), &ctx(now));
    assert_eq!(i.status, Status::Starting, "healthy but not READY=1 yet");
    step(&mut i, &s, Input::Ready, &ctx(now));
    assert_eq!(i.status, Status::Running);

    let mut i = notifying(&s, now);
    let fx = step(&mut i, &s, Input::Ready, &ctx(now));
    assert_eq!(summary(&fx), ["emit:ready"]);
    assert_eq!(
        i.status,
        Status::Starting,
        "READY=1 but no probe passed yet"
    );
    step(&mut i, &s, ok(), &ctx(now));
    assert_eq!(i.status, Status::Running);
}

#[test]
fn after_mainpid_the_leaders_exit_is_ignored_and_the_main_process_exit_restarts() {
    let now = crate::supervisor::clock::monotonic();
    let s = notify_spec();
    let mut i = notifying(&s, now);
    let named = Input::MainPid {
        pid: 21,
        signature: Some(8),
    };
    let fx = step(&mut i, &s, named, &ctx(now));
    assert_eq!(summary(&fx), ["emit:main_pid", "watch_main:21"]);
    assert_eq!(
        (i.pid, i.main_pid, i.main_process()),
        (Some(20), Some(21), Some(21))
    );
    step(&mut i, &s, Input::Ready, &ctx(now));

    let leader_exit = Input::Exited {
        pid: Some(20),
        exit: exit(0),
        group_alive: true,
    };
    assert!(step(&mut i, &s, leader_exit, &ctx(now)).is_empty());
    assert_eq!(i.status, Status::Running);

    let main_exit = Input::Exited {
        pid: Some(21),
        exit: exit(1),
        group_alive: false,
    };
    let fx = step(&mut i, &s, main_exit, &ctx(now));
    // The group (led by 20, gone or not) is killed as after any exit.
    assert_eq!(
        summary(&fx),
        [
            "forget",
            "emit:exited",
            "signal:SIGKILL:20",
            "emit:restarting",
            "timer"
        ]
    );
    assert_eq!((i.status, i.pid, i.main_pid), (Status::Backoff, None, None));
}

#[test]
fn naming_the_leader_as_main_process_changes_nothing() {
    let now = crate::supervisor::clock::monotonic();
    let s = notify_spec();
    let mut i = notifying(&s, now);
    let leader = Input::MainPid {
        pid: 20,
        signature: Some(7),
    };
    assert!(step(&mut i, &s, leader, &ctx(now)).is_empty());
    assert_eq!(i.main_pid, None);
}
