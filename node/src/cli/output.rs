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
    })
}

pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
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
        println!("{}", s.trim_end());
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
        println!("no apps; `herd start FILE` registers some");
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
                i.restarts.to_string(),
                i.uptime_s.map(duration_text).unwrap_or_else(|| "-".into()),
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
            "RESTARTS",
            "UPTIME",
            "LAST EXIT",
        ],
        &rows,
    );
}
