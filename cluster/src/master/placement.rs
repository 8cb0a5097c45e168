//! Placement: which node runs each instance. Pure: (registry, live nodes, resources) → the
//! writes of one pass. Rules:
//! - an instance without a node, or on an offline/left node, is placed on an eligible node;
//! - an instance on a draining node (or one whose labels no longer match) is moved, the old
//!   copy running until the new one does — except for `on_disconnect = "stop"` apps, which
//!   must never run twice: those are unassigned first and placed again once no reachable node
//!   reports them live;
//! - eligible: online, answering this master, every constraint label matches, fewer than
//!   `max_per_node` instances of the app there;
//! - among eligible nodes: the value of the `spread` label with the fewest instances of the
//!   app first, then the least-loaded node (fewest instances of any app; resources break ties);
//! - an app whose instances all stay put but whose spread is uneven (a value holds two or more
//!   instances more than an eligible value, say after it was placed while a node was unheard or
//!   offline) gets one move per pass (start new, then stop old) towards the emptiest value;
//!   one at a time and never during another move or a rolling restart, so it converges
//!   without flapping. Singletons never move for spread.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;

use super::health::Usage;
use crate::registry::App;
use crate::registry::Assignment;
use crate::registry::InstanceMove;
use crate::registry::InstanceRef;
use crate::registry::NodeId;
use crate::registry::NodeRecord;
use crate::registry::NodeStatus;
use crate::registry::OnDisconnect;
use crate::registry::Registry;

/// The writes of one placement pass (each list is one registry command).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub assign: Vec<Assignment>,
    pub moves: Vec<InstanceMove>,
    pub unassign: Vec<InstanceRef>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.assign.is_empty() && self.moves.is_empty() && self.unassign.is_empty()
    }
}

/// What placement knows beyond the registry.
#[derive(Clone, Debug, Default)]
pub struct PlacementInput {
    /// Nodes that answered this master's heartbeats (a node the master never heard gets no work).
    pub live: BTreeSet<NodeId>,
    /// Latest reported resources per node (tie-break between equally loaded nodes).
    pub usage: HashMap<NodeId, Usage>,
    /// Instances to take off the node they are on (crash loops), with that node.
    pub relocate: Vec<(InstanceRef, NodeId)>,
    /// Instances a reachable (not offline or left) node reports live: a singleton
    /// (`on_disconnect = "stop"`) is not placed while its old copy still runs somewhere.
    pub running: HashSet<InstanceRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Not running anywhere that counts: assign outright.
    Place,
    /// Running on a node it should leave: start elsewhere, then stop there.
    Move(NodeId),
}

pub fn matches_constraints(app: &App, node: &NodeRecord) -> bool {
    app.placement
        .constraints
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
}

fn resource_score(usage: Option<&Usage>) -> f64 {
    usage.map_or(0.0, Usage::score)
}

/// The node with the fewest instances of any app; resources, then the id, break ties.
fn least_loaded(
    nodes: impl Iterator<Item = NodeId>,
    load: &HashMap<NodeId, u32>,
    input: &PlacementInput,
) -> Option<NodeId> {
    nodes.min_by(|&a, &b| {
        let la = load.get(&a).copied().unwrap_or(0);
        let lb = load.get(&b).copied().unwrap_or(0);
        la.cmp(&lb)
            .then_with(|| {
                resource_score(input.usage.get(&a))
                    .partial_cmp(&resource_score(input.usage.get(&b)))
                    .unwrap_or(Ordering::Equal)
            })
            .then(a.cmp(&b))
    })
}

/// One move that evens out a settled app's spread: an instance from the fullest value of the
/// spread label to the least-loaded eligible node of a value holding at least two fewer.
fn rebalance_spread(
    reg: &Registry,
    name: &str,
    app: &App,
    usable: &impl Fn(NodeId) -> bool,
    load: &HashMap<NodeId, u32>,
    input: &PlacementInput,
) -> Option<InstanceMove> {
    let label = app.placement.spread.as_ref()?;
    let settled = reg.moves.get(name).is_none_or(BTreeMap::is_empty)
        && reg.restarts.get(name).is_none_or(|r| r.pending.is_empty());
    if app.on_disconnect == OnDisconnect::Stop || !settled {
        return None;
    }
    let placed = reg.assignments.get(name)?;
    let value_of = |id: NodeId| -> String {
        reg.nodes
            .get(&id)
            .and_then(|n| n.labels.get(label))
            .cloned()
            .unwrap_or_default()
    };
    let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
    for &n in placed.values() {
        *per_node.entry(n).or_default() += 1;
    }
    let mut per_value: BTreeMap<String, u32> = BTreeMap::new();
    for (&n, &c) in &per_node {
        *per_value.entry(value_of(n)).or_default() += c;
    }
    let count_of = |v: &str| per_value.get(v).copied().unwrap_or(0);
    let targets: Vec<NodeId> = reg
        .nodes
        .values()
        .filter(|rec| usable(rec.id) && matches_constraints(app, rec))
        .filter(|rec| {
            app.placement
                .max_per_node
                .is_none_or(|max| per_node.get(&rec.id).copied().unwrap_or(0) < max)
        })
        .map(|rec| rec.id)
        .collect();
    let emptiest = targets.iter().map(|&id| count_of(&value_of(id))).min()?;
    let (fullest_value, fullest) = per_value
        .iter()
        .max_by_key(|&(_, &c)| c)
        .map(|(v, &c)| (v.clone(), c))?;
    if fullest < emptiest + 2 {
        return None;
    }
    let to = least_loaded(
        targets
            .iter()
            .copied()
            .filter(|&id| count_of(&value_of(id)) == emptiest),
        load,
        input,
    )?;
    // From the node of the fullest value that holds the most of this app (then the busiest).
    let (&from, _) = per_node
        .iter()
        .filter(|&(&n, _)| value_of(n) == fullest_value)
        .max_by_key(|&(&n, &c)| (c, load.get(&n).copied().unwrap_or(0)))?;
    let instance = placed
        .iter()
        .filter(|&(_, &n)| n == from)
        .map(|(&i, _)| i)
        .max()?;
    Some(InstanceMove {
        app: name.to_string(),
        instance,
        from,
        to,
    })
}

pub fn plan(reg: &Registry, input: &PlacementInput) -> Plan {
    let mut plan = Plan::default();
    let usable = |id: NodeId| {
        reg.nodes
            .get(&id)
            .is_some_and(|n| n.status == NodeStatus::Online && input.live.contains(&id))
    };
    // Instances per node over all apps, as the pass goes.
    let mut load: HashMap<NodeId, u32> = HashMap::new();
    for instances in reg.assignments.values() {
        for &n in instances.values() {
            *load.entry(n).or_default() += 1;
        }
    }
    let relocate: HashMap<(&str, u32), NodeId> = input
        .relocate
        .iter()
        .map(|(r, n)| ((r.app.as_str(), r.instance), *n))
        .collect();

    for (name, app) in &reg.apps {
        let placed = reg.assignments.get(name);
        let mut needs: Vec<(u32, Need, Option<NodeId>)> = Vec::new();
        // Instances of this app per node and per spread value, counting those that stay.
        let mut per_node: HashMap<NodeId, u32> = HashMap::new();
        for i in 0..app.instances {
            let current = placed.and_then(|p| p.get(&i)).copied();
            let moving = reg.moving_from_node(name, i).is_some();
            let need = match current {
                None => Some(Need::Place),
                Some(n) => match reg.nodes.get(&n) {
                    None => Some(Need::Place),
                    Some(rec) => match rec.status {
                        NodeStatus::Offline | NodeStatus::Left => Some(Need::Place),
                        _ if moving => None, // a move is in progress towards a healthy node
                        NodeStatus::Draining => Some(Need::Move(n)),
                        NodeStatus::Online if !matches_constraints(app, rec) => Some(Need::Move(n)),
                        NodeStatus::Online => relocate
                            .get(&(name.as_str(), i))
                            .filter(|&&bad| bad == n)
                            .map(|_| Need::Place),
                    },
                },
            };
            match need {
                Some(need) => needs.push((i, need, current)),
                None => {
                    if let Some(n) = current {
                        *per_node.entry(n).or_default() += 1;
                    }
                }
            }
        }
        if let Some(p) = placed {
            for (&i, _) in p.range(app.instances..) {
                plan.unassign.push(InstanceRef {
                    app: name.clone(),
                    instance: i,
                });
            }
        }
        if needs.is_empty() {
            if let Some(m) = rebalance_spread(reg, name, app, &usable, &load, input) {
                tracing::debug!(app = %name, instance = m.instance, from = m.from, to = m.to, "evening out the spread");
                *load.entry(m.to).or_default() += 1;
                if let Some(l) = load.get_mut(&m.from) {
                    *l = l.saturating_sub(1);
                }
                plan.moves.push(m);
            }
            continue;
        }
        let spread_of = |id: NodeId| -> String {
            match &app.placement.spread {
                Some(label) => reg.nodes[&id]
                    .labels
                    .get(label)
                    .cloned()
                    .unwrap_or_default(),
                None => String::new(),
            }
        };
        let mut per_spread: BTreeMap<String, u32> = BTreeMap::new();
        for (&n, &c) in &per_node {
            if reg.nodes.contains_key(&n) {
                *per_spread.entry(spread_of(n)).or_default() += c;
            }
        }
        let singleton = app.on_disconnect == OnDisconnect::Stop;
        for (i, need, current) in needs {
            let key = InstanceRef {
                app: name.clone(),
                instance: i,
            };
            if singleton && need == Need::Place && input.running.contains(&key) {
                tracing::debug!(app = %name, instance = i, "singleton still running elsewhere; placing it once it stopped");
                continue;
            }
            let candidates: Vec<NodeId> = reg
                .nodes
                .values()
                .filter(|rec| usable(rec.id) && Some(rec.id) != current)
                .filter(|rec| matches_constraints(app, rec))
                .filter(|rec| {
                    app.placement
                        .max_per_node
                        .is_none_or(|max| per_node.get(&rec.id).copied().unwrap_or(0) < max)
                })
                .map(|rec| rec.id)
                .collect();
            let best_spread = candidates
                .iter()
                .map(|&id| per_spread.get(&spread_of(id)).copied().unwrap_or(0))
                .min();
            let chosen = least_loaded(
                candidates.iter().copied().filter(|&id| {
                    Some(per_spread.get(&spread_of(id)).copied().unwrap_or(0)) == best_spread
                }),
                &load,
                input,
            );
            let Some(to) = chosen else {
                tracing::debug!(app = %name, instance = i, "no eligible node; instance stays where it is");
                if let Some(n) = current {
                    *per_node.entry(n).or_default() += 1;
                }
                continue;
            };
            if singleton && let Need::Move(_) = need {
                // Stop first; placed again once its node reports it stopped.
                plan.unassign.push(key);
                continue;
            }
            *per_node.entry(to).or_default() += 1;
            *per_spread.entry(spread_of(to)).or_default() += 1;
            *load.entry(to).or_default() += 1;
            if let Some(n) = current
                && let Some(l) = load.get_mut(&n)
            {
                *l = l.saturating_sub(1);
            }
            match need {
                Need::Move(from) => {
                    plan.moves.push(InstanceMove {
                        app: name.clone(),
                        instance: i,
                        from,
                        to,
                    });
                }
                _ => plan.assign.push(Assignment {
                    app: name.clone(),
                    instance: i,
                    node: to,
                }),
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Placement;
    use crate::registry::RegistryCommand;

    fn node(id: NodeId, labels: &[(&str, &str)]) -> NodeRecord {
        NodeRecord {
            id,
            addr: format!("n{id}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeRecord::default()
        }
    }

    fn registry(nodes: Vec<NodeRecord>) -> Registry {
        let mut r = Registry::default();
        r.apply(&RegistryCommand::UpsertNodes { nodes });
        r
    }

    fn put(r: &mut Registry, name: &str, instances: u32, placement: Placement) {
        r.apply(&RegistryCommand::PutApp {
            name: name.into(),
            app: App {
                instances,
                placement,
                ..App::default()
            },
        });
    }

    fn live(r: &Registry) -> PlacementInput {
        PlacementInput {
            live: r.nodes.keys().copied().collect(),
            ..PlacementInput::default()
        }
    }

    fn apply(r: &mut Registry, plan: &Plan) {
        if !plan.assign.is_empty() {
            assert!(
                r.apply(&RegistryCommand::Assign {
                    assignments: plan.assign.clone()
                })
                .is_applied()
            );
        }
        if !plan.moves.is_empty() {
            assert!(
                r.apply(&RegistryCommand::Move {
                    moves: plan.moves.clone()
                })
                .is_applied()
            );
        }
    }

    fn nodes_of(r: &Registry, app: &str) -> Vec<NodeId> {
        r.assignments
            .get(app)
            .map(|a| a.values().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn constraints_limit_the_nodes_and_least_loaded_goes_first() {
        let mut r = registry(vec![
            node(1, &[("role", "web")]),
            node(2, &[("role", "db")]),
            node(3, &[("role", "web")]),
        ]);
        put(&mut r, "other", 1, Placement::default());
        r.apply(&RegistryCommand::Assign {
            assignments: vec![Assignment {
                app: "other".into(),
                instance: 0,
                node: 1,
            }],
        });
        let web = Placement {
            constraints: [("role".to_string(), "web".to_string())].into(),
            ..Placement::default()
        };
        put(&mut r, "api", 3, web);
        let plan = plan(&r, &live(&r));
        assert!(plan.moves.is_empty() && plan.unassign.is_empty());
        let placed: Vec<NodeId> = plan.assign.iter().map(|a| a.node).collect();
        assert_eq!(
            placed,
            vec![3, 1, 3],
            "node 1 already runs one instance of another app"
        );
    }

    #[test]
    fn spread_goes_across_label_values_and_max_per_node_holds() {
        let mut r = registry(vec![
            node(1, &[("zone", "a")]),
            node(2, &[("zone", "a")]),
            node(3, &[("zone", "b")]),
        ]);
        put(
            &mut r,
            "api",
            4,
            Placement {
                spread: Some("zone".into()),
                max_per_node: Some(1),
                ..Placement::default()
            },
        );
        let p = plan(&r, &live(&r));
        apply(&mut r, &p);
        let zones: Vec<&str> = nodes_of(&r, "api")
            .iter()
            .map(|n| r.nodes[n].labels["zone"].as_str())
            .collect();
        assert_eq!(
            zones.len(),
            3,
            "the fourth instance has no node left: {zones:?}"
        );
        assert_eq!(zones.iter().filter(|z| **z == "b").count(), 1);
        let mut nodes = nodes_of(&r, "api");
        nodes.sort();
        assert_eq!(nodes, vec![1, 2, 3]);
        // The first two instances went to different zones.
        assert_ne!(
            r.nodes[&r.assignments["api"][&0]].labels["zone"],
            r.nodes[&r.assignments["api"][&1]].labels["zone"]
        );
        assert!(
            plan(&r, &live(&r)).is_empty(),
            "a settled plan writes nothing"
        );
    }

    #[test]
    fn an_uneven_spread_is_evened_out_one_move_at_a_time() {
        let mut r = registry(vec![
            node(1, &[("zone", "a")]),
            node(2, &[("zone", "b")]),
            node(3, &[("zone", "b")]),
        ]);
        let spread = Placement {
            spread: Some("zone".into()),
            ..Placement::default()
        };
        put(&mut r, "api", 4, spread);
        // Placed while only node 1 was heard: all four in zone a.
        let mut input = live(&r);
        input.live = [1].into();
        let p = plan(&r, &input);
        assert!(p.assign.iter().all(|a| a.node == 1), "{p:?}");
        apply(&mut r, &p);
        // Nodes 2 and 3 answer: one instance moves per pass, never two at once.
        let input = live(&r);
        let mut moved = Vec::new();
        for _ in 0..10 {
            let p = plan(&r, &input);
            if p.is_empty() {
                break;
            }
            assert!(p.assign.is_empty() && p.unassign.is_empty(), "{p:?}");
            assert_eq!(p.moves.len(), 1, "{p:?}");
            assert_eq!(p.moves[0].from, 1);
            apply(&mut r, &p);
            assert!(
                plan(&r, &input).is_empty(),
                "nothing else moves while a move is in progress"
            );
            let done = vec![InstanceRef {
                app: "api".into(),
                instance: p.moves[0].instance,
            }];
            assert!(
                r.apply(&RegistryCommand::FinishMoves { instances: done })
                    .is_applied()
            );
            moved.push(p.moves[0].to);
        }
        let mut zones: Vec<&str> = nodes_of(&r, "api")
            .iter()
            .map(|n| r.nodes[n].labels["zone"].as_str())
            .collect();
        zones.sort();
        assert_eq!(zones, ["a", "a", "b", "b"]);
        assert_eq!(moved, [2, 3], "least-loaded node of zone b first");
        assert!(plan(&r, &input).is_empty(), "a balanced spread stays put");
    }

    #[test]
    fn instances_on_an_offline_node_are_rescheduled_and_silent_nodes_get_nothing() {
        let mut r = registry(vec![node(1, &[]), node(2, &[]), node(3, &[])]);
        put(&mut r, "api", 2, Placement::default());
        let p = plan(&r, &live(&r));
        apply(&mut r, &p);
        let victim = r.assignments["api"][&0];
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(victim, NodeStatus::Offline)],
        });
        let mut input = live(&r);
        let silent = (1..=3)
            .find(|&n| n != victim && !nodes_of(&r, "api").contains(&n))
            .expect("a free node");
        input.live.remove(&silent);
        let p = plan(&r, &input);
        assert_eq!(p.assign.len(), 1, "{p:?}");
        assert_eq!(p.assign[0].instance, 0);
        assert_ne!(p.assign[0].node, victim);
        assert_ne!(
            p.assign[0].node, silent,
            "a node this master never heard gets no work"
        );
    }

    #[test]
    fn a_draining_node_moves_keep_apps_and_stops_singletons_before_placing_them() {
        let mut r = registry(vec![node(1, &[]), node(2, &[])]);
        put(&mut r, "api", 1, Placement::default());
        r.apply(&RegistryCommand::PutApp {
            name: "single".into(),
            app: App {
                instances: 1,
                on_disconnect: OnDisconnect::Stop,
                ..App::default()
            },
        });
        r.apply(&RegistryCommand::Assign {
            assignments: vec![
                Assignment {
                    app: "api".into(),
                    instance: 0,
                    node: 1,
                },
                Assignment {
                    app: "single".into(),
                    instance: 0,
                    node: 1,
                },
            ],
        });
        r.apply(&RegistryCommand::DrainNode {
            node: 1,
            drain: true,
        });
        let mut input = live(&r);
        input.running = [0u32]
            .iter()
            .flat_map(|&i| {
                ["api", "single"].map(|app| InstanceRef {
                    app: app.into(),
                    instance: i,
                })
            })
            .collect();
        let p = plan(&r, &input);
        assert_eq!(
            p.moves,
            vec![InstanceMove {
                app: "api".into(),
                instance: 0,
                from: 1,
                to: 2
            }]
        );
        assert!(
            p.assign.is_empty(),
            "a singleton is not started next to its old copy"
        );
        assert_eq!(
            p.unassign,
            vec![InstanceRef {
                app: "single".into(),
                instance: 0
            }]
        );
        apply(&mut r, &p);
        r.apply(&RegistryCommand::Unassign {
            instances: p.unassign.clone(),
        });
        let waiting = plan(&r, &input);
        assert!(
            waiting.is_empty(),
            "the move in progress is left alone and the singleton waits: {waiting:?}"
        );
        input.running.retain(|i| i.app != "single");
        assert_eq!(
            plan(&r, &input).assign,
            vec![Assignment {
                app: "single".into(),
                instance: 0,
                node: 2
            }],
            "placed once its old copy stopped"
        );
    }

    #[test]
    fn a_crash_looping_instance_goes_elsewhere_and_extra_instances_are_unassigned() {
        let mut r = registry(vec![node(1, &[]), node(2, &[])]);
        put(&mut r, "api", 1, Placement::default());
        r.apply(&RegistryCommand::Assign {
            assignments: vec![Assignment {
                app: "api".into(),
                instance: 0,
                node: 1,
            }],
        });
        let mut input = live(&r);
        input.relocate = vec![(
            InstanceRef {
                app: "api".into(),
                instance: 0,
            },
            1,
        )];
        let p = plan(&r, &input);
        assert_eq!(
            p.assign,
            vec![Assignment {
                app: "api".into(),
                instance: 0,
                node: 2
            }]
        );
        // A relocation decided for another node is stale: ignored.
        input.relocate = vec![(
            InstanceRef {
                app: "api".into(),
                instance: 0,
            },
            2,
        )];
        assert!(plan(&r, &input).is_empty());
        // Registry entries beyond the desired count (never produced by apply) are unassigned.
        r.assignments.get_mut("api").expect("api").insert(5, 1);
        assert_eq!(
            plan(&r, &live(&r)).unassign,
            vec![InstanceRef {
                app: "api".into(),
                instance: 5
            }]
        );
    }

    #[test]
    fn resources_break_ties_between_equally_loaded_nodes() {
        let r = {
            let mut r = registry(vec![node(1, &[]), node(2, &[])]);
            put(&mut r, "api", 1, Placement::default());
            r
        };
        let mut input = live(&r);
        let usage = |cpu_percent| Usage {
            cpu_percent,
            mem_used_bytes: 1.0,
            mem_total_bytes: 2.0,
            load1: 0.0,
        };
        input.usage.insert(1, usage(90.0));
        input.usage.insert(2, usage(5.0));
        assert_eq!(plan(&r, &input).assign[0].node, 2);
    }
}
