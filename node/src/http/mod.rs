//! herd's HTTP face on `[http] listen` (default `127.0.0.1:9800`; `HERD_HTTP_LISTEN`; an empty
//! string turns it off): `GET /healthz` for load balancers and probes, `GET /metrics` for
//! Prometheus, and the web dashboard (`dashboard`). Unknown paths get 404, other methods 405;
//! bodies (only the login and sign-out forms have one) are capped at `MAX_BODY`. A listener
//! that cannot be bound stops `herd up` with the reason, like `[api]`.
//!
//! `/metrics` on a loopback address is open; on any other address it needs a viewer token
//! (`authorization: Bearer ...`, the same tokens as the TCP API) unless `metrics_public = true`.

pub mod dashboard;
mod listen;
mod metrics;

use crate::access::tokens::Authenticator;
use crate::state::Persisted;
use crate::supervisor::Supervisor;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herd_cluster::ClusterNode;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tracing::{info, warn};

/// The default address: loopback only, the port the dashboard's users expect.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9800";
/// The variable that overrides `[http] listen` (empty: off).
pub const LISTEN_VAR: &str = "HERD_HTTP_LISTEN";

/// `[http]` in `config.toml`. Read at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `ip:port`, or `""` for no HTTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Serve `/metrics` without a token on a non-loopback address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metrics_public: bool,
    /// PEM certificate chain and key: the port speaks HTTPS (both or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl HttpSection {
    /// Where to listen, or `None` when turned off; a bad address is an error naming the key.
    pub fn listen_addr(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<SocketAddr>, String> {
        let (text, from) = match env(LISTEN_VAR) {
            Some(v) => (v, LISTEN_VAR.to_string()),
            None => (
                self.listen
                    .clone()
                    .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
                "[http] listen".to_string(),
            ),
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            format!("{from}: `{text}` is not an ip:port address (e.g. 127.0.0.1:9800; \"\" turns the HTTP server off)")
        })
    }
}

/// The largest request body read (a login form); larger ones get 413.
const MAX_BODY: usize = 4096;

impl HttpSection {
    /// The certificate pair to serve, read and checked now (a bad pair stops `herd up`).
    pub fn tls(&self) -> Result<Option<herd_cluster::tls::CertPair>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => crate::api::remote::tls_pair("[http]", cert, key).map(Some),
            _ => Err("[http] TLS needs both `tls_cert` and `tls_key`".into()),
        }
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub supervisor: Supervisor,
    /// The services the CLI calls, called in process by the dashboard as its signed-in caller.
    pub api: crate::api::Api,
    pub admin: Arc<crate::cluster::admin::Admin>,
    pub logins: Arc<dashboard::session::Logins>,
    pub login_throttle: Arc<crate::api::remote::throttle::AuthThrottle>,
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The port speaks HTTPS: the session cookie is `Secure`.
    pub tls: bool,
    pub started: Instant,
    pub persisted: watch::Receiver<Persisted>,
    pub cluster: Option<Arc<ClusterNode>>,
    pub auth: Arc<Authenticator>,
    /// `/metrics` needs a token (non-loopback listener without `metrics_public`).
    pub metrics_need_token: bool,
}

/// The address a one-time sign-in link on this host points at: the bound one, with a
/// wildcard address replaced by loopback.
pub fn link_base(bound: SocketAddr, tls: bool) -> String {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, bound.port()))
}

/// Binds `addr` before the daemon starts anything, so a taken port fails `herd up` with the
/// reason.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        format!("[http] listen: cannot bind {addr}: {e} (another herd daemon may hold it: set [http] listen or {LISTEN_VAR}; \"\" turns the HTTP server off)")
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("[http] listen {addr}: {e}"))?;
    Ok(listener)
}

/// Serves a bound listener until the daemon exits, over TLS when given a pair.
pub fn serve(
    listener: std::net::TcpListener,
    tls: Option<herd_cluster::tls::CertPair>,
    state: HttpState,
) -> Result<SocketAddr, String> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| format!("[http] listen: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // Connections are bounded like the TCP API's; a peer in a sign-in penalty is hung up on.
    let gate = herd_cluster::limits::Gate::new(listen::LIMITS, state.login_throttle.clone());
    // The periodic half of the sign-in throttle's rate-limited log, and forgetting quiet peers.
    let throttle = state.login_throttle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            for line in throttle.flush(tokio::time::Instant::now()) {
                throttle.emit(Some(line));
            }
        }
    });
    let seen = gate.clone();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page))
        .merge(dashboard::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // A request arrived: the connection is past its handshake (idle deadline from now).
        .layer(axum::middleware::from_fn(
            move |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                  req: axum::extract::Request,
                  next: axum::middleware::Next| {
                seen.request_seen(peer);
                next.run(req)
            },
        ))
        .with_state(state);
    let https = tls.is_some();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    // `tap_io` only so axum hands handlers the peer address (`ConnectInfo`).
    use axum::serve::ListenerExt;
    match tls {
        Some(pair) => {
            let listener = listen::TlsListener::new(listener, gate, pair)?.tap_io(|_| {});
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, service).await {
                    warn!(error = %e, "the HTTPS server stopped");
                }
            });
        }
        None => {
            let listener = listen::PlainListener::new(listener, gate)
                .map_err(|e| format!("[http] listen: {e}"))?
                .tap_io(|_| {});
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, service).await {
                    warn!(error = %e, "the HTTP server stopped");
                }
            });
        }
    }
    info!(listen = %bound, tls = https, "HTTP server listening (/healthz, /metrics, the dashboard at /)");
    Ok(bound)
}

/// 200 when the daemon can do its job: it answers, its state reaches the disk, and in a
/// cluster it knows a leader; 503 otherwise, with the reasons.
async fn healthz(State(s): State<HttpState>) -> Response {
    let mut problems = Vec::new();
    let persisted = s.persisted.borrow().clone();
    if let Some((_, why)) = &persisted.failed {
        problems.push(format!("state not saved: {why}"));
    }
    let mut leader = None;
    if let Some(node) = &s.cluster {
        leader = node.status().await.leader_id;
        if leader.is_none() {
            problems.push("no cluster leader known".to_string());
        }
    }
    let body = serde_json::json!({
        "status": if problems.is_empty() { "ok" } else { "unhealthy" },
        "problems": problems,
        "uptime_s": s.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "leader_id": leader,
    });
    let code = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

async fn metrics_page(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if s.metrics_need_token {
        let header = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        if let Err(why) =
            s.auth
                .authenticate(header.as_deref(), Some(peer), crate::supervisor::now_ms())
        {
            return (
                StatusCode::UNAUTHORIZED,
                format!(
                    "{}: /metrics on this address needs a viewer token (authorization: Bearer ...), or [http] metrics_public = true\n",
                    why.message()
                ),
            )
                .into_response();
        }
    }
    // OpenMetrics for whoever asks for it (Prometheus does), the classic text format else.
    let open_metrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    match metrics::render(&s).await {
        Ok(text) if open_metrics => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics::to_prometheus_text(&text),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_address_comes_from_the_variable_then_the_file_then_the_default() {
        let none = |_: &str| None;
        let section = HttpSection::default();
        assert_eq!(
            section.listen_addr(none).unwrap(),
            Some(DEFAULT_LISTEN.parse().unwrap())
        );
        let file = HttpSection {
            listen: Some("0.0.0.0:1".into()),
            metrics_public: false,
            ..HttpSection::default()
        };
        assert_eq!(
            file.listen_addr(none).unwrap(),
            Some("0.0.0.0:1".parse().unwrap())
        );
        assert_eq!(file.listen_addr(|_| Some(String::new())).unwrap(), None);
        let e = file.listen_addr(|_| Some("nope".into())).unwrap_err();
        assert!(e.contains(LISTEN_VAR) && e.contains("nope"), "{e}");
        let bad = HttpSection {
            listen: Some("9800".into()),
            metrics_public: false,
            ..HttpSection::default()
        };
        assert!(bad.listen_addr(none).unwrap_err().contains("[http] listen"));
    }
}
