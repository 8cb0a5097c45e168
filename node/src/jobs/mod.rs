//! Jobs: work that must finish. A `[[job]]` of an app file runs on its schedule or on
//! `herd run`; each run waits in a host-wide queue (priority, then age) for one of
//! `[jobs] max_parallel` slots, runs as a one-shot supervisor app `JOB~RUN` (so it gets the
//! supervisor's spawn path: identity, cgroup, env and secrets, its own rotated log, the stop
//! sequence, adoption after a daemon crash), and ends `succeeded`, `failed`, `timeout`,
//! `cancelled`, `lost` or `unknown`; failures are retried with backoff up to `retries`.
//!
//! One task (`Jobs::run`) owns every decision: it wakes on the next tick, timeout or backoff,
//! on any supervisor transition and on requests, and each pass judges finished runs, stops
//! overdue ones, handles due ticks and fills free slots. Every change is written to
//! `jobs.json` before it is acted on or answered (`Jobs::change`): a run is recorded as
//! started before its process is spawned, so after a crash a run is either adopted, judged
//! from its recorded exit, or found never to have started (queued again).

pub mod queue;
pub mod service;
pub mod spec;
pub mod state;

use crate::state::store::{Loaded, Rejection, StateFile};
use crate::supervisor::instance::Status;
use crate::supervisor::{App, Supervisor, now_ms};
use herd_cluster::schedule::Due;
use queue::JobsSection;
use serde_json::json;
use spec::{JobSpec, Overlap};
use state::{JobsState, Reason, Run, Trigger};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};
use tracing::{info, warn};

/// A run started this recently is never judged lost: it is queued again instead.
pub const LOST_GRACE_MS: u64 = 90_000;
/// The longest the scheduler sleeps while a tick, timeout or backoff is ahead (a wall clock
/// stepped forward is seen then).
const MAX_SLEEP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error("jobs state not saved: {0}; nothing changed")]
    Disk(String),
}

fn unknown_job(name: &str) -> JobError {
    JobError::NotFound(format!("job `{name}` not found; `herd jobs` lists jobs"))
}

#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<JobsState>,
    file: StateFile,
    supervisor: Supervisor,
    config: watch::Receiver<JobsSection>,
    wake: Notify,
    /// Bumped after every saved change: a `herd logs --follow` of a run ends as soon as the
    /// run has.
    saved: watch::Sender<u64>,
    logs_dir: PathBuf,
    /// The cluster this host belongs to (set once it has started): runs the master dispatched
    /// here end with a `FinishRun` written through it, and `herd run` of a deployed job asks it.
    /// Weak: the daemon's shutdown takes the node back out of its Arc.
    cluster: std::sync::OnceLock<std::sync::Weak<herd_cluster::ClusterNode>>,
    /// A task is writing the pending reports (one at a time).
    reporting: std::sync::atomic::AtomicBool,
    /// The agent's latest list of runs dispatched here, taken by one task in order.
    dispatched: std::sync::OnceLock<watch::Sender<Vec<herd_cluster::DesiredRun>>>,
}

/// What a pass decided to do outside the state lock.
enum Effect {
    Stop(String),
    Delete(String),
    Emit {
        job: String,
        pid: Option<u32>,
        kind: &'static str,
        fields: serde_json::Value,
    },
    DropLogs(String),
}

impl Jobs {
    /// Loads `jobs.json` (or its backup) from the home.
    pub fn load(
        path: PathBuf,
        logs_dir: PathBuf,
        supervisor: Supervisor,
        config: watch::Receiver<JobsSection>,
    ) -> anyhow::Result<Self> {
        let file = StateFile::new(path);
        let state = match file
            .load_validated(|s: &JobsState| s.check().map_err(Rejection::Refuse))
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            Loaded::Fresh => JobsState::default(),
            Loaded::Primary(s) => s,
            Loaded::Backup(s, why) => {
                warn!(file = %file.path().display(), %why, "jobs state read from its backup");
                s
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                file,
                supervisor,
                config,
                wake: Notify::new(),
                saved: watch::channel(0).0,
                logs_dir,
                cluster: std::sync::OnceLock::new(),
                reporting: std::sync::atomic::AtomicBool::new(false),
                dispatched: std::sync::OnceLock::new(),
            }),
        })
    }

    fn sup(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    /// Joins the cluster's side: dispatched runs are reported through `node`.
    pub fn attach_cluster(&self, node: Arc<herd_cluster::ClusterNode>) {
        let _ = self.inner.cluster.set(Arc::downgrade(&node));
        self.inner.wake.notify_one();
    }

    /// The task that applies the agent's lists in order (a later list never loses to an
    /// earlier one).
    fn dispatch_channel(&self) -> &watch::Sender<Vec<herd_cluster::DesiredRun>> {
        self.inner.dispatched.get_or_init(|| {
            let (tx, mut rx) = watch::channel(Vec::new());
            let me = self.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let desired = rx.borrow_and_update().clone();
                    me.reconcile_cluster(desired).await;
                }
            });
            tx
        })
    }

    pub fn cluster(&self) -> Option<Arc<herd_cluster::ClusterNode>> {
        self.inner.cluster.get()?.upgrade()
    }

    /// The runs the master dispatched to this host (the agent's view, in sync with it): new
    /// ones start now — the master counted the slot — and ones this host runs that left the
    /// list (the master cancelled them, or judged them lost) stop. Never blocks the caller.
    pub fn cluster_runs(&self, desired: Vec<herd_cluster::DesiredRun>) {
        self.dispatch_channel().send_replace(desired);
    }

    async fn reconcile_cluster(&self, desired: Vec<herd_cluster::DesiredRun>) {
        let now = now_ms();
        let mut fx = Vec::new();
        let mut start = Vec::new();
        let result = self
            .change(|s| {
                for d in &desired {
                    if s.knows_cluster_run(&d.job, d.run) {
                        continue;
                    }
                    let spec: JobSpec = match serde_json::from_value(d.spec.clone()) {
                        Ok(spec) => spec,
                        Err(e) => {
                            warn!(job = %d.job, run = d.run, error = %e, "cannot read a deployed job; reporting the run failed");
                            s.reports.push(state::ClusterReport {
                                job: d.job.clone(),
                                run: d.run,
                                end: herd_cluster::registry::jobs::RunEnd {
                                    reason: "failed".into(),
                                    detail: Some(format!("this node cannot read the job: {e}")),
                                    at_ms: now,
                                    ..Default::default()
                                },
                            });
                            continue;
                        }
                    };
                    let trigger = match d.trigger.as_str() {
                        "schedule" => Trigger::Schedule,
                        "catch_up" => Trigger::CatchUp,
                        "retry" => Trigger::Retry,
                        _ => Trigger::Manual,
                    };
                    let mut run = new_run(s, &d.job, spec.priority, trigger, d.tick_ms, None, d.args.clone(), now);
                    run.attempt = d.attempt.max(1);
                    run.cluster = Some(d.run);
                    run.spec = Some(Box::new(spec));
                    run.started_ms = Some(now);
                    info!(job = %d.job, run = run.id, cluster_run = d.run, "run dispatched here by the master");
                    start.push(run.clone());
                    s.running.push(run);
                }
                let wanted = |r: &Run| {
                    r.cluster
                        .is_none_or(|id| desired.iter().any(|d| d.job == r.job && d.run == id))
                };
                let (keep, dropped): (Vec<Run>, Vec<Run>) =
                    std::mem::take(&mut s.queue).into_iter().partition(|r| wanted(r));
                s.queue = keep;
                for r in dropped {
                    finish(s, r, Reason::Cancelled, Some("ended by the master".into()), now, &mut fx);
                }
                for r in s.running.iter_mut().filter(|r| !wanted(r) && r.stopping.is_none()) {
                    r.stopping = Some(Reason::Cancelled);
                    r.detail = Some("ended by the master".into());
                    fx.push(Effect::Stop(r.app_name()));
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            warn!(error = %e, "cannot record the runs the master dispatched; the agent asks again");
            return;
        }
        // What the master ended here needs no report of ours.
        self.perform(fx);
        for run in start {
            self.start(run).await;
        }
    }

    /// Writes the ends of cluster runs to the registry, in the background, one task at a time;
    /// a report leaves `jobs.json` once the registry has it (or refused it: the run is gone).
    fn send_reports(&self, pending: Vec<state::ClusterReport>) {
        use std::sync::atomic::Ordering;
        let Some(node) = self.cluster() else {
            return;
        };
        if pending.is_empty() || self.inner.reporting.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for r in pending {
                let cmd = herd_cluster::RegistryCommand::FinishRun {
                    job: r.job.clone(),
                    run: r.run,
                    end: r.end.clone(),
                };
                match tokio::time::timeout(Duration::from_secs(5), node.write(cmd)).await {
                    Ok(Ok(_)) => sent.push((r.job, r.run)),
                    Ok(Err(e)) => {
                        warn!(job = %r.job, run = r.run, error = %e, "cannot report a run's end yet; retrying");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !sent.is_empty() {
                let _ = me
                    .change(|s| {
                        s.reports
                            .retain(|r| !sent.contains(&(r.job.clone(), r.run)));
                        Ok(())
                    })
                    .await;
            }
            me.inner.reporting.store(false, Ordering::Release);
            if !sent.is_empty() {
                me.inner.wake.notify_one();
            }
        });
    }

    /// Applies `f` to a copy of the state and keeps it only once it is on disk.
    async fn change<R>(
        &self,
        f: impl FnOnce(&mut JobsState) -> Result<R, JobError>,
    ) -> Result<R, JobError> {
        let mut st = self.inner.state.lock().await;
        let mut next = st.clone();
        let r = f(&mut next)?;
        if next != *st {
            next.version = state::STATE_VERSION;
            let bytes = serde_json::to_vec(&next).map_err(|e| JobError::Disk(e.to_string()))?;
            let file = self.inner.file.clone();
            tokio::task::spawn_blocking(move || file.save_bytes(&bytes))
                .await
                .map_err(|e| JobError::Disk(e.to_string()))?
                .map_err(|e| {
                    JobError::Disk(format!(
                        "{e} (writing {})",
                        self.inner.file.path().display()
                    ))
                })?;
            *st = next;
            drop(st);
            // Only a change wakes the scheduler: a pass that changed nothing must not wake
            // itself again (that spun a core on every daemon).
            self.inner.wake.notify_one();
            self.inner.saved.send_modify(|v| *v = v.wrapping_add(1));
        }
        Ok(r)
    }

    /// Wakes after every saved change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.saved.subscribe()
    }

    pub async fn snapshot(&self) -> JobsState {
        self.inner.state.lock().await.clone()
    }

    /// The jobs of an app file: new ones are added, changed ones replaced (a changed schedule
    /// starts counting from now), the rest stay.
    pub async fn register(&self, specs: Vec<JobSpec>) -> Result<Vec<String>, JobError> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let apps: Vec<String> = self
            .sup()
            .list(None)
            .map(|a| a.into_iter().map(|a| a.spec.name).collect())
            .unwrap_or_default();
        let now = now_ms();
        self.change(|s| {
            for j in &specs {
                if apps.iter().any(|a| a == j.name()) {
                    return Err(JobError::Invalid(format!(
                        "job `{}`: key `name`: an app of that name runs here; a job and an app need different names",
                        j.name()
                    )));
                }
            }
            let new = specs.iter().filter(|j| !s.jobs.contains_key(j.name())).count();
            if s.jobs.len() + new > state::MAX_JOBS {
                return Err(JobError::Refused(format!(
                    "more than {} jobs on one host",
                    state::MAX_JOBS
                )));
            }
            let mut names = Vec::new();
            for j in specs {
                let name = j.name().to_string();
                let same_schedule = s
                    .jobs
                    .get(&name)
                    .is_some_and(|old| old.schedule == j.schedule && old.timezone == j.timezone);
                if !same_schedule {
                    s.last_tick_ms.remove(&name);
                    if j.schedule.is_some() {
                        s.last_tick_ms.insert(name.clone(), now);
                    }
                }
                s.jobs.insert(name.clone(), j);
                names.push(name);
            }
            Ok(names)
        })
        .await
    }

    pub async fn knows(&self, name: &str) -> bool {
        self.inner.state.lock().await.jobs.contains_key(name)
    }

    /// Removes a job: its queued runs are cancelled, its running ones stopped.
    pub async fn delete(&self, name: &str) -> Result<(), JobError> {
        let now = now_ms();
        let mut fx = Vec::new();
        self.change(|s| {
            if s.jobs.remove(name).is_none() {
                return Err(unknown_job(name));
            }
            s.last_tick_ms.remove(name);
            let (mine, rest): (Vec<Run>, Vec<Run>) = std::mem::take(&mut s.queue)
                .into_iter()
                .partition(|r| r.job == name);
            s.queue = rest;
            for r in mine {
                finish(
                    s,
                    r,
                    Reason::Cancelled,
                    Some("the job was deleted".into()),
                    now,
                    &mut fx,
                );
            }
            for r in s.running.iter_mut().filter(|r| r.job == name) {
                r.stopping = Some(Reason::Cancelled);
                fx.push(Effect::Stop(r.app_name()));
            }
            Ok(())
        })
        .await?;
        self.perform(fx);
        Ok(())
    }

    /// `herd run NAME`: queues a run now (while paused too: it waits for `herd resume`, and
    /// the reply says so).
    pub async fn run_now(
        &self,
        name: &str,
        priority: Option<i32>,
        args: Vec<String>,
    ) -> Result<Run, JobError> {
        if args.len() > 1_024 || args.iter().any(|a| a.contains('\0') || a.len() > 65_536) {
            return Err(JobError::Invalid(
                "extra arguments: at most 1024, each under 64 KiB, without NUL".into(),
            ));
        }
        if let Some(p) = priority
            && !(-spec::MAX_PRIORITY..=spec::MAX_PRIORITY).contains(&p)
        {
            return Err(JobError::Invalid(format!(
                "--priority must be between -{m} and {m}",
                m = spec::MAX_PRIORITY
            )));
        }
        let now = now_ms();
        let mut fx = Vec::new();
        let run = self
            .change(|s| {
                let job = s.jobs.get(name).ok_or_else(|| unknown_job(name))?;
                let key = job.key_at(now);
                let priority = priority.unwrap_or(job.priority);
                admit(s, name, key.as_deref())?;
                let run = new_run(s, name, priority, Trigger::Manual, None, key, args, now);
                queued(&run, &mut fx);
                s.queue.push(run.clone());
                Ok(run)
            })
            .await?;
        self.perform(fx);
        Ok(run)
    }

    /// `herd jobs cancel RUN`: a queued run is dropped, a running one stopped.
    pub async fn cancel(&self, id: u64) -> Result<Run, JobError> {
        let now = now_ms();
        let mut fx = Vec::new();
        let run = self
            .change(|s| {
                if let Some(pos) = s.queue.iter().position(|r| r.id == id) {
                    let r = s.queue.remove(pos);
                    return Ok(finish(s, r, Reason::Cancelled, None, now, &mut fx));
                }
                if let Some(r) = s.running.iter_mut().find(|r| r.id == id) {
                    r.stopping = Some(Reason::Cancelled);
                    fx.push(Effect::Stop(r.app_name()));
                    return Ok(r.clone());
                }
                match s.find(id) {
                    Some(r) => Err(JobError::Conflict(format!(
                        "run {id} of `{}` has already ended ({})",
                        r.job,
                        r.reason.map_or("-", Reason::as_str)
                    ))),
                    None => Err(JobError::NotFound(format!(
                        "run {id} not found; `herd jobs history NAME` lists runs"
                    ))),
                }
            })
            .await?;
        self.perform(fx);
        Ok(run)
    }

    pub async fn set_paused(&self, paused: bool) -> Result<(), JobError> {
        self.change(|s| {
            s.paused = paused;
            Ok(())
        })
        .await?;
        info!(
            paused,
            "job dispatching {}",
            if paused { "paused" } else { "resumed" }
        );
        Ok(())
    }

    pub async fn find(&self, id: u64) -> Option<Run> {
        self.inner.state.lock().await.find(id).cloned()
    }

    /// The log of a run (the latest of the job without `run`): the run's id, the file, and
    /// how many rotated files it keeps.
    pub async fn log_of(
        &self,
        job: &str,
        run: Option<u64>,
    ) -> Result<(u64, PathBuf, u32), JobError> {
        let s = self.inner.state.lock().await;
        let spec = s.jobs.get(job);
        let files = spec.map_or(5, |j| j.app.log_files);
        let found = match run {
            Some(id) => s.find(id).filter(|r| r.job == job).cloned(),
            None => s
                .running
                .iter()
                .filter(|r| r.job == job)
                .max_by_key(|r| r.id)
                .or_else(|| {
                    s.history
                        .get(job)
                        .and_then(|h| h.iter().rev().find(|r| r.started_ms.is_some()))
                })
                .cloned(),
        };
        match found {
            Some(r) => Ok((r.id, self.sup().log_path(&r.app_name(), 0), files)),
            None if spec.is_none() => Err(unknown_job(job)),
            None => Err(JobError::NotFound(match run {
                Some(id) => {
                    format!("run {id} of `{job}` not found; `herd jobs history {job}` lists runs")
                }
                None => format!("`{job}` has not run yet; `herd run {job}` starts a run"),
            })),
        }
    }

    /// The scheduler: runs until the daemon stops.
    pub async fn run(self) {
        self.recover().await;
        let mut changes = self.sup().subscribe();
        let mut config = self.inner.config.clone();
        loop {
            let next = match self.pass().await {
                Ok(next) => next,
                Err(e) => {
                    warn!(error = %e, "jobs: a pass could not save its decisions; retrying in 1 s");
                    Some(now_ms().saturating_add(1_000))
                }
            };
            // Nothing due (no tick, timeout, backoff or report): no timer at all; an idle
            // daemon does not wake for jobs. Otherwise at least every MAX_SLEEP, so a wall
            // clock stepped forward is seen.
            let sleep =
                next.map(|t| Duration::from_millis(t.saturating_sub(now_ms())).min(MAX_SLEEP));
            tokio::select! {
                r = changes.changed() => { if r.is_err() { return } }
                () = self.inner.wake.notified() => {}
                r = config.changed() => { if r.is_err() { return } }
                () = async {
                    match sleep {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    /// After a daemon restart: runs whose process lives are adopted (their exit status will
    /// not be seen); the rest are judged by the next pass.
    async fn recover(&self) {
        let live: Vec<u64> = {
            let s = self.inner.state.lock().await;
            s.running
                .iter()
                .filter(|r| {
                    self.sup()
                        .list(Some(&r.app_name()))
                        .ok()
                        .and_then(|a| a.into_iter().next())
                        .and_then(|a| a.instances.into_iter().next())
                        .is_some_and(|i| i.status.has_process() && i.pid.is_some())
                })
                .map(|r| r.id)
                .collect()
        };
        let now = now_ms();
        let mut fx = Vec::new();
        let result = self
            .change(|s| {
                let running = std::mem::take(&mut s.running);
                for mut r in running {
                    if live.contains(&r.id) {
                        r.adopted = true;
                        info!(job = %r.job, run = r.id, pid = r.pid, "run adopted after a daemon restart");
                        s.running.push(r);
                        continue;
                    }
                    let app = self
                        .sup()
                        .list(Some(&r.app_name()))
                        .ok()
                        .and_then(|a| a.into_iter().next());
                    match judge(&r, app.as_ref(), true, now) {
                        Some(Verdict::Requeue(why)) => requeue(s, r, &why, &mut fx),
                        Some(Verdict::Done { reason, code, signal, detail }) => {
                            r.exit_code = code;
                            r.signal = signal;
                            fx.push(Effect::Delete(r.app_name()));
                            let r = finish(s, r, reason, detail, now, &mut fx);
                            retry(s, &r, now, &mut fx);
                        }
                        None => s.running.push(r),
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            warn!(error = %e, "jobs: cannot save what recovery found; the next pass tries again");
        }
        self.perform(fx);
    }

    /// One look at everything; returns when to look again.
    async fn pass(&self) -> Result<Option<u64>, JobError> {
        let now = now_ms();
        let cap = self.inner.config.borrow().clone();
        let closing = self.sup().closing();
        // What the supervisor says of each running run (read before the state lock).
        let apps: Vec<(u64, Option<App>)> = {
            let s = self.inner.state.lock().await;
            s.running
                .iter()
                .map(|r| {
                    let app = self
                        .sup()
                        .list(Some(&r.app_name()))
                        .ok()
                        .and_then(|a| a.into_iter().next());
                    (r.id, app)
                })
                .collect()
        };
        let mut fx = Vec::new();
        let (next, to_start, reports) = self
            .change(|s| {
                let mut wake: Option<u64> = None;
                let mut soon = |t: u64| wake = Some(wake.map_or(t, |w: u64| w.min(t)));
                // Ended runs.
                let running = std::mem::take(&mut s.running);
                for mut r in running {
                    let app = apps.iter().find(|(id, _)| *id == r.id).and_then(|(_, a)| a.as_ref());
                    if r.pid.is_none()
                        && let Some(pid) = app.and_then(|a| a.instances.first()).and_then(|i| i.pid)
                    {
                        r.pid = Some(pid);
                    }
                    match judge(&r, app, false, now) {
                        None => s.running.push(r),
                        Some(Verdict::Requeue(why)) => requeue(s, r, &why, &mut fx),
                        Some(Verdict::Done { reason, code, signal, detail }) => {
                            r.exit_code = code;
                            r.signal = signal;
                            fx.push(Effect::Delete(r.app_name()));
                            let r = finish(s, r, reason, detail, now, &mut fx);
                            retry(s, &r, now, &mut fx);
                        }
                    }
                }
                // Overdue runs.
                for r in s.running.iter_mut().filter(|r| r.stopping.is_none()) {
                    let spec = r.spec.as_deref().or_else(|| s.jobs.get(&r.job));
                    let Some(timeout) = spec.and_then(|j| j.timeout()) else {
                        continue;
                    };
                    let deadline = r
                        .started_ms
                        .unwrap_or(now)
                        .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
                    if now >= deadline {
                        warn!(job = %r.job, run = r.id, timeout_s = timeout.as_secs(), "run timed out; stopping it");
                        r.stopping = Some(Reason::Timeout);
                        fx.push(Effect::Stop(r.app_name()));
                    } else {
                        soon(deadline);
                    }
                }
                // Due ticks.
                let scheduled: Vec<JobSpec> =
                    s.jobs.values().filter(|j| j.schedule.is_some()).cloned().collect();
                for job in scheduled {
                    let name = job.name().to_string();
                    let last = *s.last_tick_ms.entry(name.clone()).or_insert(now);
                    let Some(sched) = job.schedule() else { continue };
                    match sched.due(last, now) {
                        Due::Wait(Some(t)) => soon(t),
                        Due::Wait(None) => {}
                        Due::Missed { tick_ms } => {
                            s.last_tick_ms.insert(name.clone(), tick_ms);
                            skip(s, &job, tick_ms, "missed", now, &mut fx);
                            if let Some(t) = job.next_tick_after(tick_ms) {
                                soon(t);
                            }
                        }
                        Due::Run { tick_ms, catch_up } => {
                            s.last_tick_ms.insert(name.clone(), tick_ms);
                            tick(s, &job, tick_ms, catch_up, now, &mut fx);
                            if let Some(t) = job.next_tick_after(tick_ms) {
                                soon(t);
                            }
                        }
                    }
                }
                // Free slots.
                let mut to_start = Vec::new();
                if !closing {
                    while let Some(i) = queue::next_to_start(s, &cap, now) {
                        let mut r = s.queue.remove(i);
                        r.started_ms = Some(now);
                        to_start.push(r.clone());
                        s.running.push(r);
                    }
                }
                if let Some(t) = queue::next_backoff_end(s, now) {
                    soon(t);
                }
                if !s.reports.is_empty() {
                    soon(now.saturating_add(2_000));
                }
                Ok((wake, to_start, s.reports.clone()))
            })
            .await?;
        self.send_reports(reports);
        self.perform(fx);
        for run in to_start {
            self.start(run).await;
        }
        Ok(next)
    }

    /// Spawns a run recorded as started; a refusal ends it as failed at once.
    async fn start(&self, run: Run) {
        let spec = {
            let s = self.inner.state.lock().await;
            s.spec_of(&run).cloned()
        };
        let Some(job) = spec else { return };
        let mut app = job.app.clone();
        app.name = run.app_name();
        app.args.extend(run.args.iter().cloned());
        app.env.insert("HERD_JOB".into(), run.job.clone());
        app.env.insert("HERD_RUN".into(), run.id.to_string());
        app.env
            .insert("HERD_ATTEMPT".into(), run.attempt.to_string());
        let trigger = serde_json::to_value(run.trigger)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        app.env.insert("HERD_TRIGGER".into(), trigger);
        if let Some(t) = run.tick_ms {
            app.env.insert("HERD_TICK".into(), (t / 1000).to_string());
        }
        match self.sup().run_once(app).await {
            Ok(a) => {
                let pid = a.instances.first().and_then(|i| i.pid);
                info!(job = %run.job, run = run.id, attempt = run.attempt, pid, "run started");
                self.sup().events().emit(
                    &run.job,
                    None,
                    pid,
                    "job_started",
                    json!({"run": run.id, "attempt": run.attempt, "trigger": run.trigger}),
                );
                let _ = self
                    .change(|s| {
                        if let Some(r) = s.running.iter_mut().find(|r| r.id == run.id) {
                            r.pid = pid;
                        }
                        Ok(())
                    })
                    .await;
            }
            Err(e) => {
                warn!(job = %run.job, run = run.id, error = %e, "run could not start");
                let now = now_ms();
                let mut fx = Vec::new();
                let detail = format!("could not start: {e}");
                let _ = self
                    .change(|s| {
                        if let Some(pos) = s.running.iter().position(|r| r.id == run.id) {
                            let r = s.running.remove(pos);
                            let r = finish(s, r, Reason::Failed, Some(detail), now, &mut fx);
                            retry(s, &r, now, &mut fx);
                        }
                        Ok(())
                    })
                    .await;
                fx.push(Effect::Delete(run.app_name()));
                self.perform(fx);
            }
        }
    }

    /// Carries out what a pass decided (never under the state lock; never waits).
    fn perform(&self, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Emit {
                    job,
                    pid,
                    kind,
                    fields,
                } => self.sup().events().emit(&job, None, pid, kind, fields),
                Effect::Stop(app) => {
                    let sup = self.sup().clone();
                    tokio::spawn(async move {
                        if let Err(e) = sup.stop(&app, None).await {
                            warn!(app = %app, error = %e, "cannot stop a run");
                        }
                    });
                }
                Effect::Delete(app) => {
                    let sup = self.sup().clone();
                    tokio::spawn(async move {
                        if sup.list(Some(&app)).is_ok()
                            && let Err(e) = sup.delete(&app, None).await
                        {
                            warn!(app = %app, error = %e, "cannot remove a finished run");
                        }
                    });
                }
                Effect::DropLogs(app) => {
                    let dir = self.inner.logs_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        crate::supervisor::logs::remove_all(&dir, &app, 0)
                    });
                }
            }
        }
    }
}

/// What became of a run that is no longer running.
enum Verdict {
    Done {
        reason: Reason,
        code: Option<i32>,
        signal: Option<String>,
        detail: Option<String>,
    },
    /// It never started, or vanished within `LOST_GRACE_MS` of starting: queue it again.
    Requeue(String),
}

/// Judges a running run from its supervisor app (`None`: still running). `recovering`: the
/// daemon just came back, so a missing app means the run never reached the supervisor.
fn judge(run: &Run, app: Option<&App>, recovering: bool, now: u64) -> Option<Verdict> {
    let young = run
        .started_ms
        .is_some_and(|t| now.saturating_sub(t) < LOST_GRACE_MS);
    let done = |reason, detail: Option<String>| Verdict::Done {
        reason,
        code: None,
        signal: None,
        detail,
    };
    let Some(app) = app else {
        if !recovering {
            // Not yet registered by `start` (same pass), or removed by a user.
            return run
                .pid
                .is_some()
                .then(|| done(Reason::Cancelled, Some("its app was deleted".into())));
        }
        return Some(if young {
            Verdict::Requeue("the daemon stopped before the run's process was recorded".into())
        } else {
            done(Reason::Lost, Some("no process was recorded for it".into()))
        });
    };
    let inst = app.instances.first()?;
    if inst.status.has_process() || inst.status == Status::Backoff {
        return None;
    }
    let Some(exit) = inst.last_exit() else {
        if recovering {
            return Some(Verdict::Requeue(
                "it had not started when the daemon stopped".into(),
            ));
        }
        // Registered but not yet started by `start` (another task may be in `run_once`): a
        // run whose process was never seen is still starting.
        run.pid?;
        return Some(done(
            Reason::Cancelled,
            Some("stopped before it started".into()),
        ));
    };
    let (code, signal) = (exit.code, exit.signal.clone());
    let with = |reason, detail: Option<String>| Verdict::Done {
        reason,
        code,
        signal: signal.clone(),
        detail,
    };
    if let Some(why) = run.stopping {
        return Some(with(why, None));
    }
    let r = exit.reason.as_str();
    if r.starts_with("died while the daemon was down") || r.starts_with("gone") {
        return Some(if young {
            Verdict::Requeue(format!("{r} within {} s of starting", LOST_GRACE_MS / 1000))
        } else {
            with(Reason::Lost, Some(r.to_string()))
        });
    }
    if r.starts_with("exited (adopted") {
        return Some(with(Reason::Unknown, Some(r.to_string())));
    }
    if r == "stopped" {
        return Some(with(
            Reason::Cancelled,
            Some("stopped from outside the job (`herd stop`, `herd down`)".into()),
        ));
    }
    let detail = (r != "exited").then(|| r.to_string());
    Some(if code == Some(0) {
        with(Reason::Succeeded, detail)
    } else {
        with(Reason::Failed, detail)
    })
}

#[allow(clippy::too_many_arguments)]
fn new_run(
    s: &mut JobsState,
    job: &str,
    priority: i32,
    trigger: Trigger,
    tick_ms: Option<u64>,
    key: Option<String>,
    args: Vec<String>,
    now: u64,
) -> Run {
    Run {
        tick_ms,
        key,
        args,
        ..Run::queued(s.fresh_id(), job, priority, trigger, now)
    }
}

/// Whether a new run of `job` with `key` may be queued.
fn admit(s: &JobsState, job: &str, key: Option<&str>) -> Result<(), JobError> {
    if let Some(k) = key
        && let Some(other) = s.key_taken(k)
    {
        return Err(JobError::Conflict(format!(
            "a run with key `{k}` is already {} (run {} of `{}`)",
            if other.started_ms.is_some() {
                "running"
            } else {
                "queued"
            },
            other.id,
            other.job
        )));
    }
    if s.queue.len() >= state::MAX_QUEUED {
        return Err(JobError::Refused(format!(
            "the queue is full ({} runs); `herd jobs` shows what waits",
            state::MAX_QUEUED
        )));
    }
    let _ = job;
    Ok(())
}

fn queued(run: &Run, fx: &mut Vec<Effect>) {
    info!(job = %run.job, run = run.id, attempt = run.attempt, priority = run.priority, "run queued");
    fx.push(Effect::Emit {
        job: run.job.clone(),
        pid: None,
        kind: "job_queued",
        fields: json!({"run": run.id, "attempt": run.attempt, "priority": run.priority, "trigger": run.trigger}),
    });
}

/// A due tick: queued, or skipped (paused, overlap, duplicate key, full queue).
fn tick(
    s: &mut JobsState,
    job: &JobSpec,
    tick_ms: u64,
    catch_up: bool,
    now: u64,
    fx: &mut Vec<Effect>,
) {
    let name = job.name();
    if s.paused {
        return skip(s, job, tick_ms, "paused", now, fx);
    }
    let active: Vec<u64> = s.active(name).map(|r| r.id).collect();
    if !active.is_empty() {
        match job.overlap {
            Overlap::Forbid => return skip(s, job, tick_ms, "overlap", now, fx),
            Overlap::Allow => {}
            Overlap::Replace => {
                let (mine, rest): (Vec<Run>, Vec<Run>) = std::mem::take(&mut s.queue)
                    .into_iter()
                    .partition(|r| r.job == name);
                s.queue = rest;
                for r in mine {
                    finish(
                        s,
                        r,
                        Reason::Cancelled,
                        Some("replaced by a newer tick".into()),
                        now,
                        fx,
                    );
                }
                for r in s
                    .running
                    .iter_mut()
                    .filter(|r| r.job == name && r.stopping.is_none())
                {
                    r.stopping = Some(Reason::Cancelled);
                    r.detail = Some("replaced by a newer tick".into());
                    fx.push(Effect::Stop(r.app_name()));
                }
            }
        }
    }
    let key = job.key_at(tick_ms);
    if let Err(e) = admit(s, name, key.as_deref()) {
        let why = match e {
            JobError::Conflict(_) => "duplicate key",
            _ => "queue full",
        };
        return skip(s, job, tick_ms, why, now, fx);
    }
    let trigger = if catch_up {
        Trigger::CatchUp
    } else {
        Trigger::Schedule
    };
    let run = new_run(
        s,
        name,
        job.priority,
        trigger,
        Some(tick_ms),
        key,
        Vec::new(),
        now,
    );
    queued(&run, fx);
    s.queue.push(run);
}

/// A tick that does not run, in the history and as a `job_skipped` event.
fn skip(s: &mut JobsState, job: &JobSpec, tick_ms: u64, why: &str, now: u64, fx: &mut Vec<Effect>) {
    info!(job = %job.name(), tick_ms, reason = why, "tick skipped");
    let mut run = new_run(
        s,
        job.name(),
        job.priority,
        Trigger::Schedule,
        Some(tick_ms),
        None,
        Vec::new(),
        now,
    );
    run.attempt = 0;
    run.finished_ms = Some(now);
    run.reason = Some(Reason::Skipped);
    run.detail = Some(why.to_string());
    fx.push(Effect::Emit {
        job: job.name().to_string(),
        pid: None,
        kind: "job_skipped",
        fields: json!({"run": run.id, "reason": why, "tick_ms": tick_ms}),
    });
    for old in s.remember(run) {
        fx.push(Effect::DropLogs(old.app_name()));
    }
}

/// Ends a run: history, events, logs of runs that fall out of the history.
fn finish(
    s: &mut JobsState,
    mut run: Run,
    reason: Reason,
    detail: Option<String>,
    now: u64,
    fx: &mut Vec<Effect>,
) -> Run {
    run.finished_ms = Some(now);
    run.reason = Some(reason);
    run.stopping = None;
    if detail.is_some() {
        run.detail = detail;
    }
    let kind = if reason == Reason::Lost {
        "job_lost"
    } else {
        "job_finished"
    };
    info!(job = %run.job, run = run.id, attempt = run.attempt, reason = reason.as_str(), exit = run.exit_code, signal = run.signal.as_deref(), "run ended");
    let mut fields = json!({
        "run": run.id,
        "attempt": run.attempt,
        "reason": reason,
        "exit": run.exit_code,
        "signal": run.signal,
        "duration_ms": run.duration_ms(),
    });
    if let (Some(d), Some(m)) = (&run.detail, fields.as_object_mut()) {
        m.insert("detail".into(), json!(d));
    }
    fx.push(Effect::Emit {
        job: run.job.clone(),
        pid: run.pid,
        kind,
        fields: fields.clone(),
    });
    if reason == Reason::Lost {
        // `job_lost` says what happened; `job_finished` closes the run like any other.
        fx.push(Effect::Emit {
            job: run.job.clone(),
            pid: run.pid,
            kind: "job_finished",
            fields,
        });
    }
    if let Some(id) = run.cluster
        && !retry_coming(s, &run, reason)
    {
        s.reports.push(state::ClusterReport {
            job: run.job.clone(),
            run: id,
            end: herd_cluster::registry::jobs::RunEnd {
                reason: reason.as_str().to_string(),
                exit_code: run.exit_code,
                signal: run.signal.clone(),
                detail: run.detail.clone(),
                at_ms: now,
            },
        });
    }
    for old in s.remember(run.clone()) {
        fx.push(Effect::DropLogs(old.app_name()));
    }
    run
}

/// A failed run gets its next attempt (after its backoff) while `retries` allow.
fn retry(s: &mut JobsState, ended: &Run, now: u64, fx: &mut Vec<Effect>) {
    let Some(reason) = ended.reason else { return };
    if !retry_coming(s, ended, reason) {
        return;
    }
    let Some(job) = s.spec_of(ended) else { return };
    let delay = job.backoff().delay(ended.attempt);
    let mut run = new_run(
        s,
        &ended.job,
        ended.priority,
        Trigger::Retry,
        ended.tick_ms,
        ended.key.clone(),
        ended.args.clone(),
        now,
    );
    run.attempt = ended.attempt.saturating_add(1);
    run.not_before_ms = now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    run.cluster = ended.cluster;
    run.spec = ended.spec.clone();
    queued(&run, fx);
    s.queue.push(run);
}

/// Whether an ended run gets another attempt here (`retries`, room in the queue).
fn retry_coming(s: &JobsState, ended: &Run, reason: Reason) -> bool {
    reason.retried()
        && s.queue.len() < state::MAX_QUEUED
        && s.spec_of(ended).is_some_and(|j| ended.attempt <= j.retries)
}

/// A run that never really started goes back to the queue as it was.
fn requeue(s: &mut JobsState, mut run: Run, why: &str, fx: &mut Vec<Effect>) {
    warn!(job = %run.job, run = run.id, why, "run queued again");
    fx.push(Effect::Delete(run.app_name()));
    run.started_ms = None;
    run.pid = None;
    run.stopping = None;
    s.queue.push(run);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::instance::{ExitRecord, Instance};
    use crate::supervisor::{App, Origin};

    fn run(pid: Option<u32>, started_ms: u64) -> Run {
        let mut s = JobsState::default();
        let mut r = new_run(&mut s, "j", 0, Trigger::Manual, None, None, vec![], 0);
        r.pid = pid;
        r.started_ms = Some(started_ms);
        r
    }

    fn app(status: Status, exit: Option<(Option<i32>, &str)>) -> App {
        let spec = crate::supervisor::spec::AppSpec::quick("j~1", "true", vec![]);
        let mut a: App = serde_json::from_value(serde_json::json!({
            "spec": spec, "desired": "running", "instances": [], "origin": "job",
        }))
        .unwrap();
        let mut i = Instance::new(0);
        i.status = status;
        if let Some((code, reason)) = exit {
            i.record_exit(ExitRecord {
                at_ms: 1,
                code,
                signal: None,
                reason: reason.into(),
            });
        }
        a.origin = Origin::Job;
        a.instances = vec![i];
        a
    }

    fn reason(v: Option<Verdict>) -> Option<Reason> {
        match v {
            Some(Verdict::Done { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_registered_run_not_yet_spawned_is_still_starting() {
        // Another task registered the app and has not started it yet: not "cancelled".
        assert!(judge(&run(None, 0), Some(&app(Status::Stopped, None)), false, 10).is_none());
        assert_eq!(
            reason(judge(
                &run(Some(7), 0),
                Some(&app(Status::Stopped, None)),
                false,
                10
            )),
            Some(Reason::Cancelled)
        );
    }

    #[test]
    fn exits_map_to_reasons_and_young_vanished_runs_are_queued_again() {
        let ended = |code, why: &str| app(Status::Stopped, Some((code, why)));
        let r = run(Some(7), 0);
        assert_eq!(
            reason(judge(&r, Some(&ended(Some(0), "exited")), false, 10)),
            Some(Reason::Succeeded)
        );
        assert_eq!(
            reason(judge(&r, Some(&ended(Some(2), "exited")), false, 10)),
            Some(Reason::Failed)
        );
        assert_eq!(
            reason(judge(&r, Some(&ended(None, "stopped")), false, 10)),
            Some(Reason::Cancelled)
        );
        let adopted = ended(None, "exited (adopted process: exit status unknown)");
        assert_eq!(
            reason(judge(&r, Some(&adopted), false, 10)),
            Some(Reason::Unknown)
        );
        let died = ended(None, "died while the daemon was down");
        assert_eq!(
            reason(judge(&r, Some(&died), true, LOST_GRACE_MS)),
            Some(Reason::Lost)
        );
        assert!(matches!(
            judge(&r, Some(&died), true, LOST_GRACE_MS - 1),
            Some(Verdict::Requeue(_))
        ));
        assert!(matches!(
            judge(&r, None, true, 10),
            Some(Verdict::Requeue(_))
        ));
        assert_eq!(
            reason(judge(&r, None, true, LOST_GRACE_MS)),
            Some(Reason::Lost)
        );
    }
}
