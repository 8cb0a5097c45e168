//! `herd cluster uptime`: per-node, per-day uptime from the registry's day buckets, drawn as a
//! row of coloured cells (green ≥ 99.9 %, amber ≥ 95 %, red below, grey without samples),
//! newest day on the right, like a status page.

use super::colour::{Colour, paint};
use crate::cluster::replies::Uptime;
use herd_cluster::registry::NodeStatus;
use serde_json::{Value, json};

/// A node's status as the registry spells it (`online`, `draining`, ...).
fn node_status(status: NodeStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

pub struct Report {
    days: u32,
    first_day: u64,
    nodes: Vec<NodeUptime>,
}

struct NodeUptime {
    id: u64,
    addr: String,
    status: String,
    /// Oldest first; `None` for a day without samples.
    days: Vec<Option<(u64, u64)>>,
}

impl NodeUptime {
    fn percent(up: u64, total: u64) -> f64 {
        if total == 0 {
            0.0
        } else {
            up as f64 * 100.0 / total as f64
        }
    }

    fn overall(&self) -> Option<f64> {
        let (up, total) = self
            .days
            .iter()
            .flatten()
            .fold((0, 0), |(u, t), (a, b)| (u + a, t + b));
        (total > 0).then(|| Self::percent(up, total))
    }
}

impl Report {
    /// From the daemon's `Uptime` answer, for the node `only` (an id or address) or all.
    pub fn of(v: &Uptime, only: Option<&str>, days: u32, now_ms: u64) -> Self {
        let day_ms = v.day_ms.max(1);
        let days = days.clamp(1, 366);
        let today = now_ms / day_ms;
        let first_day = today + 1 - u64::from(days);
        let nodes = v
            .nodes
            .iter()
            .filter(|n| {
                only.is_none_or(|o| o.parse::<u64>().ok() == Some(n.id.get()) || n.addr == o)
            })
            .map(|n| NodeUptime {
                id: n.id.get(),
                addr: n.addr.clone(),
                status: node_status(n.status),
                days: (first_day..=today)
                    .map(|d| {
                        let b = n.days.get(&d)?;
                        (b.total_samples > 0).then_some((b.up_samples, b.total_samples))
                    })
                    .collect(),
            })
            .collect();
        Self {
            days,
            first_day,
            nodes,
        }
    }

    pub fn to_json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                let days: Vec<Value> = n
                    .days
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        json!({
                            "day": self.first_day + i as u64,
                            "up_samples": d.map(|x| x.0),
                            "total_samples": d.map(|x| x.1),
                            "uptime_percent": d.map(|(u, t)| NodeUptime::percent(u, t)),
                        })
                    })
                    .collect();
                json!({ "id": n.id, "addr": n.addr, "status": n.status, "uptime_percent": n.overall(), "days": days })
            })
            .collect();
        json!({ "days": self.days, "nodes": nodes })
    }

    /// The table; `colour` is `colour::enabled()` but a parameter, so tests see both forms.
    pub fn render(&self, colour: bool) -> String {
        let mut out = String::new();
        if self.nodes.is_empty() {
            return "no nodes recorded yet (the master records them)\n".into();
        }
        for n in &self.nodes {
            let bar: String = n.days.iter().map(|d| cell(*d, colour)).collect();
            let overall = n
                .overall()
                .map(|p| format!("{p:.2}%"))
                .unwrap_or_else(|| "no data".into());
            out.push_str(&format!(
                "{:<20} {:<21} {:<8} {bar} {overall}\n",
                n.id, n.addr, n.status
            ));
        }
        out.push_str(&format!(
            "last {} days, oldest on the left; █ ≥99.9%  ▆ ≥95%  ▂ <95%  · no samples\n",
            self.days
        ));
        out
    }
}

fn cell(day: Option<(u64, u64)>, colour: bool) -> String {
    let Some((up, total)) = day else {
        return paint(colour, Colour::Grey, "·");
    };
    let p = NodeUptime::percent(up, total);
    let (glyph, c) = if p >= 99.9 {
        ("█", Colour::Green)
    } else if p >= 95.0 {
        ("▆", Colour::Amber)
    } else {
        ("▂", Colour::Red)
    };
    paint(colour, c, glyph)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_cells_and_percentages() {
        let day = 86_400_000u64;
        let today = 20_000u64;
        let v: Uptime = serde_json::from_value(json!({
            "day_ms": day,
            "nodes": [{
                "id": 7, "addr": "10.0.0.1:9701", "status": "online",
                "days": {
                    (today - 2).to_string(): { "up_samples": 1440, "total_samples": 1440, "last_sample_ms": 0 },
                    today.to_string(): { "up_samples": 1300, "total_samples": 1440, "last_sample_ms": 0 }
                }
            }]
        }))
        .unwrap();
        let r = Report::of(&v, None, 3, today * day + 5);
        assert_eq!(
            r.render(false)
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .nth(3),
            Some("█·▂")
        );
        let j = r.to_json();
        assert_eq!(j["nodes"][0]["days"][1]["uptime_percent"], Value::Null);
        let overall = j["nodes"][0]["uptime_percent"].as_f64().unwrap();
        assert!((overall - 95.138).abs() < 0.01, "{overall}");
        assert!(Report::of(&v, Some("8"), 3, today * day).nodes.is_empty());
    }

    #[test]
    fn cells_carry_escapes_only_when_colour_is_on() {
        let v: Uptime = serde_json::from_value(json!({
            "day_ms": 1000,
            "nodes": [{ "id": 1, "addr": "a", "status": "online",
                        "days": { "5": { "up_samples": 1, "total_samples": 1, "last_sample_ms": 0 } } }]
        }))
        .unwrap();
        let r = Report::of(&v, None, 2, 5_500);
        let on = r.render(true);
        assert!(on.contains("\x1b[32m█\x1b[0m"), "{on:?}");
        assert!(on.contains("\x1b[90m·\x1b[0m"), "{on:?}");
        assert!(!r.render(false).contains('\x1b'));
    }
}
