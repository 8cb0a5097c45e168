//! Starting, stopping and killing the daemon from the CLI.

use super::client::{self, Target, status_error};
use super::output::{duration_text, print_json};
use super::progress::Progress;
use crate::home::Home;
use crate::state::pidlock::{self, read_owner};
use anyhow::{Context, bail};
use herd_proto::supervisor as pb;
use serde_json::json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `herd up` waits for a new daemon to answer.
const UP_DEADLINE: Duration = Duration::from_secs(15);

/// `herd up`: launches `herd up --foreground --detached` in its own session and returns once
/// it answers on the socket. Errors the daemon prints before it is ready (the pid lock is
/// taken, the state is unreadable) come back through its stderr pipe.
pub fn up(home: &Home, json: bool, config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    home.ensure()
        .with_context(|| format!("cannot use herd home {}", home.root().display()))?;
    if pidlock::is_locked(&home.pid_file()) {
        let owner = pidlock::describe_owner(pidlock::wait_for_live_owner(&home.pid_file()));
        bail!(
            "herd is already running ({owner}) with home {}; `herd down` stops it",
            home.root().display()
        );
    }
    let exe = std::env::current_exe().context("cannot find the herd binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["up", "--foreground", "--detached"]);
    if let Some(config) = config {
        let config = std::path::absolute(&config)
            .with_context(|| format!("cannot resolve {}", config.display()))?;
        cmd.arg("--config").arg(config);
    }
    // A detached daemon is not the main process of whatever unit ran `herd up`: it must
    // not speak sd_notify for it (the unit that uses notify runs `herd up --foreground`).
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        cmd.env_remove(var);
    }
    cmd.env("HERD_HOME", home.root())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Own session: no terminal hang-up or Ctrl-C of this shell reaches the daemon.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("cannot launch the daemon")?;
    let mut early = String::new();
    if let Some(mut err) = child.stderr.take() {
        // EOF: the daemon either exited or pointed its stderr at daemon.log (ready).
        let _ = err.read_to_string(&mut early);
    }
    // EOF without the ready line: the daemon failed at start and is exiting.
    if !early.lines().any(|l| l == crate::daemon::READY_LINE) {
        let status = child.wait()?;
        let msg = early.trim();
        let msg = msg.strip_prefix("herd: ").unwrap_or(msg);
        bail!(
            "{}",
            if msg.is_empty() {
                format!("the daemon exited at start ({status})")
            } else {
                msg.to_string()
            }
        );
    }
    let early: String = early
        .lines()
        .filter(|l| *l != crate::daemon::READY_LINE)
        .map(|l| format!("{l}\n"))
        .collect();
    let pid = child.id();
    let deadline = Instant::now() + UP_DEADLINE;
    let rt = current_thread()?;
    loop {
        if let Ok(mut c) = rt.block_on(client::connect(&Target::local(home)))
            && let Ok(r) = rt.block_on(c.ping(pb::PingRequest {}))
        {
            let r = r.into_inner();
            if json {
                print_json(&json!({ "pid": r.pid, "version": r.version, "home": r.home }));
            } else {
                outln!("herd daemon up (pid {}), home {}", r.pid, r.home);
            }
            for line in early.lines().filter(|l| !l.trim().is_empty()) {
                eprintln!("{line}");
            }
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the daemon exited before answering ({status}); see {}",
                home.daemon_log().display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon (pid {pid}) did not answer within {}s; see {}",
                UP_DEADLINE.as_secs(),
                home.daemon_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `herd down`: graceful stop; returns once the daemon process is gone.
pub async fn down(
    home: &Home,
    target: &Target,
    timeout: Option<u64>,
    keep_apps: bool,
    json: bool,
) -> anyhow::Result<()> {
    // A remote daemon's process cannot be watched from here: its reply is the answer.
    let owner = (!target.is_remote())
        .then(|| read_owner(&home.pid_file()))
        .flatten();
    let mut c = match client::connect(target).await {
        Ok(c) => c,
        Err(e) if e.is::<client::NotRunning>() => {
            if json {
                print_json(&json!({ "down": true, "was_running": false }));
            } else {
                outln!("herd is not running");
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    // The daemon answers once every app has stopped (or been left running).
    let progress = Progress::spinner(
        json,
        if keep_apps {
            "stopping the daemon (apps keep running)"
        } else {
            "stopping every app and the daemon"
        },
    );
    let r = c
        .shutdown(pb::ShutdownRequest {
            keep_apps,
            timeout_s: timeout,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    // The reply comes before the daemon has flushed and exited; wait for the process itself.
    if let Some(owner) = owner {
        let deadline = Instant::now() + Duration::from_secs(30);
        while owner.is_alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if owner.is_alive() {
            bail!(
                "the daemon (pid {}) has not exited 30 s after stopping its apps; `herd kill` forces it",
                owner.pid
            );
        }
    }
    drop(progress);
    if json {
        print_json(&json!({
            "down": true,
            "was_running": true,
            "stopped": r.stopped,
            "left_running": r.left_running,
        }));
    } else if keep_apps {
        outln!(
            "herd daemon down; {} instances left running (the next `herd up` adopts them)",
            r.left_running
        );
    } else {
        outln!("herd daemon down; {} instances stopped", r.stopped);
    }
    Ok(())
}

/// `herd kill`: SIGKILL the daemon named in the pid file — only if that pid is still the
/// same process (start signature) and is this home's daemon: the pid file is locked and that
/// process holds it open (the daemon keeps its `flock` on it for its life; nothing else
/// does). Anything else is left alone. Clears the daemon's files; apps are left running.
pub fn kill(home: &Home, json: bool) -> anyhow::Result<()> {
    let pid_file = home.pid_file();
    // What happened, for `--json`: the pid killed (if any) and whether stale files were cleared.
    let done = |killed: Option<u32>, cleared: bool, text: String| {
        if json {
            print_json(&json!({ "killed": killed, "cleared_stale_files": cleared }));
        } else {
            outln!("{text}");
        }
    };
    match read_owner(&pid_file) {
        Some(owner) if owner.is_alive() && !pidlock::is_locked(&pid_file) => {
            // No daemon holds the lock, so none runs here: the pid is someone else's now.
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(home.socket());
            done(
                None,
                true,
                format!(
                    "no daemon running (pid {} in {} is not a herd daemon of this home: the file is not locked); cleared the stale files and left pid {} alone",
                    owner.pid,
                    pid_file.display(),
                    owner.pid
                ),
            );
        }
        Some(owner) if owner.is_alive() && !holds_open(owner.pid, &pid_file) => {
            bail!(
                "pid {} in {} is not this home's herd daemon (it does not hold that file open); left it alone. If a daemon of this home hangs, find it with `fuser {}`",
                owner.pid,
                pid_file.display(),
                pid_file.display()
            );
        }
        Some(owner) if owner.is_alive() => {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(owner.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .with_context(|| format!("cannot kill the daemon (pid {})", owner.pid))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while owner.is_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(home.socket());
            done(
                Some(owner.pid),
                true,
                format!(
                    "killed herd daemon (pid {}); its apps keep running and the next `herd up` adopts them",
                    owner.pid
                ),
            );
        }
        Some(owner) => {
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(home.socket());
            done(
                None,
                true,
                format!(
                    "no daemon running (pid {} in {} is gone); cleared the stale files",
                    owner.pid,
                    pid_file.display()
                ),
            );
        }
        None => done(None, false, "no daemon running".into()),
    }
    Ok(())
}

/// Whether process `pid` has `path` (that very inode) open.
fn holds_open(pid: u32, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(want) = std::fs::metadata(path) else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        // metadata() follows the fd's magic link to the open file itself.
        std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == (want.dev(), want.ino()))
    })
}

pub async fn ping(target: &Target, json: bool) -> anyhow::Result<()> {
    let mut c = client::connect(target).await?;
    let r = c
        .ping(pb::PingRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        print_json(
            &json!({ "pid": r.pid, "version": r.version, "uptime_s": r.uptime_s, "home": r.home }),
        );
    } else {
        outln!(
            "herd {} pid {} up {} home {}",
            r.version,
            r.pid,
            duration_text(r.uptime_s),
            r.home
        );
    }
    Ok(())
}
