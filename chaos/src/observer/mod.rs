//! Watching the cluster while faults fly: one thread per node polls `herd cluster status`
//! (leaders and terms) and `herd ps` (what runs where), and one thread takes a `/proc` census
//! of the singleton, which sees it even when its daemon is frozen or gone. After the run the
//! daemons' logs add heartbeat acceptances and master terms (see [`daemon_log`]).

pub mod daemon_log;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::thread::Scope;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

use crate::history::LeaderObservation;
use crate::history::PsRow;
use crate::history::PsSnapshot;
use crate::history::Recorder;
use crate::history::SingletonObservation;
use crate::history::Source;
use crate::invariants::convergence::split_instance;
use crate::lab::Lab;
use crate::lab::Node;
use crate::lab::procs;

#[derive(Clone, Debug)]
pub struct ObserveConfig {
    pub status_every: Duration,
    pub ps_every: Duration,
    pub census_every: Duration,
    /// The `on_disconnect = "stop"` app whose copies must never overlap.
    pub singleton: String,
}

/// Starts the observer threads in `scope`; they run until `stop` is set.
pub fn spawn<'scope>(
    scope: &'scope Scope<'scope, '_>,
    lab: &'scope Lab,
    rec: &'scope Recorder,
    stop: &'scope AtomicBool,
    cfg: &ObserveConfig,
) {
    for node in &lab.nodes {
        let cfg = cfg.clone();
        scope.spawn(move || watch_node(node, rec, stop, &cfg));
    }
    let cfg = cfg.clone();
    scope.spawn(move || census(lab, rec, stop, &cfg));
}

fn stopping(stop: &AtomicBool) -> bool {
    stop.load(Ordering::SeqCst) || crate::lab::interrupt::requested()
}

/// Sleeps until `next`, in slices, returning early when stopping.
fn pause_until(next: Instant, stop: &AtomicBool) {
    while !stopping(stop) {
        let left = next.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn leader_observation(node: &Node, v: &Value, t_ms: u64) -> LeaderObservation {
    LeaderObservation {
        t_ms,
        observer: node.index,
        incarnation: node.incarnation(),
        node_id: v["node_id"].as_u64(),
        role: v["role"].as_str().unwrap_or("?").to_string(),
        term: v["term"].as_u64().unwrap_or(0),
        leader_id: v["leader_id"].as_u64(),
    }
}

pub fn parse_ps(text: &str) -> Option<Vec<PsRow>> {
    let v: Value = serde_json::from_str(text).ok()?;
    Some(
        v.as_array()?
            .iter()
            .map(|r| PsRow {
                name: r["name"].as_str().unwrap_or("?").to_string(),
                instance: r["instance"].as_u64().unwrap_or(0) as u32,
                pid: r["pid"].as_i64().map(|p| p as i32),
                status: r["status"].as_str().unwrap_or("?").to_string(),
            })
            .collect(),
    )
}

fn watch_node(node: &Node, rec: &Recorder, stop: &AtomicBool, cfg: &ObserveConfig) {
    let timeout = Duration::from_millis(1_500);
    let mut next_ps = Instant::now();
    while !stopping(stop) {
        let next = Instant::now() + cfg.status_every;
        if let Some(v) = node.status(timeout) {
            let o = leader_observation(node, &v, rec.now_ms());
            rec.with(|h| h.leaders.push(o));
        }
        if Instant::now() >= next_ps {
            next_ps = Instant::now() + cfg.ps_every;
            if let Ok(out) = node.cli(&["ps", "--json"], timeout)
                && out.ok()
                && let Some(rows) = parse_ps(&out.stdout)
            {
                let t_ms = rec.now_ms();
                let seen: Vec<SingletonObservation> = rows
                    .iter()
                    .filter(|r| r.status == "running")
                    .filter_map(|r| {
                        let (app, instance) = split_instance(&r.name)?;
                        (app == cfg.singleton).then_some(SingletonObservation {
                            t_ms,
                            node: node.index,
                            app: app.to_string(),
                            instance,
                            pid: r.pid?,
                            source: Source::Ps,
                        })
                    })
                    .collect();
                rec.with(|h| {
                    h.singletons.extend(seen);
                    h.instances.push(PsSnapshot {
                        t_ms,
                        node: node.index,
                        rows,
                    });
                });
            }
        }
        pause_until(next, stop);
    }
}

/// Singleton copies found in `/proc`, whatever the daemons say. Frozen copies do not count.
fn census(lab: &Lab, rec: &Recorder, stop: &AtomicBool, cfg: &ObserveConfig) {
    while !stopping(stop) {
        let next = Instant::now() + cfg.census_every;
        let procs = procs::scan(lab.work_dir());
        let t_ms = rec.now_ms();
        let seen: Vec<SingletonObservation> = procs
            .iter()
            .filter(|p| p.live())
            .filter_map(|p| {
                let (app, instance) = split_instance(p.app.as_deref()?)?;
                let node = lab
                    .nodes
                    .iter()
                    .find(|n| n.home.to_string_lossy() == p.herd_home)?;
                (app == cfg.singleton).then_some(SingletonObservation {
                    t_ms,
                    node: node.index,
                    app: app.to_string(),
                    instance,
                    pid: p.pid,
                    source: Source::Proc,
                })
            })
            .collect();
        if !seen.is_empty() {
            rec.with(|h| h.singletons.extend(seen));
        }
        pause_until(next, stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_json_rows_are_read_with_null_pids() {
        let rows = parse_ps(
            r#"[{"name":"solo@0","instance":0,"pid":42,"status":"running","restarts":0},
                {"name":"web","instance":1,"pid":null,"status":"backoff"}]"#,
        )
        .expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].pid, Some(42));
        assert_eq!(rows[1].pid, None);
        assert_eq!(rows[1].status, "backoff");
        assert!(parse_ps("not json").is_none());
    }
}
