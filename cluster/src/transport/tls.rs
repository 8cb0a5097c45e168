//! Server certificates that a config reload replaces without a restart. A `CertStore` is the
//! rustls certificate resolver of a listener: it holds the current pair behind a lock, so every
//! handshake after a swap presents the new pair while open connections keep the one they
//! were served. A pair is checked whole (the PEM parses, the key belongs to the certificate)
//! into a `CertPair` before it can be stored, so a bad pair never replaces a good one.
//!
//! `TlsIo` runs the handshake in the connection's own task, not the accept loop, over the
//! bounded connection (`limits`): the caps and the handshake deadline still apply.
//!
//! Key material is never logged or formatted: `CertPair`'s Debug shows the chain length only.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};
use tonic::transport::server::Connected;

/// Why a PEM certificate and key are not a usable pair. `explain` names the files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("holds no PEM certificate ({0})")]
    Certificate(String),
    #[error("holds no usable PEM private key ({0})")]
    Key(String),
    #[error("the key does not belong to the certificate ({0})")]
    Mismatch(String),
}

impl PairError {
    /// The message a user sees: which file is wrong and what to put there.
    pub fn explain(&self, cert: &std::path::Path, key: &std::path::Path) -> String {
        match self {
            PairError::Certificate(why) => format!(
                "tls_cert {}: no usable PEM certificate ({why}); write the certificate chain in PEM (-----BEGIN CERTIFICATE-----), the server's own certificate first",
                cert.display()
            ),
            PairError::Key(why) => format!(
                "tls_key {}: no usable PEM private key ({why}); write the unencrypted key (PKCS#8, PKCS#1 or SEC1 PEM) issued with tls_cert {}",
                key.display(),
                cert.display()
            ),
            PairError::Mismatch(why) => format!(
                "tls_key {} is not the key of tls_cert {} ({why}); write the key issued with this certificate, or both files of the new pair",
                key.display(),
                cert.display()
            ),
        }
    }
}

/// The crypto every herd listener uses (ring: no aws-lc in the build).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A certificate chain and the private key that belongs to its first certificate.
#[derive(Clone)]
pub struct CertPair {
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertPair {{ chain: {} certificate(s) }}",
            self.certified.cert.len()
        )
    }
}

impl CertPair {
    /// Parses and checks a PEM chain and key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertPair, PairError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PairError::Certificate(e.to_string()))?;
        if chain.is_empty() {
            return Err(PairError::Certificate("no CERTIFICATE section".into()));
        }
        // The pem error can quote the file; the key file's content must not reach a log.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            PairError::Key(match e {
                tokio_rustls::rustls::pki_types::pem::Error::NoItemsFound => {
                    "no PRIVATE KEY section".into()
                }
                _ => "the PEM does not parse".into(),
            })
        })?;
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| PairError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified
            .keys_match()
            .map_err(|e| PairError::Mismatch(e.to_string()))?;
        Ok(CertPair {
            certified: Arc::new(certified),
        })
    }

    /// Whether `other` serves the same certificate chain. (The key is not compared: it must
    /// belong to the first certificate, so a new key means a new certificate.)
    pub fn same_chain(&self, other: &CertPair) -> bool {
        self.certified.cert == other.certified.cert
    }
}

/// The pair a listener serves, swapped by a reload; rustls asks it at every handshake.
pub struct CertStore {
    current: RwLock<CertPair>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertStore { .. }")
    }
}

impl CertStore {
    pub fn new(pair: CertPair) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(pair),
        })
    }

    pub fn current(&self) -> CertPair {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `pair` from the next handshake on; returns whether it differs from the last.
    pub fn replace(&self, pair: CertPair) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = !current.same_chain(&pair);
        *current = pair;
        changed
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified)
    }
}

/// A TLS acceptor serving whatever `store` holds, speaking HTTP/2 (ALPN `h2`); with
/// `client_ca` (PEM) a client must present a certificate that CA signed (mutual TLS).
pub fn acceptor(store: Arc<CertStore>, client_ca: Option<&[u8]>) -> Result<TlsAcceptor, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("tls_ca: no PEM certificate ({e})"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_ca: the CA certificate is refused ({e})"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| format!("tls_ca: no usable CA certificate ({e})"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Wraps every connection of `incoming` in TLS (the handshake runs when the connection is
/// first read or written, in its own task).
pub fn with_tls<S, IO, E>(
    incoming: S,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = Result<TlsIo<IO>, E>>
where
    S: Stream<Item = Result<IO, E>>,
    IO: Connected + AsyncRead + AsyncWrite + Unpin,
{
    incoming.map(move |io| io.map(|io| TlsIo::new(io, &acceptor)))
}

enum State<IO> {
    Handshake(Box<Accept<IO>>),
    Ready(Box<TlsStream<IO>>),
    Failed,
}

/// A server connection that does its TLS handshake on first use. Its connect info is the
/// underlying connection's, so `remote_addr()` (which the token throttle keys on) still works.
pub struct TlsIo<IO: Connected> {
    state: State<IO>,
    info: IO::ConnectInfo,
}

impl<IO: Connected + AsyncRead + AsyncWrite + Unpin> TlsIo<IO> {
    pub fn new(io: IO, acceptor: &TlsAcceptor) -> Self {
        let info = io.connect_info();
        TlsIo {
            state: State::Handshake(Box::new(acceptor.accept(io))),
            info,
        }
    }

    /// Drives the handshake; ready once the stream can carry data (or never will).
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<IO>>> {
        if let State::Handshake(accept) = &mut self.state {
            match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                Ok(stream) => self.state = State::Ready(Box::new(stream)),
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    self.state = State::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

// Nothing in a `TlsIo` is pinned structurally: the stream parts are moved freely (they are
// `Unpin` with an `Unpin` IO), and the connect info is only cloned.
impl<IO: Connected> Unpin for TlsIo<IO> {}

impl<IO: Connected> Connected for TlsIo<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> IO::ConnectInfo {
        self.info.clone()
    }
}

impl<IO: Connected + AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<IO: Connected + AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two P-256 pairs made with `openssl req -x509 -newkey ec -pkeyopt
    // ec_paramgen_curve:prime256v1 -nodes -subj /CN=one` (and /CN=two).
    const ONE_CERT: &str = include_str!("testdata/one.pem");
    const ONE_KEY: &str = include_str!("testdata/one.key");
    const TWO_CERT: &str = include_str!("testdata/two.pem");
    const TWO_KEY: &str = include_str!("testdata/two.key");

    fn pair(cert: &str, key: &str) -> Result<CertPair, PairError> {
        CertPair::from_pem(cert.as_bytes(), key.as_bytes())
    }

    fn served(store: &CertStore) -> Vec<u8> {
        store.current().certified.cert[0].to_vec()
    }

    #[test]
    fn a_swapped_pair_is_what_the_next_handshake_is_given() {
        let one = pair(ONE_CERT, ONE_KEY).unwrap();
        let two = pair(TWO_CERT, TWO_KEY).unwrap();
        let store = CertStore::new(one.clone());
        let before = served(&store);
        assert!(!store.replace(one.clone()), "the same chain is no change");
        assert!(store.replace(two.clone()));
        assert_ne!(served(&store), before);
        assert!(store.current().same_chain(&two));
        // An acceptor built before the swap resolves through the store, so it follows it.
        assert!(acceptor(store.clone(), None).is_ok());
        assert!(store.replace(one));
        assert_eq!(served(&store), before);
    }

    #[test]
    fn a_bad_pair_is_refused_for_what_is_wrong_with_it() {
        let e = pair(ONE_CERT, TWO_KEY).unwrap_err();
        assert!(matches!(e, PairError::Mismatch(_)), "{e:?}");
        let e = pair("not a certificate", ONE_KEY).unwrap_err();
        assert!(matches!(e, PairError::Certificate(_)), "{e:?}");
        let e = pair(ONE_CERT, "").unwrap_err();
        assert!(matches!(e, PairError::Key(_)), "{e:?}");
        // A certificate where the key should be: no key, and nothing of the file quoted.
        let e = pair(ONE_CERT, ONE_CERT).unwrap_err();
        assert!(matches!(e, PairError::Key(_)), "{e:?}");
        let text = e.explain("/etc/herd/api.pem".as_ref(), "/etc/herd/api.key".as_ref());
        assert!(text.contains("tls_key /etc/herd/api.key"), "{text}");
        assert!(!text.contains("MII"), "{text}");
    }

    #[test]
    fn the_debug_form_shows_no_key_material() {
        let one = pair(ONE_CERT, ONE_KEY).unwrap();
        assert_eq!(format!("{one:?}"), "CertPair { chain: 1 certificate(s) }");
    }
}
