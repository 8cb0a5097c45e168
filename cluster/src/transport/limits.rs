//! Bounds on a network port's connections (the TCP API's, the cluster's), so a stranger
//! cannot exhaust the daemon's file descriptors (which apps need to restart) or memory: a cap
//! per peer and a global cap, checked at accept; a handshake deadline (TLS and the first
//! request); an idle deadline (nothing received, not even an HTTP/2 ping); and a peer in an
//! auth penalty (see `throttle`) is hung up on at once.
//!
//! Invariant: every accepted connection holds a `Permit`; the maps hold only live connections,
//! so they are bounded by `max_connections`.

use super::throttle::{AuthThrottle, PeerKey};
use futures_util::Stream;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::service::Interceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The numbers that bound a port's connections (`[api]` sets them for the TCP API; see the
/// README).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub max_per_peer: usize,
    pub max_total: usize,
    pub handshake: Duration,
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_per_peer: 32,
            max_total: 512,
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

/// Flags one connection shares with the request path.
#[derive(Debug, Default)]
struct ConnFlags {
    /// A request arrived: the handshake deadline no longer applies, the idle one does.
    established: AtomicBool,
    /// Hang up at the next read (the peer is in an auth penalty).
    doomed: AtomicBool,
}

#[derive(Default)]
struct Table {
    per_peer: HashMap<PeerKey, usize>,
    conns: HashMap<SocketAddr, Arc<ConnFlags>>,
}

/// Admits connections and knows the live ones. Shared by the accept loop, every connection and
/// the request path.
pub struct Gate {
    limits: RwLock<Limits>,
    table: Mutex<Table>,
    throttle: Arc<AuthThrottle>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    PeerCap(usize),
    TotalCap(usize),
    Penalty(Duration),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PeerCap(n) => write!(f, "over max_connections_per_peer ({n})"),
            Refusal::TotalCap(n) => write!(f, "over max_connections ({n})"),
            Refusal::Penalty(d) => write!(
                f,
                "in a penalty for wrong tokens ({} s left)",
                d.as_secs().max(1)
            ),
        }
    }
}

impl Gate {
    pub fn new(limits: Limits, throttle: Arc<AuthThrottle>) -> Arc<Self> {
        Arc::new(Self {
            limits: RwLock::new(limits),
            table: Mutex::new(Table::default()),
            throttle,
        })
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A reload changes the numbers for connections accepted from now on.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    pub fn throttle(&self) -> &Arc<AuthThrottle> {
        &self.throttle
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Permit, Refusal> {
        let key = PeerKey::of(peer.ip());
        if let Some(left) = self.throttle.penalty_left(key, Instant::now()) {
            return Err(Refusal::Penalty(left));
        }
        let limits = self.limits();
        let mut t = self.table();
        if t.conns.len() >= limits.max_total {
            return Err(Refusal::TotalCap(limits.max_total));
        }
        let n = t.per_peer.entry(key).or_insert(0);
        if *n >= limits.max_per_peer {
            return Err(Refusal::PeerCap(limits.max_per_peer));
        }
        *n += 1;
        let flags = Arc::new(ConnFlags::default());
        t.conns.insert(peer, flags.clone());
        Ok(Permit {
            gate: self.clone(),
            peer,
            key,
            flags,
        })
    }

    /// A request came in on the connection from `peer`: it has finished its handshake.
    pub fn request_seen(&self, peer: SocketAddr) {
        if let Some(f) = self.table().conns.get(&peer) {
            f.established.store(true, Ordering::Relaxed);
        }
    }

    /// Hangs up on every connection of `key` at its next read.
    pub fn doom(&self, key: PeerKey) {
        for (addr, f) in self.table().conns.iter() {
            if PeerKey::of(addr.ip()) == key {
                f.doomed.store(true, Ordering::Relaxed);
            }
        }
    }

    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.table().conns.len()
    }
}

/// A live connection's place in the gate; dropping it frees the place.
pub struct Permit {
    gate: Arc<Gate>,
    peer: SocketAddr,
    key: PeerKey,
    flags: Arc<ConnFlags>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut t = self.gate.table();
        t.conns.remove(&self.peer);
        if let Some(n) = t.per_peer.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.per_peer.remove(&self.key);
            }
        }
    }
}

/// An admitted connection: reads fail (and hyper hangs up) past its deadline or once doomed.
pub struct Guarded {
    stream: TcpStream,
    permit: Permit,
    accepted: Instant,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(stream: TcpStream, permit: Permit) -> Self {
        let now = Instant::now();
        let handshake = permit.gate.limits().handshake;
        Self {
            stream,
            permit,
            accepted: now,
            last_read: now,
            timer: Box::pin(tokio::time::sleep_until(now + handshake)),
        }
    }

    fn deadline(&self) -> Instant {
        let limits = self.permit.gate.limits();
        if self.permit.flags.established.load(Ordering::Relaxed) {
            self.last_read + limits.idle
        } else {
            self.accepted + limits.handshake
        }
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.permit.flags.doomed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "peer in an auth penalty",
            )));
        }
        let due = this.deadline();
        if this.timer.deadline() != due {
            this.timer.as_mut().reset(due);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            let why = if this.permit.flags.established.load(Ordering::Relaxed) {
                "idle timeout"
            } else {
                "handshake timeout"
            };
            tracing::debug!(peer = %this.permit.peer, why, "closing a connection");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.last_read = Instant::now();
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The accept stream handed to tonic: refused connections are closed at once (the refusal is
/// counted for the rate-limited log), admitted ones come wrapped in `Guarded`.
pub struct Bounded<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, gate: Arc<Gate>) -> Self {
        Self { inner, gate }
    }
}

impl<S> Stream for Bounded<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<Guarded>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let stream = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(s)) => s,
            };
            let Ok(peer) = stream.peer_addr() else {
                continue; // already gone
            };
            match this.gate.admit(peer) {
                Ok(permit) => return Poll::Ready(Some(Ok(Guarded::new(stream, permit)))),
                Err(why) => {
                    // Dropping the stream closes it; the stranger learns nothing more.
                    this.gate
                        .throttle
                        .refused(peer.ip(), &why.to_string(), Instant::now());
                }
            }
        }
    }
}

/// Marks a connection as past its handshake at its first request, for every service on the
/// port (`Server::builder().layer(InterceptorLayer::new(RequestSeen(gate)))`).
#[derive(Clone)]
pub struct RequestSeen(pub Arc<Gate>);

impl Interceptor for RequestSeen {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(peer) = req.remote_addr() {
            self.0.request_seen(peer);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn gate(per_peer: usize, total: usize) -> Arc<Gate> {
        Gate::new(
            Limits {
                max_per_peer: per_peer,
                max_total: total,
                ..Limits::default()
            },
            Arc::new(AuthThrottle::new("API call")),
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_peer_and_in_total_and_frees_places_on_drop() {
        let g = gate(2, 3);
        let a = g.admit(addr("10.0.0.1:1")).unwrap();
        let _b = g.admit(addr("10.0.0.1:2")).unwrap();
        assert_eq!(g.admit(addr("10.0.0.1:3")).err(), Some(Refusal::PeerCap(2)));
        let _c = g.admit(addr("10.0.0.2:1")).unwrap();
        assert_eq!(
            g.admit(addr("10.0.0.3:1")).err(),
            Some(Refusal::TotalCap(3))
        );
        drop(a);
        let _d = g.admit(addr("10.0.0.1:3")).unwrap();
        assert_eq!(g.live(), 3);
    }

    #[test]
    fn ipv6_peers_of_one_slash_64_share_a_cap() {
        let g = gate(1, 10);
        let _a = g.admit(addr("[2001:db8::1]:1")).unwrap();
        assert!(g.admit(addr("[2001:db8::2]:1")).is_err());
        assert!(g.admit(addr("[2001:db8:0:1::1]:1")).is_ok());
    }

    async fn pair(g: &Arc<Gate>) -> (Guarded, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        (Guarded::new(server, g.admit(peer).unwrap()), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_cut_at_the_handshake_deadline() {
        let g = gate(4, 4);
        let (mut conn, _client) = pair(&g).await;
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        let want = Limits::default().handshake;
        assert!(
            took >= want && took <= want + Duration::from_millis(2),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_established_connection_lives_until_idle() {
        use tokio::io::AsyncWriteExt;
        let g = gate(4, 4);
        let (mut conn, mut client) = pair(&g).await;
        g.request_seen(conn.permit.peer);
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        let read_at = Instant::now();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = read_at.elapsed();
        let want = Limits::default().idle;
        assert!(
            took >= want && took <= want + Duration::from_millis(2),
            "{took:?}"
        );
        drop(conn);
        assert_eq!(g.live(), 0);
    }

    #[tokio::test]
    async fn a_doomed_connection_fails_its_next_read() {
        let g = gate(4, 4);
        let (mut conn, _client) = pair(&g).await;
        g.doom(PeerKey::of(conn.permit.peer.ip()));
        let mut buf = [0u8; 8];
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
