//! The `--cluster` results as a markdown table (ready for the README) and as JSON.

use super::{ClusterResult, Knobs, Outcome};
use serde_json::{Value, json};

/// The tables and the notes on how each column was measured.
pub fn markdown(outcomes: &[Outcome], knobs: &Knobs) -> String {
    let clients: Vec<String> = knobs.clients.iter().map(usize::to_string).collect();
    let mut out = format!(
        "| 3 nodes on loopback | leader failover after kill -9, median / p95 / max ({} kills) | durable writes/s, {} clients | idle CPU of the 3 nodes ({} s) | load average before → after |\n|---|---|---|---|---|\n",
        knobs.kills,
        clients.join(" / "),
        knobs.idle_secs
    );
    for o in outcomes {
        match o {
            Outcome::Measured(r) => out.push_str(&row(r)),
            Outcome::Failed { tool, reason } => {
                out.push_str(&format!(
                    "| {tool} | not measured: {} | | | |\n",
                    reason.replace('|', "/").replace('\n', " ")
                ));
            }
        }
    }
    out.push_str(&format!(
        "\n| write latency, p50 / p99 | {} |\n|---|{}\n",
        knobs
            .clients
            .iter()
            .map(|c| format!("{c} clients"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(knobs.clients.len())
    ));
    for o in outcomes {
        if let Outcome::Measured(r) = o {
            let cells: Vec<String> = r
                .writes
                .iter()
                .map(|w| format!("{:.1} / {:.1} ms", w.p50_ms, w.p99_ms))
                .collect();
            out.push_str(&format!("| {} | {} |\n", r.label, cells.join(" | ")));
        }
    }
    out
}

fn row(r: &ClusterResult) -> String {
    let failover = match &r.failover.summary {
        Some(s) => format!("{:.0} / {:.0} / {:.0} ms", s.median, s.p95, s.max),
        None => "-".to_string(),
    };
    let writes: Vec<String> = r
        .writes
        .iter()
        .map(|w| thousands(w.per_s().round() as u64))
        .collect();
    format!(
        "| {} | {failover} | {} | {:.2} % ({} ticks) | {:.2} → {:.2} |\n",
        r.label,
        writes.join(" / "),
        r.idle.percent,
        r.idle.ticks,
        r.load_before,
        r.load_after
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn print(outcomes: &[Outcome], knobs: &Knobs) {
    println!("\nCluster against etcd, 3 members each on loopback, in the same run\n");
    println!("{}", markdown(outcomes, knobs));
    println!(
        "Failover: SIGKILL to the leader's process until both survivors' own status commands \
         (`herd cluster status --json`, `etcdctl endpoint status -w json`, each run every {} ms) \
         name the same new leader; the killed member is restarted and rejoins before the next kill.\n\
         Writes: each client on its own connection to one member (client k to member k mod 3), \
         one write in flight, its own key overwritten with a 16-byte value, for {} s; herd \
         through `Access/PutSecret` on each daemon's Unix socket, etcd through `KV/Put` over gRPC.\n\
         Idle CPU: utime + stime of the three server processes from /proc, as % of one core.",
        super::POLL_EVERY.as_millis(),
        knobs.write_secs
    );
    for o in outcomes {
        if let Outcome::Measured(r) = o {
            println!(
                "Idle CPU ticks per member, {}: {:?}",
                r.label, r.idle.per_member
            );
        }
    }
}

pub fn to_json(outcomes: &[Outcome], knobs: &Knobs) -> Value {
    json!({
        "knobs": { "kills": knobs.kills, "idle_secs": knobs.idle_secs, "write_secs": knobs.write_secs, "clients": knobs.clients },
        "tools": outcomes.iter().map(|o| match o {
            Outcome::Measured(r) => json!({
                "label": r.label,
                "failover_ms": {
                    "samples": r.failover.samples_ms,
                    "median": r.failover.summary.map(|s| s.median),
                    "p95": r.failover.summary.map(|s| s.p95),
                    "max": r.failover.summary.map(|s| s.max),
                },
                "writes": r.writes.iter().map(|w| json!({
                    "clients": w.clients, "writes": w.writes, "secs": w.secs,
                    "per_s": w.per_s(), "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
                })).collect::<Vec<_>>(),
                "idle_cpu": { "secs": r.idle.secs, "ticks": r.idle.ticks, "ticks_per_member": r.idle.per_member, "percent_of_one_core": r.idle.percent },
                "load1_before": r.load_before,
                "load1_after": r.load_after,
            }),
            Outcome::Failed { tool, reason } => json!({ "label": tool, "failed": reason }),
        }).collect::<Vec<_>>(),
        "markdown": markdown(outcomes, knobs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(2800), "2,800");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
