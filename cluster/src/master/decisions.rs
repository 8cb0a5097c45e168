//! The master's decisions beyond placement, each a pure function of the registry and the nodes'
//! latest reports: finishing moves, advancing rolling restarts node by node, spotting crash
//! loops (with a budget per instance), and whether a drain is done.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use super::health::NodeReport;
use super::health::ReportedInstance;
use crate::agent::status_is_live;
use crate::registry::InstanceRef;
use crate::registry::NodeId;
use crate::registry::NodeStatus;
use crate::registry::Registry;
use crate::registry::RegistryCommand;

/// The latest report of each node this master heard.
pub type Reports<'a> = HashMap<NodeId, &'a NodeReport>;

fn gone(reg: &Registry, node: NodeId) -> bool {
    reg.nodes
        .get(&node)
        .is_none_or(|n| matches!(n.status, NodeStatus::Offline | NodeStatus::Left))
}

fn runs(reports: &Reports<'_>, node: NodeId, app: &str, instance: u32) -> bool {
    reports
        .get(&node)
        .and_then(|r| r.instance(app, instance))
        .is_some_and(|i| i.status == "running")
}

/// Moves whose old copy may stop: the new copy runs, or either side is gone.
pub fn finished_moves(reg: &Registry, reports: &Reports<'_>) -> Vec<InstanceRef> {
    let mut done = Vec::new();
    for (app, moving) in &reg.moves {
        for (&instance, &from) in moving {
            let finished = match reg.assigned_node(app, instance) {
                None => true,
                Some(to) => gone(reg, from) || runs(reports, to, app, instance),
            };
            if finished {
                done.push(InstanceRef {
                    app: app.clone(),
                    instance,
                });
            }
        }
    }
    done
}

/// The next step of every rolling restart: when no rolled instance is still coming back, roll
/// the pending instances of the next node (lowest id first), plus any pending instance that
/// runs nowhere reachable (nothing to wait for there).
pub fn next_rolls(
    reg: &Registry,
    reports: &Reports<'_>,
    live: &BTreeSet<NodeId>,
) -> Vec<RegistryCommand> {
    let mut out = Vec::new();
    for (name, state) in &reg.restarts {
        if state.pending.is_empty() {
            continue;
        }
        let Some(app) = reg.apps.get(name) else {
            continue;
        };
        let reachable = |n: NodeId| live.contains(&n) && !gone(reg, n);
        let in_flight = (0..app.instances).any(|i| {
            if state.pending.contains_key(&i) {
                return false;
            }
            let Some(n) = reg.assigned_node(name, i) else {
                return false;
            };
            if !reachable(n) {
                return false;
            }
            !reports
                .get(&n)
                .and_then(|r| r.instance(name, i))
                .is_some_and(|r| r.status == "running" && r.generation == state.generation)
        });
        if in_flight {
            continue;
        }
        let mut roll = Vec::new();
        let mut next_node: Option<NodeId> = None;
        for &i in state.pending.keys() {
            match reg.assigned_node(name, i) {
                Some(n) if reachable(n) => {
                    next_node = Some(next_node.map_or(n, |m| m.min(n)));
                }
                _ => roll.push(i),
            }
        }
        if let Some(n) = next_node {
            roll.extend(
                state
                    .pending
                    .keys()
                    .copied()
                    .filter(|&i| reg.assigned_node(name, i) == Some(n)),
            );
        }
        if !roll.is_empty() {
            roll.sort_unstable();
            out.push(RegistryCommand::RollInstances {
                app: name.clone(),
                instances: roll,
                generation: state.generation,
            });
        }
    }
    out
}

/// How often one instance may be moved for crashing, per window.
#[derive(Debug)]
pub struct CrashBudget {
    pub max_moves: usize,
    pub window: Duration,
    moves: HashMap<InstanceRef, VecDeque<Instant>>,
}

impl Default for CrashBudget {
    /// Three moves per instance per hour.
    fn default() -> Self {
        CrashBudget {
            max_moves: 3,
            window: Duration::from_secs(3600),
            moves: HashMap::new(),
        }
    }
}

impl CrashBudget {
    /// Instances reported `crashed` by the node they are assigned to, within budget.
    pub fn candidates(
        &mut self,
        reg: &Registry,
        reports: &Reports<'_>,
        now: Instant,
    ) -> Vec<(InstanceRef, NodeId)> {
        let mut out = Vec::new();
        for (&node, report) in reports {
            for i in &report.instances {
                if i.status != "crashed"
                    || reg.assigned_node(&i.app, i.instance) != Some(node)
                    || reg.moving_from_node(&i.app, i.instance).is_some()
                {
                    continue;
                }
                let key = InstanceRef {
                    app: i.app.clone(),
                    instance: i.instance,
                };
                if self.allowed(&key, now) {
                    out.push((key, node));
                }
            }
        }
        out.sort();
        out
    }

    fn allowed(&mut self, key: &InstanceRef, now: Instant) -> bool {
        let window = self.window;
        let recent = self.moves.entry(key.clone()).or_default();
        while recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            recent.pop_front();
        }
        recent.len() < self.max_moves
    }

    pub fn record(&mut self, key: InstanceRef, now: Instant) {
        self.moves.entry(key).or_default().push_back(now);
    }
}

/// Whether a drain is over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub node: NodeId,
    /// The node is marked for draining.
    pub draining: bool,
    /// Nothing is assigned to the node, no move from it is pending, and its latest report shows
    /// no cluster instance running.
    pub done: bool,
    /// What still keeps the drain from being done.
    pub remaining: Vec<InstanceRef>,
    /// The master has a report from the node (without one, nothing can be confirmed).
    pub reported: bool,
}

/// `report`: the instances in the node's latest heartbeat reply, if the master has one.
pub fn drain_status(
    reg: &Registry,
    node: NodeId,
    report: Option<&[ReportedInstance]>,
) -> DrainStatus {
    let mut remaining: BTreeSet<InstanceRef> = reg.instances_on(node).into_iter().collect();
    remaining.extend(reg.moving_from(node));
    if let Some(r) = report {
        remaining.extend(
            r.iter()
                .filter(|i| status_is_live(&i.status))
                .map(|i| InstanceRef {
                    app: i.app.clone(),
                    instance: i.instance,
                }),
        );
    }
    DrainStatus {
        node,
        draining: reg.nodes.get(&node).is_some_and(|n| n.drain),
        done: remaining.is_empty() && report.is_some(),
        remaining: remaining.into_iter().collect(),
        reported: report.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ids;
    use crate::registry::App;
    use crate::registry::Assignment;
    use crate::registry::InstanceMove;
    use crate::registry::NodeRecord;

    fn registry(instances: u32, nodes: &[NodeId]) -> Registry {
        let mut r = Registry::default();
        r.apply(&RegistryCommand::PutApp {
            name: "api".into(),
            app: App {
                instances,
                ..App::default()
            },
        });
        r.apply(&RegistryCommand::UpsertNodes {
            nodes: nodes
                .iter()
                .map(|&id| NodeRecord {
                    id,
                    ..NodeRecord::default()
                })
                .collect(),
        });
        r
    }

    fn report(instances: &[(u32, &str, u64)]) -> NodeReport {
        NodeReport {
            version: "t".into(),
            resources_json: String::new(),
            usage: Default::default(),
            instances: instances
                .iter()
                .map(|&(instance, status, generation)| ReportedInstance {
                    app: "api".into(),
                    instance,
                    status: status.into(),
                    pid: None,
                    restarts: 0,
                    generation,
                })
                .collect(),
            report_version: 0,
        }
    }

    fn at(r: &mut Registry, placements: &[(u32, NodeId)]) {
        r.apply(&RegistryCommand::Assign {
            assignments: placements
                .iter()
                .map(|&(instance, node)| Assignment {
                    app: "api".into(),
                    instance,
                    node,
                })
                .collect(),
        });
    }

    #[test]
    fn a_drain_is_done_only_when_the_new_copy_runs_and_the_old_one_stopped() {
        let mut r = registry(1, &[NodeId(1), NodeId(2)]);
        at(&mut r, &[(0, NodeId(1))]);
        r.apply(&RegistryCommand::DrainNode {
            node: NodeId(1),
            drain: true,
        });
        r.apply(&RegistryCommand::Move {
            moves: vec![InstanceMove {
                app: "api".into(),
                instance: 0,
                from: NodeId(1),
                to: NodeId(2),
            }],
        });
        let old = report(&[(0, "running", 0)]);
        let starting = report(&[(0, "starting", 0)]);
        let mut reports: Reports<'_> = HashMap::from([(NodeId(1), &old), (NodeId(2), &starting)]);
        assert!(
            finished_moves(&r, &reports).is_empty(),
            "the new copy is not running yet"
        );
        let s = drain_status(&r, NodeId(1), Some(&old.instances));
        assert!(!s.done && s.draining);
        assert_eq!(s.remaining.len(), 1);

        let running = report(&[(0, "running", 0)]);
        reports.insert(NodeId(2), &running);
        let done = finished_moves(&r, &reports);
        assert_eq!(done.len(), 1);
        r.apply(&RegistryCommand::FinishMoves { instances: done });
        assert!(
            !drain_status(&r, NodeId(1), Some(&old.instances)).done,
            "the old copy still runs"
        );
        let stopping = report(&[(0, "stopping", 0)]);
        assert!(!drain_status(&r, NodeId(1), Some(&stopping.instances)).done);
        let empty = report(&[]);
        assert!(
            !drain_status(&r, NodeId(1), None).done,
            "no report, no confirmation"
        );
        assert!(drain_status(&r, NodeId(1), Some(&empty.instances)).done);
    }

    #[test]
    fn a_move_whose_old_node_went_offline_is_finished_at_once() {
        let mut r = registry(1, &[NodeId(1), NodeId(2)]);
        r.apply(&RegistryCommand::Move {
            moves: vec![InstanceMove {
                app: "api".into(),
                instance: 0,
                from: NodeId(1),
                to: NodeId(2),
            }],
        });
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(NodeId(1), NodeStatus::Offline)],
        });
        assert_eq!(finished_moves(&r, &HashMap::new()).len(), 1);
    }

    #[test]
    fn a_rolling_restart_goes_one_node_at_a_time() {
        let mut r = registry(3, &[NodeId(1), NodeId(2), NodeId(3)]);
        at(&mut r, &[(0, NodeId(1)), (1, NodeId(2)), (2, NodeId(3))]);
        r.apply(&RegistryCommand::RestartApp {
            name: "api".into(),
            generation: 1,
        });
        let live: BTreeSet<NodeId> = ids([1, 2, 3]).into_iter().collect();
        let (a, b, c) = (
            report(&[(0, "running", 0)]),
            report(&[(1, "running", 0)]),
            report(&[(2, "running", 0)]),
        );
        let reports: Reports<'_> =
            HashMap::from([(NodeId(1), &a), (NodeId(2), &b), (NodeId(3), &c)]);
        let rolls = next_rolls(&r, &reports, &live);
        assert_eq!(
            rolls,
            vec![RegistryCommand::RollInstances {
                app: "api".into(),
                instances: vec![0],
                generation: 1
            }]
        );
        r.apply(&rolls[0]);
        assert!(
            next_rolls(&r, &reports, &live).is_empty(),
            "node 1 has not reported the restart yet"
        );
        let a2 = report(&[(0, "starting", 1)]);
        let reports: Reports<'_> =
            HashMap::from([(NodeId(1), &a2), (NodeId(2), &b), (NodeId(3), &c)]);
        assert!(next_rolls(&r, &reports, &live).is_empty());
        let a3 = report(&[(0, "running", 1)]);
        let reports: Reports<'_> =
            HashMap::from([(NodeId(1), &a3), (NodeId(2), &b), (NodeId(3), &c)]);
        let rolls = next_rolls(&r, &reports, &live);
        assert_eq!(
            rolls,
            vec![RegistryCommand::RollInstances {
                app: "api".into(),
                instances: vec![1],
                generation: 1
            }]
        );
        // Node 3 is unreachable: its instance is rolled with the next step, nothing to wait for.
        r.apply(&rolls[0]);
        let b2 = report(&[(1, "running", 1)]);
        let reports: Reports<'_> = HashMap::from([(NodeId(1), &a3), (NodeId(2), &b2)]);
        let live: BTreeSet<NodeId> = ids([1, 2]).into_iter().collect();
        let rolls = next_rolls(&r, &reports, &live);
        assert_eq!(
            rolls,
            vec![RegistryCommand::RollInstances {
                app: "api".into(),
                instances: vec![2],
                generation: 1
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn crash_moves_are_limited_per_instance_and_window() {
        let mut r = registry(1, &[NodeId(1), NodeId(2)]);
        at(&mut r, &[(0, NodeId(1))]);
        let crashed = report(&[(0, "crashed", 0)]);
        let reports: Reports<'_> = HashMap::from([(NodeId(1), &crashed)]);
        let mut budget = CrashBudget::default();
        for _ in 0..3 {
            let c = budget.candidates(&r, &reports, crate::clock::now());
            assert_eq!(c.len(), 1);
            budget.record(c[0].0.clone(), crate::clock::now());
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        assert!(
            budget
                .candidates(&r, &reports, crate::clock::now())
                .is_empty(),
            "budget spent"
        );
        tokio::time::advance(Duration::from_secs(3600 - 180)).await;
        assert_eq!(
            budget.candidates(&r, &reports, crate::clock::now()).len(),
            1,
            "the window moved on"
        );
        // A crash reported by a node the instance is no longer assigned to is ignored.
        at(&mut r, &[(0, NodeId(2))]);
        assert!(
            budget
                .candidates(&r, &reports, crate::clock::now())
                .is_empty()
        );
    }
}
