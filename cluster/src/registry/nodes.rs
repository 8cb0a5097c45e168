//! Node registration: how a node that holds no Raft seat (an agent) enters the registry.

use super::NodeRecord;
use super::NodeStatus;
use super::Registry;

impl Registry {
    /// See `RegistryCommand::RegisterNode`. True if anything changed.
    pub(super) fn register_node(&mut self, node: &NodeRecord) -> bool {
        let mut changed = false;
        for other in self.nodes.values_mut() {
            if other.id != node.id && other.addr == node.addr && other.status != NodeStatus::Left {
                other.status = NodeStatus::Left;
                changed = true;
            }
        }
        let Some(old) = self.nodes.get_mut(&node.id) else {
            let mut new = node.clone();
            new.status = back_status(&new);
            self.nodes.insert(node.id, new);
            return true;
        };
        if old.addr != node.addr
            || old.labels != node.labels
            || old.version != node.version
            || old.agent_only != node.agent_only
        {
            old.addr = node.addr.clone();
            old.labels = node.labels.clone();
            old.version = node.version.clone();
            old.agent_only = node.agent_only;
            changed = true;
        }
        changed | revive(old)
    }
}

/// The status of a node that is (back) in the cluster: draining if it was asked to drain.
fn back_status(node: &NodeRecord) -> NodeStatus {
    if node.drain {
        NodeStatus::Draining
    } else {
        NodeStatus::Online
    }
}

/// A `Left` node that registers or is a member again is back; true if it was `Left`.
pub(super) fn revive(node: &mut NodeRecord) -> bool {
    if node.status != NodeStatus::Left {
        return false;
    }
    node.status = back_status(node);
    true
}

#[cfg(test)]
mod tests {
    use crate::NodeId;
    use crate::registry::NodeRecord;
    use crate::registry::NodeStatus;
    use crate::registry::Registry;
    use crate::registry::RegistryCommand;
    use crate::registry::RegistryResponse;

    fn record(id: u64, addr: &str) -> NodeRecord {
        NodeRecord {
            id: NodeId(id),
            addr: addr.into(),
            version: Some("1.0.0".into()),
            ..NodeRecord::default()
        }
    }

    fn register(r: &mut Registry, node: NodeRecord) -> RegistryResponse {
        r.apply(&RegistryCommand::RegisterNode { node })
    }

    #[test]
    fn registering_is_idempotent_and_keeps_status_and_drain() {
        let mut r = Registry::default();
        let applied = |changed| RegistryResponse::Applied { changed };
        assert_eq!(register(&mut r, record(7, "10.0.0.7:9700")), applied(true));
        assert_eq!(r.nodes[&NodeId(7)].status, NodeStatus::Online);
        assert_eq!(register(&mut r, record(7, "10.0.0.7:9700")), applied(false));
        r.apply(&RegistryCommand::DrainNode {
            node: NodeId(7),
            drain: true,
        });
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(NodeId(7), NodeStatus::Offline)],
        });
        let mut upgraded = record(7, "10.0.0.7:9700");
        upgraded.version = Some("1.1.0".into());
        assert_eq!(register(&mut r, upgraded), applied(true));
        assert_eq!(
            r.nodes[&NodeId(7)].status,
            NodeStatus::Offline,
            "the master judges health"
        );
        assert!(r.nodes[&NodeId(7)].drain);
        assert_eq!(r.nodes[&NodeId(7)].version.as_deref(), Some("1.1.0"));
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(NodeId(7), NodeStatus::Left)],
        });
        assert_eq!(register(&mut r, record(7, "10.0.0.7:9700")), applied(true));
        assert_eq!(
            r.nodes[&NodeId(7)].status,
            NodeStatus::Draining,
            "back, still draining"
        );
    }

    #[test]
    fn registering_several_at_once_is_registering_each_in_order() {
        let mut one_by_one = Registry::default();
        let nodes = vec![
            record(7, "10.0.0.7:9700"),
            record(8, "10.0.0.8:9700"),
            record(9, "10.0.0.7:9700"),
        ];
        for n in &nodes {
            register(&mut one_by_one, n.clone());
        }
        let mut batched = Registry::default();
        let out = batched.apply(&RegistryCommand::RegisterNodes {
            nodes: nodes.clone(),
        });
        assert_eq!(out, RegistryResponse::Applied { changed: true });
        assert_eq!(batched, one_by_one);
        assert_eq!(
            batched.apply(&RegistryCommand::RegisterNodes {
                nodes: nodes[1..].to_vec()
            }),
            RegistryResponse::Applied { changed: false }
        );
    }

    #[test]
    fn a_new_id_at_a_known_address_supersedes_the_old_record() {
        let mut r = Registry::default();
        register(&mut r, record(7, "10.0.0.7:9700"));
        register(&mut r, record(8, "10.0.0.8:9700"));
        register(&mut r, record(9, "10.0.0.7:9700"));
        assert_eq!(r.nodes[&NodeId(7)].status, NodeStatus::Left);
        assert_eq!(r.nodes[&NodeId(8)].status, NodeStatus::Online);
        assert_eq!(r.nodes[&NodeId(9)].status, NodeStatus::Online);
    }
}
