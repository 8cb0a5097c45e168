//! Restart policy and exponential backoff, as values that can be tested without a clock.

use super::limits::MIN_RESTART_DELAY;
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

/// Delay before restart `n` (1-based) is `initial * 2^(n-1)`, capped at `max`, and never
/// below `limits::MIN_RESTART_DELAY` (so `backoff_initial_ms = 0` cannot fork-loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(MIN_RESTART_DELAY);
        Self {
            initial,
            max: max.max(initial),
        }
    }

    pub fn delay(&self, restart: u32) -> Duration {
        let exp = restart.saturating_sub(1).min(32);
        let factor = 1u64 << exp;
        let initial_ms = u64::try_from(self.initial.as_millis()).unwrap_or(u64::MAX);
        let ms = initial_ms.saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
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
    fn zero_initial_still_waits_the_minimum_restart_delay() {
        let b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.delay(1), MIN_RESTART_DELAY);
        assert_eq!(b.delay(10), MIN_RESTART_DELAY);
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(30));
        assert_eq!(b.delay(2), MIN_RESTART_DELAY * 2);
    }

    #[test]
    fn policies_decide_on_failure() {
        assert!(RestartPolicy::Always.wants_restart(false));
        assert!(RestartPolicy::OnFailure.wants_restart(true));
        assert!(!RestartPolicy::OnFailure.wants_restart(false));
        assert!(!RestartPolicy::Never.wants_restart(true));
    }
}
