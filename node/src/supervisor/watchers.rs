//! The tasks that feed an instance's machine: the watcher of a process's exit (our child, or
//! one adopted from a previous daemon), the backoff timer, and the wait for dependencies.
//! Each carries the spawn_id it was started for, so nothing meant for an older process
//! touches a newer one.

use super::instance::ExitRecord;
use super::machine::Input;
use super::{Supervisor, process};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

impl Supervisor {
    /// `DependenciesReady` once every dependency of the app is ready (nothing if the
    /// instance moved on or the supervisor closes first).
    pub(super) fn wait_for_dependencies(&self, name: String, index: u32, spawn_id: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut still_current = true;
            me.wait_until(|t| {
                let Some(app) = t.apps.get(&name) else {
                    still_current = false;
                    return true;
                };
                let current = app
                    .position(index)
                    .is_some_and(|p| app.instances[p].spawn_id == spawn_id);
                if !current || t.closing {
                    still_current = false;
                    return true;
                }
                app.spec
                    .depends_on
                    .iter()
                    .all(|d| t.apps.get(d).is_some_and(|a| a.is_ready()))
            })
            .await;
            if still_current {
                me.dispatch(&name, index, spawn_id, Input::DependenciesReady);
            }
        });
    }

    /// Watches a spawned process for its exit.
    pub(super) fn watch_exit(
        &self,
        name: String,
        index: u32,
        spawn_id: u64,
        pid: Option<u32>,
        exit: Pin<Box<dyn Future<Output = ExitRecord> + Send>>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let exit = exit.await;
            me.on_exit(&name, index, spawn_id, pid, exit);
        });
    }

    /// Watches a process adopted from a previous daemon (not our child: no exit status).
    pub(super) fn watch_adopted(&self, name: String, index: u32, spawn_id: u64, pid: u32) {
        self.shared.os.adopted(pid);
        let me = self.clone();
        tokio::spawn(async move {
            let reason = match process::wait_foreign(pid).await {
                Ok(()) => "exited (adopted process: exit status unknown)".to_string(),
                Err(e) => format!("exited (adopted process, could not watch it: {e})"),
            };
            let exit = ExitRecord {
                at_ms: me.shared.os.now_ms(),
                code: None,
                signal: None,
                reason,
            };
            me.on_exit(&name, index, spawn_id, Some(pid), exit);
        });
    }

    /// The process `pid` of `spawn_id` ended: whether the rest of its group lives is
    /// looked at here, before the machine is asked, so no lock is held for it.
    pub(super) fn on_exit(
        &self,
        name: &str,
        index: u32,
        spawn_id: u64,
        pid: Option<u32>,
        exit: ExitRecord,
    ) {
        let group_alive = pid.is_some_and(|p| self.shared.os.group_alive(p));
        let exited = Input::Exited {
            pid,
            exit,
            group_alive,
        };
        self.dispatch(name, index, spawn_id, exited);
    }

    /// `BackoffElapsed` after `delay`.
    pub(super) fn schedule_start(&self, name: String, index: u32, spawn_id: u64, delay: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            me.dispatch(&name, index, spawn_id, Input::BackoffElapsed);
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::supervisor::instance::Status;
    use crate::supervisor::spec::AppSpec;
    use crate::supervisor::testing::{FakeOs, instance, settle, supervisor};
    use crate::supervisor::{App, Origin};

    #[tokio::test(start_paused = true)]
    async fn an_instance_waits_for_its_dependencies_then_starts() {
        let os = FakeOs::new(true);
        let sup = supervisor(os.clone());
        let mut spec = AppSpec::quick("api", "sleep", vec!["60".into()]);
        spec.depends_on = vec!["web".into()];
        sup.lock()
            .apps
            .insert("api".into(), App::new(spec, Origin::Local));
        sup.start("api", false).unwrap();
        settle().await;
        let api = |sup: &crate::supervisor::Supervisor| {
            sup.list(Some("api")).unwrap()[0].instances[0].clone()
        };
        assert_eq!((api(&sup).status, api(&sup).pid), (Status::Starting, None));
        assert_eq!(os.with(|s| s.spawns), 0, "nothing runs before `web` does");
        sup.start("web", false).unwrap();
        settle().await;
        assert_eq!(instance(&sup).pid, Some(100));
        assert_eq!(
            (api(&sup).status, api(&sup).pid),
            (Status::Running, Some(101))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_for_an_older_spawn_starts_nothing() {
        let os = FakeOs::new(true);
        let sup = supervisor(os.clone());
        sup.start("web", false).unwrap();
        let spawn_id = instance(&sup).spawn_id;
        sup.schedule_start("web".into(), 0, spawn_id, std::time::Duration::ZERO);
        settle().await;
        // Running, not in backoff: `BackoffElapsed` changes nothing.
        assert_eq!(os.with(|s| s.spawns), 1);
        sup.schedule_start("web".into(), 0, spawn_id + 1000, std::time::Duration::ZERO);
        settle().await;
        assert_eq!(os.with(|s| s.spawns), 1);
    }
}
