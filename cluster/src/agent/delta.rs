//! Heartbeat replies carry changes, not state: the instance list only when it changed since
//! the version the master acknowledged (a new master, or one that lost track, acknowledges 0
//! and gets everything), and the resources only on a meaningful change or every 60 s. At
//! 10,000 nodes every 2 s that is the difference between parsing every node's instance list
//! 5,000 times a second and parsing the few that changed.

use std::sync::Mutex;
use std::time::Duration;

use herd_proto::cluster as pb;
use tokio::time::Instant;

use super::report::Resources;

/// Resources are re-sent at least this often even when nothing changed much.
pub(crate) const RESOURCES_REFRESH: Duration = Duration::from_secs(60);

/// What this node last reported.
pub(crate) struct ReplyDelta {
    state: Mutex<Sent>,
}

impl Default for ReplyDelta {
    /// Versions start at a random point: a restarted node must not reuse a number the master
    /// still holds for the list it had before (the master would keep that stale list).
    fn default() -> ReplyDelta {
        ReplyDelta {
            state: Mutex::new(Sent {
                version: rand::random_range(1..1u64 << 40) << 12,
                ..Sent::default()
            }),
        }
    }
}

#[derive(Default)]
struct Sent {
    version: u64,
    instances: Vec<pb::InstanceStatus>,
    resources: Option<(Option<Resources>, String)>,
    resources_at: Option<Instant>,
}

/// The reply fields for one heartbeat.
#[derive(Debug, PartialEq)]
pub(crate) struct Shaped {
    pub report_version: u64,
    pub report_unchanged: bool,
    pub instances: Vec<pb::InstanceStatus>,
    /// Empty: unchanged.
    pub resources_json: String,
}

impl ReplyDelta {
    /// Shapes a reply from the node's state now and the master's acknowledged version.
    pub(crate) fn shape(
        &self,
        instances: Vec<pb::InstanceStatus>,
        resources: Option<Resources>,
        resources_json: String,
        report_ack: u64,
        now: Instant,
    ) -> Shaped {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.resources_at.is_none() || s.instances != instances {
            s.version += 1;
            s.instances = instances.clone();
        }
        let full = report_ack == 0 || report_ack != s.version;
        let resend = full
            || s.resources_at
                .is_none_or(|at| now.duration_since(at) >= RESOURCES_REFRESH)
            || s.resources.as_ref().is_none_or(|(last, json)| {
                *json != resources_json && meaningful(last.as_ref(), resources.as_ref())
            });
        let resources_json = if resend {
            s.resources_at = Some(now);
            s.resources = Some((resources, resources_json.clone()));
            resources_json
        } else {
            String::new()
        };
        Shaped {
            report_version: s.version,
            report_unchanged: !full,
            instances: if full { instances } else { Vec::new() },
            resources_json,
        }
    }
}

/// A change placement would care about: a different shape (none → some, other CPU count or
/// memory size), CPU use moved by 10 points, the load by 0.5 and a fifth, or used memory by
/// 5 % of the total.
fn meaningful(last: Option<&Resources>, now: Option<&Resources>) -> bool {
    let (Some(a), Some(b)) = (last, now) else {
        return last.is_some() != now.is_some();
    };
    if a.cpus != b.cpus || a.mem_total_bytes != b.mem_total_bytes {
        return true;
    }
    let load_moved = (a.load1 - b.load1).abs();
    let mem_moved = a.mem_used_bytes.abs_diff(b.mem_used_bytes) as f64;
    (a.cpu_percent - b.cpu_percent).abs() >= 10.0
        || (load_moved >= 0.5 && load_moved >= 0.2 * a.load1.max(b.load1))
        || mem_moved >= 0.05 * b.mem_total_bytes as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(app: &str, status: &str) -> pb::InstanceStatus {
        pb::InstanceStatus {
            app: app.into(),
            instance: 0,
            status: status.into(),
            pid: Some(7),
            restarts: 0,
            generation: 0,
        }
    }

    fn res(cpu: f64, used: u64) -> Resources {
        Resources {
            cpu_percent: cpu,
            cpus: 4,
            load1: 1.0,
            mem_total_bytes: 1000,
            mem_used_bytes: used,
        }
    }

    fn json(r: &Resources) -> String {
        serde_json::to_string(r).unwrap()
    }

    #[test]
    fn the_list_is_left_out_only_while_the_master_holds_this_version() {
        let d = ReplyDelta::default();
        let t0 = crate::clock::now();
        let r = res(10.0, 100);
        let first = d.shape(vec![inst("a", "running")], Some(r.clone()), json(&r), 0, t0);
        let v1 = first.report_version;
        assert_ne!(v1, 0);
        assert!(!first.report_unchanged);
        assert_eq!(first.instances.len(), 1);
        assert_eq!(first.resources_json, json(&r));

        // The master holds the first version and nothing changed: left out, resources too.
        let same = d.shape(
            vec![inst("a", "running")],
            Some(r.clone()),
            json(&r),
            v1,
            t0,
        );
        assert!(same.report_unchanged);
        assert!(same.instances.is_empty());
        assert_eq!(same.resources_json, "");

        // A new master (acknowledges 0) gets everything, without a new version.
        let fresh = d.shape(vec![inst("a", "running")], Some(r.clone()), json(&r), 0, t0);
        assert_eq!(fresh.report_version, v1);
        assert!(!fresh.report_unchanged);
        assert_eq!(fresh.instances.len(), 1);
        assert_eq!(fresh.resources_json, json(&r));

        // A change: a new version, sent whole although the master acknowledged the old one.
        let changed = d.shape(
            vec![inst("a", "backoff")],
            Some(r.clone()),
            json(&r),
            v1,
            t0,
        );
        assert_eq!(changed.report_version, v1 + 1);
        assert!(!changed.report_unchanged);
        assert_eq!(changed.instances[0].status, "backoff");

        // An acknowledgement of something else than the current version: everything.
        let mismatch = d.shape(
            vec![inst("a", "backoff")],
            Some(r.clone()),
            json(&r),
            v1 + 7,
            t0,
        );
        assert!(!mismatch.report_unchanged);
        assert_eq!(mismatch.instances.len(), 1);
    }

    #[test]
    fn a_restarted_node_does_not_reuse_the_versions_of_the_one_before() {
        let t0 = crate::clock::now();
        let a = d_first(&ReplyDelta::default(), t0);
        let b = d_first(&ReplyDelta::default(), t0);
        assert_ne!(a, b, "two runs of a node number their reports apart");
    }

    fn d_first(d: &ReplyDelta, t0: Instant) -> u64 {
        d.shape(vec![inst("a", "running")], None, "{}".into(), 0, t0)
            .report_version
    }

    #[test]
    fn resources_go_out_on_a_meaningful_change_or_every_minute() {
        let d = ReplyDelta::default();
        let t0 = crate::clock::now();
        let list = || vec![inst("a", "running")];
        let r = res(10.0, 100);
        let v = d
            .shape(list(), Some(r.clone()), json(&r), 0, t0)
            .report_version;
        let small = res(14.0, 120);
        let out = d.shape(list(), Some(small.clone()), json(&small), v, t0);
        assert_eq!(
            out.resources_json, "",
            "4 CPU points and 2 % of memory: not worth it"
        );
        let big = res(25.0, 120);
        let out = d.shape(list(), Some(big.clone()), json(&big), v, t0);
        assert_eq!(out.resources_json, json(&big), "15 CPU points");
        let mem = res(25.0, 200);
        let out = d.shape(list(), Some(mem.clone()), json(&mem), v, t0);
        assert_eq!(out.resources_json, json(&mem), "10 % of memory");
        let later = d.shape(
            list(),
            Some(mem.clone()),
            json(&mem),
            v,
            t0 + RESOURCES_REFRESH,
        );
        assert_eq!(
            later.resources_json,
            json(&mem),
            "a minute later, unchanged or not"
        );
        let none = d.shape(list(), None, "{}".into(), v, t0 + RESOURCES_REFRESH);
        assert_eq!(none.resources_json, "{}", "gone is a change");
    }
}
