//! Invariant 7: every tick of the scheduled cluster job runs exactly once. Its runs append
//! `home:tick:trigger` lines; the registry records each tick the master handled: dispatched
//! to a node (a run, ended or not) or skipped (`missed`, `overlap`, no free node). No tick may
//! run twice, and between the first and the last tick handled, no tick may be dropped: each
//! ran, or the registry records what became of it (skipped; or dispatched to a node that died
//! before running it: `lost`, or still waiting for that node), or it is covered by a later
//! `missed` skip or `catch_up` run (a master that finds ticks long past decides once, for the
//! latest; the ones before it are that decision's).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::Check;
use crate::history::History;
use crate::workload::JOB_PERIOD_S;

pub fn never_twice(h: &History) -> Check {
    const NAME: &str = "7a no tick of the scheduled job runs twice";
    if h.job_ticks.is_empty() {
        return Check::no_data(NAME, "the scheduled job never ran (was it deployed?)");
    }
    let mut by_tick: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for t in &h.job_ticks {
        by_tick.entry(t.tick_s).or_default().push(&t.home);
    }
    let twice: Vec<String> = by_tick
        .iter()
        .filter(|(_, homes)| homes.len() > 1)
        .map(|(tick, homes)| format!("tick {tick} ran {} times: {homes:?}", homes.len()))
        .collect();
    if twice.is_empty() {
        Check::pass(NAME, format!("{} ticks, each run once", by_tick.len()))
    } else {
        Check::fail(NAME, twice)
    }
}

/// Ticks the registry records without a run that wrote its line, with what became of them:
/// the skip's reason, or the run's end reason, or `dispatched` (seconds since the epoch).
fn skipped(h: &History) -> Option<BTreeMap<u64, String>> {
    let runs = h.job_record.as_ref()?.get("runs")?.as_array()?;
    Some(
        runs.iter()
            .filter(|r| r["end"]["reason"] != "succeeded")
            .filter_map(|r| {
                let tick = r["tick_ms"].as_u64()? / 1000;
                let what = match (r["end"]["reason"].as_str(), r["end"]["detail"].as_str()) {
                    (Some("skipped"), Some(why)) => why.to_string(),
                    (Some(reason), _) => reason.to_string(),
                    (None, _) => "dispatched".to_string(),
                };
                Some((tick, what))
            })
            .collect(),
    )
}

pub fn none_lost(h: &History) -> Check {
    const NAME: &str =
        "7b no tick of the scheduled job is dropped: each ran or the registry says why not";
    if h.job_ticks.is_empty() {
        return Check::no_data(NAME, "the scheduled job never ran");
    }
    let Some(skipped) = skipped(h) else {
        return Check::no_data(
            NAME,
            "no node answered with the registry's record of the job",
        );
    };
    // The registry keeps the newest runs only: judge from the oldest it still records.
    let oldest_recorded = h
        .job_record
        .as_ref()
        .and_then(|r| r["runs"].as_array())
        .and_then(|runs| runs.iter().filter_map(|r| r["tick_ms"].as_u64()).min())
        .map_or(0, |ms| ms / 1000);
    let ran: BTreeMap<u64, &str> = h
        .job_ticks
        .iter()
        .map(|t| (t.tick_s, t.trigger.as_str()))
        .collect();
    let handled: BTreeSet<u64> = ran.keys().chain(skipped.keys()).copied().collect();
    let (Some(&first), Some(&last)) = (
        handled.iter().find(|t| **t >= oldest_recorded),
        handled.last(),
    ) else {
        return Check::no_data(NAME, "no tick within the registry's record");
    };
    let mut lost = Vec::new();
    let mut tick = first;
    while tick <= last {
        if !handled.contains(&tick) {
            // Covered if the next handled tick is a decision made once for missed ticks.
            let next = handled.range(tick..).next().copied();
            let covered = next.is_some_and(|n| {
                skipped.get(&n).is_some_and(|why| why == "missed")
                    || ran.get(&n).is_some_and(|trigger| *trigger == "catch_up")
            });
            if !covered {
                lost.push(format!(
                    "tick {tick} neither ran nor was recorded as skipped"
                ));
            }
        }
        tick += JOB_PERIOD_S;
    }
    if lost.is_empty() {
        let unran: Vec<String> = skipped
            .range(first..)
            .filter(|(t, _)| !ran.contains_key(t))
            .map(|(t, what)| format!("{t}: {what}"))
            .collect();
        Check::pass(
            NAME,
            format!(
                "{} ticks from {first} to {last}: {} ran; not run: {}",
                (last - first) / JOB_PERIOD_S + 1,
                ran.range(first..).count(),
                if unran.is_empty() {
                    "none".to_string()
                } else {
                    unran.join(", ")
                }
            ),
        )
    } else {
        Check::fail(NAME, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::JobTick;
    use crate::invariants::Verdict;

    fn tick(tick_s: u64, home: &str, trigger: &str) -> JobTick {
        JobTick {
            tick_s,
            home: home.into(),
            trigger: trigger.into(),
        }
    }

    fn record(skips: &[(u64, &str)]) -> serde_json::Value {
        serde_json::json!({
            "runs": skips.iter().map(|(t, why)| serde_json::json!({
                "tick_ms": t * 1000,
                "end": {"reason": "skipped", "detail": why},
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn a_doubled_tick_fails_and_gaps_need_a_record() {
        let mut h = History {
            job_ticks: vec![
                tick(100, "a", "schedule"),
                tick(105, "b", "schedule"),
                tick(115, "a", "schedule"),
            ],
            job_record: Some(record(&[])),
            ..History::default()
        };
        assert_eq!(never_twice(&h).verdict, Verdict::Pass);
        assert_eq!(none_lost(&h).verdict, Verdict::Fail, "110 is missing");
        h.job_record = Some(record(&[(110, "overlap")]));
        assert_eq!(none_lost(&h).verdict, Verdict::Pass);
        // A run dispatched to a node that died first is accounted for (the registry says so).
        h.job_record = Some(serde_json::json!({"runs": [{"tick_ms": 110_000, "end": null}]}));
        assert_eq!(none_lost(&h).verdict, Verdict::Pass);
        h.job_record = Some(record(&[(110, "overlap")]));
        // A master gone for 20 s: one `missed` record for the latest tick covers the rest.
        h.job_ticks.push(tick(140, "c", "schedule"));
        h.job_record = Some(record(&[(110, "overlap"), (135, "missed")]));
        assert_eq!(none_lost(&h).verdict, Verdict::Pass);
        h.job_ticks.push(tick(140, "b", "schedule"));
        assert_eq!(never_twice(&h).verdict, Verdict::Fail);
    }
}
