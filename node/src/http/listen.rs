//! What the HTTP port accepts, for `axum::serve`: connections bounded like the TCP API's (a
//! cap per peer and in all, a handshake deadline and an idle one, and a peer in a sign-in
//! penalty is hung up on at accept; see `herd_cluster::limits`), in the clear or, with
//! `[http] tls_cert`/`tls_key` (read like `[api]`'s), decrypted. TLS handshakes run in tasks
//! of their own, at most `MAX_HANDSHAKES` at once and each within `HANDSHAKE_TIMEOUT`, so a
//! client that stalls its handshake holds neither the accept loop nor anyone else's connection.

use herd_cluster::limits::{Bounded, Gate, Guarded, Limits};
use herd_cluster::tls::{CertPair, CertStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Connected;
use tracing::debug;

const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP port's bounds: a browser opens a handful of connections, a dashboard's live
/// streams stay open (an `EventSource` reconnects after an idle hang-up).
pub const LIMITS: Limits = Limits {
    max_per_peer: 32,
    max_total: 256,
    handshake: Duration::from_secs(10),
    idle: Duration::from_secs(3600),
};

type Incoming = Bounded<TcpListenerStream>;

fn bounded(tcp: tokio::net::TcpListener, gate: Arc<Gate>) -> Incoming {
    Bounded::new(TcpListenerStream::new(tcp), gate)
}

/// The next admitted connection and its peer; never returns once the listener is gone.
async fn next(incoming: &mut Incoming) -> Option<(Guarded, SocketAddr)> {
    loop {
        match incoming.next().await {
            Some(Ok(conn)) => {
                if let Some(peer) = conn.connect_info().remote_addr() {
                    return Some((conn, peer));
                }
            }
            Some(Err(e)) => {
                // Out of descriptors, say: wait a moment rather than spin.
                debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => return None,
        }
    }
}

/// Plain HTTP.
pub struct PlainListener {
    incoming: Incoming,
    local: SocketAddr,
}

impl PlainListener {
    pub fn new(tcp: tokio::net::TcpListener, gate: Arc<Gate>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        Ok(Self {
            incoming: bounded(tcp, gate),
            local,
        })
    }
}

impl axum::serve::Listener for PlainListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match next(&mut self.incoming).await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// HTTPS.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<Guarded>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves `pair` on `tcp`, speaking HTTP/1.1 (ALPN `http/1.1`).
    pub fn new(
        tcp: tokio::net::TcpListener,
        gate: Arc<Gate>,
        pair: CertPair,
    ) -> Result<Self, String> {
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        let h2 = herd_cluster::tls::acceptor(CertStore::new(pair), None)
            .map_err(|e| format!("[http] {e}"))?;
        let mut config = h2.config().as_ref().clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let mut incoming = bounded(tcp, gate);
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some((conn, peer)) = next(&mut incoming).await else {
                    return;
                };
                let (acceptor, out) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                        Ok(Ok(tls)) => {
                            let _ = out.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "HTTP TLS handshake failed"),
                        Err(_) => debug!(%peer, "HTTP TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Guarded>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (the runtime is going down): never accept again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
