//! Evening out an uneven spread: one start-new-then-stop-old move per pass for an app that is
//! otherwise settled, from the fullest value of its spread label towards an eligible value
//! holding at least two fewer. Each move narrows the gap and none runs during another, so it
//! converges without flapping.

use std::collections::BTreeMap;

use super::index::AppView;
use super::index::Index;
use super::spread_value;
use crate::registry::App;
use crate::registry::InstanceMove;
use crate::registry::NodeId;
use crate::registry::OnDisconnect;
use crate::registry::Registry;

/// One move that evens out a settled app's spread: an instance from the fullest value of the
/// spread label to the least-loaded eligible node of a value holding at least two fewer.
pub(super) fn rebalance<'a>(
    reg: &'a Registry,
    name: &str,
    app: &'a App,
    index: &mut Index<'a>,
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
    let (fullest_value, fullest) = per_value
        .iter()
        .max_by_key(|&(_, &c)| c)
        .map(|(v, &c)| (v.clone(), c))?;
    if fullest < 2 {
        return None; // no value can hold two fewer
    }
    // The least-loaded node of the emptiest value, nodes at `max_per_node` left out.
    let g = index.group(app);
    let full: Vec<NodeId> = app.placement.max_per_node.map_or_else(Vec::new, |max| {
        per_node
            .iter()
            .filter(|&(_, &c)| c >= max)
            .map(|(&n, _)| n)
            .filter(|&n| index.suspend(g, n))
            .collect()
    });
    let view = AppView::new(index, g, |v| per_value.get(v).copied().unwrap_or(0));
    let best = view.best(index, None);
    index.resume(g, full);
    let (emptiest, to) = best?;
    if fullest < emptiest + 2 {
        return None;
    }
    // From the node of the fullest value that holds the most of this app (then the busiest).
    let (&from, _) = per_node
        .iter()
        .filter(|&(&n, _)| value_of(n) == fullest_value)
        .max_by_key(|&(&n, &c)| (c, index.load(n)))?;
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
