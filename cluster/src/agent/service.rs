//! The Agent gRPC service: the master's heartbeat lands here. The reply carries what the local
//! supervisor reports, the host's resources and this node's herd version.

use std::sync::Arc;

use herd_proto::cluster as pb;
use herd_proto::cluster::agent_server::Agent;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::AgentState;
use super::delta::ReplyDelta;
use super::heartbeat::Heartbeat;
use super::report::resources_json;
use crate::NodeId;
use crate::Term;

/// The herd version a node reports (the workspace shares one version).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) struct AgentService {
    state: Arc<AgentState>,
    /// This node's current Raft term: a master behind it is stale.
    local_term: Box<dyn Fn() -> Term + Send + Sync>,
    /// What was reported last: replies carry changes only.
    delta: ReplyDelta,
}

impl AgentService {
    pub(crate) fn new(
        state: Arc<AgentState>,
        local_term: Box<dyn Fn() -> Term + Send + Sync>,
    ) -> AgentService {
        AgentService {
            state,
            local_term,
            delta: ReplyDelta::default(),
        }
    }
}

/// What this node tells the master, as reply number `seq`: the instance list only when the
/// master does not hold it already (`report_ack`), the resources only when they moved.
fn reply(state: &AgentState, delta: &ReplyDelta, seq: u64, report_ack: u64) -> pb::HeartbeatReply {
    let (instances, resources) = match state.supervisor() {
        Some(sup) => (sup.report(), Some(sup.resources())),
        None => (Vec::new(), None),
    };
    let json = resources_json(
        resources.is_some(),
        resources.as_ref().and_then(Option::as_ref),
    );
    let instances = instances
        .into_iter()
        .map(|r| pb::InstanceStatus {
            generation: state.generation(&r.app, r.instance).unwrap_or(0),
            app: r.app,
            instance: r.instance,
            status: r.status.as_str().to_string(),
            pid: r.pid,
            restarts: r.restarts,
        })
        .collect();
    let shaped = delta.shape(
        instances,
        resources.flatten(),
        json,
        report_ack,
        crate::clock::now(),
    );
    pb::HeartbeatReply {
        node_id: state.node_id().get(),
        version: VERSION.to_string(),
        resources_json: shaped.resources_json,
        instances: shaped.instances,
        term: state.highest_term().get(),
        lease_seq: seq,
        report_version: shaped.report_version,
        report_unchanged: shaped.report_unchanged,
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
            self.state
                .note_master(NodeId(req.master_id), &req.master_addr);
        }
        Ok(Response::new(reply(
            &self.state,
            &self.delta,
            seq,
            req.report_ack,
        )))
    }
}
