//! Restart policy and exponential backoff, as values that can be tested without a clock.

use super::limits::{START_LIMIT_BURST, START_LIMIT_INTERVAL};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When an instance that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// `failed` is a non-zero exit, a signal, or an exit nobody saw (died while the daemon was down).
    pub fn wants_restart(self, failed: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        }
    }
}

/// Delay before restart `n` (1-based) is `initial * 2^(n-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
        }
    }

    pub fn delay(&self, restart: u32) -> Duration {
        let exp = restart.saturating_sub(1).min(32);
        let factor = 1u64 << exp;
        let ms = (self.initial.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
    }
}

/// A start-rate limit per instance, in the spirit of systemd's `StartLimitBurst`: a token
/// bucket of `START_LIMIT_BURST` starts that refills one start per `START_LIMIT_INTERVAL`.
/// A quiet instance restarts at once (whatever the backoff says, even 0 ms), but a crash
/// loop settles at one start per interval instead of forking as fast as the host can.
/// As credit in milliseconds: a start costs one interval, time earns it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    credit_ms: u64,
    at_ms: u64,
}

const START_COST_MS: u64 = START_LIMIT_INTERVAL.as_millis() as u64;
const START_CREDIT_MAX_MS: u64 = START_COST_MS * START_LIMIT_BURST;

impl Default for StartLimit {
    fn default() -> Self {
        Self {
            credit_ms: START_CREDIT_MAX_MS,
            at_ms: 0,
        }
    }
}

impl StartLimit {
    fn credit_at(&self, now_ms: u64) -> u64 {
        self.credit_ms
            .saturating_add(now_ms.saturating_sub(self.at_ms))
            .min(START_CREDIT_MAX_MS)
    }

    /// How long after `at_ms` a start must wait for the limit.
    pub fn wait(&self, at_ms: u64) -> Duration {
        Duration::from_millis(START_COST_MS.saturating_sub(self.credit_at(at_ms)))
    }

    /// A start happened at `now_ms`.
    pub fn record(&mut self, now_ms: u64) {
        self.credit_ms = self.credit_at(now_ms).saturating_sub(START_COST_MS);
        self.at_ms = now_ms.max(self.at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_initial_and_is_capped() {
        let b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(30_000));
        let delays: Vec<u64> = (1..=7).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    }

    #[test]
    fn huge_restart_counts_do_not_overflow() {
        let b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn zero_initial_means_immediate_restarts() {
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(30));
        assert_eq!(b.delay(10), Duration::ZERO);
    }

    #[test]
    fn a_burst_starts_at_once_then_one_start_per_interval() {
        let mut limit = StartLimit::default();
        let mut now = 1_000_000;
        for _ in 0..START_LIMIT_BURST {
            assert_eq!(limit.wait(now), Duration::ZERO);
            limit.record(now);
        }
        // A crash loop at 0 ms backoff: every further start waits one interval.
        for _ in 0..100 {
            let wait = limit.wait(now);
            assert_eq!(wait, START_LIMIT_INTERVAL);
            now += wait.as_millis() as u64;
            limit.record(now);
        }
        // Quiet for a while: the whole burst is available again.
        now += START_COST_MS * START_LIMIT_BURST;
        assert_eq!(limit.wait(now), Duration::ZERO);
        assert_eq!(limit.credit_at(now), START_CREDIT_MAX_MS);
    }

    #[test]
    fn a_clock_going_backwards_does_not_mint_credit() {
        let mut limit = StartLimit::default();
        for _ in 0..START_LIMIT_BURST {
            limit.record(5_000);
        }
        assert_eq!(limit.wait(1_000), START_LIMIT_INTERVAL);
    }

    #[test]
    fn policies_decide_on_failure() {
        assert!(RestartPolicy::Always.wants_restart(false));
        assert!(RestartPolicy::OnFailure.wants_restart(true));
        assert!(!RestartPolicy::OnFailure.wants_restart(false));
        assert!(!RestartPolicy::Never.wants_restart(true));
    }
}
