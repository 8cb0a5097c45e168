//! Which queued run starts next: pure, so the ordering rules are tested without processes.
//! Highest priority first, then the earliest queued (then the lowest id); a run waits while
//! its retry backoff runs, while its job forbids overlap and a copy runs, and — when the free
//! slots are down to the headroom — unless its priority reaches `headroom_priority`.

use super::spec::Overlap;
use super::state::JobsState;
use serde::{Deserialize, Serialize};

/// `[jobs]` in config.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// Runs at once on this host.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u32,
    /// Slots kept free for runs with `priority >= headroom_priority`.
    #[serde(default)]
    pub headroom: u32,
    #[serde(default = "default_headroom_priority")]
    pub headroom_priority: i32,
}

fn default_max_parallel() -> u32 {
    4
}

fn default_headroom_priority() -> i32 {
    100
}

impl Default for JobsSection {
    fn default() -> Self {
        Self {
            max_parallel: default_max_parallel(),
            headroom: 0,
            headroom_priority: default_headroom_priority(),
        }
    }
}

/// The most slots one host may have.
pub const MAX_PARALLEL: u32 = 1_024;

impl JobsSection {
    pub fn check(&self) -> Result<(), String> {
        if self.max_parallel == 0 || self.max_parallel > MAX_PARALLEL {
            return Err(format!(
                "[jobs] max_parallel: {} is outside 1..={MAX_PARALLEL}",
                self.max_parallel
            ));
        }
        if self.headroom >= self.max_parallel {
            return Err(format!(
                "[jobs] headroom: {} leaves no slot for ordinary runs; keep it below max_parallel ({})",
                self.headroom, self.max_parallel
            ));
        }
        Ok(())
    }
}

/// The index in `state.queue` of the run to start now, if any.
pub fn next_to_start(state: &JobsState, cap: &JobsSection, now_ms: u64) -> Option<usize> {
    if state.paused {
        return None;
    }
    let running = u32::try_from(state.running.len()).unwrap_or(u32::MAX);
    let free = cap.max_parallel.saturating_sub(running);
    if free == 0 {
        return None;
    }
    let reserved_only = free <= cap.headroom;
    state
        .queue
        .iter()
        .enumerate()
        .filter(|(_, r)| r.not_before_ms <= now_ms)
        .filter(|(_, r)| !reserved_only || r.priority >= cap.headroom_priority)
        .filter(|(_, r)| {
            let overlap = state
                .jobs
                .get(&r.job)
                .map_or(Overlap::Forbid, |j| j.overlap);
            overlap == Overlap::Allow || !state.running.iter().any(|x| x.job == r.job)
        })
        .min_by_key(|(_, r)| (std::cmp::Reverse(r.priority), r.queued_ms, r.id))
        .map(|(i, _)| i)
}

/// When a queued run held back only by its backoff may start (for the scheduler's sleep).
pub fn next_backoff_end(state: &JobsState, now_ms: u64) -> Option<u64> {
    state
        .queue
        .iter()
        .map(|r| r.not_before_ms)
        .filter(|t| *t > now_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::spec::JobSpec;
    use crate::jobs::state::{Run, Trigger};
    use proptest::prelude::*;

    fn run(id: u64, job: &str, priority: i32, queued_ms: u64) -> Run {
        Run::queued(id, job, priority, Trigger::Manual, queued_ms)
    }

    fn state(jobs: &[(&str, Overlap)]) -> JobsState {
        let mut s = JobsState::default();
        for (name, overlap) in jobs {
            let mut j = JobSpec::quick(name, "true", vec![]);
            j.overlap = *overlap;
            s.jobs.insert((*name).into(), j);
        }
        s
    }

    fn cap(max_parallel: u32, headroom: u32) -> JobsSection {
        JobsSection {
            max_parallel,
            headroom,
            headroom_priority: 100,
        }
    }

    #[test]
    fn priority_then_age_then_id() {
        let mut s = state(&[("a", Overlap::Allow)]);
        s.queue = vec![
            run(1, "a", 0, 10),
            run(2, "a", 5, 20),
            run(3, "a", 5, 15),
            run(4, "a", 5, 15),
        ];
        assert_eq!(next_to_start(&s, &cap(4, 0), 100), Some(2));
        s.queue.remove(2);
        assert_eq!(
            next_to_start(&s, &cap(4, 0), 100),
            Some(2),
            "id 4 before id 2"
        );
    }

    #[test]
    fn full_paused_backoff_and_overlap_hold_runs_back() {
        let mut s = state(&[("a", Overlap::Forbid), ("b", Overlap::Allow)]);
        s.queue = vec![run(1, "a", 9, 1), run(2, "b", 0, 2)];
        s.running = vec![run(0, "a", 0, 0)];
        assert_eq!(
            next_to_start(&s, &cap(4, 0), 100),
            Some(1),
            "a forbids overlap"
        );
        assert_eq!(next_to_start(&s, &cap(1, 0), 100), None, "full");
        s.paused = true;
        assert_eq!(next_to_start(&s, &cap(4, 0), 100), None, "paused");
        s.paused = false;
        s.queue[1].not_before_ms = 200;
        assert_eq!(next_to_start(&s, &cap(4, 0), 100), None);
        assert_eq!(next_backoff_end(&s, 100), Some(200));
        assert_eq!(next_to_start(&s, &cap(4, 0), 200), Some(1));
    }

    #[test]
    fn headroom_is_kept_for_high_priority() {
        let mut s = state(&[("a", Overlap::Allow)]);
        s.running = vec![run(0, "a", 0, 0)];
        s.queue = vec![run(1, "a", 10, 1)];
        // 3 slots, 1 running, 2 free, headroom 2: only priority >= 100 may take them.
        assert_eq!(next_to_start(&s, &cap(3, 2), 100), None);
        s.queue.push(run(2, "a", 100, 2));
        assert_eq!(next_to_start(&s, &cap(3, 2), 100), Some(1));
        assert_eq!(
            next_to_start(&s, &cap(4, 2), 100),
            Some(1),
            "priority first anyway"
        );
        s.queue.remove(1);
        assert_eq!(
            next_to_start(&s, &cap(4, 2), 100),
            Some(0),
            "3 free > headroom 2"
        );
    }

    proptest! {
        /// Whatever the queue, a pick is the best eligible run and never exceeds the slots.
        #[test]
        fn the_pick_is_the_best_eligible(
            runs in proptest::collection::vec((0u8..3, -2i32..3, 0u64..5, 0u64..3), 0..12),
            running in proptest::collection::vec(0u8..3, 0..4),
            max in 1u32..5,
            headroom in 0u32..4,
        ) {
            prop_assume!(headroom < max);
            let mut s = state(&[("j0", Overlap::Forbid), ("j1", Overlap::Allow), ("j2", Overlap::Replace)]);
            s.queue = runs.iter().enumerate().map(|(i, (j, p, q, nb))| {
                let mut r = run(i as u64 + 10, &format!("j{j}"), *p * 60, *q);
                r.not_before_ms = *nb;
                r
            }).collect();
            s.running = running.iter().enumerate().map(|(i, j)| run(i as u64, &format!("j{j}"), 0, 0)).collect();
            let c = cap(max, headroom);
            let pick = next_to_start(&s, &c, 1);
            let eligible = |r: &Run| {
                let free = max.saturating_sub(s.running.len() as u32);
                free > 0
                    && r.not_before_ms <= 1
                    && (free > headroom || r.priority >= 100)
                    && (r.job == "j1" || !s.running.iter().any(|x| x.job == r.job))
            };
            match pick {
                Some(i) => {
                    let p = &s.queue[i];
                    prop_assert!(eligible(p));
                    for r in s.queue.iter().filter(|r| eligible(r)) {
                        prop_assert!((std::cmp::Reverse(p.priority), p.queued_ms, p.id) <= (std::cmp::Reverse(r.priority), r.queued_ms, r.id));
                    }
                }
                None => prop_assert!(!s.queue.iter().any(eligible)),
            }
        }
    }
}
