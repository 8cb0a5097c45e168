//! The TCP API's door: every call to a `herd.supervisor.*` service is authenticated (the
//! config's token or one from the book), checked against the role table (`policy`), and let
//! through with its `Caller` in the request's extensions — or answered right here. Wrong,
//! expired and revoked tokens count towards the peer's penalty (`throttle`); refusals are
//! logged with the accessor and the peer, rate-limited, never with a secret.
//!
//! It wraps each service rather than sitting in the server's layer stack because only here,
//! before tonic turns the HTTP request into a gRPC one, is the method's path known.

use super::policy;
use super::tokens::{Authenticator, Refused};
use crate::api::remote::limits::Gate;
use crate::api::remote::throttle::{AuthThrottle, PeerKey};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The header a remote CLI presents: `authorization: Bearer TOKEN`.
pub const AUTH_HEADER: &str = "authorization";

#[derive(Clone)]
pub struct Door {
    auth: Arc<Authenticator>,
    gate: Arc<Gate>,
    /// Calls refused for their role: a log of their own, so a peer's earlier bad tokens do
    /// not fold a denial (and the accessor it names) into a line a minute later.
    denials: Arc<AuthThrottle>,
}

impl Door {
    pub fn new(auth: Arc<Authenticator>, gate: Arc<Gate>) -> Self {
        Self {
            auth,
            gate,
            denials: Arc::new(AuthThrottle::new("API call (permission denied)")),
        }
    }

    /// The periodic half of the rate-limited logs (run about once a minute).
    pub fn flush(&self, now: tokio::time::Instant) {
        for throttle in [self.gate.throttle(), &self.denials] {
            for line in throttle.flush(now) {
                throttle.emit(Some(line));
            }
        }
    }

    /// Wraps one service of the API.
    pub fn guard<S>(&self, inner: S) -> Authorized<S> {
        Authorized {
            inner,
            door: self.clone(),
        }
    }

    /// The caller of a call to `path`, or the answer that refuses it.
    pub fn admit(
        &self,
        path: &str,
        header: Option<&[u8]>,
        peer: Option<SocketAddr>,
    ) -> Result<super::Caller, Status> {
        let now = tokio::time::Instant::now();
        // Unknown only for a test's in-memory call: such a call counts under 0.0.0.0.
        let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let throttle = self.gate.throttle();
        if let Some(left) = throttle.penalty_left(PeerKey::of(ip), now) {
            throttle.refused(ip, "call during a penalty", now);
            return Err(Status::resource_exhausted(format!(
                "too many wrong API tokens from {ip}: its calls are refused for {} s more",
                left.as_secs().max(1)
            )));
        }
        let caller = match self
            .auth
            .authenticate(header, peer, crate::supervisor::now_ms())
        {
            Ok(c) => c,
            Err(why) => {
                if why != Refused::Off && throttle.failed(ip, why.message(), now).penalty_started {
                    self.gate.doom(PeerKey::of(ip));
                }
                let hint = match why {
                    Refused::Missing | Refused::Unknown => "the API token is missing or wrong; ",
                    _ => "",
                };
                return Err(Status::unauthenticated(format!(
                    "{} ({hint}this refusal is logged by the daemon)",
                    why.message()
                )));
            }
        };
        throttle.succeeded(ip);
        if let Err(denied) = policy::check(caller.role, path) {
            // A known caller asking for too much: logged with who it is, never the secret.
            let line = format!(
                "{denied} (accessor {}{})",
                caller.by,
                if caller.name.is_empty() {
                    String::new()
                } else {
                    format!(", name `{}`", caller.name)
                }
            );
            self.denials.refused(ip, &line, now);
            return Err(Status::permission_denied(denied));
        }
        Ok(caller)
    }
}

/// A service behind the door.
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    door: Door,
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

fn peer_of<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower_service::Service<http::Request<B>> for Authorized<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let header = req.headers().get(AUTH_HEADER).map(|v| v.as_bytes());
        match self.door.admit(req.uri().path(), header, peer_of(&req)) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::store::AccessStore;
    use crate::access::tokens::{ConfigToken, mint};
    use crate::api::remote::limits::Limits;
    use herd_cluster::registry::access::{AccessChange, Role};
    use std::sync::RwLock;

    const STOP: &str = "/herd.supervisor.Supervisor/Stop";
    const LIST: &str = "/herd.supervisor.Supervisor/List";

    async fn door() -> (Door, Arc<AccessStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::standalone(dir.path()).unwrap();
        let config: ConfigToken = Arc::new(RwLock::new(Some(
            b"Bearer right-token-0123456789".to_vec().into(),
        )));
        let gate = Gate::new(Limits::default(), Arc::new(AuthThrottle::new("API call")));
        let door = Door::new(Arc::new(Authenticator::new(config, store.clone())), gate);
        (door, store, dir)
    }

    #[tokio::test]
    async fn a_viewer_may_list_but_not_stop_and_the_config_token_is_admin() {
        let (door, store, _dir) = door().await;
        let (secret, token) = mint(Role::Viewer, "dev", 0, None, "local");
        store
            .change(AccessChange::CreateToken { token })
            .await
            .unwrap();
        let header = format!("Bearer {secret}");
        assert!(door.admit(LIST, Some(header.as_bytes()), None).is_ok());
        let e = door.admit(STOP, Some(header.as_bytes()), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(e.message(), "permission denied: role viewer may not stop");
        let admin = door
            .admit(STOP, Some(b"Bearer right-token-0123456789"), None)
            .unwrap();
        assert_eq!(admin.role, Role::Admin);
    }

    #[tokio::test]
    async fn after_five_wrong_tokens_even_the_right_one_waits_out_the_penalty() {
        let (door, _store, _dir) = door().await;
        for _ in 0..5 {
            let e = door.admit(LIST, Some(b"Bearer wrong"), None).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert!(e.message().starts_with("token unknown"), "{e:?}");
        }
        let e = door
            .admit(LIST, Some(b"Bearer right-token-0123456789"), None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    }
}
