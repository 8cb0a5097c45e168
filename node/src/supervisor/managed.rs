//! Instances the cluster assigned to this node. The agent hands over the wanted set; each
//! cluster instance `web#3` becomes a local app `web@3` (one instance, `HERD_INSTANCE=3`),
//! marked as the cluster's, so `herd ps` shows it and a daemon restart adopts it like any
//! other app. `@` is not allowed in app-file names, so these never clash with local apps.

use super::instance::Status;
use super::machine::Input;
use super::spec::AppSpec;
use super::{Origin, Supervisor};
use tracing::warn;

/// One cluster instance this node should run.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInstance {
    pub app: String,
    pub instance: u32,
    pub spec: AppSpec,
}

/// One cluster instance as this node runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInstanceState {
    pub app: String,
    pub instance: u32,
    pub status: Status,
    pub pid: Option<u32>,
    pub restarts: u32,
}

pub fn local_name(app: &str, instance: u32) -> String {
    format!("{app}@{instance}")
}

pub(super) fn split(local: &str) -> Option<(&str, u32)> {
    let (app, idx) = local.rsplit_once('@')?;
    Some((app, idx.parse().ok()?))
}

/// The local spec of a cluster instance: one instance carrying its cluster index, with no
/// local dependencies (its dependencies may run on other nodes).
fn local_spec(c: &ClusterInstance) -> AppSpec {
    let mut spec = c.spec.clone();
    spec.name = local_name(&c.app, c.instance);
    spec.instances = 1;
    spec.depends_on.clear();
    spec.env
        .insert("HERD_INSTANCE".into(), c.instance.to_string());
    spec.env.insert("HERD_CLUSTER_APP".into(), c.app.clone());
    spec
}

impl Supervisor {
    /// Makes the cluster's instances on this node exactly `wanted`: starts the missing,
    /// replaces the changed, deletes the rest. Local apps are never touched.
    pub async fn reconcile_cluster(&self, wanted: Vec<ClusterInstance>) {
        let wanted: Vec<AppSpec> = wanted.iter().map(local_spec).collect();
        let current: Vec<(String, AppSpec)> = {
            let t = self.lock();
            t.apps
                .values()
                .filter(|a| a.origin == Origin::Cluster)
                .map(|a| (a.spec.name.clone(), a.spec.clone()))
                .collect()
        };
        for (name, _) in current
            .iter()
            .filter(|(n, _)| !wanted.iter().any(|w| &w.name == n))
        {
            if let Err(e) = self.delete(name, None).await {
                warn!(app = %name, error = %e, "cannot remove a cluster instance");
            }
        }
        let changed: Vec<AppSpec> = wanted
            .into_iter()
            .filter(|w| !current.iter().any(|(n, s)| n == &w.name && s == w))
            .collect();
        if !changed.is_empty()
            && let Err(e) = self.apply_as(changed, Origin::Cluster).await
        {
            warn!(error = %e, "cannot start the cluster's instances");
        }
        self.start_lease_waiters();
    }

    /// The master renews the lease: start the singletons that waited for it. Only the agent's
    /// calls lead here (a reconcile or a renewal), once its replica is in sync, so an instance
    /// the master moved away while this node was cut off is never started again here.
    fn start_lease_waiters(&self) {
        if !self.shared.lease.valid() {
            return;
        }
        self.transact(|t, b| {
            let waiters: Vec<(String, u32)> = t
                .apps
                .values()
                .filter(|a| a.is_singleton() && a.desired == super::Desired::Running)
                .flat_map(|a| {
                    a.instances
                        .iter()
                        .filter(|i| i.status == Status::Starting && i.pid.is_none())
                        .map(|i| (a.spec.name.clone(), i.index))
                })
                .collect();
            for (name, index) in waiters {
                b.apply(t, &name, index, None, Input::LeaseGranted);
            }
        });
    }

    /// The master acknowledged this node and the agent is in sync: singletons may run for
    /// `valid_for` more, and the ones that waited for the lease start.
    pub fn renew_lease(&self, valid_for: std::time::Duration) {
        self.shared.lease.renew(valid_for);
        self.start_lease_waiters();
    }

    /// The cluster instances this node runs, for the master's heartbeat.
    pub fn cluster_report(&self) -> Vec<ClusterInstanceState> {
        let t = self.lock();
        t.apps
            .values()
            .filter(|a| a.origin == Origin::Cluster)
            .filter_map(|a| {
                let (app, instance) = split(&a.spec.name)?;
                let i = a.instances.first()?;
                Some(ClusterInstanceState {
                    app: app.to_string(),
                    instance,
                    status: i.status,
                    pid: i.pid,
                    restarts: i.restarts,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_specs_carry_the_cluster_index() {
        assert_eq!(split(&local_name("web.api", 12)), Some(("web.api", 12)));
        let mut spec = AppSpec::quick("web", "sleep", vec![]);
        spec.instances = 4;
        spec.depends_on = vec!["db".into()];
        let s = local_spec(&ClusterInstance {
            app: "web".into(),
            instance: 3,
            spec,
        });
        assert_eq!((s.name.as_str(), s.instances), ("web@3", 1));
        assert!(s.depends_on.is_empty());
        assert_eq!(s.env["HERD_INSTANCE"], "3");
    }
}
