//! A fake OS for the supervisor's tests: no process is started, exits and signals are
//! simulated, and every spawn and signal notes whether the table lock was held.

use super::events::{Event, EventLog};
use super::instance::{ExitRecord, Instance};
use super::marker::Marker;
use super::process::{Os, SpawnRequest, Spawned};
use super::spec::AppSpec;
use super::{App, Origin, Supervisor, table_held};
use nix::sys::signal::Signal;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::time::Instant;

pub(super) type Hook = Box<dyn FnMut() + Send>;

#[derive(Default)]
pub(super) struct FakeOs {
    state: Mutex<FakeState>,
    /// Set when a spawn or a signal came while this thread held the table lock.
    pub under_lock: AtomicBool,
}

#[derive(Default)]
pub(super) struct FakeState {
    pub next_pid: u32,
    /// Leaders that run, with the way to end them.
    pub live: HashMap<u32, oneshot::Sender<ExitRecord>>,
    /// Groups whose members ignore every signal.
    pub immortal: HashSet<u32>,
    pub signals: Vec<(u32, Signal)>,
    pub spawns: u32,
    /// SIGTERM ends a process (otherwise only SIGKILL does).
    pub obeys_term: bool,
    pub fail_spawn: bool,
    /// Runs inside the next spawn, as if something happened meanwhile.
    pub during_spawn: Option<Hook>,
}

impl FakeOs {
    pub fn new(obeys_term: bool) -> Arc<Self> {
        let os = Self::default();
        os.with(|s| {
            s.next_pid = 100;
            s.obeys_term = obeys_term;
        });
        Arc::new(os)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn check_unlocked(&self) {
        if table_held() {
            self.under_lock.store(true, Ordering::SeqCst);
        }
    }

    /// The leader `pid` exits with `code`.
    pub fn exit(&self, pid: u32, code: i32) {
        if let Some(tx) = self.with(|s| s.live.remove(&pid)) {
            let _ = tx.send(ExitRecord {
                at_ms: 0,
                code: Some(code),
                signal: None,
                reason: "exited".into(),
            });
        }
    }

    pub fn signals(&self) -> Vec<(u32, Signal)> {
        self.with(|s| s.signals.clone())
    }
}

impl Os for FakeOs {
    fn spawn(&self, _req: &SpawnRequest<'_>) -> std::io::Result<Spawned> {
        self.check_unlocked();
        let hook = self.with(|s| s.during_spawn.take());
        if let Some(mut hook) = hook {
            hook();
        }
        self.with(|s| {
            s.spawns += 1;
            if s.fail_spawn {
                return Err(std::io::Error::other("no such file or directory"));
            }
            let pid = s.next_pid;
            s.next_pid += 1;
            let (tx, rx) = oneshot::channel();
            s.live.insert(pid, tx);
            let exit = Box::pin(async move {
                rx.await.unwrap_or(ExitRecord {
                    at_ms: 0,
                    code: None,
                    signal: None,
                    reason: "lost".into(),
                })
            });
            Ok(Spawned {
                pid: Some(pid),
                exit,
            })
        })
    }

    fn signal_group(&self, pgid: u32, sig: Signal) -> std::io::Result<()> {
        self.check_unlocked();
        let tx = self.with(|s| {
            s.signals.push((pgid, sig));
            let ends = !s.immortal.contains(&pgid)
                && (sig == Signal::SIGKILL || (sig == Signal::SIGTERM && s.obeys_term));
            if ends { s.live.remove(&pgid) } else { None }
        });
        if let Some(tx) = tx {
            let _ = tx.send(ExitRecord {
                at_ms: 0,
                code: None,
                signal: Some(sig.as_str().into()),
                reason: "exited".into(),
            });
        }
        Ok(())
    }

    fn group_alive(&self, pgid: u32) -> bool {
        self.with(|s| s.live.contains_key(&pgid) || s.immortal.contains(&pgid))
    }

    fn start_signature(&self, pid: u32) -> Option<u64> {
        Some(u64::from(pid) + 1000)
    }

    fn is_same_process(&self, pid: u32, signature: u64) -> bool {
        self.with(|s| s.live.contains_key(&pid)) && signature == u64::from(pid) + 1000
    }

    fn now_ms(&self) -> u64 {
        // The paused clock, so backoff and crash windows follow `tokio::time::advance`.
        thread_local!(static BASE: Instant = crate::supervisor::clock::monotonic());
        let elapsed = BASE.with(|b| b.elapsed());
        1_000_000 + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    fn boot_ms(&self) -> u64 {
        // The same paused clock: the fake host's wall clock never steps.
        self.now_ms()
    }
}

/// A supervisor on the real OS with no apps, its events going nowhere.
pub(super) fn on_real_os() -> Supervisor {
    let (events, _writer) = EventLog::new("/dev/null".into(), u64::MAX, 1);
    Supervisor::new("/tmp".into(), "/tmp".into(), events, Marker::random())
}

/// A supervisor on `os` with one app `web` (one instance of `sleep 60`, always restarted).
pub(super) fn supervisor(os: Arc<FakeOs>) -> Supervisor {
    let (events, _writer) = EventLog::new("/dev/null".into(), u64::MAX, 1);
    let sup = Supervisor::with_os("/tmp".into(), "/tmp".into(), events, Marker::random(), os);
    let mut spec = AppSpec::quick("web", "sleep", vec!["60".into()]);
    spec.restart = crate::supervisor::backoff::RestartPolicy::Always;
    sup.lock()
        .apps
        .insert("web".into(), App::new(spec, Origin::Local));
    sup
}

pub(super) fn instance(sup: &Supervisor) -> Instance {
    sup.list(Some("web")).unwrap()[0].instances[0].clone()
}

/// Lets every ready task run (the clock does not move).
pub(super) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

pub(super) fn names(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e.event);
    }
    out
}
