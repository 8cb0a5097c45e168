//! The lifecycle facts the supervisor records: each one is a line in `events.jsonl` (its
//! variant names the `event`, its fields are the event's fields) and a line in the daemon's
//! log, written together by `Fact::record`. The README's event list is held to this enum by
//! a test below, which also lists (`OUTSIDE`) the audit events other parts of the daemon record.

use super::events::EventLog;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Fact {
    Started {
        restarts: u32,
    },
    Exited {
        code: Option<i32>,
        signal: Option<String>,
        reason: String,
    },
    Restarting {
        delay_ms: u64,
        restart: u32,
    },
    Crashed {
        restarts: u32,
        max_restarts: u32,
        window_s: u64,
    },
    Stopping {
        signal: &'static str,
        timeout_s: f64,
    },
    /// `by`: `policy` when the restart policy left it stopped (a caller's `by` otherwise).
    Stopped {
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<&'static str>,
    },
    Killed {
        after_s: f64,
    },
    Health {
        from: &'static str,
        to: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    UnhealthyRestart {
        failures: u32,
        error: String,
    },
    MemoryLimit {
        rss_mb: u64,
        limit_mb: u64,
    },
    Reload(ReloadStep),
    Waiting {
        #[serde(rename = "for")]
        waiting_for: Vec<String>,
    },
    AwaitingLease,
    Adopted,
    DiedWhileDown,
    SpawnFailed {
        error: String,
    },
    Registered,
    Updated,
    Deleted,
    Scaled {
        from: u32,
        to: u32,
    },
    /// `reload`: the app has a probe, so it is reloaded rather than restarted.
    CronRestart {
        reload: bool,
    },
    /// The app sent `READY=1`; `probed`: running only once its probe passes too.
    Ready {
        probed: bool,
    },
    /// No `WATCHDOG=1` within `watchdog_s`: restarted.
    Watchdog {
        timeout_s: u64,
    },
    /// The app named its main process with `MAINPID=`.
    MainPid {
        main_pid: u32,
    },
    /// A watched file changed (`path`, relative to cwd), or, with `overflow`, changes were
    /// lost; `reload` as for `cron_restart`.
    WatchRestart {
        path: String,
        reload: bool,
        overflow: bool,
    },
    /// `herd watch NAME on|off`.
    Watching {
        on: bool,
    },
    /// The app's watches are in place (`directories` watched): changes from now on count.
    WatchStarted {
        directories: usize,
    },
    /// The app's files cannot be watched (`error` says why and what to change).
    WatchRefused {
        error: String,
    },
}

/// The steps of a reload, in the `step` field of a `reload` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ReloadStep {
    Begin { instances: usize },
    StartNew { old_pid: u32 },
    StopOld,
    RolledBack,
    Aborted { error: String },
    Done,
}

impl Fact {
    /// The `event` name and the fields of its line in `events.jsonl`.
    pub fn to_event(&self) -> (String, Value) {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        let name = value
            .as_object_mut()
            .and_then(|m| m.remove("event"))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        (name, value)
    }

    /// Writes the fact's log line and its event.
    pub fn record(&self, events: &EventLog, app: &str, instance: Option<u32>, pid: Option<u32>) {
        self.log(app, instance, pid);
        let (name, fields) = self.to_event();
        events.emit(app, instance, pid, &name, fields);
    }

    fn log(&self, app: &str, instance: Option<u32>, pid: Option<u32>) {
        match self {
            Fact::Started { restarts } => info!(app, instance, pid, restarts, "started"),
            Fact::Exited {
                code,
                signal,
                reason,
            } => {
                info!(app, instance, pid, code, signal = signal.as_deref(), reason = %reason, "exited")
            }
            Fact::Restarting { delay_ms, restart } => {
                info!(app, instance, delay_ms, restart, "restarting after delay")
            }
            Fact::Crashed {
                restarts, window_s, ..
            } => {
                warn!(
                    app,
                    instance,
                    restarts,
                    window_s,
                    "crashed: too many restarts; `herd restart` clears it"
                )
            }
            Fact::Stopping { signal, .. } => info!(app, instance, pid, signal, "stopping"),
            Fact::Stopped { by: Some(_) } => info!(app, instance, "stopped by policy"),
            Fact::Stopped { by: None } => info!(app, instance, "stopped"),
            Fact::Killed { after_s } => {
                let timeout_s = *after_s as u64;
                warn!(
                    app,
                    instance,
                    pgid = pid,
                    timeout_s,
                    "stop timeout: SIGKILL to the process group"
                )
            }
            Fact::Health { to: "healthy", .. } => info!(app, instance, "healthy"),
            Fact::Health { error, .. } => {
                warn!(
                    app,
                    instance,
                    error = error.as_deref().unwrap_or_default(),
                    "unhealthy"
                )
            }
            Fact::Reload(ReloadStep::StartNew { old_pid }) => {
                info!(app, instance, old_pid, "reload: starting a new process")
            }
            Fact::Reload(ReloadStep::StopOld) => {
                info!(
                    app,
                    instance,
                    old_pid = pid,
                    "reload: new process ready, stopping the old one"
                )
            }
            Fact::Waiting { waiting_for } => {
                info!(app, instance, waiting_for = ?waiting_for, "waiting for dependencies")
            }
            Fact::AwaitingLease => info!(app, instance, "waiting for the master's lease"),
            Fact::Adopted => info!(app, instance, pid, "adopted running instance"),
            Fact::DiedWhileDown => {
                info!(app, instance, "instance died while the daemon was down")
            }
            Fact::SpawnFailed { error } => warn!(app, instance, error = %error, "spawn failed"),
            Fact::Registered => info!(app, "app registered"),
            Fact::Updated => info!(app, "app updated"),
            Fact::Deleted => info!(app, "app deleted"),
            Fact::Scaled { from, to } => info!(app, from, to, "scale"),
            Fact::CronRestart { .. } => info!(app, "cron restart"),
            Fact::Ready { probed } => info!(app, instance, pid, probed, "ready (READY=1)"),
            Fact::Watchdog { timeout_s } => {
                warn!(
                    app,
                    instance, pid, timeout_s, "watchdog: no WATCHDOG=1 in time; restarting"
                )
            }
            Fact::MainPid { main_pid } => info!(app, instance, pgid = pid, main_pid, "main pid"),
            Fact::WatchRestart {
                path,
                reload,
                overflow,
            } => info!(app, path = %path, reload, overflow, "watched file changed: restarting"),
            Fact::Watching { on } => info!(app, on, "watching turned on or off"),
            Fact::WatchStarted { directories } => info!(app, directories, "watching files"),
            Fact::WatchRefused { error } => {
                warn!(app, error = %error, "not watching the app's files")
            }
            // Said by the transition that follows (a restart, a stop) or by the caller.
            Fact::UnhealthyRestart { .. } | Fact::MemoryLimit { .. } | Fact::Reload(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Events recorded outside the supervisor (access control, secrets, the cluster's admin
    /// API) with their fields; most with app `-`. Listed here so the README test covers them.
    const OUTSIDE: &[(&str, &[&str])] = &[
        ("secret_changed", &["secret", "version", "action", "by"]),
        ("secret_deleted", &["secret"]),
        ("token_created", &["accessor", "name", "role"]),
        ("token_revoked", &["accessor"]),
        ("secret_set", &["secret", "version"]),
        ("drain", &["node"]),
        ("undrain", &["node"]),
        ("cluster_step_down", &["leader"]),
        ("cluster_leave", &["node"]),
        ("deployed", &[]),
        ("undeployed", &[]),
        ("cluster_scaled", &["instances"]),
        ("cluster_restart", &["generation"]),
        ("node_offline", &["node", "addr"]),
        ("job_queued", &["run", "attempt", "priority", "trigger"]),
        ("job_started", &["run", "attempt", "trigger"]),
        ("job_finished", JOB_END),
        ("job_skipped", &["run", "reason", "tick_ms"]),
        ("job_lost", JOB_END),
    ];
    /// What `jobs::finish` records for a run's end (`detail` when there is one).
    const JOB_END: &[&str] = &[
        "run",
        "attempt",
        "exit",
        "signal",
        "reason",
        "duration_ms",
        "detail",
    ];

    /// One of every fact, every optional field set.
    fn samples() -> Vec<Fact> {
        let step = |s| Fact::Reload(s);
        vec![
            Fact::Started { restarts: 1 },
            Fact::Exited {
                code: Some(1),
                signal: Some("SIGTERM".into()),
                reason: "exited".into(),
            },
            Fact::Restarting {
                delay_ms: 1,
                restart: 1,
            },
            Fact::Crashed {
                restarts: 1,
                max_restarts: 1,
                window_s: 1,
            },
            Fact::Stopping {
                signal: "SIGTERM",
                timeout_s: 1.0,
            },
            Fact::Stopped { by: Some("policy") },
            Fact::Killed { after_s: 1.0 },
            Fact::Health {
                from: "unknown",
                to: "unhealthy",
                error: Some("refused".into()),
            },
            Fact::UnhealthyRestart {
                failures: 1,
                error: "refused".into(),
            },
            Fact::MemoryLimit {
                rss_mb: 1,
                limit_mb: 1,
            },
            step(ReloadStep::Begin { instances: 1 }),
            step(ReloadStep::StartNew { old_pid: 1 }),
            step(ReloadStep::StopOld),
            step(ReloadStep::RolledBack),
            step(ReloadStep::Aborted {
                error: "why".into(),
            }),
            step(ReloadStep::Done),
            Fact::Waiting {
                waiting_for: vec!["db".into()],
            },
            Fact::AwaitingLease,
            Fact::Adopted,
            Fact::DiedWhileDown,
            Fact::SpawnFailed {
                error: "why".into(),
            },
            Fact::Registered,
            Fact::Updated,
            Fact::Deleted,
            Fact::Scaled { from: 1, to: 2 },
            Fact::CronRestart { reload: true },
            Fact::Ready { probed: false },
            Fact::Watchdog { timeout_s: 1 },
            Fact::MainPid { main_pid: 7 },
            Fact::WatchRestart {
                path: "src/app.py".into(),
                reload: false,
                overflow: false,
            },
            Fact::Watching { on: true },
            Fact::WatchStarted { directories: 1 },
            Fact::WatchRefused {
                error: "why".into(),
            },
        ]
    }

    /// Every variant, so a new one cannot be left out of `samples` (the match is exhaustive).
    fn ordinal(f: &Fact) -> usize {
        match f {
            Fact::Started { .. } => 0,
            Fact::Exited { .. } => 1,
            Fact::Restarting { .. } => 2,
            Fact::Crashed { .. } => 3,
            Fact::Stopping { .. } => 4,
            Fact::Stopped { .. } => 5,
            Fact::Killed { .. } => 6,
            Fact::Health { .. } => 7,
            Fact::UnhealthyRestart { .. } => 8,
            Fact::MemoryLimit { .. } => 9,
            Fact::Reload(ReloadStep::Begin { .. }) => 10,
            Fact::Reload(ReloadStep::StartNew { .. }) => 11,
            Fact::Reload(ReloadStep::StopOld) => 12,
            Fact::Reload(ReloadStep::RolledBack) => 13,
            Fact::Reload(ReloadStep::Aborted { .. }) => 14,
            Fact::Reload(ReloadStep::Done) => 15,
            Fact::Waiting { .. } => 16,
            Fact::AwaitingLease => 17,
            Fact::Adopted => 18,
            Fact::DiedWhileDown => 19,
            Fact::SpawnFailed { .. } => 20,
            Fact::Registered => 21,
            Fact::Updated => 22,
            Fact::Deleted => 23,
            Fact::Scaled { .. } => 24,
            Fact::CronRestart { .. } => 25,
            Fact::Ready { .. } => 26,
            Fact::Watchdog { .. } => 27,
            Fact::MainPid { .. } => 28,
            Fact::WatchRestart { .. } => 29,
            Fact::Watching { .. } => 30,
            Fact::WatchStarted { .. } => 31,
            Fact::WatchRefused { .. } => 32,
        }
    }

    /// Event name → field names, from the facts and `OUTSIDE`.
    fn catalogue() -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for fact in samples() {
            let (name, fields) = fact.to_event();
            let entry = out.entry(name).or_default();
            for key in fields.as_object().into_iter().flat_map(|m| m.keys()) {
                if !entry.contains(key) {
                    entry.push(key.clone());
                }
            }
        }
        for (name, fields) in OUTSIDE {
            let entry = out.entry(name.to_string()).or_default();
            for f in *fields {
                if !entry.iter().any(|e| e == f) {
                    entry.push(f.to_string());
                }
            }
        }
        for fields in out.values_mut() {
            fields.sort();
        }
        out
    }

    /// The README's event list: the first backticked `event {field, ...}` of each bullet
    /// under "**Events** are written one JSON object per line".
    fn readme_list() -> BTreeMap<String, Vec<String>> {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("**Events** are written one JSON object per line")
            .expect("the README's event list");
        let mut out = BTreeMap::new();
        let mut in_list = false;
        for line in readme[start..].lines().skip(1) {
            if let Some(item) = line.strip_prefix("- ") {
                in_list = true;
                let spec = item
                    .split('`')
                    .nth(1)
                    .unwrap_or_else(|| panic!("a bullet without a `event {{fields}}`: {line}"));
                let (name, fields) = match spec.split_once(" {") {
                    Some((name, rest)) => {
                        let fields = rest.trim_end_matches('}');
                        let mut fields: Vec<String> =
                            fields.split(", ").map(|f| f.trim().to_string()).collect();
                        fields.sort();
                        (name.to_string(), fields)
                    }
                    None => (spec.to_string(), Vec::new()),
                };
                assert!(
                    out.insert(name.clone(), fields).is_none(),
                    "`{name}` is listed twice"
                );
            } else if in_list && !line.starts_with("  ") {
                break;
            }
        }
        out
    }

    #[test]
    fn every_fact_has_a_sample() {
        let mut seen: Vec<usize> = samples().iter().map(ordinal).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..=32).collect::<Vec<_>>());
    }

    #[test]
    fn the_readme_lists_every_event_with_its_fields() {
        let readme = readme_list();
        let code = catalogue();
        for (name, fields) in &code {
            match readme.get(name) {
                None => panic!(
                    "the README's event list lacks `{name} {{{}}}`",
                    fields.join(", ")
                ),
                Some(listed) => assert_eq!(
                    listed, fields,
                    "the README lists other fields for `{name}` than are recorded"
                ),
            }
        }
        for name in readme.keys() {
            assert!(
                code.contains_key(name),
                "the README lists `{name}`, which is never recorded"
            );
        }
    }

    #[test]
    fn a_fact_is_its_event_name_and_fields() {
        let (name, fields) = Fact::Stopped { by: None }.to_event();
        assert_eq!((name.as_str(), fields), ("stopped", serde_json::json!({})));
        let (name, fields) = Fact::Reload(ReloadStep::StartNew { old_pid: 7 }).to_event();
        assert_eq!(
            (name.as_str(), fields),
            (
                "reload",
                serde_json::json!({ "step": "start_new", "old_pid": 7 })
            )
        );
        let (_, fields) = Fact::Waiting {
            waiting_for: vec!["db".into()],
        }
        .to_event();
        assert_eq!(fields, serde_json::json!({ "for": ["db"] }));
    }
}
