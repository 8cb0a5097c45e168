//! Fuzzing the daemon's request path end to end: a real daemon with its TCP API on, and
//! proptest-generated request bodies sent to every gRPC method it serves (the Supervisor,
//! ClusterAdmin, Access and Hooks services; `Shutdown` excepted, which may legitimately stop it):
//! arbitrary bytes (most do not decode, some decode to odd messages) and well-formed messages
//! with hostile field values (odd names, huge counts and timeouts, random TOML). Every call
//! must be answered, with a reply or an error, and the daemon must live through all of them
//! without a panic in its log.
//!
//! `PROPTEST_CASES` sets the number of calls (default 256 here); `scripts/fuzz` runs it long.

mod common;

use bytes::{Buf, BufMut};
use common::*;
use herd_proto::supervisor as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

const TOKEN: &str = "fuzz-token-0123456789abcdef";

/// Bytes in, bytes out: the body goes on the wire as given.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// Every method of the API, by path, with whether it streams its reply.
const METHODS: &[(&str, bool)] = &[
    ("/herd.supervisor.Supervisor/Ping", false),
    ("/herd.supervisor.Supervisor/Apply", false),
    ("/herd.supervisor.Supervisor/Start", false),
    ("/herd.supervisor.Supervisor/Stop", false),
    ("/herd.supervisor.Supervisor/Restart", false),
    ("/herd.supervisor.Supervisor/Delete", false),
    ("/herd.supervisor.Supervisor/Scale", false),
    ("/herd.supervisor.Supervisor/List", false),
    ("/herd.supervisor.Supervisor/Inspect", false),
    ("/herd.supervisor.Supervisor/Logs", true),
    ("/herd.supervisor.Supervisor/Reload", false),
    ("/herd.supervisor.Supervisor/Metrics", false),
    ("/herd.supervisor.Supervisor/Events", true),
    ("/herd.supervisor.Supervisor/Graph", false),
    ("/herd.supervisor.Supervisor/ReloadConfig", false),
    ("/herd.supervisor.Supervisor/Watch", false),
    ("/herd.supervisor.ClusterAdmin/Status", false),
    ("/herd.supervisor.ClusterAdmin/StepDown", false),
    ("/herd.supervisor.ClusterAdmin/Leave", false),
    ("/herd.supervisor.ClusterAdmin/Deploy", false),
    ("/herd.supervisor.ClusterAdmin/Undeploy", false),
    ("/herd.supervisor.ClusterAdmin/Apps", false),
    ("/herd.supervisor.ClusterAdmin/Scale", false),
    ("/herd.supervisor.ClusterAdmin/Uptime", false),
    ("/herd.supervisor.ClusterAdmin/Drain", false),
    ("/herd.supervisor.ClusterAdmin/RestartApp", false),
    ("/herd.supervisor.Access/CreateToken", false),
    ("/herd.supervisor.Access/ListTokens", false),
    ("/herd.supervisor.Access/RevokeToken", false),
    ("/herd.supervisor.Access/PutSecret", false),
    ("/herd.supervisor.Access/ListSecrets", false),
    ("/herd.supervisor.Access/DeleteSecret", false),
    ("/herd.supervisor.Access/GetSecret", false),
    ("/herd.supervisor.Hooks/List", false),
    ("/herd.supervisor.Hooks/Dead", false),
    ("/herd.supervisor.Hooks/Replay", false),
];

/// Names that reach past validation: real ones, odd ones, hostile ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("fuzzed".to_string()),
        Just("fuzzed@0".to_string()),
        Just("../../etc/passwd".to_string()),
        Just(String::new()),
        "[a-z/._-]{0,12}",
        any::<String>(),
        Just("x".repeat(100_000)),
    ]
}

/// A well-formed message of some request type, with hostile values.
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        name().prop_map(|name| pb::NameRequest { name }.encode_to_vec()),
        (name(), any::<Option<u64>>()).prop_map(|(name, timeout_s)| pb::StopRequest {
            name,
            timeout_s
        }
        .encode_to_vec()),
        // Scaling the real app stays small (every instance is a real process).
        (name(), prop_oneof![0u32..4, any::<u32>()]).prop_map(|(name, instances)| {
            let instances = if name == "fuzzed" {
                instances % 4
            } else {
                instances
            };
            pb::ScaleRequest { name, instances }.encode_to_vec()
        }),
        (name(), any::<u32>(), any::<Option<u64>>()).prop_map(|(name, lines, run)| {
            // follow = false: a followed stream would only end at the call's deadline.
            pb::LogsRequest {
                name,
                lines,
                follow: false,
                run,
            }
            .encode_to_vec()
        }),
        (any::<String>(), any::<String>(), any::<String>()).prop_map(|(source, base_dir, toml)| {
            pb::ApplyRequest {
                source,
                base_dir,
                toml,
            }
            .encode_to_vec()
        }),
        (name(), any::<String>(), any::<Option<u64>>()).prop_map(|(name, role, ttl_s)| {
            pb::CreateTokenRequest { role, name, ttl_s }.encode_to_vec()
        }),
        (name(), any::<bool>())
            .prop_map(|(name, on)| pb::WatchRequest { name, on }.encode_to_vec()),
        (name(), proptest::collection::vec(any::<u8>(), 0..512))
            .prop_map(|(name, value)| pb::PutSecretRequest { name, value }.encode_to_vec()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..1024), message()]
}

async fn call(channel: &Channel, path: &'static str, streams: bool, body: Vec<u8>) -> bool {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if grpc.ready().await.is_err() {
        return false;
    }
    let mut req = tonic::Request::new(body);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let path = http::uri::PathAndQuery::from_static(path);
    if streams {
        match grpc.server_streaming(req, path, Raw).await {
            Ok(resp) => {
                let mut s = resp.into_inner();
                // Read a little, then hang up: a long stream is not the point.
                for _ in 0..4 {
                    match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                        Ok(Ok(Some(_))) => continue,
                        _ => break,
                    }
                }
                true
            }
            Err(status) => answered_properly(&status),
        }
    } else {
        match grpc.unary(req, path, Raw).await {
            Ok(_) => true,
            Err(status) => answered_properly(&status),
        }
    }
}

/// An error the daemon chose to send, not a broken connection.
fn answered_properly(status: &tonic::Status) -> bool {
    let broken = status.message().contains("connection")
        || (status.code() == tonic::Code::Unknown && status.message().contains("transport"));
    !broken
}

#[test]
fn every_method_answers_hostile_requests_and_the_daemon_lives() {
    let herd = Herd::new();
    std::fs::create_dir_all(herd.home.path()).unwrap();
    let token = herd.path("api.token");
    std::fs::write(&token, TOKEN).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        herd.path("config.toml"),
        format!(
            "[api]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    herd.ok(&["up"]);
    let file = herd.app_file(
        "fuzzed.toml",
        "[[app]]\nname = \"fuzzed\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    herd.ok(&["start", &file]);
    let daemon = herd.daemon_pid().expect("daemon pid");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .expect("connect to the TCP API")
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let calls = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&(0..METHODS.len(), body()), |(m, body)| {
        let (path, streams) = METHODS[m];
        let answered = rt.block_on(call(&channel, path, streams, body));
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        prop_assert!(answered, "{path} was not answered");
        prop_assert!(alive(daemon), "the daemon died on {path}");
        Ok(())
    });
    if let Err(e) = result {
        let log = std::fs::read_to_string(herd.path("daemon.log")).unwrap_or_default();
        panic!("{e}\n--- daemon.log ---\n{log}");
    }
    eprintln!(
        "fuzz_api: {} calls answered",
        calls.load(std::sync::atomic::Ordering::Relaxed)
    );
    herd.ok(&["ping"]);
    assert_eq!(herd.daemon_pid(), Some(daemon));
    let log = std::fs::read_to_string(herd.path("daemon.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "a handler panicked:\n{log}");
}
