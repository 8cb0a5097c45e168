//! The run's verdict for people (a summary table on stderr) and for machines (a JSON file):
//! seed, settings, every fault with its times, each invariant with its evidence, and the
//! failover, detection, recovery and convergence distributions.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::history::FaultRecord;
use crate::history::FaultState;
use crate::history::History;
use crate::history::MeasureKind;
use crate::invariants::Distribution;
use crate::invariants::InvariantResult;
use crate::invariants::Verdict;
use crate::invariants::convergence::convergence_times;
use crate::invariants::distribution;
use crate::scenario::Settings;

#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultCounts {
    pub injected: usize,
    pub unsupported: usize,
    pub skipped: usize,
    pub failed: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct WriteCounts {
    pub total: usize,
    pub acknowledged: usize,
    pub failed: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub profile: String,
    /// The command that reproduces this run.
    pub command: String,
    pub started_unix_ms: u64,
    pub settings: Settings,
    /// False when any invariant failed.
    pub passed: bool,
    pub invariants: Vec<InvariantResult>,
    pub distributions: BTreeMap<String, Distribution>,
    pub fault_counts: BTreeMap<String, FaultCounts>,
    pub faults: Vec<FaultRecord>,
    pub writes: WriteCounts,
    pub notes: Vec<String>,
    /// The full recorded history (re-check it with `herd-chaos --check FILE`).
    pub history_file: Option<String>,
}

pub fn build(
    h: &History,
    settings: Settings,
    invariants: Vec<InvariantResult>,
    command: String,
    history_file: Option<String>,
) -> Report {
    let mut distributions = BTreeMap::new();
    for (name, kind) in [
        ("failover", MeasureKind::Failover),
        ("offline-detection", MeasureKind::OfflineDetection),
        ("recovery", MeasureKind::Recovery),
        ("restart-convergence", MeasureKind::RestartConvergence),
    ] {
        let values: Vec<Option<u64>> = h
            .measurements
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| m.ms)
            .collect();
        distributions.insert(name.to_string(), distribution(&values));
    }
    let conv: Vec<Option<u64>> = convergence_times(h).into_iter().map(|(_, t)| t).collect();
    distributions.insert("convergence".to_string(), distribution(&conv));
    let mut fault_counts: BTreeMap<String, FaultCounts> = BTreeMap::new();
    for f in &h.faults {
        let c = fault_counts.entry(f.kind.clone()).or_default();
        match f.state {
            FaultState::Injected => c.injected += 1,
            FaultState::Unsupported(_) => c.unsupported += 1,
            FaultState::Skipped(_) => c.skipped += 1,
            FaultState::Failed(_) => c.failed += 1,
        }
    }
    let acknowledged = h.writes.iter().filter(|w| w.acked).count();
    Report {
        seed: h.seed,
        profile: h.profile.clone(),
        command,
        started_unix_ms: h.started_unix_ms,
        settings,
        passed: invariants.iter().all(|i| i.verdict != Verdict::Fail),
        invariants,
        distributions,
        fault_counts,
        faults: h.faults.clone(),
        writes: WriteCounts {
            total: h.writes.len(),
            acknowledged,
            failed: h.writes.len() - acknowledged,
        },
        notes: h.notes.clone(),
        history_file,
    }
}

fn ms(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The summary a person reads at the end of a run.
pub fn summary(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "\nherd chaos report: profile {}, seed {}, {} control nodes + {} agent(s), {:.0} s",
        r.profile, r.seed, r.settings.nodes, r.settings.agents, r.settings.duration_s
    ));
    line(format!("reproduce: {}", r.command));
    line(String::new());
    line(format!(
        "{:<22} {:>8} {:>11} {:>7} {:>6}",
        "FAULT", "INJECTED", "UNSUPPORTED", "SKIPPED", "FAILED"
    ));
    for (kind, c) in &r.fault_counts {
        line(format!(
            "{kind:<22} {:>8} {:>11} {:>7} {:>6}",
            c.injected, c.unsupported, c.skipped, c.failed
        ));
    }
    line(format!(
        "registry writes: {} sent, {} acknowledged, {} failed or timed out",
        r.writes.total, r.writes.acknowledged, r.writes.failed
    ));
    line(String::new());
    line(format!(
        "{:<18} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "DURATION (ms)", "N", "UNFINISHED", "MIN", "MEDIAN", "P95", "MAX"
    ));
    for (name, d) in &r.distributions {
        line(format!(
            "{name:<18} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8}",
            d.count,
            d.unfinished,
            ms(d.min_ms),
            ms(d.median_ms),
            ms(d.p95_ms),
            ms(d.max_ms)
        ));
    }
    line(String::new());
    for inv in &r.invariants {
        line(format!(
            "[{:<7}] invariant {}: {}",
            inv.verdict.label(),
            inv.number,
            inv.title
        ));
        for c in &inv.checks {
            line(format!("    [{:<7}] {}", c.verdict.label(), c.name));
            let show = if c.verdict == Verdict::Fail {
                c.evidence.len()
            } else {
                1
            };
            for e in c.evidence.iter().take(show) {
                line(format!("              {e}"));
            }
        }
    }
    if !r.notes.is_empty() {
        line(String::new());
        line("notes:".to_string());
        for n in &r.notes {
            line(format!("  - {n}"));
        }
    }
    line(String::new());
    line(if r.passed {
        "RESULT: no invariant failed (checks marked NO DATA were not judged)".to_string()
    } else {
        let failed: Vec<String> = r
            .invariants
            .iter()
            .filter(|i| i.verdict == Verdict::Fail)
            .map(|i| i.number.to_string())
            .collect();
        format!(
            "RESULT: FAILED: invariant(s) {} violated; evidence above",
            failed.join(", ")
        )
    });
    out
}

pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::check_all;

    #[test]
    fn an_unjudged_run_passes_nothing_and_says_so() {
        let h = History {
            seed: 9,
            profile: "quick".into(),
            ..History::default()
        };
        let r = build(&h, Settings::default(), check_all(&h), "cmd".into(), None);
        assert!(r.passed);
        let text = summary(&r);
        assert!(text.contains("[NO DATA] invariant 1"), "{text}");
        assert!(text.contains("RESULT: no invariant failed (checks marked NO DATA"));
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(json["seed"], 9);
        assert_eq!(json["invariants"][0]["verdict"], "no-data");
    }
}
