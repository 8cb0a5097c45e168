//! The TCP API: the Unix socket's Supervisor and ClusterAdmin services for remote CLIs, behind
//! a bearer token. Off until a token is set (`[api] token_file` or `HERD_API_TOKEN`); a
//! daemon without one opens no API port.
//!
//! In a cluster whose `[cluster] listen` is the same address (both default to `0.0.0.0:9700`)
//! one listener serves both: node-to-node RPCs checked against the cluster secret, user RPCs
//! against the API token.
//!
//! With `tls_cert` and `tls_key` the API speaks TLS (rustls); it then needs a port of its own,
//! since the cluster's peers speak plain HTTP/2 to `[cluster] listen`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// The header a remote CLI presents: `authorization: Bearer TOKEN`.
pub const AUTH_HEADER: &str = "authorization";

/// Shorter tokens are refused: a token is the only gate of a network port.
const MIN_TOKEN_CHARS: usize = 16;

/// `[api]` in config.toml.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// ip:port of the TCP API.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A file holding the token (trimmed). Without it (or `HERD_API_TOKEN`) the API is off.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain and private key: the API speaks TLS when both are set.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:9700".into()
}

/// A checked `[api]`: where to listen and the token to demand.
#[derive(Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    token: Arc<str>,
    /// The server's TLS identity, checked at load.
    pub tls: Option<ServerTlsConfig>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ApiSection {
    /// `None` when no token is set (the API stays off). `env` reads `HERD_API_TOKEN`.
    pub fn to_config(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ApiConfig>, String> {
        let token = match (&self.token_file, env("HERD_API_TOKEN")) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| format!("[api] token_file {}: {e}", path.display()))?
                .trim()
                .to_string(),
            (None, Some(t)) => t.trim().to_string(),
            (None, None) => return Ok(None),
        };
        let chars = token.chars().count();
        if chars < MIN_TOKEN_CHARS {
            return Err(format!(
                "[api] the token has {chars} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)"
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("[api] the token must be printable ASCII without spaces".into());
        }
        let listen = self
            .listen
            .parse()
            .map_err(|_| format!("[api] listen `{}` is not ip:port", self.listen))?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(tls_identity(cert, key)?),
            _ => return Err("[api] TLS needs both `tls_cert` and `tls_key`".into()),
        };
        Ok(Some(ApiConfig {
            listen,
            token: token.into(),
            tls,
        }))
    }
}

/// Reads and checks a PEM certificate chain and key, so a bad pair stops `herd up` at once.
fn tls_identity(cert: &Path, key: &Path) -> Result<ServerTlsConfig, String> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| format!("[api] {what} {}: {e}", p.display()))
    };
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(cert, "tls_cert")?,
        read(key, "tls_key")?,
    ));
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| {
            let head = format!(
                "[api] tls_cert {} and tls_key {} are not a usable PEM pair",
                cert.display(),
                key.display()
            );
            herd_cluster::with_causes(&head, &e)
        })?;
    Ok(tls)
}

impl ApiConfig {
    pub fn auth(&self) -> TokenAuth {
        TokenAuth {
            expected: format!("Bearer {}", self.token).into_bytes().into(),
        }
    }
}

/// Checks every call's bearer token; refusals are logged with the peer's address.
#[derive(Clone)]
pub struct TokenAuth {
    expected: Arc<[u8]>,
}

impl Interceptor for TokenAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req.metadata().get(AUTH_HEADER).map(|v| v.as_bytes());
        if presented.is_some_and(|p| herd_cluster::constant_time_eq(p, &self.expected)) {
            return Ok(req);
        }
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let reason = if presented.is_none() {
            "missing token"
        } else {
            "wrong token"
        };
        tracing::warn!(%peer, reason, "refused API call");
        Err(Status::unauthenticated(
            "the API token is missing or wrong (this refusal is logged by the daemon)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(token_file: Option<PathBuf>) -> ApiSection {
        ApiSection {
            token_file,
            ..ApiSection::default()
        }
    }

    #[test]
    fn no_token_means_no_api() {
        assert!(section(None).to_config(|_| None).unwrap().is_none());
    }

    #[test]
    fn the_token_comes_from_the_file_or_the_environment_and_must_be_long() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.token");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let c = section(Some(file.clone())).to_config(|_| None).unwrap();
        let c = c.expect("on");
        assert_eq!(c.listen, "0.0.0.0:9700".parse().unwrap());
        assert!(!format!("{c:?}").contains("0123456789"), "{c:?}");
        let env = section(None)
            .to_config(|k| (k == "HERD_API_TOKEN").then(|| "z".repeat(32)))
            .unwrap();
        assert!(env.is_some());
        std::fs::write(&file, "short").unwrap();
        let err = section(Some(file)).to_config(|_| None).unwrap_err();
        assert!(err.contains("at least 16"), "{err}");
        let err = section(Some(dir.path().join("missing")))
            .to_config(|_| None)
            .unwrap_err();
        assert!(err.contains("token_file"), "{err}");
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let cfg = section(None)
            .to_config(|_| Some("right-token-0123456789".into()))
            .unwrap()
            .expect("on");
        let mut auth = cfg.auth();
        let with = |v: Option<&str>| {
            let mut r = Request::new(());
            if let Some(v) = v {
                r.metadata_mut().insert(AUTH_HEADER, v.parse().unwrap());
            }
            r
        };
        assert!(
            auth.call(with(Some("Bearer right-token-0123456789")))
                .is_ok()
        );
        for bad in [
            None,
            Some("Bearer wrong-token-0123456789"),
            Some("right-token-0123456789"),
        ] {
            let e = auth.call(with(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }
}
