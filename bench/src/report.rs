//! The results as a table for people and as JSON for scripts.

use crate::scenarios::{AppsResult, Environment, Memory, PsResult, RestartResult};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::time::Duration;

pub struct Results {
    pub env: Environment,
    pub apps: Vec<AppsResult>,
    pub restart: RestartResult,
    pub ps: PsResult,
}

pub const MEMORY_NOTE: &str = "supervisor memory = the daemon alone: herd runs no shim processes, \
                               each app writes its logs directly";

pub fn print(r: &Results) {
    let e = &r.env;
    println!(
        "\n{} | {} CPUs | kernel {} | open-file limit {}\n",
        e.herd_version, e.nproc, e.kernel, e.open_files_limit
    );

    println!("Start / memory / stop: N apps of `sleep 100000`, a fresh daemon for each N");
    let rows: Vec<Vec<String>> = r.apps.iter().map(apps_row).collect();
    table(
        &[
            "APPS",
            "START CMD",
            "ALL RUNNING",
            "PS POLLS",
            "DOWN",
            "RSS idle",
            "RSS N apps",
            "PSS idle",
            "PSS N apps",
            "THREADS",
            "FDS",
        ],
        &rows,
    );
    println!("({MEMORY_NOTE}; memory read ~1 s after all were running)\n");

    println!(
        "Restart latency: SIGKILL to the replacement's first instruction, restart = always, no backoff ({} kills)",
        r.restart.latency.runs
    );
    table(
        &["", "MEDIAN", "P95", "MIN", "MAX"],
        &[summary_row("restart", &r.restart.latency)],
    );
    println!();

    println!(
        "CLI round trip with {} apps running: whole process, spawn to exit ({} runs each)",
        r.ps.apps, r.ps.table.runs
    );
    table(
        &["COMMAND", "MEDIAN", "P95", "MIN", "MAX"],
        &[
            summary_row("herd ps", &r.ps.table),
            summary_row("herd ps --json", &r.ps.json),
            summary_row("herd --version (no daemon call)", &r.ps.version),
        ],
    );
}

fn apps_row(a: &AppsResult) -> Vec<String> {
    vec![
        a.apps.to_string(),
        secs(a.start_cmd),
        secs(a.all_running),
        a.ps_polls.to_string(),
        secs(a.down),
        mib(a.idle.rss_kib),
        mib(a.loaded.rss_kib),
        mib(a.idle.pss_kib),
        mib(a.loaded.pss_kib),
        a.loaded.threads.to_string(),
        a.loaded.open_fds.to_string(),
    ]
}

fn summary_row(label: &str, s: &Summary) -> Vec<String> {
    [s.median, s.p95, s.min, s.max]
        .iter()
        .fold(vec![label.to_string()], |mut row, v| {
            row.push(format!("{v:.2} ms"));
            row
        })
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn to_json(r: &Results) -> Value {
    json!({
        "environment": { "nproc": r.env.nproc, "herd_version": r.env.herd_version, "kernel": r.env.kernel, "open_files_limit": r.env.open_files_limit },
        "apps": r.apps.iter().map(apps_json).collect::<Vec<_>>(),
        "supervisor_memory_note": MEMORY_NOTE,
        "restart_latency_ms": {
            "summary": summary_json(&r.restart.latency),
            "samples": r.restart.samples_ms,
        },
        "cli_round_trip_ms": {
            "apps": r.ps.apps,
            "ps": summary_json(&r.ps.table),
            "ps_json": summary_json(&r.ps.json),
            "version": summary_json(&r.ps.version),
        },
    })
}

fn apps_json(a: &AppsResult) -> Value {
    json!({
        "apps": a.apps,
        "start_cmd_s": a.start_cmd.as_secs_f64(),
        "start_to_all_running_s": a.all_running.as_secs_f64(),
        "ps_polls": a.ps_polls,
        "down_s": a.down.as_secs_f64(),
        "daemon_idle": memory_json(&a.idle),
        "daemon_with_apps": memory_json(&a.loaded),
    })
}

fn memory_json(m: &Memory) -> Value {
    json!({ "rss_kib": m.rss_kib, "pss_kib": m.pss_kib, "threads": m.threads, "open_fds": m.open_fds })
}

fn summary_json(s: &Summary) -> Value {
    json!({ "runs": s.runs, "median": s.median, "p95": s.p95, "min": s.min, "max": s.max })
}
