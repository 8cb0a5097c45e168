//! The TCP API: the Unix socket's Supervisor and ClusterAdmin services for remote CLIs, behind
//! a bearer token. Off until a token is set (`[api] token_file` or `HERD_API_TOKEN`); a
//! daemon without one opens no API port.
//!
//! In a cluster whose `[cluster] listen` is the same address (both default to `0.0.0.0:9700`)
//! one listener serves both: node-to-node RPCs checked against the cluster secret, user RPCs
//! against the API token.
//!
//! With `tls_cert` and `tls_key` the API speaks TLS (rustls); it then needs a port of its own,
//! since the cluster's peers speak plain HTTP/2 to `[cluster] listen`. A reload re-reads the
//! pair (same paths or new) and serves it to new connections (`tls::CertStore`).
//!
//! Connections are bounded (`limits`), every call passes the door of `access::guard` (tokens,
//! roles; wrong tokens are throttled per peer and their log lines rate-limited, `throttle`), and
//! the config's token lives in a shared holder that a config reload swaps (`server`).

pub mod server;
pub use herd_cluster::{limits, throttle};

use herd_cluster::tls::CertPair;
use limits::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    /// A connection must finish its TLS handshake and send its first request within this.
    #[serde(default = "default_handshake_timeout_s")]
    pub handshake_timeout_s: f64,
    /// A connection that sends nothing for this long is closed (the CLI pings while it follows).
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: f64,
    /// Open connections from one IPv4 address (or IPv6 /64); more are closed at accept.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: u32,
    /// Open connections in all.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            handshake_timeout_s: default_handshake_timeout_s(),
            idle_timeout_s: default_idle_timeout_s(),
            max_connections_per_peer: default_max_connections_per_peer(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:9700".into()
}
fn default_handshake_timeout_s() -> f64 {
    Limits::default().handshake.as_secs_f64()
}
fn default_idle_timeout_s() -> f64 {
    Limits::default().idle.as_secs_f64()
}
fn default_max_connections_per_peer() -> u32 {
    Limits::default().max_per_peer as u32
}
fn default_max_connections() -> u32 {
    Limits::default().max_total as u32
}

/// The config's token, swapped by a config reload; `None` refuses every call (the API is
/// being turned off).
pub use crate::access::tokens::ConfigToken as TokenHolder;

/// A checked `[api]`: where to listen and the token to demand.
#[derive(Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    token: Arc<str>,
    /// The server's certificate and key, checked at load.
    pub tls: Option<CertPair>,
    /// Where the pair came from (for the reload's log line).
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
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
            (Some(cert), Some(key)) => Some(tls_pair("[api]", cert, key)?),
            _ => return Err("[api] TLS needs both `tls_cert` and `tls_key`".into()),
        };
        Ok(Some(ApiConfig {
            listen,
            token: token.into(),
            tls,
            tls_files: self.tls_cert.clone().zip(self.tls_key.clone()),
            limits: self.limits()?,
        }))
    }

    /// The connection bounds, each checked against a sane range (naming the key).
    pub fn limits(&self) -> Result<Limits, String> {
        let secs = |key: &str, v: f64, min: f64, max: f64| {
            if v.is_finite() && (min..=max).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!(
                    "[api] key `{key}`: {v} is out of range ({min} to {max})"
                ))
            }
        };
        let count = |key: &str, v: u32, max: u32| {
            if (1..=max).contains(&v) {
                Ok(v as usize)
            } else {
                Err(format!(
                    "[api] key `{key}`: {v} is out of range (1 to {max})"
                ))
            }
        };
        Ok(Limits {
            handshake: secs("handshake_timeout_s", self.handshake_timeout_s, 0.1, 3600.0)?,
            idle: secs("idle_timeout_s", self.idle_timeout_s, 1.0, 86_400.0)?,
            max_per_peer: count(
                "max_connections_per_peer",
                self.max_connections_per_peer,
                65_536,
            )?,
            max_total: count("max_connections", self.max_connections, 1_000_000)?,
        })
    }
}

/// Reads and checks a PEM certificate chain and key, so a bad pair stops `herd up` at once and
/// is refused by a reload (the running pair stays). `section` names the config table.
pub fn tls_pair(section: &str, cert: &Path, key: &Path) -> Result<CertPair, String> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| {
            format!(
                "{section} {what} {}: {e}; check the path and that the daemon's user can read it",
                p.display()
            )
        })
    };
    CertPair::from_pem(&read(cert, "tls_cert")?, &read(key, "tls_key")?)
        .map_err(|e| format!("{section} {}", e.explain(cert, key)))
}

impl ApiConfig {
    /// The `authorization` value a call must carry.
    pub fn expected(&self) -> Arc<[u8]> {
        format!("Bearer {}", self.token).into_bytes().into()
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
    fn limits_out_of_range_are_refused_naming_the_key() {
        for (text, key) in [
            ("handshake_timeout_s = 1e18", "handshake_timeout_s"),
            ("idle_timeout_s = 0", "idle_timeout_s"),
            ("max_connections_per_peer = 0", "max_connections_per_peer"),
            ("max_connections = 0", "max_connections"),
        ] {
            let s: ApiSection = toml::from_str(text).unwrap();
            let e = s.limits().unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        let s: ApiSection =
            toml::from_str("handshake_timeout_s = 1\nmax_connections_per_peer = 4").unwrap();
        let l = s.limits().unwrap();
        assert_eq!((l.handshake, l.max_per_peer), (Duration::from_secs(1), 4));
    }
}
