//! `node_offline` events: the master's health sweep marks a silent node `Offline` in the
//! registry; the daemon of the node that leads sees the change in its replica and records it
//! in its own event log (app `-`), where hooks and `herd events` find it. Only the leader's
//! daemon records it, so a cluster says it once (twice at most, if leadership moves in the
//! very moment). Nodes already offline when this node starts leading are not announced again.

use crate::supervisor::events::EventLog;
use herd_cluster::ClusterNode;
use herd_cluster::registry::{NodeStatus, Registry};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs until the node shuts down.
pub async fn announce(node: std::sync::Weak<ClusterNode>, events: EventLog) {
    let (mut registry, mut leadership) = match node.upgrade() {
        Some(n) => (n.registry(), n.leader_changes()),
        None => return,
    };
    let mut known = statuses(&registry.borrow());
    loop {
        tokio::select! {
            r = registry.changed() => if r.is_err() { return },
            r = leadership.changed() => {
                if r.is_err() { return }
                // A new leader judges from what it finds.
                known = statuses(&registry.borrow());
                continue;
            }
        }
        let reg = registry.borrow_and_update().clone();
        if leadership.borrow().is_leader() {
            for (id, addr) in newly_offline(&known, &reg) {
                events.emit(
                    "-",
                    None,
                    None,
                    "node_offline",
                    serde_json::json!({ "node": id, "addr": addr }),
                );
            }
        }
        known = statuses(&reg);
    }
}

/// The nodes `reg` has offline that `known` had in another status (id, address).
fn newly_offline(known: &BTreeMap<u64, NodeStatus>, reg: &Registry) -> Vec<(u64, String)> {
    reg.nodes
        .iter()
        .filter(|(id, rec)| {
            rec.status == NodeStatus::Offline
                && known
                    .get(&id.get())
                    .is_some_and(|s| *s != NodeStatus::Offline)
        })
        .map(|(id, rec)| (id.get(), rec.addr.clone()))
        .collect()
}

fn statuses(reg: &Arc<Registry>) -> BTreeMap<u64, NodeStatus> {
    reg.nodes
        .iter()
        .map(|(id, n)| (id.get(), n.status))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_cluster::registry::NodeRecord;

    fn reg(nodes: &[(u64, NodeStatus)]) -> Arc<Registry> {
        let mut r = Registry::default();
        for (id, status) in nodes {
            let id = herd_cluster::NodeId(*id);
            r.nodes.insert(
                id,
                NodeRecord {
                    id,
                    addr: format!("10.0.0.{}:9700", id.get()),
                    status: *status,
                    ..NodeRecord::default()
                },
            );
        }
        Arc::new(r)
    }

    #[test]
    fn only_a_change_to_offline_is_announced() {
        use NodeStatus::*;
        let before = statuses(&reg(&[(1, Online), (2, Online), (3, Offline)]));
        let after = reg(&[(1, Online), (2, Offline), (3, Offline), (4, Offline)]);
        assert_eq!(
            newly_offline(&before, &after),
            vec![(2, "10.0.0.2:9700".to_string())],
            "3 was offline already and 4 is new"
        );
    }
}
