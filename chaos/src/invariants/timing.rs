//! Invariant 5: how long failover, offline detection, convergence and recovery took, as
//! distributions; a measurement that never finished within its limit fails.

use serde::Deserialize;
use serde::Serialize;

use super::Check;
use super::secs;
use crate::history::History;
use crate::history::MeasureKind;

/// min / median / p95 / max of the finished measurements, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: usize,
    /// Measurements that did not finish within their limit (not in the figures).
    pub unfinished: usize,
    pub min_ms: Option<u64>,
    pub median_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// Nearest-rank percentiles over `values` (`None`: unfinished).
pub fn distribution(values: &[Option<u64>]) -> Distribution {
    let mut done: Vec<u64> = values.iter().flatten().copied().collect();
    done.sort_unstable();
    let rank = |p: f64| {
        let n = done.len();
        (n > 0).then(|| done[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
    };
    Distribution {
        count: done.len(),
        unfinished: values.len() - done.len(),
        min_ms: done.first().copied(),
        median_ms: rank(0.5),
        p95_ms: rank(0.95),
        max_ms: done.last().copied(),
    }
}

pub fn all_within_limit(h: &History, kind: MeasureKind) -> Check {
    let name = match kind {
        MeasureKind::Failover => "5a every failover elected a new leader within its limit",
        MeasureKind::OfflineDetection => "5b every long node outage was detected within its limit",
        MeasureKind::Recovery => "5c after every fault the whole cluster agreed on a leader again",
        MeasureKind::Convergence => "5d convergence",
        MeasureKind::RestartConvergence => {
            "3d a daemon killed while starting apps comes back running each instance exactly once"
        }
    };
    let ms: Vec<_> = h.measurements.iter().filter(|m| m.kind == kind).collect();
    if ms.is_empty() {
        let why = match kind {
            MeasureKind::OfflineDetection => {
                "no long outage was timed against the master's offline verdict (needs master duties: health sweep, with timing short enough for this profile; see the notes)"
            }
            MeasureKind::RestartConvergence => "no daemon was killed while starting apps",
            _ => "nothing was measured",
        };
        return Check::no_data(name, why);
    }
    let missed: Vec<String> = ms
        .iter()
        .filter(|m| m.ms.is_none())
        .map(|m| {
            format!(
                "fault #{}: not within {} ({})",
                m.fault.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                secs(m.limit_ms),
                m.note
            )
        })
        .collect();
    let d = distribution(&ms.iter().map(|m| m.ms).collect::<Vec<_>>());
    if missed.is_empty() {
        Check::pass(
            name,
            format!(
                "{} measured: min {} ms, median {} ms, p95 {} ms, max {} ms",
                d.count,
                d.min_ms.unwrap_or(0),
                d.median_ms.unwrap_or(0),
                d.p95_ms.unwrap_or(0),
                d.max_ms.unwrap_or(0)
            ),
        )
    } else {
        Check::fail(name, missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Measurement;
    use crate::invariants::Verdict;

    fn m(ms: Option<u64>) -> Measurement {
        Measurement {
            kind: MeasureKind::Failover,
            fault: Some(4),
            ms,
            limit_ms: 10_000,
            note: "kill-leader".into(),
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<Option<u64>> = (1..=20).map(Some).chain([None]).collect();
        let d = distribution(&values);
        assert_eq!((d.count, d.unfinished), (20, 1));
        assert_eq!(
            (d.min_ms, d.median_ms, d.p95_ms, d.max_ms),
            (Some(1), Some(10), Some(19), Some(20))
        );
        assert_eq!(distribution(&[]).median_ms, None);
        assert_eq!(distribution(&[Some(7)]).p95_ms, Some(7));
    }

    #[test]
    fn finished_failovers_pass_and_a_missed_one_fails() {
        let mut h = History {
            measurements: vec![m(Some(300)), m(Some(450))],
            ..History::default()
        };
        let c = all_within_limit(&h, MeasureKind::Failover);
        assert_eq!(c.verdict, Verdict::Pass);
        assert!(c.evidence[0].contains("median 300 ms"), "{:?}", c.evidence);
        h.measurements.push(m(None));
        let c = all_within_limit(&h, MeasureKind::Failover);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].starts_with("fault #4: not within 10.0 s"),
            "{:?}",
            c.evidence
        );
        assert_eq!(
            all_within_limit(&h, MeasureKind::OfflineDetection).verdict,
            Verdict::NoData
        );
    }

    #[test]
    fn a_daemon_that_never_got_its_instances_back_fails() {
        let restart = |ms| {
            Measurement {
            kind: MeasureKind::RestartConvergence,
            fault: Some(11),
            ms,
            limit_ms: 15_000,
            note: "node 3, `burst-11` after the restart: wants 60: `herd ps` shows 60 running, /proc has 61 live processes over 60 slots".into(),
        }
        };
        let mut h = History {
            measurements: vec![restart(Some(900))],
            ..History::default()
        };
        assert_eq!(
            all_within_limit(&h, MeasureKind::RestartConvergence).verdict,
            Verdict::Pass
        );
        h.measurements.push(restart(None));
        let c = all_within_limit(&h, MeasureKind::RestartConvergence);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].contains("61 live processes"),
            "{:?}",
            c.evidence
        );
    }
}
