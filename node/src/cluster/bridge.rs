//! The local supervisor as the cluster agent sees it: reports the cluster's instances on this
//! node, the host's resources, and turns the agent's wanted set into local apps.

use crate::supervisor::Supervisor;
use crate::supervisor::instance::Status;
use crate::supervisor::managed::ClusterInstance;
use crate::supervisor::spec::AppSpec;
use herd_cluster::{DesiredInstance, InstanceReport, InstanceStatus, LocalSupervisor, Resources};
use std::future::Future;
use std::pin::Pin;
use tracing::warn;

/// The supervisor's status as the cluster reports it (one variant each).
fn instance_status(status: Status) -> InstanceStatus {
    match status {
        Status::Starting => InstanceStatus::Starting,
        Status::Running => InstanceStatus::Running,
        Status::Backoff => InstanceStatus::Backoff,
        Status::Stopping => InstanceStatus::Stopping,
        Status::Stopped => InstanceStatus::Stopped,
        Status::Crashed => InstanceStatus::Crashed,
    }
}

pub struct Bridge {
    supervisor: Supervisor,
    jobs: Option<crate::jobs::Jobs>,
}

impl Bridge {
    pub fn new(supervisor: Supervisor) -> Self {
        Self {
            supervisor,
            jobs: None,
        }
    }

    /// Job runs the master dispatches here go to `jobs`.
    pub fn with_jobs(mut self, jobs: crate::jobs::Jobs) -> Self {
        self.jobs = Some(jobs);
        self
    }
}

impl LocalSupervisor for Bridge {
    fn report(&self) -> Vec<InstanceReport> {
        self.supervisor
            .cluster_report()
            .into_iter()
            .map(|s| InstanceReport {
                app: s.app,
                instance: s.instance,
                status: instance_status(s.status),
                pid: s.pid,
                restarts: s.restarts,
            })
            .collect()
    }

    fn resources(&self) -> Option<Resources> {
        self.supervisor.host_metrics().map(|h| Resources {
            cpu_percent: f64::from(h.cpu_percent),
            cpus: h.cpus,
            load1: h.load[0],
            mem_total_bytes: h.mem_total_bytes,
            mem_used_bytes: h.mem_used_bytes,
        })
    }

    fn renew_lease(&self, valid_for: std::time::Duration) {
        self.supervisor.renew_lease(valid_for);
    }

    fn reconcile_runs(&self, runs: Vec<herd_cluster::DesiredRun>) {
        if let Some(jobs) = &self.jobs {
            jobs.cluster_runs(runs);
        }
    }

    fn reconcile(
        &self,
        desired: Vec<DesiredInstance>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let mut wanted = Vec::with_capacity(desired.len());
            for d in desired {
                match serde_json::from_value::<AppSpec>(d.spec) {
                    Ok(spec) => wanted.push(ClusterInstance {
                        app: d.app,
                        instance: d.instance,
                        spec,
                    }),
                    Err(e) => {
                        warn!(app = %d.app, instance = d.instance, error = %e, "cannot read a deployed spec; skipping the instance")
                    }
                }
            }
            self.supervisor.reconcile_cluster(wanted).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supervisor_status_reports_its_own_string() {
        for status in [
            Status::Starting,
            Status::Running,
            Status::Backoff,
            Status::Stopping,
            Status::Stopped,
            Status::Crashed,
        ] {
            assert_eq!(instance_status(status).as_str(), status.as_str());
        }
    }
}
