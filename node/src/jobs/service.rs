//! The `Jobs` gRPC service: `herd run`, `herd jobs ...`, `herd pause|resume`. Replies are
//! JSON documents the CLI prints (or passes on with `--json`).

use super::state::{JobsState, Run};
use super::{JobError, Jobs};
use crate::access::caller::{Caller, acting_as};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::jobs_server::Jobs as JobsApi;
use serde_json::{Value, json};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use herd_proto::supervisor::jobs_server::JobsServer;

#[derive(Clone)]
pub struct JobsService {
    jobs: Jobs,
}

impl JobsService {
    pub fn new(jobs: Jobs) -> Self {
        Self { jobs }
    }
}

impl From<JobError> for Status {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(_) => Status::not_found(e.to_string()),
            JobError::Invalid(_) => Status::invalid_argument(e.to_string()),
            JobError::Conflict(_) => Status::already_exists(e.to_string()),
            JobError::Refused(_) => Status::failed_precondition(e.to_string()),
            JobError::Disk(_) => Status::unavailable(e.to_string()),
        }
    }
}

fn reply(v: Value) -> Result<Response<pb::JsonReply>, Status> {
    Ok(Response::new(pb::JsonReply {
        json: v.to_string(),
    }))
}

fn rfc3339(ms: u64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)?;
    Some(t.with_timezone(&chrono::Local).to_rfc3339())
}

/// A run as the CLI shows it: the stored fields, its state, and readable times.
pub fn run_json(r: &Run) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        let state = match (r.started_ms, r.finished_ms) {
            (_, Some(_)) => "ended",
            (Some(_), None) => "running",
            (None, None) => "queued",
        };
        m.insert("state".into(), json!(state));
        m.insert("duration_ms".into(), json!(r.duration_ms()));
        for (k, t) in [
            ("queued_at", Some(r.queued_ms)),
            ("started_at", r.started_ms),
            ("finished_at", r.finished_ms),
        ] {
            m.insert(k.into(), json!(t.and_then(rfc3339)));
        }
    }
    v
}

/// `herd jobs --json`.
pub fn list_json(s: &JobsState, cap: &super::queue::JobsSection, now: u64) -> Value {
    let jobs: Vec<Value> = s
        .jobs
        .values()
        .map(|j| {
            let name = j.name();
            let next = j
                .schedule
                .as_ref()
                .and_then(|_| j.next_tick_after(s.last_tick_ms.get(name).copied().unwrap_or(now).max(now)));
            let last = s.history.get(name).and_then(|h| h.back()).map(run_json);
            json!({
                "name": name,
                "command": j.app.command,
                "schedule": j.schedule,
                "timezone": j.timezone,
                "overlap": j.overlap.as_str(),
                "catch_up": j.catch_up,
                "timeout_s": j.timeout_s,
                "retries": j.retries,
                "priority": j.priority,
                "key": j.key,
                "next_tick_ms": next,
                "next_tick": next.and_then(rfc3339),
                "running": s.running.iter().filter(|r| r.job == name).map(|r| r.id).collect::<Vec<_>>(),
                "queued": s.queue.iter().filter(|r| r.job == name).map(|r| r.id).collect::<Vec<_>>(),
                "last": last,
            })
        })
        .collect();
    let mut queue: Vec<&Run> = s.queue.iter().collect();
    queue.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.queued_ms, r.id));
    json!({
        "paused": s.paused,
        "max_parallel": cap.max_parallel,
        "headroom": cap.headroom,
        "headroom_priority": cap.headroom_priority,
        "jobs": jobs,
        "running": s.running.iter().map(run_json).collect::<Vec<_>>(),
        "queue": queue.into_iter().map(run_json).collect::<Vec<_>>(),
    })
}

pub type LogStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

/// `herd logs JOB [--run ID] [-f]`: the run's log; following ends once the run has ended
/// (and its last output is sent).
pub async fn log_stream(
    jobs: &Jobs,
    job: &str,
    run: Option<u64>,
    lines: usize,
    follow: bool,
) -> Result<LogStream, Status> {
    use crate::supervisor::logs;
    let (id, path, files) = jobs.log_of(job, run).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let jobs = jobs.clone();
    let mut saved = jobs.subscribe();
    tokio::spawn(async move {
        let chunk = |data: Vec<u8>| Ok(pb::LogChunk { instance: 0, data });
        // A run that has not started yet has no log: wait for it, like `tail -F`.
        let (data, mut offset) = logs::tail(&path, lines, files).unwrap_or_default();
        if !data.is_empty() && tx.send(chunk(data)).await.is_err() {
            return;
        }
        if !follow {
            return;
        }
        loop {
            let ended = jobs.find(id).await.is_none_or(|r| r.finished_ms.is_some());
            if let Ok(data) = logs::read_new(&path, &mut offset)
                && !data.is_empty()
                && tx.send(chunk(data)).await.is_err()
            {
                return;
            }
            if ended || tx.is_closed() {
                return;
            }
            // New output is looked for every 200 ms; the run's end is seen at once.
            tokio::select! {
                r = saved.changed() => if r.is_err() { return },
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

impl JobsService {
    /// The cluster's registry (from the leader), when this host is in a cluster and it answers.
    async fn cluster_registry(&self) -> Option<Arc<herd_cluster::Registry>> {
        let node = self.jobs.cluster()?;
        tokio::time::timeout(std::time::Duration::from_secs(3), node.read(false))
            .await
            .ok()?
            .ok()
    }
}

/// The cluster's jobs: schedule, last tick, runs in flight and the latest ended.
fn cluster_jobs_json(reg: &herd_cluster::Registry) -> Value {
    reg.jobs
        .iter()
        .map(|(name, j)| {
            json!({
                "name": name,
                "schedule": j.schedule,
                "timezone": j.timezone,
                "last_tick_ms": j.last_tick_ms,
                "active": j.active.values().collect::<Vec<_>>(),
                "last": j.ended.back(),
                "requests": j.requests.len(),
            })
        })
        .collect()
}

#[tonic::async_trait]
impl JobsApi for JobsService {
    async fn run(
        &self,
        req: Request<pb::RunJobRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        if let Some(node) = self.jobs.cluster()
            && !self.jobs.knows(&req.name).await
        {
            let reg = node
                .read(false)
                .await
                .map_err(|e| Status::unavailable(format!("cannot read the cluster's jobs: {e}")))?;
            if reg.jobs.contains_key(&req.name) {
                let request = rand::random::<u64>();
                let cmd = herd_cluster::RegistryCommand::RequestRun {
                    job: req.name.clone(),
                    request,
                    args: req.args,
                };
                match node.write(cmd).await {
                    Ok(herd_cluster::RegistryResponse::Applied { .. }) => {}
                    Ok(herd_cluster::RegistryResponse::Rejected { reason }) => {
                        return Err(Status::failed_precondition(reason));
                    }
                    Err(e) => return Err(Status::unavailable(e.to_string())),
                }
                return reply(json!({
                    "job": req.name,
                    "request": request,
                    "cluster": true,
                    "state": "requested",
                }));
            }
        }
        let run = acting_as(caller, self.jobs.run_now(&req.name, req.priority, req.args)).await?;
        let mut v = run_json(&run);
        v["paused"] = json!(self.jobs.snapshot().await.paused);
        reply(v)
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::JsonReply>, Status> {
        let s = self.jobs.snapshot().await;
        let cap = self.jobs.inner.config.borrow().clone();
        let mut v = list_json(&s, &cap, crate::supervisor::now_ms());
        if let Some(reg) = self.cluster_registry().await {
            v["cluster_jobs"] = cluster_jobs_json(&reg);
        }
        reply(v)
    }

    async fn history(
        &self,
        req: Request<pb::JobHistoryRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let req = req.into_inner();
        let s = self.jobs.snapshot().await;
        // A job of this host: its history here. A cluster's job: the registry's record (runs
        // this node carried out for it are in its local history too, not shown here).
        if !s.jobs.contains_key(&req.name) {
            if let Some(reg) = self.cluster_registry().await
                && let Some(job) = reg.jobs.get(&req.name)
            {
                let runs: Vec<&herd_cluster::registry::jobs::ClusterRun> =
                    job.ended.iter().chain(job.active.values()).collect();
                return reply(json!({
                    "job": req.name,
                    "cluster": true,
                    "runs": runs,
                }));
            }
            if !s.history.contains_key(&req.name) {
                return Err(super::unknown_job(&req.name).into());
            }
        }
        let mut runs: Vec<&Run> = s
            .history
            .get(&req.name)
            .map(|h| h.iter().collect())
            .unwrap_or_default();
        runs.extend(s.running.iter().filter(|r| r.job == req.name));
        runs.extend(s.queue.iter().filter(|r| r.job == req.name));
        runs.sort_by_key(|r| (r.finished_ms.is_none(), r.started_ms.is_none(), r.id));
        let limit = req.limit as usize;
        let skip = if limit == 0 {
            0
        } else {
            runs.len().saturating_sub(limit)
        };
        reply(json!({
            "job": req.name,
            "runs": runs.into_iter().skip(skip).map(run_json).collect::<Vec<_>>(),
        }))
    }

    async fn get(&self, req: Request<pb::RunIdRequest>) -> Result<Response<pb::JsonReply>, Status> {
        let id = req.into_inner().run;
        match self.jobs.find(id).await {
            Some(r) => reply(run_json(&r)),
            None => Err(Status::not_found(format!(
                "run {id} not found; `herd jobs history NAME` lists runs"
            ))),
        }
    }

    async fn cancel(
        &self,
        req: Request<pb::RunIdRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        let id = req.into_inner().run;
        let run = acting_as(caller, self.jobs.cancel(id)).await?;
        reply(run_json(&run))
    }

    async fn pause(
        &self,
        req: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        acting_as(caller, self.jobs.set_paused(true)).await?;
        reply(json!({"paused": true}))
    }

    async fn resume(
        &self,
        req: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        acting_as(caller, self.jobs.set_paused(false)).await?;
        reply(json!({"paused": false}))
    }
}
