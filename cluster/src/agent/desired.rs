//! What a node must run, read from its own registry replica: the instances assigned to it, plus
//! those moving away from it whose new copy is not running yet ("start new, then stop old").

use super::DesiredInstance;
use crate::registry::NodeId;
use crate::registry::OnDisconnect;
use crate::registry::Registry;

/// One instance this node should run, with what the agent needs beyond the supervisor's part.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Wanted {
    pub instance: DesiredInstance,
    pub on_disconnect: OnDisconnect,
    /// The restart generation it should run at.
    pub generation: u64,
}

/// Sorted by (app, instance), without duplicates.
pub(crate) fn from_registry(reg: &Registry, me: NodeId) -> Vec<Wanted> {
    let mut refs = reg.instances_on(me);
    refs.extend(reg.moving_from(me));
    refs.sort();
    refs.dedup();
    refs.into_iter()
        .filter_map(|r| {
            let app = reg.apps.get(&r.app)?;
            Some(Wanted {
                generation: reg.generation_of(&r.app, r.instance),
                on_disconnect: app.on_disconnect,
                instance: DesiredInstance {
                    app: r.app,
                    instance: r.instance,
                    spec: app.spec.clone(),
                },
            })
        })
        .collect()
}

/// The job runs dispatched to this node, by (job, run).
pub(crate) fn runs_from_registry(reg: &Registry, me: NodeId) -> Vec<super::DesiredRun> {
    let mut out = Vec::new();
    for (name, job) in &reg.jobs {
        for run in job.active.values().filter(|r| r.node == me) {
            out.push(super::DesiredRun {
                job: name.clone(),
                run: run.id,
                attempt: run.attempt,
                trigger: run.trigger.clone(),
                tick_ms: run.tick_ms,
                args: run.args.clone(),
                spec: job.spec.clone(),
            });
        }
    }
    out
}

/// What keeps running while no master is heard: everything but `on_disconnect = "stop"` apps.
pub(crate) fn while_disconnected(wanted: Vec<Wanted>) -> Vec<Wanted> {
    wanted
        .into_iter()
        .filter(|w| w.on_disconnect == OnDisconnect::Keep)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::App;
    use crate::registry::Assignment;
    use crate::registry::InstanceMove;
    use crate::registry::NodeRecord;
    use crate::registry::RegistryCommand;

    #[test]
    fn assigned_and_moving_away_instances_are_wanted_and_stop_apps_drop_when_cut_off() {
        let mut r = Registry::default();
        for (name, on_disconnect) in [("api", OnDisconnect::Keep), ("cron", OnDisconnect::Stop)] {
            r.apply(&RegistryCommand::PutApp {
                name: name.into(),
                app: App {
                    instances: 2,
                    on_disconnect,
                    spec: serde_json::json!({ "name": name }),
                    ..App::default()
                },
            });
        }
        r.apply(&RegistryCommand::UpsertNodes {
            nodes: (1..=2)
                .map(|id| NodeRecord {
                    id: NodeId(id),
                    ..NodeRecord::default()
                })
                .collect(),
        });
        r.apply(&RegistryCommand::Assign {
            assignments: vec![
                Assignment {
                    app: "api".into(),
                    instance: 0,
                    node: NodeId(1),
                },
                Assignment {
                    app: "cron".into(),
                    instance: 0,
                    node: NodeId(1),
                },
                Assignment {
                    app: "api".into(),
                    instance: 1,
                    node: NodeId(1),
                },
            ],
        });
        r.apply(&RegistryCommand::Move {
            moves: vec![InstanceMove {
                app: "api".into(),
                instance: 1,
                from: NodeId(1),
                to: NodeId(2),
            }],
        });
        let mine: Vec<(String, u32)> = from_registry(&r, NodeId(1))
            .into_iter()
            .map(|w| (w.instance.app, w.instance.instance))
            .collect();
        assert_eq!(
            mine,
            vec![("api".into(), 0), ("api".into(), 1), ("cron".into(), 0)]
        );
        let theirs = from_registry(&r, NodeId(2));
        assert_eq!(theirs.len(), 1);
        assert_eq!(
            theirs[0].instance.spec,
            serde_json::json!({ "name": "api" })
        );
        let kept: Vec<String> = while_disconnected(from_registry(&r, NodeId(1)))
            .into_iter()
            .map(|w| w.instance.app)
            .collect();
        assert_eq!(kept, vec!["api", "api"]);
    }
}
