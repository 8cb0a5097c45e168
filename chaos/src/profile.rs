//! How hard and how long a run pushes: `quick` (3 control nodes and 1 agent, a few minutes,
//! every fault kind at least once) for CI, `soak` (5 control nodes and 3 agents, 30 minutes,
//! hundreds of faults) for a release. Control nodes may hold a Raft seat (all of them are
//! voters: `voters` equals their count); agents are pinned with `role = "agent"`.

use std::time::Duration;

use serde::Serialize;

use crate::lab::MasterTiming;

#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub name: String,
    /// Control nodes: the Raft voters.
    pub nodes: usize,
    /// Agents (`role = "agent"`): outside Raft, each holds only its slice of the registry.
    pub agents: usize,
    /// How long faults are injected (the first round of every kind may run past it).
    pub fault_phase: Duration,
    /// Pause before each fault, and the length of a short fault, in ms.
    pub gap_ms: (u64, u64),
    pub short_fault_ms: (u64, u64),
    /// Share of node outages that last long enough for the master to mark the node offline.
    pub long_outage_share: f64,
    /// The same when the master keeps its default timing (an outage then lasts ~2.5 min).
    pub long_outage_share_default_timing: f64,
    /// A new leader must be agreed within this after the old one is lost.
    pub failover_limit: Duration,
    /// After a fault heals, the whole cluster must agree on a leader within this.
    pub recovery_limit: Duration,
    /// After the last fault, apps must run their desired counts within this.
    pub convergence_deadline: Duration,
    pub status_every: Duration,
    pub ps_every: Duration,
    pub census_every: Duration,
    /// The client's pause between writes, in ms.
    pub client_pause_ms: (u64, u64),
    /// Shortened master timing, so offline detection happens within a short outage.
    pub master_timing: MasterTiming,
}

impl Profile {
    pub fn named(name: &str) -> Option<Profile> {
        let timing = MasterTiming {
            heartbeat_interval_ms: 500,
            health_sweep_interval_ms: 1_000,
            offline_timeout_ms: 4_000,
        };
        let quick = Profile {
            name: "quick".into(),
            nodes: 3,
            agents: 1,
            fault_phase: Duration::from_secs(150),
            gap_ms: (1_500, 4_000),
            short_fault_ms: (2_000, 6_000),
            long_outage_share: 0.35,
            long_outage_share_default_timing: 0.0,
            failover_limit: Duration::from_secs(10),
            recovery_limit: Duration::from_secs(30),
            convergence_deadline: Duration::from_secs(30),
            status_every: Duration::from_millis(200),
            ps_every: Duration::from_millis(1_000),
            census_every: Duration::from_millis(500),
            client_pause_ms: (300, 1_500),
            master_timing: timing,
        };
        match name {
            "quick" => Some(quick),
            "soak" => Some(Profile {
                name: "soak".into(),
                nodes: 5,
                agents: 3,
                fault_phase: Duration::from_secs(30 * 60),
                gap_ms: (1_000, 3_000),
                long_outage_share_default_timing: 0.04,
                convergence_deadline: Duration::from_secs(60),
                status_every: Duration::from_millis(300),
                ps_every: Duration::from_millis(2_000),
                ..quick
            }),
            _ => None,
        }
    }

    /// How long an outage must last for the master to notice: the offline timeout, one sweep,
    /// and slack for a heartbeat or two.
    pub fn detection_window(&self, timing: Option<MasterTiming>) -> Duration {
        let t = timing.unwrap_or(MasterTiming {
            heartbeat_interval_ms: 2_000,
            health_sweep_interval_ms: 60_000,
            offline_timeout_ms: 90_000,
        });
        Duration::from_millis(
            t.offline_timeout_ms + t.health_sweep_interval_ms + 2 * t.heartbeat_interval_ms + 1_000,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_and_soak_match_the_issue() {
        let q = Profile::named("quick").expect("quick");
        let s = Profile::named("soak").expect("soak");
        assert_eq!((q.nodes, s.nodes), (3, 5));
        assert!(q.agents >= 1 && s.agents >= 3);
        assert!(q.fault_phase <= Duration::from_secs(180));
        assert_eq!(s.fault_phase, Duration::from_secs(1_800));
        assert!(Profile::named("nope").is_none());
        assert_eq!(
            q.detection_window(Some(q.master_timing)),
            Duration::from_millis(7_000)
        );
    }
}
