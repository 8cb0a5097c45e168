//! The Supervisor gRPC service: translates requests into supervisor calls and supervisor
//! state into protobuf replies. No supervision logic lives here.

use crate::access::caller::{Caller, acting_as};
use crate::config::ConfigHandle;
use crate::state::Persisted;
use crate::supervisor::events::Event;
use crate::supervisor::instance::{ExitRecord, Instance, Now};
use crate::supervisor::spec::{self, SpecError};
use crate::supervisor::{App, Supervisor, SupervisorError, deps, logs};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::supervisor_server::Supervisor as SupervisorApi;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub use herd_proto::supervisor::supervisor_server::SupervisorServer;

pub mod remote;
pub mod standard;

/// One per server (the Unix socket, the TCP API); clones share the supervisor.
#[derive(Clone)]
pub struct Api {
    supervisor: Supervisor,
    started: Instant,
    home: String,
    /// Fired once a Shutdown request has done its work, so the server can stop.
    shutdown: mpsc::Sender<()>,
    config: Arc<ConfigHandle>,
    /// What of the supervisor's transitions is on disk (see `daemon::write_state`).
    persisted: watch::Receiver<Persisted>,
    secrets: Option<Arc<crate::access::secrets::Secrets>>,
    /// The dashboard's logins and its address, for one-time sign-in links (`None`: no HTTP).
    dashboard: Option<(Arc<crate::http::dashboard::session::Logins>, String)>,
    jobs: Option<crate::jobs::Jobs>,
}

/// How long a request waits for its change to reach the state file before answering that it
/// is not saved (a disk that hangs rather than fails; the daemon keeps trying).
const DURABLE_WAIT: Duration = Duration::from_secs(5);

impl Api {
    /// `herd inspect`'s cgroup part: how this host runs instances, the app's kernel limits,
    /// and each running instance's cgroup directories.
    fn cgroup_view(&self, app: &crate::supervisor::App) -> serde_json::Value {
        use crate::supervisor::cgroup;
        let mode = cgroup::host().map_or(cgroup::Mode::None, |h| h.mode());
        let instances: Vec<serde_json::Value> = app
            .instances
            .iter()
            .filter_map(|i| {
                let pid = i.pid?;
                Some(serde_json::json!({
                    "index": i.index,
                    "paths": self.supervisor.cgroup_paths(pid),
                }))
            })
            .collect();
        serde_json::json!({
            "mode": mode.as_str(),
            "memory_max_mb": app.spec.memory_max_mb,
            "cpu_max_percent": app.spec.cpu_max_percent,
            "pids_max": app.spec.pids_max,
            "instances": instances,
        })
    }

    pub fn new(
        supervisor: Supervisor,
        home: String,
        shutdown: mpsc::Sender<()>,
        config: Arc<ConfigHandle>,
        persisted: watch::Receiver<Persisted>,
    ) -> Self {
        Self {
            supervisor,
            started: Instant::now(),
            home,
            shutdown,
            config,
            persisted,
            secrets: None,
            dashboard: None,
            jobs: None,
        }
    }

    /// Where `herd dashboard` links point (`http://ADDR`) and the logins they open.
    pub fn with_dashboard(
        mut self,
        logins: Arc<crate::http::dashboard::session::Logins>,
        base: String,
    ) -> Self {
        self.dashboard = Some((logins, base));
        self
    }

    /// The secret store an app file's `secret:` references are checked against.
    /// The jobs an app file's `[[job]]` tables register (and `herd logs JOB` reads).
    pub fn with_jobs(mut self, jobs: crate::jobs::Jobs) -> Self {
        self.jobs = Some(jobs);
        self
    }

    pub fn with_secrets(mut self, secrets: Arc<crate::access::secrets::Secrets>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Passes `result` on once every transition made so far is in the state file: what the
    /// CLI reports as done survives a daemon crash right after. A change that could not be
    /// saved is answered with an error that says so (the supervisor's own error wins).
    async fn durable_after<T>(&self, result: Result<T, SupervisorError>) -> Result<T, Status> {
        let saved = self.durable().await;
        let value = result?;
        saved?;
        Ok(value)
    }

    async fn durable(&self) -> Result<(), Status> {
        let target = *self.supervisor.subscribe().borrow();
        let mut persisted = self.persisted.clone();
        let outcome = tokio::time::timeout(
            DURABLE_WAIT,
            persisted.wait_for(|p| p.outcome(target).is_some()),
        )
        .await
        .map(|r| r.map(|p| p.outcome(target)));
        let kept = "the change is applied in memory and will be saved when the disk accepts \
                    writes again (herd retries every second)";
        match outcome {
            Ok(Ok(Some(Ok(())))) => Ok(()),
            Ok(Ok(Some(Err(why)))) => Err(Status::unavailable(format!(
                "state not saved: {why}; {kept}"
            ))),
            Ok(Ok(None)) | Ok(Err(_)) => Err(Status::unavailable(
                "state not saved: the daemon is shutting down (its final flush will try again)",
            )),
            Err(_) => Err(Status::unavailable(format!(
                "state not saved within {}s: the disk is slow or stuck; {kept}",
                DURABLE_WAIT.as_secs()
            ))),
        }
    }
}

impl From<SupervisorError> for Status {
    fn from(e: SupervisorError) -> Self {
        match e {
            SupervisorError::UnknownApp(_) => Status::not_found(e.to_string()),
            SupervisorError::ShuttingDown => Status::unavailable(e.to_string()),
            SupervisorError::Invalid(_) => Status::invalid_argument(e.to_string()),
            SupervisorError::ReloadAborted { .. } => Status::aborted(e.to_string()),
        }
    }
}

fn spec_error(e: SpecError) -> Status {
    Status::invalid_argument(e.to_string())
}

pub fn exit_info(e: &ExitRecord) -> pb::ExitInfo {
    pb::ExitInfo {
        code: e.code,
        signal: e.signal.clone(),
        at_unix_ms: e.at_ms,
        reason: e.reason.clone(),
    }
}

pub fn instance_info(name: &str, i: &Instance, now: Now) -> pb::InstanceInfo {
    pb::InstanceInfo {
        name: name.to_string(),
        instance: i.index,
        // The main process: the one named by `MAINPID=`, else the group's leader.
        pid: i.main_process(),
        status: i.status.as_str().to_string(),
        restarts: i.restarts,
        uptime_s: i.uptime_s(now),
        last_exit: i.last_exit().map(exit_info),
        next_start_in_ms: i.next_start_in_ms(now),
        health: i.health.as_str().to_string(),
        probe_failures: i.probe_failures,
        last_probe_error: i.last_probe_error.clone(),
        cpu_percent: i.metrics.map(|m| m.cpu_percent),
        rss_bytes: i.metrics.map(|m| m.rss_bytes),
        processes: i.metrics.map(|m| m.processes),
        retiring_pid: i.retiring.as_ref().map(|r| r.pid),
        status_text: i.status_text.clone(),
        main_pid: i.main_pid,
        // An app-level fact: set by the callers that have the app.
        watching: false,
    }
}

fn instances_reply(apps: &[App]) -> pb::InstancesReply {
    let now = Now::read();
    let instances = apps
        .iter()
        .flat_map(|a| {
            a.instances.iter().map(|i| pb::InstanceInfo {
                watching: a.is_watching(),
                ..instance_info(&a.spec.name, i, now)
            })
        })
        .collect();
    pb::InstancesReply {
        instances,
        jobs: Vec::new(),
    }
}

fn one(app: App) -> Response<pb::InstancesReply> {
    Response::new(instances_reply(std::slice::from_ref(&app)))
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl SupervisorApi for Api {
    async fn ping(&self, _: Request<pb::PingRequest>) -> Result<Response<pb::PingReply>, Status> {
        Ok(Response::new(pb::PingReply {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            home: self.home.clone(),
        }))
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let base = Path::new(&req.base_dir);
        let specs = spec::parse_app_file(&req.source, &req.toml, base).map_err(spec_error)?;
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let job_specs = crate::jobs::spec::parse_jobs(&req.source, &req.toml, base, &names)
            .map_err(spec_error)?;
        let run_specs: Vec<_> = job_specs.iter().map(|j| j.app.clone()).collect();
        spec::check_on_host(&req.source, &specs).map_err(spec_error)?;
        spec::check_on_host(&req.source, &run_specs).map_err(spec_error)?;
        if let Some(secrets) = &self.secrets {
            secrets
                .check_apps(&specs)
                .and_then(|()| secrets.check_apps(&run_specs))
                .map_err(|e| Status::failed_precondition(format!("{}: {e}", req.source)))?;
        }
        let jobs = match (&self.jobs, job_specs.is_empty()) {
            (_, true) => Vec::new(),
            (None, false) => {
                return Err(Status::unimplemented("this daemon runs no jobs"));
            }
            (Some(jobs), false) => {
                for s in &specs {
                    if jobs.knows(&s.name).await {
                        return Err(Status::invalid_argument(format!(
                            "{}: app `{}`: key `name`: a job of that name exists; an app and a job need different names",
                            req.source, s.name
                        )));
                    }
                }
                let registered = jobs.register(job_specs).await;
                registered.map_err(|e| match e {
                    crate::jobs::JobError::Invalid(why) => {
                        Status::invalid_argument(format!("{}: {why}", req.source))
                    }
                    other => Status::from(other),
                })?
            }
        };
        // Jobs are on disk once registered (`jobs.json`); apps once the state file has them.
        let apps = if specs.is_empty() {
            Vec::new()
        } else {
            let apps = acting_as(caller, self.supervisor.apply(specs)).await;
            self.durable_after(apps).await?
        };
        Ok(Response::new(pb::InstancesReply {
            jobs,
            ..instances_reply(&apps)
        }))
    }

    async fn start(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        let started = acting_as(caller, async { self.supervisor.start(&name, false) }).await;
        Ok(one(self.durable_after(started).await?))
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let stopped = acting_as(
            caller,
            self.supervisor
                .stop(&req.name, req.timeout_s.map(Duration::from_secs)),
        )
        .await;
        Ok(one(self.durable_after(stopped).await?))
    }

    async fn restart(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        let restarted = acting_as(caller, self.supervisor.restart(&name)).await;
        Ok(one(self.durable_after(restarted).await?))
    }

    async fn delete(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        if let Some(jobs) = &self.jobs
            && self.supervisor.list(Some(&req.name)).is_err()
            && jobs.knows(&req.name).await
        {
            acting_as(caller, jobs.delete(&req.name)).await?;
            return Ok(Response::new(pb::DeleteReply {
                deleted: vec![req.name],
            }));
        }
        let deleted = acting_as(
            caller,
            self.supervisor
                .delete(&req.name, req.timeout_s.map(Duration::from_secs)),
        )
        .await;
        self.durable_after(deleted).await?;
        Ok(Response::new(pb::DeleteReply {
            deleted: vec![req.name],
        }))
    }

    async fn scale(
        &self,
        req: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        if req.instances > spec::MAX_INSTANCES {
            return Err(Status::invalid_argument(format!(
                "{} instances is more than the limit of {}",
                req.instances,
                spec::MAX_INSTANCES
            )));
        }
        let scaled = acting_as(caller, self.supervisor.scale(&req.name, req.instances)).await;
        Ok(one(self.durable_after(scaled).await?))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let name = req.into_inner().name;
        let apps = self
            .supervisor
            .list((!name.is_empty()).then_some(name.as_str()))?;
        Ok(Response::new(instances_reply(&apps)))
    }

    async fn inspect(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::InspectReply>, Status> {
        let name = req.into_inner().name;
        let app = self.supervisor.list(Some(&name))?.remove(0);
        let now = Now::read();
        let instances = app
            .instances
            .iter()
            .map(|i| pb::InstanceDetail {
                info: Some(pb::InstanceInfo {
                    watching: app.is_watching(),
                    ..instance_info(&name, i, now)
                }),
                exits: i.exits.iter().map(exit_info).collect(),
                log_file: self
                    .supervisor
                    .log_path(&name, i.index)
                    .display()
                    .to_string(),
            })
            .collect();
        let spec_json =
            serde_json::to_string(&app.spec).map_err(|e| Status::internal(e.to_string()))?;
        let mut identity = crate::supervisor::identity::describe(&app.spec);
        identity["cgroup"] = self.cgroup_view(&app);
        let identity_json = identity.to_string();
        Ok(Response::new(pb::InspectReply {
            spec_json,
            desired: app.desired.as_str().into(),
            instances,
            identity_json,
            watching: app.is_watching(),
        }))
    }

    type LogsStream = LogStream;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        if let Some(jobs) = &self.jobs
            && (req.run.is_some()
                || (self.supervisor.list(Some(&req.name)).is_err() && jobs.knows(&req.name).await))
        {
            let stream = crate::jobs::service::log_stream(
                jobs,
                &req.name,
                req.run,
                req.lines as usize,
                req.follow,
            )
            .await?;
            return Ok(Response::new(stream));
        }
        let app = self.supervisor.list(Some(&req.name))?.remove(0);
        let files = app.spec.log_files;
        let targets: Vec<(u32, std::path::PathBuf)> = app
            .instances
            .iter()
            .map(|i| (i.index, self.supervisor.log_path(&req.name, i.index)))
            .collect();
        let (tx, rx) = mpsc::channel(64);
        let lines = req.lines as usize;
        let follow = req.follow;
        tokio::spawn(async move {
            let mut offsets = Vec::with_capacity(targets.len());
            for (index, path) in &targets {
                let (data, len) = match logs::tail(path, lines, files) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "cannot read {}: {e}",
                                path.display()
                            ))))
                            .await;
                        return;
                    }
                };
                offsets.push(len);
                if !data.is_empty()
                    && tx
                        .send(Ok(pb::LogChunk {
                            instance: *index,
                            data,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                for ((index, path), offset) in targets.iter().zip(offsets.iter_mut()) {
                    match logs::read_new(path, offset) {
                        Ok(data) if data.is_empty() => {}
                        Ok(data) => {
                            if tx
                                .send(Ok(pb::LogChunk {
                                    instance: *index,
                                    data,
                                }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(_) => {}
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let (stopped, left_running) = acting_as(
            caller,
            self.supervisor
                .shutdown(req.keep_apps, req.timeout_s.map(Duration::from_secs)),
        )
        .await;
        let _ = self.shutdown.try_send(());
        Ok(Response::new(pb::ShutdownReply {
            stopped,
            left_running,
        }))
    }

    async fn reload(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        let reloaded = acting_as(caller, self.supervisor.reload(&name)).await;
        Ok(one(self.durable_after(reloaded).await?))
    }

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<pb::WatchReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let set = acting_as(caller, async {
            self.supervisor.set_watching(&req.name, req.on)
        })
        .await;
        let watching = self.durable_after(set).await?;
        Ok(Response::new(pb::WatchReply {
            name: req.name,
            watching,
        }))
    }

    async fn metrics(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::MetricsReply>, Status> {
        let name = req.into_inner().name;
        let apps = self
            .supervisor
            .list((!name.is_empty()).then_some(name.as_str()))?;
        let host = self.supervisor.host_metrics();
        Ok(Response::new(pb::MetricsReply {
            host: host.map(|h| pb::HostMetrics {
                cpu_percent: h.cpu_percent,
                cpus: h.cpus,
                mem_total_bytes: h.mem_total_bytes,
                mem_used_bytes: h.mem_used_bytes,
                load: h.load.to_vec(),
                at_unix_ms: h.at_ms,
            }),
            instances: instances_reply(&apps).instances,
            daemon_rss_bytes: host.map(|h| h.daemon_rss_bytes).unwrap_or_default(),
            daemon_cpu_percent: host.map(|h| h.daemon_cpu_percent).unwrap_or_default(),
        }))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::EventLine, Status>> + Send>>;

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let req = req.into_inner();
        if !req.name.is_empty() && self.supervisor.list(Some(&req.name)).is_err() {
            let job = match &self.jobs {
                Some(jobs) => jobs.knows(&req.name).await,
                None => false,
            };
            if !job {
                self.supervisor.list(Some(&req.name))?;
            }
        }
        let events = self.supervisor.events().clone();
        // Subscribe before reading the file: nothing falls between the two.
        let mut live = events.subscribe();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let path = events.path().to_path_buf();
            let (lines, name) = (req.lines as usize, req.name.clone());
            let recent = tokio::task::spawn_blocking(move || recent_events(&path, lines, &name))
                .await
                .unwrap_or_default();
            let mut last_seq = 0;
            for e in recent {
                last_seq = e.seq;
                let json = serde_json::to_string(&e).unwrap_or_default();
                if tx.send(Ok(pb::EventLine { json })).await.is_err() {
                    return;
                }
            }
            if !req.follow {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(e) if e.seq > last_seq && (req.name.is_empty() || e.app == req.name) => {
                        let json = serde_json::to_string(&e).unwrap_or_default();
                        if tx.send(Ok(pb::EventLine { json })).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let json =
                            serde_json::json!({ "event": "lagged", "missed": n }).to_string();
                        let _ = tx.send(Ok(pb::EventLine { json })).await;
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn graph(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::GraphReply>, Status> {
        let node = self.supervisor.graph(&req.into_inner().name)?;
        let json = serde_json::to_string(&node).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GraphReply {
            json,
            text: deps::render(&node),
        }))
    }

    async fn reload_config(
        &self,
        _: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigReply>, Status> {
        let config = self.config.clone();
        let file = config.path().display().to_string();
        let changed = tokio::task::spawn_blocking(move || config.reload())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                Status::invalid_argument(format!("config not reloaded, the running one stays: {e}"))
            })?;
        Ok(Response::new(pb::ReloadConfigReply { file, changed }))
    }

    async fn dashboard_link(
        &self,
        _: Request<pb::DashboardLinkRequest>,
    ) -> Result<Response<pb::DashboardLinkReply>, Status> {
        let Some((logins, base)) = &self.dashboard else {
            return Err(Status::failed_precondition(
                "the HTTP server is off ([http] listen = \"\" or HERD_HTTP_LISTEN=\"\"): set [http] listen in config.toml and restart the daemon",
            ));
        };
        let code = logins.link(tokio::time::Instant::now());
        Ok(Response::new(pb::DashboardLinkReply {
            url: format!("{base}/login?once={code}"),
            expires_in_s: crate::http::dashboard::session::LINK_TTL.as_secs(),
        }))
    }
}

/// The last `lines` events (of app `name`, or all when empty) from the event log.
fn recent_events(path: &Path, lines: usize, name: &str) -> Vec<Event> {
    // One app's events may be sparse: read a generous tail, then filter and cut.
    let want = if name.is_empty() {
        lines
    } else {
        lines.saturating_mul(20).max(1000)
    };
    let Ok((bytes, _)) = logs::tail(path, want, 2) else {
        return Vec::new();
    };
    let mut events: Vec<Event> = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| name.is_empty() || e.app == name)
        .collect();
    let skip = events.len().saturating_sub(lines);
    events.drain(..skip);
    events
}
