//! Invariant 3: after healing every app runs its desired number of instances within the
//! deadline, and the `on_disconnect = "stop"` singleton never runs on two nodes at once.
//!
//! Cluster instances appear in a node's `herd ps` as local apps named `APP@INDEX`. A moment
//! is judged on the latest `ps` of every node, all taken after healing.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::Check;
use super::secs;
use crate::history::History;
use crate::history::NodeIndex;
use crate::history::PsRow;
use crate::history::PsSnapshot;

/// `web@3` → (`web`, 3).
pub fn split_instance(name: &str) -> Option<(&str, u32)> {
    let (app, index) = name.rsplit_once('@')?;
    Some((app, index.parse().ok()?))
}

fn running(r: &PsRow) -> bool {
    r.status == "running" && r.pid.is_some()
}

fn nodes_of(h: &History) -> BTreeSet<NodeIndex> {
    let mut nodes: BTreeSet<NodeIndex> = h.nodes.iter().map(|n| n.node).collect();
    if nodes.is_empty() {
        nodes = h.instances.iter().map(|s| s.node).collect();
    }
    nodes
}

/// Walks the `ps` snapshots taken after `from_ms`, calling `judge` with the latest snapshot of
/// every node each time one arrives (once all nodes have one). Stops at the first `true`.
fn first_moment(
    h: &History,
    from_ms: u64,
    until_ms: u64,
    mut judge: impl FnMut(&BTreeMap<NodeIndex, &PsSnapshot>) -> bool,
) -> (Option<u64>, BTreeMap<NodeIndex, PsSnapshot>) {
    let nodes = nodes_of(h);
    let mut snaps: Vec<&PsSnapshot> = h
        .instances
        .iter()
        .filter(|s| s.t_ms >= from_ms && s.t_ms <= until_ms)
        .collect();
    snaps.sort_by_key(|s| s.t_ms);
    let mut latest: BTreeMap<NodeIndex, &PsSnapshot> = BTreeMap::new();
    for s in snaps {
        latest.insert(s.node, s);
        if nodes.iter().all(|n| latest.contains_key(n)) && judge(&latest) {
            return (Some(s.t_ms), BTreeMap::new());
        }
    }
    let last = latest.into_iter().map(|(n, s)| (n, s.clone())).collect();
    (None, last)
}

/// What is wrong in this view, as (app, description); empty when every app runs its desired
/// instances, each once, and nothing else runs.
fn cluster_problems(
    desired: &BTreeMap<String, u32>,
    view: &BTreeMap<NodeIndex, &PsSnapshot>,
) -> Vec<(String, String)> {
    let mut where_runs: BTreeMap<(&str, u32), Vec<NodeIndex>> = BTreeMap::new();
    for (node, snap) in view {
        for r in snap.rows.iter().filter(|r| running(r)) {
            if let Some((app, i)) = split_instance(&r.name) {
                where_runs.entry((app, i)).or_default().push(*node);
            }
        }
    }
    let mut problems = Vec::new();
    for (app, &want) in desired {
        let up = (0..want)
            .filter(|i| where_runs.contains_key(&(app.as_str(), *i)))
            .count() as u32;
        if up != want {
            problems.push((
                app.clone(),
                format!("`{app}`: {up} of {want} instances running"),
            ));
        }
    }
    for ((app, i), nodes) in &where_runs {
        let problem = match desired.get(*app) {
            None => format!("`{app}@{i}` runs on node(s) {nodes:?} but `{app}` is not deployed"),
            Some(&want) if *i >= want => {
                format!("`{app}@{i}` runs on node(s) {nodes:?} but `{app}` wants {want}")
            }
            _ if nodes.len() > 1 => format!("`{app}@{i}` runs on nodes {nodes:?} at once"),
            _ => continue,
        };
        problems.push((app.to_string(), problem));
    }
    problems
}

fn desired_at_heal(h: &History) -> Option<BTreeMap<String, u32>> {
    let apps = h.final_registries.iter().find_map(|s| s.apps.as_ref())?;
    Some(apps.iter().map(|a| (a.name.clone(), a.desired)).collect())
}

pub fn cluster_apps_converge(h: &History) -> Check {
    const NAME: &str = "3a cluster apps reach their desired count after healing";
    let Some(heal) = &h.heal else {
        return Check::no_data(NAME, "the run never got to healing");
    };
    // Placed but never run anywhere means the agent is missing, not that it is slow: say so
    // rather than fail (or pass) on nothing.
    let ever_ran = h.instances.iter().any(|s| {
        s.rows
            .iter()
            .any(|r| running(r) && split_instance(&r.name).is_some())
    });
    let ever_placed = h
        .final_registries
        .iter()
        .filter_map(|s| s.apps.as_ref())
        .any(|apps| apps.iter().any(|a| !a.assignments.is_empty()));
    if !ever_ran {
        return Check::no_data(
            NAME,
            if ever_placed {
                "the master assigned instances, but no node ever ran one (needs master duties: the agent that starts assigned instances)"
            } else {
                "no cluster instance was ever placed or run (needs master duties: placement and the agent)"
            },
        );
    }
    let Some(desired) = desired_at_heal(h) else {
        return Check::no_data(NAME, "no node's registry was read after healing");
    };
    let until = heal.healed_ms + heal.deadline_ms;
    let (at, last) = first_moment(h, heal.healed_ms, until, |view| {
        cluster_problems(&desired, view).is_empty()
    });
    match at {
        Some(t) => Check::pass(
            NAME,
            format!(
                "{} apps ran their desired instances {} after healing (deadline {})",
                desired.len(),
                secs(t - heal.healed_ms),
                secs(heal.deadline_ms)
            ),
        ),
        None => {
            let view: BTreeMap<NodeIndex, &PsSnapshot> =
                last.iter().map(|(n, s)| (*n, s)).collect();
            let mut evidence = vec![format!(
                "not converged {} after healing (at {}); last view:",
                secs(heal.deadline_ms),
                secs(heal.healed_ms)
            )];
            for n in nodes_of(h) {
                if !view.contains_key(&n) {
                    evidence.push(format!("node {n} never answered `herd ps` after healing"));
                }
            }
            evidence.extend(cluster_problems(&desired, &view).into_iter().map(|p| p.1));
            Check::fail(NAME, evidence)
        }
    }
}

pub fn local_apps_converge(h: &History) -> Check {
    const NAME: &str = "3b apps under each local supervisor reach their count after healing";
    let Some(heal) = h.heal.as_ref().filter(|h| !h.local_targets.is_empty()) else {
        return Check::no_data(NAME, "no local app was started");
    };
    let problems = |view: &BTreeMap<NodeIndex, &PsSnapshot>| {
        let mut out = Vec::new();
        for (node, apps) in &heal.local_targets {
            let Some(snap) = view.get(node) else { continue };
            for (app, &want) in apps {
                let rows: Vec<&PsRow> = snap
                    .rows
                    .iter()
                    .filter(|r| &r.name == app && running(r))
                    .collect();
                let distinct: BTreeSet<u32> = rows.iter().map(|r| r.instance).collect();
                if distinct.len() as u32 != want || rows.len() != distinct.len() {
                    out.push(format!(
                        "node {node}: `{app}` has {} running rows over {} distinct instances, wants {want}",
                        rows.len(),
                        distinct.len()
                    ));
                }
            }
        }
        out
    };
    let until = heal.healed_ms + heal.deadline_ms;
    let (at, last) = first_moment(h, heal.healed_ms, until, |view| problems(view).is_empty());
    let count: usize = heal.local_targets.values().map(BTreeMap::len).sum();
    match at {
        Some(t) => Check::pass(
            NAME,
            format!(
                "{count} local apps at their count {} after healing",
                secs(t - heal.healed_ms)
            ),
        ),
        None => {
            let view: BTreeMap<NodeIndex, &PsSnapshot> =
                last.iter().map(|(n, s)| (*n, s)).collect();
            let mut evidence = vec![format!(
                "not converged {} after healing:",
                secs(heal.deadline_ms)
            )];
            evidence.extend(problems(&view));
            for n in heal.local_targets.keys().filter(|n| !view.contains_key(n)) {
                evidence.push(format!("node {n} never answered `herd ps` after healing"));
            }
            Check::fail(NAME, evidence)
        }
    }
}

/// Per cluster app: how long after healing it first ran its desired count (`None`: never
/// within the deadline). For the convergence distribution.
pub fn convergence_times(h: &History) -> Vec<(String, Option<u64>)> {
    let (Some(heal), Some(desired)) = (&h.heal, desired_at_heal(h)) else {
        return Vec::new();
    };
    if !h.instances.iter().any(|s| {
        s.rows
            .iter()
            .any(|r| running(r) && split_instance(&r.name).is_some())
    }) {
        return Vec::new();
    }
    desired
        .iter()
        .map(|(app, &want)| {
            let one: BTreeMap<String, u32> = [(app.clone(), want)].into();
            let (at, _) = first_moment(
                h,
                heal.healed_ms,
                heal.healed_ms + heal.deadline_ms,
                |view| cluster_problems(&one, view).iter().all(|p| &p.0 != app),
            );
            (app.clone(), at.map(|t| t - heal.healed_ms))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Heal;
    use crate::history::NodeInfo;
    use crate::history::RegistryApp;
    use crate::history::RegistrySnapshot;
    use crate::history::SingletonObservation;
    use crate::history::Source;
    use crate::invariants::Verdict;

    fn row(name: &str, instance: u32, pid: i32) -> PsRow {
        PsRow {
            name: name.into(),
            instance,
            pid: Some(pid),
            status: "running".into(),
        }
    }

    fn ps(t: u64, node: usize, rows: Vec<PsRow>) -> PsSnapshot {
        PsSnapshot {
            t_ms: t,
            node,
            rows,
        }
    }

    fn seen(t: u64, node: usize, pid: i32) -> SingletonObservation {
        SingletonObservation {
            t_ms: t,
            node,
            app: "solo".into(),
            instance: 0,
            pid,
            source: Source::Proc,
        }
    }

    fn clean() -> History {
        let node = |i: usize| NodeInfo {
            node: i,
            namespace: format!("h{i}"),
            ip: String::new(),
            home: String::new(),
            agent: false,
        };
        History {
            nodes: vec![node(1), node(2)],
            heal: Some(Heal {
                healed_ms: 1_000,
                deadline_ms: 5_000,
                local_targets: [
                    (1, [("local".to_string(), 2)].into()),
                    (2, [("local".to_string(), 2)].into()),
                ]
                .into(),
            }),
            final_registries: vec![RegistrySnapshot {
                t_ms: 7_000,
                node: 1,
                apps: Some(vec![RegistryApp {
                    name: "web".into(),
                    desired: 2,
                    on_disconnect: "keep".into(),
                    assignments: [("0".to_string(), 11), ("1".to_string(), 22)].into(),
                }]),
                error: None,
            }],
            instances: vec![
                // Before healing: web@0 twice is not judged.
                ps(500, 1, vec![row("web@0", 0, 5)]),
                ps(600, 2, vec![row("web@0", 0, 6)]),
                ps(
                    1_200,
                    1,
                    vec![row("web@0", 0, 10), row("local", 0, 1), row("local", 1, 2)],
                ),
                ps(1_300, 2, vec![row("local", 0, 3), row("local", 1, 4)]),
                ps(
                    2_500,
                    2,
                    vec![row("web@1", 0, 20), row("local", 0, 3), row("local", 1, 4)],
                ),
            ],
            // Moved from node 1 to node 2: node 1's copy was last seen before node 2's first.
            singletons: vec![
                seen(100, 1, 7),
                seen(600, 1, 7),
                seen(900, 2, 8),
                seen(2_000, 2, 8),
            ],
            ..History::default()
        }
    }

    #[test]
    fn a_clean_history_converges_within_the_deadline() {
        let h = clean();
        let c = cluster_apps_converge(&h);
        assert_eq!(c.verdict, Verdict::Pass, "{:?}", c.evidence);
        assert!(
            c.evidence[0].contains("1.5 s after healing"),
            "{:?}",
            c.evidence
        );
        assert_eq!(local_apps_converge(&h).verdict, Verdict::Pass);
        assert_eq!(
            convergence_times(&h),
            vec![("web".to_string(), Some(1_500))]
        );
    }

    #[test]
    fn an_app_short_of_its_count_at_the_deadline_fails() {
        let mut h = clean();
        h.instances.pop();
        let c = cluster_apps_converge(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence
                .iter()
                .any(|e| e.contains("`web`: 1 of 2 instances running")),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn an_instance_on_two_nodes_or_undeployed_is_not_converged() {
        let mut h = clean();
        h.instances.push(ps(
            3_000,
            1,
            vec![
                row("web@0", 0, 10),
                row("web@1", 0, 11),
                row("old@0", 0, 12),
            ],
        ));
        h.instances.remove(4);
        let c = cluster_apps_converge(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        let all = c.evidence.join("\n");
        assert!(
            all.contains("`old@0` runs on node(s) [1] but `old` is not deployed"),
            "{all}"
        );
    }

    #[test]
    fn a_local_app_with_a_duplicate_slot_fails() {
        let mut h = clean();
        for s in &mut h.instances {
            if s.node == 2 {
                s.rows.push(row("local", 1, 99));
            }
        }
        let c = local_apps_converge(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence
                .iter()
                .any(|e| e.contains("node 2: `local` has 3 running rows")),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn placed_but_never_run_is_no_data_naming_the_agent() {
        let mut h = clean();
        for s in &mut h.instances {
            s.rows.retain(|r| split_instance(&r.name).is_none());
        }
        let c = cluster_apps_converge(&h);
        assert_eq!(c.verdict, Verdict::NoData);
        assert!(
            c.evidence[0].contains("no node ever ran one"),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn without_master_duties_there_is_no_data() {
        let mut h = clean();
        h.singletons.clear();
        for s in &mut h.instances {
            s.rows.retain(|r| split_instance(&r.name).is_none());
        }
        if let Some(apps) = h.final_registries[0].apps.as_mut() {
            apps[0].assignments.clear();
        }
        let c = cluster_apps_converge(&h);
        assert_eq!(c.verdict, Verdict::NoData);
        assert!(
            c.evidence[0].contains("ever placed or run"),
            "{:?}",
            c.evidence
        );
        assert_eq!(local_apps_converge(&h).verdict, Verdict::Pass);
    }
}
