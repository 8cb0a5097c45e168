//! When a scheduled job is due: pure, over wall-clock milliseconds. A job remembers the last
//! tick it handled; the ticks after it that have come are handled *once*, for the latest of
//! them: on time it runs; long past (the daemon was down, the host asleep, the clock jumped
//! forward) it runs once with `catch_up = true` and is recorded as missed without. A clock
//! stepped backwards finds no tick after the last one handled until time passes it again, so
//! no tick runs twice.

use super::spec::JobSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet; the next tick is at this time (none: the schedule never fires again).
    Wait(Option<u64>),
    /// Run for this tick. `catch_up`: it is long past (missed ticks, run once).
    Run { tick_ms: u64, catch_up: bool },
    /// Ticks passed unseen and the job does not catch up: record the latest as missed.
    Missed { tick_ms: u64 },
}

/// How late a tick may be and still count as on time: half the schedule's period, at most a
/// minute (a per-second job is late after 500 ms, a nightly one after 60 s).
const MAX_GRACE_MS: u64 = 60_000;

pub fn due(job: &JobSpec, last_tick_ms: u64, now_ms: u64) -> Due {
    let Some(next) = job.next_tick_after(last_tick_ms) else {
        return Due::Wait(None);
    };
    if next > now_ms {
        return Due::Wait(Some(next));
    }
    // The latest tick at or before now: walk forward from `next` (bounded), then, for a long
    // gap, jump by looking for the tick after (now - one period).
    let latest = latest_tick(job, next, now_ms);
    let period = job
        .next_tick_after(latest)
        .map_or(MAX_GRACE_MS * 2, |n| n.saturating_sub(latest));
    let grace = (period / 2).min(MAX_GRACE_MS);
    if now_ms.saturating_sub(latest) <= grace {
        Due::Run {
            tick_ms: latest,
            catch_up: false,
        }
    } else if job.catch_up {
        Due::Run {
            tick_ms: latest,
            catch_up: true,
        }
    } else {
        Due::Missed { tick_ms: latest }
    }
}

/// The last tick in `[first, now]` (`first` is a tick at or before `now`).
fn latest_tick(job: &JobSpec, first: u64, now_ms: u64) -> u64 {
    let mut latest = first;
    for _ in 0..64 {
        match job.next_tick_after(latest) {
            Some(t) if t <= now_ms => latest = t,
            _ => return latest,
        }
    }
    // Many ticks passed: look back from now by shrinking windows until one is found.
    let mut back = 1_000u64;
    while back < now_ms.saturating_sub(latest) {
        if let Some(t) = job.next_tick_after(now_ms.saturating_sub(back))
            && t <= now_ms
            && t > latest
        {
            let mut l = t;
            while let Some(n) = job.next_tick_after(l).filter(|n| *n <= now_ms) {
                l = n;
            }
            return l;
        }
        back = back.saturating_mul(2);
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_796_601_600_000; // 2026-12-07 00:00:00 UTC

    fn job(schedule: &str, catch_up: bool) -> JobSpec {
        let mut j = JobSpec::quick("j", "true", vec![]);
        j.schedule = Some(schedule.into());
        j.timezone = Some("UTC".into());
        j.catch_up = catch_up;
        j
    }

    #[test]
    fn on_time_late_and_long_past() {
        let j = job("*/10 * * * * *", false);
        assert_eq!(due(&j, T0, T0 + 9_999), Due::Wait(Some(T0 + 10_000)));
        assert_eq!(
            due(&j, T0, T0 + 10_200),
            Due::Run {
                tick_ms: T0 + 10_000,
                catch_up: false
            }
        );
        assert_eq!(
            due(&j, T0, T0 + 16_000),
            Due::Missed {
                tick_ms: T0 + 10_000
            }
        );
        // Three ticks passed: one decision, for the latest.
        assert_eq!(
            due(&j, T0, T0 + 41_000),
            Due::Run {
                tick_ms: T0 + 40_000,
                catch_up: false
            }
        );
        let c = job("*/10 * * * * *", true);
        assert_eq!(
            due(&c, T0, T0 + 46_000),
            Due::Run {
                tick_ms: T0 + 40_000,
                catch_up: true
            }
        );
    }

    #[test]
    fn a_day_down_is_one_decision_for_the_latest_tick() {
        let c = job("* * * * * *", true);
        let now = T0 + 86_400_000 + 700;
        assert_eq!(
            due(&c, T0, now),
            Due::Run {
                tick_ms: T0 + 86_400_000,
                catch_up: true
            }
        );
        let nightly = job("0 3 * * *", false);
        assert_eq!(
            due(&nightly, T0, T0 + 5 * 86_400_000),
            Due::Missed {
                tick_ms: T0 + 4 * 86_400_000 + 3 * 3_600_000
            }
        );
    }

    #[test]
    fn a_clock_stepped_back_runs_nothing_twice() {
        let j = job("*/10 * * * * *", false);
        // Tick T0+20s was handled; the clock now reads T0+5s.
        assert_eq!(
            due(&j, T0 + 20_000, T0 + 5_000),
            Due::Wait(Some(T0 + 30_000))
        );
    }
}
