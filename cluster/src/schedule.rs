//! Job schedules (cron expressions in a time zone) and when a scheduled job is due: pure, over
//! wall-clock milliseconds, shared by a host's jobs and the cluster master. A job remembers the
//! last tick it handled; the ticks after it that have come are handled *once*, for the latest
//! of them: on time it runs; long past (the daemon was down, the host asleep, the clock jumped
//! forward) it runs once with `catch_up = true` and is recorded as missed without. A clock
//! stepped backwards finds no tick after the last one handled until time passes it again, so
//! no tick runs twice.

use chrono::{DateTime, TimeZone, Utc};

/// A cron expression (5 fields, or 6 with seconds first) in an IANA zone (none: the host's
/// local time), and whether missed ticks are caught up once.
#[derive(Clone, Copy, Debug)]
pub struct Schedule<'a> {
    pub cron: &'a str,
    pub timezone: Option<&'a str>,
    pub catch_up: bool,
}

impl Schedule<'_> {
    /// Why `cron` is not a usable expression, in words for the user.
    pub fn check_cron(cron: &str) -> Result<(), String> {
        let parsed: croner::Cron = cron.parse().map_err(|e| {
            format!(
                "`{cron}` is not a cron expression ({e}); write 5 fields (`0 3 * * *`: 03:00 daily) or 6 with seconds first (`*/10 * * * * *`)"
            )
        })?;
        if parsed.find_next_occurrence(&Utc::now(), false).is_err() {
            return Err(format!("`{cron}` never comes; check the date fields"));
        }
        Ok(())
    }

    /// Whether `zone` names a time zone.
    pub fn check_zone(zone: &str) -> bool {
        zone.parse::<chrono_tz::Tz>().is_ok()
    }

    /// The first tick strictly after `after_ms` (ms since the epoch).
    pub fn next_tick_after(&self, after_ms: u64) -> Option<u64> {
        let cron: croner::Cron = self.cron.parse().ok()?;
        let after = Utc
            .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
            .single()?;
        let next = match self.timezone {
            Some(z) => next_in(
                &cron,
                &after.with_timezone(&z.parse::<chrono_tz::Tz>().ok()?),
            )?,
            None => next_in(&cron, &after.with_timezone(&chrono::Local))?,
        };
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// What to do at `now_ms` when the last tick handled was `last_tick_ms`. `max_grace_ms`
    /// bounds how late a tick may be and still be on time (see [`MAX_GRACE_MS`]).
    pub fn due(&self, last_tick_ms: u64, now_ms: u64) -> Due {
        due(self, last_tick_ms, now_ms, false)
    }

    /// As [`Schedule::due`], for a master that may have just taken over: a tick is on time for
    /// a whole period (an election must not cost a tick), not half of one.
    pub fn due_for_master(&self, last_tick_ms: u64, now_ms: u64) -> Due {
        due(self, last_tick_ms, now_ms, true)
    }
}

fn next_in<Tz: TimeZone>(cron: &croner::Cron, after: &DateTime<Tz>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(after, false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

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
pub const MAX_GRACE_MS: u64 = 60_000;

fn due(job: &Schedule<'_>, last_tick_ms: u64, now_ms: u64, whole_period: bool) -> Due {
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
    let grace = if whole_period { period } else { period / 2 }.min(MAX_GRACE_MS);
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
fn latest_tick(job: &Schedule<'_>, first: u64, now_ms: u64) -> u64 {
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

    fn job(cron: &str, catch_up: bool) -> Schedule<'_> {
        Schedule {
            cron,
            timezone: Some("UTC"),
            catch_up,
        }
    }

    #[test]
    fn on_time_late_and_long_past() {
        let j = job("*/10 * * * * *", false);
        assert_eq!(j.due(T0, T0 + 9_999), Due::Wait(Some(T0 + 10_000)));
        assert_eq!(
            j.due(T0, T0 + 10_200),
            Due::Run {
                tick_ms: T0 + 10_000,
                catch_up: false
            }
        );
        assert_eq!(
            j.due(T0, T0 + 16_000),
            Due::Missed {
                tick_ms: T0 + 10_000
            }
        );
        // Three ticks passed: one decision, for the latest.
        assert_eq!(
            j.due(T0, T0 + 41_000),
            Due::Run {
                tick_ms: T0 + 40_000,
                catch_up: false
            }
        );
        let c = job("*/10 * * * * *", true);
        assert_eq!(
            c.due(T0, T0 + 46_000),
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
            c.due(T0, now),
            Due::Run {
                tick_ms: T0 + 86_400_000,
                catch_up: true
            }
        );
        let nightly = job("0 3 * * *", false);
        assert_eq!(
            nightly.due(T0, T0 + 5 * 86_400_000),
            Due::Missed {
                tick_ms: T0 + 4 * 86_400_000 + 3 * 3_600_000
            }
        );
    }

    #[test]
    fn a_master_counts_a_whole_period_as_on_time() {
        let j = job("*/10 * * * * *", false);
        assert_eq!(
            j.due(T0, T0 + 16_000),
            Due::Missed {
                tick_ms: T0 + 10_000
            }
        );
        assert_eq!(
            j.due_for_master(T0, T0 + 16_000),
            Due::Run {
                tick_ms: T0 + 10_000,
                catch_up: false
            }
        );
    }

    #[test]
    fn ticks_follow_the_zone_and_seconds_fields() {
        let berlin = Schedule {
            cron: "0 3 * * *",
            timezone: Some("Europe/Berlin"),
            catch_up: false,
        };
        // 03:00 Berlin (UTC+1 in December) is 02:00 UTC.
        assert_eq!(berlin.next_tick_after(T0), Some(T0 + 2 * 3_600_000));
        let tens = job("*/10 * * * * *", false);
        assert_eq!(tens.next_tick_after(T0), Some(T0 + 10_000));
        assert_eq!(tens.next_tick_after(T0 + 10_000), Some(T0 + 20_000));
    }

    #[test]
    fn a_clock_stepped_back_runs_nothing_twice() {
        let j = job("*/10 * * * * *", false);
        // Tick T0+20s was handled; the clock now reads T0+5s.
        assert_eq!(j.due(T0 + 20_000, T0 + 5_000), Due::Wait(Some(T0 + 30_000)));
    }
}
