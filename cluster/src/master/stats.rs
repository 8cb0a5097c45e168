//! Heartbeat counters and a round-trip-time histogram: lock-free, cheap enough to record every
//! heartbeat, precise to about 3 % (log-linear buckets: 32 per power of two of microseconds).
//! And the master's uptime counters: every sweep's samples are counted in memory and only the
//! changed buckets go to the registry, as absolute counters, once per rollup interval.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::registry::NodeId;
use crate::registry::Registry;
use crate::registry::UptimeBucket;
use crate::registry::UptimeSample;

const SUB_BUCKETS: u64 = 32;
/// Powers of two of microseconds covered (2^26 µs ≈ 67 s; longer lands in the last bucket).
const POWERS: u64 = 27;

/// Counters of one master term's heartbeats.
pub struct HeartbeatStats {
    pub sent_total: AtomicU64,
    pub ok_total: AtomicU64,
    pub failed_total: AtomicU64,
    /// Refused by the node because this master's term is stale.
    pub fenced_total: AtomicU64,
    pub rtt: RttHistogram,
}

impl Default for HeartbeatStats {
    fn default() -> Self {
        HeartbeatStats {
            sent_total: AtomicU64::new(0),
            ok_total: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
            fenced_total: AtomicU64::new(0),
            rtt: RttHistogram::default(),
        }
    }
}

pub struct RttHistogram {
    buckets: Vec<AtomicU64>,
    /// Every recorded round trip added up, in µs (a Prometheus histogram's `_sum`).
    sum_us: AtomicU64,
}

impl Default for RttHistogram {
    fn default() -> Self {
        RttHistogram {
            buckets: (0..SUB_BUCKETS * POWERS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The bounds (µs) of the classic histogram `/metrics` exposes, from 250 µs to 5 s; a last
/// bucket (+Inf) holds the rest.
pub const RTT_BOUNDS_US: [u64; 13] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

fn bucket_of(us: u64) -> u64 {
    if us < SUB_BUCKETS {
        return us;
    }
    let power = 63 - u64::from(us.leading_zeros()); // >= 5
    let shift = power - 5;
    let sub = (us >> shift) - SUB_BUCKETS; // 0..32
    ((power - 4) * SUB_BUCKETS + sub).min(SUB_BUCKETS * POWERS - 1)
}

/// The largest value (µs) that lands in `bucket`.
fn upper_of(bucket: u64) -> u64 {
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let power = bucket / SUB_BUCKETS + 4;
    let sub = bucket % SUB_BUCKETS;
    let shift = power - 5;
    ((SUB_BUCKETS + sub + 1) << shift) - 1
}

impl RttHistogram {
    pub fn record(&self, rtt: Duration) {
        let us = rtt.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[bucket_of(us) as usize].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts per bound of `RTT_BOUNDS_US` (not cumulative; one more, last, for +Inf) and
    /// the sum in µs. A fine bucket is counted under the first bound at or above its upper
    /// end, so a count may sit one bound high by up to the fine buckets' 3 %.
    pub fn classic(&self) -> (Vec<u64>, u64) {
        let mut out = vec![0; RTT_BOUNDS_US.len() + 1];
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let upper = upper_of(i as u64);
            let slot = RTT_BOUNDS_US
                .iter()
                .position(|bound| upper <= *bound)
                .unwrap_or(RTT_BOUNDS_US.len());
            out[slot] += n;
        }
        (out, self.sum_us.load(Ordering::Relaxed))
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0.0..=1.0), as the upper bound of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper_of(i as u64)));
            }
        }
        None
    }

    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.sum_us.store(0, Ordering::Relaxed);
    }
}

/// One master term's uptime counts per (node, bucket index), between rollups. A bucket it has
/// not counted yet starts from the registry's counters (what earlier rollups, or an earlier
/// master, wrote), so a new master continues the history and a failover loses at most the
/// samples since the last rollup.
#[derive(Debug)]
pub(crate) struct UptimeCounters {
    bucket_ms: u64,
    counts: BTreeMap<(NodeId, u64), UptimeBucket>,
    /// Buckets counted into since the last successful rollup.
    changed: BTreeSet<(NodeId, u64)>,
}

impl UptimeCounters {
    pub(crate) fn new(bucket_ms: u64) -> UptimeCounters {
        UptimeCounters {
            bucket_ms: bucket_ms.max(1),
            counts: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }

    /// Counts one sweep's samples, as `RecordUptime` would have: a sample not newer than its
    /// bucket's last one is ignored.
    pub(crate) fn record(&mut self, reg: &Registry, samples: &[UptimeSample]) {
        let same_width = reg.uptime_bucket_ms() == self.bucket_ms;
        for s in samples {
            let key = (s.node, s.at_ms / self.bucket_ms);
            let bucket = self.counts.entry(key).or_insert_with(|| {
                same_width
                    .then(|| reg.uptime.get(&key.0).and_then(|b| b.get(&key.1)).copied())
                    .flatten()
                    .unwrap_or_default()
            });
            if bucket.total_samples > 0 && s.at_ms <= bucket.last_sample_ms {
                continue;
            }
            bucket.total_samples += 1;
            if s.up {
                bucket.up_samples += 1;
            }
            bucket.last_sample_ms = s.at_ms;
            self.changed.insert(key);
        }
    }

    /// The absolute counters of the buckets changed since the last rollup, for one
    /// `SetUptime`; empty when nothing changed.
    pub(crate) fn pending(&self) -> Vec<(NodeId, u64, UptimeBucket)> {
        self.changed
            .iter()
            .map(|&(node, index)| (node, index, self.counts[&(node, index)]))
            .collect()
    }

    /// `rolled` is in the registry: those buckets are clean again (unless counted into since),
    /// and buckets that ended before `now_ms` are forgotten (no sample can land in them).
    pub(crate) fn rolled_up(&mut self, rolled: &[(NodeId, u64, UptimeBucket)], now_ms: u64) {
        for (node, index, bucket) in rolled {
            if self.counts.get(&(*node, *index)) == Some(bucket) {
                self.changed.remove(&(*node, *index));
            }
        }
        let current = now_ms / self.bucket_ms;
        let changed = &self.changed;
        self.counts
            .retain(|key, _| key.1 >= current || changed.contains(key));
    }

    /// Buckets held in memory (for tests and the size of the next rollup).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_within_three_percent() {
        let mut last = 0;
        for us in [
            0u64, 1, 31, 32, 33, 63, 64, 100, 999, 1_000, 12_345, 999_999, 10_000_000,
        ] {
            let b = bucket_of(us);
            assert!(b >= last, "bucket of {us} went down");
            last = b;
            let upper = upper_of(b);
            assert!(upper >= us, "{us} above its bucket's upper bound {upper}");
            assert!(
                upper as f64 <= us as f64 * 1.035 + 1.0,
                "{us}: upper {upper}"
            );
        }
    }

    #[test]
    fn the_classic_buckets_count_every_round_trip_once_under_its_bound() {
        let h = RttHistogram::default();
        for us in [100, 240, 900, 990, 40_000, 9_000_000] {
            h.record(Duration::from_micros(us));
        }
        let (counts, sum) = h.classic();
        assert_eq!(counts.len(), RTT_BOUNDS_US.len() + 1);
        assert_eq!(counts.iter().sum::<u64>(), 6);
        assert_eq!(counts[0], 2, "100 and 240 µs under 250 µs: {counts:?}");
        assert_eq!(counts[2], 2, "900 and 990 µs under 1 ms: {counts:?}");
        assert_eq!(counts[7], 1, "40 ms under 50 ms: {counts:?}");
        assert_eq!(*counts.last().unwrap(), 1, "9 s past the last bound");
        assert_eq!(sum, 100 + 240 + 900 + 990 + 40_000 + 9_000_000);
        h.reset();
        assert_eq!(h.classic(), (vec![0; RTT_BOUNDS_US.len() + 1], 0));
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = RttHistogram::default();
        for i in 1..=1_000u64 {
            h.record(Duration::from_micros(i * 10));
        }
        let p50 = h.quantile(0.5).expect("p50").as_micros() as f64;
        let p99 = h.quantile(0.99).expect("p99").as_micros() as f64;
        assert!((5_000.0..=5_200.0).contains(&p50), "{p50}");
        assert!((9_900.0..=10_300.0).contains(&p99), "{p99}");
        assert_eq!(h.count(), 1_000);
    }

    fn sample(node: NodeId, at_ms: u64, up: bool) -> UptimeSample {
        UptimeSample { node, at_ms, up }
    }

    fn counts(up: u64, total: u64, last: u64) -> UptimeBucket {
        UptimeBucket {
            up_samples: up,
            total_samples: total,
            last_sample_ms: last,
        }
    }

    #[test]
    fn uptime_counters_roll_up_only_the_changed_buckets_as_absolute_counts() {
        let reg = Registry::default();
        let mut c = UptimeCounters::new(1_000);
        assert!(c.pending().is_empty());
        for t in [100, 200, 300] {
            c.record(
                &reg,
                &[sample(NodeId(1), t, true), sample(NodeId(2), t, t != 200)],
            );
        }
        let first = c.pending();
        assert_eq!(
            first,
            vec![
                (NodeId(1), 0, counts(3, 3, 300)),
                (NodeId(2), 0, counts(2, 3, 300))
            ]
        );
        c.rolled_up(&first, 300);
        assert!(c.pending().is_empty(), "nothing changed since");
        // Only node 2 sampled again: only its bucket goes out, with its whole count.
        c.record(&reg, &[sample(NodeId(2), 400, true)]);
        assert_eq!(c.pending(), vec![(NodeId(2), 0, counts(3, 4, 400))]);
        // A repeated sample (same time) is not counted twice.
        c.record(&reg, &[sample(NodeId(2), 400, true)]);
        assert_eq!(c.pending(), vec![(NodeId(2), 0, counts(3, 4, 400))]);
    }

    #[test]
    fn uptime_counters_keep_unwritten_buckets_and_forget_finished_ones() {
        let reg = Registry::default();
        let mut c = UptimeCounters::new(1_000);
        c.record(&reg, &[sample(NodeId(1), 900, true)]);
        let failed = c.pending();
        // The write failed (nothing rolled up): the bucket is still pending, a sample later.
        c.record(&reg, &[sample(NodeId(1), 1_100, false)]);
        assert_eq!(
            c.pending(),
            vec![
                (NodeId(1), 0, counts(1, 1, 900)),
                (NodeId(1), 1, counts(0, 1, 1_100))
            ]
        );
        // A rollup of an older state does not clean a bucket counted into since.
        c.record(&reg, &[sample(NodeId(1), 1_200, true)]);
        c.rolled_up(&failed, 1_200);
        c.rolled_up(&[(NodeId(1), 1, counts(0, 1, 1_100))], 1_200);
        assert_eq!(c.pending(), vec![(NodeId(1), 1, counts(1, 2, 1_200))]);
        c.rolled_up(&c.pending(), 1_200);
        assert_eq!(c.held(), 1, "yesterday's bucket is forgotten, today's kept");
    }

    #[test]
    fn uptime_counters_continue_from_the_registry() {
        let mut reg = Registry::default();
        reg.apply(&crate::registry::RegistryCommand::SetUptime {
            buckets: vec![(NodeId(1), 0, counts(5, 6, 600))],
            bucket_ms: Some(1_000),
        });
        let mut c = UptimeCounters::new(1_000);
        c.record(
            &reg,
            &[sample(NodeId(1), 700, true), sample(NodeId(2), 700, true)],
        );
        assert_eq!(
            c.pending(),
            vec![
                (NodeId(1), 0, counts(6, 7, 700)),
                (NodeId(2), 0, counts(1, 1, 700))
            ]
        );
        // Buckets of another width in the registry cannot be continued: counting starts at 0.
        let mut c = UptimeCounters::new(500);
        c.record(&reg, &[sample(NodeId(1), 700, true)]);
        assert_eq!(c.pending(), vec![(NodeId(1), 1, counts(1, 1, 700))]);
    }
}
