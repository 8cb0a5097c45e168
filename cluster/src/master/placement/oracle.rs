//! The first placement pass, kept as the test oracle of the indexed one in `mod.rs`: for every
//! instance it scans every node (O(nodes × instances)), which is too slow past a few thousand
//! nodes but simple enough to trust. The property test in `tests.rs` asserts both plan the same.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::HashMap;

use super::Need;
use super::PlacementInput;
use super::Plan;
use super::matches_constraints;
use super::resource_score;
use super::spread_value;
use crate::registry::App;
use crate::registry::Assignment;
use crate::registry::InstanceMove;
use crate::registry::InstanceRef;
use crate::registry::NodeId;
use crate::registry::NodeStatus;
use crate::registry::OnDisconnect;
use crate::registry::Registry;

/// Nodes that may take one more instance of `app`: usable, matching its constraints, and below
/// `max_per_node` given `count` (its instances per node so far).
fn eligible(
    reg: &Registry,
    app: &App,
    usable: &impl Fn(NodeId) -> bool,
    count: impl Fn(NodeId) -> u32,
) -> Vec<NodeId> {
    reg.nodes
        .values()
        .filter(|rec| usable(rec.id) && matches_constraints(app, rec))
        .filter(|rec| {
            app.placement
                .max_per_node
                .is_none_or(|max| count(rec.id) < max)
        })
        .map(|rec| rec.id)
        .collect()
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

pub(super) fn plan(reg: &Registry, input: &PlacementInput) -> Plan {
    let mut plan = Plan::default();
    let mut budget = input.reschedule_budget;
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
            if let Some(m) = rebalance(reg, name, app, &usable, &load, input) {
                tracing::debug!(app = %name, instance = m.instance, from = m.from.get(), to = m.to.get(), "evening out the spread");
                *load.entry(m.to).or_default() += 1;
                if let Some(l) = load.get_mut(&m.from) {
                    *l = l.saturating_sub(1);
                }
                plan.moves.push(m);
            }
            continue;
        }
        let spread_of = |id: NodeId| spread_value(reg, app, id);
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
            let off_offline = current.is_some_and(|n| {
                reg.nodes
                    .get(&n)
                    .is_some_and(|r| r.status == NodeStatus::Offline)
            });
            if off_offline && budget == Some(0) {
                plan.held += 1;
                if let Some(n) = current {
                    *per_node.entry(n).or_default() += 1;
                }
                continue;
            }
            let mut candidates = eligible(reg, app, &usable, |id| {
                per_node.get(&id).copied().unwrap_or(0)
            });
            candidates.retain(|&id| Some(id) != current);
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
                _ => {
                    if off_offline {
                        plan.rescheduled += 1;
                        if let Some(b) = budget.as_mut() {
                            *b -= 1;
                        }
                    }
                    plan.assign.push(Assignment {
                        app: name.clone(),
                        instance: i,
                        node: to,
                    })
                }
            }
        }
    }
    plan
}

/// One move that evens out a settled app's spread: an instance from the fullest value of the
/// spread label to the least-loaded eligible node of a value holding at least two fewer.
fn rebalance(
    reg: &Registry,
    name: &str,
    app: &App,
    usable: &impl Fn(NodeId) -> bool,
    load: &HashMap<NodeId, u32>,
    input: &PlacementInput,
) -> Option<InstanceMove> {
    app.placement.spread.as_ref()?;
    let settled = reg.moves.get(name).is_none_or(BTreeMap::is_empty)
        && reg.restarts.get(name).is_none_or(|r| r.pending.is_empty());
    if app.on_disconnect == OnDisconnect::Stop || !settled {
        return None;
    }
    let placed = reg.assignments.get(name)?;
    let value_of = |id: NodeId| spread_value(reg, app, id);
    let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
    for &n in placed.values() {
        *per_node.entry(n).or_default() += 1;
    }
    let mut per_value: BTreeMap<String, u32> = BTreeMap::new();
    for (&n, &c) in &per_node {
        *per_value.entry(value_of(n)).or_default() += c;
    }
    let count_of = |v: &str| per_value.get(v).copied().unwrap_or(0);
    let targets = eligible(reg, app, usable, |id| {
        per_node.get(&id).copied().unwrap_or(0)
    });
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
