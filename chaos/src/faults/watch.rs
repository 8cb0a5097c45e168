//! Timing a fault from the outside: how long until the surviving majority agrees on a new
//! leader (failover), until the master marks a lost node offline (detection), and until the
//! whole cluster agrees on a leader again after healing (recovery). Polls every ~50 ms, so
//! figures carry that much resolution plus the CLI's own few milliseconds.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;

use crate::lab::Lab;
use crate::lab::interrupt;

const POLL: Duration = Duration::from_millis(50);
const ASK: Duration = Duration::from_millis(1_500);

/// The leader every one of `nodes` names, if they all answer and agree, and when the last of
/// them was asked. A node computes its status when asked but a follower may then wait up to a
/// second for the leader's view of reachability, so the time that counts is the asking.
pub fn agreed_leader(lab: &Lab, nodes: &[usize]) -> Option<(u64, Instant)> {
    let mut agreed = None;
    let mut last_asked = Instant::now();
    for &i in nodes {
        last_asked = Instant::now();
        let l = lab.node(i).status(ASK)?["leader_id"].as_u64()?;
        if agreed.is_some_and(|a| a != l) {
            return None;
        }
        agreed = Some(l);
    }
    agreed.map(|l| (l, last_asked))
}

/// The leader a majority of the control nodes (the Raft voters) names, with the lab node that
/// has its id. Agents are no Raft members: they only repeat what the master told them.
pub fn current_leader(lab: &Lab) -> Option<(usize, u64)> {
    let control = lab.control();
    let mut votes: Vec<u64> = control
        .iter()
        .filter_map(|&i| lab.node(i).status(ASK)?["leader_id"].as_u64())
        .collect();
    votes.sort_unstable();
    let majority = control.len() / 2 + 1;
    let leader = votes
        .chunk_by(|a, b| a == b)
        .find(|c| c.len() >= majority)
        .map(|c| c[0])?;
    Some((lab.by_id(leader)?.index, leader))
}

/// Whether the master's view marks member `id` offline, from `herd cluster nodes --json`.
/// `None` when the output carries no such status at all (no master duties in this herd).
pub fn offline_flag(members: &Value, id: u64) -> Option<bool> {
    let m = members
        .as_array()?
        .iter()
        .find(|m| m["id"].as_u64() == Some(id))?;
    ["status", "health", "state"]
        .iter()
        .find_map(|k| m[*k].as_str())
        .map(|s| s.eq_ignore_ascii_case("offline"))
}

/// The master's view of the nodes, from `node`: `herd cluster uptime --json` lists the nodes
/// the master records with their status; older builds may show it in `herd cluster nodes`.
pub fn master_view(lab: &Lab, node: usize) -> Option<Value> {
    let n = lab.node(node);
    let ask = |args: &[&str]| {
        n.cli(args, ASK)
            .ok()
            .filter(|o| o.ok())
            .and_then(|o| serde_json::from_str::<Value>(&o.stdout).ok())
    };
    if let Some(v) = ask(&["cluster", "uptime", "--days", "1", "--json"])
        && v["nodes"].is_array()
    {
        return Some(v["nodes"].clone());
    }
    ask(&["cluster", "nodes", "--json"])
}

/// Whether the master's online/offline verdict is visible from the CLI.
pub fn offline_observable(lab: &Lab) -> bool {
    lab.nodes.iter().any(|n| {
        let Some(id) = n.node_id() else { return false };
        master_view(lab, n.index).is_some_and(|v| offline_flag(&v, id).is_some())
    })
}

pub struct Failover {
    pub old: u64,
    pub survivors: Vec<usize>,
    pub done_ms: Option<u64>,
}

pub struct Detect {
    pub node: usize,
    pub id: u64,
    pub done_ms: Option<u64>,
    /// The master was seen calling the node online during the outage; only then does a later
    /// "offline" time this outage (and not an earlier one the master has not yet forgiven).
    pub seen_online: bool,
}

#[derive(Default)]
pub struct Watch {
    pub failover: Option<Failover>,
    pub detect: Vec<Detect>,
    /// Nodes still in touch with the majority, asked for the master's view.
    pub askers: Vec<usize>,
}

impl Watch {
    fn pending_failover(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.done_ms.is_none())
    }
}

/// One answer of a failover probe: which node, when it was asked, whom it named.
type Sample = (usize, Instant, Option<u64>);

/// When the survivors first all named one new leader: for each candidate, the latest of the
/// survivors' earliest sightings of it; the soonest candidate wins.
fn failover_done(samples: &[Sample], survivors: &[usize], old: u64) -> Option<Instant> {
    let candidates: BTreeSet<u64> = samples
        .iter()
        .filter_map(|s| s.2)
        .filter(|&l| l != old)
        .collect();
    candidates
        .into_iter()
        .filter_map(|l| {
            survivors
                .iter()
                .map(|&n| {
                    samples
                        .iter()
                        .filter(|s| s.0 == n && s.2 == Some(l))
                        .map(|s| s.1)
                        .min()
                })
                .collect::<Option<Vec<Instant>>>()
                .and_then(|times| times.into_iter().max())
        })
        .min()
}

/// Polls while a fault lasts: at least `planned`, and longer (up to `failover_limit`) while a
/// failover is still pending.
///
/// A follower answers `cluster status` from its own state at once, then may wait up to a
/// second for an unreachable leader's view before replying. So failover probes overlap: every
/// `POLL` each survivor is asked afresh without waiting for the last answer, and each answer
/// counts at the moment it was asked.
pub fn during(
    lab: &Lab,
    started: Instant,
    planned: Duration,
    failover_limit: Duration,
    w: &mut Watch,
) -> anyhow::Result<()> {
    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::new());
    let over = AtomicBool::new(false);
    let detect = Mutex::new(std::mem::take(&mut w.detect));
    let result = std::thread::scope(|scope| -> anyhow::Result<()> {
        // The master's view is read through the leader and can block for seconds while there
        // is none, so it is polled beside the failover probes, never in their way.
        let asker = w.askers.first().copied();
        let (detect, over) = (&detect, &over);
        scope.spawn(move || {
            while !over.load(Ordering::SeqCst)
                && detect
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|d| d.done_ms.is_none())
            {
                if let Some(v) = asker.and_then(|a| master_view(lab, a)) {
                    let mut d = detect.lock().unwrap_or_else(|p| p.into_inner());
                    for d in d.iter_mut().filter(|d| d.done_ms.is_none()) {
                        match offline_flag(&v, d.id) {
                            Some(false) => d.seen_online = true,
                            Some(true) if d.seen_online => {
                                d.done_ms = Some(started.elapsed().as_millis() as u64)
                            }
                            _ => {}
                        }
                    }
                }
                std::thread::sleep(POLL * 4);
            }
        });
        let _over = SetOnDrop(over);
        loop {
            interrupt::check()?;
            let elapsed = started.elapsed();
            if let Some(f) = w.failover.as_mut().filter(|f| f.done_ms.is_none()) {
                let got = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match failover_done(&got, &f.survivors, f.old) {
                    Some(at) => {
                        f.done_ms = Some(at.saturating_duration_since(started).as_millis() as u64)
                    }
                    None if elapsed < failover_limit => {
                        for &n in &f.survivors {
                            let samples = &samples;
                            scope.spawn(move || {
                                let asked = Instant::now();
                                let leader = lab
                                    .node(n)
                                    .status(ASK)
                                    .and_then(|v| v["leader_id"].as_u64());
                                samples
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push((n, asked, leader));
                            });
                        }
                    }
                    None => {}
                }
            }
            let failover_open = w.pending_failover() && elapsed < failover_limit;
            if elapsed >= planned && !failover_open {
                return Ok(());
            }
            std::thread::sleep(POLL * 2);
        }
    });
    w.detect = detect.into_inner().unwrap_or_else(|p| p.into_inner());
    result
}

/// Sets a flag when dropped, so helper threads stop even when the loop bails out.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until every node (agents too) answers and names the same leader. Returns how long that took, or
/// `None` after `limit`.
pub fn wait_recovered(lab: &Lab, limit: Duration) -> anyhow::Result<Option<u64>> {
    let started = Instant::now();
    let all: Vec<usize> = (1..=lab.nodes.len()).collect();
    loop {
        interrupt::check()?;
        if let Some((_, asked)) = agreed_leader(lab, &all) {
            return Ok(Some(
                asked.saturating_duration_since(started).as_millis() as u64
            ));
        }
        if started.elapsed() >= limit {
            return Ok(None);
        }
        std::thread::sleep(POLL * 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_counts_from_when_the_last_survivor_was_first_seen_agreeing() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let samples = vec![
            (2, at(0), Some(1)),
            (3, at(0), None),
            (2, at(100), Some(5)),
            (3, at(100), None),
            (3, at(200), Some(5)),
            (2, at(200), Some(5)),
        ];
        assert_eq!(failover_done(&samples, &[2, 3], 1), Some(at(200)));
        assert_eq!(failover_done(&samples[..4], &[2, 3], 1), None);
        assert_eq!(failover_done(&samples, &[2, 3], 5), None);
    }

    #[test]
    fn the_offline_flag_is_read_from_any_status_like_field() {
        let v: Value = serde_json::json!([
            {"id": 1, "role": "voter", "status": "online"},
            {"id": 2, "role": "voter", "health": "Offline"},
            {"id": 3, "role": "voter", "reachable": false}
        ]);
        assert_eq!(offline_flag(&v, 1), Some(false));
        assert_eq!(offline_flag(&v, 2), Some(true));
        assert_eq!(offline_flag(&v, 3), None);
        assert_eq!(offline_flag(&v, 4), None);
    }
}
