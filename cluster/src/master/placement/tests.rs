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

mod against_the_oracle {
    //! The indexed pass plans exactly what the scanning one (`oracle.rs`) plans, on random
    //! registries, over a few passes applied in turn (so moves in progress, spread evening and
    //! `max_per_node` at its limit come up too).

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::registry::RestartState;

    fn status() -> impl Strategy<Value = NodeStatus> {
        prop_oneof![
            6 => Just(NodeStatus::Online),
            1 => Just(NodeStatus::Offline),
            1 => Just(NodeStatus::Draining),
            1 => Just(NodeStatus::Left),
        ]
    }

    fn label(values: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
        prop_oneof![1 => Just(None), 3 => proptest::sample::select(values).prop_map(Some)]
    }

    #[derive(Clone, Debug)]
    struct NodeSpec {
        zone: Option<&'static str>,
        role: Option<&'static str>,
        status: NodeStatus,
        live: bool,
        cpu: Option<u8>,
    }

    fn node_spec() -> impl Strategy<Value = NodeSpec> {
        (
            label(&["a", "b", "c"]),
            label(&["web", "db"]),
            status(),
            proptest::bool::weighted(0.85),
            proptest::option::of(0u8..4),
        )
            .prop_map(|(zone, role, status, live, cpu)| NodeSpec {
                zone,
                role,
                status,
                live,
                cpu,
            })
    }

    #[derive(Clone, Debug)]
    struct AppSpec {
        instances: u32,
        constraint: Option<(&'static str, &'static str)>,
        spread: Option<&'static str>,
        max_per_node: Option<u32>,
        stop: bool,
        /// Instance → index into the node list (past its end: a node the registry lacks).
        placed: Vec<Option<usize>>,
        moving: Vec<Option<usize>>,
        restarting: bool,
    }

    fn app_spec() -> impl Strategy<Value = AppSpec> {
        (
            0u32..10,
            proptest::option::of(proptest::sample::select(
                &[("role", "web"), ("role", "db"), ("zone", "a")][..],
            )),
            proptest::option::of(proptest::sample::select(&["zone", "role", "host"][..])),
            proptest::option::of(1u32..4),
            proptest::bool::weighted(0.2),
            proptest::collection::vec(proptest::option::of(0usize..14), 0..12),
            proptest::collection::vec(proptest::option::of(0usize..14), 0..4),
            proptest::bool::weighted(0.1),
        )
            .prop_map(
                |(
                    instances,
                    constraint,
                    spread,
                    max_per_node,
                    stop,
                    placed,
                    moving,
                    restarting,
                )| {
                    AppSpec {
                        instances,
                        constraint,
                        spread,
                        max_per_node,
                        stop,
                        placed,
                        moving,
                        restarting,
                    }
                },
            )
    }

    fn build(nodes: &[NodeSpec], apps: &[AppSpec]) -> (Registry, PlacementInput) {
        let mut r = Registry::default();
        let mut input = PlacementInput::default();
        let id = |i: usize| NodeId(i as u64 + 1);
        for (i, spec) in nodes.iter().enumerate() {
            let mut labels = Vec::new();
            if let Some(z) = spec.zone {
                labels.push(("zone", z));
            }
            if let Some(role) = spec.role {
                labels.push(("role", role));
            }
            let mut rec = node(id(i), &labels);
            // A label with many values (most nodes their own).
            rec.labels.insert("host".into(), format!("h{}", i % 7));
            rec.status = spec.status;
            r.nodes.insert(rec.id, rec);
            if spec.live {
                input.live.insert(id(i));
            }
            if let Some(cpu) = spec.cpu {
                input.usage.insert(
                    id(i),
                    Usage {
                        cpu_percent: f64::from(cpu) * 25.0,
                        mem_used_bytes: 1.0,
                        mem_total_bytes: 4.0,
                        load1: 0.0,
                    },
                );
            }
        }
        for (a, spec) in apps.iter().enumerate() {
            let name = format!("app{a}");
            let app = App {
                instances: spec.instances,
                placement: Placement {
                    constraints: spec
                        .constraint
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    spread: spec.spread.map(str::to_string),
                    max_per_node: spec.max_per_node,
                },
                on_disconnect: if spec.stop {
                    OnDisconnect::Stop
                } else {
                    OnDisconnect::Keep
                },
                ..App::default()
            };
            r.apps.insert(name.clone(), app);
            let placed: BTreeMap<u32, NodeId> = spec
                .placed
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.map(|n| (i as u32, id(n))))
                .collect();
            for (i, n) in spec.moving.iter().enumerate() {
                if let Some(n) = n
                    && placed.contains_key(&(i as u32))
                {
                    r.moves
                        .entry(name.clone())
                        .or_default()
                        .insert(i as u32, id(*n));
                }
            }
            for (&i, &n) in &placed {
                let key = InstanceRef {
                    app: name.clone(),
                    instance: i,
                };
                // Some instances crash-loop, some singletons still run.
                if i % 5 == 1 {
                    input.relocate.push((key.clone(), n));
                }
                if i % 3 == 0 {
                    input.running.insert(key);
                }
            }
            if spec.restarting && !placed.is_empty() {
                r.restarts.insert(
                    name.clone(),
                    RestartState {
                        generation: 1,
                        pending: [(0, 0)].into(),
                    },
                );
            }
            if !placed.is_empty() {
                r.assignments.insert(name, placed);
            }
        }
        (r, input)
    }

    fn step(r: &mut Registry, p: &Plan) {
        if !p.unassign.is_empty() {
            r.apply(&RegistryCommand::Unassign {
                instances: p.unassign.clone(),
            });
        }
        if !p.assign.is_empty() {
            r.apply(&RegistryCommand::Assign {
                assignments: p.assign.clone(),
            });
        }
        if !p.moves.is_empty() {
            r.apply(&RegistryCommand::Move {
                moves: p.moves.clone(),
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn the_indexed_pass_plans_what_the_scan_planned(
            nodes in proptest::collection::vec(node_spec(), 0..12),
            apps in proptest::collection::vec(app_spec(), 1..5),
            budget in proptest::option::of(0usize..4),
            churn in proptest::collection::vec((0u8..6, 0usize..12), 6),
        ) {
            let (mut r, mut input) = build(&nodes, &apps);
            input.reschedule_budget = budget;
            // Kept from pass to pass, as the master keeps it.
            let mut memo = PlacementMemo::default();
            for (what, k) in churn {
                let fast = plan_with(&r, &input, &mut memo);
                let slow = super::super::oracle::plan(&r, &input);
                prop_assert_eq!(&fast, &slow);
                step(&mut r, &fast);
                input.relocate.clear();
                // Something changes between passes (or nothing).
                let node = NodeId(k as u64 + 1);
                match what {
                    1 => {
                        if let Some(app) = r.apps.values_mut().nth(k % apps.len()) {
                            app.instances = (app.instances + 3) % 10;
                        }
                    }
                    2 => {
                        if let Some(n) = r.nodes.get_mut(&node) {
                            n.status = NodeStatus::Offline;
                        }
                    }
                    3 => {
                        let was_live = input.live.remove(&node);
                        if !was_live {
                            input.live.insert(node);
                        }
                    }
                    4 => {
                        if let Some(n) = r.nodes.get_mut(&node) {
                            n.labels.insert("zone".into(), "c".into());
                        }
                    }
                    5 => {
                        let finished: Vec<InstanceRef> = r
                            .moves
                            .iter()
                            .flat_map(|(app, m)| {
                                m.keys().map(|&instance| InstanceRef {
                                    app: app.clone(),
                                    instance,
                                })
                            })
                            .collect();
                        r.apply(&RegistryCommand::FinishMoves {
                            instances: finished,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The cluster the timing test plans for: `nodes` nodes in three zones (one in five labelled
/// `disk=ssd`, each its own `host`), 40 apps sharing `instances`: plain ones, ones spread over
/// zones, ones with `max_per_node`, ones constrained to ssd nodes, ones spread over hosts.
fn big_cluster(nodes: u64, instances: u32) -> Registry {
    let zones = ["a", "b", "c"];
    let mut r = registry(
        (1..=nodes)
            .map(|i| {
                let zone = zones[(i % 3) as usize];
                let mut n = if i % 5 == 0 {
                    node(NodeId(i), &[("zone", zone), ("disk", "ssd")])
                } else {
                    node(NodeId(i), &[("zone", zone)])
                };
                n.labels.insert("host".into(), format!("host{i}"));
                n
            })
            .collect(),
    );
    let apps = 40;
    for a in 0..apps {
        let placement = match a % 8 {
            0 | 4 => Placement::default(),
            7 => Placement {
                spread: Some("host".into()),
                ..Placement::default()
            },
            1 => Placement {
                spread: Some("zone".into()),
                ..Placement::default()
            },
            2 => Placement {
                spread: Some("zone".into()),
                max_per_node: Some(2),
                ..Placement::default()
            },
            _ => Placement {
                constraints: [("disk".to_string(), "ssd".to_string())].into(),
                ..Placement::default()
            },
        };
        put(&mut r, &format!("app{a:02}"), instances / apps, placement);
    }
    r
}

/// Timing, not asserted: 100,000 instances over 10,000 nodes from nothing, then the third of
/// them a lost zone held (about 33,000) placed again in one pass. Run in release:
/// `cargo test -p herd-cluster --release --lib placement_at_scale -- --ignored --nocapture`
/// (`HERD_PLACEMENT_NODES` / `HERD_PLACEMENT_INSTANCES` change the size; `HERD_PLACEMENT_ORACLE=1`
/// times the scanning pass too, which takes minutes at full size).
#[test]
#[ignore]
fn placement_at_scale() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let nodes = env("HERD_PLACEMENT_NODES", 10_000);
    let instances = env("HERD_PLACEMENT_INSTANCES", 100_000) as u32;
    let oracle = std::env::var("HERD_PLACEMENT_ORACLE").is_ok_and(|v| v == "1");
    let mut r = big_cluster(nodes, instances);
    let input = live(&r);
    let timed = |what: &str, r: &Registry, input: &PlacementInput| {
        let t = crate::clock::now();
        let p = plan(r, input);
        let fast = t.elapsed();
        println!(
            "{what}: {nodes} nodes, {} instances placed, {} moved: indexed pass {:.1} ms",
            p.assign.len(),
            p.moves.len(),
            fast.as_secs_f64() * 1e3
        );
        if oracle {
            let t = crate::clock::now();
            let slow = super::oracle::plan(r, input);
            println!(
                "{what}: scanning pass {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            assert_eq!(p, slow);
        }
        p
    };
    let p = timed("from nothing", &r, &input);
    apply(&mut r, &p);
    let t = crate::clock::now();
    let settled = plan(&r, &input);
    println!(
        "settled: a pass that changes nothing {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(settled.is_empty(), "{} writes", settled.assign.len());
    let mut memo = PlacementMemo::default();
    plan_with(&r, &input, &mut memo);
    let t = crate::clock::now();
    let skipped = plan_with(&r, &input, &mut memo);
    println!(
        "settled: the same pass skipping settled, unchanged apps {:.1} ms ({} apps planned)",
        t.elapsed().as_secs_f64() * 1e3,
        memo.replanned()
    );
    assert!(skipped.is_empty());
    // Zone c is lost.
    let lost: Vec<(NodeId, NodeStatus)> = r
        .nodes
        .values()
        .filter(|n| n.labels["zone"] == "c")
        .map(|n| (n.id, NodeStatus::Offline))
        .collect();
    r.apply(&RegistryCommand::SetNodeStatus { updates: lost });
    let p = timed("zone c lost", &r, &input);
    assert!(p.rescheduled > 0);
}

#[test]
fn only_apps_whose_inputs_changed_are_planned_again() {
    let mut r = registry(
        (1..=6)
            .map(|i| node(NodeId(i), &[("zone", ["a", "b"][i as usize % 2])]))
            .collect(),
    );
    let spread = Placement {
        spread: Some("zone".into()),
        ..Placement::default()
    };
    for name in ["a", "b", "c"] {
        put(&mut r, name, 4, spread.clone());
    }
    let input = live(&r);
    let mut memo = PlacementMemo::default();
    let p = plan_with(&r, &input, &mut memo);
    assert_eq!((p.assign.len(), memo.replanned()), (12, 3));
    apply(&mut r, &p);
    assert!(plan_with(&r, &input, &mut memo).is_empty());
    assert_eq!(memo.replanned(), 3, "each app is found settled once");
    assert!(plan_with(&r, &input, &mut memo).is_empty());
    assert_eq!(memo.replanned(), 0, "settled and unchanged: skipped");
    // One app scaled: only it is planned again.
    put(&mut r, "b", 5, spread.clone());
    let p = plan_with(&r, &input, &mut memo);
    assert_eq!((p.assign.len(), memo.replanned()), (1, 1), "{p:?}");
    apply(&mut r, &p);
    plan_with(&r, &input, &mut memo);
    assert_eq!(memo.replanned(), 1);
    // A crash relocation names one app: only it.
    let mut crashed = input.clone();
    crashed.relocate = vec![(
        InstanceRef {
            app: "c".into(),
            instance: 0,
        },
        r.assignments["c"][&0],
    )];
    let p = plan_with(&r, &crashed, &mut memo);
    assert_eq!((p.assign.len(), memo.replanned()), (1, 1), "{p:?}");
    // A node going offline changes what every app may use: all are planned again, and the
    // plan is the one a pass without the memo makes.
    let p = plan(&r, &input);
    assert!(p.is_empty());
    r.apply(&RegistryCommand::SetNodeStatus {
        updates: vec![(NodeId(1), NodeStatus::Offline)],
    });
    let p = plan_with(&r, &input, &mut memo);
    assert_eq!(memo.replanned(), 3);
    assert_eq!(p, plan(&r, &input));
    assert!(!p.assign.is_empty());
}
