//! A cache of one lazy tonic `Channel` per peer address. Channels connect on first use and
//! reconnect by themselves; a peer that is down costs a refused connection, not a new channel.
//! With `PeerTls` every channel is mutual TLS: the peer's certificate is checked against the
//! cluster CA for the host of its address, and this node presents its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

use crate::config::PeerTls;
use crate::error::ClusterError;

#[derive(Clone, Default)]
pub(crate) struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
}

impl PeerChannels {
    pub(crate) fn new(tls: Option<&PeerTls>) -> PeerChannels {
        PeerChannels {
            channels: Arc::default(),
            tls: tls.map(|t| {
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&t.ca_pem))
                    .identity(Identity::from_pem(&t.cert_pem, &t.key_pem))
            }),
        }
    }

    /// The channel to `addr` (host:port), created on first use.
    pub(crate) fn get(&self, addr: &str) -> Result<Channel, ClusterError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ClusterError::Config(format!("peer address `{addr}`: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| ClusterError::Config(format!("TLS to `{addr}`: {e}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
