//! Reads what the daemons logged about the master (started with `HERD_LOG_FORMAT=json`, so
//! `daemon.log` is one JSON object per line): heartbeats an agent accepted or refused, and
//! when a node started and stopped acting as master. These lines only exist once the master
//! duties do; until then the history simply has none.

use std::path::Path;

use serde_json::Value;

use crate::history::HeartbeatAcceptance;
use crate::history::History;
use crate::history::MasterDuty;
use crate::history::NodeIndex;

/// Log messages this module understands (herd's `cluster/src/agent` and `master`).
const ACCEPTED: &str = "master heartbeat: connected";
const REFUSED: &str = "refused heartbeat from a stale master";
const DUTIES_START: &str = "master duties start";
const DUTIES_STOP: &str = "master duties stop";

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-22T01:20:53.102900Z` → Unix milliseconds (UTC only, as tracing writes it).
pub fn parse_timestamp(ts: &str) -> Option<u64> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3_600 + mi * 60 + s;
    u64::try_from(secs * 1_000 + ms).ok()
}

/// One log line's message and fields, whether or not the fields were flattened.
fn message_and_fields(v: &Value) -> Option<(&str, &Value)> {
    let fields = if v["fields"].is_object() {
        &v["fields"]
    } else {
        v
    };
    Some((fields["message"].as_str()?, fields))
}

/// Adds the master-related lines of `node`'s daemon log to `h`.
pub fn read_into(h: &mut History, node: NodeIndex, log: &Path) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some((msg, f)) = message_and_fields(&v) else {
            continue;
        };
        if ![ACCEPTED, REFUSED, DUTIES_START, DUTIES_STOP].contains(&msg) {
            continue;
        }
        let Some(unix) = v["timestamp"].as_str().and_then(parse_timestamp) else {
            continue;
        };
        let Some(t_ms) = unix.checked_sub(h.started_unix_ms) else {
            continue;
        };
        let term = f["term"].as_u64().unwrap_or(0);
        match msg {
            ACCEPTED | REFUSED => {
                let incarnation = h.incarnation_at(node, t_ms);
                h.heartbeats.push(HeartbeatAcceptance {
                    t_ms,
                    node,
                    incarnation,
                    term,
                    master_id: f["master_id"].as_u64().unwrap_or(0),
                    accepted: msg == ACCEPTED,
                });
            }
            _ => h.master_duties.push(MasterDuty {
                t_ms,
                node,
                node_id: f["node_id"].as_u64().unwrap_or(0),
                term,
                started: msg == DUTIES_START,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_milliseconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            parse_timestamp("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(
            parse_timestamp("2026-11-22T01:20:53.102900Z"),
            Some(1_795_310_453_102)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn heartbeat_and_master_lines_become_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("daemon.log");
        std::fs::write(
            &log,
            [
                r#"{"timestamp":"1970-01-01T00:00:02.000Z","level":"INFO","fields":{"message":"master heartbeat: connected","master_id":7,"term":3},"target":"herd_cluster::agent::fence"}"#,
                r#"{"timestamp":"1970-01-01T00:00:03.000Z","level":"WARN","fields":{"message":"refused heartbeat from a stale master","master_id":5,"term":2,"highest":3},"target":"x"}"#,
                r#"{"timestamp":"1970-01-01T00:00:04.000Z","level":"INFO","fields":{"message":"master duties start","node_id":9,"term":4},"target":"x"}"#,
                r#"{"timestamp":"1970-01-01T00:00:05.000Z","level":"INFO","fields":{"message":"something else"},"target":"x"}"#,
                "not json",
            ]
            .join("\n"),
        )
        .expect("write log");
        let mut h = History {
            started_unix_ms: 1_000,
            ..History::default()
        };
        read_into(&mut h, 2, &log);
        assert_eq!(h.heartbeats.len(), 2);
        assert_eq!(h.heartbeats[0].t_ms, 1_000);
        assert_eq!((h.heartbeats[0].term, h.heartbeats[0].master_id), (3, 7));
        assert!(h.heartbeats[0].accepted && !h.heartbeats[1].accepted);
        assert_eq!(h.master_duties.len(), 1);
        assert_eq!(
            (h.master_duties[0].node_id, h.master_duties[0].term),
            (9, 4)
        );
    }
}
