//! The master's job decisions, a pure function of the registry, the nodes that answer and the
//! time: which tick to dispatch (or skip), which `herd run` requests to dispatch, and which
//! runs died with their node. Every decision is a registry write the term fences; a node starts
//! a run only once its `DispatchRun` is committed, so a master that dies mid-decision loses
//! nothing and doubles nothing: the next one sees the record, or makes the decision itself.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use crate::registry::NodeId;
use crate::registry::NodeStatus;
use crate::registry::Registry;
use crate::registry::RegistryCommand;
use crate::registry::jobs::ClusterJob;
use crate::registry::jobs::ClusterRun;
use crate::registry::jobs::RunEnd;
use crate::schedule::Due;
use crate::schedule::Schedule;

/// Cluster runs one node takes at once.
pub const RUNS_PER_NODE: usize = 4;
/// A run dispatched this recently is never judged lost with its node.
pub const LOST_GRACE_MS: u64 = 90_000;

#[derive(Debug, Default, PartialEq)]
pub(crate) struct JobPlan {
    pub writes: Vec<RegistryCommand>,
    /// The next tick of any job (wall ms): the master looks again then.
    pub wake_ms: Option<u64>,
}

fn end(reason: &str, detail: &str, at_ms: u64) -> RunEnd {
    RunEnd {
        reason: reason.into(),
        detail: (!detail.is_empty()).then(|| detail.to_string()),
        at_ms,
        ..RunEnd::default()
    }
}

fn eligible(reg: &Registry, job: &ClusterJob, node: NodeId) -> bool {
    reg.nodes.get(&node).is_some_and(|n| {
        n.status == NodeStatus::Online
            && job
                .placement
                .constraints
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
    })
}

/// Active runs per node across every job.
fn load(reg: &Registry) -> BTreeMap<NodeId, usize> {
    let mut load = BTreeMap::new();
    for j in reg.jobs.values() {
        for r in j.active.values() {
            *load.entry(r.node).or_default() += 1;
        }
    }
    load
}

/// The least-loaded eligible live node with a free slot; ties rotate with `spin` (so ticks
/// spread over the nodes).
fn pick(
    reg: &Registry,
    job: &ClusterJob,
    live: &BTreeSet<NodeId>,
    load: &BTreeMap<NodeId, usize>,
    spin: u64,
) -> Option<NodeId> {
    let free: Vec<(usize, NodeId)> = live
        .iter()
        .filter(|n| eligible(reg, job, **n))
        .map(|n| (load.get(n).copied().unwrap_or(0), *n))
        .filter(|(l, _)| *l < RUNS_PER_NODE)
        .collect();
    let least = free.iter().map(|(l, _)| *l).min()?;
    let ties: Vec<NodeId> = free
        .iter()
        .filter(|(l, _)| *l == least)
        .map(|(_, n)| *n)
        .collect();
    ties.get((spin % ties.len() as u64) as usize).copied()
}

pub(crate) fn plan(reg: &Registry, live: &BTreeSet<NodeId>, now_ms: u64) -> JobPlan {
    let mut out = JobPlan::default();
    let mut load = load(reg);
    for (name, job) in &reg.jobs {
        let mut next_id = job.next_run;
        let mut fresh = || {
            next_id += 1;
            next_id
        };
        // Runs whose node is gone.
        for run in job.active.values() {
            let gone = reg
                .nodes
                .get(&run.node)
                .is_none_or(|n| matches!(n.status, NodeStatus::Offline | NodeStatus::Left));
            if !gone || now_ms.saturating_sub(run.dispatched_ms) < LOST_GRACE_MS {
                continue;
            }
            tracing::warn!(job = %name, run = run.id, node = run.node.get(), "run lost with its node");
            out.writes.push(RegistryCommand::FinishRun {
                job: name.clone(),
                run: run.id,
                end: end("lost", "its node went offline", now_ms),
            });
            if let Some(l) = load.get_mut(&run.node) {
                *l = l.saturating_sub(1);
            }
            if job.retry_on_node_loss
                && run.attempt <= job.retries.max(1)
                && let Some(node) = pick(reg, job, live, &load, run.id)
            {
                *load.entry(node).or_default() += 1;
                out.writes.push(RegistryCommand::DispatchRun {
                    job: name.clone(),
                    run: ClusterRun {
                        id: fresh(),
                        node,
                        attempt: run.attempt.saturating_add(1),
                        trigger: "retry".into(),
                        tick_ms: run.tick_ms,
                        args: run.args.clone(),
                        dispatched_ms: now_ms,
                        end: None,
                    },
                    request: None,
                });
            }
        }
        // The tick due, once.
        if let Some(cron) = job.schedule.as_deref() {
            let schedule = Schedule {
                cron,
                timezone: job.timezone.as_deref(),
                catch_up: job.catch_up,
            };
            let due = schedule.due_for_master(job.last_tick_ms, now_ms);
            let next = match due {
                Due::Wait(t) => t,
                Due::Missed { tick_ms } | Due::Run { tick_ms, .. } => {
                    schedule.next_tick_after(tick_ms)
                }
            };
            if let Some(t) = next {
                out.wake_ms = Some(out.wake_ms.map_or(t, |w| w.min(t)));
            }
            let skip = |why: &str, tick_ms: u64| RegistryCommand::SkipTick {
                job: name.clone(),
                tick_ms,
                end: end("skipped", why, now_ms),
            };
            match due {
                Due::Wait(_) => {}
                Due::Missed { tick_ms } => out.writes.push(skip("missed", tick_ms)),
                Due::Run { tick_ms, catch_up } => {
                    let busy = !job.active.is_empty();
                    if busy && job.overlap != "allow" && job.overlap != "replace" {
                        out.writes.push(skip("overlap", tick_ms));
                    } else {
                        if busy && job.overlap == "replace" {
                            for run in job.active.values() {
                                out.writes.push(RegistryCommand::FinishRun {
                                    job: name.clone(),
                                    run: run.id,
                                    end: end("cancelled", "replaced by a newer tick", now_ms),
                                });
                            }
                        }
                        match pick(reg, job, live, &load, tick_ms / 1000) {
                            Some(node) => {
                                *load.entry(node).or_default() += 1;
                                out.writes.push(RegistryCommand::DispatchRun {
                                    job: name.clone(),
                                    run: ClusterRun {
                                        id: fresh(),
                                        node,
                                        attempt: 1,
                                        trigger: if catch_up { "catch_up" } else { "schedule" }
                                            .into(),
                                        tick_ms: Some(tick_ms),
                                        args: Vec::new(),
                                        dispatched_ms: now_ms,
                                        end: None,
                                    },
                                    request: None,
                                });
                            }
                            None => out.writes.push(skip("no node with a free slot", tick_ms)),
                        }
                    }
                }
            }
        }
        // `herd run` requests.
        for (request, args) in &job.requests {
            let Some(node) = pick(reg, job, live, &load, *request) else {
                break;
            };
            *load.entry(node).or_default() += 1;
            out.writes.push(RegistryCommand::DispatchRun {
                job: name.clone(),
                run: ClusterRun {
                    id: fresh(),
                    node,
                    attempt: 1,
                    trigger: "manual".into(),
                    tick_ms: None,
                    args: args.clone(),
                    dispatched_ms: now_ms,
                    end: None,
                },
                request: Some(*request),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NodeRecord;

    const T0: u64 = 1_796_601_600_000;

    fn registry(overlap: &str) -> Registry {
        let mut r = Registry::default();
        for id in 1..=3 {
            r.apply(&RegistryCommand::UpsertNode {
                node: NodeRecord {
                    id: NodeId(id),
                    ..NodeRecord::default()
                },
            });
        }
        r.apply(&RegistryCommand::PutJob {
            name: "tick".into(),
            job: ClusterJob {
                schedule: Some("*/5 * * * * *".into()),
                timezone: Some("UTC".into()),
                overlap: overlap.into(),
                ..ClusterJob::default()
            },
            now_ms: T0,
        });
        r
    }

    fn live() -> BTreeSet<NodeId> {
        (1..=3).map(NodeId).collect()
    }

    fn apply_all(r: &mut Registry, p: &JobPlan) {
        for w in &p.writes {
            assert!(r.apply(w).is_applied(), "{w}");
        }
    }

    #[test]
    fn each_tick_is_dispatched_once_even_by_a_second_master() {
        let mut r = registry("forbid");
        let p = plan(&r, &live(), T0 + 1_000);
        assert!(p.writes.is_empty());
        assert_eq!(p.wake_ms, Some(T0 + 5_000));
        let p = plan(&r, &live(), T0 + 5_100);
        assert_eq!(p.writes.len(), 1);
        apply_all(&mut r, &p);
        // A master that decided the same tick before seeing the record: refused on apply.
        let again = p.writes[0].clone();
        assert!(!r.apply(&again).is_applied());
        // And one that sees the record decides nothing more for it (the run is still active).
        let p = plan(&r, &live(), T0 + 5_200);
        assert!(p.writes.is_empty());
        // Late by most of a period after an election: still on time for a master.
        let p = plan(&r, &live(), T0 + 14_000);
        assert!(
            matches!(p.writes[..], [RegistryCommand::SkipTick { .. }]),
            "overlap: {:?}",
            p.writes
        );
    }

    #[test]
    fn a_run_lost_with_its_node_is_ended_after_the_grace_and_retried_when_asked() {
        let mut r = registry("allow");
        if let Some(j) = r.jobs.get_mut("tick") {
            j.retry_on_node_loss = true;
        }
        let p = plan(&r, &live(), T0 + 5_000);
        apply_all(&mut r, &p);
        let node = r.jobs["tick"].active.values().next().unwrap().node;
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(node, NodeStatus::Offline)],
        });
        let others: BTreeSet<NodeId> = live().into_iter().filter(|n| *n != node).collect();
        let p = plan(&r, &others, T0 + 6_000);
        assert!(
            !p.writes
                .iter()
                .any(|w| matches!(w, RegistryCommand::FinishRun { .. })),
            "within 90 s of its dispatch"
        );
        let later = T0 + 5_000 + LOST_GRACE_MS;
        let p = plan(&r, &others, later);
        let lost = p
            .writes
            .iter()
            .filter(|w| matches!(w, RegistryCommand::FinishRun { end, .. } if end.reason == "lost"))
            .count();
        assert_eq!(lost, 1);
        let retried: Vec<&ClusterRun> = p
            .writes
            .iter()
            .filter_map(|w| match w {
                RegistryCommand::DispatchRun { run, .. } if run.trigger == "retry" => Some(run),
                _ => None,
            })
            .collect();
        assert_eq!(retried.len(), 1);
        assert_ne!(retried[0].node, node);
        assert_eq!(retried[0].attempt, 2);
    }

    #[test]
    fn requests_go_to_free_nodes_and_wait_when_none_is() {
        let mut r = registry("allow");
        r.apply(&RegistryCommand::RequestRun {
            job: "tick".into(),
            request: 9,
            args: vec!["x".into()],
        });
        let p = plan(&r, &BTreeSet::new(), T0 + 1_000);
        assert!(p.writes.is_empty(), "no live node: the request waits");
        let p = plan(&r, &live(), T0 + 1_000);
        apply_all(&mut r, &p);
        assert!(r.jobs["tick"].requests.is_empty());
        assert_eq!(r.jobs["tick"].active.values().next().unwrap().args, ["x"]);
    }
}
