//! Placement passes against in-memory registries.

use super::*;
use crate::ids::ids;
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
        node(NodeId(1), &[("role", "web")]),
        node(NodeId(2), &[("role", "db")]),
        node(NodeId(3), &[("role", "web")]),
    ]);
    put(&mut r, "other", 1, Placement::default());
    r.apply(&RegistryCommand::Assign {
        assignments: vec![Assignment {
            app: "other".into(),
            instance: 0,
            node: NodeId(1),
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
        ids([3, 1, 3]),
        "node 1 already runs one instance of another app"
    );
}

#[test]
fn spread_goes_across_label_values_and_max_per_node_holds() {
    let mut r = registry(vec![
        node(NodeId(1), &[("zone", "a")]),
        node(NodeId(2), &[("zone", "a")]),
        node(NodeId(3), &[("zone", "b")]),
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
    assert_eq!(nodes, ids([1, 2, 3]));
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
        node(NodeId(1), &[("zone", "a")]),
        node(NodeId(2), &[("zone", "b")]),
        node(NodeId(3), &[("zone", "b")]),
    ]);
    let spread = Placement {
        spread: Some("zone".into()),
        ..Placement::default()
    };
    put(&mut r, "api", 4, spread);
    // Placed while only node 1 was heard: all four in zone a.
    let mut input = live(&r);
    input.live = ids([1]).into_iter().collect();
    let p = plan(&r, &input);
    assert!(p.assign.iter().all(|a| a.node == NodeId(1)), "{p:?}");
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
        assert_eq!(p.moves[0].from, NodeId(1));
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
    assert_eq!(moved, ids([2, 3]), "least-loaded node of zone b first");
    assert!(plan(&r, &input).is_empty(), "a balanced spread stays put");
}

#[test]
fn instances_on_an_offline_node_are_rescheduled_and_silent_nodes_get_nothing() {
    let mut r = registry(vec![
        node(NodeId(1), &[]),
        node(NodeId(2), &[]),
        node(NodeId(3), &[]),
    ]);
    put(&mut r, "api", 2, Placement::default());
    let p = plan(&r, &live(&r));
    apply(&mut r, &p);
    let victim = r.assignments["api"][&0];
    r.apply(&RegistryCommand::SetNodeStatus {
        updates: vec![(victim, NodeStatus::Offline)],
    });
    let mut input = live(&r);
    let silent = (1..=3)
        .map(NodeId)
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
fn a_reschedule_budget_holds_back_instances_of_offline_nodes_only() {
    let mut r = registry((1..=4).map(|id| node(NodeId(id), &[])).collect());
    put(&mut r, "api", 8, Placement::default());
    let p = plan(&r, &live(&r));
    apply(&mut r, &p);
    r.apply(&RegistryCommand::SetNodeStatus {
        updates: vec![
            (NodeId(1), NodeStatus::Offline),
            (NodeId(2), NodeStatus::Offline),
        ],
    });
    // Two more instances with no node yet: new work is not gated.
    put(&mut r, "api", 10, Placement::default());
    let mut input = live(&r);
    input.reschedule_budget = Some(3);
    let p = plan(&r, &input);
    assert_eq!((p.rescheduled, p.held), (3, 1), "{p:?}");
    assert_eq!(p.assign.len(), 5, "3 off offline nodes + 2 new: {p:?}");
    assert!(
        p.assign
            .iter()
            .all(|a| a.node == NodeId(3) || a.node == NodeId(4))
    );
    apply(&mut r, &p);
    input.reschedule_budget = Some(0);
    let p = plan(&r, &input);
    assert!(p.assign.is_empty() && p.held == 1, "frozen: {p:?}");
    input.reschedule_budget = None;
    let p = plan(&r, &input);
    assert_eq!((p.assign.len(), p.rescheduled, p.held), (1, 1, 0), "{p:?}");
}

#[test]
fn a_draining_node_moves_keep_apps_and_stops_singletons_before_placing_them() {
    let mut r = registry(vec![node(NodeId(1), &[]), node(NodeId(2), &[])]);
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
                node: NodeId(1),
            },
            Assignment {
                app: "single".into(),
                instance: 0,
                node: NodeId(1),
            },
        ],
    });
    r.apply(&RegistryCommand::DrainNode {
        node: NodeId(1),
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
            from: NodeId(1),
            to: NodeId(2)
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
            node: NodeId(2)
        }],
        "placed once its old copy stopped"
    );
}

#[test]
fn a_crash_looping_instance_goes_elsewhere_and_extra_instances_are_unassigned() {
    let mut r = registry(vec![node(NodeId(1), &[]), node(NodeId(2), &[])]);
    put(&mut r, "api", 1, Placement::default());
    r.apply(&RegistryCommand::Assign {
        assignments: vec![Assignment {
            app: "api".into(),
            instance: 0,
            node: NodeId(1),
        }],
    });
    let mut input = live(&r);
    input.relocate = vec![(
        InstanceRef {
            app: "api".into(),
            instance: 0,
        },
        NodeId(1),
    )];
    let p = plan(&r, &input);
    assert_eq!(
        p.assign,
        vec![Assignment {
            app: "api".into(),
            instance: 0,
            node: NodeId(2)
        }]
    );
    // A relocation decided for another node is stale: ignored.
    input.relocate = vec![(
        InstanceRef {
            app: "api".into(),
            instance: 0,
        },
        NodeId(2),
    )];
    assert!(plan(&r, &input).is_empty());
    // Registry entries beyond the desired count (never produced by apply) are unassigned.
    r.assignments
        .get_mut("api")
        .expect("api")
        .insert(5, NodeId(1));
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
        let mut r = registry(vec![node(NodeId(1), &[]), node(NodeId(2), &[])]);
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
    input.usage.insert(NodeId(1), usage(90.0));
    input.usage.insert(NodeId(2), usage(5.0));
    assert_eq!(plan(&r, &input).assign[0].node, NodeId(2));
}
