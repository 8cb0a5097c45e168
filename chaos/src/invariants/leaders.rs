//! Invariant 1: never two leaders in the same term, never two masters in the same term, and
//! every heartbeat a node accepts comes from the highest term that node has seen by then.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::Check;
use super::secs;
use crate::history::History;
use crate::history::LeaderObservation;

/// Who each node believed led each term: a node calling itself leader, or naming a leader.
pub fn one_leader_per_term(h: &History) -> Check {
    const NAME: &str = "1a never two leaders in the same term";
    let mut claims: BTreeMap<u64, BTreeMap<u64, Vec<&LeaderObservation>>> = BTreeMap::new();
    for o in &h.leaders {
        let mut leaders = BTreeSet::new();
        if let Some(l) = o.leader_id {
            leaders.insert(l);
        }
        if o.role == "leader"
            && let Some(me) = o.node_id
        {
            leaders.insert(me);
        }
        for l in leaders {
            claims
                .entry(o.term)
                .or_default()
                .entry(l)
                .or_default()
                .push(o);
        }
    }
    if claims.is_empty() {
        return Check::no_data(NAME, "no node ever reported a leader");
    }
    let mut evidence = Vec::new();
    for (term, by_leader) in &claims {
        if by_leader.len() < 2 {
            continue;
        }
        let mut line = format!("term {term} had {} leaders:", by_leader.len());
        for (leader, seen) in by_leader {
            let o = seen[0];
            line.push_str(&format!(
                " {leader} (seen by node {} as {} at {}, {} observations);",
                o.observer,
                o.role,
                secs(o.t_ms),
                seen.len()
            ));
        }
        evidence.push(line);
    }
    if evidence.is_empty() {
        let observations: usize = claims.values().flat_map(|m| m.values()).map(Vec::len).sum();
        Check::pass(
            NAME,
            format!(
                "{} terms observed with a leader ({} observations); each had exactly one",
                claims.len(),
                observations
            ),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

/// From the daemons' logs: the nodes that started master duties in each term.
pub fn one_master_per_term(h: &History) -> Check {
    const NAME: &str = "1b never two masters in the same term";
    if h.master_duties.is_empty() {
        return Check::no_data(
            NAME,
            "no daemon logged \"master duties start\" (needs master duties)",
        );
    }
    let mut by_term: BTreeMap<u64, BTreeMap<u64, (usize, u64)>> = BTreeMap::new();
    for d in h.master_duties.iter().filter(|d| d.started) {
        by_term
            .entry(d.term)
            .or_default()
            .entry(d.node_id)
            .or_insert((d.node, d.t_ms));
    }
    let evidence: Vec<String> = by_term
        .iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(term, m)| {
            let who: Vec<String> = m
                .iter()
                .map(|(id, (node, t))| format!("{id} (node {node}, from {})", secs(*t)))
                .collect();
            format!("term {term}: master duties ran on {}", who.join(" and "))
        })
        .collect();
    if evidence.is_empty() {
        Check::pass(
            NAME,
            format!("{} master terms, one master each", by_term.len()),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

/// An accepted heartbeat is stale if, in the same daemon incarnation and strictly before it,
/// the node had reported a higher term (in `cluster status`) or accepted a higher one.
pub fn heartbeats_from_highest_term(h: &History) -> Check {
    const NAME: &str = "1c accepted heartbeats come from the highest term seen";
    let accepted: Vec<_> = h.heartbeats.iter().filter(|b| b.accepted).collect();
    if accepted.is_empty() {
        return Check::no_data(
            NAME,
            "no heartbeat acceptance was recorded (needs master duties: heartbeats)",
        );
    }
    let mut evidence = Vec::new();
    for b in &accepted {
        let from_status = h
            .leaders
            .iter()
            .filter(|o| o.observer == b.node && o.incarnation == b.incarnation)
            .filter(|o| o.t_ms < b.t_ms)
            .map(|o| (o.term, o.t_ms, "its cluster status"));
        let from_heartbeats = accepted
            .iter()
            .filter(|a| a.node == b.node && a.incarnation == b.incarnation && a.t_ms < b.t_ms)
            .map(|a| (a.term, a.t_ms, "an accepted heartbeat"));
        if let Some((term, t, how)) = from_status.chain(from_heartbeats).max_by_key(|x| x.0)
            && term > b.term
        {
            evidence.push(format!(
                "node {} accepted a heartbeat of master {} in term {} at {}, after {} showed term {term} at {}",
                b.node,
                b.master_id,
                b.term,
                secs(b.t_ms),
                how,
                secs(t)
            ));
        }
    }
    let refused = h.heartbeats.iter().filter(|b| !b.accepted).count();
    if evidence.is_empty() {
        Check::pass(
            NAME,
            format!(
                "{} acceptances checked, none behind the node's highest term ({refused} stale heartbeats refused)",
                accepted.len()
            ),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HeartbeatAcceptance;
    use crate::history::MasterDuty;
    use crate::invariants::Verdict;

    fn obs(
        t: u64,
        observer: usize,
        me: u64,
        role: &str,
        term: u64,
        leader: u64,
    ) -> LeaderObservation {
        LeaderObservation {
            t_ms: t,
            observer,
            incarnation: 1,
            node_id: Some(me),
            role: role.into(),
            term,
            leader_id: Some(leader),
        }
    }

    fn hb(t: u64, node: usize, term: u64, master: u64) -> HeartbeatAcceptance {
        HeartbeatAcceptance {
            t_ms: t,
            node,
            incarnation: 1,
            term,
            master_id: master,
            accepted: true,
        }
    }

    fn clean() -> History {
        History {
            leaders: vec![
                obs(100, 1, 11, "leader", 1, 11),
                obs(110, 2, 22, "follower", 1, 11),
                obs(900, 2, 22, "leader", 2, 22),
                obs(905, 1, 11, "follower", 2, 22),
            ],
            heartbeats: vec![hb(120, 2, 1, 11), hb(950, 1, 2, 22)],
            master_duties: vec![
                MasterDuty {
                    t_ms: 100,
                    node: 1,
                    node_id: 11,
                    term: 1,
                    started: true,
                },
                MasterDuty {
                    t_ms: 890,
                    node: 2,
                    node_id: 22,
                    term: 2,
                    started: true,
                },
            ],
            ..History::default()
        }
    }

    #[test]
    fn a_clean_history_passes_all_three() {
        let h = clean();
        assert_eq!(one_leader_per_term(&h).verdict, Verdict::Pass);
        assert_eq!(one_master_per_term(&h).verdict, Verdict::Pass);
        assert_eq!(heartbeats_from_highest_term(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn two_leaders_in_one_term_fail_with_both_named() {
        let mut h = clean();
        // Node 3 calls itself leader in term 2, which node 2 leads.
        h.leaders.push(obs(910, 3, 33, "leader", 2, 33));
        let c = one_leader_per_term(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].contains("term 2 had 2 leaders"),
            "{:?}",
            c.evidence
        );
        assert!(c.evidence[0].contains("22") && c.evidence[0].contains("33"));
    }

    #[test]
    fn two_masters_in_one_term_fail() {
        let mut h = clean();
        h.master_duties.push(MasterDuty {
            t_ms: 950,
            node: 3,
            node_id: 33,
            term: 2,
            started: true,
        });
        let c = one_master_per_term(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].starts_with("term 2: master duties ran on 22"),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn a_heartbeat_from_a_deposed_master_fails() {
        let mut h = clean();
        // Node 1 saw term 2 at 905 ms, then accepted the old master of term 1.
        h.heartbeats.push(hb(1_000, 1, 1, 11));
        let c = heartbeats_from_highest_term(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].contains("in term 1 at 1.0 s"),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn a_new_incarnation_starts_from_scratch() {
        let mut h = clean();
        // A restarted daemon with a wiped raft dir may legitimately accept a lower term.
        let mut b = hb(1_000, 1, 1, 11);
        b.incarnation = 2;
        h.heartbeats.push(b);
        assert_eq!(heartbeats_from_highest_term(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn without_heartbeats_or_duties_there_is_no_data() {
        let mut h = clean();
        h.heartbeats.clear();
        h.master_duties.clear();
        assert_eq!(heartbeats_from_highest_term(&h).verdict, Verdict::NoData);
        assert_eq!(one_master_per_term(&h).verdict, Verdict::NoData);
        assert_eq!(one_leader_per_term(&h).verdict, Verdict::Pass);
    }
}
