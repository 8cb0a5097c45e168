//! Heartbeat counters and a round-trip-time histogram: lock-free, cheap enough to record every
//! heartbeat, precise to about 3 % (log-linear buckets: 32 per power of two of microseconds).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
}

impl Default for RttHistogram {
    fn default() -> Self {
        RttHistogram {
            buckets: (0..SUB_BUCKETS * POWERS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

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
}
