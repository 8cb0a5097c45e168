//! The TCP API's listener and its life across config reloads: a reload swaps the token at
//! once (the old one is refused from the next call on, on open connections too), applies new
//! connection bounds, swaps the TLS certificate for new connections (open ones keep theirs;
//! no rebind), and rebinds when `listen` changes or TLS is turned on or off — binding the new
//! address before letting go of the old one, so a taken port refuses the reload and the old
//! listener keeps serving. A reload can also turn the API on or off.
//!
//! The one thing a reload cannot change is a port shared with `[cluster] listen`: the cluster's
//! peers depend on it, so that needs a restart.

use super::limits::{Bounded, Gate, Limits, RequestSeen};
use super::throttle::AuthThrottle;
use super::{ApiConfig, TokenHolder};
use crate::access::guard::Door;
use crate::access::tokens::Authenticator;
use herd_cluster::tls::{self, CertStore};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::service::{InterceptorLayer, Routes};
use tonic::transport::server::TcpIncoming;
use tracing::{error, info};

/// Builds the services the TCP API serves, each behind the given door (`Door::guard`).
pub type RoutesFor = Box<dyn Fn(&Door) -> Routes + Send + Sync>;

/// Streams per connection: a CLI needs a handful; a stranger gets no more.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// How long a rebind on the same port waits for the old listener to close.
const REBIND_WAIT: Duration = Duration::from_secs(2);

pub const RESTART_HINT: &str = "needs a restart (`herd down --keep-apps && herd up`)";

struct Running {
    cfg: ApiConfig,
    /// The certificate new TLS connections get; a reload swaps it in place.
    certs: Option<Arc<CertStore>>,
    stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub struct TcpApi {
    token: TokenHolder,
    gate: Arc<Gate>,
    door: Door,
    /// Taken at `stop`: the routes hold the daemon's services, which hold the config handle
    /// that holds this.
    routes: Mutex<Option<RoutesFor>>,
    /// `[cluster] listen` when the cluster serves its RPCs through this listener.
    shared_with_cluster: Option<SocketAddr>,
    /// `[cluster] listen` when the cluster serves its own port (the API cannot take it).
    cluster_listen: Option<SocketAddr>,
    running: Mutex<Option<Running>>,
    runtime: tokio::runtime::Handle,
}

impl TcpApi {
    /// Must be called inside the runtime. Nothing listens until `apply`.
    pub fn new(
        routes: RoutesFor,
        auth: Arc<Authenticator>,
        cluster_listen: Option<SocketAddr>,
        shared_with_cluster: bool,
    ) -> Arc<Self> {
        let gate = Gate::new(Limits::default(), Arc::new(AuthThrottle::new("API call")));
        let api = Arc::new(Self {
            token: auth.config_token().clone(),
            door: Door::new(auth, gate.clone()),
            gate: gate.clone(),
            routes: Mutex::new(Some(routes)),
            shared_with_cluster: cluster_listen.filter(|_| shared_with_cluster),
            cluster_listen,
            running: Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        });
        // The periodic half of the rate-limited refusal logs, and forgetting quiet peers.
        let door = api.door.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                door.flush(tokio::time::Instant::now());
            }
        });
        api
    }

    /// Starts serving `cfg` on `listener`, bound early by the daemon (so a taken port fails
    /// `herd up` before it detaches).
    pub fn start(&self, cfg: &ApiConfig, listener: std::net::TcpListener) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = Some(self.serve(cfg, listener)?);
        self.gate.set_limits(cfg.limits);
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(cfg.expected());
        Ok(())
    }

    /// Makes the API what `cfg` says (`None`: off). On error nothing changed. Returns the
    /// changes made, as config key names (`api.token` when only the token file's content did).
    pub fn apply(&self, cfg: Option<&ApiConfig>) -> Result<Vec<String>, String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        // A new certificate needs no new listener: only turning TLS on or off does.
        let now = running.as_ref().map(|r| (r.cfg.listen, r.certs.is_some()));
        let wanted = cfg.map(|c| (c.listen, c.tls.is_some()));
        if now != wanted {
            if let Some(shared) = self.shared_with_cluster {
                return Err(format!(
                    "[api] listen {shared} is shared with [cluster] listen: changing the API's listener or TLS {RESTART_HINT}"
                ));
            }
            if let (Some(c), Some(cluster)) = (cfg, self.cluster_listen)
                && c.listen == cluster
            {
                return Err(format!(
                    "[api] listen {} is [cluster] listen: sharing the port is set up at start and {RESTART_HINT}",
                    c.listen
                ));
            }
            match cfg {
                Some(c) => {
                    let same_port = running.as_ref().is_some_and(|r| r.cfg.listen == c.listen);
                    // The port is ours: let go of it first (new TLS needs a new server).
                    let old = if same_port { running.take() } else { None };
                    let started = bind(c.listen, same_port).and_then(|l| self.serve(c, l));
                    match started {
                        Ok(r) => *running = Some(r),
                        Err(e) => {
                            if let Some(old) = old {
                                let old_cfg = old.cfg.clone();
                                drop(old);
                                *running = bind(old_cfg.listen, true)
                                    .and_then(|l| self.serve(&old_cfg, l))
                                    .inspect_err(|e| error!(error = %e, "the TCP API could not return to its old listener"))
                                    .ok();
                            }
                            return Err(e);
                        }
                    }
                    info!(listen = %c.listen, tls = c.tls.is_some(), "TCP API listening (token required)");
                }
                None => {
                    *running = None;
                    info!("TCP API turned off by a config reload");
                }
            }
            changed.push("api.listen".into());
        } else if let (Some(r), Some(c)) = (running.as_mut(), cfg) {
            if let (Some(store), Some(pair)) = (&r.certs, &c.tls)
                && store.replace(pair.clone())
            {
                let (cert, key) = c.tls_files.clone().unzip();
                info!(listen = %c.listen, cert = ?cert, key = ?key, "API TLS certificate replaced; new connections get it, open ones keep theirs");
                changed.push("api.tls".into());
            }
            r.cfg = c.clone();
        }
        self.gate
            .set_limits(cfg.map_or_else(Limits::default, |c| c.limits));
        let token = cfg.map(ApiConfig::expected);
        let mut held = self.token.write().unwrap_or_else(|p| p.into_inner());
        if *held != token {
            if held.is_some() && token.is_some() {
                info!("API token replaced; the old one is refused from now on");
                changed.push("api.token".into());
            }
            *held = token;
        }
        Ok(changed)
    }

    fn serve(&self, cfg: &ApiConfig, listener: std::net::TcpListener) -> Result<Running, String> {
        let _in_runtime = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("[api] listen {}: {e}", cfg.listen))?;
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let certs = cfg.tls.clone().map(CertStore::new);
        let acceptor = match &certs {
            Some(store) => {
                Some(tls::acceptor(store.clone(), None).map_err(|e| format!("[api] {e}"))?)
            }
            None => None,
        };
        let server =
            tonic::transport::Server::builder().max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        let routes = match &*self.routes.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(routes) => routes(&self.door),
            None => return Err("the daemon is going down".into()),
        };
        let (stop, mut stopped) = watch::channel(false);
        let router = server
            .layer(InterceptorLayer::new(RequestSeen(self.gate.clone())))
            .add_routes(routes);
        let bounded = Bounded::new(incoming, self.gate.clone());
        let listen = cfg.listen;
        self.runtime.spawn(async move {
            let stopped = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let result = match acceptor {
                Some(acceptor) => {
                    router
                        .serve_with_incoming_shutdown(tls::with_tls(bounded, acceptor), stopped)
                        .await
                }
                None => router.serve_with_incoming_shutdown(bounded, stopped).await,
            };
            if let Err(e) = result {
                error!(%listen, error = %e, "the TCP API server failed");
            }
        });
        Ok(Running {
            cfg: cfg.clone(),
            certs,
            stop,
        })
    }

    /// Stops accepting for good (the daemon is going down).
    pub fn stop(&self) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Binds the API's port (before the daemon detaches, so a taken port fails `herd up`).
pub fn bind_now(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    bind(addr, false)
}

/// Binds `addr`; `retry`: the old listener on that port is closing, give it a moment.
fn bind(addr: SocketAddr, retry: bool) -> Result<std::net::TcpListener, String> {
    let deadline = std::time::Instant::now() + REBIND_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| format!("[api] listen {addr}: {e}"))?;
                return Ok(l);
            }
            Err(e)
                if retry
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot listen for the TCP API on {addr}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::remote::ApiSection;

    fn cfg(listen: SocketAddr, token: &str) -> ApiConfig {
        ApiSection {
            listen: listen.to_string(),
            ..ApiSection::default()
        }
        .to_config(|k| (k == "HERD_API_TOKEN").then(|| token.to_string()))
        .unwrap()
        .unwrap()
    }

    fn free() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn held(api: &TcpApi) -> Option<Arc<[u8]>> {
        api.token.read().unwrap().clone()
    }

    fn tcp_api(
        cluster_listen: Option<SocketAddr>,
        shared: bool,
    ) -> (Arc<TcpApi>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::access::store::AccessStore::standalone(dir.path()).unwrap();
        let auth = Arc::new(Authenticator::new(
            Arc::new(std::sync::RwLock::new(None)),
            store,
        ));
        let api = TcpApi::new(
            Box::new(|_| Routes::default()),
            auth,
            cluster_listen,
            shared,
        );
        (api, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_port_shared_with_the_cluster_keeps_its_listener_but_takes_a_new_token() {
        let port = free();
        let (api, _dir) = tcp_api(Some(port), true);
        let first = cfg(port, "first-token-0123456789");
        api.start(&first, bind_now(port).unwrap()).unwrap();
        let err = api
            .apply(Some(&cfg(free(), "first-token-0123456789")))
            .unwrap_err();
        assert!(err.contains("needs a restart"), "{err}");
        assert!(api.apply(None).is_err(), "the cluster's RPCs need the port");
        assert_eq!(held(&api), Some(first.expected()));
        let second = cfg(port, "second-token-0123456789");
        assert_eq!(api.apply(Some(&second)).unwrap(), vec!["api.token"]);
        assert_eq!(held(&api), Some(second.expected()));
        api.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_listen_is_bound_before_the_old_is_let_go_and_a_taken_one_changes_nothing() {
        let a = free();
        let (api, _dir) = tcp_api(None, false);
        let token = "the-token-0123456789";
        api.start(&cfg(a, token), bind_now(a).unwrap()).unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = api
            .apply(Some(&cfg(
                taken.local_addr().unwrap(),
                "other-token-0123456789",
            )))
            .unwrap_err();
        assert!(err.contains("cannot listen"), "{err}");
        assert_eq!(held(&api), Some(cfg(a, token).expected()), "token kept");
        assert!(std::net::TcpStream::connect(a).is_ok(), "old listener kept");
        let b = free();
        assert_eq!(api.apply(Some(&cfg(b, token))).unwrap(), vec!["api.listen"]);
        assert!(std::net::TcpStream::connect(b).is_ok());
        // Off: every call is refused from now on, and the port closes.
        assert_eq!(api.apply(None).unwrap(), vec!["api.listen"]);
        assert_eq!(held(&api), None);
        api.stop();
    }
}
