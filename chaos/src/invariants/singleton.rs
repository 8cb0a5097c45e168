//! Invariant 3, the singleton half: the `on_disconnect = "stop"` app must never run on two
//! nodes at once. Sightings come from `herd ps` and from `/proc`; the same process seen twice
//! within a short gap is taken to have run in between, and two such stretches on different
//! nodes that overlap are a duplicate.

use std::collections::BTreeMap;

use super::Check;
use super::secs;
use crate::history::History;
use crate::history::NodeIndex;

/// Two sightings of the same process further apart than this do not prove it ran in between
/// (it may have been frozen, or the observer starved).
pub const MAX_SIGHTING_GAP_MS: u64 = 3_000;

/// Times one process (node, pid) was seen running, per singleton instance (app, index).
type Sightings<'a> = BTreeMap<(&'a str, u32), BTreeMap<(NodeIndex, i32), Vec<u64>>>;

/// A stretch of time one process was seen running as the singleton on one node.
#[derive(Debug)]
struct Stretch {
    node: NodeIndex,
    pid: i32,
    from: u64,
    to: u64,
}

pub fn singleton_never_twice(h: &History) -> Check {
    const NAME: &str = "3c the on_disconnect=stop singleton never runs on two nodes at once";
    if h.singletons.is_empty() {
        return Check::no_data(
            NAME,
            "the singleton was never seen running (needs master duties: placement and the agent)",
        );
    }
    let mut sightings: Sightings = BTreeMap::new();
    for s in &h.singletons {
        sightings
            .entry((s.app.as_str(), s.instance))
            .or_default()
            .entry((s.node, s.pid))
            .or_default()
            .push(s.t_ms);
    }
    let mut evidence = Vec::new();
    for ((app, instance), by_process) in &sightings {
        let mut stretches = Vec::new();
        for (&(node, pid), times) in by_process {
            let mut times = times.clone();
            times.sort_unstable();
            let mut from = times[0];
            let mut to = times[0];
            for &t in &times[1..] {
                if t - to > MAX_SIGHTING_GAP_MS {
                    stretches.push(Stretch {
                        node,
                        pid,
                        from,
                        to,
                    });
                    from = t;
                }
                to = t;
            }
            stretches.push(Stretch {
                node,
                pid,
                from,
                to,
            });
        }
        for (i, a) in stretches.iter().enumerate() {
            for b in &stretches[i + 1..] {
                if a.node != b.node && a.from <= b.to && b.from <= a.to {
                    let context = |st: &Stretch| {
                        let mut c = h.faults_on_between(st.node, st.from, st.to);
                        c.extend(
                            h.daemon_starts
                                .iter()
                                .filter(|d| {
                                    d.node == st.node && d.t_ms >= st.from && d.t_ms <= st.to
                                })
                                .map(|d| format!("daemon restarted at {}", secs(d.t_ms))),
                        );
                        if c.is_empty() {
                            String::new()
                        } else {
                            format!(" [node {}: {}]", st.node, c.join(", "))
                        }
                    };
                    evidence.push(format!(
                        "`{app}@{instance}` ran on node {} (pid {}, {}–{}) and on node {} (pid {}, {}–{}): both for {}{}{}",
                        a.node,
                        a.pid,
                        secs(a.from),
                        secs(a.to),
                        b.node,
                        b.pid,
                        secs(b.from),
                        secs(b.to),
                        secs(a.to.min(b.to) - a.from.max(b.from)),
                        context(a),
                        context(b)
                    ));
                }
            }
        }
    }
    if evidence.is_empty() {
        Check::pass(
            NAME,
            format!(
                "{} sightings, never on two nodes at once",
                h.singletons.len()
            ),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::SingletonObservation;
    use crate::history::Source;
    use crate::invariants::Verdict;

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
        History {
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
    fn a_singleton_that_moved_cleanly_passes() {
        assert_eq!(singleton_never_twice(&clean()).verdict, Verdict::Pass);
    }

    #[test]
    fn a_duplicated_singleton_fails_with_both_nodes_and_pids() {
        let mut h = clean();
        h.singletons.push(seen(1_000, 1, 7));
        let c = singleton_never_twice(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].contains("node 1 (pid 7") && c.evidence[0].contains("node 2 (pid 8"),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn sightings_far_apart_do_not_prove_a_process_ran_in_between() {
        let mut h = clean();
        // Node 1's pid 7 again long after: a frozen process thawed, not a duplicate.
        h.singletons
            .push(seen(600 + MAX_SIGHTING_GAP_MS + 2_000, 1, 7));
        assert_eq!(singleton_never_twice(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn never_seen_is_no_data() {
        assert_eq!(
            singleton_never_twice(&History::default()).verdict,
            Verdict::NoData
        );
    }
}
