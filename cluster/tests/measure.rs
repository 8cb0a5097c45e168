//! Measurements, not checks: run with
//! `cargo test -p herd-cluster --release --test measure -- --ignored --nocapture --test-threads 1`.
//!
//! - `failover`: in-process 3-node cluster; the leader is stopped abruptly (its server and Raft
//!   stop at once, nothing is handed over) and the time until both survivors agree on a new
//!   leader is recorded, `HERD_FAILOVER_RUNS` times (default 20).
//! - `write_throughput`: `HERD_BENCH_WRITERS` concurrent writers (default 64) for
//!   `HERD_BENCH_SECS` seconds (default 5), half through the leader and half through followers.
//! - `idle_stability`: no leader change while idle for `HERD_IDLE_SECS` seconds (default 60).

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use herd_cluster::NodeId;
use herd_cluster::RegistryCommand;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use support::TestCluster;
use support::eventually;
use support::init_tracing;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn formed() -> TestCluster {
    init_tracing();
    let mut c = TestCluster::configure(3, TestCluster::static_seeds);
    c.start_all().await;
    c.agreed_leader(Duration::from_secs(20)).await;
    c.membership(3, 0, Duration::from_secs(20)).await;
    c
}

/// Survivors (every running node) agree on one leader that is not `old`, and it is leader.
fn new_leader_agreed(c: &TestCluster, old: NodeId) -> Option<NodeId> {
    let mut agreed = None;
    for (_, n) in c.running() {
        let m = n.raft().metrics().borrow_watched().clone();
        let l = m.current_leader?;
        if l == old || agreed.is_some_and(|a| a != l) {
            return None;
        }
        if l == n.id() && m.state != ServerState::Leader {
            return None;
        }
        agreed = Some(l);
    }
    agreed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run explicitly"]
async fn failover() {
    let runs = env_or("HERD_FAILOVER_RUNS", 20);
    let mut c = formed().await;
    let mut samples = Vec::new();
    for run in 0..runs {
        let leader = c.agreed_leader(Duration::from_secs(20)).await;
        let old = c.node(leader).id();
        let t0 = Instant::now();
        c.stop(leader).await;
        let stopped = t0.elapsed();
        let new = eventually(
            "survivors agree on a new leader",
            Duration::from_secs(20),
            || async { new_leader_agreed(&c, old) },
        )
        .await;
        let took = t0.elapsed();
        samples.push(took.as_secs_f64() * 1000.0);
        println!(
            "run {run:2}: leader {old} stopped (in {:.0} ms) → node {new} leads after {:.0} ms",
            stopped.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0
        );
        // Bring the old leader back and let the cluster settle before the next run.
        c.start(leader).await;
        c.membership(3, 0, Duration::from_secs(20)).await;
        eventually("all members reachable", Duration::from_secs(20), || async {
            for (_, n) in c.running() {
                let s = n.status().await;
                if s.leader_id == Some(n.id()) {
                    return s
                        .members
                        .iter()
                        .all(|m| m.reachable == Some(true))
                        .then_some(());
                }
            }
            None
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await; // settle: not a synchronization
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "failover over {} runs: median {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.95),
        samples[0],
        samples[samples.len() - 1]
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run explicitly"]
async fn write_throughput() {
    let writers = env_or("HERD_BENCH_WRITERS", 64);
    let secs = env_or("HERD_BENCH_SECS", 5);
    let c = Arc::new(formed().await);
    let leader = c.agreed_leader(Duration::from_secs(20)).await;
    let done = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for w in 0..writers {
        let c = c.clone();
        let done = done.clone();
        // Even writers use the leader, odd ones a follower (forwarded).
        let via = if w % 2 == 0 {
            leader
        } else {
            (leader + 1 + (w as usize / 2) % 2) % 3
        };
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let t = Instant::now();
                c.node(via)
                    .write(RegistryCommand::Put {
                        key: format!("w{w}-{}", i % 8),
                        value: i.to_string(),
                    })
                    .await
                    .expect("write");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let start = Instant::now();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.expect("writer"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "{} durable writes by {writers} writers in {elapsed:.1} s: {:.0} writes/s; latency p50 {:.1} ms, p99 {:.1} ms",
        done.load(Ordering::Relaxed),
        done.load(Ordering::Relaxed) as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.shutdown().await,
        Err(_) => panic!("writers still hold the cluster"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement; run explicitly"]
async fn idle_stability() {
    let secs = env_or("HERD_IDLE_SECS", 60);
    let c = formed().await;
    let leader = c.agreed_leader(Duration::from_secs(20)).await;
    let term = c.node(leader).status().await.term;
    let mut changes = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut rx = c.node(leader).leader_changes();
    while Instant::now() < end {
        if tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .is_ok()
        {
            changes += 1;
        }
    }
    let now = c.node(leader).status().await;
    println!(
        "idle {secs} s: leadership changes seen by the leader: {changes}; term {term} → {}",
        now.term
    );
    assert_eq!(now.term, term, "no election while idle");
    c.shutdown().await;
}
