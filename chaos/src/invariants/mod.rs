//! The promises a chaos run checks, as pure functions of a recorded [`History`]. Each check
//! answers Pass, Fail or NoData with evidence; NoData is never a pass: a check that saw
//! nothing to judge says so and why (often: the herd under test lacks the master duties).

pub mod convergence;
mod jobs;
mod leaders;
mod orphans;
mod singleton;
pub mod slices;
mod timing;
mod writes;

use serde::Deserialize;
use serde::Serialize;

use crate::history::History;

pub use timing::Distribution;
pub use timing::distribution;

/// At most this many evidence lines per check; the rest are counted.
const MAX_EVIDENCE: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Nothing was observed that this check could judge.
    NoData,
    /// (Invariants only) some checks passed, the others had no data; none failed.
    Partial,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NoData => "NO DATA",
            Verdict::Partial => "PARTIAL",
        }
    }
}

/// One check of an invariant, with what it saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub evidence: Vec<String>,
}

impl Check {
    pub fn pass(name: &str, evidence: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            verdict: Verdict::Pass,
            evidence: vec![evidence.into()],
        }
    }

    pub fn no_data(name: &str, why: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            verdict: Verdict::NoData,
            evidence: vec![why.into()],
        }
    }

    /// Fails with the first [`MAX_EVIDENCE`] lines of `evidence` and a count of the rest.
    pub fn fail(name: &str, mut evidence: Vec<String>) -> Check {
        let total = evidence.len();
        if total > MAX_EVIDENCE {
            evidence.truncate(MAX_EVIDENCE);
            evidence.push(format!("... and {} more", total - MAX_EVIDENCE));
        }
        Check {
            name: name.to_string(),
            verdict: Verdict::Fail,
            evidence,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvariantResult {
    pub number: u8,
    pub title: String,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

impl InvariantResult {
    fn new(number: u8, title: &str, checks: Vec<Check>) -> InvariantResult {
        InvariantResult {
            number,
            title: title.to_string(),
            verdict: combine(&checks),
            checks,
        }
    }
}

/// Any failure fails; all passes pass; all no-data is no data; otherwise partial.
fn combine(checks: &[Check]) -> Verdict {
    let all = |v| checks.iter().all(|c| c.verdict == v);
    if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if all(Verdict::Pass) && !checks.is_empty() {
        Verdict::Pass
    } else if all(Verdict::NoData) {
        Verdict::NoData
    } else {
        Verdict::Partial
    }
}

/// Every invariant of the chaos issue, in its order.
pub fn check_all(h: &History) -> Vec<InvariantResult> {
    vec![
        InvariantResult::new(
            1,
            "one leader per term; nodes accept heartbeats only from the highest term",
            vec![
                leaders::one_leader_per_term(h),
                leaders::one_master_per_term(h),
                leaders::heartbeats_from_highest_term(h),
            ],
        ),
        InvariantResult::new(
            2,
            "acknowledged writes survive on every node; nothing unacknowledged appears twice",
            vec![
                writes::acknowledged_writes_on_every_node(h),
                writes::replicas_agree(h),
                writes::nothing_twice_or_from_nowhere(h),
            ],
        ),
        InvariantResult::new(
            3,
            "apps converge after healing; the singleton never runs on two nodes",
            vec![
                convergence::cluster_apps_converge(h),
                convergence::local_apps_converge(h),
                singleton::singleton_never_twice(h),
                timing::all_within_limit(h, crate::history::MeasureKind::RestartConvergence),
            ],
        ),
        InvariantResult::new(
            4,
            "no orphan app process survives its node's `herd down`",
            vec![orphans::no_orphans_after_down(h)],
        ),
        InvariantResult::new(
            5,
            "failover, offline detection and recovery finish within their limits",
            vec![
                timing::all_within_limit(h, crate::history::MeasureKind::Failover),
                timing::all_within_limit(h, crate::history::MeasureKind::OfflineDetection),
                timing::all_within_limit(h, crate::history::MeasureKind::Recovery),
            ],
        ),
        InvariantResult::new(
            6,
            "every agent's slice equals the registry's slice for it",
            vec![slices::agent_slices_match(h)],
        ),
        InvariantResult::new(
            7,
            "every tick of the scheduled cluster job runs exactly once",
            vec![jobs::never_twice(h), jobs::none_lost(h)],
        ),
    ]
}

/// Seconds with one decimal, for evidence lines.
pub(crate) fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Verdict) -> Check {
        Check {
            name: "c".into(),
            verdict: v,
            evidence: vec![],
        }
    }

    #[test]
    fn a_failure_anywhere_fails_and_no_data_is_never_a_pass() {
        use Verdict::*;
        assert_eq!(combine(&[check(Pass), check(Fail), check(NoData)]), Fail);
        assert_eq!(combine(&[check(Pass), check(Pass)]), Pass);
        assert_eq!(combine(&[check(NoData), check(NoData)]), NoData);
        assert_eq!(combine(&[check(Pass), check(NoData)]), Partial);
        assert_eq!(combine(&[]), NoData);
    }

    #[test]
    fn an_empty_history_passes_nothing() {
        let results = check_all(&History::default());
        assert_eq!(results.len(), 7);
        for r in results {
            assert_eq!(
                r.verdict,
                Verdict::NoData,
                "invariant {}: {:?}",
                r.number,
                r.checks
            );
        }
    }

    #[test]
    fn long_evidence_is_cut_and_counted() {
        let c = Check::fail("x", (0..20).map(|i| i.to_string()).collect());
        assert_eq!(c.evidence.len(), MAX_EVIDENCE + 1);
        assert_eq!(
            c.evidence.last().map(String::as_str),
            Some("... and 8 more")
        );
    }
}
