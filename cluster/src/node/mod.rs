//! `ClusterNode`: the façade the herd daemon embeds. It owns the Raft node, serves the
//! node-to-node gRPC (Raft + ClusterApi, behind the secret check), and runs the background
//! tasks: forming/joining, Redis announcements, the leader's membership keeper, and the
//! leadership signal.

#![deny(clippy::disallowed_methods)]

mod api;
mod formation;
mod forwarder;
mod hand_over;
mod identity;
mod master_io;
mod membership;
mod shared;
mod status;
mod work;

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herd_proto::cluster as pb;
use herd_proto::cluster::agent_server::AgentServer;
use herd_proto::cluster::cluster_api_server::ClusterApiServer;
use herd_proto::cluster::raft_service_server::RaftServiceServer;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::service::{InterceptorLayer, Routes};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::NodeId;
use crate::Term;
use crate::transport::limits::{Bounded, Gate, Limits, RequestSeen};
use crate::transport::throttle::AuthThrottle;
use crate::transport::tls::{self, CertPair, CertStore};

use self::api::ClusterApiService;
use self::formation::Formation;
use self::forwarder::Forwarder;
use self::membership::MembershipKeeper;
use self::shared::Shared;
pub use self::status::ClusterStatus;
pub use self::status::MemberStatus;
use crate::agent::AgentService;
use crate::agent::AgentState;
use crate::agent::HeldSlice;
use crate::agent::SliceFetch;
use crate::agent::SliceStore;
use crate::agent::fetch_loop;
use crate::config::ClusterConfig;
use crate::config::PeerTls;
use crate::discovery::Discovery;
use crate::discovery::RedisBoard;
use crate::error::ClusterError;
use crate::master::MasterView;
use crate::master::TermSettings;
use crate::raft::HerdRaft;
use crate::raft::Leadership;
use crate::raft::LogStore;
use crate::raft::OpenRaft;
use crate::raft::RaftStorage;
use crate::raft::StateMachine;
use crate::raft::decode;
use crate::raft::encode;
use crate::raft::leadership;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::raft::network::NetworkFactory;
use crate::raft::raft_config;
use crate::raft::service::LeaderContact;
use crate::raft::service::RaftRpc;
use crate::registry::Registry;
use crate::registry::RegistryCommand;
use crate::registry::RegistryResponse;
use crate::transport::ClientAuth;
use crate::transport::PeerChannels;
use crate::transport::ServerAuth;

/// How long a forwarded write or read may wait for a leader (e.g. across an election).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `herd cluster step-down` waits for another node to take over.
pub(crate) const STEP_DOWN_WAIT: Duration = Duration::from_secs(5);

/// One running cluster node. Dropping it stops it in the background; `shutdown` does the same
/// and returns once the port and the data dir are released.
pub struct ClusterNode {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    board: Option<RedisBoard>,
    /// Lets `shutdown` wait until the redb file is closed, so it can be reopened at once.
    db: Weak<crate::raft::DbSlot>,
    /// Set on the way out, so a Raft log write the disk refuses is failed instead of held:
    /// openraft's core may be waiting on it, and must end.
    raft_stopping: Arc<AtomicBool>,
    stopped: bool,
    /// The agent's reconcile loop, once `run_agent` was called.
    agent_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// With mutual TLS: what a reload may renew.
    tls: Option<NodeTls>,
}

/// This node's serving certificate (swapped in place by `renew_tls`) and the CA it was
/// started with.
struct NodeTls {
    certs: Arc<CertStore>,
    ca_pem: Vec<u8>,
}

/// A checked new certificate for this node (`prepare_tls_renewal`), applied by `renew_tls`.
pub struct TlsRenewal {
    pair: CertPair,
    tls: PeerTls,
}

impl ClusterNode {
    /// Opens storage, starts Raft, serves node-to-node gRPC on `cfg.listen`, and starts
    /// discovery/bootstrap/join in the background. Returns once the node is serving; joining a
    /// cluster happens afterwards (watch `leader_changes` or poll `status`).
    pub async fn start(cfg: ClusterConfig) -> Result<ClusterNode, ClusterError> {
        cfg.validate()?;
        // Checked before anything binds: a bad certificate or key fails the start at once.
        let tls = server_tls(cfg.tls.as_ref())?;
        let incoming = if cfg.serve_rpc {
            let incoming = bind_listener(cfg.listen).await?;
            Some(incoming.with_nodelay(Some(true)))
        } else {
            None
        };
        let id = identity::resolve(cfg.node_id, &cfg.data_dir)?;
        let board = match &cfg.discovery {
            Discovery::Redis(target) => Some(RedisBoard::new(target, &cfg.name)?),
            Discovery::Static { .. } => None,
        };

        let channels = PeerChannels::new(cfg.tls.as_ref());
        let auth = ClientAuth::new(&cfg.name, &cfg.secret)?;
        // A node pinned to the agent role never holds a Raft seat: it runs no openraft engine
        // and keeps no Raft storage (see `raft::engine` for the memory this saves).
        let (raft, registry, db, refused, raft_stopping) =
            if cfg.role == crate::config::NodeRole::Agent {
                let dir = cfg.data_dir.clone();
                tokio::task::spawn_blocking(move || RaftStorage::agent_dir(&dir))
                    .await
                    .map_err(|e| ClusterError::Raft(format!("prepare data dir: {e}")))??;
                let (raft, registry) = HerdRaft::absent(id);
                (raft, registry, Weak::new(), None, Arc::default())
            } else {
                let dir = cfg.data_dir.clone();
                let storage = tokio::task::spawn_blocking(move || RaftStorage::open(&dir))
                    .await
                    .map_err(|e| ClusterError::Raft(format!("open storage: {e}")))??;
                let db = storage.closed_watch();
                let log_store = LogStore::open(&storage).map_err(|e| ClusterError::Storage {
                    path: storage.path.clone(),
                    message: format!("load log: {e}"),
                })?;
                let refused = log_store.write_refused();
                let raft_stopping = storage.stop_flag();
                let (state_machine, registry) = StateMachine::new(&storage);
                drop(storage);
                let network = NetworkFactory {
                    id,
                    channels: channels.clone(),
                    auth: auth.clone(),
                };
                let raft = OpenRaft::new(id, raft_config(&cfg)?, network, log_store, state_machine)
                    .await
                    .map_err(|e| ClusterError::Raft(format!("start: {e}")))?;
                (
                    HerdRaft::running(raft),
                    registry,
                    db,
                    Some(refused),
                    raft_stopping,
                )
            };
        tracing::info!(node_id = id.get(), cluster = %cfg.name, advertise = %cfg.advertise, listen = %cfg.listen, discovery = %cfg.discovery, "cluster node starting");

        let lease = Duration::from_millis(cfg.election_max_ms);
        let initial = Leadership::from_metrics(&raft.metrics().borrow_watched(), lease);
        let (leadership_tx, leadership) = watch::channel(initial);
        let (ops_tx, ops_rx) = mpsc::channel(64);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let agent = Arc::new(AgentState::new(
            id,
            Duration::from_millis(cfg.offline_timeout_ms),
        ));
        let slices = {
            let dir = cfg.data_dir.clone();
            tokio::task::spawn_blocking(move || SliceStore::open(&dir, id))
                .await
                .map_err(|e| ClusterError::Raft(format!("open slice: {e}")))?
        };
        let (view_tx, view) = watch::channel(registry.borrow().clone());
        let shared = Arc::new(Shared {
            id,
            forwarder: Forwarder {
                id,
                raft: raft.clone(),
                channels,
                auth,
                contact: agent.clone(),
            },
            raft: raft.clone(),
            membership: ops_tx,
            registry,
            leadership,
            left: Default::default(),
            registered_agent: Default::default(),
            leader_contact: LeaderContact::new(),
            agent,
            slices: Arc::new(slices),
            view,
            master_view: Arc::new(MasterView::default()),
            cfg,
        });

        let mut tasks = vec![
            tokio::spawn(local_view(shared.clone(), view_tx, shutdown_rx.clone())),
            tokio::spawn(fetch_loop(
                shared.agent.clone(),
                shared.slices.clone(),
                slice_fetch(&shared),
                shutdown_rx.clone(),
            )),
            tokio::spawn(leadership::publish(
                raft,
                lease,
                leadership_tx,
                shutdown_rx.clone(),
            )),
            tokio::spawn(MembershipKeeper::new(shared.clone(), ops_rx).run(shutdown_rx.clone())),
            tokio::spawn(Formation::new(shared.clone(), board.clone()).run(shutdown_rx.clone())),
            tokio::spawn(crate::master::run(
                Arc::new(master_io::RaftIo {
                    shared: shared.clone(),
                }),
                id,
                TermSettings::from_config(&shared.cfg),
                shared.leadership.clone(),
                shared.master_view.clone(),
                shutdown_rx.clone(),
            )),
        ];
        if let Some(refused) = refused {
            tasks.push(tokio::spawn(hand_over::while_writes_refused(
                shared.clone(),
                refused,
                shutdown_rx.clone(),
            )));
        }
        let (tls, acceptor) = tls.unzip();
        if let Some(incoming) = incoming {
            tasks.push(tokio::spawn(serve(
                shared.clone(),
                acceptor,
                incoming,
                shutdown_rx.clone(),
            )));
        }
        if let Some(board) = &board {
            tasks.push(tokio::spawn(formation::announce_loop(
                shared.clone(),
                board.clone(),
                shutdown_rx,
            )));
        }
        Ok(ClusterNode {
            shared,
            shutdown,
            tasks,
            board,
            db,
            raft_stopping,
            stopped: false,
            agent_task: std::sync::Mutex::new(None),
            tls,
        })
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Cluster name, leader, term, indexes and members. Reachability comes from the leader: a
    /// follower asks it, and reports `reachable: None` if it cannot.
    pub async fn status(&self) -> ClusterStatus {
        let mut status = self.shared.status_local();
        if status.leader_id == Some(self.id()) {
            return status;
        }
        // A node outside Raft knows its leader from heartbeats, and takes the term from it.
        let outside = !self.shared.holds_replica();
        if outside {
            status.role = "agent".into();
        }
        let fwd = &self.shared.forwarder;
        let Some((_, addr)) = fwd.remote_leader() else {
            return status;
        };
        let Ok(mut client) = fwd.client(&addr) else {
            return status;
        };
        let reply =
            tokio::time::timeout(Duration::from_secs(1), client.status(pb::StatusRequest {})).await;
        if let Ok(Ok(reply)) = reply
            && let Ok(leader_view) = decode::<ClusterStatus>(&reply.into_inner().status)
        {
            if outside {
                status.leader_id = leader_view.leader_id;
                status.leader_addr = leader_view.leader_addr;
                status.term = leader_view.term;
            }
            status.members = leader_view.members;
        }
        status
    }

    /// Applies `cmd` through Raft, from any node: followers forward it to the leader.
    pub async fn write(&self, cmd: RegistryCommand) -> Result<RegistryResponse, ClusterError> {
        let shared = &self.shared;
        shared
            .forwarder
            .at_leader(
                "write",
                FORWARD_TIMEOUT,
                || async { Ok(shared.write_local(cmd.clone()).await?.map(Into::into)) },
                |mut c| {
                    let req = encode(&cmd).map(|command| pb::WriteRequest { command });
                    async move { decode(&c.write(req?).await?.into_inner().response) }
                },
            )
            .await
    }

    /// The registry. Linearizable by default: the leader confirms its leadership with a quorum
    /// (a follower asks the leader for the read index and waits until its replica applied it).
    /// `stale = true` returns the local replica as is.
    pub async fn read(&self, stale: bool) -> Result<Arc<Registry>, ClusterError> {
        let shared = &self.shared;
        if !shared.holds_replica() {
            // No replica here: the leader answers, linearizable either way.
            return shared
                .forwarder
                .at_leader(
                    "read",
                    FORWARD_TIMEOUT,
                    || async { Ok(shared.read_whole_local().await?.map(|(r, _)| r)) },
                    |mut c| async move {
                        let reply = c.read(pb::ReadRequest {}).await?.into_inner();
                        Ok(Arc::new(decode::<Registry>(&reply.registry)?))
                    },
                )
                .await;
        }
        if stale {
            return Ok(self.shared.registry.borrow().clone());
        }
        let deadline = crate::clock::now() + FORWARD_TIMEOUT;
        let index = shared
            .forwarder
            .at_leader(
                "read index",
                FORWARD_TIMEOUT,
                || shared.read_index_local(),
                |mut c| async move {
                    Ok(c.read_index(pb::ReadIndexRequest {})
                        .await?
                        .into_inner()
                        .index)
                },
            )
            .await?;
        let left = deadline.saturating_duration_since(crate::clock::now());
        shared.wait_applied(index, left).await?;
        Ok(shared.registry.borrow().clone())
    }

    /// The local replica, updated after every applied batch (empty on a node outside Raft).
    /// The current value counts as seen: read it with `borrow()`, then wait with `changed()`.
    pub fn registry(&self) -> watch::Receiver<Arc<Registry>> {
        let mut rx = self.shared.registry.clone();
        rx.mark_unchanged();
        rx
    }

    /// The freshest registry this node holds: its replica, or, outside Raft (or while its
    /// replica lags), its slice — this node's apps and assignments only, but the whole access
    /// book. For what every node must know locally (tokens, secrets); `read` for the rest.
    pub fn local_view(&self) -> watch::Receiver<Arc<Registry>> {
        let mut rx = self.shared.view.clone();
        rx.mark_unchanged();
        rx
    }

    /// This node's slice as it holds it (`None` before the first one).
    pub fn slice(&self) -> Option<Arc<HeldSlice>> {
        self.shared.slices.subscribe().borrow().clone()
    }

    /// Leadership of this node: `Leader { term }` while it leads (confirmed by a quorum),
    /// `Follower` otherwise. Changes on every gain or loss of leadership and on every new term.
    /// The current value counts as seen: read it with `borrow()`, then wait with `changed()`.
    pub fn leader_changes(&self) -> watch::Receiver<Leadership> {
        let mut rx = self.shared.leadership.clone();
        rx.mark_unchanged();
        rx
    }

    /// The leader hands leadership to its most up-to-date reachable voter (openraft
    /// `transfer_leader`) and returns once another node leads. Works from any node.
    pub async fn step_down(&self) -> Result<(), ClusterError> {
        let shared = &self.shared;
        let handed_over =
            |new: NodeId| tracing::info!(new_leader = new.get(), "leadership handed over");
        shared
            .forwarder
            .at_leader(
                "step down",
                FORWARD_TIMEOUT,
                || async {
                    Ok(shared
                        .step_down_local(STEP_DOWN_WAIT)
                        .await?
                        .map(handed_over))
                },
                |mut c| async move { c.step_down(pb::StepDownRequest {}).await.map(|_| ()) },
            )
            .await
    }

    /// Removes this node from the membership via the leader (a leaving voter is replaced by a
    /// caught-up learner when there is one) and stops trying to rejoin. Call `shutdown` next.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        self.shared.left.store(true, Ordering::SeqCst);
        let result = self.leave_inner().await;
        if result.is_err() {
            self.shared.left.store(false, Ordering::SeqCst);
            return result;
        }
        if let Some(board) = &self.board
            && let Err(e) = board.withdraw(self.id()).await
        {
            tracing::warn!(error = %e, "left the cluster but could not withdraw the redis announcement (it expires)");
        }
        tracing::info!(node_id = self.id().get(), "left the cluster");
        result
    }

    async fn leave_inner(&self) -> Result<(), ClusterError> {
        let id = self.id();
        let shared = &self.shared;
        shared
            .forwarder
            .at_leader(
                "leave",
                FORWARD_TIMEOUT,
                || shared.leave_local(id),
                |mut c| async move {
                    c.leave(pb::LeaveRequest { node_id: id.get() })
                        .await
                        .map(|_| ())
                },
            )
            .await
    }

    /// Checks the certificate a config reload read for this node: `Ok(None)` when it serves
    /// that one already, or when TLS is being turned on or off (read at start only). A new CA
    /// is refused: the peers' certificates are checked against the one read at start.
    pub fn prepare_tls_renewal(
        &self,
        tls: Option<&PeerTls>,
    ) -> Result<Option<TlsRenewal>, ClusterError> {
        let (Some(now), Some(new)) = (&self.tls, tls) else {
            return Ok(None);
        };
        if now.ca_pem != new.ca_pem {
            return Err(ClusterError::Config(
                "tls_ca changed: the cluster CA is read at start, so a new CA needs a restart; put the old CA file back to renew only this node's certificate and key".into(),
            ));
        }
        let pair = CertPair::from_pem(&new.cert_pem, &new.key_pem)
            .map_err(|e| ClusterError::Config(format!("TLS: {e}")))?;
        if now.certs.current().same_chain(&pair) {
            return Ok(None);
        }
        Ok(Some(TlsRenewal {
            pair,
            tls: new.clone(),
        }))
    }

    /// Serves the renewed certificate to new connections and presents it on new channels to
    /// peers; open connections keep theirs.
    pub fn renew_tls(&self, renewal: TlsRenewal) {
        if let Some(now) = &self.tls {
            now.certs.replace(renewal.pair);
            self.shared.forwarder.channels.set_tls(&renewal.tls);
            tracing::info!(node_id = self.shared.id.get(), listen = %self.shared.cfg.listen, "cluster TLS certificate replaced; new connections get it, open ones keep theirs");
        }
    }

    /// Stops Raft, the gRPC server and the background tasks, and waits (up to 5 s) until the
    /// Raft database is closed, so the same data dir can be opened again right away.
    pub async fn shutdown(mut self) {
        // Leave the group at once (like a crash, as far as peers can tell; call `step_down`
        // first for a planned restart of the leader), then stop the background tasks.
        self.stopped = true;
        let _ = self.shutdown.send(true);
        self.raft_stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.shared.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let agent = self
            .agent_task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut tasks = std::mem::take(&mut self.tasks);
        tasks.extend(agent);
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                tracing::warn!("a cluster task did not stop within 3 s; aborting it");
                task.abort();
                let _ = task.await;
            }
        }
        let id = self.shared.id;
        let deadline = crate::clock::now() + Duration::from_secs(5);
        while self.db.strong_count() > 0 {
            if crate::clock::now() >= deadline {
                tracing::warn!(
                    node_id = id.get(),
                    "raft database still open 5 s after shutdown"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(node_id = id.get(), "cluster node stopped");
    }

    /// The node-to-node gRPC services (Raft + ClusterApi, behind the secret check), for a
    /// daemon that serves them on its own tonic server (`ClusterConfig::serve_rpc = false`):
    /// `Server::builder().add_routes(node.rpc_routes())`. Other nodes reach them at `advertise`.
    pub fn rpc_routes(&self) -> Routes {
        rpc_routes(&self.shared)
    }

    /// The Raft handle, for diagnostics and tests (`engine()` for openraft itself, e.g. to
    /// force a snapshot; none on a node pinned to the agent role).
    pub fn raft(&self) -> &HerdRaft {
        &self.shared.raft
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = self.shutdown.send(true);
        self.raft_stopping.store(true, Ordering::SeqCst);
        let raft = self.shared.raft.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

/// The Raft, ClusterApi and Agent services behind the secret check.
fn rpc_routes(shared: &Arc<Shared>) -> Routes {
    let auth = ServerAuth::new(&shared.cfg.name, &shared.cfg.secret);
    let raft_svc = RaftServiceServer::new(RaftRpc::new(
        shared.raft.clone(),
        shared.leader_contact.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let api_svc = ClusterApiServer::new(ClusterApiService::new(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let raft = shared.raft.clone();
    let agent_svc = AgentServer::new(AgentService::new(
        shared.agent.clone(),
        Box::new(move || Term(raft.metrics().borrow_watched().current_term)),
    ))
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Routes::new(InterceptedService::new(raft_svc, auth.clone()))
        .add_service(InterceptedService::new(api_svc, auth.clone()))
        .add_service(InterceptedService::new(agent_svc, auth))
}

/// The cluster port's mutual TLS with `tls` (a peer without a certificate from the cluster
/// CA is refused by the handshake), serving a certificate a reload can renew; plain HTTP/2
/// without.
fn server_tls(tls: Option<&PeerTls>) -> Result<Option<(NodeTls, TlsAcceptor)>, ClusterError> {
    let Some(t) = tls else {
        return Ok(None);
    };
    let pair = CertPair::from_pem(&t.cert_pem, &t.key_pem)
        .map_err(|e| ClusterError::Config(format!("TLS: {e}")))?;
    let certs = CertStore::new(pair);
    let acceptor = tls::acceptor(certs.clone(), Some(&t.ca_pem))
        .map_err(|e| ClusterError::Config(format!("TLS: {e}")))?;
    Ok(Some((
        NodeTls {
            certs,
            ca_pem: t.ca_pem.clone(),
        },
        acceptor,
    )))
}

/// The cluster port's connection bounds. Roomier than the API's: on loopback or behind a NAT
/// every peer may come from one address.
const CLUSTER_PORT_LIMITS: Limits = Limits {
    max_per_peer: 64,
    max_total: 1024,
    handshake: Duration::from_secs(10),
    idle: Duration::from_secs(300),
};

/// Serves the cluster RPCs on `cfg.listen` until shutdown, with bounded connections (peers
/// ping every few seconds, so the idle deadline only cuts the dead). A wrong secret earns no
/// per-address penalty here, unlike a wrong API token: peers may share an address, and one
/// misconfigured node must not lock the others out; the secret is not guessable anyway.
async fn serve(
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    incoming: TcpIncoming,
    mut shutdown: watch::Receiver<bool>,
) {
    let routes = rpc_routes(&shared);
    let listen = shared.cfg.listen;
    drop(shared);
    let gate = Gate::new(
        CLUSTER_PORT_LIMITS,
        Arc::new(AuthThrottle::new("cluster connection")),
    );
    let router = Server::builder()
        .layer(InterceptorLayer::new(RequestSeen(gate.clone())))
        .add_routes(routes);
    let bounded = Bounded::new(incoming, gate);
    let stopped = async move {
        let _ = shutdown.changed().await;
    };
    let result = match tls {
        Some(acceptor) => {
            router
                .serve_with_incoming_shutdown(tls::with_tls(bounded, acceptor), stopped)
                .await
        }
        None => router.serve_with_incoming_shutdown(bounded, stopped).await,
    };
    if let Err(e) = result {
        tracing::error!(%listen, error = %e, "cluster gRPC server failed");
    }
}

/// Publishes the freshest registry this node holds (see `ClusterNode::local_view`): the
/// replica, unless the slice was served at a later index.
async fn local_view(
    shared: Arc<Shared>,
    view: watch::Sender<Arc<Registry>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut replica = shared.registry.clone();
    let mut slices = shared.slices.subscribe();
    loop {
        let applied = shared.applied_index();
        let fresher_slice = slices
            .borrow_and_update()
            .clone()
            .filter(|h| h.as_of > applied);
        let now = match fresher_slice {
            Some(h) => Arc::new(h.slice.registry.clone()),
            None => replica.borrow_and_update().clone(),
        };
        view.send_if_modified(|v| {
            let changed = !Arc::ptr_eq(v, &now) && **v != *now;
            *v = now;
            changed
        });
        tokio::select! {
            _ = shutdown.changed() => return,
            r = replica.changed() => if r.is_err() { return },
            r = slices.changed() => if r.is_err() { return },
        }
    }
}

/// Fetches this node's slice from the leader (served here when this node leads).
fn slice_fetch(shared: &Arc<Shared>) -> SliceFetch {
    let shared = Arc::downgrade(shared);
    Box::new(move || {
        let shared = shared.clone();
        Box::pin(async move {
            let shared = shared.upgrade().ok_or(ClusterError::Shutdown)?;
            let me = shared.id;
            shared
                .forwarder
                .at_leader(
                    "slice",
                    Duration::from_secs(5),
                    || std::future::ready(Ok(shared.slice_local(me))),
                    |mut c| async move {
                        let reply = c
                            .slice(pb::SliceRequest { node_id: me.get() })
                            .await?
                            .into_inner();
                        Ok(HeldSlice {
                            as_of: reply.as_of,
                            slice: decode(&reply.slice)?,
                        })
                    },
                )
                .await
        })
    })
}

/// Binds the cluster port. A daemon started right after its predecessor was killed may find
/// the port still held while the kernel tears the old sockets down: it retries for up to 5 s
/// before giving up, as the Raft database does for a file still held open.
async fn bind_listener(addr: std::net::SocketAddr) -> Result<TcpIncoming, ClusterError> {
    let deadline = crate::clock::now() + Duration::from_secs(5);
    loop {
        match TcpIncoming::bind(addr) {
            Ok(incoming) => return Ok(incoming),
            Err(e) => {
                let in_use = e.kind() == std::io::ErrorKind::AddrInUse;
                if !in_use || crate::clock::now() >= deadline {
                    return Err(ClusterError::Listen { addr, source: e });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
