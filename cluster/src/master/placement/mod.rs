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
//!
//! A pass works from indexes built once per pass (`index.rs`), O(log n) per instance, and the
//! master skips apps found settled whose inputs did not change (`memo.rs`). `oracle.rs` keeps
//! the first, node-by-node pass as the test oracle the indexed one must agree with.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;

mod index;
mod memo;
mod spread;

use index::AppView;
use index::Index;
pub use memo::PlacementMemo;

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

/// One placement pass over every app.
pub fn plan(reg: &Registry, input: &PlacementInput) -> Plan {
    plan_with(reg, input, &mut PlacementMemo::default())
}

/// One placement pass that skips the apps `memo` knows to be settled and unchanged (see
/// `memo.rs`): the same plan as [`plan`], with less work.
pub fn plan_with(reg: &Registry, input: &PlacementInput, memo: &mut PlacementMemo) -> Plan {
    let mut plan = Plan::default();
    memo.begin(reg, &input.live);
    let mut budget = input.reschedule_budget;
    let mut index = Index::new(reg, input);
    let relocate: HashMap<(&str, u32), NodeId> = input
        .relocate
        .iter()
        .map(|(r, n)| ((r.app.as_str(), r.instance), *n))
        .collect();

    for (name, app) in &reg.apps {
        if memo.skip(reg, input, name, app) {
            continue;
        }
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
        let mut extra = false;
        if let Some(p) = placed {
            for (&i, _) in p.range(app.instances..) {
                extra = true;
                plan.unassign.push(InstanceRef {
                    app: name.clone(),
                    instance: i,
                });
            }
        }
        if needs.is_empty() {
            let rebalance = spread::rebalance(reg, name, app, &mut index);
            memo.record(reg, name, app, !extra && rebalance.is_none());
            if let Some(m) = rebalance {
                tracing::debug!(app = %name, instance = m.instance, from = m.from.get(), to = m.to.get(), "evening out the spread");
                index.add(m.to);
                index.remove(m.from);
                plan.moves.push(m);
            }
            continue;
        }
        memo.record(reg, name, app, false);
        let mut per_spread: HashMap<String, u32> = HashMap::new();
        for (&n, &c) in &per_node {
            if reg.nodes.contains_key(&n) {
                *per_spread.entry(spread_value(reg, app, n)).or_default() += c;
            }
        }
        let g = index.group(app);
        // Nodes at `max_per_node` for this app leave the group while it is placed.
        let max = app.placement.max_per_node;
        let mut full: Vec<NodeId> = Vec::new();
        if let Some(max) = max {
            for (&n, &c) in &per_node {
                if c >= max && index.suspend(g, n) {
                    full.push(n);
                }
            }
        }
        let mut count_on = |index: &mut Index<'_>, per_node: &mut HashMap<NodeId, u32>, n| {
            let c = per_node.entry(n).or_default();
            *c += 1;
            if max.is_some_and(|max| *c >= max) && index.suspend(g, n) {
                full.push(n);
            }
        };
        let mut view = AppView::new(&index, g, |v| per_spread.get(v).copied().unwrap_or(0));
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
                    count_on(&mut index, &mut per_node, n);
                    if let Some(v) = index.value_of(g, n) {
                        view.refresh(&index, v);
                    }
                }
                continue;
            }
            let Some((_, to)) = view.best(&index, current) else {
                tracing::debug!(app = %name, instance = i, "no eligible node; instance stays where it is");
                if let Some(n) = current {
                    count_on(&mut index, &mut per_node, n);
                    if let Some(v) = index.value_of(g, n) {
                        view.refresh(&index, v);
                    }
                }
                continue;
            };
            if singleton && let Need::Move(_) = need {
                // Stop first; placed again once its node reports it stopped.
                plan.unassign.push(key);
                continue;
            }
            index.add(to);
            count_on(&mut index, &mut per_node, to);
            if let Some(v) = index.value_of(g, to) {
                view.bump(&index, v);
            }
            if let Some(n) = current {
                index.remove(n);
                if let Some(v) = index.value_of(g, n) {
                    view.refresh(&index, v);
                }
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
        index.resume(g, full);
    }
    plan
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
