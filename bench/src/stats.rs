//! Summaries of repeated timings.

use std::time::Duration;

/// Median, 95th percentile and extremes of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub runs: usize,
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of_ms(samples: &[f64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            runs: n,
            median,
            p95: nearest_rank(&sorted, 0.95),
            min,
            max,
        })
    }

    pub fn of_durations(samples: &[Duration]) -> Option<Self> {
        let ms: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
        Self::of_ms(&ms)
    }
}

/// The smallest sample with at least `p` of the samples at or below it.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_one_to_twenty() {
        let samples: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let s = Summary::of_ms(&samples).unwrap();
        assert_eq!(
            (s.runs, s.median, s.p95, s.min, s.max),
            (20, 10.5, 19.0, 1.0, 20.0)
        );
    }

    #[test]
    fn summary_of_one_sample_and_of_none() {
        let s = Summary::of_ms(&[3.0]).unwrap();
        assert_eq!((s.median, s.p95, s.min, s.max), (3.0, 3.0, 3.0, 3.0));
        assert!(Summary::of_ms(&[]).is_none());
    }
}
