//! How the CLI prints: aligned tables for people, `--json` for scripts. JSON field names are
//! a contract (scripts rely on them): extend, never rename.

use herd_proto::supervisor as pb;
use serde::Serialize;
use serde_json::{Value, json};

pub fn exit_json(e: &pb::ExitInfo) -> Value {
    json!({ "code": e.code, "signal": e.signal, "at_unix_ms": e.at_unix_ms, "reason": e.reason })
}

pub fn instance_json(i: &pb::InstanceInfo) -> Value {
    json!({
        "name": i.name,
        "instance": i.instance,
        "pid": i.pid,
        "status": i.status,
        "restarts": i.restarts,
        "uptime_s": i.uptime_s,
        "last_exit": i.last_exit.as_ref().map(exit_json),
        "next_start_in_ms": i.next_start_in_ms,
        "health": i.health,
        "cpu_percent": i.cpu_percent,
        "rss_bytes": i.rss_bytes,
        "retiring_pid": i.retiring_pid,
        "status_text": i.status_text,
        "main_pid": i.main_pid,
        "watching": i.watching,
    })
}

pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("herd: cannot encode JSON: {e}"),
    }
}

pub fn exit_text(e: &pb::ExitInfo) -> String {
    match (&e.code, &e.signal) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => s.clone(),
        (None, None) => e.reason.clone(),
    }
}

/// `herd inspect`'s identity lines, from the daemon's `identity_json` (nothing when an older
/// daemon sent none):
/// `runs as user nobody (uid 65534), group nogroup (gid 65534), groups 65534, umask 027`
/// `limits nofile 4096, core 0 (app); nproc 63704, ... (inherited)`.
pub fn identity_lines(v: &Value) -> Vec<String> {
    if !v.is_object() {
        return Vec::new();
    }
    let text = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut lines = Vec::new();
    if let Some(err) = v["error"].as_str() {
        lines.push(format!("runs as: cannot resolve now: {err}"));
    } else {
        let groups: Vec<String> = v["groups"]
            .as_array()
            .map(|g| g.iter().map(Value::to_string).collect())
            .unwrap_or_default();
        let from = if v["from_app"] == true {
            ""
        } else {
            " (the daemon's)"
        };
        lines.push(format!(
            "runs as user {} (uid {}), group {} (gid {}), groups {}{from}",
            text("user"),
            text("uid"),
            text("group"),
            text("gid"),
            if groups.is_empty() {
                "-".into()
            } else {
                groups.join(",")
            },
        ));
    }
    lines.push(format!("umask {}", text("umask")));
    if let Some(limits) = v["limits"].as_object() {
        let mut set = Vec::new();
        let mut inherited = Vec::new();
        for (key, l) in limits {
            let value = |b: &Value| match b {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let (soft, hard) = (value(&l["soft"]), value(&l["hard"]));
            let shown = if soft == hard {
                format!("{key} {soft}")
            } else {
                format!("{key} {soft}/{hard}")
            };
            if l["from_app"] == true {
                set.push(shown);
            } else {
                inherited.push(shown);
            }
        }
        let mut line = String::from("limits (soft/hard)");
        if !set.is_empty() {
            line.push_str(&format!(" set: {}", set.join(", ")));
        }
        if !inherited.is_empty() {
            line.push_str(&format!(
                "{}inherited: {}",
                if set.is_empty() { " " } else { "; " },
                inherited.join(", ")
            ));
        }
        lines.push(line);
    }
    if let Some(cg) = v["cgroup"].as_object() {
        let mut line = format!("cgroup mode: {}", cg["mode"].as_str().unwrap_or("-"));
        let set: Vec<String> = ["memory_max_mb", "cpu_max_percent", "pids_max"]
            .iter()
            .filter_map(|k| Some(format!("{k} {}", cg.get(*k)?.as_u64()?)))
            .collect();
        if !set.is_empty() {
            line.push_str(&format!("; kernel limits: {}", set.join(", ")));
        }
        lines.push(line);
        for i in cg["instances"].as_array().into_iter().flatten() {
            if let Some(first) = i["paths"].as_array().and_then(|p| p.first()) {
                lines.push(format!(
                    "cgroup of instance {}: {}",
                    i["index"],
                    first.as_str().unwrap_or("-")
                ));
            }
        }
    }
    lines
}

pub fn duration_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn print_instances(instances: &[pb::InstanceInfo], json: bool) {
    if json {
        print_json(&instances.iter().map(instance_json).collect::<Vec<_>>());
        return;
    }
    if instances.is_empty() {
        outln!("no apps; `herd start FILE` registers some");
        return;
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let status = match i.next_start_in_ms {
                Some(ms) if i.status == "backoff" => {
                    format!("backoff ({:.1}s)", ms as f64 / 1000.0)
                }
                _ => i.status.clone(),
            };
            vec![
                i.name.clone(),
                i.instance.to_string(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                status,
                if i.health == "unknown" {
                    "-".into()
                } else {
                    i.health.clone()
                },
                i.restarts.to_string(),
                i.uptime_s.map(duration_text).unwrap_or_else(|| "-".into()),
                i.cpu_percent
                    .map(|c| format!("{c:.1}%"))
                    .unwrap_or_else(|| "-".into()),
                i.rss_bytes.map(bytes_text).unwrap_or_else(|| "-".into()),
                i.last_exit
                    .as_ref()
                    .map(exit_text)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "INST",
            "PID",
            "STATUS",
            "HEALTH",
            "RESTARTS",
            "UPTIME",
            "CPU",
            "MEM",
            "LAST EXIT",
        ],
        &rows,
    );
}

pub fn bytes_text(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    match b {
        b if b < 1024 * 1024 => format!("{:.0}K", b as f64 / 1024.0),
        b if b < 1024 * 1024 * 1024 => format!("{:.1}M", b as f64 / MIB),
        b => format!("{:.2}G", b as f64 / MIB / 1024.0),
    }
}

pub fn print_health(instances: &[pb::InstanceInfo], json: bool) {
    if json {
        let rows: Vec<Value> = instances
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "instance": i.instance,
                    "pid": i.pid,
                    "status": i.status,
                    "health": i.health,
                    "probe_failures": i.probe_failures,
                    "last_probe_error": i.last_probe_error,
                })
            })
            .collect();
        print_json(&rows);
        return;
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.instance.to_string(),
                i.status.clone(),
                i.health.clone(),
                i.probe_failures.to_string(),
                i.last_probe_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["NAME", "INST", "STATUS", "HEALTH", "FAILURES", "LAST ERROR"],
        &rows,
    );
}

pub fn print_metrics(m: &pb::MetricsReply, json: bool) {
    if json {
        let instances: Vec<Value> = m
            .instances
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "instance": i.instance,
                    "pid": i.pid,
                    "cpu_percent": i.cpu_percent,
                    "rss_bytes": i.rss_bytes,
                    "processes": i.processes,
                })
            })
            .collect();
        let host = m.host.as_ref().map(|h| {
            json!({
                "cpu_percent": h.cpu_percent,
                "cpus": h.cpus,
                "mem_total_bytes": h.mem_total_bytes,
                "mem_used_bytes": h.mem_used_bytes,
                "load": h.load,
                "at_unix_ms": h.at_unix_ms,
            })
        });
        print_json(&json!({
            "host": host,
            "daemon": { "rss_bytes": m.daemon_rss_bytes, "cpu_percent": m.daemon_cpu_percent },
            "instances": instances,
        }));
        return;
    }
    match &m.host {
        Some(h) => outln!(
            "host: cpu {:.1}% of {} cpus, memory {} / {}, load {}; daemon: cpu {:.2}%, rss {}",
            h.cpu_percent,
            h.cpus,
            bytes_text(h.mem_used_bytes),
            bytes_text(h.mem_total_bytes),
            h.load
                .iter()
                .map(|l| format!("{l:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            m.daemon_cpu_percent,
            bytes_text(m.daemon_rss_bytes)
        ),
        None => outln!("host: no sample yet (the first comes one metrics interval after start)"),
    }
    let rows: Vec<Vec<String>> = m
        .instances
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.instance.to_string(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                i.cpu_percent
                    .map(|c| format!("{c:.1}%"))
                    .unwrap_or_else(|| "-".into()),
                i.rss_bytes.map(bytes_text).unwrap_or_else(|| "-".into()),
                i.processes
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["NAME", "INST", "PID", "CPU", "MEM", "PROCS"], &rows);
}

/// One event as a line for people: time, app/instance, pid, what, and its fields.
pub fn event_text(line: &str) -> String {
    let Ok(Value::Object(mut e)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let ts = e.remove("ts_ms").and_then(|v| v.as_u64()).unwrap_or(0);
    let app = e
        .remove("app")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let what = e
        .remove("event")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let inst = e
        .remove("instance")
        .and_then(|v| v.as_u64())
        .map(|i| format!("/{i}"))
        .unwrap_or_default();
    let pid = e
        .remove("pid")
        .and_then(|v| v.as_u64())
        .map(|p| format!(" pid {p}"))
        .unwrap_or_default();
    e.remove("seq");
    let fields: Vec<String> = e
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{} {app}{inst}{pid} {what} {}",
        super::commands::format_time(ts),
        fields.join(" ")
    )
    .trim_end()
    .to_string()
}

/// Writes to stdout; a reader that went away (broken pipe) ends the process quietly.
pub fn write_out(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("herd: cannot write the output: {e}");
    }
}

/// The JSON document of a `JsonReply` (the Access, Jobs and Hooks services answer with one).
pub fn reply_json(r: tonic::Response<pb::JsonReply>) -> anyhow::Result<Value> {
    use anyhow::Context;
    serde_json::from_str(&r.into_inner().json).context("the daemon sent JSON that does not parse")
}

/// A JSON value as a table cell: `-` for null, a string bare, anything else as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
