//! Uptime history in the registry: fixed-width buckets (one day by default) of up/total sample
//! counts, pruned by the master. The master counts its samples in memory and writes the absolute
//! counters of the changed buckets every rollup interval (`SetUptime`); older logs carry one
//! `RecordUptime` batch of samples per sweep, which still applies. Both are harmless to retry.

use super::DAY_MS;
use super::NodeId;
use super::Registry;
use super::UptimeBucket;
use super::UptimeSample;

/// Whether `new` is a later state of a bucket than `old`: more recent last sample, then more
/// samples. Counters only grow while one master counts, so a retry or a late rollup of an
/// older state never wins.
pub(crate) fn is_newer(new: &UptimeBucket, old: &UptimeBucket) -> bool {
    (new.last_sample_ms, new.total_samples, new.up_samples)
        > (old.last_sample_ms, old.total_samples, old.up_samples)
}

impl Registry {
    /// Switches to buckets of width `bucket_ms` (default one day); buckets of another width
    /// cannot be mixed with these, so a change starts the history afresh. True if it cleared
    /// any history.
    fn use_uptime_width(&mut self, bucket_ms: Option<u64>) -> (u64, bool) {
        let width = bucket_ms.unwrap_or(DAY_MS).max(1);
        let mut changed = false;
        if width != self.uptime_bucket_ms() {
            changed = !self.uptime.is_empty();
            self.uptime.clear();
            self.uptime_bucket_ms = (width != DAY_MS).then_some(width);
        }
        (width, changed)
    }

    pub(super) fn set_uptime(
        &mut self,
        buckets: &[(NodeId, u64, UptimeBucket)],
        bucket_ms: Option<u64>,
    ) -> bool {
        let (_, mut changed) = self.use_uptime_width(bucket_ms);
        for (node, index, bucket) in buckets {
            let held = self.uptime.get(node).and_then(|b| b.get(index));
            if is_newer(bucket, held.unwrap_or(&UptimeBucket::default())) {
                self.uptime
                    .entry(*node)
                    .or_default()
                    .insert(*index, *bucket);
                changed = true;
            }
        }
        changed
    }

    pub(super) fn record_uptime(
        &mut self,
        samples: &[UptimeSample],
        bucket_ms: Option<u64>,
    ) -> bool {
        let (width, mut changed) = self.use_uptime_width(bucket_ms);
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
    use crate::NodeId;
    use crate::registry::Registry;
    use crate::registry::RegistryCommand;
    use crate::registry::RegistryResponse;
    use crate::registry::UptimeBucket;
    use crate::registry::UptimeSample;

    fn sample(node: u64, at_ms: u64, up: bool) -> UptimeSample {
        UptimeSample {
            node: NodeId(node),
            at_ms,
            up,
        }
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
        assert_eq!(
            r.uptime[&NodeId(1)].keys().copied().collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(r.uptime[&NodeId(1)][&5].up_samples, 0);
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
            r.uptime[&NodeId(2)].keys().copied().collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(!r.has_uptime_before(2 * w));
    }

    fn counts(up: u64, total: u64, last: u64) -> UptimeBucket {
        UptimeBucket {
            up_samples: up,
            total_samples: total,
            last_sample_ms: last,
        }
    }

    #[test]
    fn set_uptime_writes_absolute_counters_and_a_retry_changes_nothing() {
        let mut r = Registry::default();
        let rollup = RegistryCommand::SetUptime {
            buckets: vec![
                (NodeId(1), 7, counts(4, 5, 700)),
                (NodeId(2), 7, counts(5, 5, 700)),
            ],
            bucket_ms: Some(100),
        };
        assert_eq!(
            r.apply(&rollup),
            RegistryResponse::Applied { changed: true }
        );
        assert_eq!(r.uptime_bucket_ms(), 100);
        assert_eq!(r.uptime[&NodeId(1)][&7], counts(4, 5, 700));
        assert_eq!(r.uptime[&NodeId(2)][&7], counts(5, 5, 700));
        // The same rollup again (a retry, or a duplicate in the log): absolute, so no change.
        assert_eq!(
            r.apply(&rollup),
            RegistryResponse::Applied { changed: false }
        );
        assert_eq!(r.uptime[&NodeId(1)][&7], counts(4, 5, 700));
        // The next rollup carries the grown counters, not increments.
        r.apply(&RegistryCommand::SetUptime {
            buckets: vec![(NodeId(1), 7, counts(6, 7, 720))],
            bucket_ms: Some(100),
        });
        assert_eq!(r.uptime[&NodeId(1)][&7], counts(6, 7, 720));
        assert_eq!(r.uptime[&NodeId(2)][&7], counts(5, 5, 700), "untouched");
    }

    #[test]
    fn a_rollup_travels_as_bare_arrays() {
        let cmd = RegistryCommand::SetUptime {
            buckets: vec![(NodeId(3), 20_000, counts(4, 5, 700))],
            bucket_ms: None,
        };
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(json, r#"{"op":"set_uptime","buckets":[[3,20000,4,5,700]]}"#);
        assert_eq!(serde_json::from_str::<RegistryCommand>(&json).unwrap(), cmd);
    }

    #[test]
    fn a_late_older_rollup_never_lowers_the_counts() {
        let mut r = Registry::default();
        r.apply(&RegistryCommand::SetUptime {
            buckets: vec![(NodeId(1), 3, counts(9, 10, 900))],
            bucket_ms: None,
        });
        let late = RegistryCommand::SetUptime {
            buckets: vec![
                (NodeId(1), 3, counts(5, 5, 500)),
                (NodeId(1), 3, counts(8, 9, 900)),
                (NodeId(1), 3, counts(0, 0, 0)),
            ],
            bucket_ms: None,
        };
        assert_eq!(r.apply(&late), RegistryResponse::Applied { changed: false });
        assert_eq!(r.uptime[&NodeId(1)][&3], counts(9, 10, 900));
        // An empty bucket for a node with no history adds nothing either.
        r.apply(&RegistryCommand::SetUptime {
            buckets: vec![(NodeId(2), 3, counts(0, 0, 0))],
            bucket_ms: None,
        });
        assert!(!r.uptime.contains_key(&NodeId(2)));
    }

    #[test]
    fn set_uptime_continues_what_record_uptime_counted() {
        // An old log's per-sweep samples, then a new master's rollup of the same bucket.
        let mut r = Registry::default();
        r.apply(&RegistryCommand::RecordUptime {
            samples: vec![sample(1, 10, true), sample(1, 20, false)],
            bucket_ms: Some(1_000),
        });
        assert_eq!(r.uptime[&NodeId(1)][&0], counts(1, 2, 20));
        r.apply(&RegistryCommand::SetUptime {
            buckets: vec![(NodeId(1), 0, counts(2, 3, 30))],
            bucket_ms: Some(1_000),
        });
        assert_eq!(r.uptime[&NodeId(1)][&0], counts(2, 3, 30));
        // A rollup of another width starts the history afresh, like a sample batch would.
        r.apply(&RegistryCommand::SetUptime {
            buckets: vec![(NodeId(1), 5, counts(1, 1, 5_000))],
            bucket_ms: None,
        });
        assert_eq!(r.uptime_bucket_ms(), crate::registry::DAY_MS);
        assert_eq!(
            r.uptime[&NodeId(1)].keys().copied().collect::<Vec<_>>(),
            vec![5]
        );
    }
}
