//! Mass failure must not become a rescheduling storm. Health stays the truth (a silent node is
//! marked offline whatever happens here); only *rescheduling* the instances of offline nodes is
//! gated, by a pure policy over the registry's node statuses, re-decided every pass:
//!
//! - **Normal**: at most a third of all nodes, and of every spread zone, is offline: everything
//!   is rescheduled at once, as before.
//! - **Throttled**: more than a third of all nodes, or of one spread zone (with at least three
//!   offline there), is offline: instances leave offline nodes at a bounded rate, one instance
//!   per ten online nodes per second (at least one), so each survivor takes on average one
//!   rescheduled instance per ten seconds, however large the failure. A rate that grows with the
//!   survivors keeps a single failure in a big cluster fast and a mass failure gentle.
//! - **Frozen**: more than half of all nodes is offline. The master assumes it is the one cut
//!   off (a partition around it looks exactly like everyone else dying) and reschedules
//!   nothing. It thaws when a sweep finds half or fewer offline again: nodes answer this master
//!   again (they were never gone), or an operator removed the dead ones (`leave`, which makes
//!   them `Left` and no longer counted).
//!
//! This is Kubernetes' node lifecycle controller adapted: its `unhealthyZoneThreshold` is 0.55
//! with more than two unhealthy nodes (partial disruption: the secondary eviction rate, 0.01
//! node/s instead of 0.1), and a full disruption of every zone stops evictions altogether
//! because the controller then assumes its own connectivity failed. herd reschedules instances,
//! not nodes, and throttles earlier (a third): starting processes on the survivors is what
//! hurts, and a partition healing within the throttled window saves the remaining moves.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use crate::registry::NodeStatus;
use crate::registry::Registry;

/// How instances of offline nodes are rescheduled now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RescheduleMode {
    /// Everything at once.
    #[default]
    Normal,
    /// At most `per_second` instances per second leave offline nodes.
    Throttled { per_second: u32 },
    /// Nothing leaves an offline node: more than half of all nodes is silent.
    Frozen,
}

/// Offline and total (not `Left`) nodes, in all and per spread zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StormView {
    pub total: usize,
    pub offline: usize,
    /// (spread label, value) → (offline, total) of the nodes carrying it.
    pub zones: BTreeMap<(String, String), (usize, usize)>,
}

/// A share above a third of the nodes (or of a zone) offline throttles.
const THROTTLE_NUM: usize = 1;
const THROTTLE_DEN: usize = 3;
/// A zone throttles only with at least this many offline (Kubernetes: more than two).
const ZONE_MIN_OFFLINE: usize = 3;
/// Each online node takes one rescheduled instance per this many seconds, on average.
const SECONDS_PER_SURVIVOR: usize = 10;

impl StormView {
    /// The view of `reg`: every node not `Left`, zones by the spread labels of its apps.
    pub fn of(reg: &Registry) -> StormView {
        let labels: BTreeSet<&String> = reg
            .apps
            .values()
            .filter_map(|a| a.placement.spread.as_ref())
            .collect();
        let mut v = StormView::default();
        for n in reg.nodes.values() {
            if n.status == NodeStatus::Left {
                continue;
            }
            let off = n.status == NodeStatus::Offline;
            v.total += 1;
            v.offline += usize::from(off);
            for &label in &labels {
                if let Some(value) = n.labels.get(label) {
                    let z = v.zones.entry((label.clone(), value.clone())).or_default();
                    z.0 += usize::from(off);
                    z.1 += 1;
                }
            }
        }
        v
    }

    /// The zone (label=value) whose share of offline nodes throttles, if any.
    pub fn throttling_zone(&self) -> Option<String> {
        self.zones
            .iter()
            .find(|&(_, &(off, total))| {
                off >= ZONE_MIN_OFFLINE && off * THROTTLE_DEN > total * THROTTLE_NUM
            })
            .map(|((l, v), _)| format!("{l}={v}"))
    }
}

/// The policy: see the module documentation.
pub fn decide(v: &StormView) -> RescheduleMode {
    if v.total == 0 || v.offline == 0 {
        return RescheduleMode::Normal;
    }
    if v.offline * 2 > v.total {
        return RescheduleMode::Frozen;
    }
    if v.offline * THROTTLE_DEN > v.total * THROTTLE_NUM || v.throttling_zone().is_some() {
        let online = v.total - v.offline;
        let per_second = (online / SECONDS_PER_SURVIVOR).max(1);
        return RescheduleMode::Throttled {
            per_second: u32::try_from(per_second).unwrap_or(u32::MAX),
        };
    }
    RescheduleMode::Normal
}

/// A token bucket on the tokio clock: how many instances may leave offline nodes this pass.
/// It holds one pass's worth (`per_second` × the pass interval, at least one), so no pass
/// reschedules more than that and the long-run rate is `per_second`.
#[derive(Debug)]
pub struct RescheduleBudget {
    pass: Duration,
    tokens: f64,
    last: Option<Instant>,
}

impl RescheduleBudget {
    /// `pass`: how often passes run (the heartbeat interval).
    pub fn new(pass: Duration) -> RescheduleBudget {
        RescheduleBudget {
            pass,
            tokens: 0.0,
            last: None,
        }
    }

    fn capacity(&self, per_second: u32) -> f64 {
        (f64::from(per_second) * self.pass.as_secs_f64().max(1.0)).max(1.0)
    }

    /// How many may be rescheduled now under `mode` (`None`: no limit). Entering `Throttled`
    /// starts with a full bucket.
    pub fn allowance(&mut self, mode: RescheduleMode, now: Instant) -> Option<usize> {
        match mode {
            RescheduleMode::Normal => {
                self.last = None;
                None
            }
            RescheduleMode::Frozen => {
                self.last = None;
                Some(0)
            }
            RescheduleMode::Throttled { per_second } => {
                let cap = self.capacity(per_second);
                self.tokens = match self.last {
                    None => cap,
                    Some(last) => (self.tokens
                        + now.duration_since(last).as_secs_f64() * f64::from(per_second))
                    .min(cap),
                };
                self.last = Some(now);
                Some(self.tokens.floor() as usize)
            }
        }
    }

    /// `n` instances were rescheduled.
    pub fn spend(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use crate::registry::App;
    use crate::registry::NodeRecord;
    use crate::registry::RegistryCommand;

    fn view(total: usize, offline: usize, zones: &[(&str, usize, usize)]) -> StormView {
        StormView {
            total,
            offline,
            zones: zones
                .iter()
                .map(|&(z, off, tot)| (("zone".to_string(), z.to_string()), (off, tot)))
                .collect(),
        }
    }

    #[test]
    fn the_policy_table() {
        use RescheduleMode::*;
        let t = |per_second| Throttled { per_second };
        let cases: &[(&str, StormView, RescheduleMode)] = &[
            ("empty cluster", view(0, 0, &[]), Normal),
            ("all well", view(10, 0, &[]), Normal),
            ("one of three", view(3, 1, &[]), Normal),
            ("a third exactly", view(9, 3, &[]), Normal),
            ("just over a third", view(10, 4, &[]), t(1)),
            ("two of five", view(5, 2, &[]), t(1)),
            ("half exactly is not frozen", view(10, 5, &[]), t(1)),
            ("two of four", view(4, 2, &[]), t(1)),
            ("just over half", view(10, 6, &[]), Frozen),
            ("two of three", view(3, 2, &[]), Frozen),
            ("all silent", view(10, 10, &[]), Frozen),
            ("one of two", view(2, 1, &[]), t(1)),
            ("big cluster, 40 %", view(10_000, 4_000, &[]), t(600)),
            ("big cluster, 5 %", view(10_000, 500, &[]), Normal),
            ("big cluster, 51 %", view(10_000, 5_100, &[]), Frozen),
            (
                "a zone over a third",
                view(30, 4, &[("a", 4, 10), ("b", 0, 10), ("c", 0, 10)]),
                t(2),
            ),
            (
                "a zone at a third exactly",
                view(30, 3, &[("a", 3, 9), ("b", 0, 21)]),
                Normal,
            ),
            (
                "a small zone wholly gone (two nodes)",
                view(30, 2, &[("a", 2, 2), ("b", 0, 28)]),
                Normal,
            ),
            (
                "a zone of three wholly gone",
                view(30, 3, &[("a", 3, 3), ("b", 0, 27)]),
                t(2),
            ),
            (
                "more than half frozen whatever the zones",
                view(10, 6, &[("a", 3, 5), ("b", 3, 5)]),
                Frozen,
            ),
        ];
        for (name, v, want) in cases {
            assert_eq!(decide(v), *want, "{name}: {v:?}");
        }
    }

    #[test]
    fn the_view_counts_nodes_not_left_and_zones_of_spread_labels() {
        let mut r = Registry::default();
        r.apply(&RegistryCommand::PutApp {
            name: "api".into(),
            app: App {
                instances: 1,
                placement: crate::registry::Placement {
                    spread: Some("zone".into()),
                    ..Default::default()
                },
                ..App::default()
            },
        });
        let node = |id, zone: &str| NodeRecord {
            id,
            labels: [
                ("zone".to_string(), zone.to_string()),
                ("rack".to_string(), format!("r{id}")),
            ]
            .into(),
            ..NodeRecord::default()
        };
        r.apply(&RegistryCommand::UpsertNodes {
            nodes: vec![
                node(NodeId(1), "a"),
                node(NodeId(2), "a"),
                node(NodeId(3), "b"),
                node(NodeId(4), "b"),
            ],
        });
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![
                (NodeId(1), NodeStatus::Offline),
                (NodeId(3), NodeStatus::Offline),
            ],
        });
        r.apply(&RegistryCommand::SetNodeStatus {
            updates: vec![(NodeId(4), NodeStatus::Left)],
        });
        let v = StormView::of(&r);
        assert_eq!((v.total, v.offline), (3, 2));
        let zones: Vec<_> = v
            .zones
            .iter()
            .map(|((l, z), c)| (l.as_str(), z.as_str(), *c))
            .collect();
        assert_eq!(zones, vec![("zone", "a", (1, 2)), ("zone", "b", (1, 1))]);
        assert_eq!(decide(&v), RescheduleMode::Frozen);
    }

    #[test]
    fn the_mode_reads_back_from_json_and_defaults_to_normal() {
        let m = RescheduleMode::Throttled { per_second: 3 };
        let json = serde_json::to_string(&m).expect("json");
        assert_eq!(json, r#"{"mode":"throttled","per_second":3}"#);
        assert_eq!(
            serde_json::from_str::<RescheduleMode>(&json).expect("parse"),
            m
        );
        assert_eq!(RescheduleMode::default(), RescheduleMode::Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_one_pass_and_refills_at_the_rate() {
        let mut b = RescheduleBudget::new(Duration::from_secs(2));
        let now = crate::clock::now();
        assert_eq!(b.allowance(RescheduleMode::Normal, now), None);
        assert_eq!(b.allowance(RescheduleMode::Frozen, now), Some(0));
        let t = RescheduleMode::Throttled { per_second: 3 };
        assert_eq!(b.allowance(t, now), Some(6), "a full pass on entering");
        b.spend(6);
        assert_eq!(b.allowance(t, now), Some(0), "spent");
        let later = now + Duration::from_millis(500);
        assert_eq!(b.allowance(t, later), Some(1), "1.5 tokens");
        b.spend(1);
        let much_later = later + Duration::from_secs(60);
        assert_eq!(
            b.allowance(t, much_later),
            Some(6),
            "never more than a pass"
        );
        // Frozen in between, then throttled again: a fresh bucket.
        assert_eq!(b.allowance(RescheduleMode::Frozen, much_later), Some(0));
        b.spend(0);
        assert_eq!(b.allowance(t, much_later), Some(6));
        // A short pass interval still allows one per pass.
        let mut b = RescheduleBudget::new(Duration::from_millis(100));
        let one = RescheduleMode::Throttled { per_second: 1 };
        assert_eq!(b.allowance(one, now), Some(1));
    }
}
