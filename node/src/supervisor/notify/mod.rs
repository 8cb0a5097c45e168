//! Readiness from the app itself (`ready = "notify"`, systemd's sd_notify protocol): herd
//! binds one unix datagram socket per instance slot and gives its path to the instance as
//! `NOTIFY_SOCKET`; a listener (`listener.rs`) reads `READY=1`, `STATUS=`, `WATCHDOG=1` and
//! `MAINPID=` from it and feeds them to the instance's machine.
//!
//! Who may speak for an instance is decided twice. The file system keeps other users out:
//! the socket lives in a directory only the daemon's user can write, and the socket file
//! belongs to the app's user, mode 0600, so only that user (and root) can `sendto` it — never
//! world-writable. Then every datagram carries the sender's kernel-checked credentials
//! (`SO_PASSCRED`): it counts only from the app's uid and from a process of the instance
//! (`sender.rs`). Path sockets rather than abstract ones, as systemd does: an abstract name has
//! no permissions at all, anyone in the network namespace could send to it.
//!
//! Where: a root daemon may run apps as other users, who cannot enter `$HERD_HOME` (0700), so
//! its sockets are in `/run/herd/notify-<hash of the home>/` (0711: others may pass, not
//! list); a daemon of another user runs every app as itself and uses `$HERD_HOME/run/notify/`
//! (0700). A slot's path depends only on the home, the app and the index, so an instance
//! adopted after a daemon restart keeps working: its socket is bound again at the same path.

mod listener;
pub mod message;
mod sender;

use super::limits;
use super::spec::AppSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How an instance says it is ready (`ready = "notify"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    Notify,
}

impl AppSpec {
    /// The app speaks sd_notify: it gets a `NOTIFY_SOCKET` and is ready when it says so.
    pub fn notifies(&self) -> bool {
        self.ready == Some(Readiness::Notify)
    }

    /// The watchdog period, if the app has one.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog_s
            .map(|s| limits::clamp(Duration::from_secs(s)))
    }
}

/// The checks of `ready` and `watchdog_s` (called by `AppSpec::validate`).
pub fn validate(spec: &AppSpec) -> Result<(), (&'static str, String)> {
    let Some(w) = spec.watchdog_s else {
        return Ok(());
    };
    if !spec.notifies() {
        return Err((
            "watchdog_s",
            "needs ready = \"notify\": the app's WATCHDOG=1 pings arrive on its notify socket"
                .into(),
        ));
    }
    if w == 0 {
        return Err(("watchdog_s", "must be at least 1".into()));
    }
    limits::check_secs(w).map_err(|why| ("watchdog_s", why))
}

/// The variables an instance of a notifying app starts with: `NOTIFY_SOCKET`, and with a
/// watchdog `WATCHDOG_USEC` (`WATCHDOG_PID` is set by the spawner, which knows the pid).
pub fn env(spec: &AppSpec, socket: &Path) -> Vec<(&'static str, String)> {
    let mut env = vec![("NOTIFY_SOCKET", socket.to_string_lossy().into_owned())];
    if let Some(w) = spec.watchdog() {
        env.push(("WATCHDOG_USEC", w.as_micros().to_string()));
    }
    env
}

/// The longest socket path `sun_path` holds (108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The notify sockets of one daemon: one per instance slot, each with its listener task.
pub struct Sockets {
    dir: PathBuf,
    /// The daemon's own uid (the owner of the directory).
    euid: u32,
    open: Mutex<HashMap<(String, u32), Open>>,
}

struct Open {
    path: PathBuf,
    uid: u32,
    task: tokio::task::JoinHandle<()>,
}

impl Sockets {
    pub fn new(home: &Path, euid: u32) -> Self {
        let dir = if euid == 0 {
            let digest = Sha256::digest(home.as_os_str().as_encoded_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            PathBuf::from("/run/herd").join(format!("notify-{hex}"))
        } else {
            home.join("run").join("notify")
        };
        Self {
            dir,
            euid,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Where slot `index` of `app` has its socket.
    pub fn path(&self, app: &str, index: u32) -> PathBuf {
        let plain = self.dir.join(format!("{app}.{index}"));
        if plain.as_os_str().len() <= MAX_SOCKET_PATH {
            return plain;
        }
        // A long home or app name: a short name that is still one per slot.
        let digest = Sha256::digest(format!("{app}.{index}").as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(hex)
    }

    /// Makes the socket directory: owned by the daemon's user, writable by nobody else.
    fn ensure_dir(&self) -> io::Result<()> {
        let chain: Vec<(&Path, u32)> = if self.euid == 0 {
            let parent = self.dir.parent().unwrap_or(Path::new("/run"));
            vec![(parent, 0o755), (&self.dir, 0o711)]
        } else {
            let parent = self.dir.parent().unwrap_or(&self.dir);
            vec![(parent, 0o700), (&self.dir, 0o700)]
        };
        for (dir, mode) in chain {
            match std::fs::DirBuilder::new().mode(mode).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let meta = std::fs::symlink_metadata(dir)?;
            if !meta.is_dir() || meta.uid() != self.euid || meta.mode() & 0o022 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is not a directory that only uid {} can write; remove it and start again",
                        dir.display(),
                        self.euid
                    ),
                ));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// The path of slot `index` of `app`'s socket, connectable by `uid` only. Bound (and
    /// handed to `listen`, whose task is kept) unless it is bound already for that uid with a
    /// live listener. One lock over the whole, so two callers never bind one slot twice.
    fn ensure(
        &self,
        app: &str,
        index: u32,
        uid: u32,
        listen: impl FnOnce(std::os::unix::net::UnixDatagram) -> io::Result<tokio::task::JoinHandle<()>>,
    ) -> io::Result<PathBuf> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let key = (app.to_string(), index);
        if let Some(o) = open.get(&key)
            && o.uid == uid
            && !o.task.is_finished()
        {
            return Ok(o.path.clone());
        }
        self.ensure_dir()?;
        let path = self.path(app, index);
        // What is there is ours (nobody else can write the directory): a socket of an earlier
        // daemon or spawn.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let sock = std::os::unix::net::UnixDatagram::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if uid != self.euid {
            std::os::unix::fs::lchown(&path, Some(uid), None)?;
        }
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)
            .map_err(io::Error::from)?;
        sock.set_nonblocking(true)?;
        let task = listen(sock)?;
        let fresh = Open {
            path: path.clone(),
            uid,
            task,
        };
        if let Some(old) = open.insert(key, fresh) {
            old.task.abort();
        }
        Ok(path)
    }

    /// At a clean `down`: every socket goes, then the directory (each root daemon's home has
    /// one under `/run/herd`, which would otherwise be left behind for good).
    pub fn release(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for (_, o) in open.drain() {
            o.task.abort();
            let _ = std::fs::remove_file(&o.path);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// Removes slot `index` of `app`'s socket if `still_unwanted` (asked while the slot map is
    /// held, so a spawn that wants the socket again cannot slip in between).
    fn close_if(&self, app: &str, index: u32, still_unwanted: impl FnOnce() -> bool) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !still_unwanted() {
            return false;
        }
        if let Some(o) = open.remove(&(app.to_string(), index)) {
            let _ = std::fs::remove_file(&o.path);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(keys: &str) -> Result<Vec<AppSpec>, String> {
        let text = format!("[[app]]\nname = \"a\"\ncommand = \"x\"\n{keys}");
        crate::supervisor::spec::parse_app_file("apps.toml", &text, Path::new("/srv"))
            .map_err(|e| e.0)
    }

    #[test]
    fn ready_and_watchdog_parse_and_a_watchdog_needs_notify() {
        let a = &parse("ready = \"notify\"\nwatchdog_s = 30\n").unwrap()[0];
        assert!(a.notifies());
        assert_eq!(a.watchdog(), Some(Duration::from_secs(30)));
        let env = env(a, Path::new("/run/herd/notify-x/a.0"));
        assert_eq!(
            env,
            [
                ("NOTIFY_SOCKET", "/run/herd/notify-x/a.0".to_string()),
                ("WATCHDOG_USEC", "30000000".to_string())
            ]
        );
        let err = parse("watchdog_s = 30\n").unwrap_err();
        assert!(
            err.contains("app `a`: key `watchdog_s`: needs ready = \"notify\""),
            "{err}"
        );
        let err = parse("ready = \"notify\"\nwatchdog_s = 0\n").unwrap_err();
        assert!(
            err.contains("key `watchdog_s`: must be at least 1"),
            "{err}"
        );
        let err = parse("ready = \"probe\"\n").unwrap_err();
        assert!(err.contains("unknown variant `probe`"), "{err}");
    }

    #[test]
    fn a_slot_has_one_path_that_fits_a_socket_address() {
        let home = Path::new("/var/lib/herd");
        let root = Sockets::new(home, 0);
        assert!(root.path("web", 3).starts_with("/run/herd/"));
        assert_eq!(root.path("web", 3), Sockets::new(home, 0).path("web", 3));
        assert_ne!(root.path("web", 3), root.path("web", 4));
        let user = Sockets::new(home, 1000);
        assert_eq!(
            user.path("web", 3),
            Path::new("/var/lib/herd/run/notify/web.3")
        );
        let long = "a".repeat(64);
        let p = Sockets::new(&PathBuf::from("/h").join("b".repeat(60)), 1000).path(&long, 9);
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH, "{}", p.display());
        assert_ne!(
            p,
            Sockets::new(&PathBuf::from("/h").join("b".repeat(60)), 1000).path(&long, 8)
        );
    }
}
