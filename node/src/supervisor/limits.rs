//! The documented bounds on what a user may ask of one host, and the arithmetic that keeps a
//! user-supplied duration from overflowing a clock: herd runs as root, so `stop_timeout_s =
//! 9223372036854775807` or `backoff_initial_ms = 0` must neither panic a task nor fork-loop.

use std::time::Duration;

/// The most apps one daemon holds; a script gone wrong is refused before it exhausts memory.
pub const MAX_APPS: usize = 10_000;

/// The most instances (all apps together) one daemon runs; each holds a process, a pidfd and
/// a log file. (`spec::MAX_INSTANCES` is the limit for one app.)
pub const MAX_HOST_INSTANCES: u64 = 20_000;

/// The longest duration a key accepts (about 100 years): anything longer is a typo, and
/// every deadline `now + MAX_DURATION` stays representable.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Starts of one instance allowed back to back (the start-rate limit's burst, see
/// `backoff::StartLimit`): more than a quick `herd restart` or a few crashes need, fewer than
/// a crash loop with `backoff_initial_ms = 0` would fork.
pub const START_LIMIT_BURST: u64 = 50;

/// Once the burst is spent, one start per this interval (systemd's `RestartSec` default), so
/// a crashing app cannot fork-loop the host: at most 10 starts a second per instance.
pub const START_LIMIT_INTERVAL: Duration = Duration::from_millis(100);

/// A user duration brought within `MAX_DURATION`.
pub fn clamp(d: Duration) -> Duration {
    d.min(MAX_DURATION)
}

/// `now + d` that never panics: `d` is clamped first, and a clock that still cannot hold the
/// sum (it cannot on Linux) gets `now + MAX_DURATION`'s next best, `now` plus a day.
pub fn deadline(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(clamp(d))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Refuses a duration key above `MAX_DURATION`, naming the limit (the caller names the key).
pub fn check_secs(v: u64) -> Result<(), String> {
    if v > MAX_DURATION.as_secs() {
        return Err(format!(
            "{v} seconds is more than the limit of {} (about 100 years)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(())
}

pub fn check_millis(v: u64) -> Result<(), String> {
    if u128::from(v) > MAX_DURATION.as_millis() {
        return Err(format!(
            "{v} ms is more than the limit of {} (about 100 years)",
            MAX_DURATION.as_millis()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_clamp_and_never_overflow_a_deadline() {
        let now = crate::supervisor::clock::monotonic();
        assert_eq!(clamp(Duration::from_secs(u64::MAX)), MAX_DURATION);
        assert_eq!(clamp(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(
            deadline(now, Duration::MAX),
            now.checked_add(MAX_DURATION).unwrap()
        );
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn keys_above_a_hundred_years_are_refused() {
        assert!(check_secs(MAX_DURATION.as_secs()).is_ok());
        assert!(check_secs(MAX_DURATION.as_secs() + 1).is_err());
        assert!(check_secs(i64::MAX as u64).unwrap_err().contains("limit"));
        assert!(check_millis(u64::MAX).is_err());
        assert!(check_millis(30_000).is_ok());
    }
}
