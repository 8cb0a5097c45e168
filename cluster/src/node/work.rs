//! The façade's cluster-work operations: the agent, the master's runtime view, and helpers for
//! the CLI's app and node commands (each one registry write, forwarded to the leader).

use std::sync::Arc;

use herd_proto::cluster as pb;

use super::ClusterNode;
use super::FORWARD_TIMEOUT;
use crate::agent::AgentLoop;
use crate::agent::LocalSupervisor;
use crate::error::ClusterError;
use crate::master::ClusterRuntime;
use crate::master::DrainStatus;
use crate::master::drain_status;
use crate::raft::decode;
use crate::registry::NodeId;
use crate::registry::RegistryCommand;
use crate::registry::RegistryResponse;

impl ClusterNode {
    /// Starts this node's agent with the daemon's supervisor: heartbeat replies carry its
    /// reports and resources, and it is told what to run (see [`LocalSupervisor`]). Call once,
    /// right after `start`; a second call replaces the supervisor and restarts the loop.
    pub fn run_agent(&self, sup: Arc<dyn LocalSupervisor>) {
        self.shared.agent.set_supervisor(sup.clone());
        let agent = AgentLoop {
            state: self.shared.agent.clone(),
            slices: self.shared.slices.subscribe(),
            supervisor: sup,
        };
        let task = tokio::spawn(agent.run(self.shutdown.subscribe()));
        let old = self
            .agent_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }

    /// The master's live view of every node (status, last seen, resources, reported
    /// instances), from the leader.
    pub async fn runtime(&self) -> Result<ClusterRuntime, ClusterError> {
        let shared = &self.shared;
        shared
            .forwarder
            .at_leader(
                "runtime",
                FORWARD_TIMEOUT,
                || std::future::ready(Ok(shared.runtime_local())),
                |mut c| async move {
                    decode(&c.runtime(pb::RuntimeRequest {}).await?.into_inner().runtime)
                },
            )
            .await
    }

    /// `write`, with a refusal turned into `ClusterError::Rejected`; true if anything changed.
    async fn write_applied(
        &self,
        what: String,
        cmd: RegistryCommand,
    ) -> Result<bool, ClusterError> {
        match self.write(cmd).await? {
            RegistryResponse::Applied { changed } => Ok(changed),
            RegistryResponse::Rejected { reason } => Err(ClusterError::Rejected { what, reason }),
        }
    }

    /// Marks `node` for draining (its instances move elsewhere, start new then stop old; it
    /// takes no new ones), or undoes it. Watch progress with [`ClusterNode::drain_status`].
    pub async fn drain(&self, node: NodeId, drain: bool) -> Result<bool, ClusterError> {
        let verb = if drain { "drain" } else { "undrain" };
        self.write_applied(
            format!("{verb} of node {node}"),
            RegistryCommand::DrainNode { node, drain },
        )
        .await
    }

    /// Whether `node`'s drain is done: nothing assigned to it, no move from it pending, and its
    /// latest heartbeat reply shows no cluster instance running.
    pub async fn drain_status(&self, node: NodeId) -> Result<DrainStatus, ClusterError> {
        let rt = self.runtime().await?;
        let reg = self.read(false).await?;
        if !reg.nodes.contains_key(&node) {
            return Err(ClusterError::Rejected {
                what: format!("drain status of node {node}"),
                reason: "no such node; `herd cluster nodes` lists the nodes".into(),
            });
        }
        let report = rt
            .node(node)
            .filter(|n| n.last_seen_ms.is_some())
            .map(|n| n.instances.as_slice());
        Ok(drain_status(&reg, node, report))
    }

    /// Sets the desired instance count of a deployed app.
    pub async fn scale(&self, app: &str, instances: u32) -> Result<bool, ClusterError> {
        self.write_applied(
            format!("scale of app `{app}`"),
            RegistryCommand::ScaleApp {
                name: app.to_string(),
                instances,
            },
        )
        .await
    }

    /// Removes an app from the cluster; its instances stop everywhere.
    pub async fn undeploy(&self, app: &str) -> Result<bool, ClusterError> {
        self.write_applied(
            format!("undeploy of app `{app}`"),
            RegistryCommand::RemoveApp {
                name: app.to_string(),
            },
        )
        .await
    }

    /// Rolling restart of every placed instance of `app`, one node at a time (the next node
    /// starts once the previous one reports its instances running again). Returns the new
    /// restart generation.
    pub async fn restart(&self, app: &str) -> Result<u64, ClusterError> {
        let reg = self.read(false).await?;
        if !reg.apps.contains_key(app) {
            return Err(ClusterError::Rejected {
                what: format!("restart of app `{app}`"),
                reason: format!("app `{app}` not found; `herd cluster apps` lists the apps"),
            });
        }
        let generation = reg.restarts.get(app).map_or(0, |r| r.generation) + 1;
        self.write_applied(
            format!("restart of app `{app}`"),
            RegistryCommand::RestartApp {
                name: app.to_string(),
                generation,
            },
        )
        .await?;
        Ok(generation)
    }
}
