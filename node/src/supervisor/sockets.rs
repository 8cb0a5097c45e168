//! Listen sockets an app asks herd to hold (`listen = ["127.0.0.1:8080"]`). herd binds each
//! once and hands the same socket to every instance as fd 3, 4, ... with `LISTEN_FDS` set
//! (systemd socket activation), so all instances share one accept queue: an instance that
//! stops never takes queued connections with it, which is what makes a reload lossless.
//! Sockets are bound with SO_REUSEPORT so a restarted daemon can bind again while adopted
//! instances still hold the previous socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

#[derive(Default)]
pub struct Sockets {
    by_app: Mutex<HashMap<String, Vec<(String, OwnedFd)>>>,
}

impl Sockets {
    /// Binds whatever of `addrs` the app does not hold yet (and drops what it no longer
    /// lists); returns the raw fds in `addrs` order.
    pub fn ensure(&self, app: &str, addrs: &[String]) -> Result<Vec<RawFd>, String> {
        let mut map = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.entry(app.to_string()).or_default();
        held.retain(|(a, _)| addrs.contains(a));
        let mut fds = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some((_, fd)) = held.iter().find(|(a, _)| a == addr) {
                fds.push(fd.as_raw_fd());
                continue;
            }
            let fd = bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            fds.push(fd.as_raw_fd());
            held.push((addr.clone(), fd));
        }
        Ok(fds)
    }

    pub fn release(&self, app: &str) {
        self.by_app
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }
}

fn bind(addr: &str) -> std::io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_address_is_bound_once_per_app() {
        let s = Sockets::default();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap().to_string();
        drop(probe);
        let a = s.ensure("web", std::slice::from_ref(&addr)).unwrap();
        let b = s.ensure("web", std::slice::from_ref(&addr)).unwrap();
        assert_eq!(a, b);
        assert!(
            std::net::TcpStream::connect(&addr).is_ok(),
            "the socket is listening"
        );
        s.release("web");
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "released sockets close"
        );
    }
}
