//! The local supervisor as the cluster agent sees it: reports the cluster's instances on this
//! node, the host's resources, and turns the agent's wanted set into local apps.

use crate::supervisor::Supervisor;
use crate::supervisor::managed::ClusterInstance;
use crate::supervisor::spec::AppSpec;
use herd_cluster::{DesiredInstance, InstanceReport, LocalSupervisor};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use tracing::warn;

pub struct Bridge {
    supervisor: Supervisor,
}

impl Bridge {
    pub fn new(supervisor: Supervisor) -> Self {
        Self { supervisor }
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
                status: s.status.as_str().to_string(),
                pid: s.pid,
                restarts: s.restarts,
            })
            .collect()
    }

    fn resources(&self) -> serde_json::Value {
        match self.supervisor.host_metrics() {
            Some(h) => json!({
                "cpu_percent": h.cpu_percent,
                "cpus": h.cpus,
                "mem_used_bytes": h.mem_used_bytes,
                "mem_total_bytes": h.mem_total_bytes,
                "load1": h.load[0],
            }),
            None => json!({}),
        }
    }

    fn renew_lease(&self, valid_for: std::time::Duration) {
        self.supervisor.renew_lease(valid_for);
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
