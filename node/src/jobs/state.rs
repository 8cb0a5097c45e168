//! What the jobs module keeps in `$HERD_HOME/jobs.json`: the jobs, the queue, the runs in
//! flight, each job's recent history, its last tick, and whether dispatching is paused.
//! Every change is written (temp, fsync, rename; see `state::store`) before it is answered.

use super::spec::JobSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How a run ended (or why a tick did not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Succeeded,
    Failed,
    Timeout,
    Cancelled,
    /// A tick that did not run (`detail`: `overlap`, `paused`, `missed`, `duplicate key`).
    Skipped,
    /// Its process vanished while the daemon was down (or with its node).
    Lost,
    /// Adopted after a daemon restart, then ended: its exit status cannot be seen.
    Unknown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Succeeded => "succeeded",
            Reason::Failed => "failed",
            Reason::Timeout => "timeout",
            Reason::Cancelled => "cancelled",
            Reason::Skipped => "skipped",
            Reason::Lost => "lost",
            Reason::Unknown => "unknown",
        }
    }

    /// Worth another attempt (within `retries`).
    pub fn retried(self) -> bool {
        matches!(self, Reason::Failed | Reason::Timeout | Reason::Lost)
    }
}

/// What queued a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    /// The one run for ticks missed while the daemon was down (`catch_up = true`).
    CatchUp,
    /// `herd run`.
    Manual,
    Retry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    pub job: String,
    /// 1 for the first, +1 for each retry.
    pub attempt: u32,
    pub priority: i32,
    pub trigger: Trigger,
    /// The schedule tick this run is for (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Extra arguments (`herd run NAME -- ...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    pub queued_ms: u64,
    /// A retry waits for its backoff.
    #[serde(default)]
    pub not_before_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// More on the reason (the supervisor's exit reason, what a skip was for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// herd is stopping it, and why (`timeout`, `cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<Reason>,
    /// Found alive after a daemon restart: its exit status will not be seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// The cluster's run this one carries out (the master dispatched it here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<u64>,
    /// A cluster run's job, as deployed (a cluster job is not one of this host's jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Box<JobSpec>>,
}

impl Run {
    /// A run of `job` queued at `now` (attempt 1, nothing started).
    pub fn queued(id: u64, job: &str, priority: i32, trigger: Trigger, now: u64) -> Run {
        Run {
            id,
            job: job.to_string(),
            attempt: 1,
            priority,
            trigger,
            tick_ms: None,
            key: None,
            args: Vec::new(),
            queued_ms: now,
            not_before_ms: 0,
            started_ms: None,
            finished_ms: None,
            pid: None,
            exit_code: None,
            signal: None,
            reason: None,
            detail: None,
            stopping: None,
            adopted: false,
            cluster: None,
            spec: None,
        }
    }

    /// The supervisor app that carries this run's process (`~` is never in an app's name).
    pub fn app_name(&self) -> String {
        app_name(&self.job, self.id)
    }

    pub fn duration_ms(&self) -> Option<u64> {
        Some(self.finished_ms?.saturating_sub(self.started_ms?))
    }
}

pub fn app_name(job: &str, run: u64) -> String {
    format!("{job}~{run}")
}

/// Runs kept per job in the history (their logs go with them).
pub const HISTORY_KEPT: usize = 100;
/// The most runs queued at once.
pub const MAX_QUEUED: usize = 10_000;
/// The most jobs.
pub const MAX_JOBS: usize = 1_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsState {
    pub version: u32,
    pub jobs: BTreeMap<String, JobSpec>,
    /// Waiting for a slot, in no particular order (see `queue::next_to_start`).
    pub queue: Vec<Run>,
    pub running: Vec<Run>,
    /// Newest last.
    pub history: BTreeMap<String, VecDeque<Run>>,
    /// The last tick of each scheduled job that was handled (run, skipped or missed).
    pub last_tick_ms: BTreeMap<String, u64>,
    pub paused: bool,
    pub next_id: u64,
    /// Ends of cluster runs not yet written to the registry (sent until one write succeeds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ClusterReport>,
}

/// The end of a cluster run, for the registry (`FinishRun`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub job: String,
    pub run: u64,
    pub end: herd_cluster::registry::jobs::RunEnd,
}

/// The `version` this herd writes.
pub const STATE_VERSION: u32 = 1;

impl JobsState {
    pub fn fresh_id(&mut self) -> u64 {
        self.next_id = self.next_id.saturating_add(1).max(1);
        self.next_id
    }

    /// Puts a finished (or skipped) run in its job's history; returns the runs that fell out.
    pub fn remember(&mut self, run: Run) -> Vec<Run> {
        let h = self.history.entry(run.job.clone()).or_default();
        h.push_back(run);
        let mut dropped = Vec::new();
        while h.len() > HISTORY_KEPT {
            dropped.extend(h.pop_front());
        }
        dropped
    }

    /// A run with this key is queued or running.
    pub fn key_taken(&self, key: &str) -> Option<&Run> {
        self.queue
            .iter()
            .chain(&self.running)
            .find(|r| r.key.as_deref() == Some(key))
    }

    /// Queued or running runs of `job`.
    pub fn active(&self, job: &str) -> impl Iterator<Item = &Run> {
        self.queue
            .iter()
            .chain(&self.running)
            .filter(move |r| r.job == job)
    }

    /// The spec a run runs by: its own (a cluster run), else its job's.
    pub fn spec_of<'a>(&'a self, run: &'a Run) -> Option<&'a JobSpec> {
        run.spec.as_deref().or_else(|| self.jobs.get(&run.job))
    }

    /// Whether this host has seen the cluster's run `id` of `job` (queued, running, ended or
    /// reported): it is never started twice.
    pub fn knows_cluster_run(&self, job: &str, id: u64) -> bool {
        let mine = |r: &Run| r.job == job && r.cluster == Some(id);
        self.queue.iter().chain(&self.running).any(mine)
            || self.history.get(job).is_some_and(|h| h.iter().any(mine))
            || self.reports.iter().any(|r| r.job == job && r.run == id)
    }

    pub fn find(&self, id: u64) -> Option<&Run> {
        self.queue
            .iter()
            .chain(&self.running)
            .chain(self.history.values().flatten())
            .find(|r| r.id == id)
    }

    /// Whether a file read back is one this herd can use.
    pub fn check(&self) -> Result<(), String> {
        if self.version > STATE_VERSION {
            return Err(format!(
                "written by a newer herd (version {}; this one reads up to {STATE_VERSION})",
                self.version
            ));
        }
        Ok(())
    }
}
