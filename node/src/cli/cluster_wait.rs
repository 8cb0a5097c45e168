//! Waiting on the cluster: `cluster drain` until nothing runs on the node, `cluster restart
//! --wait` until every instance runs the new generation. Both poll the leader every half
//! second, show a count on a terminal (`progress`), and give up at their deadline with
//! exit code 6; the drain or the roll itself goes on.

use super::client::{AuthChannel, status_error};
use super::cluster::{as_json, in_key_order, parse};
use super::exit::{CliError, Code};
use super::progress::Progress;
use crate::cluster::replies::{DeployedApp, DrainStatus};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::cluster_admin_client::ClusterAdminClient;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);

type Admin = ClusterAdminClient<AuthChannel>;

/// Polls `node`'s drain from its first answer `v` until it is done; counts the instances
/// moved off it.
pub async fn drained(
    c: &mut Admin,
    node: &str,
    mut v: DrainStatus,
    timeout: u64,
    json: bool,
) -> anyhow::Result<DrainStatus> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let progress = (!v.done)
        .then(|| Progress::counter(json, format!("draining node {node}: instances moved")));
    // The most instances seen left at once: how many the drain has had to move.
    let mut most = v.remaining.len() as u64;
    while !v.done {
        let left = v.remaining.len() as u64;
        most = most.max(left);
        if let Some(p) = &progress {
            p.set(most - left, most);
        }
        if Instant::now() > deadline {
            return Err(CliError::new(
                Code::TimedOut,
                format!(
                    "node {node} is still draining after {timeout}s; remaining: {}",
                    as_json(&v.remaining)
                ),
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
        v = parse(
            c.drain(pb::DrainRequest {
                node: node.to_string(),
                drain: None,
            })
            .await
            .map_err(status_error)?,
        )?;
    }
    Ok(v)
}

/// Polls the cluster's apps until every instance of `name` runs at `generation`; counts them.
pub async fn rolled(
    c: &mut Admin,
    name: &str,
    generation: u64,
    timeout: u64,
    json: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let bar = Progress::counter(
        json,
        format!("rolling restart of {name}: instances restarted and running"),
    );
    loop {
        let apps: Vec<DeployedApp> = parse(
            c.apps(pb::ClusterRequest::default())
                .await
                .map_err(status_error)?,
        )?;
        // An app that is gone has nothing left to roll.
        let roll = apps
            .iter()
            .find(|a| a.name == name)
            .map(|a| RollProgress::of(a, generation))
            .unwrap_or_default();
        bar.set(roll.rolled.min(roll.desired), roll.desired);
        if roll.done() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::new(
                Code::TimedOut,
                format!(
                    "the rolling restart of {name} is not done after {timeout}s: {} of {} instances restarted and running; still to roll: {:?}",
                    roll.rolled, roll.desired, roll.pending
                ),
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How far a rolling restart has come, from one app of `herd cluster apps`.
#[derive(Debug, Default, PartialEq)]
struct RollProgress {
    desired: u64,
    /// Instances running at (or past) the generation asked for.
    rolled: u64,
    pending: Vec<u64>,
}

impl RollProgress {
    fn of(app: &DeployedApp, generation: u64) -> Self {
        let pending = app
            .restart
            .as_ref()
            .map(|r| {
                in_key_order(&r.pending)
                    .into_iter()
                    .map(|(i, _)| u64::from(i))
                    .collect()
            })
            .unwrap_or_default();
        let rolled = app
            .running
            .iter()
            .flatten()
            .filter(|r| r.status == "running" && r.generation >= generation)
            .map(|r| r.instance)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        Self {
            desired: u64::from(app.desired),
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
    use serde_json::{Value, json};

    #[test]
    fn a_roll_is_done_when_nothing_is_pending_and_every_instance_runs_the_new_generation() {
        let app = |pending: Value, gens: [u64; 2]| -> DeployedApp {
            serde_json::from_value(json!({
                "name": "api",
                "desired": 2,
                "placement": {},
                "on_disconnect": "keep",
                "assignments": { "0": 1, "1": 2 },
                "restart": { "generation": 3, "pending": pending },
                "running": [
                    { "node": 1, "instance": 0, "status": "running", "pid": 10, "generation": gens[0] },
                    { "node": 2, "instance": 1, "status": "running", "pid": 11, "generation": gens[1] },
                ],
            }))
            .unwrap()
        };
        let p = RollProgress::of(&app(json!({ "1": 2 }), [3, 2]), 3);
        assert_eq!((p.rolled, p.pending.clone()), (1, vec![1]));
        assert!(!p.done());
        // Rolled but not yet back at the new generation.
        assert!(!RollProgress::of(&app(json!({}), [3, 2]), 3).done());
        assert!(RollProgress::of(&app(json!({}), [3, 3]), 3).done());
    }
}
