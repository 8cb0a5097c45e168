//! `/metrics`: the daemon's and every instance's figures in the Prometheus/OpenMetrics text
//! format, encoded by the official `prometheus-client` crate from a fresh registry per scrape
//! (the values are read from the supervisor's table, which already holds them; nothing is
//! sampled twice).

use super::HttpState;
use crate::supervisor::instance::{Health, Status};
use herd_cluster::master::RTT_BOUNDS_US;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    app: String,
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    app: String,
    instance: String,
    status: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusOnly {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppState {
    app: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    addr: String,
}

/// The master's heartbeat round trips as a classic Prometheus histogram, from the counts the
/// master keeps (`RTT_BOUNDS_US`): prometheus-client's own histogram can only observe values
/// one by one, these are already counted.
#[derive(Debug)]
struct RttHistogram {
    /// Per bound, not cumulative, +Inf last.
    counts: Vec<u64>,
    sum_us: u64,
}

impl EncodeMetric for RttHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = RTT_BOUNDS_US
            .iter()
            .map(|us| *us as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect();
        let count = self.counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_us as f64 / 1e6, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The daemon's own CPU seconds, resident bytes and open descriptors, from `/proc/self`.
fn daemon_figures() -> (f64, u64, u64) {
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = crate::supervisor::process::read_stat(std::process::id());
    let cpu = stat
        .as_ref()
        .map_or(0.0, |s| s.cpu_ticks as f64 / ticks.max(1) as f64);
    let rss = stat.map_or(0, |s| s.rss_pages.saturating_mul(page.max(0) as u64));
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (cpu, rss, fds)
}

pub async fn render(s: &HttpState) -> Result<String, String> {
    let mut reg = Registry::default();
    // The classic `_info` gauge rather than OpenMetrics' info type, which the Prometheus text
    // parser (promtool, older servers) does not know.
    let build = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    build
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    reg.register("herd_build_info", "herd's version, as a label", build);

    let uptime = FloatGauge::default();
    uptime.set(s.started.elapsed().as_secs_f64());
    reg.register_with_unit(
        "herd_daemon_uptime",
        "Time since the daemon started",
        Unit::Seconds,
        uptime,
    );
    let (cpu_s, rss, fds) = daemon_figures();
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by(cpu_s);
    reg.register_with_unit(
        "herd_daemon_cpu",
        "CPU time the daemon used (user + system)",
        Unit::Seconds,
        cpu,
    );
    let mem = Gauge::<i64>::default();
    mem.set(i64::try_from(rss).unwrap_or(i64::MAX));
    reg.register_with_unit(
        "herd_daemon_resident_memory",
        "The daemon's resident set size",
        Unit::Bytes,
        mem,
    );
    let open = Gauge::<i64>::default();
    open.set(i64::try_from(fds).unwrap_or(i64::MAX));
    reg.register(
        "herd_daemon_open_fds",
        "File descriptors the daemon holds open",
        open,
    );

    let up = Family::<InstanceLabels, Gauge>::default();
    let status = Family::<StatusLabels, Gauge>::default();
    let restarts = Family::<InstanceLabels, Counter>::default();
    let healthy = Family::<InstanceLabels, Gauge>::default();
    let inst_cpu = Family::<InstanceLabels, FloatGauge>::default();
    let inst_rss = Family::<InstanceLabels, Gauge>::default();
    let inst_procs = Family::<InstanceLabels, Gauge>::default();
    let inst_uptime = Family::<InstanceLabels, FloatGauge>::default();
    let now = crate::supervisor::instance::Now::read();
    let apps = s.supervisor.list(None).map_err(|e| e.to_string())?;
    for app in &apps {
        for inst in &app.instances {
            let l = InstanceLabels {
                app: app.spec.name.clone(),
                instance: inst.index.to_string(),
            };
            up.get_or_create(&l)
                .set(i64::from(inst.status == Status::Running));
            status
                .get_or_create(&StatusLabels {
                    app: l.app.clone(),
                    instance: l.instance.clone(),
                    status: inst.status.as_str().to_string(),
                })
                .set(1);
            restarts.get_or_create(&l).inc_by(u64::from(inst.restarts));
            if app.spec.health.is_some() {
                healthy.get_or_create(&l).set(match inst.health {
                    Health::Healthy => 1,
                    Health::Unhealthy => 0,
                    Health::Unknown => -1,
                });
            }
            if let Some(m) = inst.metrics.filter(|_| inst.status.has_process()) {
                inst_cpu.get_or_create(&l).set(f64::from(m.cpu_percent));
                inst_rss
                    .get_or_create(&l)
                    .set(i64::try_from(m.rss_bytes).unwrap_or(i64::MAX));
                inst_procs.get_or_create(&l).set(i64::from(m.processes));
            }
            if let Some(u) = inst.uptime_s(now) {
                inst_uptime.get_or_create(&l).set(u as f64);
            }
        }
    }
    reg.register(
        "herd_instance_up",
        "1 when the instance is running (an instance with a probe runs once its first probe passed), else 0",
        up,
    );
    reg.register(
        "herd_instance_status",
        "The instance's status (starting, running, backoff, stopping, stopped, crashed) as a label, value 1",
        status,
    );
    reg.register(
        "herd_instance_restarts",
        "Restarts by the restart policy since the app was last (re)started by a user",
        restarts,
    );
    reg.register(
        "herd_instance_healthy",
        "The health probe's verdict: 1 healthy, 0 unhealthy, -1 not known yet (apps with a probe only)",
        healthy,
    );
    reg.register(
        "herd_instance_cpu_percent",
        "CPU of the instance's whole process tree at the last sample (100 = one core)",
        inst_cpu,
    );
    reg.register_with_unit(
        "herd_instance_resident_memory",
        "RSS of the instance's whole process tree at the last sample",
        Unit::Bytes,
        inst_rss,
    );
    reg.register(
        "herd_instance_processes",
        "Processes in the instance's tree at the last sample",
        inst_procs,
    );
    reg.register_with_unit(
        "herd_instance_uptime",
        "Time since the instance's process started",
        Unit::Seconds,
        inst_uptime,
    );

    let events = Family::<EventLabels, Counter>::default();
    for (kind, n) in s.supervisor.events().counts() {
        events.get_or_create(&EventLabels { event: kind }).inc_by(n);
    }
    reg.register(
        "herd_events",
        "Lifecycle events emitted since the daemon started, by kind (`herd events`)",
        events,
    );

    if let Some(node) = &s.cluster {
        let st = node.status().await;
        let g = |v: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        reg.register(
            "herd_raft_term",
            "The Raft term this node is in",
            g(st.term.get()),
        );
        reg.register(
            "herd_raft_is_leader",
            "1 when this node is the Raft leader (the master)",
            g(u64::from(st.leader_id == Some(st.node_id))),
        );
        reg.register(
            "herd_raft_leader_known",
            "1 when this node knows a leader",
            g(u64::from(st.leader_id.is_some())),
        );
        if let Some(i) = st.committed_index {
            reg.register("herd_raft_commit_index", "Raft commit index", g(i));
        }
        if let Some(i) = st.applied_index {
            reg.register("herd_raft_applied_index", "Raft applied index", g(i));
        }
        if st.leader_id == Some(st.node_id) {
            master_metrics(&mut reg, node).await;
        }
    }

    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| format!("cannot encode the metrics: {e}"))?;
    Ok(out)
}

/// What only the master knows: its heartbeats, every node's status and uptime, and each
/// app's desired, placed and running instances. Served by the leader alone, so a scrape of
/// every node counts each figure once.
async fn master_metrics(reg: &mut Registry, node: &herd_cluster::ClusterNode) {
    let (Ok(rt), Ok(registry)) = (node.runtime().await, node.read(true).await) else {
        return;
    };
    let hb = &rt.heartbeats;
    for (name, help, v) in [
        (
            "herd_master_heartbeats_sent",
            "Heartbeats the master sent in its term",
            hb.sent_total,
        ),
        (
            "herd_master_heartbeats_failed",
            "Heartbeats that got no answer in the master's term",
            hb.failed_total,
        ),
        (
            "herd_master_heartbeats_fenced",
            "Heartbeats refused because the master's term was stale",
            hb.fenced_total,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    }
    if !hb.rtt_buckets.is_empty() {
        reg.register_with_unit(
            "herd_master_heartbeat_rtt",
            "Round trip of the master's heartbeats in its term",
            Unit::Seconds,
            RttHistogram {
                counts: hb.rtt_buckets.clone(),
                sum_us: hb.rtt_sum_us,
            },
        );
    }
    let nodes = Family::<StatusOnly, Gauge>::default();
    for n in &rt.nodes {
        let status = serde_json::to_value(n.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        nodes.get_or_create(&StatusOnly { status }).inc();
    }
    reg.register(
        "herd_cluster_nodes",
        "Nodes by the status the master gives them",
        nodes,
    );
    let apps = Family::<AppState, Gauge>::default();
    for (name, app) in &registry.apps {
        let placed = registry.assignments.get(name).map_or(0, |a| a.len());
        let running = rt
            .running(name)
            .iter()
            .filter(|(_, i)| i.status == "running")
            .count();
        for (state, n) in [
            ("desired", app.instances as usize),
            ("placed", placed),
            ("running", running),
        ] {
            apps.get_or_create(&AppState {
                app: name.clone(),
                state: state.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "herd_cluster_app_instances",
        "Each deployed app's instances: desired, placed on a node, and reported running",
        apps,
    );
    let uptime = Family::<NodeLabels, FloatGauge>::default();
    for (id, days) in &registry.uptime {
        let (up, total) = days.values().fold((0u64, 0u64), |(u, t), b| {
            (
                u.saturating_add(b.up_samples),
                t.saturating_add(b.total_samples),
            )
        });
        if total == 0 {
            continue;
        }
        let addr = registry
            .nodes
            .get(id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        uptime
            .get_or_create(&NodeLabels {
                node: id.to_string(),
                addr,
            })
            .set(up as f64 / total as f64);
    }
    reg.register(
        "herd_cluster_node_uptime_ratio",
        "Share of the master's samples that found the node online, over the history kept",
        uptime,
    );
}

/// The same exposition in the classic Prometheus text format (0.0.4), for clients that do not
/// ask for OpenMetrics (promtool, curl, older servers): a counter family is named with its
/// `_total` suffix, and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_openmetrics_lines_go() {
        let om = "# HELP a_seconds CPU.\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\na_seconds_total 1.5\n# HELP b Up.\n# TYPE b gauge\nb{x=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_seconds_total CPU.\n# TYPE a_seconds_total counter\na_seconds_total 1.5\n# HELP b Up.\n# TYPE b gauge\nb{x=\"1\"} 1\n"
        );
    }
}
