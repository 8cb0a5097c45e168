//! Benchmark, not a check: 3 real voters (in-process `ClusterNode`s, real Raft and gRPC on
//! loopback) and N simulated agents speaking the real agent protocol. Run with
//! `cargo test -p herd-cluster --release --test scale_bench -- --ignored --nocapture`.
//!
//! The agents live in a child process (this test binary again, with `HERD_SCALE_SIM_CHILD=1`),
//! on one runtime thread ("fake-agents"): one tonic `Agent` server bound to 0.0.0.0, each
//! agent registered (ClusterApi `Join`, agent_only) at its own loopback
//! address 127.0.x.y so the master holds one connection per agent; the server answers as the
//! node a heartbeat names. When a heartbeat names a slice version above the one an agent holds,
//! it fetches its slice from the master (`Slice`, bounded concurrency, a few shared channels)
//! and reports every instance assigned to it as running (numbered reports: the list only when
//! it changed since the version the master acknowledged).
//!
//! Phases: registration of N agents; deploy of apps totalling M instances (`PutApp`, placement
//! by the master) until all are assigned and the master's runtime view reports all running;
//! steady state (heartbeat RTT, voters' CPU = this process's CPU minus its join threads, the
//! simulator's CPU from its own process, Raft log growth, RSS); leader kill (time until agents
//! see a new master's heartbeat, agents marked
//! offline afterwards).
//!
//! Env: `HERD_SCALE_AGENTS` (10000), `HERD_SCALE_INSTANCES` (100000), `HERD_SCALE_APPS` (100),
//! `HERD_SCALE_SECS` (30), `HERD_SCALE_STANDBYS` (0), `HERD_SCALE_JOIN_CONCURRENCY` (64),
//! `HERD_SCALE_FETCH_CONCURRENCY` (32), `HERD_SCALE_KILL` (1: run the leader kill phase),
//! `HERD_SCALE_TIMEOUT_SECS` (600: how long registration, assignment and running may take).
//! Every agent needs a socket in each process (the master's end here, the server's end in the
//! simulator), so the two processes' descriptor limits hold 10,000 agents where one process's
//! 20,000 did not; each lifts its limit where the host allows (root may, up to `fs.nr_open`).
//! The parent asks the simulator for its counters over the child's stdin and stdout, a line
//! each way.

mod support;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use futures_util::StreamExt;
use herd_cluster::ClusterNode;
use herd_cluster::NodeId;
use herd_cluster::RegistryCommand;
use herd_cluster::registry::App;
use herd_cluster::registry::NodeSlice;
use herd_cluster::registry::NodeStatus;
use herd_cluster::registry::Placement;
use herd_proto::cluster as pb;
use herd_proto::cluster::agent_server::Agent;
use herd_proto::cluster::agent_server::AgentServer;
use herd_proto::cluster::cluster_api_client::ClusterApiClient;
use openraft::async_runtime::WatchReceiver;
use support::SECRET;
use support::TestCluster;
use support::init_tracing;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::Channel;

const CLUSTER: &str = "test";
/// Agent ids start here (the voters are 1..=3).
const BASE_ID: u64 = 1_000;
/// Channels per master address shared by all slice fetches.
const FETCH_CHANNELS: usize = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn node_addr(i: usize, port: u16) -> String {
    format!("127.0.{}.{}:{port}", 1 + i / 250, 1 + i % 250)
}

fn authed<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    let md = req.metadata_mut();
    md.insert("x-herd-secret", SECRET.parse().expect("metadata"));
    md.insert("x-herd-cluster", CLUSTER.parse().expect("metadata"));
    req
}

fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

/// One simulated agent's state.
#[derive(Default)]
struct AgentState {
    /// The slice version it holds.
    held: u64,
    fetching: bool,
    /// The highest master term it accepted.
    term: u64,
    lease_seq: u64,
    report_version: u64,
    instances: Arc<Vec<pb::InstanceStatus>>,
    sent_resources: bool,
}

struct Sim {
    agents: Vec<Mutex<AgentState>>,
    fetch_permits: tokio::sync::Semaphore,
    channels: Mutex<HashMap<String, Vec<Channel>>>,
    next_channel: AtomicU64,
    answered: AtomicU64,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    /// Failed fetches by cause (gRPC code, or "decode").
    fetch_errors: Mutex<BTreeMap<String, u64>>,
    max_term: AtomicU64,
}

impl Sim {
    fn client(&self, addr: &str) -> ClusterApiClient<Channel> {
        let mut map = self.channels.lock().unwrap();
        let pool = map
            .entry(addr.to_string())
            .or_insert_with(|| (0..FETCH_CHANNELS).map(|_| channel(addr)).collect());
        let i = self.next_channel.fetch_add(1, Ordering::Relaxed) as usize % pool.len();
        ClusterApiClient::new(pool[i].clone())
    }

    async fn fetch(self: Arc<Self>, node: u64, master_addr: String) {
        let idx = (node - BASE_ID) as usize;
        let got = async {
            let _permit = self
                .fetch_permits
                .acquire()
                .await
                .map_err(|e| e.to_string())?;
            let mut c = self.client(&master_addr);
            let reply = c
                .slice(authed(pb::SliceRequest { node_id: node }))
                .await
                .map_err(|e| format!("{:?}", e.code()))?
                .into_inner();
            serde_json::from_slice::<NodeSlice>(&reply.slice).map_err(|_| "decode".to_string())
        }
        .await;
        let got = got
            .map_err(|e| *self.fetch_errors.lock().unwrap().entry(e).or_default() += 1)
            .ok();
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let mut st = self.agents[idx].lock().unwrap();
        st.fetching = false;
        let Some(slice) = got else {
            self.fetch_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let reg = &slice.registry;
        let list: Vec<pb::InstanceStatus> = reg
            .assignments
            .iter()
            .flat_map(|(app, m)| {
                m.iter()
                    .filter(|(_, n)| **n == NodeId(node))
                    .map(move |(i, _)| pb::InstanceStatus {
                        app: app.clone(),
                        instance: *i,
                        status: "running".into(),
                        pid: Some(10_000 + *i),
                        restarts: 0,
                        generation: reg.generation_of(app, *i),
                    })
            })
            .collect();
        st.held = st.held.max(slice.version);
        if *st.instances != list {
            st.instances = Arc::new(list);
            st.report_version += 1;
        }
    }
}

impl Sim {
    fn new(n: usize, fetch_conc: usize) -> Sim {
        Sim {
            agents: (0..n)
                .map(|_| {
                    Mutex::new(AgentState {
                        report_version: 1,
                        ..AgentState::default()
                    })
                })
                .collect(),
            fetch_permits: tokio::sync::Semaphore::new(fetch_conc),
            channels: Mutex::new(HashMap::new()),
            next_channel: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            fetch_failures: AtomicU64::new(0),
            fetch_errors: Mutex::new(BTreeMap::new()),
            max_term: AtomicU64::new(0),
        }
    }

    /// The counters the parent reads, as one line of JSON.
    fn stats(&self) -> serde_json::Value {
        let min_term = self
            .agents
            .iter()
            .map(|a| a.lock().unwrap().term)
            .min()
            .unwrap_or(0);
        serde_json::json!({
            "answered": self.answered.load(Ordering::Relaxed),
            "fetches": self.fetches.load(Ordering::Relaxed),
            "fetch_failures": self.fetch_failures.load(Ordering::Relaxed),
            "fetch_errors": *self.fetch_errors.lock().unwrap(),
            "max_term": self.max_term.load(Ordering::Relaxed),
            "min_term": min_term,
        })
    }
}

/// The simulator as the parent sees it: the child process, and its counters on request.
struct SimProcess {
    pid: u32,
    port: u16,
    io: tokio::sync::Mutex<(
        tokio::process::ChildStdin,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    )>,
    _child: tokio::process::Child,
}

#[derive(serde::Deserialize)]
struct SimStats {
    answered: u64,
    fetches: u64,
    fetch_failures: u64,
    fetch_errors: BTreeMap<String, u64>,
    max_term: u64,
    min_term: u64,
}

impl SimProcess {
    /// Starts this test binary again as the simulator and waits for its port.
    async fn start() -> SimProcess {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = tokio::process::Command::new(exe)
            .args(["scale", "--exact", "--ignored", "--nocapture"])
            .env("HERD_SCALE_SIM_CHILD", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the simulator process");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = loop {
            let line = lines
                .next_line()
                .await
                .expect("the simulator's stdout")
                .expect("the simulator ended before saying its port");
            if let Some(p) = line.strip_prefix("SIM_PORT ") {
                break p.trim().parse().expect("a port");
            }
        };
        SimProcess {
            pid: child.id().expect("pid"),
            port,
            io: tokio::sync::Mutex::new((stdin, lines)),
            _child: child,
        }
    }

    /// The simulator's counters now. A simulator that stopped answering ends the bench: zeros
    /// in its place would read as agents that never heard a master.
    async fn stats(&self) -> SimStats {
        use tokio::io::AsyncWriteExt;
        let mut io = self.io.lock().await;
        io.0.write_all(b"stats\n")
            .await
            .expect("the simulator's stdin is closed: it ended");
        loop {
            let line = io.1.next_line().await.expect("the simulator's stdout");
            let line = line.expect("the simulator ended without answering");
            if let Some(json) = line.strip_prefix("SIM_STATS ") {
                return serde_json::from_str(json).expect("the simulator's stats");
            }
        }
    }

    /// utime + stime of the simulator process, in clock ticks.
    fn ticks(&self) -> u64 {
        parse_ticks(
            &std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default(),
        )
    }

    fn rss_mb(&self) -> f64 {
        vm_rss_mb(&format!("/proc/{}/status", self.pid))
    }
}

/// The simulator's side: serves the agents until the parent closes its stdin.
fn sim_child() {
    use std::io::BufRead;
    use std::io::Write;
    let n = env_or("HERD_SCALE_AGENTS", 10_000) as usize;
    let fetch_conc = env_or("HERD_SCALE_FETCH_CONCURRENCY", 32) as usize;
    raise_descriptor_limit(2 * n as u64 + 4_096);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-agents")
        .enable_all()
        .build()
        .expect("agents runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("0.0.0.0:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sim = Arc::new(Sim::new(n, fetch_conc));
    let svc = AgentServer::new(SimAgents(sim.clone()));
    rt.spawn(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .expect("fake agents server");
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "SIM_PORT {port}");
    let _ = out.flush();
    // The parent's questions, one a line, on this (blocking) thread; the runtime's own thread
    // serves the agents meanwhile.
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let _ = writeln!(out, "SIM_STATS {}", sim.stats());
            let _ = out.flush();
        }
    }
    rt.shutdown_background();
}

struct SimAgents(Arc<Sim>);

#[tonic::async_trait]
impl Agent for SimAgents {
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
        let sim = &self.0;
        let Some(slot) = req
            .node_id
            .checked_sub(BASE_ID)
            .and_then(|i| sim.agents.get(i as usize))
        else {
            return Err(Status::not_found("no such simulated agent"));
        };
        sim.answered.fetch_add(1, Ordering::Relaxed);
        sim.max_term.fetch_max(req.term, Ordering::Relaxed);
        let mut st = slot.lock().unwrap();
        st.term = st.term.max(req.term);
        if req.slice_version > st.held && !st.fetching && !req.master_addr.is_empty() {
            st.fetching = true;
            tokio::spawn(sim.clone().fetch(req.node_id, req.master_addr.clone()));
        }
        st.lease_seq += 1;
        let unchanged = req.report_ack == st.report_version;
        let resources_json = if st.sent_resources && unchanged {
            String::new()
        } else {
            st.sent_resources = true;
            format!(
                r#"{{"cpu_percent":{}.5,"mem_used_bytes":{},"mem_total_bytes":17179869184,"load1":0.42}}"#,
                req.node_id % 100,
                2_000_000_000 + req.node_id
            )
        };
        Ok(Response::new(pb::HeartbeatReply {
            node_id: req.node_id,
            version: "0.1.0".into(),
            resources_json,
            instances: if unchanged {
                Vec::new()
            } else {
                st.instances.as_ref().clone()
            },
            term: st.term,
            lease_seq: st.lease_seq,
            report_version: st.report_version,
            report_unchanged: unchanged,
        }))
    }
}

/// utime+stime (clock ticks) of this process's threads whose name starts with `prefix`, or of
/// the whole process for `None`.
fn parse_ticks(stat: &str) -> u64 {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let u: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let s: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    u + s
}

fn ticks(prefix: Option<&str>) -> u64 {
    let parse = parse_ticks;
    let Some(prefix) = prefix else {
        return parse(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .starts_with(prefix)
        })
        .map(|t| parse(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}

fn rss_mb() -> f64 {
    vm_rss_mb("/proc/self/status")
}

fn vm_rss_mb(status: &str) -> f64 {
    let s = std::fs::read_to_string(status).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn last_log_index(n: &ClusterNode) -> u64 {
    n.raft()
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap_or(0)
}

/// Polls `check` every `every` until it yields a value or `timeout` passes (then `None`).
async fn poll<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, k: impl Into<String>, v: impl Into<String>) {
        let (k, v) = (k.into(), v.into());
        println!("  {k:<44} {v}");
        self.0.push((k, v));
    }
}

/// A socket per agent lives in each of the two processes: lifts the descriptor limit to `want`
/// (root may raise its hard limit up to `fs.nr_open`), or says what it got.
fn raise_descriptor_limit(want: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|c| c >= want) {
        return;
    }
    let cap = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(want);
    let target = want.min(cap);
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: Some(target.max(now.maximum.unwrap_or(0))),
        },
    );
    let got = getrlimit(Resource::Nofile).current;
    eprintln!(
        "scale: descriptor limit {:?} -> {got:?} (wanted {want}; {raised:?})",
        now.current
    );
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[test]
#[ignore = "benchmark; run explicitly"]
fn scale() {
    if std::env::var_os("HERD_SCALE_SIM_CHILD").is_some() {
        return sim_child();
    }
    init_tracing();
    let n = env_or("HERD_SCALE_AGENTS", 10_000) as usize;
    let m = env_or("HERD_SCALE_INSTANCES", 100_000);
    let apps = env_or("HERD_SCALE_APPS", 100).max(1);
    let steady = env_or("HERD_SCALE_SECS", 30);
    let standbys = env_or("HERD_SCALE_STANDBYS", 0) as usize;
    let join_conc = env_or("HERD_SCALE_JOIN_CONCURRENCY", 64) as usize;
    let kill = env_or("HERD_SCALE_KILL", 1) != 0;
    let per_app = m.div_ceil(apps);
    let m = per_app * apps;
    assert!(n <= 250 * 250, "at most 62,500 agents");
    raise_descriptor_limit(2 * n as u64 + 4_096);

    // The agents' joins, and the simulator's pipes.
    let agents_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("joins")
        .enable_all()
        .build()
        .expect("joins runtime");
    let sim = agents_rt.block_on(SimProcess::start());
    let port = sim.port;

    let voters_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("voters")
        .enable_all()
        .build()
        .expect("voters runtime");

    println!(
        "\nscale benchmark: 3 voters, {standbys} standbys, {n} agents, {apps} apps × {per_app} = {m} instances, {} cores",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    let mut t = Table(Vec::new());
    voters_rt.block_on(async {
        let mut c = TestCluster::configure(3, TestCluster::static_seeds);
        for s in &mut c.slots {
            s.cfg.standbys = standbys;
        }
        c.start_all().await;
        let leader = c.agreed_leader(Duration::from_secs(30)).await;
        c.membership(3, 0, Duration::from_secs(30)).await;
        let voter_addrs: Vec<String> = c.slots.iter().map(|s| s.cfg.advertise.clone()).collect();

        // 1. Registration.
        let t0 = Instant::now();
        let join_failures = Arc::new(AtomicU64::new(0));
        let joins = {
            let failures = join_failures.clone();
            let clients: Vec<_> = voter_addrs
                .iter()
                .map(|a| ClusterApiClient::new(channel(a)))
                .collect();
            agents_rt.spawn(async move {
                futures_util::stream::iter(0..n)
                    .map(|i| {
                        let mut client = clients[i % clients.len()].clone();
                        let failures = failures.clone();
                        async move {
                            let req = pb::JoinRequest {
                                node_id: BASE_ID + i as u64,
                                addr: node_addr(i, port),
                                labels: [("pool".to_string(), "agents".to_string())].into(),
                                agent_only: true,
                                version: "0.1.0".into(),
                            };
                            for _ in 0..20 {
                                match client.join(authed(req.clone())).await {
                                    Ok(r) if r.get_ref().role == "agent" => return,
                                    _ => {
                                        failures.fetch_add(1, Ordering::Relaxed);
                                        tokio::time::sleep(Duration::from_millis(200)).await;
                                    }
                                }
                            }
                        }
                    })
                    .buffer_unordered(join_conc)
                    .collect::<Vec<()>>()
                    .await;
            })
        };
        let lead = c.node(leader);
        let progress = AtomicU64::new(0);
        let registered = poll(
            Duration::from_secs(env_or("HERD_SCALE_TIMEOUT_SECS", 600)),
            Duration::from_millis(250),
            || async {
                let r = lead.read(false).await.ok()?;
                let tick = t0.elapsed().as_secs() / 15;
                if progress.fetch_max(tick, Ordering::Relaxed) < tick {
                    println!(
                        "    {:>5.0} s: {} agents registered",
                        t0.elapsed().as_secs_f64(),
                        r.nodes.len().saturating_sub(3)
                    );
                }
                (r.nodes.len() >= n + 3).then_some(())
            },
        )
        .await;
        if registered.is_none() {
            joins.abort();
        }
        let _ = joins.await;
        let reg_time = t0.elapsed();
        t.row(
            "registration: all agents in the registry",
            format!(
                "{} ({:.0} joins/s, {} retries){}",
                secs(reg_time),
                n as f64 / reg_time.as_secs_f64(),
                join_failures.load(Ordering::Relaxed),
                if registered.is_none() {
                    " INCOMPLETE"
                } else {
                    ""
                }
            ),
        );
        let heard = poll(Duration::from_secs(120), Duration::from_secs(1), || async {
            let rt = lead.runtime().await.ok()?;
            let heard = rt
                .nodes
                .iter()
                .filter(|x| x.id >= NodeId(BASE_ID) && x.last_seen_ms.is_some())
                .count();
            (heard >= n).then_some(())
        })
        .await;
        t.row(
            "registration: all agents heartbeated",
            format!(
                "{}{}",
                secs(t0.elapsed()),
                if heard.is_none() { " INCOMPLETE" } else { "" }
            ),
        );

        // 3. Deploy.
        let t1 = Instant::now();
        for a in 0..apps {
            let app = App {
                spec: serde_json::json!({"cmd": ["sleep", "infinity"], "memory_mb": 64}),
                instances: per_app as u32,
                placement: Placement {
                    constraints: [("pool".to_string(), "agents".to_string())].into(),
                    ..Placement::default()
                },
                ..App::default()
            };
            lead.write(RegistryCommand::PutApp {
                name: format!("app-{a:03}"),
                app,
            })
            .await
            .expect("put app");
        }
        let writes_done = t1.elapsed();
        t.row(format!("deploy: {apps} PutApp writes"), secs(writes_done));
        let assigned = poll(
            Duration::from_secs(env_or("HERD_SCALE_TIMEOUT_SECS", 600)),
            Duration::from_millis(500),
            || async {
                let r = lead.read(true).await.ok()?;
                let count: usize = r.assignments.values().map(|a| a.len()).sum();
                let tick = 1000 + t1.elapsed().as_secs() / 15;
                if progress.fetch_max(tick, Ordering::Relaxed) < tick {
                    println!(
                        "    {:>5.0} s: {count} instances assigned",
                        t1.elapsed().as_secs_f64()
                    );
                }
                (count as u64 >= m).then_some(())
            },
        )
        .await;
        t.row(
            format!("deploy: all {m} instances assigned"),
            format!(
                "{}{}",
                secs(t1.elapsed()),
                if assigned.is_none() {
                    " INCOMPLETE"
                } else {
                    ""
                }
            ),
        );
        let last_running = AtomicU64::new(0);
        let limit = Duration::from_secs(env_or("HERD_SCALE_TIMEOUT_SECS", 600));
        let running = poll(limit, Duration::from_secs(1), || async {
            let rt = lead.runtime().await.ok()?;
            let count: usize = rt
                .nodes
                .iter()
                .map(|x| x.instances.iter().filter(|i| i.status == "running").count())
                .sum();
            last_running.store(count as u64, Ordering::Relaxed);
            let tick = 2000 + t1.elapsed().as_secs() / 15;
            if progress.fetch_max(tick, Ordering::Relaxed) < tick {
                println!(
                    "    {:>5.0} s: {count} instances running",
                    t1.elapsed().as_secs_f64()
                );
            }
            (count as u64 >= m).then_some(())
        })
        .await;
        let fetched = sim.stats().await;
        t.row(
            "deploy: all reported running (runtime view)",
            format!(
                "{}{} ({} slice fetches, {} failed: {:?})",
                secs(t1.elapsed()),
                if running.is_none() {
                    format!(
                        " INCOMPLETE: {} running",
                        last_running.load(Ordering::Relaxed)
                    )
                } else {
                    String::new()
                },
                fetched.fetches,
                fetched.fetch_failures,
                fetched.fetch_errors
            ),
        );

        // 4. Steady state.
        let redb = c.data_dir(leader).join("raft.redb");
        let size = || std::fs::metadata(&redb).map_or(0, |m| m.len());
        let hb0 = lead.runtime().await.expect("runtime").heartbeats;
        let (size0, idx0) = (size(), last_log_index(lead));
        let (all0, fake0, sim0) = (ticks(None), ticks(Some("joins")), sim.ticks());
        let answered0 = sim.stats().await.answered;
        let t2 = Instant::now();
        tokio::time::sleep(Duration::from_secs(steady)).await;
        let el = t2.elapsed().as_secs_f64();
        let (all1, fake1, sim1) = (ticks(None), ticks(Some("joins")), sim.ticks());
        let answered1 = sim.stats().await.answered;
        let (size1, idx1) = (size(), last_log_index(lead));
        let rt = lead.runtime().await.expect("runtime");
        let hb1 = rt.heartbeats.clone();
        let ok = hb1.ok_total - hb0.ok_total;
        let failed = hb1.failed_total - hb0.failed_total;
        t.row(
            format!("steady {steady} s: heartbeats ok/s (failed)"),
            format!(
                "{:.0}/s ({failed}); agents answered {:.0}/s",
                ok as f64 / el,
                (answered1 - answered0) as f64 / el
            ),
        );
        let ms = |us: Option<u64>| us.map_or("-".into(), |u| format!("{:.2} ms", u as f64 / 1e3));
        // Each node's last RTT, at the end of the steady window: the steady-state spread.
        let mut last: Vec<u64> = rt.nodes.iter().filter_map(|x| x.rtt_us).collect();
        last.sort_unstable();
        let q = |p: f64| {
            (!last.is_empty()).then(|| last[((last.len() - 1) as f64 * p).round() as usize])
        };
        t.row(
            "steady: RTT p50 / p99 (each node's last heartbeat)",
            format!("{} / {}", ms(q(0.5)), ms(q(0.99))),
        );
        t.row(
            "steady: heartbeat RTT p50 / p99 (whole term)",
            format!("{} / {}", ms(hb1.rtt_p50_us), ms(hb1.rtt_p99_us)),
        );
        // Clock ticks are 1/100 s.
        t.row(
            "steady: CPU voters (process − join threads), % of a core",
            format!(
                "{:.1} % (agents sim, its own process, {:.1} %)",
                (all1 - all0 - (fake1 - fake0)) as f64 / el,
                (sim1 - sim0) as f64 / el
            ),
        );
        t.row(
            "steady: leader raft log growth",
            format!(
                "{:.0} entries/min, raft.redb {:+.1} KiB/min (file {:.1} MiB)",
                (idx1 - idx0) as f64 * 60.0 / el,
                (size1 as f64 - size0 as f64) / 1024.0 * 60.0 / el,
                size1 as f64 / 1048576.0
            ),
        );
        t.row(
            "steady: RSS of the voters' process (the simulator's)",
            format!("{:.0} MiB ({:.0} MiB)", rss_mb(), sim.rss_mb()),
        );

        // 5. Leader kill.
        if kill {
            let old_term = lead.status().await.term.get();
            let old_id = lead.id();
            let t3 = Instant::now();
            c.stop(leader).await;
            let new_seen = poll(
                Duration::from_secs(60),
                Duration::from_millis(10),
                || async { (sim.stats().await.max_term > old_term).then(|| t3.elapsed()) },
            )
            .await;
            t.row(
                "leader kill: first heartbeat of a new master",
                match new_seen {
                    Some(d) => secs(d),
                    None => "none within 60 s".into(),
                },
            );
            let all = poll(
                Duration::from_secs(60),
                Duration::from_millis(50),
                || async { (sim.stats().await.min_term > old_term).then_some(()) },
            )
            .await;
            t.row(
                "leader kill: every agent heard the new master",
                if all.is_some() {
                    secs(t3.elapsed())
                } else {
                    "not within 60 s".into()
                },
            );
            tokio::time::sleep(Duration::from_secs(10)).await;
            let survivor = c.running().map(|(_, x)| x).next().expect("a survivor");
            let r = survivor.read(false).await.expect("read");
            let offline = r
                .nodes
                .values()
                .filter(|x| x.id >= NodeId(BASE_ID) && x.status == NodeStatus::Offline)
                .count();
            let rt = survivor.runtime().await.expect("runtime");
            let running: usize = rt
                .nodes
                .iter()
                .map(|x| x.instances.iter().filter(|i| i.status == "running").count())
                .sum();
            t.row(
                "leader kill: agents offline 10 s later",
                format!(
                    "{offline} (old leader {old_id}: {:?}); new master sees {running} running",
                    r.nodes.get(&old_id).map(|x| x.status)
                ),
            );
        }
        c.shutdown().await;
    });
    voters_rt.shutdown_background();
    agents_rt.shutdown_background();
    println!("\nsummary ({n} agents, {m} instances):");
    for (k, v) in &t.0 {
        println!("| {k} | {v} |");
    }
}
