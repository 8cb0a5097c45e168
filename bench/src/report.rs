//! The results as a table for people and as JSON for scripts.

use crate::churn::{self, ChurnResult, Ops};
use crate::idle::{self, Cpu, IdleResult};
use crate::procfs::Memory;
use crate::scenarios::{AppsResult, Environment, PsResult, RestartResult};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::time::Duration;

/// What ran; a scenario left out by `--only` is `None` or empty.
pub struct Results {
    pub env: Environment,
    pub apps: Vec<AppsResult>,
    pub restart: Option<RestartResult>,
    pub ps: Option<PsResult>,
    /// herd's side of the idle comparison.
    pub idle: Option<IdleResult>,
    /// PM2, supervisord, s6 and runit, with `--compare`.
    pub compare: Vec<Compared>,
    pub churn: Option<ChurnResult>,
}

/// One other supervisor: measured, or skipped with the reason (an install that failed, say).
pub enum Compared {
    Measured(Box<IdleResult>),
    Skipped { tool: String, reason: String },
}

pub const ANON_NOTE: &str = "anon RSS = RssAnon of /proc/PID/status (heap, stacks); the rest of \
                             the RSS is mostly the executable's and libraries' pages, and PSS \
                             splits those with every other process mapping the same files";

pub const MEMORY_NOTE: &str = "supervisor memory = the daemon alone: herd runs no shim processes, \
                               each app writes its logs directly";

pub fn print(r: &Results) {
    let e = &r.env;
    println!(
        "\n{} ({}, built {}) | {} CPUs | kernel {} | open-file limit {}\n",
        e.herd_version, e.herd_path, e.herd_built, e.nproc, e.kernel, e.open_files_limit
    );

    if !r.apps.is_empty() {
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
    }

    if let Some(restart) = &r.restart {
        println!(
            "Restart latency: SIGKILL to the replacement's first instruction, restart = always, no backoff ({} kills)",
            restart.latency.runs
        );
        table(
            &["", "MEDIAN", "P95", "MIN", "MAX"],
            &[summary_row("restart", &restart.latency)],
        );
        println!();
    }

    if let Some(ps) = &r.ps {
        println!(
            "CLI round trip with {} apps running: whole process, spawn to exit ({} runs each)",
            ps.apps, ps.table.runs
        );
        table(
            &["COMMAND", "MEDIAN", "P95", "MIN", "MAX"],
            &[
                summary_row("herd ps", &ps.table),
                summary_row("herd ps --json", &ps.json),
                summary_row("herd --version (no daemon call)", &ps.version),
            ],
        );
        println!();
    }

    if let Some(idle) = &r.idle {
        print_idle(idle, &r.compare);
    }
    if let Some(c) = &r.churn {
        print_churn(c);
    }
    let md = markdown(r);
    if !md.is_empty() {
        println!("Markdown (for the README):\n\n{md}");
    }
}

/// herd's idle result, then those of the other supervisors that were measured.
fn with_compared<'a>(herd: &'a IdleResult, others: &'a [Compared]) -> Vec<&'a IdleResult> {
    let mut all = vec![herd];
    all.extend(others.iter().filter_map(|c| match c {
        Compared::Measured(m) => Some(m.as_ref()),
        Compared::Skipped { .. } => None,
    }));
    all
}

/// The idle table: herd and, with `--compare`, the others measured the same way.
fn print_idle(herd: &IdleResult, others: &[Compared]) {
    let measured = with_compared(herd, others);
    println!(
        "Idle: {} apps of `sleep 100000` started through each tool's CLI; after a {} s settle, \
         the supervisor's CPU over {:.0} s and its memory at the start and end of that period \
         (its processes added up: the daemon, and for s6 and runit the per-service supervisors)",
        idle::APPS,
        idle::SETTLE.as_secs(),
        herd.cpu.secs
    );
    let rows: Vec<Vec<String>> = measured
        .iter()
        .map(|m| {
            vec![
                m.label.clone(),
                secs(m.start_cmd),
                secs(m.all_running),
                m.status_polls.to_string(),
                cpu_cell(&m.cpu),
                m.cpu.ticks.to_string(),
                format!("{} -> {}", mib(m.start.rss_kib), mib(m.end.rss_kib)),
                format!("{} -> {}", mib(m.start.pss_kib), mib(m.end.pss_kib)),
                format!("{} -> {}", mib(m.start.anon_kib), mib(m.end.anon_kib)),
                m.end.threads.to_string(),
                m.end.open_fds.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SUPERVISOR",
            "START CMD",
            "ALL RUNNING",
            "STATUS POLLS",
            "IDLE CPU",
            "TICKS",
            "RSS",
            "PSS",
            "ANON RSS",
            "THREADS",
            "FDS",
        ],
        &rows,
    );
    println!("({})", cpu_method(&herd.cpu));
    println!("({ANON_NOTE})\n");
    println!(
        "Restart latency: SIGKILL one app's process (a different app each time), until a new child \
         of the supervisor runs `sleep` (/proc polled every ~0.5 ms)"
    );
    let rows: Vec<Vec<String>> = measured
        .iter()
        .map(|m| {
            let mut row = summary_row(&m.label, &m.restart);
            row.push(m.restart.runs.to_string());
            row
        })
        .collect();
    table(
        &["SUPERVISOR", "MEDIAN", "P95", "MIN", "MAX", "KILLS"],
        &rows,
    );
    println!();
    println!("Status round trip: the tool's status query, whole CLI runs, spawn to exit");
    let rows: Vec<Vec<String>> = measured
        .iter()
        .map(|m| {
            let mut row = summary_row(&m.label, &m.status);
            row.push(m.status_command.clone());
            row
        })
        .collect();
    table(
        &["SUPERVISOR", "MEDIAN", "P95", "MIN", "MAX", "COMMAND"],
        &rows,
    );
    println!();
    for m in &measured {
        println!(
            "{} (pid {}: `{}`; {} processes counted):",
            m.label,
            m.pid,
            m.process.trim(),
            m.processes
        );
        for note in &m.notes {
            println!("  - {note}");
        }
        println!(
            "  - other processes of its home at the end of the idle period (not measured): {}",
            if m.helpers.is_empty() {
                "none".to_string()
            } else {
                m.helpers.join("; ")
            }
        );
        println!(
            "  - load average before / after: {} / {}",
            m.loadavg[0], m.loadavg[1]
        );
    }
    for c in others {
        if let Compared::Skipped { tool, reason } = c {
            println!("{tool}: SKIPPED: {reason}");
        }
    }
    println!();
}

fn print_churn(c: &ChurnResult) {
    println!(
        "Churn: {} apps for {} s: {} crash-loop (`sh -c 'sleep 0.5; exit 1'`, restart always, \
         backoff 100 ms to 1 s), and every second one `herd restart` of a random app and one \
         `herd scale` of a 3-instance app to 1-5; daemon memory every {} s",
        churn::APPS,
        c.secs,
        churn::CRASHERS,
        churn::SAMPLE_EVERY
    );
    let stride = c.samples.len().div_ceil(30).max(1);
    let rows: Vec<Vec<String>> = c
        .samples
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i == c.samples.len() - 1)
        .map(|(_, (t, m))| {
            vec![
                format!("{t:.0} s"),
                format!("{} KiB", m.rss_kib),
                format!("{} KiB", m.anon_kib),
                format!("{} KiB", m.pss_kib),
                m.open_fds.to_string(),
                m.threads.to_string(),
            ]
        })
        .collect();
    table(&["T", "RSS", "ANON RSS", "PSS", "FDS", "THREADS"], &rows);
    let (first, last, max) = rss_first_last_max(c);
    println!(
        "  RSS first {first} KiB, last {last} KiB, max {max} KiB; least-squares slope {:+.0} KiB/h \
         over {} samples ({:+.0} KiB/h over the second half)",
        c.rss_slope_kib_per_h,
        c.samples.len(),
        c.rss_slope_second_half_kib_per_h,
    );
    let (a_first, a_last, a_max) = first_last_max(c, |m| m.anon_kib);
    println!(
        "  anon RSS first {a_first} KiB, last {a_last} KiB, max {a_max} KiB; slope {:+.0} KiB/h \
         ({:+.0} KiB/h over the second half)",
        c.anon_slope_kib_per_h, c.anon_slope_second_half_kib_per_h,
    );
    println!(
        "  PSS is not fitted: {} of {} samples read under 70 % of the median (the daemon's file \
         pages were then shared with another process running the same binary)",
        c.pss_dips,
        c.samples.len()
    );
    println!(
        "  restarts done by herd (sum of `restarts` in `herd ps --json` at the end): {}",
        c.restarts_sum
    );
    println!("  {}", ops_line("herd restart", &c.cli_restarts));
    println!("  {}", ops_line("herd scale", &c.cli_scales));
    println!(
        "  daemon CPU over the churn: {} ({} ticks); at the end `herd ps` shows {}; `scaled` has {} instances (asked for {})",
        cpu_cell(&c.cpu),
        c.cpu.ticks,
        c.end_status,
        c.scaled_end.0,
        c.scaled_end.1
    );
    println!("  (random seed {})\n", c.seed);
}

fn ops_line(what: &str, ops: &Ops) -> String {
    let timing = ops.summary().map_or(String::new(), |s| {
        format!(
            "; each took median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            s.median, s.p95, s.max
        )
    });
    let error = ops
        .first_error
        .as_ref()
        .map_or(String::new(), |e| format!("; first error: {e}"));
    format!(
        "`{what}`: {} ok, {} failed{timing}{error}",
        ops.ok, ops.failed
    )
}

fn rss_first_last_max(c: &ChurnResult) -> (u64, u64, u64) {
    first_last_max(c, |m| m.rss_kib)
}

fn first_last_max(c: &ChurnResult, value: impl Fn(&Memory) -> u64) -> (u64, u64, u64) {
    let at = |i: usize| c.samples.get(i).map_or(0, |s| value(&s.1));
    let max = c.samples.iter().map(|s| value(&s.1)).max().unwrap_or(0);
    (at(0), at(c.samples.len().saturating_sub(1)), max)
}

fn cpu_cell(c: &Cpu) -> String {
    format!("{:.3} %", c.percent())
}

/// How CPU was measured, with what one tick is worth.
fn cpu_method(c: &Cpu) -> String {
    format!(
        "CPU = utime + stime of the supervisor's processes, added up (/proc/PID/stat fields 14 + 15, exited threads \
         included, children not), in % of one core; {} ticks/s, so one tick over {:.1} s is {:.4} % \
         of one core",
        c.ticks_per_s,
        c.secs,
        c.resolution_percent()
    )
}

/// The idle comparison as the README shows it: one column per supervisor, one row per
/// measure, then how each was measured.
fn compare_markdown(herd: &IdleResult, others: &[Compared], nproc: usize) -> String {
    let measured = with_compared(herd, others);
    let skipped: Vec<(&str, &str)> = others
        .iter()
        .filter_map(|c| match c {
            Compared::Skipped { tool, reason } => Some((tool.as_str(), reason.as_str())),
            Compared::Measured(_) => None,
        })
        .collect();
    let mut md = format!("| {} × `sleep 100000` |", idle::APPS);
    for m in &measured {
        md += &format!(" {} |", m.label);
    }
    for (tool, _) in &skipped {
        md += &format!(" {tool} |");
    }
    md += &format!("\n|---|{}\n", "---|".repeat(measured.len() + skipped.len()));
    let row = |name: &str, cell: &dyn Fn(&IdleResult) -> String| {
        let mut line = format!("| {name} |");
        for m in &measured {
            line += &format!(" {} |", cell(m));
        }
        for _ in &skipped {
            line += " skipped |";
        }
        line + "\n"
    };
    md += &row("start → status reports all running", &|m| {
        let mark = if m.label.starts_with("supervisord") {
            " ¹"
        } else {
            ""
        };
        format!("{:.2} s{mark}", m.all_running.as_secs_f64())
    });
    md += &row("supervisor RSS, start → end of idle", &|m| {
        format!("{} → {}", mib(m.start.rss_kib), mib(m.end.rss_kib))
    });
    md += &row("supervisor PSS, start → end of idle", &|m| {
        format!("{} → {}", mib(m.start.pss_kib), mib(m.end.pss_kib))
    });
    md += &row("processes counted", &|m| m.processes.to_string());
    md += &row(
        "restart: SIGKILL → new child runs `sleep`, median / p95",
        &|m| {
            format!(
                "{} / {} ms",
                ms_cell(m.restart.median),
                ms_cell(m.restart.p95)
            )
        },
    );
    md += &row("status CLI round trip, median / p95", &|m| {
        format!(
            "{} / {} ms",
            ms_cell(m.status.median),
            ms_cell(m.status.p95)
        )
    });
    md += &row(&format!("idle CPU over {:.0} s", herd.cpu.secs), &|m| {
        format!("{:.3} % ({} ticks)", m.cpu.percent(), m.cpu.ticks)
    });
    md += &format!(
        "\nThe supervisor is every process that supervises: the daemon for herd, PM2 (its God \
         Daemon) and supervisord; `s6-svscan` plus one `s6-supervise` per service for s6, and \
         `runsvdir` plus one `runsv` per service for runit, their CPU and memory added up (RSS \
         so counts their shared pages once per process; PSS shares them out). {}. Start: the \
         tool's start command, then its status command polled until all {} are running. \
         Restart: SIGKILL to an app's process (a different app each time, {} kills) until a new \
         child of its parent runs `sleep`. Status: {} whole runs of the status command, spawn \
         to exit. {ANON_NOTE}. {nproc} CPUs.\n\n",
        cpu_method(&herd.cpu),
        idle::APPS,
        herd.restart.runs,
        herd.status.runs,
    );
    for m in &measured {
        md += &format!(
            "- {}: status = {}; load average {} before, {} after.\n",
            m.label, m.status_command, m.loadavg[0], m.loadavg[1]
        );
        for note in &m.notes {
            md += &format!("  - {note}\n");
        }
    }
    for (tool, reason) in &skipped {
        md += &format!("- {tool}: skipped: {}\n", one_line(reason));
    }
    if measured.iter().any(|m| m.label.starts_with("supervisord")) {
        md += "\n¹ supervisord reports RUNNING only after `startsecs` (default 1 s) of uptime, \
               and `supervisorctl start all` waits for it (the restart row does not wait: it \
               ends when the new process appears).\n";
    }
    md
}

/// A time in ms: one decimal under 100 ms, whole ms above, with thousands separated.
fn ms_cell(v: f64) -> String {
    if v < 100.0 {
        return format!("{v:.1}");
    }
    let whole = format!("{v:.0}");
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The tables the README pastes: the idle comparison and the churn result, in markdown.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    if let Some(herd) = &r.idle {
        md += &compare_markdown(herd, &r.compare, r.env.nproc);
    }
    if let Some(c) = &r.churn {
        if !md.is_empty() {
            md += "\n";
        }
        let (first, last, max) = rss_first_last_max(c);
        md += &format!("| herd daemon under churn, {} s | |\n|---|---|\n", c.secs);
        md += &format!(
            "| Apps | {} ({} crash-looping, 1 scaled to 1-5 instances every s, a random one `herd restart`ed every s) |\n",
            churn::APPS,
            churn::CRASHERS
        );
        md += &format!(
            "| RSS first / last / max | {} / {} / {} |\n",
            mib(first),
            mib(last),
            mib(max)
        );
        let (a_first, a_last, a_max) = first_last_max(c, |m| m.anon_kib);
        md += &format!(
            "| Anon RSS first / last / max | {} / {} / {} |\n",
            mib(a_first),
            mib(a_last),
            mib(a_max)
        );
        if let (Some(a), Some(z)) = (c.samples.first(), c.samples.last()) {
            md += &format!(
                "| Threads, open fds: first → last | {} → {}, {} → {} |\n",
                a.1.threads, z.1.threads, a.1.open_fds, z.1.open_fds
            );
        }
        md += &format!(
            "| RSS slope (least squares, {} samples) | {:+.0} KiB/h |\n",
            c.samples.len(),
            c.rss_slope_kib_per_h
        );
        md += &format!(
            "| RSS slope over the second half | {:+.0} KiB/h |\n",
            c.rss_slope_second_half_kib_per_h
        );
        md += &format!(
            "| Anon RSS slope, whole / second half | {:+.0} / {:+.0} KiB/h |\n",
            c.anon_slope_kib_per_h, c.anon_slope_second_half_kib_per_h
        );
        md += &format!(
            "| Restarts done | {} crash restarts, {} `herd restart`, {} `herd scale` |\n",
            c.restarts_sum, c.cli_restarts.ok, c.cli_scales.ok
        );
        md += &format!(
            "| Failed commands | {} |\n",
            c.cli_restarts.failed + c.cli_scales.failed
        );
        md += &format!(
            "| Daemon CPU | {} ({} ticks) |\n",
            cpu_cell(&c.cpu),
            c.cpu.ticks
        );
    }
    md
}

/// A skip reason in one table cell: what failed, and its first line that says "error"
/// (installers print warnings first), at most 160 characters.
fn one_line(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or("");
    let (head, rest) = match first.find(" failed (").and_then(|i| {
        let close = i + first[i..].find(')')?;
        Some(close + 1)
    }) {
        Some(end) => (&first[..end], first[end..].trim_start_matches(':').trim()),
        None => (first, ""),
    };
    let detail = std::iter::once(rest)
        .chain(reason.lines().skip(1))
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .unwrap_or(rest);
    let line = if detail.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {}", detail.trim())
    };
    let line = line.replace('|', "/");
    if line.chars().count() > 160 {
        format!("{}...", line.chars().take(160).collect::<String>())
    } else {
        line
    }
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
    let e = &r.env;
    json!({
        "environment": { "nproc": e.nproc, "herd_version": e.herd_version, "herd_path": e.herd_path, "herd_built": e.herd_built, "kernel": e.kernel, "open_files_limit": e.open_files_limit },
        "apps": r.apps.iter().map(apps_json).collect::<Vec<_>>(),
        "supervisor_memory_note": MEMORY_NOTE,
        "restart_latency_ms": r.restart.as_ref().map(|x| json!({
            "summary": summary_json(&x.latency),
            "samples": x.samples_ms,
        })),
        "cli_round_trip_ms": r.ps.as_ref().map(|ps| json!({
            "apps": ps.apps,
            "ps": summary_json(&ps.table),
            "ps_json": summary_json(&ps.json),
            "version": summary_json(&ps.version),
        })),
        "idle": r.idle.as_ref().map(idle_json),
        "compare": r.compare.iter().map(|c| match c {
            Compared::Measured(m) => idle_json(m),
            Compared::Skipped { tool, reason } => json!({ "label": tool, "skipped": reason }),
        }).collect::<Vec<_>>(),
        "churn": r.churn.as_ref().map(churn_json),
        "markdown": markdown(r),
    })
}

fn idle_json(m: &IdleResult) -> Value {
    json!({
        "label": m.label,
        "apps": idle::APPS,
        "pid": m.pid,
        "process": m.process.trim(),
        "notes": m.notes,
        "start_cmd_s": m.start_cmd.as_secs_f64(),
        "start_to_all_running_s": m.all_running.as_secs_f64(),
        "status_polls": m.status_polls,
        "settle_s": idle::SETTLE.as_secs(),
        "cpu": cpu_json(&m.cpu),
        "memory_start": memory_json(&m.start),
        "memory_end": memory_json(&m.end),
        "restart_latency_ms": { "summary": summary_json(&m.restart), "samples": m.restart_samples_ms },
        "processes_counted": m.processes,
        "status_command": m.status_command,
        "status_round_trip_ms": { "summary": summary_json(&m.status), "samples": m.status_samples_ms },
        "other_processes_of_its_home": m.helpers,
        "loadavg_before_after": m.loadavg,
    })
}

fn cpu_json(c: &Cpu) -> Value {
    json!({
        "ticks": c.ticks,
        "ticks_per_s": c.ticks_per_s,
        "secs": c.secs,
        "percent_of_one_core": c.percent(),
        "one_tick_percent": c.resolution_percent(),
        "method": "utime + stime, /proc/PID/stat fields 14 + 15",
    })
}

fn churn_json(c: &ChurnResult) -> Value {
    let (first, last, max) = rss_first_last_max(c);
    let ops = |o: &Ops| {
        json!({
            "ok": o.ok,
            "failed": o.failed,
            "first_error": o.first_error,
            "took_ms": o.summary().map(|s| summary_json(&s)),
        })
    };
    json!({
        "secs": c.secs,
        "apps": churn::APPS,
        "crash_looping": churn::CRASHERS,
        "sample_every_s": churn::SAMPLE_EVERY,
        "rss_kib": { "first": first, "last": last, "max": max },
        "rss_slope_kib_per_h": c.rss_slope_kib_per_h,
        "rss_slope_second_half_kib_per_h": c.rss_slope_second_half_kib_per_h,
        "anon_rss_slope_kib_per_h": c.anon_slope_kib_per_h,
        "anon_rss_slope_second_half_kib_per_h": c.anon_slope_second_half_kib_per_h,
        "pss_samples_under_70_percent_of_median": c.pss_dips,
        "restarts_sum": c.restarts_sum,
        "herd_restart": ops(&c.cli_restarts),
        "herd_scale": ops(&c.cli_scales),
        "cpu": cpu_json(&c.cpu),
        "end_status": c.end_status,
        "scaled_instances_end": c.scaled_end.0,
        "scaled_instances_asked": c.scaled_end.1,
        "seed": c.seed,
        "samples": c.samples.iter().map(|(t, m)| {
            let mut v = memory_json(m);
            v["t_s"] = json!(t);
            v
        }).collect::<Vec<_>>(),
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
    json!({ "rss_kib": m.rss_kib, "pss_kib": m.pss_kib, "anon_rss_kib": m.anon_kib, "threads": m.threads, "open_fds": m.open_fds })
}

fn summary_json(s: &Summary) -> Value {
    json!({ "runs": s.runs, "median": s.median, "p95": s.p95, "min": s.min, "max": s.max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_cells_group_thousands() {
        assert_eq!(ms_cell(2.64), "2.6");
        assert_eq!(ms_cell(1006.4), "1,006");
        assert_eq!(ms_cell(127.0), "127");
        assert_eq!(ms_cell(1234567.0), "1,234,567");
    }

    #[test]
    fn skip_reasons_keep_the_error() {
        let npm = "`npm install pm2@latest` into /x failed (exit status: 1): npm warn Unknown \
                   user config\nnpm error code ECONNREFUSED\nnpm error syscall connect";
        assert_eq!(
            one_line(npm),
            "`npm install pm2@latest` into /x failed (exit status: 1): npm error code ECONNREFUSED"
        );
        assert_eq!(one_line("`npm` is not on PATH"), "`npm` is not on PATH");
        let pip = "`pip install` failed (exit status: 1): ERROR: no | such";
        assert_eq!(
            one_line(pip),
            "`pip install` failed (exit status: 1): ERROR: no / such"
        );
    }
}
