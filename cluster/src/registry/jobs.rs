//! Jobs in the replicated registry. The master dispatches each tick and each requested run to
//! one node with a `DispatchRun` written through Raft (fenced by its term) *before* the node
//! starts it: the registry refuses a tick at or before the job's last handled tick, so a new
//! master that sees the record never runs it again, and one that does not (the write never
//! committed) runs it itself. The node reports the end with `FinishRun`; the master ends the
//! runs of a lost node (`lost`), and runs them again elsewhere when the job asks.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

use super::NodeId;
use super::Placement;
use super::Registry;
use super::RegistryResponse;
use super::apply::applied;
use super::apply::rejected;

/// Ended runs (and skipped ticks) kept per job.
pub const RUNS_KEPT: usize = 100;
/// Requested runs waiting for dispatch, per job.
pub const MAX_REQUESTS: usize = 100;

/// A deployed job. The spec is the node's (opaque here); the master reads the scheduling keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterJob {
    pub spec: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub catch_up: bool,
    /// `forbid`, `allow` or `replace` (see the node's jobs).
    #[serde(default)]
    pub overlap: String,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub retry_on_node_loss: bool,
    #[serde(default)]
    pub placement: Placement,
    /// The last tick handled (dispatched or skipped), ms since the epoch.
    #[serde(default)]
    pub last_tick_ms: u64,
    /// Runs dispatched and not yet ended, by id.
    #[serde(default)]
    pub active: BTreeMap<u64, ClusterRun>,
    /// Ended runs, newest last.
    #[serde(default)]
    pub ended: VecDeque<ClusterRun>,
    /// `herd run` requests waiting for the master: (request id, extra args).
    #[serde(default)]
    pub requests: Vec<(u64, Vec<String>)>,
    /// The highest run id dispatched (the next is one more).
    #[serde(default)]
    pub next_run: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterRun {
    pub id: u64,
    pub node: NodeId,
    pub attempt: u32,
    /// `schedule`, `catch_up`, `manual`, `retry`.
    pub trigger: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    pub dispatched_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<RunEnd>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    /// `succeeded`, `failed`, `timeout`, `cancelled`, `lost`, `unknown`, `skipped`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at_ms: u64,
}

impl ClusterJob {
    fn remember(&mut self, run: ClusterRun) {
        self.ended.push_back(run);
        while self.ended.len() > RUNS_KEPT {
            self.ended.pop_front();
        }
    }
}

impl Registry {
    /// Creates or replaces a job's definition; its runs, requests and last tick stay (a new
    /// job, or a changed schedule, counts ticks from `now_ms`).
    pub(super) fn put_job(
        &mut self,
        name: &str,
        job: &ClusterJob,
        now_ms: u64,
    ) -> RegistryResponse {
        if name.trim().is_empty() {
            return rejected("job name must not be empty");
        }
        let entry = self.jobs.entry(name.to_string()).or_default();
        let same_schedule = entry.schedule == job.schedule && entry.timezone == job.timezone;
        let before = entry.clone();
        entry.spec = job.spec.clone();
        entry.catch_up = job.catch_up;
        entry.overlap = job.overlap.clone();
        entry.retries = job.retries;
        entry.retry_on_node_loss = job.retry_on_node_loss;
        entry.placement = job.placement.clone();
        if !same_schedule || before == ClusterJob::default() {
            entry.last_tick_ms = now_ms;
        }
        entry.schedule = job.schedule.clone();
        entry.timezone = job.timezone.clone();
        applied(*entry != before)
    }

    pub(super) fn request_run(
        &mut self,
        name: &str,
        request: u64,
        args: &[String],
    ) -> RegistryResponse {
        let Some(job) = self.jobs.get_mut(name) else {
            return rejected(format!("job `{name}` not found"));
        };
        if job.requests.iter().any(|(id, _)| *id == request) {
            return applied(false);
        }
        if job.requests.len() >= MAX_REQUESTS {
            return rejected(format!(
                "job `{name}` has {MAX_REQUESTS} runs waiting already"
            ));
        }
        job.requests.push((request, args.to_vec()));
        applied(true)
    }

    /// A run goes to its node. A scheduled tick at or before the last one handled is refused
    /// (never twice); a request is taken off the list; the id must be new.
    pub(super) fn dispatch_run(
        &mut self,
        name: &str,
        run: &ClusterRun,
        request: Option<u64>,
    ) -> RegistryResponse {
        if !self.nodes.contains_key(&run.node) {
            return rejected(format!("node {} is unknown", run.node));
        }
        let Some(job) = self.jobs.get_mut(name) else {
            return rejected(format!("job `{name}` not found"));
        };
        if job.active.contains_key(&run.id) || job.ended.iter().any(|r| r.id == run.id) {
            return rejected(format!("run {} of `{name}` exists already", run.id));
        }
        if let Some(tick) = run.tick_ms
            && run.trigger != "retry"
        {
            if tick <= job.last_tick_ms {
                return rejected(format!("tick {tick} of `{name}` was handled already"));
            }
            job.last_tick_ms = tick;
        }
        if let Some(req) = request {
            let before = job.requests.len();
            job.requests.retain(|(id, _)| *id != req);
            if job.requests.len() == before {
                return rejected(format!("request {req} of `{name}` was dispatched already"));
            }
        }
        job.next_run = job.next_run.max(run.id);
        job.active.insert(run.id, run.clone());
        applied(true)
    }

    /// A tick that does not run (overlap, no node): recorded, and never handled again.
    pub(super) fn skip_tick(&mut self, name: &str, tick_ms: u64, end: &RunEnd) -> RegistryResponse {
        let Some(job) = self.jobs.get_mut(name) else {
            return rejected(format!("job `{name}` not found"));
        };
        if tick_ms <= job.last_tick_ms {
            return applied(false);
        }
        job.last_tick_ms = tick_ms;
        job.remember(ClusterRun {
            id: 0,
            trigger: "schedule".into(),
            tick_ms: Some(tick_ms),
            dispatched_ms: end.at_ms,
            end: Some(end.clone()),
            ..ClusterRun::default()
        });
        applied(true)
    }

    /// A run ended (its node says so, or the master found the node lost). Once only.
    pub(super) fn finish_run(&mut self, name: &str, run: u64, end: &RunEnd) -> RegistryResponse {
        let Some(job) = self.jobs.get_mut(name) else {
            return applied(false);
        };
        let Some(mut r) = job.active.remove(&run) else {
            return applied(false);
        };
        r.end = Some(end.clone());
        job.remember(r);
        applied(true)
    }

    /// Nodes running an active run of `job` (their slices carry its spec).
    pub(super) fn job_nodes(&self, job: &str) -> BTreeSet<NodeId> {
        self.jobs
            .get(job)
            .map(|j| j.active.values().map(|r| r.node).collect())
            .unwrap_or_default()
    }

    /// The node of one active run.
    pub(super) fn run_node(&self, job: &str, run: u64) -> Option<NodeId> {
        self.jobs.get(job)?.active.get(&run).map(|r| r.node)
    }

    /// The jobs with runs on `node`, each with only those runs (for its slice).
    pub(super) fn jobs_on(&self, node: NodeId) -> BTreeMap<String, ClusterJob> {
        self.jobs
            .iter()
            .filter_map(|(name, j)| {
                let active: BTreeMap<u64, ClusterRun> = j
                    .active
                    .iter()
                    .filter(|(_, r)| r.node == node)
                    .map(|(id, r)| (*id, r.clone()))
                    .collect();
                (!active.is_empty()).then(|| {
                    (
                        name.clone(),
                        ClusterJob {
                            spec: j.spec.clone(),
                            active,
                            ..ClusterJob::default()
                        },
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NodeRecord;
    use crate::registry::RegistryCommand;

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.apply(&RegistryCommand::UpsertNode {
            node: NodeRecord {
                id: NodeId(1),
                ..NodeRecord::default()
            },
        });
        r.apply(&RegistryCommand::PutJob {
            name: "tick".into(),
            job: ClusterJob {
                schedule: Some("* * * * * *".into()),
                ..ClusterJob::default()
            },
            now_ms: 1_000,
        });
        r
    }

    fn run(id: u64, tick: u64) -> ClusterRun {
        ClusterRun {
            id,
            node: NodeId(1),
            attempt: 1,
            trigger: "schedule".into(),
            tick_ms: Some(tick),
            dispatched_ms: tick,
            ..ClusterRun::default()
        }
    }

    fn dispatch(r: &mut Registry, run: ClusterRun) -> RegistryResponse {
        r.apply(&RegistryCommand::DispatchRun {
            job: "tick".into(),
            run,
            request: None,
        })
    }

    #[test]
    fn a_tick_is_dispatched_once_and_never_before_the_last_one() {
        let mut r = registry();
        assert!(dispatch(&mut r, run(1, 2_000)).is_applied());
        assert!(
            !dispatch(&mut r, run(2, 2_000)).is_applied(),
            "the same tick twice"
        );
        assert!(
            !dispatch(&mut r, run(3, 1_500)).is_applied(),
            "an older tick"
        );
        assert!(dispatch(&mut r, run(4, 3_000)).is_applied());
        let end = RunEnd {
            reason: "succeeded".into(),
            at_ms: 3_500,
            ..RunEnd::default()
        };
        let finish = RegistryCommand::FinishRun {
            job: "tick".into(),
            run: 1,
            end: end.clone(),
        };
        assert_eq!(
            r.apply(&finish),
            RegistryResponse::Applied { changed: true }
        );
        assert_eq!(
            r.apply(&finish),
            RegistryResponse::Applied { changed: false }
        );
        assert_eq!(r.jobs["tick"].ended.len(), 1);
        assert_eq!(
            r.jobs["tick"].active.keys().copied().collect::<Vec<_>>(),
            [4]
        );
    }

    #[test]
    fn a_request_is_dispatched_once() {
        let mut r = registry();
        let req = RegistryCommand::RequestRun {
            job: "tick".into(),
            request: 7,
            args: vec![],
        };
        assert!(r.apply(&req).is_applied());
        let manual = ClusterRun {
            trigger: "manual".into(),
            tick_ms: None,
            ..run(1, 0)
        };
        let cmd = |id| RegistryCommand::DispatchRun {
            job: "tick".into(),
            run: ClusterRun {
                id,
                ..manual.clone()
            },
            request: Some(7),
        };
        assert!(r.apply(&cmd(1)).is_applied());
        assert!(!r.apply(&cmd(2)).is_applied(), "a request runs once");
    }

    #[test]
    fn slices_carry_only_the_nodes_runs() {
        let mut r = registry();
        r.apply(&RegistryCommand::UpsertNode {
            node: NodeRecord {
                id: NodeId(2),
                ..NodeRecord::default()
            },
        });
        dispatch(&mut r, run(1, 2_000));
        dispatch(
            &mut r,
            ClusterRun {
                node: NodeId(2),
                ..run(2, 3_000)
            },
        );
        let mine = r.slice_for(NodeId(1)).registry.jobs;
        assert_eq!(mine["tick"].active.keys().copied().collect::<Vec<_>>(), [1]);
        assert!(r.slice_for(NodeId(3)).registry.jobs.is_empty());
    }
}
