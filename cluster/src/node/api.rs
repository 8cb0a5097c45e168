//! The ClusterApi gRPC service. Leader-only calls answer `Aborted` with a leader hint on a
//! follower (the caller's `Forwarder::at_leader` follows it); `Join` goes through
//! `at_leader` here, because a joining node only knows some peer.

use std::sync::Arc;
use std::time::Duration;

use herd_proto::cluster as pb;
use herd_proto::cluster::cluster_api_server::ClusterApi;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::forwarder::not_leader;
use super::membership::JoinOutcome;
use super::membership::Joiner;
use super::shared::Served;
use super::shared::Shared;
use crate::NodeId;
use crate::error::ClusterError;
use crate::raft::Member;
use crate::raft::decode;
use crate::raft::encode;
use crate::registry::RegistryCommand;
use crate::registry::RegistryResponse;

pub(crate) struct ClusterApiService {
    shared: Arc<Shared>,
}

impl ClusterApiService {
    pub(crate) fn new(shared: Arc<Shared>) -> ClusterApiService {
        ClusterApiService { shared }
    }
}

fn to_status(e: ClusterError) -> Status {
    match e {
        ClusterError::NoLeader | ClusterError::Shutdown => Status::unavailable(e.to_string()),
        ClusterError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        ClusterError::Membership(_) => Status::failed_precondition(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn served<T>(r: Result<Served<T>, ClusterError>) -> Result<T, Status> {
    match r.map_err(to_status)? {
        Served::Done(v) => Ok(v),
        Served::NotLeader(hint) => Err(not_leader(hint)),
    }
}

/// How long a forwarded join may take: the leader waits for the learner to catch up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

#[tonic::async_trait]
impl ClusterApi for ClusterApiService {
    async fn probe(
        &self,
        _req: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeReply>, Status> {
        let initialized = self
            .shared
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let m = self.shared.metrics();
        let leader_addr = m
            .current_leader
            .and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            })
            .unwrap_or_default();
        Ok(Response::new(pb::ProbeReply {
            node_id: self.shared.id.get(),
            advertise: self.shared.cfg.advertise.clone(),
            initialized,
            leader_id: m.current_leader.map_or(0, NodeId::get),
            leader_addr,
        }))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let req = req.into_inner();
        if req.node_id == 0 || req.addr.is_empty() {
            return Err(Status::invalid_argument(
                "join needs a node id and an address",
            ));
        }
        let joiner = Joiner {
            id: NodeId(req.node_id),
            member: Member {
                addr: req.addr.clone(),
                labels: req.labels.clone().into_iter().collect(),
            },
            agent_only: req.agent_only,
            version: (!req.version.is_empty()).then(|| req.version.clone()),
        };
        let shared = &self.shared;
        let joined = |outcome: JoinOutcome| pb::JoinReply {
            role: outcome.as_str().to_string(),
            leader_id: shared.id.get(),
        };
        let reply = shared
            .forwarder
            .at_leader(
                "join",
                JOIN_TIMEOUT,
                || async { Ok(shared.join_local(joiner.clone()).await?.map(joined)) },
                |mut c| {
                    let req = req.clone();
                    async move { Ok(c.join(req).await?.into_inner()) }
                },
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(reply))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveReply>, Status> {
        let id = req.into_inner().node_id;
        served(self.shared.leave_local(NodeId(id)).await)?;
        Ok(Response::new(pb::LeaveReply {}))
    }

    async fn write(
        &self,
        req: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let cmd: RegistryCommand = decode(&req.into_inner().command)?;
        let outcome = served(self.shared.write_local(cmd).await)?;
        // The wire carries a `RegistryResponse` (a stale-term refusal as its text): only a
        // master's local writes meet the fence, and older nodes decode this reply.
        Ok(Response::new(pb::WriteReply {
            response: encode(&RegistryResponse::from(outcome))?,
        }))
    }

    async fn read_index(
        &self,
        _req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        let index = served(self.shared.read_index_local().await)?;
        Ok(Response::new(pb::ReadIndexReply { index }))
    }

    async fn step_down(
        &self,
        _req: Request<pb::StepDownRequest>,
    ) -> Result<Response<pb::StepDownReply>, Status> {
        let new_leader_id = served(self.shared.step_down_local(super::STEP_DOWN_WAIT).await)?;
        Ok(Response::new(pb::StepDownReply {
            new_leader_id: new_leader_id.get(),
        }))
    }

    async fn runtime(
        &self,
        _req: Request<pb::RuntimeRequest>,
    ) -> Result<Response<pb::RuntimeReply>, Status> {
        match self.shared.runtime_local() {
            Served::Done(rt) => Ok(Response::new(pb::RuntimeReply {
                runtime: encode(&rt)?,
            })),
            Served::NotLeader(hint) => Err(not_leader(hint)),
        }
    }

    async fn slice(
        &self,
        req: Request<pb::SliceRequest>,
    ) -> Result<Response<pb::SliceReply>, Status> {
        let held = served(Ok(self
            .shared
            .slice_local(NodeId(req.into_inner().node_id))))?;
        Ok(Response::new(pb::SliceReply {
            slice: encode(&held.slice)?,
            as_of: held.as_of,
        }))
    }

    async fn read(
        &self,
        _req: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadReply>, Status> {
        let (registry, as_of) = served(self.shared.read_whole_local().await)?;
        Ok(Response::new(pb::ReadReply {
            registry: encode(&*registry)?,
            as_of,
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(pb::StatusReply {
            status: encode(&self.shared.status_local())?,
        }))
    }
}
