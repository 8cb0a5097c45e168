//! The watcher of one slot's notify socket: reads datagrams with their credentials, drops
//! what is oversized, over the rate limit or from a process that is not the instance's, and
//! turns the rest into the machine's inputs. It also keeps the watchdog's timer (the deadline
//! is the machine's, read back after every step) and removes the socket once the slot no
//! longer wants it (stopped, crashed, scaled away, deleted).

use super::message::{self, MAX_DATAGRAM};
use super::sender;
use crate::supervisor::instance::Status;
use crate::supervisor::machine::Input;
use crate::supervisor::spec::AppSpec;
use crate::supervisor::{Supervisor, Table, clock, identity, process};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Datagrams one slot may send per second; the rest are dropped (a ping a second is plenty).
const MAX_PER_SECOND: u32 = 50;

/// A fixed one-second window of `MAX_PER_SECOND` datagrams.
struct Budget {
    window: Instant,
    used: u32,
}

impl Budget {
    fn take(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        self.used = self.used.saturating_add(1);
        if self.used == MAX_PER_SECOND + 1 {
            warn!(
                limit = MAX_PER_SECOND,
                "notify socket: too many datagrams; dropping the rest of this second"
            );
        }
        self.used <= MAX_PER_SECOND
    }
}

/// What a datagram's sender is checked against, read under the lock.
struct Slot {
    spawn_id: u64,
    who: sender::Instance,
    /// The group of the process a reload is replacing: it shares the socket, and is not heard.
    retiring: Option<u32>,
}

impl Supervisor {
    /// The slot's `NOTIFY_SOCKET` path, bound and listened to if it is not yet (a spawn, an
    /// adopted instance after a daemon restart).
    pub(in crate::supervisor) fn ensure_notify(
        &self,
        app: &str,
        index: u32,
        spec: &AppSpec,
    ) -> io::Result<PathBuf> {
        let uid = identity::expected_uid(spec, self.shared.uid).ok_or_else(|| {
            io::Error::other(format!(
                "user `{}` cannot be resolved for the notify socket",
                spec.user.as_deref().unwrap_or_default()
            ))
        })?;
        let me = self.clone();
        let name = app.to_string();
        self.shared.notify.ensure(app, index, uid, move |sock| {
            let sock = UnixDatagram::from_std(sock)?;
            info!(app = %name, instance = index, uid, "notify socket bound");
            Ok(tokio::spawn(async move {
                me.listen_notify(name, index, uid, sock).await
            }))
        })
    }

    async fn listen_notify(self, app: String, index: u32, uid: u32, sock: UnixDatagram) {
        let mut changed = self.subscribe();
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut budget = Budget {
            window: clock::monotonic(),
            used: 0,
        };
        let mut due = self.watchdog_due(&app, index);
        loop {
            let timer = async {
                match due {
                    Some((_, at)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = recv(&sock, &mut buf) => match got {
                    Ok((len, Some((pid, from_uid)))) => {
                        if budget.take(clock::monotonic()) {
                            self.on_datagram(&app, index, uid, &buf[..len.min(buf.len())], len, pid, from_uid);
                        }
                    }
                    Ok((_, None)) => debug!(app = %app, instance = index, "notify datagram without credentials; dropped"),
                    Err(e) => {
                        warn!(app = %app, instance = index, error = %e, "notify socket failed; no more notifications for this slot");
                        return;
                    }
                },
                () = timer => {
                    if let Some((spawn_id, _)) = due {
                        self.dispatch(&app, index, spawn_id, Input::WatchdogElapsed);
                    }
                }
                r = changed.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let closed = self.shared.notify.close_if(&app, index, || {
                        unwanted(&self.lock(), &app, index)
                    });
                    if closed {
                        info!(app = %app, instance = index, "notify socket removed");
                        return;
                    }
                }
            }
            due = self.watchdog_due(&app, index);
        }
    }

    /// The watchdog's deadline of the slot's current spawn.
    fn watchdog_due(&self, app: &str, index: u32) -> Option<(u64, Instant)> {
        let t = self.lock();
        let a = t.apps.get(app)?;
        let inst = &a.instances[a.position(index)?];
        Some((inst.spawn_id, inst.watchdog_due?))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_datagram(
        &self,
        app: &str,
        index: u32,
        uid: u32,
        data: &[u8],
        len: usize,
        pid: u32,
        from_uid: u32,
    ) {
        if len > MAX_DATAGRAM {
            warn!(app = %app, instance = index, pid, len, "notify datagram too long; dropped");
            return;
        }
        let msg = match message::parse(data) {
            Ok(m) if !m.is_empty() => m,
            Ok(_) => return,
            Err(e) => {
                warn!(app = %app, instance = index, pid, error = %e, "notify datagram refused");
                return;
            }
        };
        let slot = {
            let t = self.lock();
            t.apps.get(app).and_then(|a| {
                let inst = &a.instances[a.position(index)?];
                Some(Slot {
                    spawn_id: inst.spawn_id,
                    who: sender::Instance {
                        pgid: inst.pid?,
                        main_pid: inst.main_pid,
                        uid,
                    },
                    retiring: inst.retiring.as_ref().map(|r| r.pid),
                })
            })
        };
        let Some(slot) = slot else {
            debug!(app = %app, instance = index, pid, "notify datagram while no process runs; dropped");
            return;
        };
        let old = slot.retiring.map(|pgid| sender::Instance {
            pgid,
            main_pid: None,
            uid,
        });
        if old.is_some_and(|o| o.accepts(pid, from_uid)) {
            debug!(app = %app, instance = index, pid, "notify datagram from the process a reload replaces; dropped");
            return;
        }
        if !slot.who.accepts(pid, from_uid) {
            warn!(app = %app, instance = index, pid, uid = from_uid, pgid = slot.who.pgid, "notify datagram from a process that is not the instance's; refused");
            return;
        }
        let send = |input| self.dispatch(app, index, slot.spawn_id, input);
        if let Some(main) = msg.main_pid {
            if slot.who.may_be_main(main) {
                let signature = process::start_signature(main);
                send(Input::MainPid {
                    pid: main,
                    signature,
                });
            } else {
                warn!(app = %app, instance = index, main_pid = main, "MAINPID names a process outside the instance's group or of another user; ignored");
            }
        }
        if let Some(text) = msg.status {
            send(Input::Status(text));
        }
        if msg.ready {
            send(Input::Ready);
        }
        if msg.watchdog {
            send(Input::WatchdogPing);
        }
    }

    /// Watches the process the app named with `MAINPID=` (not our child: no exit status).
    pub(in crate::supervisor) fn watch_main(
        &self,
        app: String,
        index: u32,
        spawn_id: u64,
        pgid: u32,
        pid: u32,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let reason = match process::wait_foreign(pid).await {
                Ok(()) => "exited (main process named by MAINPID: exit status unknown)".to_string(),
                Err(e) => {
                    format!("exited (main process named by MAINPID, could not watch it: {e})")
                }
            };
            let exit = crate::supervisor::instance::ExitRecord {
                at_ms: me.shared.os.now_ms(),
                code: None,
                signal: None,
                reason,
            };
            let group_alive = me.shared.os.group_alive(pgid);
            let exited = Input::Exited {
                pid: Some(pid),
                exit,
                group_alive,
            };
            me.dispatch(&app, index, spawn_id, exited);
        });
    }
}

/// The slot needs no socket any more: its app is gone, no longer notifies, was scaled below
/// it, or the instance is stopped or crashed (a later start binds it again).
fn unwanted(t: &Table, app: &str, index: u32) -> bool {
    let Some(a) = t.apps.get(app) else {
        return true;
    };
    !a.spec.notifies()
        || index >= a.spec.instances
        || a.position(index)
            .is_none_or(|p| matches!(a.instances[p].status, Status::Stopped | Status::Crashed))
}

/// One datagram and its sender's `(pid, uid)`; the length is the datagram's whole length even
/// when it did not fit (`MSG_TRUNC`).
async fn recv(sock: &UnixDatagram, buf: &mut [u8]) -> io::Result<(usize, Option<(u32, u32)>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
    let fd = sock.as_raw_fd();
    sock.async_io(Interest::READABLE, || {
        let mut iov = [io::IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        let msg = recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut cred = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmCredentials(c) = c {
                cred = u32::try_from(c.pid()).ok().map(|pid| (pid, c.uid()));
            }
        }
        Ok((msg.bytes, cred))
    })
    .await
}
