//! What users ask of the supervisor: register apps, start, stop, restart, delete, scale,
//! and shut the whole supervisor down (dependents first).

use super::deps::{self, Edges};
use super::facts::Fact;
use super::instance::{Instance, Status};
use super::limits::{MAX_APPS, MAX_HOST_INSTANCES};
use super::machine::Input;
use super::spec::{AppSpec, MAX_INSTANCES};
use super::{App, Desired, Origin, Result, Supervisor, SupervisorError, Table};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::info;

impl Table {
    pub(super) fn edges(&self) -> Edges {
        self.apps
            .iter()
            .map(|(n, a)| (n.clone(), a.spec.depends_on.clone()))
            .collect()
    }

    /// Refuses a change that would take the host past `MAX_APPS` apps or
    /// `MAX_HOST_INSTANCES` instances; `changes` are (app, instances) after the change.
    pub(super) fn check_host_limits<'a>(
        &'a self,
        changes: impl Iterator<Item = (&'a str, u32)>,
    ) -> Result<()> {
        let mut counts: BTreeMap<&str, u32> = self
            .apps
            .iter()
            .map(|(n, a)| (n.as_str(), a.spec.instances))
            .collect();
        counts.extend(changes);
        if counts.len() > MAX_APPS {
            return Err(SupervisorError::Invalid(format!(
                "this host would hold {} apps, more than the limit of {MAX_APPS}; `herd delete` apps you no longer need",
                counts.len()
            )));
        }
        let total: u64 = counts.values().map(|n| u64::from(*n)).sum();
        if total > MAX_HOST_INSTANCES {
            return Err(SupervisorError::Invalid(format!(
                "this host would run {total} instances, more than the limit of {MAX_HOST_INSTANCES}; scale other apps down first"
            )));
        }
        Ok(())
    }

    /// The dependencies of `name` that are not running (and healthy) yet.
    pub(super) fn unready_dependencies(&self, name: &str) -> Vec<String> {
        let Some(app) = self.apps.get(name) else {
            return Vec::new();
        };
        app.spec
            .depends_on
            .iter()
            .filter(|d| self.apps.get(*d).is_none_or(|a| !a.is_ready()))
            .cloned()
            .collect()
    }
}

impl Supervisor {
    /// Registers the apps of a file (replacing changed ones) and starts them, each once its
    /// dependencies run. Nothing changes when any app of the file is refused.
    pub async fn apply(&self, specs: Vec<AppSpec>) -> Result<Vec<App>> {
        self.apply_as(specs, Origin::Local).await
    }

    /// Starts one run of a job (`crate::jobs`): an app that runs once and is never
    /// restarted, nor started again after a daemon restart.
    pub async fn run_once(&self, spec: AppSpec) -> Result<App> {
        let mut apps = self.apply_as(vec![spec], Origin::Job).await?;
        apps.pop()
            .ok_or_else(|| SupervisorError::Invalid("the run was not registered".into()))
    }

    pub(super) async fn apply_as(&self, specs: Vec<AppSpec>, origin: Origin) -> Result<Vec<App>> {
        {
            let t = self.lock();
            if t.closing {
                return Err(SupervisorError::ShuttingDown);
            }
            let mut edges = t.edges();
            for s in &specs {
                edges.insert(s.name.clone(), s.depends_on.clone());
            }
            deps::check(&edges).map_err(SupervisorError::Invalid)?;
            t.check_host_limits(specs.iter().map(|s| (s.name.as_str(), s.instances)))?;
        }
        // Bind listen sockets first: a port in use refuses the file before anything changes.
        for (i, s) in specs.iter().enumerate() {
            if let Err(e) = self.shared.sockets.ensure(&s.name, &s.listen) {
                let t = self.lock();
                for earlier in &specs[..=i] {
                    if !t.apps.contains_key(&earlier.name) {
                        self.shared.sockets.release(&earlier.name);
                    }
                }
                return Err(SupervisorError::Invalid(format!(
                    "app `{}`: key `listen`: {e}",
                    s.name
                )));
            }
        }
        let mut names = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            let existing = self.lock().apps.get(&name).map(|a| a.spec.clone());
            match existing {
                Some(old) if old == spec => {}
                Some(_) => {
                    // A changed spec replaces the app: its old instances stop first.
                    self.stop_app(&name, None, Desired::Stopped).await?;
                    self.lock()
                        .apps
                        .insert(name.clone(), App::new(spec, origin));
                    self.record(&name, Fact::Updated);
                }
                None => {
                    self.lock()
                        .apps
                        .insert(name.clone(), App::new(spec, origin));
                    self.record(&name, Fact::Registered);
                }
            }
            names.push(name);
        }
        self.start_all(&names, false)
    }

    /// Starts every instance that is not running. `fresh` also forgets the crash history of
    /// instances that are already up (a restart).
    pub fn start(&self, name: &str, fresh: bool) -> Result<App> {
        let mut apps = self.start_all(&[name.to_string()], fresh)?;
        apps.pop()
            .ok_or_else(|| SupervisorError::UnknownApp(name.into()))
    }

    /// `start` for each of `names`, in one transaction (one lock, one wake-up of the waiters
    /// for a whole app file). An unknown name fails the call, with the apps before it started.
    fn start_all(&self, names: &[String], fresh: bool) -> Result<Vec<App>> {
        self.transact(|t, b| {
            if t.closing {
                return Err(SupervisorError::ShuttingDown);
            }
            for name in names {
                let waiting = t.unready_dependencies(name);
                let app = t
                    .apps
                    .get_mut(name)
                    .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
                app.desired = Desired::Running;
                for index in 0..app.spec.instances {
                    if app.position(index).is_none() {
                        app.instances.push(Instance::new(index));
                    }
                }
                app.instances.sort_by_key(|i| i.index);
                let mut idle = Vec::new();
                for inst in app.instances.iter_mut() {
                    if inst.index >= app.spec.instances {
                        continue;
                    }
                    if fresh {
                        inst.reset_history();
                    }
                    if matches!(inst.status, Status::Stopped | Status::Crashed) {
                        idle.push(inst.index);
                    }
                }
                for index in idle {
                    let waiting = waiting.clone();
                    b.apply(t, name, index, None, Input::Start { waiting });
                }
            }
            Ok(())
        })?;
        self.notify();
        names.iter().map(|n| self.get(n)).collect()
    }

    pub async fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<App> {
        self.stop_app(name, timeout, Desired::Stopped).await?;
        self.get(name)
    }

    pub async fn restart(&self, name: &str) -> Result<App> {
        self.stop_app(name, None, Desired::Running).await?;
        self.start(name, true)
    }

    pub async fn delete(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        self.stop_app(name, timeout, Desired::Stopped).await?;
        self.lock().apps.remove(name);
        self.shared.sockets.release(name);
        self.record(name, Fact::Deleted);
        self.notify();
        Ok(())
    }

    pub async fn scale(&self, name: &str, instances: u32) -> Result<App> {
        self.transact(|t, b| {
            if !t.apps.contains_key(name) {
                return Err(SupervisorError::UnknownApp(name.into()));
            }
            if instances > MAX_INSTANCES {
                return Err(SupervisorError::Invalid(format!(
                    "{instances} instances is more than the limit of {MAX_INSTANCES} per app"
                )));
            }
            t.check_host_limits(std::iter::once((name, instances)))?;
            let app = t
                .apps
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            let scaled = Fact::Scaled {
                from: app.spec.instances,
                to: instances,
            };
            self.record(name, scaled);
            app.spec.instances = instances;
            let extra: Vec<u32> = app
                .instances
                .iter()
                .map(|i| i.index)
                .filter(|i| *i >= instances)
                .collect();
            for index in extra {
                let stop = Input::StopRequested { timeout: None };
                b.apply(t, name, index, None, stop);
            }
            Ok(())
        })?;
        self.notify();
        self.wait_stopped(name).await;
        {
            let mut t = self.lock();
            if let Some(app) = t.apps.get_mut(name) {
                app.instances
                    .retain(|i| i.index < instances || i.status == Status::Stopping);
            }
        }
        if self.get(name)?.desired == Desired::Running {
            self.start(name, false)
        } else {
            self.get(name)
        }
    }

    pub(super) async fn stop_app(
        &self,
        name: &str,
        timeout: Option<Duration>,
        desired: Desired,
    ) -> Result<()> {
        self.transact(|t, b| {
            let app = t
                .apps
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownApp(name.into()))?;
            app.desired = desired;
            let indices: Vec<u32> = app.instances.iter().map(|i| i.index).collect();
            for index in indices {
                b.apply(t, name, index, None, Input::StopRequested { timeout });
            }
            Ok::<(), SupervisorError>(())
        })?;
        self.notify();
        self.wait_stopped(name).await;
        Ok(())
    }

    /// Stops every app (or none, with `keep_apps`) and refuses further work: dependents
    /// before what they depend on, one dependency layer at a time. Returns how many
    /// instances were stopped and how many were left running.
    pub async fn shutdown(&self, keep_apps: bool, timeout: Option<Duration>) -> (u32, u32) {
        let layers = {
            let mut t = self.lock();
            t.closing = true;
            if keep_apps {
                let left = t
                    .apps
                    .values()
                    .flat_map(|a| &a.instances)
                    .filter(|i| i.status.has_process())
                    .count();
                info!(
                    left_running = left,
                    "supervisor shutting down, apps keep running"
                );
                drop(t);
                self.notify();
                return (0, left as u32);
            }
            deps::layers(&t.edges())
        };
        let mut stopped = 0;
        for layer in layers.iter().rev() {
            stopped += self.transact(|t, b| {
                let mut stopped = 0;
                for name in layer {
                    let Some(app) = t.apps.get(name) else {
                        continue;
                    };
                    let instances: Vec<(u32, bool, bool)> = app
                        .instances
                        .iter()
                        .map(|i| {
                            let signalled = matches!(i.status, Status::Running | Status::Starting)
                                && i.pid.is_some();
                            (i.index, i.status.has_process(), signalled)
                        })
                        .collect();
                    for (index, has_process, signalled) in instances {
                        b.apply(t, name, index, None, Input::DropReplaced);
                        // Only live processes: a crashed or backing-off instance keeps its
                        // status for the next `herd up` (closing holds back pending starts).
                        if has_process {
                            let stop = Input::StopRequested { timeout };
                            b.apply(t, name, index, None, stop);
                            stopped += u32::from(signalled);
                        }
                    }
                }
                stopped
            });
            self.notify();
            self.wait_until(|t| {
                layer.iter().all(|n| {
                    t.apps
                        .get(n)
                        .is_none_or(|a| a.instances.iter().all(|i| i.status != Status::Stopping))
                })
            })
            .await;
        }
        info!(stopped, "supervisor shut down");
        (stopped, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `apps` apps (`a0`, `a1`, ...) asking for `instances` each.
    fn table(apps: usize, instances: u32) -> Table {
        let apps = (0..apps)
            .map(|i| {
                let mut app =
                    App::new(AppSpec::quick(&format!("a{i}"), "x", vec![]), Origin::Local);
                app.spec.instances = instances;
                (format!("a{i}"), app)
            })
            .collect();
        Table {
            apps,
            closing: false,
        }
    }

    #[test]
    fn the_host_limits_count_what_the_change_leaves() {
        let t = table(2, 10_000);
        // Replacing an app counts its new size, not both.
        assert!(t.check_host_limits(std::iter::once(("a0", 9_999))).is_ok());
        let err = t
            .check_host_limits(std::iter::once(("new", 1)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("20001 instances") && err.contains("limit of 20000"),
            "{err}"
        );
        let t = table(MAX_APPS, 1);
        assert!(t.check_host_limits(std::iter::once(("a1", 2))).is_ok());
        let err = t
            .check_host_limits(std::iter::once(("new", 1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10001 apps"), "{err}");
    }
}
