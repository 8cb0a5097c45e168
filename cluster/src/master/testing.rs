//! Test doubles for the master: fake nodes behind the heartbeat transport (up or down, with
//! canned reports) and an in-memory world (registry, membership, writes) for `MasterTerm`.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;

use herd_proto::cluster as pb;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::heartbeat::HeartbeatCall;
use super::heartbeat::HeartbeatTransport;
use super::heartbeat::NodeLink;
use super::io::MasterIo;
use super::io::WriteError;
use super::io::WriteFuture;
use crate::Term;
use crate::raft::Member;
use crate::registry::NodeId;
use crate::registry::Registry;
use crate::registry::RegistryCommand;

/// Answers heartbeats as the addressed node unless it is down; records every call.
#[derive(Default)]
pub(crate) struct FakeNodes {
    pub calls: Mutex<Vec<(NodeId, Instant, u64)>>,
    /// The lease acknowledgement each answered heartbeat carried.
    pub acks: Mutex<Vec<(NodeId, Instant, u64)>>,
    pub down: Mutex<HashSet<NodeId>>,
    /// Nodes whose heartbeats are never answered (a blackholed host): the caller times out.
    pub blackholed: Mutex<HashSet<NodeId>>,
    pub instances: Mutex<HashMap<NodeId, Vec<pb::InstanceStatus>>>,
}

impl FakeNodes {
    pub fn set_down(&self, id: NodeId, down: bool) {
        let mut d = self.down.lock().expect("lock");
        if down {
            d.insert(id);
        } else {
            d.remove(&id);
        }
    }

    /// The lease acknowledgements `id` received in `(from, to]`.
    pub fn acks_to(&self, id: NodeId, from: Instant, to: Instant) -> Vec<u64> {
        self.acks
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| a.0 == id && a.1 > from && a.1 <= to)
            .map(|a| a.2)
            .collect()
    }

    pub fn calls_to(&self, id: NodeId) -> usize {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.0 == id)
            .count()
    }
}

impl HeartbeatTransport for Arc<FakeNodes> {
    fn link(&self, _addr: &str) -> Arc<dyn NodeLink> {
        Arc::new(FakeLink(self.clone()))
    }
}

struct FakeLink(Arc<FakeNodes>);

impl NodeLink for FakeLink {
    fn heartbeat(&self, req: pb::HeartbeatRequest) -> HeartbeatCall {
        let me = self.0.clone();
        Box::pin(async move {
            me.calls.lock().expect("lock").push((
                NodeId(req.node_id),
                crate::clock::now(),
                req.term,
            ));
            if me
                .blackholed
                .lock()
                .expect("lock")
                .contains(&NodeId(req.node_id))
            {
                std::future::pending::<()>().await;
            }
            if me.down.lock().expect("lock").contains(&NodeId(req.node_id)) {
                return Err(Status::unavailable("down"));
            }
            me.acks.lock().expect("lock").push((
                NodeId(req.node_id),
                crate::clock::now(),
                req.lease_ack,
            ));
            let instances = me
                .instances
                .lock()
                .expect("lock")
                .get(&NodeId(req.node_id))
                .cloned()
                .unwrap_or_default();
            Ok(pb::HeartbeatReply {
                node_id: req.node_id,
                version: "test".into(),
                resources_json: "{}".into(),
                instances,
                term: req.term,
                lease_seq: req.lease_ack + 1,
                ..Default::default()
            })
        })
    }
}

/// An in-memory registry the master writes to, in a fixed term.
pub(crate) struct FakeWorld {
    pub term: Term,
    pub registry: Mutex<Registry>,
    pub published: watch::Sender<Arc<Registry>>,
    pub members: Mutex<Vec<(NodeId, Member)>>,
    pub nodes: Arc<FakeNodes>,
    /// Every command written (inside its `Fenced` wrapper), in order.
    pub writes: Mutex<Vec<RegistryCommand>>,
}

impl FakeWorld {
    pub fn new(term: Term, members: &[NodeId], registry: Registry) -> Arc<FakeWorld> {
        Arc::new(FakeWorld {
            term,
            published: watch::channel(Arc::new(registry.clone())).0,
            registry: Mutex::new(registry),
            members: Mutex::new(
                members
                    .iter()
                    .map(|&id| {
                        (
                            id,
                            Member {
                                addr: format!("n{id}"),
                                labels: Default::default(),
                            },
                        )
                    })
                    .collect(),
            ),
            nodes: Arc::new(FakeNodes::default()),
            writes: Mutex::new(Vec::new()),
        })
    }

    pub fn registry_now(&self) -> Registry {
        self.registry.lock().expect("lock").clone()
    }

    /// Applies a command from outside the master (a user's write).
    pub fn user_write(&self, cmd: RegistryCommand) {
        let mut r = self.registry.lock().expect("lock");
        assert!(r.apply(&cmd).is_applied(), "{cmd}");
        self.published.send_replace(Arc::new(r.clone()));
    }

    /// The inner commands the master wrote that match `pred`.
    pub fn written(&self, pred: impl Fn(&RegistryCommand) -> bool) -> Vec<RegistryCommand> {
        self.writes
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|w| match w {
                RegistryCommand::Fenced { command, .. } => Some((**command).clone()),
                _ => None,
            })
            .filter(|c| pred(c))
            .collect()
    }
}

impl MasterIo for FakeWorld {
    fn registry(&self) -> watch::Receiver<Arc<Registry>> {
        self.published.subscribe()
    }

    fn members(&self) -> Vec<(NodeId, Member)> {
        self.members.lock().expect("lock").clone()
    }

    fn membership_version(&self) -> Option<u64> {
        Some(self.members.lock().expect("lock").len() as u64)
    }

    fn versions(&self) -> crate::master::heartbeat::Versions {
        let registry = self.published.subscribe();
        Box::new(move |id| (0, registry.borrow().slice_version(id)))
    }

    fn transport(&self) -> Arc<dyn HeartbeatTransport> {
        Arc::new(self.nodes.clone())
    }

    fn write(&self, cmd: RegistryCommand) -> WriteFuture<'_> {
        Box::pin(async move {
            let mut r = self
                .registry
                .lock()
                .map_err(|e| WriteError::Failed(e.to_string()))?;
            let resp = r.apply_in_term(Some(self.term), &cmd);
            self.writes.lock().expect("lock").push(cmd);
            self.published.send_replace(Arc::new(r.clone()));
            Ok(resp)
        })
    }
}
