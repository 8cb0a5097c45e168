//! The Hooks gRPC service: `herd hooks`, `herd hooks dead`, `herd hooks replay`. Reading
//! the queue directories blocks, so each call runs on a blocking thread.

use super::{HookRunner, ReplayError};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::hooks_server::Hooks;
use tonic::{Request, Response, Status};

pub use herd_proto::supervisor::hooks_server::HooksServer;

#[derive(Clone)]
pub struct HooksApi {
    runner: HookRunner,
}

impl HooksApi {
    pub fn new(runner: HookRunner) -> Self {
        Self { runner }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(HookRunner) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let runner = self.runner.clone();
        tokio::task::spawn_blocking(move || f(runner))
            .await
            .map_err(|e| Status::internal(format!("the hooks task failed: {e}")))
    }
}

fn reply(value: serde_json::Value) -> Result<Response<pb::JsonReply>, Status> {
    Ok(Response::new(pb::JsonReply {
        json: value.to_string(),
    }))
}

#[tonic::async_trait]
impl Hooks for HooksApi {
    async fn list(
        &self,
        _req: Request<pb::HooksRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        reply(self.blocking(|r| r.list()).await?)
    }

    async fn dead(
        &self,
        _req: Request<pb::HooksRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        reply(self.blocking(|r| r.dead()).await?)
    }

    async fn replay(
        &self,
        req: Request<pb::ReplayRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let req = req.into_inner();
        let id = if req.all {
            None
        } else if req.id.is_empty() {
            return Err(Status::invalid_argument(
                "name a dead letter (`herd hooks dead` lists them) or use --all",
            ));
        } else {
            Some(req.id)
        };
        match self.blocking(move |r| r.replay(id.as_deref())).await? {
            Ok(v) => reply(v),
            Err(ReplayError::NotFound(id)) => Err(Status::not_found(format!(
                "no dead letter `{id}`; `herd hooks dead` lists them"
            ))),
            Err(ReplayError::NoHook(why)) => Err(Status::failed_precondition(why)),
        }
    }
}
