//! The write load, the same for both tools: N clients, each on its own connection to one
//! member (client k to member k mod 3), each writing its own small key (16-byte values) again
//! and again, one write in flight per client, for a fixed time. A write counts once the
//! tool acknowledges it, which both do only after a majority has it on disk.
//!
//! herd: `Access/PutSecret` over each daemon's Unix socket (the `herd secret put` call; a
//! registry write committed through Raft). etcd: `etcdserverpb.KV/Put` over gRPC on TCP
//! (what `etcdctl put` sends).

use crate::error::{Context, Result};
use herd_proto::supervisor::{PutSecretRequest, access_client::AccessClient};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// What one load run did.
#[derive(Debug, Clone)]
pub struct Load {
    pub clients: usize,
    pub writes: u64,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Load {
    pub fn per_s(&self) -> f64 {
        self.writes as f64 / self.secs
    }
}

/// herd: client k puts secret `bench/cK` through the daemon behind `sockets[k % 3]`.
pub fn herd(sockets: &[PathBuf], clients: usize, secs: u64) -> Result<Load> {
    let targets: Vec<String> = sockets
        .iter()
        .map(|s| format!("unix://{}", s.display()))
        .collect();
    drive(&targets, clients, secs, |channel, k| {
        let client = AccessClient::new(channel);
        move |n: u64| {
            let mut client = client.clone();
            async move {
                client
                    .put_secret(PutSecretRequest {
                        name: format!("bench/c{k}"),
                        value: format!("{n:016}").into_bytes(),
                    })
                    .await
                    .map(drop)
            }
        }
    })
}

/// etcd: client k puts key `bench/cK` through the member at `endpoints[k % 3]`.
pub fn etcd(endpoints: &[String], clients: usize, secs: u64) -> Result<Load> {
    drive(endpoints, clients, secs, |channel, k| {
        let grpc = tonic::client::Grpc::new(channel);
        move |n: u64| {
            let mut grpc = grpc.clone();
            async move {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let path =
                    tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
                let codec = tonic_prost::ProstCodec::<EtcdPut, EtcdPutReply>::default();
                let put = EtcdPut {
                    key: format!("bench/c{k}").into_bytes(),
                    value: format!("{n:016}").into_bytes(),
                };
                grpc.unary(tonic::Request::new(put), path, codec)
                    .await
                    .map(drop)
            }
        }
    })
}

/// etcd's `PutRequest`: only the fields the load sets (etcd's `rpc.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdPut {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// etcd's `PutResponse`; its header is not needed.
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdPutReply {}

/// Connects every client first (one connection each), then starts them together; each
/// writes until the time is up, and the run lasts until the last write in flight returns.
fn drive<W, P, F>(targets: &[String], clients: usize, secs: u64, make: W) -> Result<Load>
where
    W: Fn(Channel, usize) -> P,
    P: FnMut(u64) -> F + Send + 'static,
    F: Future<Output = std::result::Result<(), tonic::Status>> + Send,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context(|| "cannot start the load's tokio runtime".to_string())?;
    runtime.block_on(async {
        let mut puts = Vec::with_capacity(clients);
        for k in 0..clients {
            let target = &targets[k % targets.len()];
            let channel = Endpoint::from_shared(target.clone())
                .context(|| format!("bad endpoint {target}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .context(|| format!("client {k}: cannot connect to {target}"))?;
            puts.push(make(channel, k));
        }
        let start = Instant::now();
        let stop_at = start + Duration::from_secs(secs);
        let tasks: Vec<_> = puts
            .into_iter()
            .enumerate()
            .map(|(k, mut put)| {
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < stop_at {
                        let t = Instant::now();
                        put(n)
                            .await
                            .map_err(|s| format!("client {k}, write {n}: {}", s.message()))?;
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        n += 1;
                    }
                    Ok::<_, String>(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.context(|| "a load client panicked".to_string())??);
        }
        let secs = start.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        Ok(Load {
            clients,
            writes: latencies.len() as u64,
            secs,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        })
    })
}
