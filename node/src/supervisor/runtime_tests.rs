//! The runtime against a fake OS under tokio's paused clock: no process is started, and every
//! spawn and signal checks that the table lock is not held.

use super::*;
use crate::supervisor::instance::ExitRecord;
use crate::supervisor::table_held;
use crate::supervisor::testing::{FakeOs, instance, names, settle, supervisor};
use std::sync::atomic::Ordering;

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
    let started = crate::supervisor::clock::monotonic();
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
    let started = crate::supervisor::clock::monotonic();
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
async fn an_exit_from_an_older_spawn_changes_nothing() {
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
    sup.on_exit("web", 0, before.spawn_id + 1000, Some(100), exit);
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

/// The real OS refuses (in debug builds, where every test runs) to fork or signal while the
/// table lock is held: the end-to-end tests run with this check armed.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "killpg under the table lock")]
fn the_real_os_will_not_signal_under_the_table_lock() {
    let sup = supervisor(FakeOs::new(true));
    let _t = sup.lock();
    use crate::supervisor::process::{Os, RealOs};
    let _ = RealOs::new().signal_group(0, Signal::SIGCONT);
}
