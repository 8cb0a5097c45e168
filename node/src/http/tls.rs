//! TLS for the HTTP port (`[http] tls_cert` / `tls_key`, read like `[api]`'s): a listener for
//! `axum::serve` whose connections arrive already decrypted. Handshakes run in tasks of their
//! own, at most `MAX_HANDSHAKES` at once and each within `HANDSHAKE_TIMEOUT`, so a client that
//! stalls its handshake holds neither the accept loop nor anyone else's connection.

use herd_cluster::tls::{CertPair, CertStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves `pair` on `tcp`, speaking HTTP/1.1 (ALPN `http/1.1`).
    pub fn new(tcp: TcpListener, pair: CertPair) -> Result<Self, String> {
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        let h2 = herd_cluster::tls::acceptor(CertStore::new(pair), None)
            .map_err(|e| format!("[http] {e}"))?;
        let mut config = h2.config().as_ref().clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp_stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, say: wait a moment rather than spin.
                        debug!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, out) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp_stream)).await
                    {
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
    type Io = TlsStream<TcpStream>;
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
