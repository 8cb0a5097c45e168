//! The Raft network server: hands peers' RPCs to the local Raft node. Authentication happens in
//! the interceptor in front of this service (see `transport::ServerAuth`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use herd_proto::cluster as pb;
use herd_proto::cluster::raft_service_server::RaftService;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::VoteOf;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::HerdRaft;
use super::OpenRaft;
use super::TypeConfig;
use super::codec::decode;
use super::codec::encode;
use super::network::TARGET_HEADER;
use crate::NodeId;

pub(crate) struct RaftRpc {
    raft: HerdRaft,
    contact: LeaderContact,
}

/// When a leader last replicated to (or heartbeated) this node. A node that was dropped from
/// the membership while it was away still believes in its old leader; silence here is how it
/// notices and asks to be added again.
#[derive(Clone)]
pub(crate) struct LeaderContact {
    base: Instant,
    /// Milliseconds after `base` of the last contact.
    last_ms: Arc<AtomicU64>,
}

impl LeaderContact {
    /// Starts as if contacted now, so a restarted member first gives its leader time to call.
    pub(crate) fn new() -> LeaderContact {
        LeaderContact {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub(crate) fn elapsed(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

impl RaftRpc {
    pub(crate) fn new(raft: HerdRaft, contact: LeaderContact) -> RaftRpc {
        RaftRpc { raft, contact }
    }

    /// Refuses traffic meant for another node id (this address once served a node that was
    /// wiped and came back under a new id). `Unavailable` makes the sender back off.
    fn check_target<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let me = *self.raft.node_id();
        let to = req
            .metadata()
            .get(TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<NodeId>().ok());
        match to {
            Some(to) if to != me => Err(Status::unavailable(format!(
                "this address now serves node {me}, not node {to}"
            ))),
            _ => Ok(()),
        }
    }
}

impl RaftRpc {
    /// The engine Raft traffic is for. A node pinned to the agent role runs none: it is never a
    /// member, so no peer should send it Raft traffic; one that does is told to back off.
    fn engine(&self) -> Result<&OpenRaft, Status> {
        self.raft.engine().ok_or_else(|| {
            Status::unavailable("this node is pinned to the agent role and takes no Raft traffic")
        })
    }
}

/// The local Raft node has stopped (shutdown or storage failure): peers should treat this node
/// as unreachable.
fn stopped(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft node stopped: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    Ok(Response::new(pb::RaftPayload {
        payload: encode(value)?,
    }))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().payload)?;
        let resp = self.engine()?.append_entries(rpc).await.map_err(stopped)?;
        if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
            self.contact.touch();
        }
        reply(&resp)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().payload)?;
        let resp = self.engine()?.vote(rpc).await.map_err(stopped)?;
        reply(&resp)
    }

    async fn pre_vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req)?;
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().payload)?;
        let resp = self.engine()?.pre_vote(rpc).await.map_err(stopped)?;
        reply(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req)?;
        let req = req.into_inner();
        let vote: VoteOf<TypeConfig> = decode(&req.vote)?;
        let meta: SnapshotMetaOf<TypeConfig> = decode(&req.meta)?;
        tracing::info!(last_log_id = ?meta.last_log_id.map(|l| l.index), bytes = req.data.len(), "receiving registry snapshot");
        let snapshot = openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: req.data,
        };
        let resp = self
            .engine()?
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(stopped)?;
        self.contact.touch();
        reply(&resp)
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req)?;
        let rpc: TransferLeaderRequest<TypeConfig> = decode(&req.into_inner().payload)?;
        let resp = self
            .engine()?
            .handle_transfer_leader(rpc)
            .await
            .map_err(stopped)?;
        reply(&resp)
    }
}
