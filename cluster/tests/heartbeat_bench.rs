//! Benchmark, not a check: one master heartbeating 1,000 and 5,000 simulated agents at the 2 s
//! cadence, through the real heartbeat path (`Heartbeater` over gRPC with the cluster secret,
//! one HTTP/2 connection per node). Run with
//! `cargo test -p herd-cluster --release --test heartbeat_bench -- --ignored --nocapture`.
//!
//! The agents are one tonic server in the same process, on its own runtime and thread
//! ("fake-agents"), bound to 0.0.0.0 and reached at a distinct loopback address per node
//! (127.0.x.y), so the master holds one connection per node as it would in a real cluster; the
//! server answers as the node named in the request. The master runs on its own runtime
//! ("herd-master", 2 workers); its CPU is the sum of those threads' utime+stime
//! (/proc/self/task/*/stat) over the measured window, as % of one core.
//!
//! Env: `HERD_BENCH_NODES` (default "1000,5000"), `HERD_BENCH_SECS` (default 20),
//! `HERD_BENCH_INTERVAL_MS` (default 2000).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use herd_cluster::NodeId;
use herd_cluster::Term;
use herd_cluster::master::HealthTable;
use herd_cluster::master::HeartbeatConfig;
use herd_cluster::master::Heartbeater;
use herd_cluster::master::WallClock;
use herd_proto::cluster as pb;
use herd_proto::cluster::agent_server::Agent;
use herd_proto::cluster::agent_server::AgentServer;
use tonic::Request;
use tonic::Response;
use tonic::Status;

const SECRET: &str = "bench-secret";
const CLUSTER: &str = "bench";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Answers every heartbeat as the node it names, with a realistic reply (three instances and
/// the resources a daemon reports).
struct FakeAgents {
    answered: AtomicU64,
}

#[tonic::async_trait]
impl Agent for FakeAgents {
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let ok = req
            .metadata()
            .get("x-herd-secret")
            .is_some_and(|v| v.as_bytes() == SECRET.as_bytes());
        if !ok {
            return Err(Status::unauthenticated("cluster secret missing or wrong"));
        }
        let req = req.into_inner();
        self.answered.fetch_add(1, Ordering::Relaxed);
        let instances = (0..3)
            .map(|i| pb::InstanceStatus {
                app: format!("app-{}", (req.node_id + i) % 17),
                instance: i as u32,
                status: "running".into(),
                pid: Some(10_000 + i as u32),
                restarts: 0,
                generation: 0,
            })
            .collect();
        Ok(Response::new(pb::HeartbeatReply {
            node_id: req.node_id,
            version: "0.1.0".into(),
            resources_json: format!(
                r#"{{"cpu_percent":{}.5,"mem_used_bytes":{},"mem_total_bytes":17179869184,"load1":0.42}}"#,
                req.node_id % 100,
                2_000_000_000 + req.node_id
            ),
            instances,
            term: req.term,
            lease_seq: req.lease_ack + 1,
            // Every reply whole, as a node before report versions: the worst case.
            ..Default::default()
        }))
    }
}

/// utime+stime (clock ticks) of this process's threads whose name starts with `prefix`.
fn thread_ticks(prefix: &str) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        total += utime + stime;
    }
    total
}

fn node_addr(i: usize, port: u16) -> String {
    format!("127.0.{}.{}:{port}", 1 + i / 250, 1 + i % 250)
}

struct Outcome {
    nodes: usize,
    secs: f64,
    ok: u64,
    failed: u64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    cpu_percent: f64,
    fake_cpu_percent: f64,
}

fn run(nodes: usize, secs: u64, interval: Duration) -> Outcome {
    let fakes_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-agents")
        .enable_all()
        .build()
        .expect("fake agents runtime");
    let listener = fakes_rt
        .block_on(tokio::net::TcpListener::bind("0.0.0.0:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fakes = Arc::new(FakeAgents {
        answered: AtomicU64::new(0),
    });
    let svc = AgentServer::from_arc(fakes.clone());
    fakes_rt.spawn(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .expect("fake agents server");
    });

    let master_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_or("HERD_BENCH_MASTER_THREADS", 2) as usize)
        .thread_name("herd-master")
        .enable_all()
        .build()
        .expect("master runtime");
    let addrs: Vec<String> = (0..nodes).map(|i| node_addr(i, port)).collect();
    let _: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().expect("addr")).collect();
    let outcome = master_rt.block_on(async move {
        let health = Arc::new(HealthTable::new(WallClock::system()));
        let mut hb = Heartbeater::grpc(
            CLUSTER,
            SECRET,
            HeartbeatConfig {
                master_id: NodeId(1),
                term: Term(1),
                interval,
                timeout: interval,
                concurrency: herd_cluster::ClusterConfig::DEFAULT_HEARTBEAT_CONCURRENCY,
                master_addr: "127.0.0.1:1".into(),
            },
            health.clone(),
        )
        .expect("heartbeater");
        hb.sync(
            addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (NodeId(i as u64 + 1), a.as_str(), false)),
        );
        // Warm up: every node connected and answered at least twice.
        tokio::time::sleep(interval * 3).await;
        let stats = &health.stats;
        stats.rtt.reset();
        let ok0 = stats.ok_total.load(Ordering::Relaxed);
        let failed0 = stats.failed_total.load(Ordering::Relaxed);
        let ticks0 = thread_ticks("herd-master");
        let fake0 = thread_ticks("fake-agents");
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let ticks = thread_ticks("herd-master") - ticks0;
        let fake = thread_ticks("fake-agents") - fake0;
        let answered_now = health
            .snapshot()
            .values()
            .filter(|h| h.last_answer.is_some())
            .count();
        assert_eq!(answered_now, nodes, "every node answered");
        let q = |p| stats.rtt.quantile(p).unwrap_or_default();
        let out = Outcome {
            nodes,
            secs: elapsed,
            ok: stats.ok_total.load(Ordering::Relaxed) - ok0,
            failed: stats.failed_total.load(Ordering::Relaxed) - failed0,
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            // Clock ticks are 1/100 s on Linux.
            cpu_percent: ticks as f64 / elapsed,
            fake_cpu_percent: fake as f64 / elapsed,
        };
        drop(hb);
        out
    });
    master_rt.shutdown_background();
    fakes_rt.shutdown_background();
    outcome
}

#[test]
#[ignore = "benchmark; run explicitly"]
fn master_heartbeats_thousands_of_agents() {
    let secs = env_or("HERD_BENCH_SECS", 20);
    let interval = Duration::from_millis(env_or("HERD_BENCH_INTERVAL_MS", 2_000));
    let sizes: Vec<usize> = std::env::var("HERD_BENCH_NODES")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "\nheartbeat benchmark: interval {} ms, {} s measured after a {} s warm-up, {} cores",
        interval.as_millis(),
        secs,
        interval.as_secs() * 3,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>6} {:>9} {:>7} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "nodes", "hb/s", "failed", "rtt p50", "rtt p99", "rtt p99.9", "master cpu", "agents cpu"
    );
    for n in sizes {
        let o = run(n, secs, interval);
        println!(
            "{:>6} {:>9.0} {:>7} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>11.1}% {:>11.1}%",
            o.nodes,
            o.ok as f64 / o.secs,
            o.failed,
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            o.p999.as_secs_f64() * 1e3,
            o.cpu_percent,
            o.fake_cpu_percent,
        );
    }
}
