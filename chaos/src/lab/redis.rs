//! The lab's discovery Redis: a real `redis-server` on the bridge address (root namespace),
//! with a password (protected mode refuses other hosts otherwise), no persistence, and
//! PR_SET_PDEATHSIG so it dies with the suite even if the suite is SIGKILLed.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::bail;

use super::interrupt;

pub struct Redis {
    pub ip: String,
    pub port: u16,
    password: String,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Redis {
    /// Picks a free port on `ip`; call [`Redis::start`] to run it.
    pub fn new(ip: &str, dir: PathBuf, password: &str) -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind((ip, 0))
            .with_context(|| format!("cannot bind a port on the lab bridge {ip}"))?
            .local_addr()?
            .port();
        Ok(Redis {
            ip: ip.to_string(),
            port,
            password: password.to_string(),
            dir,
            child: Mutex::new(None),
        })
    }

    /// The discovery URL the nodes use.
    pub fn url(&self) -> String {
        format!("redis://:{}@{}:{}/0", self.password, self.ip, self.port)
    }

    /// Starts redis-server and waits until it accepts connections.
    ///
    /// PR_SET_PDEATHSIG fires when the *thread* that forked exits, so call this from the
    /// thread that lives for the whole run (the main thread).
    pub fn start(&self) -> anyhow::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", &self.ip, "--port", &self.port.to_string()])
            .args(["--requirepass", &self.password])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .context("cannot start redis-server; install it: apt-get install -y redis-server")?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((self.ip.as_str(), self.port)).is_err() {
            interrupt::check()?;
            if Instant::now() > deadline {
                bail!(
                    "redis-server on {}:{} did not accept connections within 10 s",
                    self.ip,
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILLs it (a crash, not a shutdown). Returns whether it was running.
    pub fn kill(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match guard.take() {
            Some(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
                true
            }
            None => false,
        }
    }

    pub fn running(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
