//! `herd cluster ...`: asks the local daemon's ClusterAdmin service and prints the answer.

use super::ClusterCommand;
use super::client::{Target, status_error};
use super::output::{print_json, table};
use anyhow::Context;
use herd_proto::supervisor as pb;
use herd_proto::supervisor::cluster_admin_client::ClusterAdminClient;
use serde_json::Value;

pub async fn run(target: &Target, command: ClusterCommand) -> anyhow::Result<()> {
    let channel = super::client::channel(target).await?;
    let mut c = ClusterAdminClient::new(channel);
    let parse = |r: tonic::Response<pb::JsonReply>| -> anyhow::Result<Value> {
        serde_json::from_str(&r.into_inner().json)
            .context("the daemon sent JSON that does not parse")
    };
    match command {
        ClusterCommand::Status { json } => {
            let s = parse(
                c.status(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&s);
            } else {
                outln!(
                    "cluster {}: node {} ({}) is {}; leader {} at {}; term {}; committed {}",
                    s["cluster"].as_str().unwrap_or("?"),
                    s["node_id"],
                    s["advertise"].as_str().unwrap_or("?"),
                    s["role"].as_str().unwrap_or("?"),
                    s["leader_id"],
                    s["leader_addr"].as_str().unwrap_or("-"),
                    s["term"],
                    s["committed_index"]
                );
                print_members(&s);
            }
        }
        ClusterCommand::Nodes { json } => {
            let s = parse(
                c.status(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&s["members"]);
            } else {
                print_members(&s);
            }
        }
        ClusterCommand::Leader { json } => {
            let s = parse(
                c.status(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            let v = serde_json::json!({ "leader_id": s["leader_id"], "leader_addr": s["leader_addr"], "term": s["term"] });
            if json {
                print_json(&v);
            } else if s["leader_id"].is_null() {
                outln!("no leader known (term {})", s["term"]);
            } else {
                outln!(
                    "{} at {} (term {})",
                    s["leader_id"],
                    s["leader_addr"].as_str().unwrap_or("?"),
                    s["term"]
                );
            }
        }
        ClusterCommand::StepDown { json } => {
            let v = parse(
                c.step_down(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| {
                format!(
                    "leader {} stepped down; a new leader is being elected",
                    v["stepped_down"]
                )
            });
        }
        ClusterCommand::Leave { json } => {
            let v = parse(
                c.leave(pb::ClusterRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| format!("node {} left the cluster", v["left"]));
        }
        ClusterCommand::Deploy { file, json } => {
            let req = super::commands::file_request(&file)?;
            let v = parse(c.deploy(req).await.map_err(status_error)?)?;
            if json {
                print_json(&v);
            } else {
                for n in v["deployed"].as_array().into_iter().flatten() {
                    outln!("deployed {}", n.as_str().unwrap_or("?"));
                }
            }
        }
        ClusterCommand::Undeploy { name, json } => {
            let v = parse(
                c.undeploy(pb::NameRequest { name })
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| {
                format!("undeployed {}", v["undeployed"].as_str().unwrap_or("?"))
            });
        }
        ClusterCommand::Drain {
            node,
            no_wait,
            timeout,
            json,
        } => {
            let mut v = parse(
                c.drain(pb::DrainRequest {
                    node: node.clone(),
                    drain: Some(true),
                })
                .await
                .map_err(status_error)?,
            )?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            while !no_wait && v["done"] != true {
                if std::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "node {node} is still draining after {timeout}s; remaining: {}",
                        v["remaining"]
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                v = parse(
                    c.drain(pb::DrainRequest {
                        node: node.clone(),
                        drain: None,
                    })
                    .await
                    .map_err(status_error)?,
                )?;
            }
            if json {
                print_json(&v)
            } else if v["done"] == true {
                outln!("node {} drained: nothing runs there", v["node"])
            } else {
                outln!("node {} draining; remaining: {}", v["node"], v["remaining"])
            }
        }
        ClusterCommand::Undrain { node, json } => {
            let v = parse(
                c.drain(pb::DrainRequest {
                    node,
                    drain: Some(false),
                })
                .await
                .map_err(status_error)?,
            )?;
            show(&v, json, |v| {
                format!("node {} takes instances again", v["node"])
            });
        }
        ClusterCommand::Restart {
            name,
            wait,
            timeout,
            json,
        } => {
            let v = parse(
                c.restart_app(pb::NameRequest { name: name.clone() })
                    .await
                    .map_err(status_error)?,
            )?;
            if wait {
                let generation = v["generation"].as_u64().unwrap_or(0);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
                loop {
                    let apps = parse(
                        c.apps(pb::ClusterRequest::default())
                            .await
                            .map_err(status_error)?,
                    )?;
                    let app = apps
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["name"] == name.as_str())
                        .cloned()
                        .unwrap_or_default();
                    let progress = RollProgress::of(&app, generation);
                    if progress.done() {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        anyhow::bail!(
                            "the rolling restart of {name} is not done after {timeout}s: {} of {} instances restarted and running; still to roll: {:?}",
                            progress.rolled,
                            progress.desired,
                            progress.pending
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            show(&v, json, |v| {
                format!(
                    "rolling restart of {} {} (generation {})",
                    v["restarting"].as_str().unwrap_or("?"),
                    if wait { "done" } else { "started" },
                    v["generation"]
                )
            });
        }
        ClusterCommand::Scale {
            name,
            instances,
            json,
        } => {
            let v = parse(
                c.scale(pb::ScaleRequest { name, instances })
                    .await
                    .map_err(status_error)?,
            )?;
            show(&v, json, |v| {
                format!(
                    "{} scaled to {} instances",
                    v["scaled"].as_str().unwrap_or("?"),
                    v["instances"]
                )
            });
        }
        ClusterCommand::Uptime { node, days, json } => {
            let v = parse(
                c.uptime(pb::ClusterRequest { stale: false })
                    .await
                    .map_err(status_error)?,
            )?;
            let now_ms = crate::supervisor::now_ms();
            let report = super::uptime::Report::from_json(&v, node.as_deref(), days, now_ms);
            if json {
                print_json(&report.to_json());
            } else {
                out!(
                    "{}",
                    report.render(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                );
            }
        }
        ClusterCommand::Apps { stale, json } => {
            let v = parse(
                c.apps(pb::ClusterRequest { stale })
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let placed = a["assignments"].as_object().map(|m| m.len()).unwrap_or(0);
                    let running = match a["running"].as_array() {
                        Some(r) => r
                            .iter()
                            .filter(|i| i["status"] == "running")
                            .count()
                            .to_string(),
                        None => "?".into(),
                    };
                    let nodes: Vec<String> = a["assignments"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(i, n)| format!("{i}@{n}"))
                        .collect();
                    vec![
                        a["name"].as_str().unwrap_or("?").to_string(),
                        a["desired"].to_string(),
                        placed.to_string(),
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

fn print_members(s: &Value) {
    let leader = s["leader_id"].clone();
    let rows: Vec<Vec<String>> = s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let labels: Vec<String> = m["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            vec![
                m["id"].to_string(),
                m["addr"].as_str().unwrap_or("?").to_string(),
                if m["id"] == leader {
                    format!("{} (leader)", m["role"].as_str().unwrap_or("?"))
                } else {
                    m["role"].as_str().unwrap_or("?").to_string()
                },
                match m["reachable"].as_bool() {
                    Some(true) => "reachable".into(),
                    Some(false) => "unreachable".into(),
                    None => "unknown".into(),
                },
                m["last_contact_ms"]
                    .as_u64()
                    .map(|ms| format!("{ms} ms"))
                    .unwrap_or_else(|| "-".into()),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
            ]
        })
        .collect();
    table(
        &["ID", "ADDRESS", "ROLE", "STATUS", "LAST CONTACT", "LABELS"],
        &rows,
    );
}

/// Prints `v` as JSON, or the line `text` makes of it.
fn show(v: &Value, json: bool, text: impl FnOnce(&Value) -> String) {
    if json {
        print_json(v);
    } else {
        outln!("{}", text(v));
    }
}

/// How far a rolling restart has come, from one app of `herd cluster apps --json`.
#[derive(Debug, PartialEq)]
struct RollProgress {
    desired: u64,
    /// Instances running at (or past) the generation asked for.
    rolled: u64,
    pending: Vec<u64>,
}

impl RollProgress {
    fn of(app: &Value, generation: u64) -> Self {
        let pending = app["restart"]["pending"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(i, _)| i.parse().ok())
            .collect();
        let rolled = app["running"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["status"] == "running" && r["generation"].as_u64() >= Some(generation))
            .filter_map(|r| r["instance"].as_u64())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        Self {
            desired: app["desired"].as_u64().unwrap_or(0),
            rolled,
            pending,
        }
    }

    fn done(&self) -> bool {
        self.pending.is_empty() && self.rolled >= self.desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_roll_is_done_when_nothing_is_pending_and_every_instance_runs_the_new_generation() {
        let app = |pending: Value, gens: [u64; 2]| {
            json!({
                "desired": 2,
                "restart": { "generation": 3, "pending": pending },
                "running": [
                    { "instance": 0, "status": "running", "generation": gens[0] },
                    { "instance": 1, "status": "running", "generation": gens[1] },
                ],
            })
        };
        let p = RollProgress::of(&app(json!({ "1": 2 }), [3, 2]), 3);
        assert_eq!((p.rolled, p.pending.clone()), (1, vec![1]));
        assert!(!p.done());
        // Rolled but not yet back at the new generation.
        assert!(!RollProgress::of(&app(json!({}), [3, 2]), 3).done());
        assert!(RollProgress::of(&app(json!({}), [3, 3]), 3).done());
    }
}
