//! Invariant 2: every acknowledged registry write is on every node after healing, the
//! replicas agree, and nothing appears twice or from nowhere.
//!
//! A write that failed or timed out may or may not have been applied, so it can only widen
//! what is acceptable: an acknowledged deploy of X requires X everywhere unless an undeploy of
//! X (acknowledged or not) may have been applied after it, and the desired count must be one
//! that such a write asked for.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::Check;
use super::secs;
use crate::history::History;
use crate::history::RegistryApp;
use crate::history::WriteKind;
use crate::history::WriteOp;

/// What the final registries must show for one app.
#[derive(Debug, PartialEq)]
enum Expect {
    Present {
        desired: BTreeSet<u32>,
        because: u64,
    },
    Absent {
        because: u64,
    },
    /// The writes that may have come last disagree; nothing can be required.
    Unknown,
}

fn keeps_app(k: WriteKind) -> bool {
    matches!(k, WriteKind::Deploy | WriteKind::Scale)
}

/// The acknowledged writes no other acknowledged write surely followed decide, widened by every
/// write that may have been applied after them.
fn expectation(ops: &[&WriteOp]) -> Option<Expect> {
    let acked: Vec<&&WriteOp> = ops.iter().filter(|o| o.acked).collect();
    if acked.is_empty() {
        return None;
    }
    let frontier: Vec<&&WriteOp> = acked
        .iter()
        .copied()
        .filter(|a| !acked.iter().any(|b| b.started_ms > a.ended_ms))
        .collect();
    let since = frontier.iter().map(|o| o.started_ms).min().unwrap_or(0);
    let maybe_after: Vec<&&WriteOp> = ops
        .iter()
        .filter(|o| o.ended_ms > since && !frontier.iter().any(|f| f.id == o.id))
        .collect();
    let because = frontier.iter().map(|o| o.id).max().unwrap_or(0);
    let candidates = frontier.iter().chain(maybe_after.iter());
    if frontier.iter().all(|o| keeps_app(o.kind)) {
        if maybe_after.iter().any(|o| o.kind == WriteKind::Undeploy) {
            return Some(Expect::Unknown);
        }
        let desired = candidates.filter_map(|o| o.instances).collect();
        Some(Expect::Present { desired, because })
    } else if frontier.iter().all(|o| o.kind == WriteKind::Undeploy) {
        if maybe_after.iter().any(|o| o.kind == WriteKind::Deploy) {
            return Some(Expect::Unknown);
        }
        Some(Expect::Absent { because })
    } else {
        Some(Expect::Unknown)
    }
}

fn by_app(h: &History) -> BTreeMap<&str, Vec<&WriteOp>> {
    let mut m: BTreeMap<&str, Vec<&WriteOp>> = BTreeMap::new();
    for w in &h.writes {
        m.entry(w.app.as_str()).or_default().push(w);
    }
    m
}

fn describe(h: &History, id: u64) -> String {
    h.writes
        .iter()
        .find(|w| w.id == id)
        .map(|w| {
            format!(
                "{:?} #{} through node {} acknowledged at {}",
                w.kind,
                w.id,
                w.node,
                secs(w.ended_ms)
            )
            .to_lowercase()
        })
        .unwrap_or_else(|| format!("write #{id}"))
}

pub fn acknowledged_writes_on_every_node(h: &History) -> Check {
    const NAME: &str = "2a acknowledged writes are on every node after healing";
    let acked = h.writes.iter().filter(|w| w.acked).count();
    if acked == 0 {
        return Check::no_data(NAME, "no registry write was acknowledged");
    }
    if h.final_registries.is_empty() {
        return Check::no_data(NAME, "no node's registry was read after healing");
    }
    let mut evidence = Vec::new();
    let (mut present, mut absent, mut unknown) = (0, 0, 0);
    for (app, ops) in by_app(h) {
        let Some(expect) = expectation(&ops) else {
            continue;
        };
        for snap in &h.final_registries {
            let Some(apps) = &snap.apps else {
                evidence.push(format!(
                    "node {} could not list its registry after healing: {}",
                    snap.node,
                    snap.error.as_deref().unwrap_or("no answer")
                ));
                continue;
            };
            let found = apps.iter().find(|a| a.name == app);
            match (&expect, found) {
                (Expect::Present { because, .. }, None) => evidence.push(format!(
                    "app `{app}`: {}, but node {}'s registry lacks it",
                    describe(h, *because),
                    snap.node
                )),
                (Expect::Present { desired, because }, Some(a))
                    if !desired.is_empty() && !desired.contains(&a.desired) =>
                {
                    evidence.push(format!(
                        "app `{app}`: node {} wants {} instances, but the writes that may have come last ({}) asked for {:?}",
                        snap.node,
                        a.desired,
                        describe(h, *because),
                        desired
                    ))
                }
                (Expect::Absent { because }, Some(_)) => evidence.push(format!(
                    "app `{app}`: {}, but node {} still has it",
                    describe(h, *because),
                    snap.node
                )),
                _ => {}
            }
        }
        match expect {
            Expect::Present { .. } => present += 1,
            Expect::Absent { .. } => absent += 1,
            Expect::Unknown => unknown += 1,
        }
    }
    evidence.dedup();
    if evidence.is_empty() {
        Check::pass(
            NAME,
            format!(
                "{acked} acknowledged writes; on all {} nodes {present} apps present and {absent} absent as required ({unknown} apps left open by unacknowledged writes)",
                h.final_registries.len()
            ),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

fn content(apps: &[RegistryApp]) -> BTreeMap<&str, (u32, &str)> {
    apps.iter()
        .map(|a| (a.name.as_str(), (a.desired, a.on_disconnect.as_str())))
        .collect()
}

pub fn replicas_agree(h: &History) -> Check {
    const NAME: &str = "2b every node holds the same registry after healing";
    let Some(first) = h
        .final_registries
        .iter()
        .find_map(|s| s.apps.as_ref().map(|a| (s.node, a)))
    else {
        return Check::no_data(NAME, "no node's registry was read after healing");
    };
    let reference = content(first.1);
    let mut evidence = Vec::new();
    for snap in &h.final_registries {
        match &snap.apps {
            None => evidence.push(format!(
                "node {} could not list its registry after healing: {}",
                snap.node,
                snap.error.as_deref().unwrap_or("no answer")
            )),
            Some(apps) => {
                let mine = content(apps);
                for name in reference.keys().chain(mine.keys()).collect::<BTreeSet<_>>() {
                    let (a, b) = (reference.get(name), mine.get(name));
                    if a != b {
                        evidence.push(format!(
                            "app `{name}`: node {} has {:?}, node {} has {:?} (desired, on_disconnect)",
                            first.0, a, snap.node, b
                        ));
                    }
                }
            }
        }
    }
    if evidence.is_empty() {
        Check::pass(
            NAME,
            format!(
                "{} nodes hold identical registries of {} apps",
                h.final_registries.len(),
                reference.len()
            ),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

pub fn nothing_twice_or_from_nowhere(h: &History) -> Check {
    const NAME: &str = "2c no app listed twice, none that no write created";
    if h.final_registries.iter().all(|s| s.apps.is_none()) {
        return Check::no_data(NAME, "no node's registry was read after healing");
    }
    let written: BTreeSet<&str> = h.writes.iter().map(|w| w.app.as_str()).collect();
    let mut evidence = Vec::new();
    for snap in &h.final_registries {
        let Some(apps) = &snap.apps else { continue };
        let mut seen = BTreeSet::new();
        for a in apps {
            if !seen.insert(a.name.as_str()) {
                evidence.push(format!("node {} lists app `{}` twice", snap.node, a.name));
            }
            if !written.contains(a.name.as_str()) {
                evidence.push(format!(
                    "node {} lists app `{}`, which no write (acknowledged or not) created",
                    snap.node, a.name
                ));
            }
        }
    }
    if evidence.is_empty() {
        Check::pass(
            NAME,
            format!(
                "{} apps were written; every listed app was one of them, once",
                written.len()
            ),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::RegistrySnapshot;
    use crate::invariants::Verdict;

    fn op(
        id: u64,
        kind: WriteKind,
        app: &str,
        n: Option<u32>,
        t: (u64, u64),
        acked: bool,
    ) -> WriteOp {
        WriteOp {
            id,
            kind,
            app: app.into(),
            instances: n,
            node: 1,
            started_ms: t.0,
            ended_ms: t.1,
            acked,
            error: (!acked).then(|| "deadline exceeded".into()),
        }
    }

    fn app(name: &str, desired: u32) -> RegistryApp {
        RegistryApp {
            name: name.into(),
            desired,
            on_disconnect: "keep".into(),
            assignments: BTreeMap::new(),
        }
    }

    fn snap(node: usize, apps: Vec<RegistryApp>) -> RegistrySnapshot {
        RegistrySnapshot {
            t_ms: 9_000,
            node,
            apps: Some(apps),
            error: None,
        }
    }

    fn clean() -> History {
        use WriteKind::*;
        History {
            writes: vec![
                op(1, Deploy, "a", Some(2), (0, 10), true),
                op(2, Deploy, "b", Some(1), (20, 30), true),
                op(3, Undeploy, "b", None, (40, 50), true),
                op(4, Deploy, "c", Some(1), (60, 70), false),
                op(5, Scale, "a", Some(3), (80, 90), true),
                // Unacknowledged undeploy after an acked deploy: `d` may be gone or not.
                op(6, Deploy, "d", Some(1), (100, 110), true),
                op(7, Undeploy, "d", None, (120, 130), false),
            ],
            final_registries: vec![
                snap(1, vec![app("a", 3), app("c", 1)]),
                snap(2, vec![app("a", 3), app("c", 1)]),
            ],
            ..History::default()
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let h = clean();
        assert_eq!(acknowledged_writes_on_every_node(&h).verdict, Verdict::Pass);
        assert_eq!(replicas_agree(&h).verdict, Verdict::Pass);
        assert_eq!(nothing_twice_or_from_nowhere(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn a_lost_acknowledged_write_fails_naming_the_write_and_the_node() {
        let mut h = clean();
        h.final_registries[1] = snap(2, vec![app("c", 1)]);
        let c = acknowledged_writes_on_every_node(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].contains("app `a`")
                && c.evidence[0].contains("node 2's registry lacks it"),
            "{:?}",
            c.evidence
        );
        assert_eq!(replicas_agree(&h).verdict, Verdict::Fail);
    }

    #[test]
    fn a_lost_scale_and_a_resurrected_app_fail() {
        let mut h = clean();
        h.final_registries = vec![snap(1, vec![app("a", 2), app("b", 1)])];
        let c = acknowledged_writes_on_every_node(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        let all = c.evidence.join("\n");
        assert!(all.contains("node 1 wants 2 instances"), "{all}");
        assert!(all.contains("app `b`: undeploy #3"), "{all}");
    }

    #[test]
    fn an_app_twice_or_from_nowhere_fails() {
        let mut h = clean();
        h.final_registries = vec![snap(1, vec![app("a", 3), app("a", 3), app("ghost", 1)])];
        let c = nothing_twice_or_from_nowhere(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.evidence.iter().any(|e| e.contains("`a` twice")));
        assert!(c.evidence.iter().any(|e| e.contains("`ghost`")));
    }

    #[test]
    fn overlapping_writes_only_widen_what_is_allowed() {
        use WriteKind::*;
        let a = op(1, Deploy, "x", Some(1), (0, 100), true);
        let b = op(2, Scale, "x", Some(4), (50, 200), false);
        let u = op(3, Undeploy, "x", None, (150, 300), true);
        assert_eq!(
            expectation(&[&a, &b]),
            Some(Expect::Present {
                desired: [1, 4].into(),
                because: 1
            })
        );
        assert_eq!(
            expectation(&[&a, &b, &u]),
            Some(Expect::Absent { because: 3 })
        );
        let late_deploy = op(4, Deploy, "x", Some(1), (400, 500), false);
        assert_eq!(expectation(&[&a, &u, &late_deploy]), Some(Expect::Unknown));
        assert_eq!(expectation(&[&b]), None);
    }

    #[test]
    fn an_unreadable_node_fails_and_no_snapshot_is_no_data() {
        let mut h = clean();
        h.final_registries[1] = RegistrySnapshot {
            t_ms: 1,
            node: 2,
            apps: None,
            error: Some("deadline exceeded".into()),
        };
        assert_eq!(replicas_agree(&h).verdict, Verdict::Fail);
        h.final_registries.clear();
        assert_eq!(
            acknowledged_writes_on_every_node(&h).verdict,
            Verdict::NoData
        );
        assert_eq!(replicas_agree(&h).verdict, Verdict::NoData);
        assert_eq!(nothing_twice_or_from_nowhere(&h).verdict, Verdict::NoData);
    }
}
