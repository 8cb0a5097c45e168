//! The Raft network client: openraft RPCs to one peer over its cached gRPC channel.
//!
//! A peer that refuses connections or is shutting down yields `Unreachable`, so openraft backs
//! off instead of hammering it; a call that exceeds openraft's deadline yields `Timeout`.

use std::future::Future;
use std::time::Duration;

use herd_proto::cluster as pb;
use herd_proto::cluster::raft_service_client::RaftServiceClient;
use openraft::RPCTypes;
use openraft::RaftNetworkFactory;
use openraft::alias::VoteOf;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Timeout;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::Member;
use super::TypeConfig;
use super::codec::decode;
use super::codec::encode;
use super::state_machine::SnapshotData;
use crate::NodeId;
use crate::transport::ClientAuth;
use crate::transport::PeerChannels;

/// Metadata naming the node id a Raft RPC is meant for.
pub(crate) const TARGET_HEADER: &str = "x-herd-to";

/// Floor for the AppendEntries deadline (see `PeerClient::unary`).
const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Large enough for a registry snapshot in one message.
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

pub(crate) type RaftClient = RaftServiceClient<InterceptedService<Channel, ClientAuth>>;

/// Creates a [`PeerClient`] per replication target; the channels behind them are shared.
pub(crate) struct NetworkFactory {
    pub(crate) id: NodeId,
    pub(crate) channels: PeerChannels,
    pub(crate) auth: ClientAuth,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        let client = self
            .channels
            .get(&node.addr)
            .map(|ch| {
                RaftServiceClient::with_interceptor(ch, self.auth.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|e| e.to_string());
        PeerClient {
            id: self.id,
            target,
            addr: node.addr.clone(),
            client,
        }
    }
}

/// Raft RPCs to one peer.
pub(crate) struct PeerClient {
    id: NodeId,
    target: NodeId,
    addr: String,
    /// `Err` when the peer's address is unusable; every call then reports it unreachable.
    client: Result<RaftClient, String>,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    PreVote,
    TransferLeader,
}

impl Rpc {
    fn kind(self) -> RPCTypes {
        match self {
            Rpc::Append => RPCTypes::AppendEntries,
            Rpc::Vote | Rpc::PreVote => RPCTypes::Vote,
            Rpc::TransferLeader => RPCTypes::TransferLeader,
        }
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftClient, Unreachable<TypeConfig>> {
        self.client.clone().map_err(|e| {
            Unreachable::from_string(format!("peer {} at `{}`: {e}", self.target, self.addr))
        })
    }

    /// Wraps `msg`, naming the intended receiver: a node that now answers at this address
    /// under another id (wiped and restarted) refuses, instead of voting in its predecessor's
    /// name.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(v) = self.target.to_string().parse() {
            req.metadata_mut().insert(TARGET_HEADER, v);
        }
        req
    }

    fn timeout(&self, rpc: RPCTypes, ttl: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action: rpc,
            id: self.id,
            target: self.target,
            timeout: ttl,
        }
    }

    /// Classifies a failed call: transport trouble means "unreachable", anything else is a
    /// network error carrying the peer and its address.
    fn status_error(&self, status: tonic::Status) -> RPCError<TypeConfig> {
        let msg = format!(
            "peer {} at `{}`: {:?}: {}",
            self.target,
            self.addr,
            status.code(),
            status.message()
        );
        match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Unknown => {
                RPCError::Unreachable(Unreachable::from_string(msg))
            }
            _ => RPCError::Network(NetworkError::from_string(msg)),
        }
    }

    async fn unary<Req, Resp>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload =
            encode(req).map_err(|s| RPCError::Network(NetworkError::from_string(s.message())))?;
        let mut client = self.client()?;
        let msg = self.request(pb::RaftPayload { payload });
        // openraft gives AppendEntries only a heartbeat interval; that bounds heartbeats (its
        // heartbeat worker enforces it itself), but a replication batch behind a slow fsync
        // deserves longer than 37 ms before it counts as a failure.
        let ttl = match rpc {
            Rpc::Append => option.soft_ttl().max(MIN_APPEND_TIMEOUT),
            _ => option.soft_ttl(),
        };
        let call = async move {
            match rpc {
                Rpc::Append => client.append_entries(msg).await,
                Rpc::Vote => client.vote(msg).await,
                Rpc::PreVote => client.pre_vote(msg).await,
                Rpc::TransferLeader => client.transfer_leader(msg).await,
            }
        };
        let reply = tokio::time::timeout(ttl, call)
            .await
            .map_err(|_| RPCError::Timeout(self.timeout(rpc.kind(), ttl)))?
            .map_err(|s| self.status_error(s))?;
        decode(&reply.into_inner().payload).map_err(|s| {
            RPCError::Network(NetworkError::from_string(format!(
                "peer {}: {}",
                self.target,
                s.message()
            )))
        })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::PreVote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let net =
            |s: tonic::Status| StreamingError::Network(NetworkError::from_string(s.message()));
        let req = pb::SnapshotRequest {
            vote: encode(&vote).map_err(net)?,
            meta: encode(&snapshot.meta).map_err(net)?,
            data: snapshot.snapshot,
        };
        let bytes = req.data.len();
        let req = self.request(req);
        let mut client = self.client()?;
        let ttl = option.hard_ttl();
        let call = tokio::time::timeout(ttl, client.install_snapshot(req));
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => r,
        };
        let reply = reply
            .map_err(|_| StreamingError::Timeout(self.timeout(RPCTypes::InstallSnapshot, ttl)))?
            .map_err(|s| match self.status_error(s) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::from_string(other.to_string())),
            })?;
        tracing::info!(
            target_node = self.target.get(),
            bytes,
            "sent registry snapshot"
        );
        decode(&reply.into_inner().payload).map_err(net)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::TransferLeader, &req, &option).await
    }
}
