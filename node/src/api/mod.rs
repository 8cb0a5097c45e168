//! The Supervisor gRPC service: translates requests into supervisor calls and supervisor
//! state into protobuf replies. No supervision logic lives here.

use crate::supervisor::instance::{ExitRecord, Instance};
use crate::supervisor::spec::{self, SpecError};
use crate::supervisor::{App, Supervisor, SupervisorError, logs, now_ms};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::supervisor_server::Supervisor as SupervisorApi;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub use herd_proto::supervisor::supervisor_server::SupervisorServer;

pub struct Api {
    supervisor: Supervisor,
    started: Instant,
    home: String,
    /// Fired once a Shutdown request has done its work, so the server can stop.
    shutdown: mpsc::Sender<()>,
}

impl Api {
    pub fn new(supervisor: Supervisor, home: String, shutdown: mpsc::Sender<()>) -> Self {
        Self {
            supervisor,
            started: Instant::now(),
            home,
            shutdown,
        }
    }
}

impl From<SupervisorError> for Status {
    fn from(e: SupervisorError) -> Self {
        match e {
            SupervisorError::UnknownApp(_) => Status::not_found(e.to_string()),
            SupervisorError::ShuttingDown => Status::unavailable(e.to_string()),
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

pub fn instance_info(name: &str, i: &Instance, now: u64) -> pb::InstanceInfo {
    pb::InstanceInfo {
        name: name.to_string(),
        instance: i.index,
        pid: i.pid,
        status: i.status.as_str().to_string(),
        restarts: i.restarts,
        uptime_s: i.uptime_s(now),
        last_exit: i.last_exit().map(exit_info),
        next_start_in_ms: i.next_start_ms.map(|t| t.saturating_sub(now)),
    }
}

fn instances_reply(apps: &[App]) -> pb::InstancesReply {
    let now = now_ms();
    let instances = apps
        .iter()
        .flat_map(|a| {
            a.instances
                .iter()
                .map(|i| instance_info(&a.spec.name, i, now))
        })
        .collect();
    pb::InstancesReply { instances }
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
        let req = req.into_inner();
        let specs = spec::parse_app_file(&req.source, &req.toml, Path::new(&req.base_dir))
            .map_err(spec_error)?;
        let apps = self.supervisor.apply(specs).await?;
        Ok(Response::new(instances_reply(&apps)))
    }

    async fn start(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        Ok(one(self.supervisor.start(&req.into_inner().name, false)?))
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let req = req.into_inner();
        Ok(one(self
            .supervisor
            .stop(&req.name, req.timeout_s.map(Duration::from_secs))
            .await?))
    }

    async fn restart(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        Ok(one(self.supervisor.restart(&req.into_inner().name).await?))
    }

    async fn delete(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let req = req.into_inner();
        self.supervisor
            .delete(&req.name, req.timeout_s.map(Duration::from_secs))
            .await?;
        Ok(Response::new(pb::DeleteReply {
            deleted: vec![req.name],
        }))
    }

    async fn scale(
        &self,
        req: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::InstancesReply>, Status> {
        let req = req.into_inner();
        if req.instances > spec::MAX_INSTANCES {
            return Err(Status::invalid_argument(format!(
                "{} instances is more than the limit of {}",
                req.instances,
                spec::MAX_INSTANCES
            )));
        }
        Ok(one(self.supervisor.scale(&req.name, req.instances).await?))
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
        let now = now_ms();
        let instances = app
            .instances
            .iter()
            .map(|i| pb::InstanceDetail {
                info: Some(instance_info(&name, i, now)),
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
        Ok(Response::new(pb::InspectReply {
            spec_json,
            desired: app.desired.as_str().into(),
            instances,
        }))
    }

    type LogsStream = LogStream;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
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
        let req = req.into_inner();
        let (stopped, left_running) = self
            .supervisor
            .shutdown(req.keep_apps, req.timeout_s.map(Duration::from_secs))
            .await;
        let _ = self.shutdown.try_send(());
        Ok(Response::new(pb::ShutdownReply {
            stopped,
            left_running,
        }))
    }
}
