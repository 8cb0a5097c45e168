//! The ClusterAdmin gRPC service on the local socket: `herd cluster ...` asks its own daemon,
//! which answers from (or through) the cluster node it runs. A standalone daemon says so.

use super::replies::{
    Deployed, DeployedApp, Left, NodeUptime, Restarting, RunningInstance, Scaled, SteppedDown,
    Undeployed, Uptime,
};
use crate::access::Caller;
use crate::access::secrets::Secrets;
use crate::supervisor::events::EventLog;
use crate::supervisor::spec::{self, AppSpec, OnDisconnect};
use herd_cluster::registry::{App, OnDisconnect as Disconnect, Placement};
use herd_cluster::{ClusterError, ClusterNode, RegistryCommand, RegistryResponse};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::cluster_admin_server::ClusterAdmin;
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use herd_proto::supervisor::cluster_admin_server::ClusterAdminServer;

pub struct Admin {
    node: Option<Arc<ClusterNode>>,
    events: EventLog,
    secrets: Option<Arc<Secrets>>,
}

impl Admin {
    pub fn new(node: Option<Arc<ClusterNode>>, events: EventLog) -> Self {
        Self {
            node,
            events,
            secrets: None,
        }
    }

    /// The secret store a deployed file's `secret:` references are checked against.
    pub fn with_secrets(mut self, secrets: Arc<Secrets>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    fn node(&self) -> Result<&ClusterNode, Status> {
        self.node.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this daemon runs standalone: set `[cluster] enabled = true` in its config.toml (see the README's Cluster section)",
            )
        })
    }
}

/// A typed reply as the JSON on the wire (keys sorted, as clients have always received them).
fn reply(value: impl Serialize) -> Result<Response<pb::JsonReply>, Status> {
    let value = serde_json::to_value(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::JsonReply {
        json: value.to_string(),
    }))
}

fn cluster_error(e: ClusterError) -> Status {
    Status::unavailable(e.to_string())
}

/// An app of an app file as the registry keeps it.
pub fn registry_app(spec: &AppSpec) -> Result<App, Status> {
    let placement = spec.placement.clone().unwrap_or_default();
    Ok(App {
        spec: serde_json::to_value(spec).map_err(|e| Status::internal(e.to_string()))?,
        instances: spec.instances,
        placement: Placement {
            constraints: placement.constraints,
            spread: placement.spread,
            max_per_node: placement.max_per_node,
        },
        on_disconnect: match spec.on_disconnect {
            Some(OnDisconnect::Stop) => Disconnect::Stop,
            _ => Disconnect::Keep,
        },
    })
}

async fn write(node: &ClusterNode, cmd: RegistryCommand) -> Result<(), Status> {
    match node.write(cmd).await.map_err(cluster_error)? {
        RegistryResponse::Applied { .. } => Ok(()),
        RegistryResponse::Rejected { reason } => Err(Status::failed_precondition(reason)),
    }
}

#[tonic::async_trait]
impl ClusterAdmin for Admin {
    async fn status(
        &self,
        _: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        reply(self.node()?.status().await)
    }

    async fn step_down(
        &self,
        req: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let before = node.status().await.leader_id;
        node.step_down().await.map_err(cluster_error)?;
        self.events.audit(
            &Caller::of(&req),
            "-",
            "cluster_step_down",
            json!({ "leader": before }),
        );
        reply(SteppedDown {
            stepped_down: before,
        })
    }

    async fn leave(
        &self,
        req: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        self.events.audit(
            &Caller::of(&req),
            "-",
            "cluster_leave",
            json!({ "node": node.id() }),
        );
        node.leave().await.map_err(cluster_error)?;
        reply(Left { left: node.id() })
    }

    async fn deploy(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let specs = spec::parse_app_file(&req.source, &req.toml, Path::new(&req.base_dir))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(secrets) = &self.secrets {
            secrets
                .check_apps(&specs)
                .map_err(|e| Status::failed_precondition(format!("{}: {e}", req.source)))?;
        }
        let apps: Vec<(String, App)> = specs
            .iter()
            .map(|s| Ok((s.name.clone(), registry_app(s)?)))
            .collect::<Result<_, Status>>()?;
        let mut names = Vec::new();
        for (name, app) in apps {
            write(
                node,
                RegistryCommand::PutApp {
                    name: name.clone(),
                    app,
                },
            )
            .await?;
            self.events.audit(&caller, &name, "deployed", json!({}));
            names.push(name);
        }
        reply(Deployed { deployed: names })
    }

    async fn undeploy(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        let registry = node.read(false).await.map_err(cluster_error)?;
        if !registry.apps.contains_key(&name) {
            return Err(Status::not_found(format!(
                "app `{name}` is not deployed; `herd cluster apps` lists them"
            )));
        }
        write(node, RegistryCommand::RemoveApp { name: name.clone() }).await?;
        self.events.audit(&caller, &name, "undeployed", json!({}));
        reply(Undeployed { undeployed: name })
    }

    async fn scale(
        &self,
        req: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let caller = Caller::of(&req);
        let req = req.into_inner();
        if req.instances > spec::MAX_INSTANCES {
            return Err(Status::invalid_argument(format!(
                "{} instances is more than the limit of {}",
                req.instances,
                spec::MAX_INSTANCES
            )));
        }
        let registry = node.read(false).await.map_err(cluster_error)?;
        if !registry.apps.contains_key(&req.name) {
            return Err(Status::not_found(format!(
                "app `{}` is not deployed; `herd cluster apps` lists them",
                req.name
            )));
        }
        write(
            node,
            RegistryCommand::ScaleApp {
                name: req.name.clone(),
                instances: req.instances,
            },
        )
        .await?;
        self.events.audit(
            &caller,
            &req.name,
            "cluster_scaled",
            json!({ "instances": req.instances }),
        );
        reply(Scaled {
            scaled: req.name,
            instances: req.instances,
        })
    }

    async fn uptime(
        &self,
        req: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let registry = self
            .node()?
            .read(req.into_inner().stale)
            .await
            .map_err(cluster_error)?;
        let nodes = registry
            .nodes
            .values()
            .map(|n| NodeUptime {
                id: n.id,
                addr: n.addr.clone(),
                status: n.status,
                labels: n.labels.clone(),
                days: registry.uptime.get(&n.id).cloned().unwrap_or_default(),
            })
            .collect();
        reply(Uptime {
            day_ms: herd_cluster::registry::DAY_MS,
            nodes,
        })
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let status = node.status().await;
        let id = status
            .members
            .iter()
            .find(|m| m.id.to_string() == req.node || m.addr == req.node)
            .map(|m| m.id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "node `{}` is not a member; `herd cluster nodes` lists them",
                    req.node
                ))
            })?;
        if let Some(drain) = req.drain {
            node.drain(id, drain).await.map_err(cluster_error)?;
            let event = if drain { "drain" } else { "undrain" };
            self.events
                .audit(&caller, "-", event, json!({ "node": id }));
        }
        reply(node.drain_status(id).await.map_err(cluster_error)?)
    }

    async fn restart_app(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        let generation = node.restart(&name).await.map_err(cluster_error)?;
        self.events.audit(
            &caller,
            &name,
            "cluster_restart",
            json!({ "generation": generation }),
        );
        reply(Restarting {
            restarting: name,
            generation,
        })
    }

    async fn apps(
        &self,
        req: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let registry = node
            .read(req.into_inner().stale)
            .await
            .map_err(cluster_error)?;
        // Where instances really run comes from the master's last heartbeats; without a
        // master the answer still lists desired and assigned.
        let runtime = node.runtime().await.ok();
        let apps: Vec<DeployedApp> = registry
            .apps
            .iter()
            .map(|(name, app)| DeployedApp {
                name: name.clone(),
                desired: app.instances,
                placement: app.placement.clone(),
                on_disconnect: app.on_disconnect,
                assignments: registry.assignments.get(name).cloned().unwrap_or_default(),
                restart: registry.restarts.get(name).cloned(),
                running: runtime.as_ref().map(|rt| {
                    rt.running(name)
                        .into_iter()
                        .map(|(node, i)| RunningInstance {
                            node,
                            instance: i.instance,
                            status: i.status.clone(),
                            pid: i.pid,
                            generation: i.generation,
                        })
                        .collect()
                }),
            })
            .collect();
        reply(apps)
    }
}
