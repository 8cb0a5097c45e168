//! Per-node slices of the registry. Agents (nodes outside the Raft group) hold no replica: each
//! fetches only the part of the registry that says what it runs, and only when that part
//! changed. To know when, every applied command records its log index as the new version of
//! every node whose slice it may have changed ([`Registry::apply_at`]). Those nodes are worked
//! out from the command and the registry before and after it, conservatively: bumping a node
//! whose slice did not change costs one needless fetch, missing one leaves an agent running a
//! stale set.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;

use super::ApplyOutcome;
use super::NodeId;
use super::Registry;
use super::RegistryCommand;
use crate::Term;

/// What one node needs from the registry to decide what to run, as of `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSlice {
    pub node: NodeId,
    /// [`Registry::slice_version`] of `node` when the slice was cut: a fetcher that already
    /// holds this version has nothing to fetch.
    pub version: u64,
    /// A registry holding only this node's part (see [`Registry::slice_for`]), so an agent can
    /// read it with the same code that reads a full replica.
    pub registry: Registry,
}

impl Registry {
    /// Applies a command committed at log `index` like [`Registry::apply_in_term`] and, if it
    /// was applied, records `index` as the slice version of every node whose slice it may have
    /// changed (and as the access version for a change to the access book, which every slice
    /// carries). A rejected or fenced-off command changed nothing and bumps nothing.
    pub fn apply_at(
        &mut self,
        term: Option<Term>,
        index: u64,
        cmd: &RegistryCommand,
    ) -> ApplyOutcome {
        let effective = unfenced(cmd);
        let mut touched = self.slice_nodes(effective);
        let outcome = self.apply_in_term(term, cmd);
        if !outcome.is_applied() {
            return outcome;
        }
        touched.extend(self.slice_nodes(effective));
        for node in touched {
            self.slice_versions.insert(node, index);
        }
        if matches!(effective, RegistryCommand::Access { .. }) {
            self.access_version = index;
        }
        outcome
    }

    /// The version of `node`'s slice: the log index of the last command that may have changed
    /// it (0: never changed). Moves whenever [`Registry::slice_for`] may return something new.
    pub fn slice_version(&self, node: NodeId) -> u64 {
        let own = self.slice_versions.get(&node).copied().unwrap_or(0);
        own.max(self.access_version)
    }

    /// The part of the registry `node` needs to decide what to run: the apps it runs or is
    /// moving away from (whole), their assignments to it, the moves away from it, their
    /// restart state, its own node record, the access book (agents authenticate API calls and
    /// resolve secrets from it) and its versions. No uptime, no kv, no other nodes.
    ///
    /// The node record is as of the call, but node commands (heartbeats, status sweeps) do not
    /// bump slice versions: it is informational, not a reason to refetch.
    ///
    /// Cost: one pass over all assignments and moves, O(instances in the cluster) per call.
    /// Acceptable while it runs only for nodes whose version moved; an index node → instances
    /// would make it O(the node's instances) if that ever shows up.
    pub fn slice_for(&self, node: NodeId) -> NodeSlice {
        let assignments = restricted_to(&self.assignments, node);
        let moves = restricted_to(&self.moves, node);
        let names: BTreeSet<&String> = assignments.keys().chain(moves.keys()).collect();
        let apps = pick(&self.apps, &names);
        let restarts = pick(&self.restarts, &names);
        let registry = Registry {
            apps,
            nodes: self
                .nodes
                .get(&node)
                .map(|r| BTreeMap::from([(node, r.clone())]))
                .unwrap_or_default(),
            assignments,
            moves,
            restarts,
            access: self.access.clone(),
            slice_versions: self
                .slice_versions
                .get(&node)
                .map(|&v| BTreeMap::from([(node, v)]))
                .unwrap_or_default(),
            access_version: self.access_version,
            jobs: self.jobs_on(node),
            ..Registry::default()
        };
        NodeSlice {
            node,
            version: self.slice_version(node),
            registry,
        }
    }

    /// Nodes whose slice `cmd` may change, as seen in the registry now. `apply_at` asks before
    /// and after applying, so both the nodes that lose something and those that gain it count.
    fn slice_nodes(&self, cmd: &RegistryCommand) -> BTreeSet<NodeId> {
        match cmd {
            RegistryCommand::PutApp { name, .. }
            | RegistryCommand::RemoveApp { name }
            | RegistryCommand::ScaleApp { name, .. }
            | RegistryCommand::RestartApp { name, .. }
            | RegistryCommand::RollInstances { app: name, .. } => self.app_nodes(name),
            RegistryCommand::Assign { assignments } => {
                let mut nodes = BTreeSet::new();
                for a in assignments {
                    nodes.insert(a.node);
                    nodes.extend(self.holders(&a.app, a.instance));
                }
                nodes
            }
            RegistryCommand::Move { moves } => {
                let mut nodes = BTreeSet::new();
                for m in moves {
                    nodes.extend([m.from, m.to]);
                    nodes.extend(self.holders(&m.app, m.instance));
                }
                nodes
            }
            RegistryCommand::Unassign { instances }
            | RegistryCommand::FinishMoves { instances } => instances
                .iter()
                .flat_map(|i| self.holders(&i.app, i.instance))
                .collect(),
            RegistryCommand::PutJob { name, .. } | RegistryCommand::RemoveJob { name } => {
                self.job_nodes(name)
            }
            RegistryCommand::DispatchRun { run, .. } => BTreeSet::from([run.node]),
            RegistryCommand::FinishRun { job, run, .. } => {
                self.run_node(job, *run).into_iter().collect()
            }
            RegistryCommand::RequestRun { .. } | RegistryCommand::SkipTick { .. } => {
                BTreeSet::new()
            }
            // Node records, uptime, kv and no-ops are in no slice's versioned part; the access
            // book has its own version; a fence inside a fence is rejected.
            RegistryCommand::UpsertNode { .. }
            | RegistryCommand::UpsertNodes { .. }
            | RegistryCommand::RegisterNode { .. }
            | RegistryCommand::RegisterNodes { .. }
            | RegistryCommand::SetNodeStatus { .. }
            | RegistryCommand::DrainNode { .. }
            | RegistryCommand::RecordUptime { .. }
            | RegistryCommand::PruneUptime { .. }
            | RegistryCommand::SetUptime { .. }
            | RegistryCommand::Put { .. }
            | RegistryCommand::Noop
            | RegistryCommand::Access { .. }
            | RegistryCommand::Fenced { .. } => BTreeSet::new(),
        }
    }

    /// Every node running an instance of `app` or an old copy of one: the nodes whose slice
    /// carries the app's spec and restart state.
    fn app_nodes(&self, app: &str) -> BTreeSet<NodeId> {
        [&self.assignments, &self.moves]
            .into_iter()
            .filter_map(|map| map.get(app))
            .flat_map(|instances| instances.values().copied())
            .collect()
    }

    /// The node an instance is assigned to and the node running its old copy, if any.
    fn holders(&self, app: &str, instance: u32) -> impl Iterator<Item = NodeId> {
        self.assigned_node(app, instance)
            .into_iter()
            .chain(self.moving_from_node(app, instance))
    }
}

/// The command a fence wraps (whether the fence lets it through is `apply_in_term`'s call).
fn unfenced(cmd: &RegistryCommand) -> &RegistryCommand {
    match cmd {
        RegistryCommand::Fenced { command, .. } => command,
        other => other,
    }
}

/// app → instance → node, keeping only `node`'s instances and the apps that have some.
fn restricted_to(
    map: &BTreeMap<String, BTreeMap<u32, NodeId>>,
    node: NodeId,
) -> BTreeMap<String, BTreeMap<u32, NodeId>> {
    map.iter()
        .filter_map(|(app, instances)| {
            let mine: BTreeMap<u32, NodeId> = instances
                .iter()
                .filter(|&(_, &n)| n == node)
                .map(|(&i, &n)| (i, n))
                .collect();
            (!mine.is_empty()).then(|| (app.clone(), mine))
        })
        .collect()
}

/// The entries of `map` named in `names`.
fn pick<V: Clone>(map: &BTreeMap<String, V>, names: &BTreeSet<&String>) -> BTreeMap<String, V> {
    names
        .iter()
        .filter_map(|&name| map.get(name).map(|v| (name.clone(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Term;
    use crate::ids::ids;
    use crate::registry::App;
    use crate::registry::Assignment;
    use crate::registry::InstanceMove;
    use crate::registry::InstanceRef;
    use crate::registry::NodeRecord;
    use crate::registry::NodeStatus;
    use crate::registry::OnDisconnect;
    use crate::registry::RegistryResponse;
    use crate::registry::StaleTerm;
    use crate::registry::UptimeSample;
    use crate::registry::access::AccessChange;
    use crate::registry::access::SecretRecord;

    /// The index every unit test applies its command at.
    const AT: u64 = 100;

    fn app(instances: u32) -> App {
        App {
            spec: serde_json::json!({ "cmd": "sleep 1000" }),
            instances,
            ..App::default()
        }
    }

    fn node(id: NodeId) -> NodeRecord {
        NodeRecord {
            id,
            addr: format!("10.0.0.{id}:9700"),
            ..NodeRecord::default()
        }
    }

    fn iref(app: &str, instance: u32) -> InstanceRef {
        InstanceRef {
            app: app.into(),
            instance,
        }
    }

    fn mv(app: &str, instance: u32, from: u64, to: u64) -> InstanceMove {
        InstanceMove {
            app: app.into(),
            instance,
            from: NodeId(from),
            to: NodeId(to),
        }
    }

    fn put_secret(name: &str, sealed: &str) -> RegistryCommand {
        RegistryCommand::Access {
            change: AccessChange::PutSecret {
                name: name.into(),
                secret: SecretRecord {
                    version: 0,
                    set_ms: 1,
                    key_id: "k".into(),
                    sealed: sealed.into(),
                    set_by: "test".into(),
                },
            },
        }
    }

    /// Nodes 1-4; `a` (3 instances): 0 on 1, 1 on 2, 2 moving from 3 to 4; `b` (2 instances):
    /// 0 on 2, 1 on 3. Built with `apply`, so no versions yet.
    fn cluster() -> Registry {
        let mut r = Registry::default();
        let setup = [
            RegistryCommand::UpsertNodes {
                nodes: (1..=4).map(NodeId).map(node).collect(),
            },
            RegistryCommand::PutApp {
                name: "a".into(),
                app: app(3),
            },
            RegistryCommand::PutApp {
                name: "b".into(),
                app: app(2),
            },
            RegistryCommand::Assign {
                assignments: [
                    ("a", 0, 1),
                    ("a", 1, 2),
                    ("a", 2, 3),
                    ("b", 0, 2),
                    ("b", 1, 3),
                ]
                .into_iter()
                .map(|(app, instance, node)| Assignment {
                    app: app.into(),
                    instance,
                    node: NodeId(node),
                })
                .collect(),
            },
            RegistryCommand::Move {
                moves: vec![mv("a", 2, 3, 4)],
            },
        ];
        for cmd in &setup {
            assert!(r.apply(cmd).is_applied(), "{cmd}");
        }
        assert!(r.slice_versions.is_empty() && r.access_version == 0);
        r
    }

    /// Applies `cmd` to a fresh [`cluster`] at [`AT`] in term 1: the nodes bumped and whether
    /// the access version was.
    fn bumps(cmd: RegistryCommand) -> (Vec<NodeId>, bool) {
        let mut r = cluster();
        let outcome = r.apply_at(Some(Term(1)), AT, &cmd);
        assert!(outcome.is_applied(), "{cmd}: {outcome:?}");
        bumped(&r)
    }

    fn bumped(r: &Registry) -> (Vec<NodeId>, bool) {
        let nodes = r
            .slice_versions
            .iter()
            .filter(|&(_, &v)| v == AT)
            .map(|(&n, _)| n)
            .collect();
        (nodes, r.access_version == AT)
    }

    #[test]
    fn app_commands_bump_every_node_running_the_app_or_an_old_copy() {
        let cases = [
            (
                RegistryCommand::PutApp {
                    name: "a".into(),
                    app: app(1),
                },
                vec![1, 2, 3, 4],
            ),
            (
                RegistryCommand::ScaleApp {
                    name: "a".into(),
                    instances: 2,
                },
                vec![1, 2, 3, 4],
            ),
            (RegistryCommand::RemoveApp { name: "b".into() }, vec![2, 3]),
            (
                RegistryCommand::RestartApp {
                    name: "b".into(),
                    generation: 1,
                },
                vec![2, 3],
            ),
            (
                RegistryCommand::RollInstances {
                    app: "a".into(),
                    instances: vec![0],
                    generation: 0,
                },
                vec![1, 2, 3, 4],
            ),
            (
                RegistryCommand::PutApp {
                    name: "new".into(),
                    app: app(1),
                },
                vec![],
            ),
        ];
        for (cmd, nodes) in cases {
            assert_eq!(
                bumps(cmd.clone()),
                (nodes.into_iter().map(NodeId).collect(), false),
                "{cmd}"
            );
        }
    }

    #[test]
    fn assign_bumps_the_named_node_and_the_previous_holders() {
        let assign = |app: &str, instance, node| RegistryCommand::Assign {
            assignments: vec![Assignment {
                app: app.into(),
                instance,
                node,
            }],
        };
        assert_eq!(bumps(assign("b", 0, NodeId(4))), (ids([2, 4]), false));
        assert_eq!(bumps(assign("a", 2, NodeId(1))), (ids([1, 3, 4]), false));
        assert_eq!(bumps(assign("a", 0, NodeId(1))), (ids([1]), false));
    }

    #[test]
    fn unassign_and_finish_moves_bump_the_holders_of_the_instances() {
        let unassign = |instances| RegistryCommand::Unassign { instances };
        assert_eq!(bumps(unassign(vec![iref("a", 0)])), (ids([1]), false));
        assert_eq!(bumps(unassign(vec![iref("a", 2)])), (ids([3, 4]), false));
        assert_eq!(bumps(unassign(vec![iref("c", 0)])), (ids([]), false));
        let finish = |instances| RegistryCommand::FinishMoves { instances };
        assert_eq!(bumps(finish(vec![iref("a", 2)])), (ids([3, 4]), false));
    }

    #[test]
    fn move_bumps_both_named_nodes_and_the_previous_holders() {
        let moving = |moves| RegistryCommand::Move { moves };
        assert_eq!(bumps(moving(vec![mv("a", 0, 1, 2)])), (ids([1, 2]), false));
        assert_eq!(
            bumps(moving(vec![mv("a", 2, 4, 1)])),
            (ids([1, 3, 4]), false)
        );
    }

    #[test]
    fn node_uptime_kv_and_noop_commands_bump_nothing() {
        let cases = [
            RegistryCommand::Noop,
            RegistryCommand::UpsertNode {
                node: node(NodeId(1)),
            },
            RegistryCommand::UpsertNodes {
                nodes: vec![node(NodeId(5))],
            },
            RegistryCommand::SetNodeStatus {
                updates: vec![(NodeId(1), NodeStatus::Offline)],
            },
            RegistryCommand::DrainNode {
                node: NodeId(2),
                drain: true,
            },
            RegistryCommand::RecordUptime {
                samples: vec![UptimeSample {
                    node: NodeId(1),
                    at_ms: 5,
                    up: true,
                }],
                bucket_ms: None,
            },
            RegistryCommand::PruneUptime { before_ms: 10 },
            RegistryCommand::SetUptime {
                buckets: vec![(
                    NodeId(1),
                    0,
                    crate::registry::UptimeBucket {
                        up_samples: 1,
                        total_samples: 1,
                        last_sample_ms: 5,
                    },
                )],
                bucket_ms: None,
            },
            RegistryCommand::Put {
                key: "k".into(),
                value: "v".into(),
            },
        ];
        for cmd in cases {
            assert_eq!(bumps(cmd.clone()), (ids([]), false), "{cmd}");
        }
    }

    #[test]
    fn an_access_change_bumps_the_access_version_and_so_every_slice() {
        assert_eq!(bumps(put_secret("db/pass", "sealed")), (ids([]), true));
        let fenced = RegistryCommand::Fenced {
            term: Term(1),
            command: Box::new(put_secret("db/pass", "sealed")),
        };
        assert_eq!(bumps(fenced), (ids([]), true));
        let mut r = cluster();
        r.apply_at(
            Some(Term(1)),
            7,
            &RegistryCommand::Unassign {
                instances: vec![iref("a", 0)],
            },
        );
        r.apply_at(Some(Term(1)), 9, &put_secret("db/pass", "sealed"));
        assert_eq!(r.slice_version(NodeId(1)), 9);
        r.apply_at(
            Some(Term(1)),
            11,
            &RegistryCommand::Unassign {
                instances: vec![iref("a", 1)],
            },
        );
        assert_eq!(
            (r.slice_version(NodeId(1)), r.slice_version(NodeId(2))),
            (9, 11)
        );
        assert_eq!(r.slice_for(NodeId(2)).version, 11);
    }

    #[test]
    fn rejected_and_stale_fenced_commands_bump_nothing() {
        let mut r = cluster();
        let rejected = [
            RegistryCommand::Assign {
                assignments: vec![Assignment {
                    app: "a".into(),
                    instance: 0,
                    node: NodeId(9),
                }],
            },
            RegistryCommand::ScaleApp {
                name: "none".into(),
                instances: 1,
            },
            RegistryCommand::Access {
                change: AccessChange::DeleteSecret {
                    name: "missing".into(),
                },
            },
        ];
        for cmd in &rejected {
            let outcome = r.apply_at(Some(Term(1)), AT, cmd);
            assert!(
                matches!(
                    outcome,
                    ApplyOutcome::Response(RegistryResponse::Rejected { .. })
                ),
                "{cmd}"
            );
        }
        let stale = RegistryCommand::Fenced {
            term: Term(1),
            command: Box::new(RegistryCommand::RemoveApp { name: "a".into() }),
        };
        assert_eq!(
            r.apply_at(Some(Term(2)), AT, &stale),
            ApplyOutcome::StaleTerm(StaleTerm {
                decided: Term(1),
                committed: Term(2),
            })
        );
        assert_eq!(r, cluster());
        assert!(r.apply_at(Some(Term(1)), AT, &stale).is_applied());
        assert_eq!(bumped(&r), (ids([1, 2, 3, 4]), false));
    }

    #[test]
    fn a_slice_holds_only_the_nodes_own_part() {
        let mut r = cluster();
        r.apply_at(
            Some(Term(1)),
            5,
            &RegistryCommand::RestartApp {
                name: "a".into(),
                generation: 1,
            },
        );
        r.apply_at(Some(Term(1)), 6, &put_secret("db/pass", "sealed"));
        r.apply(&RegistryCommand::Put {
            key: "k".into(),
            value: "v".into(),
        });
        r.apply(&RegistryCommand::RecordUptime {
            samples: vec![UptimeSample {
                node: NodeId(3),
                at_ms: 5,
                up: true,
            }],
            bucket_ms: Some(1000),
        });
        let slice = r.slice_for(NodeId(3));
        assert_eq!((slice.node, slice.version), (NodeId(3), 6));
        let s = &slice.registry;
        assert_eq!(s.apps.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s.apps["a"], r.apps["a"]);
        assert_eq!(
            s.assignments,
            BTreeMap::from([("b".to_string(), BTreeMap::from([(1, NodeId(3))]))])
        );
        assert_eq!(
            s.moves,
            BTreeMap::from([("a".to_string(), BTreeMap::from([(2, NodeId(3))]))])
        );
        assert_eq!(s.restarts.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), [&NodeId(3)]);
        assert_eq!(s.access, r.access);
        assert_eq!(s.slice_versions, BTreeMap::from([(NodeId(3), 5)]));
        assert_eq!(s.access_version, 6);
        assert!(s.uptime.is_empty() && s.kv.is_empty() && s.uptime_bucket_ms.is_none());

        let stranger = r.slice_for(NodeId(42));
        assert_eq!(stranger.version, 6);
        assert!(stranger.registry.apps.is_empty() && stranger.registry.nodes.is_empty());
    }

    #[test]
    fn a_slice_reads_back_from_json() {
        let mut r = cluster();
        r.apply_at(Some(Term(1)), 3, &put_secret("db/pass", "sealed"));
        r.apply_at(
            Some(Term(1)),
            4,
            &RegistryCommand::RestartApp {
                name: "a".into(),
                generation: 2,
            },
        );
        let slice = r.slice_for(NodeId(4));
        let json = serde_json::to_string(&slice).expect("serialize");
        let back: NodeSlice = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, slice);
    }

    #[test]
    fn a_registry_from_before_versions_loads_and_unversioned_ones_write_no_fields() {
        let old = r#"{
            "apps": {"a": {"spec": {"cmd": "x"}, "instances": 1}},
            "nodes": {"1": {"id": 1, "addr": "10.0.0.1:9700", "status": "online", "last_seen_ms": 0}},
            "assignments": {"a": {"0": 1}},
            "uptime": {},
            "kv": {}
        }"#;
        let r: Registry = serde_json::from_str(old).expect("old registry");
        assert!(r.slice_versions.is_empty());
        assert_eq!(r.access_version, 0);
        assert_eq!(r.slice_version(NodeId(1)), 0);
        assert_eq!(r.assigned_node("a", 0), Some(NodeId(1)));
        let json = serde_json::to_value(&r).expect("serialize");
        assert!(json.get("slice_versions").is_none() && json.get("access_version").is_none());
    }

    // ---- property: a node whose slice changed always sees a new version ----

    const APPS: [&str; 3] = ["a", "b", "c"];
    /// Node 5 never gets a record until an `UpsertNodes` names it: placements on it are refused.
    const NODES: std::ops::RangeInclusive<u64> = 1..=5;

    /// A node id out of [`NODES`].
    fn any_node() -> impl Strategy<Value = NodeId> {
        NODES.prop_map(NodeId)
    }
    /// The term `apply_at` is called in; fenced commands carry 1, 2 or 3.
    const TERM: Term = Term(2);

    /// What `agent::desired::from_registry` reads for `me` (that module is private to `agent`):
    /// (app, instance, spec, on_disconnect, generation), sorted, without duplicates.
    fn desired(
        reg: &Registry,
        me: NodeId,
    ) -> Vec<(String, u32, serde_json::Value, OnDisconnect, u64)> {
        let mut refs = reg.instances_on(me);
        refs.extend(reg.moving_from(me));
        refs.sort();
        refs.dedup();
        refs.into_iter()
            .filter_map(|r| {
                let app = reg.apps.get(&r.app)?;
                let generation = reg.generation_of(&r.app, r.instance);
                Some((
                    r.app,
                    r.instance,
                    app.spec.clone(),
                    app.on_disconnect,
                    generation,
                ))
            })
            .collect()
    }

    /// A slice's content apart from what is not versioned (the node record) and the versions.
    fn content(slice: &NodeSlice) -> Registry {
        Registry {
            nodes: BTreeMap::new(),
            slice_versions: BTreeMap::new(),
            access_version: 0,
            ..slice.registry.clone()
        }
    }

    fn app_name() -> impl Strategy<Value = String> {
        prop::sample::select(&APPS[..]).prop_map(String::from)
    }

    fn instance_ref() -> impl Strategy<Value = InstanceRef> {
        (app_name(), 0u32..3).prop_map(|(app, instance)| InstanceRef { app, instance })
    }

    /// Any command over [`APPS`] and [`NODES`], weighted towards placements and restarts: a
    /// roll only changes something after a placement and a restart of the same app, and a
    /// missed bump there went unnoticed with even weights.
    fn command() -> impl Strategy<Value = RegistryCommand> {
        let status = prop::sample::select(
            &[
                NodeStatus::Online,
                NodeStatus::Offline,
                NodeStatus::Draining,
                NodeStatus::Left,
            ][..],
        );
        prop_oneof![
            2 => (app_name(), 0u32..4, any::<bool>(), 0u8..3).prop_map(|(name, n, stop, v)| {
                RegistryCommand::PutApp {
                    name,
                    app: App {
                        spec: serde_json::json!({ "v": v }),
                        instances: n,
                        on_disconnect: if stop {
                            OnDisconnect::Stop
                        } else {
                            OnDisconnect::Keep
                        },
                        ..App::default()
                    },
                }
            }),
            1 => (app_name(), 0u32..4)
                .prop_map(|(name, instances)| RegistryCommand::ScaleApp { name, instances }),
            1 => app_name().prop_map(|name| RegistryCommand::RemoveApp { name }),
            4 => prop::collection::vec((instance_ref(), any_node()), 1..3).prop_map(|v| {
                RegistryCommand::Assign {
                    assignments: v
                        .into_iter()
                        .map(|(i, node)| Assignment {
                            app: i.app,
                            instance: i.instance,
                            node,
                        })
                        .collect(),
                }
            }),
            1 => prop::collection::vec(instance_ref(), 1..3)
                .prop_map(|instances| RegistryCommand::Unassign { instances }),
            3 => prop::collection::vec((instance_ref(), any_node(), any_node()), 1..3).prop_map(|v| {
                RegistryCommand::Move {
                    moves: v
                        .into_iter()
                        .map(|(i, from, to)| mv(&i.app, i.instance, from.get(), to.get()))
                        .collect(),
                }
            }),
            2 => prop::collection::vec(instance_ref(), 1..3)
                .prop_map(|instances| RegistryCommand::FinishMoves { instances }),
            2 => (app_name(), 0u64..3)
                .prop_map(|(name, generation)| RegistryCommand::RestartApp { name, generation }),
            3 => (app_name(), prop::collection::vec(0u32..3, 0..3), 0u64..3).prop_map(
                |(app, instances, generation)| RegistryCommand::RollInstances {
                    app,
                    instances,
                    generation,
                }
            ),
            1 => prop::collection::vec(any_node(), 1..3).prop_map(|ids| RegistryCommand::UpsertNodes {
                nodes: ids.into_iter().map(node).collect(),
            }),
            1 => prop::collection::vec((any_node(), status), 1..3)
                .prop_map(|updates| RegistryCommand::SetNodeStatus { updates }),
            1 => (0u8..3).prop_map(|v| put_secret("db/pass", &format!("sealed-{v}"))),
            1 => Just(RegistryCommand::Access {
                change: AccessChange::DeleteSecret {
                    name: "db/pass".into(),
                },
            }),
            1 => Just(RegistryCommand::Noop),
        ]
    }

    /// A command, fenced in some term now and then (fences in another term than [`TERM`] are
    /// refused).
    fn step() -> impl Strategy<Value = RegistryCommand> {
        (command(), prop::option::weighted(0.2, 1u64..=3)).prop_map(|(cmd, fence)| match fence {
            Some(term) => RegistryCommand::Fenced {
                term: Term(term),
                command: Box::new(cmd),
            },
            None => cmd,
        })
    }

    proptest! {
        #[test]
        fn every_slice_change_comes_with_a_new_version(
            steps in prop::collection::vec(step(), 1..60),
        ) {
            let mut full = Registry::default();
            full.apply_at(Some(TERM), 1, &RegistryCommand::UpsertNodes {
                nodes: (1..=4).map(NodeId).map(node).collect(),
            });
            let mut seen: BTreeMap<NodeId, (u64, Registry)> = NODES
                .map(NodeId)
                .map(|n| {
                    let slice = full.slice_for(n);
                    (n, (slice.version, content(&slice)))
                })
                .collect();
            for (index, cmd) in (2u64..).zip(&steps) {
                let before = full.clone();
                let outcome = full.apply_at(Some(TERM), index, cmd);
                if !outcome.is_applied() {
                    prop_assert_eq!(&full, &before, "{} changed the registry: {:?}", cmd, outcome);
                }
                for n in NODES.map(NodeId) {
                    let slice = full.slice_for(n);
                    prop_assert_eq!(slice.version, full.slice_version(n));
                    prop_assert_eq!(slice.registry.slice_version(n), slice.version);
                    prop_assert_eq!(desired(&slice.registry, n), desired(&full, n));
                    let (old_version, old_content) = &seen[&n];
                    let now = content(&slice);
                    if desired(&now, n) != desired(old_content, n) || &now != old_content {
                        prop_assert_ne!(
                            slice.version,
                            *old_version,
                            "node {}: slice changed by {} without a new version",
                            n,
                            cmd
                        );
                    }
                    seen.insert(n, (slice.version, now));
                }
            }
        }
    }
}
