//! The cluster secret on every node-to-node call. Clients attach it as `x-herd-secret` (with the
//! cluster name as `x-herd-cluster`); servers refuse a missing or wrong one with
//! `Unauthenticated` and log the refusal — never the secret itself.

use std::sync::Arc;
use tonic::Request;
use tonic::Status;

use super::throttle::AuthThrottle;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;

use crate::error::ClusterError;

pub(crate) const SECRET_HEADER: &str = "x-herd-secret";
pub(crate) const CLUSTER_HEADER: &str = "x-herd-cluster";

/// Adds the secret and cluster name to outgoing calls.
#[derive(Clone)]
pub(crate) struct ClientAuth {
    secret: AsciiMetadataValue,
    cluster: AsciiMetadataValue,
}

impl ClientAuth {
    pub(crate) fn new(cluster: &str, secret: &str) -> Result<ClientAuth, ClusterError> {
        if !secret.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(ClusterError::Config(
                "the cluster secret must be printable ASCII".into(),
            ));
        }
        let secret = secret.parse().map_err(|_| {
            ClusterError::Config("the cluster secret must be printable ASCII".into())
        })?;
        let cluster = cluster.parse().map_err(|_| {
            ClusterError::Config(format!("cluster name `{cluster}` is not valid ASCII"))
        })?;
        Ok(ClientAuth { secret, cluster })
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let md = req.metadata_mut();
        md.insert(SECRET_HEADER, self.secret.clone());
        md.insert(CLUSTER_HEADER, self.cluster.clone());
        Ok(req)
    }
}

/// Checks incoming calls. Refusals are logged at most once a minute per peer (a flood of
/// wrong secrets must not push the daemon log's history out).
#[derive(Clone)]
pub(crate) struct ServerAuth {
    secret: Vec<u8>,
    cluster: String,
    refusals: Arc<AuthThrottle>,
}

impl ServerAuth {
    pub(crate) fn new(cluster: &str, secret: &str) -> ServerAuth {
        ServerAuth {
            secret: secret.as_bytes().to_vec(),
            cluster: cluster.to_string(),
            refusals: Arc::new(AuthThrottle::new("cluster RPC")),
        }
    }

    fn check(&self, req: &Request<()>) -> Result<(), Status> {
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let md = req.metadata();
        let presented = md.get(SECRET_HEADER).map(|v| v.as_bytes());
        let ok = presented.is_some_and(|p| constant_time_eq(p, &self.secret));
        if !ok {
            let reason = if presented.is_none() {
                "missing secret"
            } else {
                "wrong secret"
            };
            let ip = req
                .remote_addr()
                .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
            self.refusals
                .refused(ip, reason, tokio::time::Instant::now());
            return Err(Status::unauthenticated("cluster secret missing or wrong"));
        }
        let cluster = md.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok());
        if cluster != Some(self.cluster.as_str()) {
            tracing::warn!(%peer, their_cluster = cluster.unwrap_or(""), "refused RPC from another cluster");
            return Err(Status::failed_precondition(format!(
                "this node belongs to cluster `{}`",
                self.cluster
            )));
        }
        Ok(())
    }
}

impl Interceptor for ServerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(&req)?;
        Ok(req)
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(secret: Option<&str>, cluster: &str) -> Request<()> {
        let mut req = Request::new(());
        if let Some(s) = secret {
            req.metadata_mut()
                .insert(SECRET_HEADER, s.parse().expect("ascii"));
        }
        req.metadata_mut()
            .insert(CLUSTER_HEADER, cluster.parse().expect("ascii"));
        req
    }

    #[test]
    fn server_accepts_the_right_secret_and_cluster() {
        let auth = ServerAuth::new("prod", "s3cret");
        assert!(auth.check(&request(Some("s3cret"), "prod")).is_ok());
    }

    #[test]
    fn server_refuses_missing_or_wrong_secret_as_unauthenticated() {
        let auth = ServerAuth::new("prod", "s3cret");
        for secret in [None, Some("nope"), Some("s3cret2")] {
            let err = auth.check(&request(secret, "prod")).expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            assert!(!err.message().contains("s3cret"));
        }
    }

    #[test]
    fn server_refuses_another_cluster() {
        let auth = ServerAuth::new("prod", "s3cret");
        let err = auth
            .check(&request(Some("s3cret"), "staging"))
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn client_rejects_a_non_ascii_secret() {
        assert!(ClientAuth::new("prod", "sécret").is_err());
    }
}
