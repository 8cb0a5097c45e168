//! The ClusterAdmin gRPC service on the local socket: `herd cluster ...` asks its own daemon,
//! which answers from (or through) the cluster node it runs. A standalone daemon says so.

use super::replies::{
    Deployed, DeployedApp, Left, NodeUptime, NodeView, Restarting, RunningInstance, Scaled,
    StatusReply, SteppedDown, Undeployed, Uptime,
};
use crate::access::Caller;
use crate::access::secrets::Secrets;
use crate::supervisor::events::EventLog;
use crate::supervisor::spec::{self, AppSpec, OnDisconnect};
use herd_cluster::registry::{App, OnDisconnect as Disconnect, Placement};
use herd_cluster::{
    ClusterError, ClusterNode, ClusterRuntime, MemberStatus, RegistryCommand, RegistryResponse,
};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::cluster_admin_server::ClusterAdmin;
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
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

/// A cluster failure as the status a client (and the CLI's exit code) can act on: only a
/// cluster that cannot serve now is "unavailable"; a refusal is not.
fn cluster_error(e: ClusterError) -> Status {
    let message = e.to_string();
    match e {
        ClusterError::Rejected { .. } | ClusterError::Membership(_) | ClusterError::Config(_) => {
            Status::failed_precondition(message)
        }
        ClusterError::Timeout { .. } => Status::deadline_exceeded(message),
        ClusterError::Storage { .. } => Status::internal(message),
        ClusterError::NoLeader
        | ClusterError::Peer { .. }
        | ClusterError::Raft(_)
        | ClusterError::Listen { .. }
        | ClusterError::Discovery(_)
        | ClusterError::Shutdown => Status::unavailable(message),
    }
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

/// A job as the registry keeps it: the node's spec (opaque there) and the keys the master
/// schedules by.
pub fn registry_job(
    job: &crate::jobs::spec::JobSpec,
) -> Result<herd_cluster::registry::jobs::ClusterJob, Status> {
    let placement = job.app.placement.clone().unwrap_or_default();
    Ok(herd_cluster::registry::jobs::ClusterJob {
        spec: serde_json::to_value(job).map_err(|e| Status::internal(e.to_string()))?,
        schedule: job.schedule.clone(),
        timezone: job.timezone.clone(),
        catch_up: job.catch_up,
        overlap: job.overlap.as_str().to_string(),
        retries: job.retries,
        retry_on_node_loss: job.retry_on_node_loss,
        placement: Placement {
            constraints: placement.constraints,
            spread: placement.spread,
            max_per_node: placement.max_per_node,
        },
        ..Default::default()
    })
}

/// How long `cluster status`/`nodes` wait for the master's view before showing the Raft view
/// alone (health `null`): a status must answer while no master can.
const RUNTIME_WAIT: Duration = Duration::from_secs(1);

/// Every node of the cluster, by id: Raft members (a learner shows as "standby") and the
/// nodes only the master's registry knows ("agent"), each with the master's view of it when
/// `runtime` is there.
pub fn node_views(members: &[MemberStatus], runtime: Option<&ClusterRuntime>) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = members
        .iter()
        .map(|m| NodeView {
            id: m.id,
            addr: m.addr.clone(),
            labels: m.labels.clone(),
            role: match m.role.as_str() {
                "learner" => "standby".to_string(),
                other => other.to_string(),
            },
            reachable: m.reachable,
            last_contact_ms: m.last_contact_ms,
            matched_index: m.matched_index,
            health: None,
            last_heartbeat_ms: None,
            instances: None,
            resources: serde_json::Value::Null,
            version: None,
        })
        .collect();
    let (nodes, at_ms) = runtime.map_or((&[][..], 0), |rt| (&rt.nodes[..], rt.at_ms));
    for n in nodes {
        let at = match views.iter().position(|v| v.id == n.id) {
            Some(at) => at,
            None => {
                views.push(NodeView {
                    id: n.id,
                    addr: n.addr.clone(),
                    labels: n.labels.clone(),
                    role: "agent".to_string(),
                    reachable: None,
                    last_contact_ms: None,
                    matched_index: None,
                    health: None,
                    last_heartbeat_ms: None,
                    instances: None,
                    resources: serde_json::Value::Null,
                    version: None,
                });
                views.len() - 1
            }
        };
        let v = &mut views[at];
        v.health = Some(n.status);
        v.last_heartbeat_ms = n.last_seen_ms.map(|seen| at_ms.saturating_sub(seen));
        v.instances = Some(n.instances.len() as u64);
        v.resources = n.resources.clone();
        v.version = n.version.clone();
    }
    views.sort_by_key(|v| v.id);
    views
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
        let node = self.node()?;
        let status = node.status().await;
        // Without a known leader there is no master to ask; don't wait for one.
        let runtime = match status.leader_id {
            Some(_) => tokio::time::timeout(RUNTIME_WAIT, node.runtime())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let nodes = node_views(&status.members, runtime.as_ref());
        reply(StatusReply { status, nodes })
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
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let jobs =
            crate::jobs::spec::parse_jobs(&req.source, &req.toml, Path::new(&req.base_dir), &names)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(secrets) = &self.secrets {
            let runs: Vec<AppSpec> = jobs.iter().map(|j| j.app.clone()).collect();
            secrets
                .check_apps(&specs)
                .and_then(|()| secrets.check_apps(&runs))
                .map_err(|e| Status::failed_precondition(format!("{}: {e}", req.source)))?;
        }
        let mut deployed_jobs = Vec::new();
        for job in &jobs {
            write(
                node,
                RegistryCommand::PutJob {
                    name: job.name().to_string(),
                    job: registry_job(job)?,
                    now_ms: crate::supervisor::now_ms(),
                },
            )
            .await?;
            self.events
                .audit(&caller, job.name(), "deployed", json!({"job": true}));
            deployed_jobs.push(job.name().to_string());
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
        reply(Deployed {
            deployed: names,
            jobs: deployed_jobs,
        })
    }

    async fn undeploy(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let node = self.node()?;
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        let registry = node.read(false).await.map_err(cluster_error)?;
        if registry.jobs.contains_key(&name) {
            write(node, RegistryCommand::RemoveJob { name: name.clone() }).await?;
            self.events
                .audit(&caller, &name, "undeployed", json!({"job": true}));
            return reply(Undeployed { undeployed: name });
        }
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
        // Unknown is "not found" (exit code 3); `restart` re-checks against the registry it
        // writes to.
        let registry = node.read(false).await.map_err(cluster_error)?;
        if !registry.apps.contains_key(&name) {
            return Err(Status::not_found(format!(
                "app `{name}` is not deployed; `herd cluster apps` lists them"
            )));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use herd_cluster::registry::NodeStatus;

    fn member(id: u64, role: &str) -> MemberStatus {
        serde_json::from_value(json!({
            "id": id, "addr": format!("127.0.0.1:700{id}"), "labels": { "host": "h" },
            "role": role, "reachable": true, "last_contact_ms": 5, "matched_index": 9,
        }))
        .unwrap()
    }

    fn runtime(nodes: serde_json::Value) -> ClusterRuntime {
        serde_json::from_value(json!({
            "master": 1, "term": 2, "at_ms": 10_000, "nodes": nodes,
            "heartbeats": serde_json::to_value(herd_cluster::master::HeartbeatTotals::default()).unwrap(),
        }))
        .unwrap()
    }

    fn seen(
        id: u64,
        status: &str,
        last_seen_ms: Option<u64>,
        instances: usize,
    ) -> serde_json::Value {
        let instances: Vec<serde_json::Value> = (0..instances)
            .map(|i| json!({ "app": "a", "instance": i, "status": "running", "pid": 1, "restarts": 0, "generation": 0 }))
            .collect();
        json!({
            "id": id, "addr": format!("127.0.0.1:700{id}"), "labels": {}, "status": status,
            "draining": false, "last_seen_ms": last_seen_ms, "silent_ms": 0, "rtt_us": null,
            "version": "0.1.0", "resources": { "cpus": 2 }, "instances": instances,
            "last_error": null,
        })
    }

    #[test]
    fn every_node_is_listed_with_its_role_and_the_masters_view() {
        let members = [member(3, "learner"), member(1, "voter")];
        let rt = runtime(json!([
            seen(1, "online", Some(9_900), 2),
            seen(3, "draining", None, 0),
            seen(2, "offline", Some(1_000), 0),
        ]));
        let views = node_views(&members, Some(&rt));
        let ids: Vec<(u64, &str)> = views
            .iter()
            .map(|v| (v.id.get(), v.role.as_str()))
            .collect();
        assert_eq!(ids, [(1, "voter"), (2, "agent"), (3, "standby")]);
        let [one, two, three] = &views[..] else {
            unreachable!()
        };
        assert_eq!(one.health, Some(NodeStatus::Online));
        assert_eq!(one.last_heartbeat_ms, Some(100));
        assert_eq!(one.instances, Some(2));
        assert_eq!(one.version.as_deref(), Some("0.1.0"));
        assert_eq!((one.reachable, one.matched_index), (Some(true), Some(9)));
        assert_eq!(two.health, Some(NodeStatus::Offline));
        assert_eq!(two.last_heartbeat_ms, Some(9_000));
        assert_eq!((two.reachable, two.last_contact_ms), (None, None));
        assert_eq!(three.health, Some(NodeStatus::Draining));
        assert_eq!(three.last_heartbeat_ms, None);
    }

    #[test]
    fn without_a_master_the_members_are_listed_with_no_health() {
        let views = node_views(&[member(2, "voter"), member(1, "learner")], None);
        assert_eq!(views.len(), 2);
        assert_eq!(
            (views[0].id, views[0].role.as_str()),
            (herd_cluster::NodeId(1), "standby")
        );
        assert!(views.iter().all(|v| v.health.is_none()
            && v.instances.is_none()
            && v.resources.is_null()
            && v.reachable == Some(true)));
    }
}
