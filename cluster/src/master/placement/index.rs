//! The indexes one placement pass works from, so a pass costs about O(nodes + instances · log
//! nodes) instead of scanning every node for every instance:
//! - a **group** per distinct (constraints, spread label) among the apps placed in the pass,
//!   built once, on first use: the usable nodes matching the constraints, split by their value
//!   of the spread label (one value, "", without a spread label), each value an ordered set of
//!   [`Key`]s (instances of any app, then resource score, then id), so its least-loaded node
//!   is its first;
//! - the load of every node, kept in step with every group holding the node as the pass
//!   places instances;
//! - per app being placed, an [`AppView`]: its instances per spread value and each value's
//!   least-loaded node, ordered by (instances, that node's key), so the best node is the first
//!   entry (the second when the first is the node the instance leaves), also for a label with
//!   thousands of values. A node at the app's `max_per_node` is taken out of the group's sets
//!   while that app is placed (`suspend`) and put back after (`resume`), so no query walks
//!   past full nodes.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use super::PlacementInput;
use super::matches_constraints;
use super::resource_score;
use crate::registry::App;
use crate::registry::NodeId;
use crate::registry::NodeRecord;
use crate::registry::NodeStatus;
use crate::registry::Registry;

/// Where a node sorts among eligible ones: fewest instances of any app first, then the lowest
/// resource score, then the lowest id (the order `least_loaded` always used; scores compare
/// in IEEE total order, so a NaN a node might report sorts at one end instead of making the
/// order inconsistent).
#[derive(Clone, Copy, Debug)]
pub(super) struct Key {
    load: u32,
    score: f64,
    pub(super) id: NodeId,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.load
            .cmp(&other.load)
            .then_with(|| self.score.total_cmp(&other.score))
            .then(self.id.cmp(&other.id))
    }
}

/// The usable nodes matching one constraint set, by value of one spread label.
struct Group {
    /// Value index → the nodes of that value, least loaded first.
    sets: Vec<BTreeSet<Key>>,
    /// Value → its index.
    value_index: HashMap<String, usize>,
}

pub(super) struct Index<'a> {
    input: &'a PlacementInput,
    /// Online nodes that answered this master, in id order.
    usable: Vec<&'a NodeRecord>,
    /// Instances per node over all apps, as the pass goes.
    load: HashMap<NodeId, u32>,
    groups: Vec<Group>,
    group_of: HashMap<(&'a BTreeMap<String, String>, Option<&'a str>), usize>,
    /// Node → (group, value) of every group holding it.
    member_of: HashMap<NodeId, Vec<(usize, usize)>>,
}

impl<'a> Index<'a> {
    pub(super) fn new(reg: &'a Registry, input: &'a PlacementInput) -> Index<'a> {
        let mut load: HashMap<NodeId, u32> = HashMap::new();
        for instances in reg.assignments.values() {
            for &n in instances.values() {
                *load.entry(n).or_default() += 1;
            }
        }
        Index {
            input,
            usable: reg
                .nodes
                .values()
                .filter(|n| n.status == NodeStatus::Online && input.live.contains(&n.id))
                .collect(),
            load,
            groups: Vec::new(),
            group_of: HashMap::new(),
            member_of: HashMap::new(),
        }
    }

    pub(super) fn load(&self, id: NodeId) -> u32 {
        self.load.get(&id).copied().unwrap_or(0)
    }

    fn key(&self, id: NodeId) -> Key {
        Key {
            load: self.load(id),
            // `+ 0.0` makes -0.0 equal to 0.0, as the comparison always had it.
            score: resource_score(self.input.usage.get(&id)) + 0.0,
            id,
        }
    }

    /// The group of `app`'s constraints and spread label, built on first use in the pass.
    pub(super) fn group(&mut self, app: &'a App) -> usize {
        let spread = app.placement.spread.as_deref();
        let wanted = (&app.placement.constraints, spread);
        if let Some(&g) = self.group_of.get(&wanted) {
            return g;
        }
        let g = self.groups.len();
        let mut group = Group {
            sets: Vec::new(),
            value_index: HashMap::new(),
        };
        for rec in &self.usable {
            if !matches_constraints(app, rec) {
                continue;
            }
            let value = spread
                .and_then(|label| rec.labels.get(label))
                .map_or("", String::as_str);
            let v = match group.value_index.get(value) {
                Some(&v) => v,
                None => {
                    group
                        .value_index
                        .insert(value.to_string(), group.sets.len());
                    group.sets.push(BTreeSet::new());
                    group.sets.len() - 1
                }
            };
            group.sets[v].insert(self.key(rec.id));
            self.member_of.entry(rec.id).or_default().push((g, v));
        }
        self.groups.push(group);
        self.group_of.insert(wanted, g);
        g
    }

    /// The value index of node `id` in group `g` (`None`: not in the group).
    pub(super) fn value_of(&self, g: usize, id: NodeId) -> Option<usize> {
        self.member_of
            .get(&id)?
            .iter()
            .find(|&&(gg, _)| gg == g)
            .map(|&(_, v)| v)
    }

    /// Re-sorts node `id` in every group holding it after its load changed (`change`).
    fn set_load(&mut self, id: NodeId, change: impl FnOnce(&mut HashMap<NodeId, u32>)) {
        let before = self.key(id);
        change(&mut self.load);
        let after = self.key(id);
        if let Some(members) = self.member_of.get(&id) {
            for &(g, v) in members {
                let set = &mut self.groups[g].sets[v];
                // A node suspended from a set stays out of it.
                if set.remove(&before) {
                    set.insert(after);
                }
            }
        }
    }

    /// One more instance on `id`.
    pub(super) fn add(&mut self, id: NodeId) {
        self.set_load(id, |load| *load.entry(id).or_default() += 1);
    }

    /// One instance less on `id`.
    pub(super) fn remove(&mut self, id: NodeId) {
        self.set_load(id, |load| {
            if let Some(l) = load.get_mut(&id) {
                *l = l.saturating_sub(1);
            }
        });
    }

    /// Takes node `id` out of group `g` until `resume` (it reached an app's `max_per_node`).
    /// Whether it was there.
    pub(super) fn suspend(&mut self, g: usize, id: NodeId) -> bool {
        let key = self.key(id);
        match self.value_of(g, id) {
            Some(v) => self.groups[g].sets[v].remove(&key),
            None => false,
        }
    }

    /// Puts suspended nodes back into group `g`, sorted by their load now.
    pub(super) fn resume(&mut self, g: usize, ids: impl IntoIterator<Item = NodeId>) {
        for id in ids {
            let key = self.key(id);
            if let Some(v) = self.value_of(g, id) {
                self.groups[g].sets[v].insert(key);
            }
        }
    }
}

/// One app's instances per spread value of its group, and each value's least-loaded node, so
/// the best node for the app is found in O(log n) however many values the label has. Every
/// change to a value's set while the app is placed is followed by `refresh` of that value.
pub(super) struct AppView {
    g: usize,
    counts: Vec<u32>,
    /// Each value's first node (`None`: none left).
    first: Vec<Option<Key>>,
    /// (count, first node, value) of every value with a node left.
    order: BTreeSet<(u32, Key, usize)>,
}

impl AppView {
    /// `count`: the app's instances on a spread value.
    pub(super) fn new(index: &Index<'_>, g: usize, count: impl Fn(&str) -> u32) -> AppView {
        let sets = &index.groups[g].sets;
        let mut counts = vec![0; sets.len()];
        for (value, &v) in &index.groups[g].value_index {
            counts[v] = count(value);
        }
        let first: Vec<Option<Key>> = sets.iter().map(|s| s.first().copied()).collect();
        let order = first
            .iter()
            .enumerate()
            .filter_map(|(v, k)| k.map(|k| (counts[v], k, v)))
            .collect();
        AppView {
            g,
            counts,
            first,
            order,
        }
    }

    /// Value `v`'s set changed: its first node again.
    pub(super) fn refresh(&mut self, index: &Index<'_>, v: usize) {
        if let Some(k) = self.first[v] {
            self.order.remove(&(self.counts[v], k, v));
        }
        self.first[v] = index.groups[self.g].sets[v].first().copied();
        if let Some(k) = self.first[v] {
            self.order.insert((self.counts[v], k, v));
        }
    }

    /// One more instance of the app on spread value `v` (whose set may have changed too).
    pub(super) fn bump(&mut self, index: &Index<'_>, v: usize) {
        if let Some(k) = self.first[v] {
            self.order.remove(&(self.counts[v], k, v));
        }
        self.counts[v] += 1;
        self.first[v] = None;
        self.refresh(index, v);
    }

    /// The eligible node (other than `except`) of the spread value holding the fewest of the
    /// app, least loaded first; with that value's count.
    pub(super) fn best(&self, index: &Index<'_>, except: Option<NodeId>) -> Option<(u32, NodeId)> {
        // `except` is the first node of at most one value: that value's candidate is its
        // second node, which may still beat the next value's first.
        let mut held: Option<(u32, Key)> = None;
        for &(count, k, v) in &self.order {
            if Some(k.id) != except {
                let here = (count, k);
                let best = held.map_or(here, |h| h.min(here));
                return Some((best.0, best.1.id));
            }
            held = index.groups[self.g].sets[v]
                .iter()
                .nth(1)
                .map(|&k| (count, k));
        }
        held.map(|(c, k)| (c, k.id))
    }
}
