//! Invariant 6: after the cluster settled, every live agent holds the slice of the registry
//! the registry cuts for it. What counts is what the agent runs: for its node id, the set of
//! (app, instance, restart generation) from the assignments in the slice it keeps in
//! `$HERD_HOME/raft/slice.json`, against the same set from the registry as the leader lists
//! it (`herd cluster apps --json`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::Check;
use super::secs;
use crate::history::AgentSlice;
use crate::history::History;

/// One instance a node must run: app, instance index, restart generation (0: never
/// restarted).
pub type Entry = (String, u32, u64);

/// The restart generation of `instance` from a `RestartState` JSON (`{generation, pending}`),
/// 0 when there is none.
fn generation(restart: &Value, instance: &str) -> u64 {
    restart["pending"][instance]
        .as_u64()
        .or_else(|| restart["generation"].as_u64())
        .unwrap_or(0)
}

/// The entries of `node` in `assignments` (app → instance → node id) with `restart_of(app)`.
fn entries_of<'a>(
    assignments: impl Iterator<Item = (&'a String, &'a Value)>,
    node: u64,
    restart_of: impl Fn(&str) -> &'a Value,
) -> BTreeSet<Entry> {
    let mut out = BTreeSet::new();
    for (app, instances) in assignments {
        let Some(instances) = instances.as_object() else {
            continue;
        };
        for (i, n) in instances {
            if n.as_u64() == Some(node)
                && let Ok(index) = i.parse::<u32>()
            {
                out.insert((app.clone(), index, generation(restart_of(app), i)));
            }
        }
    }
    out
}

/// From a held slice (`slice.json`: `{as_of, slice: {node, version, registry}}`): the node
/// it was cut for and what it says that node runs. `None` if it is no held slice.
pub fn held_entries(held: &Value) -> Option<(u64, BTreeSet<Entry>)> {
    let slice = &held["slice"];
    let node = slice["node"].as_u64()?;
    let registry = &slice["registry"];
    let assignments = match &registry["assignments"] {
        Value::Object(m) => m,
        Value::Null => return Some((node, BTreeSet::new())),
        _ => return None,
    };
    let restarts = &registry["restarts"];
    Some((
        node,
        entries_of(assignments.iter(), node, |app| &restarts[app]),
    ))
}

/// From `herd cluster apps --json` (an array of apps with `name`, `assignments` and
/// `restart`): what the registry says `node` runs. `None` if it is no such list.
pub fn registry_entries(apps: &Value, node: u64) -> Option<BTreeSet<Entry>> {
    let apps = apps.as_array()?;
    let mut out = BTreeSet::new();
    for a in apps {
        let name = a["name"].as_str()?.to_string();
        let assignments = [(&name, &a["assignments"])];
        out.extend(entries_of(assignments.into_iter(), node, |_| &a["restart"]));
    }
    Some(out)
}

fn show(set: &BTreeSet<&Entry>) -> String {
    let items: Vec<String> = set
        .iter()
        .take(6)
        .map(|(a, i, g)| format!("{a}@{i} gen {g}"))
        .collect();
    let more = set.len().saturating_sub(6);
    if more > 0 {
        format!("{} and {more} more", items.join(", "))
    } else {
        items.join(", ")
    }
}

/// Why `s` disagrees with the registry, or `Ok(instances)` when it agrees. `Err(None)`:
/// nothing to judge (the agent was not live, or the registry could not be read).
pub fn compare(s: &AgentSlice) -> Result<usize, Option<String>> {
    if !s.live {
        return Err(None);
    }
    let Some(apps) = &s.registry else {
        return Err(None);
    };
    let held = match &s.held {
        Some(v) => Some(held_entries(v).ok_or_else(|| {
            Some(format!(
                "node {}: its slice.json is not a held slice",
                s.node
            ))
        })?),
        None => None,
    };
    let id = s.node_id.or(held.as_ref().map(|h| h.0)).ok_or_else(|| {
        Some(format!(
            "node {}: neither its status nor its slice names its node id",
            s.node
        ))
    })?;
    let want = registry_entries(apps, id)
        .ok_or_else(|| Some(format!("node {}: unreadable `cluster apps` answer", s.node)))?;
    let Some((held_for, have)) = held else {
        return if want.is_empty() {
            Ok(0)
        } else {
            Err(Some(format!(
                "node {} ({id}) holds no slice at {}, but the registry assigns it {}",
                s.node,
                secs(s.t_ms),
                show(&want.iter().collect())
            )))
        };
    };
    if held_for != id {
        return Err(Some(format!(
            "node {} is node id {id} but holds the slice of node {held_for}",
            s.node
        )));
    }
    if have == want {
        return Ok(have.len());
    }
    let missing: BTreeSet<&Entry> = want.difference(&have).collect();
    let extra: BTreeSet<&Entry> = have.difference(&want).collect();
    let mut line = format!(
        "agent node {} ({id}) at {}: its held slice{} differs from the registry's slice for it:",
        s.node,
        secs(s.t_ms),
        s.version
            .map_or_else(String::new, |v| format!(" (version {v})"))
    );
    if !missing.is_empty() {
        line.push_str(&format!(" missing {};", show(&missing)));
    }
    if !extra.is_empty() {
        line.push_str(&format!(" not in the registry {};", show(&extra)));
    }
    Err(Some(line))
}

/// The last reading of every agent must agree with the registry.
pub fn agent_slices_match(h: &History) -> Check {
    const NAME: &str = "6a every live agent's held slice equals the registry's slice for it";
    if h.agent_slices.is_empty() {
        return Check::no_data(NAME, "no agent's slice was read (no agents in this run)");
    }
    let mut evidence = Vec::new();
    let mut judged = Vec::new();
    let mut skipped = Vec::new();
    for s in &h.agent_slices {
        match compare(s) {
            Ok(n) => judged.push(format!("node {}: {n} instances", s.node)),
            Err(Some(why)) => evidence.push(why),
            Err(None) => skipped.push(match &s.error {
                Some(e) => format!("node {} ({e})", s.node),
                None => format!("node {}", s.node),
            }),
        }
    }
    if !evidence.is_empty() {
        return Check::fail(NAME, evidence);
    }
    if judged.is_empty() {
        return Check::no_data(
            NAME,
            format!(
                "no agent could be judged (not live, or no registry read): {}",
                skipped.join(", ")
            ),
        );
    }
    let mut line = format!(
        "{} agent(s) hold exactly their registry slice ({})",
        judged.len(),
        judged.join("; ")
    );
    if !skipped.is_empty() {
        line.push_str(&format!("; not judged: {}", skipped.join(", ")));
    }
    Check::pass(NAME, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::Verdict;
    use serde_json::json;

    fn apps() -> Value {
        json!([
            {"name": "web", "desired": 3, "on_disconnect": "keep",
             "assignments": {"0": 7, "1": 8, "2": 7},
             "restart": {"generation": 2, "pending": {"2": 1}}},
            {"name": "solo", "desired": 1, "on_disconnect": "stop",
             "assignments": {"0": 7}, "restart": null},
            {"name": "other", "desired": 1, "assignments": {"0": 9}}
        ])
    }

    fn held(node: u64, assignments: Value, restarts: Value) -> Value {
        json!({"as_of": 40, "slice": {"node": node, "version": 38, "registry": {
            "apps": {}, "nodes": {}, "uptime": {}, "kv": {},
            "assignments": assignments, "restarts": restarts}}})
    }

    fn good_held() -> Value {
        held(
            7,
            json!({"web": {"0": 7, "2": 7}, "solo": {"0": 7}}),
            json!({"web": {"generation": 2, "pending": {"2": 1}}}),
        )
    }

    fn reading(held: Option<Value>) -> AgentSlice {
        AgentSlice {
            t_ms: 200_000,
            node: 4,
            node_id: Some(7),
            live: true,
            version: Some(38),
            held,
            registry: Some(apps()),
            error: None,
        }
    }

    fn e(app: &str, i: u32, g: u64) -> Entry {
        (app.to_string(), i, g)
    }

    #[test]
    fn both_sides_derive_app_instance_and_generation() {
        let want = BTreeSet::from([e("solo", 0, 0), e("web", 0, 2), e("web", 2, 1)]);
        assert_eq!(registry_entries(&apps(), 7), Some(want.clone()));
        assert_eq!(held_entries(&good_held()), Some((7, want)));
        assert_eq!(
            registry_entries(&apps(), 8),
            Some(BTreeSet::from([e("web", 1, 2)]))
        );
        assert!(registry_entries(&json!({}), 7).is_none());
        assert!(held_entries(&json!({"slice": {}})).is_none());
    }

    #[test]
    fn an_equal_slice_passes() {
        let h = History {
            agent_slices: vec![reading(Some(good_held()))],
            ..History::default()
        };
        let c = agent_slices_match(&h);
        assert_eq!(c.verdict, Verdict::Pass, "{:?}", c.evidence);
        assert!(c.evidence[0].contains("node 4: 3 instances"));
    }

    #[test]
    fn a_stale_generation_or_a_missing_instance_fails() {
        // The agent still runs web@2 at generation 2 and never heard of solo@0.
        let stale = held(
            7,
            json!({"web": {"0": 7, "2": 7}}),
            json!({"web": {"generation": 2}}),
        );
        let h = History {
            agent_slices: vec![reading(Some(stale))],
            ..History::default()
        };
        let c = agent_slices_match(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        let line = &c.evidence[0];
        assert!(line.contains("missing solo@0 gen 0, web@2 gen 1"), "{line}");
        assert!(line.contains("not in the registry web@2 gen 2"), "{line}");
    }

    #[test]
    fn someone_elses_slice_or_none_at_all_fails() {
        let h = History {
            agent_slices: vec![
                reading(Some(held(8, json!({"web": {"1": 8}}), json!({})))),
                reading(None),
            ],
            ..History::default()
        };
        let c = agent_slices_match(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.evidence[0].contains("holds the slice of node 8"));
        assert!(c.evidence[1].contains("holds no slice"));
    }

    #[test]
    fn no_slice_is_fine_when_nothing_is_assigned_and_dead_agents_are_not_judged() {
        let mut idle = reading(None);
        idle.node_id = Some(42);
        let mut dead = reading(None);
        dead.live = false;
        dead.error = Some("daemon not running".into());
        let h = History {
            agent_slices: vec![idle, dead.clone()],
            ..History::default()
        };
        let c = agent_slices_match(&h);
        assert_eq!(c.verdict, Verdict::Pass, "{:?}", c.evidence);
        assert!(c.evidence[0].contains("not judged: node 4 (daemon not running)"));
        let only_dead = History {
            agent_slices: vec![dead],
            ..History::default()
        };
        assert_eq!(agent_slices_match(&only_dead).verdict, Verdict::NoData);
        assert_eq!(
            agent_slices_match(&History::default()).verdict,
            Verdict::NoData
        );
    }
}
