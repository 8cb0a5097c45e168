//! Leader forwarding as one small type and one loop (`Forwarder::at_leader`), which every
//! leader-only request goes through: serve it here if this node leads, else find the leader in
//! the local Raft metrics, call its ClusterApi, follow "not leader" answers or wait out an
//! election, until a deadline.
//!
//! A call is retried only when it surely did not take effect: the target said it is not the
//! leader, or the connection could not be made. Registry commands are idempotent where possible
//! because a reply lost after a commit cannot be told apart from a lost request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herd_proto::cluster::cluster_api_client::ClusterApiClient;
use openraft::async_runtime::WatchReceiver;
use tonic::Code;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::shared::Served;
use crate::NodeId;
use crate::agent::AgentState;
use crate::error::ClusterError;
use crate::raft::HerdRaft;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::transport::ClientAuth;
use crate::transport::PeerChannels;

pub(crate) type ApiClient = ClusterApiClient<InterceptedService<Channel, ClientAuth>>;

/// How long to wait for this node's fresh leadership to be able to serve before trying again.
const SETTLE_PAUSE: Duration = Duration::from_millis(20);
/// The longest wait for Raft metrics to name a leader before trying again.
const ELECTION_POLL: Duration = Duration::from_millis(100);

/// Metadata a non-leader attaches to its "not leader" answer: the leader it knows of.
pub(crate) const LEADER_HINT: &str = "x-herd-leader";

/// The answer of a node that cannot serve a leader-only request.
pub(crate) fn not_leader(leader: Option<NodeId>) -> Status {
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

fn leader_hint(md: &MetadataMap) -> Option<NodeId> {
    md.get(LEADER_HINT)?.to_str().ok()?.parse().ok()
}

#[derive(Clone)]
pub(crate) struct Forwarder {
    pub(crate) id: NodeId,
    pub(crate) raft: HerdRaft,
    pub(crate) channels: PeerChannels,
    pub(crate) auth: ClientAuth,
    /// The agent's contact: a node outside Raft knows its leader only from heartbeats.
    pub(crate) contact: Arc<AgentState>,
}

impl Forwarder {
    /// A ClusterApi client for `addr`.
    pub(crate) fn client(&self, addr: &str) -> Result<ApiClient, ClusterError> {
        let ch = self.channels.get(addr)?;
        Ok(ClusterApiClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The leader and its address, if this node knows one (it may be this node): from Raft,
    /// or, on a node outside Raft, from the latest master heartbeat.
    pub(crate) fn remote_leader(&self) -> Option<(NodeId, String)> {
        let from_raft = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.current_leader.and_then(|leader| {
                let node = m.membership_config.membership().get_node(&leader)?;
                Some((leader, node.addr.clone()))
            })
        };
        from_raft.or_else(|| self.contact.master())
    }

    /// Runs one leader-only request to its answer within `timeout`. While this node leads,
    /// `local` serves it here; otherwise `remote` sends it to the leader this node knows of. A
    /// "not leader" answer is followed to the leader it names; with no leader known (or this
    /// node elected but not serving yet) the loop waits for leadership to settle and tries
    /// again. It gives up at the deadline with the last error seen, at once on a refusal.
    pub(crate) async fn at_leader<T, L, LF, R, RF>(
        &self,
        what: &str,
        timeout: Duration,
        local: L,
        remote: R,
    ) -> Result<T, ClusterError>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<Served<T>, ClusterError>>,
        R: Fn(ApiClient) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let deadline = crate::clock::now() + timeout;
        let mut hint: Option<NodeId> = None;
        let mut last_error = ClusterError::NoLeader;
        loop {
            if let Served::Done(v) = local().await? {
                return Ok(v);
            }
            let target = match hint.take() {
                Some(id) => self.addr_of(id).map(|a| (id, a)),
                None => self.remote_leader(),
            };
            // Raft names this node the leader but it could not serve: its leadership is still
            // settling (or its master term has not started). Only a short pause, then again.
            let settling = match &target {
                Some((id, _)) => *id == self.id,
                None => self.raft.is_leader(),
            };
            if let Some((id, addr)) = target.filter(|_| !settling) {
                let client = self.client(&addr)?;
                let left = deadline.saturating_duration_since(crate::clock::now());
                match tokio::time::timeout(left, remote(client)).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(status)) => {
                        let retry = matches!(status.code(), Code::Aborted | Code::Unavailable);
                        hint = leader_hint(status.metadata()).filter(|&h| h != id);
                        last_error = ClusterError::Peer {
                            node_id: id.get(),
                            addr,
                            message: format!("{what}: {}", status.message()),
                        };
                        if !retry {
                            return Err(last_error);
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
            let left = deadline.saturating_duration_since(crate::clock::now());
            if left.is_zero() {
                return Err(last_error);
            }
            if hint.is_some() {
                continue; // follow the hint at once
            }
            if settling {
                tokio::time::sleep(left.min(SETTLE_PAUSE)).await;
            } else {
                // Wait for the metrics to name a (new) leader, or a short pause before retrying.
                let mut metrics = self.raft.metrics();
                let _ = tokio::time::timeout(left.min(ELECTION_POLL), metrics.changed()).await;
            }
        }
    }

    fn addr_of(&self, id: NodeId) -> Option<String> {
        let from_raft = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        };
        from_raft.or_else(|| {
            self.contact
                .master()
                .filter(|(m, _)| *m == id)
                .map(|(_, addr)| addr)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_leader_answer_is_retryable_and_names_the_leader_it_knows() {
        let known = not_leader(Some(NodeId(3)));
        assert_eq!(known.code(), Code::Aborted, "the loop retries on Aborted");
        assert_eq!(known.message(), "not the leader; node 3 is");
        assert_eq!(leader_hint(known.metadata()), Some(NodeId(3)));
        let unknown = not_leader(None);
        assert_eq!(unknown.code(), Code::Aborted);
        assert_eq!(unknown.message(), "not the leader; no leader known");
        assert_eq!(leader_hint(unknown.metadata()), None);
    }
}
