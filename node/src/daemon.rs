//! The daemon's life: take the pid lock, load the state, adopt what still runs, serve the
//! local API on the Unix socket, keep the state file and the logs in shape, and on `down`
//! (or SIGTERM/SIGINT) stop the apps, flush the state and remove its files.

use crate::api::{Api, SupervisorServer};
use crate::home::Home;
use crate::state::pidlock::PidLock;
use crate::state::store::{Loaded, StateFile};
use crate::supervisor::{Snapshot, Supervisor, logs};
use anyhow::Context;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{error, info, warn};

/// How often the state is written even without a transition.
const STATE_FLUSH: Duration = Duration::from_secs(30);
/// How often the sizes of logs that are filling up are checked for rotation.
const LOG_CHECK_HOT: Duration = Duration::from_millis(100);
/// Every this many hot checks, every log is checked.
const LOG_CHECKS_PER_FULL: u32 = 10;

/// Runs the daemon until it is told to stop. `detached`: started by `herd up`, whose pipe
/// on stderr is replaced by `daemon.log` once the socket answers.
pub fn run(home: Home, detached: bool) -> anyhow::Result<()> {
    home.ensure()
        .with_context(|| format!("cannot create herd home {}", home.root().display()))?;
    let lock = PidLock::acquire(&home.pid_file())?;
    let state = StateFile::new(home.state_file());
    let snapshot = match state.load::<Snapshot>()? {
        Loaded::Fresh => None,
        Loaded::Primary(s) => Some(s),
        Loaded::Backup(s, why) => {
            eprintln!(
                "herd: {} is unreadable ({why}); starting from {}",
                state.path().display(),
                state.backup_path().display()
            );
            warn!(file = %state.path().display(), reason = %why, "state file unreadable; using the backup");
            Some(s)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("herd")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(home.clone(), state, snapshot, detached));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(home.socket());
    lock.release();
    result
}

async fn serve(
    home: Home,
    state: StateFile,
    snapshot: Option<Snapshot>,
    detached: bool,
) -> anyhow::Result<()> {
    let socket = home.socket();
    let _ = std::fs::remove_file(&socket);
    // The socket is the only gate: created 0600 (umask), inside a 0700 home.
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(&socket);
    nix::sys::stat::umask(old_umask);
    let listener = listener.with_context(|| format!("cannot listen on {}", socket.display()))?;

    let supervisor = Supervisor::new(home.logs_dir());
    if let Some(snapshot) = snapshot {
        supervisor.restore(snapshot);
    }
    let state = Arc::new(Mutex::new(state));
    let writer = tokio::spawn(write_state(supervisor.clone(), state.clone()));
    let rotator = tokio::spawn(rotate_logs(supervisor.clone()));

    let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<()>(1);
    let api = Api::new(
        supervisor.clone(),
        home.root().display().to_string(),
        shutdown_tx,
    );
    if detached {
        detach_stderr(&home)?;
    }
    info!(pid = std::process::id(), home = %home.root().display(), version = env!("CARGO_PKG_VERSION"), "herd daemon up");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let sup = supervisor.clone();
    let stop_signal = async move {
        tokio::select! {
            _ = shutdown_rx.recv() => {}
            _ = term.recv() => { info!("SIGTERM: stopping apps and exiting"); sup.shutdown(false, None).await; }
            _ = int.recv() => { info!("SIGINT: stopping apps and exiting"); sup.shutdown(false, None).await; }
        }
    };
    tonic::transport::Server::builder()
        .add_service(SupervisorServer::new(api))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop_signal)
        .await
        .context("the API server failed")?;

    writer.abort();
    rotator.abort();
    let snapshot = supervisor.snapshot();
    let flushed = tokio::task::spawn_blocking(move || {
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .save(&snapshot)
    })
    .await;
    match flushed {
        Ok(Ok(())) => info!("state flushed; herd daemon down"),
        Ok(Err(e)) => error!(error = %e, "final state flush failed"),
        Err(e) => error!(error = %e, "final state flush did not run"),
    }
    Ok(())
}

/// Writes the state after every transition (coalescing bursts: one write covers all the
/// transitions that happened while the previous one was on its way to disk) and every 30 s.
/// A failed write is logged and retried; nothing else stops.
async fn write_state(supervisor: Supervisor, file: Arc<Mutex<StateFile>>) {
    let mut changes = supervisor.subscribe();
    let mut failing = false;
    loop {
        let wait = if failing {
            Duration::from_secs(1)
        } else {
            STATE_FLUSH
        };
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
        changes.mark_unchanged();
        let snapshot = supervisor.snapshot();
        let file = file.clone();
        let result = tokio::task::spawn_blocking(move || {
            file.lock()
                .unwrap_or_else(|p| p.into_inner())
                .save(&snapshot)
        })
        .await;
        match result {
            Ok(Ok(())) => {
                if failing {
                    info!("state write recovered");
                }
                failing = false;
            }
            Ok(Err(e)) => {
                if !failing {
                    error!(error = %e, "cannot write the state file; retrying every second, apps keep running");
                }
                failing = true;
            }
            Err(e) => error!(error = %e, "state write task failed"),
        }
    }
}

/// Checks every log once a second, and the ones that are filling up ("hot": rotated
/// lately or past half their limit) every 100 ms, so a flooding app overshoots its cap by at
/// most what it writes in 100 ms.
async fn rotate_logs(supervisor: Supervisor) {
    let mut tick = tokio::time::interval(LOG_CHECK_HOT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hot: HashSet<PathBuf> = HashSet::new();
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        let all = n.is_multiple_of(LOG_CHECKS_PER_FULL);
        n = n.wrapping_add(1);
        if !all && hot.is_empty() {
            continue;
        }
        let mut targets = supervisor.log_targets();
        if !all {
            targets.retain(|(p, _, _)| hot.contains(p));
        }
        let checked: Vec<PathBuf> = targets.iter().map(|(p, _, _)| p.clone()).collect();
        let now_hot = tokio::task::spawn_blocking(move || {
            let mut now_hot = Vec::new();
            for (path, max, files) in targets {
                match logs::rotate_if_needed(&path, max, files) {
                    Ok(true) => {
                        info!(file = %path.display(), "log rotated");
                        now_hot.push(path);
                    }
                    Ok(false) => {
                        if std::fs::metadata(&path).is_ok_and(|m| m.len() > max / 2) {
                            now_hot.push(path);
                        }
                    }
                    Err(e) => warn!(file = %path.display(), error = %e, "log rotation failed"),
                }
            }
            now_hot
        })
        .await
        .unwrap_or_default();
        for p in checked {
            hot.remove(&p);
        }
        hot.extend(now_hot);
    }
}

/// Points stdout/stderr at `daemon.log`; this closes the pipe `herd up` is reading, which
/// tells it the daemon is ready.
fn detach_stderr(home: &Home) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    let log = logs::open_append(&home.daemon_log()).context("cannot open daemon.log")?;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    nix::unistd::dup2_stdout(log.as_fd()).context("cannot redirect stdout")?;
    nix::unistd::dup2_stderr(log.as_fd()).context("cannot redirect stderr")?;
    use std::io::Write;
    let _ = stdout.flush();
    let _ = stderr.flush();
    Ok(())
}
