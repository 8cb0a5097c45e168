//! The Agent gRPC service: the master's heartbeat lands here. The reply carries what the local
//! supervisor reports, the host's resources and this node's herd version.

use std::sync::Arc;

use herd_proto::cluster as pb;
use herd_proto::cluster::agent_server::Agent;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::AgentState;
use super::heartbeat::Heartbeat;
use super::report::resources_json;

/// The herd version a node reports (the workspace shares one version).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) struct AgentService {
    state: Arc<AgentState>,
    /// This node's current Raft term: a master behind it is stale.
    local_term: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl AgentService {
    pub(crate) fn new(
        state: Arc<AgentState>,
        local_term: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> AgentService {
        AgentService { state, local_term }
    }
}

/// What this node tells the master, as reply number `seq`.
fn reply(state: &AgentState, seq: u64) -> pb::HeartbeatReply {
    let (instances, resources_json) = match state.supervisor() {
        Some(sup) => (sup.report(), resources_json(true, sup.resources().as_ref())),
        None => (Vec::new(), resources_json(false, None)),
    };
    pb::HeartbeatReply {
        node_id: state.node_id(),
        version: VERSION.to_string(),
        resources_json,
        instances: instances
            .into_iter()
            .map(|r| pb::InstanceStatus {
                generation: state.generation(&r.app, r.instance).unwrap_or(0),
                app: r.app,
                instance: r.instance,
                status: r.status.as_str().to_string(),
                pid: r.pid,
                restarts: r.restarts,
            })
            .collect(),
        term: state.highest_term(),
        lease_seq: seq,
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let req = req.into_inner();
        let seq = self
            .state
            .accept(&Heartbeat::from(&req), (self.local_term)())?;
        if !req.master_addr.is_empty() {
            self.state.note_master(req.master_id, &req.master_addr);
        }
        Ok(Response::new(reply(&self.state, seq)))
    }
}
