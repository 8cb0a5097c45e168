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

mod spread;

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
    /// How many of `assign` take an instance off an offline node.
    pub rescheduled: usize,
    /// Instances of offline nodes held back by `PlacementInput::reschedule_budget`.
    pub held: usize,
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
    /// How many instances may leave offline nodes in this pass (`None`: all of them); the rest
    /// stay assigned where they are until a later pass (see `master/storm.rs`).
    pub reschedule_budget: Option<usize>,
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

/// The value of `app`'s spread label on node `id` (empty without a spread label or a record).
pub(super) fn spread_value(reg: &Registry, app: &App, id: NodeId) -> String {
    app.placement
        .spread
        .as_ref()
        .and_then(|label| reg.nodes.get(&id)?.labels.get(label).cloned())
        .unwrap_or_default()
}

/// Nodes that may take one more instance of `app`: usable, matching its constraints, and below
/// `max_per_node` given `count` (its instances per node so far).
pub(super) fn eligible(
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
pub(super) fn least_loaded(
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

pub fn plan(reg: &Registry, input: &PlacementInput) -> Plan {
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
            if let Some(m) = spread::rebalance(reg, name, app, &usable, &load, input) {
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

#[cfg(test)]
mod tests;
