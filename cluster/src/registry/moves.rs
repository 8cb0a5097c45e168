//! Registry transitions of the master's lifecycle work: node records and statuses, drain,
//! moves ("start new, then stop old") and rolling restarts. Pure like the rest of `apply`.

use super::InstanceMove;
use super::InstanceRef;
use super::NodeId;
use super::NodeRecord;
use super::NodeStatus;
use super::Registry;
use super::RegistryResponse;
use super::apply::applied;
use super::apply::rejected;

impl Registry {
    /// A node marked for draining that is told `Online` becomes `Draining` instead.
    pub(super) fn set_node_status(&mut self, updates: &[(NodeId, NodeStatus)]) -> bool {
        let mut changed = false;
        for (id, status) in updates {
            if let Some(node) = self.nodes.get_mut(id) {
                let status = if *status == NodeStatus::Online && node.drain {
                    NodeStatus::Draining
                } else {
                    *status
                };
                if node.status != status {
                    node.status = status;
                    changed = true;
                }
            }
        }
        changed
    }

    pub(super) fn upsert_nodes(&mut self, nodes: &[NodeRecord]) -> bool {
        let mut changed = false;
        for n in nodes {
            let Some(old) = self.nodes.get_mut(&n.id) else {
                self.nodes.insert(n.id, n.clone());
                changed = true;
                continue;
            };
            if old.addr != n.addr || old.labels != n.labels {
                old.addr = n.addr.clone();
                old.labels = n.labels.clone();
                changed = true;
            }
            changed |= super::nodes::revive(old);
        }
        changed
    }

    pub(super) fn drain_node(&mut self, id: NodeId, drain: bool) -> RegistryResponse {
        let Some(node) = self.nodes.get_mut(&id) else {
            return rejected(format!(
                "node {id} not found; `herd cluster nodes` lists the nodes"
            ));
        };
        let before = (node.drain, node.status);
        node.drain = drain;
        node.status = match (drain, node.status) {
            (true, NodeStatus::Online) => NodeStatus::Draining,
            (false, NodeStatus::Draining) => NodeStatus::Online,
            (_, s) => s,
        };
        applied(before != (node.drain, node.status))
    }

    /// Validated as a whole like `Assign`. A move of an instance that is still moving keeps the
    /// node with the oldest running copy as `from` (unless the instance goes back to it).
    pub(super) fn move_instances(&mut self, moves: &[InstanceMove]) -> RegistryResponse {
        for m in moves {
            if let Err(reason) = self.check_placement(&m.app, m.instance, m.to) {
                return rejected(format!("move: {reason}"));
            }
        }
        let mut changed = false;
        for m in moves {
            let slot = self.assignments.entry(m.app.clone()).or_default();
            changed |= slot.insert(m.instance, m.to) != Some(m.to);
            let pending = self.moves.entry(m.app.clone()).or_default();
            let from = pending.get(&m.instance).copied().unwrap_or(m.from);
            if from == m.to {
                changed |= pending.remove(&m.instance).is_some();
            } else {
                changed |= pending.insert(m.instance, from) != Some(from);
            }
            if pending.is_empty() {
                self.moves.remove(&m.app);
            }
        }
        applied(changed)
    }

    pub(super) fn finish_moves(&mut self, instances: &[InstanceRef]) -> bool {
        let mut changed = false;
        for i in instances {
            if let Some(pending) = self.moves.get_mut(&i.app) {
                changed |= pending.remove(&i.instance).is_some();
                if pending.is_empty() {
                    self.moves.remove(&i.app);
                }
            }
        }
        changed
    }

    /// Every placed instance keeps its current generation as pending until rolled; instances
    /// placed later start at the new generation directly.
    pub(super) fn restart_app(&mut self, name: &str, generation: u64) -> RegistryResponse {
        if !self.apps.contains_key(name) {
            return rejected(format!(
                "app `{name}` not found; `herd cluster apps` lists the apps"
            ));
        }
        let placed: Vec<u32> = self
            .assignments
            .get(name)
            .map(|a| a.keys().copied().collect())
            .unwrap_or_default();
        // A generation not above the current one changes nothing, not even an empty entry.
        let current = self.restarts.get(name).map_or(0, |r| r.generation);
        if generation <= current {
            return applied(false);
        }
        let state = self.restarts.entry(name.to_string()).or_default();
        for i in placed {
            let current = state.generation_of(i);
            state.pending.entry(i).or_insert(current);
        }
        state.generation = generation;
        applied(true)
    }

    pub(super) fn roll_instances(&mut self, app: &str, instances: &[u32], generation: u64) -> bool {
        let Some(state) = self.restarts.get_mut(app) else {
            return false;
        };
        if state.generation != generation {
            return false;
        }
        let mut changed = false;
        for i in instances {
            changed |= state.pending.remove(i).is_some();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use crate::NodeId;
    use crate::Term;
    use crate::registry::App;
    use crate::registry::ApplyOutcome;
    use crate::registry::Assignment;
    use crate::registry::InstanceMove;
    use crate::registry::InstanceRef;
    use crate::registry::NodeRecord;
    use crate::registry::NodeStatus;
    use crate::registry::Registry;
    use crate::registry::RegistryCommand;
    use crate::registry::RegistryResponse;
    use crate::registry::StaleTerm;

    fn registry(instances: u32, nodes: &[u64]) -> Registry {
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
                    id: NodeId(id),
                    addr: format!("10.0.0.{id}:9700"),
                    ..NodeRecord::default()
                })
                .collect(),
        });
        r
    }

    fn mv(instance: u32, from: u64, to: u64) -> InstanceMove {
        InstanceMove {
            app: "api".into(),
            instance,
            from: NodeId(from),
            to: NodeId(to),
        }
    }

    fn applied(changed: bool) -> RegistryResponse {
        RegistryResponse::Applied { changed }
    }

    #[test]
    fn drain_survives_offline_and_back_and_undrain_restores_online() {
        let mut r = registry(1, &[1]);
        let drain = RegistryCommand::DrainNode {
            node: NodeId(1),
            drain: true,
        };
        assert_eq!(r.apply(&drain), applied(true));
        assert_eq!(r.apply(&drain), applied(false));
        assert_eq!(r.nodes[&NodeId(1)].status, NodeStatus::Draining);
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(NodeId(1), NodeStatus::Offline)],
        });
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(NodeId(1), NodeStatus::Online)],
        });
        assert_eq!(r.nodes[&NodeId(1)].status, NodeStatus::Draining);
        r.apply(&RegistryCommand::DrainNode {
            node: NodeId(1),
            drain: false,
        });
        assert_eq!(r.nodes[&NodeId(1)].status, NodeStatus::Online);
        let res = r.apply(&RegistryCommand::DrainNode {
            node: NodeId(9),
            drain: true,
        });
        assert!(!res.is_applied());
    }

    #[test]
    fn upsert_nodes_keeps_status_and_revives_a_left_member() {
        let mut r = registry(1, &[1, 2]);
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![
                (NodeId(1), NodeStatus::Offline),
                (NodeId(2), NodeStatus::Left),
            ],
        });
        let again = RegistryCommand::UpsertNodes {
            nodes: [1, 2]
                .iter()
                .map(|&id| NodeRecord {
                    id: NodeId(id),
                    addr: format!("10.0.0.{id}:9700"),
                    ..NodeRecord::default()
                })
                .collect(),
        };
        assert_eq!(r.apply(&again), applied(true));
        assert_eq!(r.nodes[&NodeId(1)].status, NodeStatus::Offline);
        assert_eq!(r.nodes[&NodeId(2)].status, NodeStatus::Online);
        assert_eq!(r.apply(&again), applied(false));
    }

    #[test]
    fn a_move_keeps_the_old_copy_until_finished() {
        let mut r = registry(2, &[1, 2, 3]);
        r.apply(&RegistryCommand::Assign {
            assignments: vec![Assignment {
                app: "api".into(),
                instance: 0,
                node: NodeId(1),
            }],
        });
        let cmd = RegistryCommand::Move {
            moves: vec![mv(0, 1, 2)],
        };
        assert_eq!(r.apply(&cmd), applied(true));
        assert_eq!(r.apply(&cmd), applied(false), "a retry changes nothing");
        assert_eq!(r.assigned_node("api", 0), Some(NodeId(2)));
        assert_eq!(
            r.moving_from(NodeId(1)),
            vec![InstanceRef {
                app: "api".into(),
                instance: 0
            }]
        );
        // Moving on before the first move finished: node 1 still runs the only live copy.
        r.apply(&RegistryCommand::Move {
            moves: vec![mv(0, 2, 3)],
        });
        assert_eq!(r.moving_from_node("api", 0), Some(NodeId(1)));
        r.apply(&RegistryCommand::FinishMoves {
            instances: vec![InstanceRef {
                app: "api".into(),
                instance: 0,
            }],
        });
        assert!(r.moves.is_empty());
        // Bad targets reject the whole batch.
        let res = r.apply(&RegistryCommand::Move {
            moves: vec![mv(1, 1, 2), mv(1, 1, 42)],
        });
        assert!(!res.is_applied());
        assert_eq!(r.assigned_node("api", 1), None);
    }

    #[test]
    fn scaling_down_drops_moves_of_removed_instances() {
        let mut r = registry(2, &[1, 2]);
        r.apply(&RegistryCommand::Move {
            moves: vec![mv(1, 1, 2)],
        });
        r.apply(&RegistryCommand::ScaleApp {
            name: "api".into(),
            instances: 1,
        });
        assert!(r.moves.is_empty() && r.assignments.is_empty());
    }

    #[test]
    fn rolling_restart_keeps_placed_instances_pending_until_rolled() {
        let mut r = registry(3, &[1, 2]);
        r.apply(&RegistryCommand::Assign {
            assignments: (0..2)
                .map(|i| Assignment {
                    app: "api".into(),
                    instance: i,
                    node: NodeId(1 + u64::from(i)),
                })
                .collect(),
        });
        let before = r.clone();
        let nothing = RegistryCommand::RestartApp {
            name: "api".into(),
            generation: 0,
        };
        assert_eq!(r.apply(&nothing), applied(false));
        assert_eq!(r, before, "an unchanged answer changed nothing");
        let restart = RegistryCommand::RestartApp {
            name: "api".into(),
            generation: 1,
        };
        assert_eq!(r.apply(&restart), applied(true));
        assert_eq!(r.apply(&restart), applied(false));
        assert_eq!(r.generation_of("api", 0), 0);
        assert_eq!(r.generation_of("api", 2), 1, "unplaced instances start new");
        r.apply(&RegistryCommand::RollInstances {
            app: "api".into(),
            instances: vec![0],
            generation: 1,
        });
        assert_eq!(r.generation_of("api", 0), 1);
        assert_eq!(r.generation_of("api", 1), 0);
        // A second restart before the first finished keeps instance 1's old generation.
        r.apply(&RegistryCommand::RestartApp {
            name: "api".into(),
            generation: 2,
        });
        assert_eq!(r.generation_of("api", 1), 0);
        assert_eq!(r.generation_of("api", 0), 1);
        assert!(
            !r.apply(&RegistryCommand::RestartApp {
                name: "nope".into(),
                generation: 1
            })
            .is_applied()
        );
    }

    #[test]
    fn fenced_commands_apply_only_in_their_term() {
        let mut r = registry(1, &[1]);
        let fenced = RegistryCommand::Fenced {
            term: Term(3),
            command: Box::new(RegistryCommand::DrainNode {
                node: NodeId(1),
                drain: true,
            }),
        };
        let stale = r.apply_in_term(Some(Term(4)), &fenced);
        assert!(!stale.is_applied());
        assert_eq!(
            stale,
            ApplyOutcome::StaleTerm(StaleTerm {
                decided: Term(3),
                committed: Term(4)
            })
        );
        assert_eq!(
            RegistryResponse::from(stale),
            RegistryResponse::Rejected {
                reason: "stale master: decided in term 3, committed in term 4".into()
            },
            "writers outside the master see the refusal's text as before"
        );
        assert!(!r.nodes[&NodeId(1)].drain);
        assert_eq!(
            r.apply_in_term(Some(Term(3)), &fenced),
            applied(true).into()
        );
        let json = serde_json::to_string(&fenced).expect("serialize");
        let back: RegistryCommand = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, fenced);
    }
}
