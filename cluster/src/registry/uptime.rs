//! Uptime history in the registry: samples land in fixed-width buckets (one day by default),
//! a retried batch is harmless, and old buckets are pruned by the master.

use super::DAY_MS;
use super::Registry;
use super::UptimeSample;

impl Registry {
    pub(super) fn record_uptime(
        &mut self,
        samples: &[UptimeSample],
        bucket_ms: Option<u64>,
    ) -> bool {
        let width = bucket_ms.unwrap_or(DAY_MS).max(1);
        let mut changed = false;
        if width != self.uptime_bucket_ms() {
            // Buckets of another width cannot be mixed with these: start the history afresh.
            changed = !self.uptime.is_empty();
            self.uptime.clear();
            self.uptime_bucket_ms = (width != DAY_MS).then_some(width);
        }
        for s in samples {
            let buckets = self.uptime.entry(s.node).or_default();
            let bucket = buckets.entry(s.at_ms / width).or_default();
            if bucket.total_samples > 0 && s.at_ms <= bucket.last_sample_ms {
                continue;
            }
            bucket.total_samples += 1;
            if s.up {
                bucket.up_samples += 1;
            }
            bucket.last_sample_ms = s.at_ms;
            changed = true;
        }
        changed
    }

    /// Removes buckets that end at or before `before_ms`.
    pub(super) fn prune_uptime(&mut self, before_ms: u64) -> bool {
        let first_kept = before_ms / self.uptime_bucket_ms();
        let mut changed = false;
        self.uptime.retain(|_, buckets| {
            let before = buckets.len();
            buckets.retain(|&index, _| index >= first_kept);
            changed |= buckets.len() != before;
            !buckets.is_empty()
        });
        changed
    }

    /// Whether any bucket ends at or before `before_ms` (so a prune would change something).
    pub fn has_uptime_before(&self, before_ms: u64) -> bool {
        let first_kept = before_ms / self.uptime_bucket_ms();
        self.uptime
            .values()
            .any(|b| b.keys().next().is_some_and(|&first| first < first_kept))
    }
}

#[cfg(test)]
mod tests {
    use crate::registry::Registry;
    use crate::registry::RegistryCommand;
    use crate::registry::UptimeSample;

    fn sample(node: u64, at_ms: u64, up: bool) -> UptimeSample {
        UptimeSample { node, at_ms, up }
    }

    #[test]
    fn a_new_bucket_width_starts_the_history_afresh() {
        let mut r = Registry::default();
        r.apply(&RegistryCommand::RecordUptime {
            samples: vec![sample(1, 5, true)],
            bucket_ms: None,
        });
        r.apply(&RegistryCommand::RecordUptime {
            samples: vec![sample(1, 3_600_000 * 5 + 1, false)],
            bucket_ms: Some(3_600_000),
        });
        assert_eq!(r.uptime_bucket_ms(), 3_600_000);
        assert_eq!(r.uptime[&1].keys().copied().collect::<Vec<_>>(), vec![5]);
        assert_eq!(r.uptime[&1][&5].up_samples, 0);
    }

    #[test]
    fn prune_uses_the_registry_bucket_width() {
        let mut r = Registry::default();
        let w = 1_000;
        r.apply(&RegistryCommand::RecordUptime {
            samples: (0..5).map(|i| sample(2, i * w + 1, true)).collect(),
            bucket_ms: Some(w),
        });
        assert!(r.has_uptime_before(2 * w));
        assert!(!r.has_uptime_before(w - 1));
        r.apply(&RegistryCommand::PruneUptime { before_ms: 2 * w });
        assert_eq!(
            r.uptime[&2].keys().copied().collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(!r.has_uptime_before(2 * w));
    }
}
