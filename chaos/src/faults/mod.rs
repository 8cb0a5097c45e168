//! The faults a run injects and the seeded schedule they come in. The plan (kinds, pauses,
//! durations, and a seed for each fault's own choices) depends only on the seed and profile;
//! which node is "the leader" is resolved when the fault fires. Every fault heals itself
//! within a bounded time and is recorded in the history with its start and end.

mod context;
mod inject;
mod network;
mod outage;
mod process;
mod watch;

use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

pub use context::FaultCtx;
pub use context::heal_everything;
pub use inject::run_fault;
pub use process::DOWN_GRACE;
pub use process::survivors_of;
pub use watch::offline_observable;
pub use watch::wait_recovered;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the leader's daemon; restart it later.
    KillLeader,
    /// SIGKILL a random node's daemon; restart it later.
    KillNode,
    /// SIGSTOP a node's daemon only (its apps keep running); SIGCONT later.
    FreezeDaemon,
    /// SIGSTOP every process of a host (daemon and apps): a frozen machine.
    FreezeHost,
    /// Drop every packet in and out of the leader's namespace.
    IsolateLeader,
    /// Drop every packet of a random minority of hosts.
    IsolateMinority,
    /// Two groups that cannot reach each other (Redis stays reachable from both).
    SplitInTwo,
    /// SIGKILL redis-server; start it again (empty) later.
    RedisRestart,
    /// SIGKILL a daemon, delete its `$HERD_HOME/raft`, start it again.
    WipeRaft,
    /// SIGKILL a few app processes under a live supervisor.
    KillApps,
    /// SIGKILL a daemon while it starts a burst of instances.
    KillWhileStarting,
    /// `herd down` (then look for orphans) and `herd up`.
    GracefulRestart,
    /// Delay and loss with `tc netem` (unsupported where the kernel lacks `sch_netem`).
    LatencyLoss,
    /// Step one daemon's wall clock an hour or a day backwards or forwards (libfaketime),
    /// then back: the leader's half the time.
    ClockStep,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::KillLeader,
        FaultKind::KillNode,
        FaultKind::FreezeDaemon,
        FaultKind::FreezeHost,
        FaultKind::IsolateLeader,
        FaultKind::IsolateMinority,
        FaultKind::SplitInTwo,
        FaultKind::RedisRestart,
        FaultKind::WipeRaft,
        FaultKind::KillApps,
        FaultKind::KillWhileStarting,
        FaultKind::GracefulRestart,
        FaultKind::LatencyLoss,
        FaultKind::ClockStep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillNode => "kill-node",
            FaultKind::FreezeDaemon => "freeze-daemon",
            FaultKind::FreezeHost => "freeze-host",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateMinority => "isolate-minority",
            FaultKind::SplitInTwo => "split-in-two",
            FaultKind::RedisRestart => "redis-restart",
            FaultKind::WipeRaft => "wipe-raft",
            FaultKind::KillApps => "kill-apps",
            FaultKind::KillWhileStarting => "kill-while-starting",
            FaultKind::GracefulRestart => "graceful-restart",
            FaultKind::LatencyLoss => "latency-loss",
            FaultKind::ClockStep => "clock-step",
        }
    }

    /// Relative frequency after the first round.
    fn weight(self) -> u32 {
        match self {
            FaultKind::KillLeader | FaultKind::IsolateLeader | FaultKind::KillApps => 3,
            FaultKind::KillNode | FaultKind::FreezeDaemon | FaultKind::IsolateMinority => 2,
            FaultKind::SplitInTwo | FaultKind::FreezeHost | FaultKind::KillWhileStarting => 2,
            FaultKind::RedisRestart | FaultKind::GracefulRestart | FaultKind::LatencyLoss => 1,
            FaultKind::WipeRaft | FaultKind::ClockStep => 1,
        }
    }

    /// Takes one or more hosts away: may be long enough for the master to mark them offline.
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::KillNode
                | FaultKind::FreezeDaemon
                | FaultKind::FreezeHost
                | FaultKind::IsolateLeader
                | FaultKind::IsolateMinority
                | FaultKind::SplitInTwo
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedFault {
    pub id: u64,
    pub kind: FaultKind,
    /// Pause before it, in ms.
    pub gap_ms: u64,
    /// How long it lasts before healing, in ms.
    pub duration_ms: u64,
    /// Long enough for offline detection to be measured.
    pub long: bool,
    /// Seeds the fault's own choices (which node, which minority, how long a delay).
    pub pick: u64,
}

/// The endless, seeded sequence of faults: first every kind once in a shuffled order, then
/// kinds drawn by weight.
pub struct Schedule {
    rng: StdRng,
    next_id: u64,
    first_round: Vec<FaultKind>,
    gap_ms: (u64, u64),
    short_ms: (u64, u64),
    /// Outage length that lets the master notice, if offline detection can be measured.
    long_ms: Option<u64>,
    long_share: f64,
}

impl Schedule {
    pub fn new(
        seed: u64,
        gap_ms: (u64, u64),
        short_ms: (u64, u64),
        long_ms: Option<u64>,
        long_share: f64,
    ) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut first_round = FaultKind::ALL.to_vec();
        first_round.shuffle(&mut rng);
        first_round.reverse(); // popped from the back
        Schedule {
            rng,
            next_id: 1,
            first_round,
            gap_ms,
            short_ms,
            long_ms,
            long_share,
        }
    }

    fn draw_kind(&mut self) -> FaultKind {
        if let Some(k) = self.first_round.pop() {
            return k;
        }
        let total: u32 = FaultKind::ALL.iter().map(|k| k.weight()).sum();
        let mut x = self.rng.random_range(0..total);
        for k in FaultKind::ALL {
            if x < k.weight() {
                return k;
            }
            x -= k.weight();
        }
        FaultKind::KillNode
    }

    /// Whether the first round is still running (every kind not yet planned once).
    pub fn in_first_round(&self) -> bool {
        !self.first_round.is_empty()
    }
}

impl Iterator for Schedule {
    type Item = PlannedFault;

    fn next(&mut self) -> Option<PlannedFault> {
        let first = self.in_first_round();
        let kind = self.draw_kind();
        let gap_ms = self.rng.random_range(self.gap_ms.0..=self.gap_ms.1);
        let roll = self.rng.random_bool(self.long_share);
        // In the first round a plain node kill is always long, so even a quick run measures
        // offline detection once.
        let long = kind.is_outage()
            && self.long_ms.is_some()
            && (roll || (first && kind == FaultKind::KillNode));
        let duration_ms = match (long, self.long_ms) {
            (true, Some(l)) => l,
            _ => self.rng.random_range(self.short_ms.0..=self.short_ms.1),
        };
        let pick = self.rng.random();
        let id = self.next_id;
        self.next_id += 1;
        Some(PlannedFault {
            id,
            kind,
            gap_ms,
            duration_ms,
            long,
            pick,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64) -> Schedule {
        Schedule::new(seed, (1_000, 2_000), (2_000, 6_000), Some(9_000), 0.3)
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let a: Vec<_> = schedule(42).take(40).collect();
        let b: Vec<_> = schedule(42).take(40).collect();
        let c: Vec<_> = schedule(43).take(40).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_kind_comes_once_first_and_a_node_kill_is_long() {
        let first: Vec<_> = schedule(7).take(FaultKind::ALL.len()).collect();
        for k in FaultKind::ALL {
            assert_eq!(first.iter().filter(|f| f.kind == k).count(), 1, "{k:?}");
        }
        let kill = first
            .iter()
            .find(|f| f.kind == FaultKind::KillNode)
            .expect("kill-node");
        assert!(kill.long && kill.duration_ms == 9_000);
        for f in schedule(7).take(300) {
            assert!((1_000..=2_000).contains(&f.gap_ms));
            assert!(f.long || (2_000..=6_000).contains(&f.duration_ms));
            assert!(!f.long || f.kind.is_outage());
        }
    }

    #[test]
    fn without_detection_no_fault_is_long() {
        let mut s = Schedule::new(1, (1, 2), (3, 4), None, 1.0);
        assert!(s.by_ref().take(100).all(|f| !f.long && f.duration_ms <= 4));
    }
}
