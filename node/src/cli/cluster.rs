//! `herd cluster ...`: asks the local daemon's ClusterAdmin service and prints the answer.

use super::ClusterCommand;
use super::client::{Target, status_error};
use super::output::{bytes_text, print_json, table};
use crate::cluster::replies::{
    ClusterStatus, Deployed, DeployedApp, DrainStatus, Left, NodeView, Restarting, Scaled,
    StatusReply, SteppedDown, Undeployed, Uptime,
};
use anyhow::Context;
use herd_proto::supervisor as pb;
use herd_proto::supervisor::cluster_admin_client::ClusterAdminClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;

pub async fn run(target: &Target, command: ClusterCommand, json: bool) -> anyhow::Result<()> {
    let channel = super::client::channel(target).await?;
    let mut c = ClusterAdminClient::new(channel);
    match command {
        ClusterCommand::Status => {
            let reply: StatusReply = parse(
                c.status(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            let s = &reply.status;
            if json {
                print_reply(&reply);
            } else {
                outln!(
                    "cluster {}: node {} ({}) is {}; leader {} at {}; term {}; committed {}",
                    s.cluster,
                    s.node_id,
                    s.advertise,
                    s.role,
                    as_json(&s.leader_id),
                    s.leader_addr.as_deref().unwrap_or("-"),
                    s.term,
                    as_json(&s.committed_index)
                );
                print_nodes(s, &reply.nodes);
            }
        }
        ClusterCommand::Nodes => {
            let reply: StatusReply = parse(
                c.status(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_reply(&reply.nodes);
            } else {
                print_nodes(&reply.status, &reply.nodes);
            }
        }
        ClusterCommand::Leader => {
            let s: ClusterStatus = parse(
                c.status(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(
                    &serde_json::json!({ "leader_id": s.leader_id, "leader_addr": s.leader_addr, "term": s.term }),
                );
            } else {
                match s.leader_id {
                    None => outln!("no leader known (term {})", s.term),
                    Some(id) => outln!(
                        "{id} at {} (term {})",
                        s.leader_addr.as_deref().unwrap_or("?"),
                        s.term
                    ),
                }
            }
        }
        ClusterCommand::StepDown => {
            let v: SteppedDown = parse(
                c.step_down(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| {
                format!(
                    "leader {} stepped down; a new leader is being elected",
                    as_json(&v.stepped_down)
                )
            });
        }
        ClusterCommand::Leave => {
            let v: Left = parse(
                c.leave(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| format!("node {} left the cluster", v.left));
        }
        ClusterCommand::Deploy { file } => {
            let req = super::commands::file_request(&file)?;
            let v: Deployed = parse(c.deploy(req).await.map_err(status_error)?)?;
            if json {
                print_reply(&v);
            } else {
                for n in &v.deployed {
                    outln!("deployed {n}");
                }
            }
        }
        ClusterCommand::Undeploy { name } => {
            let v: Undeployed = parse(
                c.undeploy(pb::NameRequest { name })
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| format!("undeployed {}", v.undeployed));
        }
        ClusterCommand::Drain {
            node,
            no_wait,
            timeout,
        } => {
            let mut v: DrainStatus = parse(
                c.drain(pb::DrainRequest {
                    node: node.clone(),
                    drain: Some(true),
                })
                .await
                .map_err(status_error)?,
            )?;
            if !no_wait {
                v = super::cluster_wait::drained(&mut c, &node, v, timeout, json).await?;
            }
            if json {
                print_reply(&v)
            } else if v.done {
                outln!("node {} drained: nothing runs there", v.node)
            } else {
                outln!(
                    "node {} draining; remaining: {}",
                    v.node,
                    as_json(&v.remaining)
                )
            }
        }
        ClusterCommand::Undrain { node } => {
            let v: DrainStatus = parse(
                c.drain(pb::DrainRequest {
                    node,
                    drain: Some(false),
                })
                .await
                .map_err(status_error)?,
            )?;
            show(&v, json, |v| {
                format!("node {} takes instances again", v.node)
            });
        }
        ClusterCommand::Restart {
            name,
            wait,
            timeout,
        } => {
            let v: Restarting = parse(
                c.restart_app(pb::NameRequest { name: name.clone() })
                    .await
                    .map_err(status_error)?,
            )?;
            if wait {
                super::cluster_wait::rolled(&mut c, &name, v.generation, timeout, json).await?;
            }
            show(&v, json, |v| {
                format!(
                    "rolling restart of {} {} (generation {})",
                    v.restarting,
                    if wait { "done" } else { "started" },
                    v.generation
                )
            });
        }
        ClusterCommand::Scale { name, instances } => {
            let v: Scaled = parse(
                c.scale(pb::ScaleRequest { name, instances })
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| {
                format!("{} scaled to {} instances", v.scaled, v.instances)
            });
        }
        ClusterCommand::Uptime { node, days } => {
            let v: Uptime = parse(
                c.uptime(pb::ClusterRequest { stale: false })
                    .await
                    .map_err(status_error)?,
            )?;
            let now_ms = crate::supervisor::now_ms();
            let report = super::uptime::Report::of(&v, node.as_deref(), days, now_ms);
            if json {
                print_json(&report.to_json());
            } else {
                out!("{}", report.render(super::colour::enabled()));
            }
        }
        ClusterCommand::Apps { stale } => {
            let apps: Vec<DeployedApp> = parse(
                c.apps(pb::ClusterRequest { stale })
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_reply(&apps);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = apps
                .iter()
                .map(|a| {
                    let running = match &a.running {
                        Some(r) => r
                            .iter()
                            .filter(|i| i.status == "running")
                            .count()
                            .to_string(),
                        None => "?".into(),
                    };
                    let nodes: Vec<String> = in_key_order(&a.assignments)
                        .into_iter()
                        .map(|(i, n)| format!("{i}@{n}"))
                        .collect();
                    vec![
                        a.name.clone(),
                        a.desired.to_string(),
                        a.assignments.len().to_string(),
                        running,
                        if nodes.is_empty() {
                            "-".into()
                        } else {
                            nodes.join(" ")
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "NAME",
                    "DESIRED",
                    "PLACED",
                    "RUNNING",
                    "WHERE (instance@node)",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

/// A daemon reply as its type.
pub(super) fn parse<T: DeserializeOwned>(r: tonic::Response<pb::JsonReply>) -> anyhow::Result<T> {
    serde_json::from_str(&r.into_inner().json).context("the daemon sent JSON that does not parse")
}

/// A reply part as JSON: how text lines show ids that may be `null` and lists, as they always
/// have; keys sorted, as the daemon's JSON has them.
pub(super) fn as_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Prints a reply for `--json` with its keys sorted, as the daemon sends it.
fn print_reply<T: Serialize>(v: &T) {
    print_json(&as_json(v));
}

/// Map entries in the order their keys have as JSON object keys (text: "10" before "2"), the
/// order the CLI has always listed instances in.
pub(super) fn in_key_order<V: Copy>(m: &BTreeMap<u32, V>) -> Vec<(u32, V)> {
    let mut entries: Vec<(u32, V)> = m.iter().map(|(k, v)| (*k, *v)).collect();
    entries.sort_by_key(|(k, _)| k.to_string());
    entries
}

/// Every node: its Raft role and reachability, the master's view of its health and
/// heartbeats, and what it reports (instances, resources, version).
fn print_nodes(s: &ClusterStatus, nodes: &[NodeView]) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                n.id.to_string(),
                n.addr.clone(),
                if s.leader_id == Some(n.id) {
                    format!("{} (leader)", n.role)
                } else {
                    n.role.clone()
                },
                or_dash(
                    n.health
                        .and_then(|h| as_json(&h).as_str().map(String::from)),
                ),
                or_dash(n.last_heartbeat_ms.map(|ms| format!("{ms} ms"))),
                or_dash(n.instances.map(|i| i.to_string())),
                match n.reachable {
                    Some(true) => "reachable".into(),
                    Some(false) => "unreachable".into(),
                    None if n.role == "agent" => "-".into(),
                    None => "unknown".into(),
                },
                or_dash(n.last_contact_ms.map(|ms| format!("{ms} ms"))),
                resources_text(&n.resources),
                or_dash(n.version.clone()),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ADDRESS",
            "ROLE",
            "HEALTH",
            "HEARTBEAT",
            "INSTANCES",
            "STATUS",
            "LAST CONTACT",
            "RESOURCES",
            "VERSION",
            "LABELS",
        ],
        &rows,
    );
}

/// A node's reported resources in a few words: "4 cpus 12% 1.20G/7.80G"; "-" if unknown.
fn resources_text(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(cpus) = r["cpus"].as_u64() {
        parts.push(format!("{cpus} cpus"));
    }
    if let Some(pct) = r["cpu_percent"].as_f64() {
        parts.push(format!("{pct:.0}%"));
    }
    if let (Some(used), Some(total)) = (r["mem_used_bytes"].as_u64(), r["mem_total_bytes"].as_u64())
    {
        parts.push(format!("{}/{}", bytes_text(used), bytes_text(total)));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// Prints `v` as JSON, or the line `text` makes of it.
fn show<T: Serialize>(v: &T, json: bool, text: impl FnOnce(&T) -> String) {
    if json {
        print_reply(v);
    } else {
        outln!("{}", text(v));
    }
}
