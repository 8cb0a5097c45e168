//! A cache of one lazy tonic `Channel` per peer address. Channels connect on first use and
//! reconnect by themselves; a peer that is down costs a refused connection, not a new channel.
//! With `PeerTls` every channel is mutual TLS: the peer's certificate is checked against the
//! cluster CA for the host of its address, and this node presents its own. A reload that
//! renews this node's certificate (`set_tls`) drops the cache, so channels made from then on
//! present the new one; a channel already handed out keeps the certificate it was made with.

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

/// Clones share the cache and the TLS settings.
#[derive(Clone, Default)]
pub(crate) struct PeerChannels {
    inner: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    channels: HashMap<String, Channel>,
    tls: Option<ClientTlsConfig>,
}

fn client_tls(t: &PeerTls) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&t.ca_pem))
        .identity(Identity::from_pem(&t.cert_pem, &t.key_pem))
}

impl PeerChannels {
    pub(crate) fn new(tls: Option<&PeerTls>) -> PeerChannels {
        PeerChannels {
            inner: Arc::new(Mutex::new(Cache {
                channels: HashMap::new(),
                tls: tls.map(client_tls),
            })),
        }
    }

    /// Channels made from now on present `tls` (checked by the caller).
    pub(crate) fn set_tls(&self, tls: &PeerTls) {
        let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        cache.tls = Some(client_tls(tls));
        cache.channels.clear();
    }

    /// The channel to `addr` (host:port), created on first use.
    pub(crate) fn get(&self, addr: &str) -> Result<Channel, ClusterError> {
        let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = cache.channels.get(addr) {
            return Ok(ch.clone());
        }
        let scheme = if cache.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ClusterError::Config(format!("peer address `{addr}`: {e}")))?;
        if let Some(tls) = &cache.tls {
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
        cache.channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Drops the cached channel to `addr`: its connection closes once the last clone handed
    /// out is gone, and the next `get` makes a new one. A master forgets the nodes it no longer
    /// heartbeats, so an ex-master does not keep thousands of idle connections pinging.
    pub(crate) fn forget(&self, addr: &str) {
        let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        cache.channels.remove(addr);
    }

    #[cfg(test)]
    pub(crate) fn cached(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .channels
            .len()
    }
}
