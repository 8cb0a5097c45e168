//! Leader forwarding as one small type: find the leader in the local Raft metrics, call its
//! ClusterApi, and follow "not leader" answers or wait out an election until a deadline.
//!
//! A call is retried only when it surely did not take effect: the target said it is not the
//! leader, or the connection could not be made. Registry commands are idempotent where possible
//! because a reply lost after a commit cannot be told apart from a lost request.

use std::future::Future;
use std::time::Duration;

use herd_proto::cluster::cluster_api_client::ClusterApiClient;
use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;
use tonic::Code;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::ClusterError;
use crate::raft::HerdRaft;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::transport::ClientAuth;
use crate::transport::PeerChannels;

pub(crate) type ApiClient = ClusterApiClient<InterceptedService<Channel, ClientAuth>>;

/// Metadata a non-leader attaches to its "not leader" answer: the leader it knows of.
pub(crate) const LEADER_HINT: &str = "x-herd-leader";

/// The answer of a node that cannot serve a leader-only request.
pub(crate) fn not_leader(leader: Option<u64>) -> Status {
    let mut status = Status::aborted(match leader {
        Some(id) => format!("not the leader; node {id} is"),
        None => "not the leader; no leader known".to_string(),
    });
    if let Some(id) = leader
        && let Ok(v) = id.to_string().parse()
    {
        status.metadata_mut().insert(LEADER_HINT, v);
    }
    status
}

fn leader_hint(md: &MetadataMap) -> Option<u64> {
    md.get(LEADER_HINT)?.to_str().ok()?.parse().ok()
}

#[derive(Clone)]
pub(crate) struct Forwarder {
    pub(crate) id: u64,
    pub(crate) raft: HerdRaft,
    pub(crate) channels: PeerChannels,
    pub(crate) auth: ClientAuth,
}

impl Forwarder {
    /// A ClusterApi client for `addr`.
    pub(crate) fn client(&self, addr: &str) -> Result<ApiClient, ClusterError> {
        let ch = self.channels.get(addr)?;
        Ok(ClusterApiClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The leader and its address, if this node knows one (other than itself).
    pub(crate) fn remote_leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .clone();
        Some((leader, addr))
    }

    /// Calls `f` on the leader until it answers, the deadline passes, or it fails for good.
    /// `Ok(None)` means this node itself is (now) the leader: the caller should serve locally.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        f: F,
    ) -> Result<Option<T>, ClusterError>
    where
        F: Fn(ApiClient) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + timeout;
        let mut hint: Option<u64> = None;
        let mut last_error = ClusterError::NoLeader;
        loop {
            let target = match hint.take() {
                Some(id) => self.addr_of(id).map(|a| (id, a)),
                None => self.remote_leader(),
            };
            match target {
                Some((id, _)) if id == self.id => return Ok(None),
                None if self.raft.is_leader() => return Ok(None),
                None => {}
                Some((id, addr)) => {
                    let client = self.client(&addr)?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, f(client)).await {
                        Ok(Ok(resp)) => return Ok(Some(resp.into_inner())),
                        Ok(Err(status)) => {
                            let retry = matches!(status.code(), Code::Aborted | Code::Unavailable);
                            hint = leader_hint(status.metadata()).filter(|&h| h != id);
                            last_error = ClusterError::Peer {
                                node_id: id,
                                addr,
                                message: format!("{what}: {}", status.message()),
                            };
                            if !retry {
                                return Err(last_error);
                            }
                            if hint.is_some() {
                                continue;
                            }
                        }
                        Err(_) => {
                            return Err(ClusterError::Timeout {
                                what: format!("{what} on leader {id} at {addr}"),
                                after_ms: timeout.as_millis() as u64,
                            });
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(last_error);
            }
            // Wait for the metrics to name a (new) leader, or a short pause before retrying.
            let mut metrics = self.raft.metrics();
            let pause = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
        }
    }

    fn addr_of(&self, id: u64) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }
}
