//! The runtime against a fake OS under tokio's paused clock: no process is started, and every
//! spawn and signal checks that the table lock is not held.

use super::*;
use crate::supervisor::events::EventLog;
use crate::supervisor::instance::ExitRecord;
use crate::supervisor::marker::Marker;
use crate::supervisor::process::Os;
use crate::supervisor::{App, Origin, table_held};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::time::Instant;

type Hook = Box<dyn FnMut() + Send>;

#[derive(Default)]
struct FakeOs {
    state: Mutex<FakeState>,
    /// Set when a spawn or a signal came while this thread held the table lock.
    under_lock: AtomicBool,
}

#[derive(Default)]
struct FakeState {
    next_pid: u32,
    /// Leaders that run, with the way to end them.
    live: HashMap<u32, oneshot::Sender<ExitRecord>>,
    /// Groups whose members ignore every signal.
    immortal: HashSet<u32>,
    signals: Vec<(u32, Signal)>,
    spawns: u32,
    /// SIGTERM ends a process (otherwise only SIGKILL does).
    obeys_term: bool,
    fail_spawn: bool,
    /// Runs inside the next spawn, as if something happened meanwhile.
    during_spawn: Option<Hook>,
}

impl FakeOs {
    fn new(obeys_term: bool) -> Arc<Self> {
        let os = Self::default();
        os.with(|s| {
            s.next_pid = 100;
            s.obeys_term = obeys_term;
        });
        Arc::new(os)
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn check_unlocked(&self) {
        if table_held() {
            self.under_lock.store(true, Ordering::SeqCst);
        }
    }

    /// The leader `pid` exits with `code`.
    fn exit(&self, pid: u32, code: i32) {
        if let Some(tx) = self.with(|s| s.live.remove(&pid)) {
            let _ = tx.send(ExitRecord {
                at_ms: 0,
                code: Some(code),
                signal: None,
                reason: "exited".into(),
            });
        }
    }

    fn signals(&self) -> Vec<(u32, Signal)> {
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

    fn now_ms(&self) -> u64 {
        // The paused clock, so backoff and crash windows follow `tokio::time::advance`.
        thread_local!(static BASE: Instant = Instant::now());
        let elapsed = BASE.with(|b| b.elapsed());
        1_000_000 + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A supervisor on `os` with one app `web` (one instance of `sleep 60`, always restarted).
fn supervisor(os: Arc<FakeOs>) -> Supervisor {
    let (events, _writer) = EventLog::new("/dev/null".into(), u64::MAX, 1);
    let sup = Supervisor::with_os("/tmp".into(), "/tmp".into(), events, Marker::random(), os);
    let mut spec = AppSpec::quick("web", "sleep", vec!["60".into()]);
    spec.restart = crate::supervisor::backoff::RestartPolicy::Always;
    sup.lock()
        .apps
        .insert("web".into(), App::new(spec, Origin::Local));
    sup
}

fn instance(sup: &Supervisor) -> Instance {
    sup.list(Some("web")).unwrap()[0].instances[0].clone()
}

/// Lets every ready task run (the clock does not move).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn names(rx: &mut tokio::sync::broadcast::Receiver<super::super::events::Event>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e.event);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_start_spawns_and_an_exit_restarts_after_the_backoff() {
    let os = FakeOs::new(true);
    let sup = supervisor(os.clone());
    let mut events = sup.events().subscribe();
    sup.start("web", false).unwrap();
    let i = instance(&sup);
    assert_eq!(
        (i.status, i.pid, i.signature),
        (Status::Running, Some(100), Some(1100))
    );

    os.exit(100, 1);
    settle().await;
    assert_eq!(instance(&sup).status, Status::Backoff);
    tokio::time::advance(Duration::from_millis(990)).await;
    settle().await;
    assert_eq!(instance(&sup).status, Status::Backoff, "1 s backoff");
    tokio::time::advance(Duration::from_millis(20)).await;
    settle().await;
    let i = instance(&sup);
    assert_eq!(
        (i.status, i.pid, i.restarts),
        (Status::Running, Some(101), 1)
    );
    assert_eq!(
        names(&mut events),
        ["started", "exited", "restarting", "started"]
    );
    // The exit's leftovers got SIGKILL; nothing ran under the lock.
    assert_eq!(os.signals(), [(100, Signal::SIGKILL)]);
    assert!(!os.under_lock.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_stop_signals_the_group_and_kills_it_at_the_deadline() {
    let os = FakeOs::new(false);
    let sup = supervisor(os.clone());
    sup.start("web", false).unwrap();
    let mut events = sup.events().subscribe();
    let started = Instant::now();
    sup.stop("web", Some(Duration::from_secs(5))).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_millis(5100),
        "{took:?}"
    );
    assert_eq!(
        os.signals(),
        [(100, Signal::SIGTERM), (100, Signal::SIGKILL)]
    );
    let i = instance(&sup);
    assert_eq!((i.status, i.pid), (Status::Stopped, None));
    assert_eq!(i.last_exit().unwrap().reason, "stopped");
    assert_eq!(
        names(&mut events),
        ["stopping", "killed", "exited", "stopped"]
    );
    assert!(!os.under_lock.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_group_that_outlives_sigkill_is_given_up_on() {
    let os = FakeOs::new(false);
    let sup = supervisor(os.clone());
    sup.start("web", false).unwrap();
    os.with(|s| s.immortal.insert(100));
    let started = Instant::now();
    sup.stop("web", Some(Duration::from_secs(1))).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(11) && took < Duration::from_millis(11_100),
        "{took:?}"
    );
    let i = instance(&sup);
    assert_eq!((i.status, i.pid), (Status::Stopped, None));
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_arrives_during_the_spawn_stops_the_new_process() {
    let os = FakeOs::new(true);
    let sup = supervisor(os.clone());
    let mut events = sup.events().subscribe();
    let me = sup.clone();
    os.with(|s| {
        s.during_spawn = Some(Box::new(move || {
            me.transact(|t, b| {
                let stop = Input::StopRequested { timeout: None };
                b.apply(t, "web", 0, None, stop)
            });
        }))
    });
    sup.start("web", false).unwrap();
    assert_eq!(instance(&sup).status, Status::Stopping);
    settle().await;
    tokio::time::advance(Duration::from_millis(10)).await;
    settle().await;
    let i = instance(&sup);
    assert_eq!((i.status, i.pid), (Status::Stopped, None));
    assert_eq!(os.signals(), [(100, Signal::SIGTERM)]);
    assert_eq!(
        names(&mut events),
        ["stopping", "started", "exited", "stopped"]
    );
    assert!(!os.under_lock.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_process_spawned_for_a_deleted_instance_is_killed() {
    let os = FakeOs::new(true);
    let sup = supervisor(os.clone());
    let me = sup.clone();
    os.with(|s| {
        s.during_spawn = Some(Box::new(move || {
            me.lock().apps.remove("web");
        }))
    });
    sup.start("web", false).unwrap_err();
    settle().await;
    assert_eq!(os.signals(), [(100, Signal::SIGKILL)]);
    assert!(os.with(|s| s.live.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn a_failed_spawn_is_an_exit_for_the_restart_policy() {
    let os = FakeOs::new(true);
    os.with(|s| s.fail_spawn = true);
    let sup = supervisor(os.clone());
    let mut events = sup.events().subscribe();
    sup.start("web", false).unwrap();
    let i = instance(&sup);
    assert_eq!((i.status, i.pid), (Status::Backoff, None));
    assert!(i.last_exit().unwrap().reason.contains("cannot run `sleep`"));
    assert_eq!(names(&mut events), ["spawn_failed", "restarting"]);
    settle().await;
    tokio::time::advance(Duration::from_millis(1010)).await;
    settle().await;
    assert_eq!(os.with(|s| s.spawns), 2, "tried again after the backoff");
}

#[tokio::test(start_paused = true)]
async fn an_exit_from_an_older_generation_changes_nothing() {
    let os = FakeOs::new(true);
    let sup = supervisor(os.clone());
    sup.start("web", false).unwrap();
    let before = instance(&sup);
    let exit = ExitRecord {
        at_ms: 0,
        code: Some(1),
        signal: None,
        reason: "exited".into(),
    };
    sup.on_exit("web", 0, before.generation + 1000, Some(100), exit);
    let after = instance(&sup);
    assert_eq!((after.status, after.pid), (Status::Running, Some(100)));
}

#[test]
fn the_lock_check_sees_the_lock_held_and_released() {
    let sup = supervisor(FakeOs::new(true));
    assert!(!table_held());
    {
        let _t = sup.lock();
        assert!(table_held());
    }
    assert!(!table_held());
}
