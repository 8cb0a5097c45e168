//! `Registry::apply`: the state machine's transition function. Pure and deterministic: no clock,
//! no randomness, no I/O — every replica must reach the same state from the same log.

use super::ApplyOutcome;
use super::Assignment;
use super::InstanceRef;
use super::Registry;
use super::RegistryCommand;
use super::RegistryResponse;
use super::StaleTerm;
use crate::NodeId;
use crate::Term;

impl Registry {
    /// Applies one committed command and says what happened. A `Fenced` command is applied as
    /// its inner command (see [`Registry::apply_in_term`] for the term check).
    pub fn apply(&mut self, cmd: &RegistryCommand) -> RegistryResponse {
        self.apply_in_term(None, cmd).into()
    }

    /// Applies one committed command that the log appended in `entry_term` (the state machine
    /// knows it; `None` skips the check): a `Fenced` command from another term is refused with
    /// a [`StaleTerm`] and changes nothing.
    pub fn apply_in_term(
        &mut self,
        entry_term: Option<Term>,
        cmd: &RegistryCommand,
    ) -> ApplyOutcome {
        match (cmd, entry_term) {
            (RegistryCommand::Fenced { term, .. }, Some(t)) if t != *term => {
                ApplyOutcome::StaleTerm(StaleTerm {
                    decided: *term,
                    committed: t,
                })
            }
            (RegistryCommand::Fenced { command, .. }, _) => self.apply_unfenced(command).into(),
            _ => self.apply_unfenced(cmd).into(),
        }
    }

    /// One command's effect, once any fence around it was checked.
    fn apply_unfenced(&mut self, cmd: &RegistryCommand) -> RegistryResponse {
        match cmd {
            RegistryCommand::PutApp { name, app } => {
                if name.trim().is_empty() {
                    return rejected("app name must not be empty");
                }
                let changed = self.apps.get(name) != Some(app);
                self.apps.insert(name.clone(), app.clone());
                let dropped = self.drop_instances_from(name, app.instances);
                applied(changed || dropped)
            }
            RegistryCommand::RemoveApp { name } => {
                let existed = self.apps.remove(name).is_some();
                let had_assignments = self.assignments.remove(name).is_some();
                let had_moves = self.moves.remove(name).is_some();
                let had_restarts = self.restarts.remove(name).is_some();
                applied(existed || had_assignments || had_moves || had_restarts)
            }
            RegistryCommand::ScaleApp { name, instances } => {
                let Some(app) = self.apps.get_mut(name) else {
                    return rejected(format!("app `{name}` not found"));
                };
                let changed = app.instances != *instances;
                app.instances = *instances;
                let dropped = self.drop_instances_from(name, *instances);
                applied(changed || dropped)
            }
            RegistryCommand::Assign { assignments } => self.assign(assignments),
            RegistryCommand::Unassign { instances } => applied(self.unassign(instances)),
            RegistryCommand::UpsertNode { node } => {
                let changed = self.nodes.get(&node.id) != Some(node);
                self.nodes.insert(node.id, node.clone());
                applied(changed)
            }
            RegistryCommand::SetNodeStatus { updates } => applied(self.set_node_status(updates)),
            RegistryCommand::RecordUptime { samples, bucket_ms } => {
                applied(self.record_uptime(samples, *bucket_ms))
            }
            RegistryCommand::PruneUptime { before_ms } => applied(self.prune_uptime(*before_ms)),
            RegistryCommand::SetUptime { buckets, bucket_ms } => {
                applied(self.set_uptime(buckets, *bucket_ms))
            }
            RegistryCommand::Put { key, value } => {
                let old = self.kv.insert(key.clone(), value.clone());
                applied(old.as_ref() != Some(value))
            }
            RegistryCommand::Noop => applied(false),
            RegistryCommand::UpsertNodes { nodes } => applied(self.upsert_nodes(nodes)),
            RegistryCommand::RegisterNode { node } => applied(self.register_node(node)),
            RegistryCommand::RegisterNodes { nodes } => {
                let mut changed = false;
                for node in nodes {
                    changed |= self.register_node(node);
                }
                applied(changed)
            }
            RegistryCommand::DrainNode { node, drain } => self.drain_node(*node, *drain),
            RegistryCommand::Move { moves } => self.move_instances(moves),
            RegistryCommand::FinishMoves { instances } => applied(self.finish_moves(instances)),
            RegistryCommand::RestartApp { name, generation } => self.restart_app(name, *generation),
            RegistryCommand::RollInstances {
                app,
                instances,
                generation,
            } => applied(self.roll_instances(app, instances, *generation)),
            RegistryCommand::Access { change } => match self.access.apply(change) {
                Ok(changed) => applied(changed),
                Err(reason) => rejected(reason),
            },
            // `apply_in_term` unwraps one fence; a fence found here was inside another.
            RegistryCommand::PutJob { name, job, now_ms } => self.put_job(name, job, *now_ms),
            RegistryCommand::RemoveJob { name } => applied(self.jobs.remove(name).is_some()),
            RegistryCommand::RequestRun { job, request, args } => {
                self.request_run(job, *request, args)
            }
            RegistryCommand::DispatchRun { job, run, request } => {
                self.dispatch_run(job, run, *request)
            }
            RegistryCommand::SkipTick { job, tick_ms, end } => self.skip_tick(job, *tick_ms, end),
            RegistryCommand::FinishRun { job, run, end } => self.finish_run(job, *run, end),
            RegistryCommand::Fenced { .. } => {
                rejected("a fenced command cannot wrap another fenced command")
            }
        }
    }

    /// Validates the whole batch first, so a bad entry leaves the registry untouched.
    fn assign(&mut self, assignments: &[Assignment]) -> RegistryResponse {
        for a in assignments {
            if let Err(reason) = self.check_placement(&a.app, a.instance, a.node) {
                return rejected(format!("assign: {reason}"));
            }
        }
        let mut changed = false;
        for a in assignments {
            let slot = self.assignments.entry(a.app.clone()).or_default();
            changed |= slot.insert(a.instance, a.node) != Some(a.node);
        }
        applied(changed)
    }

    /// Whether instance `instance` of `app` may be placed on `node`.
    pub(super) fn check_placement(
        &self,
        app: &str,
        instance: u32,
        node: NodeId,
    ) -> Result<(), String> {
        let Some(found) = self.apps.get(app) else {
            return Err(format!("app `{app}` not found"));
        };
        if instance >= found.instances {
            return Err(format!(
                "app `{app}` has {} instances, no instance {instance}",
                found.instances
            ));
        }
        if !self.nodes.contains_key(&node) {
            return Err(format!("node {node} not found"));
        }
        Ok(())
    }

    fn unassign(&mut self, instances: &[InstanceRef]) -> bool {
        let mut changed = false;
        for i in instances {
            if let Some(slot) = self.assignments.get_mut(&i.app) {
                changed |= slot.remove(&i.instance).is_some();
                if slot.is_empty() {
                    self.assignments.remove(&i.app);
                }
            }
        }
        // An unplaced instance has nothing to move: its old copy may stop too.
        changed |= self.finish_moves(instances);
        changed
    }

    /// Drops assignments, moves and pending restarts of `app` whose instance index is
    /// `>= count`; true if any.
    fn drop_instances_from(&mut self, app: &str, count: u32) -> bool {
        let mut dropped = false;
        for map in [&mut self.assignments, &mut self.moves] {
            if let Some(slot) = map.get_mut(app) {
                let before = slot.len();
                slot.retain(|&instance, _| instance < count);
                dropped |= slot.len() != before;
                if slot.is_empty() {
                    map.remove(app);
                }
            }
        }
        if let Some(r) = self.restarts.get_mut(app) {
            let before = r.pending.len();
            r.pending.retain(|&instance, _| instance < count);
            dropped |= r.pending.len() != before;
        }
        dropped
    }
}

pub(super) fn applied(changed: bool) -> RegistryResponse {
    RegistryResponse::Applied { changed }
}

pub(super) fn rejected(reason: impl Into<String>) -> RegistryResponse {
    RegistryResponse::Rejected {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::App;
    use crate::registry::DAY_MS;
    use crate::registry::NodeRecord;
    use crate::registry::NodeStatus;
    use crate::registry::UptimeSample;

    fn app(instances: u32) -> App {
        App {
            spec: serde_json::json!({"cmd": "sleep 1000"}),
            instances,
            ..App::default()
        }
    }

    fn node(id: u64) -> NodeRecord {
        NodeRecord {
            id: NodeId(id),
            addr: format!("10.0.0.{id}:9700"),
            ..NodeRecord::default()
        }
    }

    fn registry_with(apps: &[(&str, u32)], nodes: &[u64]) -> Registry {
        let mut r = Registry::default();
        for (name, n) in apps {
            r.apply(&RegistryCommand::PutApp {
                name: name.to_string(),
                app: app(*n),
            });
        }
        for id in nodes {
            r.apply(&RegistryCommand::UpsertNode { node: node(*id) });
        }
        r
    }

    fn assign(app: &str, instance: u32, node: u64) -> Assignment {
        Assignment {
            app: app.into(),
            instance,
            node: NodeId(node),
        }
    }

    #[test]
    fn put_app_twice_reports_no_change_the_second_time() {
        let mut r = Registry::default();
        let cmd = RegistryCommand::PutApp {
            name: "api".into(),
            app: app(2),
        };
        assert_eq!(r.apply(&cmd), RegistryResponse::Applied { changed: true });
        assert_eq!(r.apply(&cmd), RegistryResponse::Applied { changed: false });
        assert_eq!(r.apps["api"].instances, 2);
    }

    #[test]
    fn put_app_with_empty_name_is_rejected() {
        let mut r = Registry::default();
        let res = r.apply(&RegistryCommand::PutApp {
            name: " ".into(),
            app: app(1),
        });
        assert!(!res.is_applied());
        assert!(r.apps.is_empty());
    }

    #[test]
    fn assign_places_instances_and_lists_them_per_node() {
        let mut r = registry_with(&[("api", 2)], &[1, 2]);
        let res = r.apply(&RegistryCommand::Assign {
            assignments: vec![assign("api", 0, 1), assign("api", 1, 2)],
        });
        assert_eq!(res, RegistryResponse::Applied { changed: true });
        assert_eq!(
            r.instances_on(NodeId(2)),
            vec![InstanceRef {
                app: "api".into(),
                instance: 1
            }]
        );
    }

    #[test]
    fn assign_batch_with_one_bad_entry_changes_nothing() {
        let mut r = registry_with(&[("api", 2)], &[1]);
        for bad in [
            assign("api", 5, 1),
            assign("web", 0, 1),
            assign("api", 1, 9),
        ] {
            let res = r.apply(&RegistryCommand::Assign {
                assignments: vec![assign("api", 0, 1), bad],
            });
            assert!(matches!(res, RegistryResponse::Rejected { .. }), "{res:?}");
            assert!(r.assignments.is_empty());
        }
    }

    #[test]
    fn scale_down_drops_assignments_of_removed_instances() {
        let mut r = registry_with(&[("api", 3)], &[1]);
        r.apply(&RegistryCommand::Assign {
            assignments: vec![assign("api", 0, 1), assign("api", 2, 1)],
        });
        let res = r.apply(&RegistryCommand::ScaleApp {
            name: "api".into(),
            instances: 1,
        });
        assert_eq!(res, RegistryResponse::Applied { changed: true });
        assert_eq!(
            r.assignments["api"].keys().copied().collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn scale_of_unknown_app_is_rejected_with_its_name() {
        let mut r = Registry::default();
        let res = r.apply(&RegistryCommand::ScaleApp {
            name: "ghost".into(),
            instances: 1,
        });
        assert_eq!(
            res,
            RegistryResponse::Rejected {
                reason: "app `ghost` not found".into()
            }
        );
    }

    #[test]
    fn remove_app_drops_its_assignments_and_is_idempotent() {
        let mut r = registry_with(&[("api", 1)], &[1]);
        r.apply(&RegistryCommand::Assign {
            assignments: vec![assign("api", 0, 1)],
        });
        let cmd = RegistryCommand::RemoveApp { name: "api".into() };
        assert_eq!(r.apply(&cmd), RegistryResponse::Applied { changed: true });
        assert!(r.assignments.is_empty() && r.apps.is_empty());
        assert_eq!(r.apply(&cmd), RegistryResponse::Applied { changed: false });
    }

    #[test]
    fn unassign_ignores_missing_entries() {
        let mut r = registry_with(&[("api", 2)], &[1]);
        r.apply(&RegistryCommand::Assign {
            assignments: vec![assign("api", 0, 1)],
        });
        let res = r.apply(&RegistryCommand::Unassign {
            instances: vec![
                InstanceRef {
                    app: "api".into(),
                    instance: 0,
                },
                InstanceRef {
                    app: "nope".into(),
                    instance: 3,
                },
            ],
        });
        assert_eq!(res, RegistryResponse::Applied { changed: true });
        assert!(r.assignments.is_empty());
    }

    #[test]
    fn set_node_status_applies_known_ids_and_ignores_unknown() {
        let mut r = registry_with(&[], &[1, 2]);
        let res = r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![
                (NodeId(1), NodeStatus::Offline),
                (NodeId(42), NodeStatus::Offline),
            ],
        });
        assert_eq!(res, RegistryResponse::Applied { changed: true });
        assert_eq!(r.nodes[&NodeId(1)].status, NodeStatus::Offline);
        assert_eq!(r.nodes[&NodeId(2)].status, NodeStatus::Online);
        assert!(!r.nodes.contains_key(&NodeId(42)));
    }

    #[test]
    fn uptime_samples_fill_day_buckets_and_retries_are_ignored() {
        let mut r = Registry::default();
        let day = 20_000;
        let t0 = day * DAY_MS;
        let batch = RegistryCommand::RecordUptime {
            bucket_ms: None,
            samples: vec![
                UptimeSample {
                    node: NodeId(1),
                    at_ms: t0 + 60_000,
                    up: true,
                },
                UptimeSample {
                    node: NodeId(1),
                    at_ms: t0 + 120_000,
                    up: false,
                },
            ],
        };
        assert_eq!(r.apply(&batch), RegistryResponse::Applied { changed: true });
        assert_eq!(
            r.apply(&batch),
            RegistryResponse::Applied { changed: false }
        );
        let bucket = r.uptime[&NodeId(1)][&day];
        assert_eq!((bucket.up_samples, bucket.total_samples), (1, 2));
    }

    #[test]
    fn prune_uptime_drops_whole_days_before_the_cutoff() {
        let mut r = Registry::default();
        let samples = (0..3)
            .map(|d| UptimeSample {
                node: NodeId(7),
                at_ms: (100 + d) * DAY_MS + 5,
                up: true,
            })
            .collect();
        r.apply(&RegistryCommand::RecordUptime {
            samples,
            bucket_ms: None,
        });
        r.apply(&RegistryCommand::PruneUptime {
            before_ms: 101 * DAY_MS + 10,
        });
        assert_eq!(
            r.uptime[&NodeId(7)].keys().copied().collect::<Vec<_>>(),
            vec![101, 102]
        );
        r.apply(&RegistryCommand::PruneUptime {
            before_ms: 200 * DAY_MS,
        });
        assert!(r.uptime.is_empty());
    }

    #[test]
    fn commands_round_trip_through_json() {
        let cmds = vec![
            RegistryCommand::PutApp {
                name: "api".into(),
                app: app(3),
            },
            RegistryCommand::SetNodeStatus {
                updates: vec![(NodeId(3), NodeStatus::Draining)],
            },
            RegistryCommand::Put {
                key: "k".into(),
                value: "v".into(),
            },
            RegistryCommand::Noop,
        ];
        for cmd in cmds {
            let json = serde_json::to_string(&cmd).expect("serialize");
            let back: RegistryCommand = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, cmd);
        }
    }

    #[test]
    fn registry_round_trips_through_json_with_numeric_map_keys() {
        let mut r = registry_with(&[("api", 1)], &[u64::MAX]);
        r.apply(&RegistryCommand::Assign {
            assignments: vec![assign("api", 0, u64::MAX)],
        });
        let json = serde_json::to_vec(&r).expect("serialize");
        let back: Registry = serde_json::from_slice(&json).expect("deserialize");
        assert_eq!(back, r);
    }
}
