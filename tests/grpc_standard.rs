//! Standard gRPC tooling against a real daemon: health (`grpc.health.v1`) answers on the Unix
//! socket and, without a token, on the TCP API; reflection (`grpc.reflection.v1`) lists herd's
//! services on the socket and, on TCP, only for a caller with a token; a watch left open does
//! not keep `herd down` from finishing.

mod common;

use common::*;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const TOKEN: &str = "grpc-standard-token-0123456789";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn health(channel: Channel, service: &str) -> Result<i32, tonic::Status> {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(reply.into_inner().status)
}

/// The service names reflection lists, with `token` as a bearer if given.
async fn listed(channel: Channel, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let mut req = tonic::Request::new(tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(req)
        .await?
        .into_inner();
    let reply = stream.next().await.expect("one reply")?;
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected reflection reply: {other:?}"),
    }
}

#[test]
fn health_and_reflection_answer_standard_clients_and_reflection_over_tcp_needs_a_token() {
    let herd = Herd::new();
    std::fs::create_dir_all(herd.home.path()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let token_file = herd.path("api.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        herd.path("config.toml"),
        format!(
            "[api]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    herd.ok(&["up"]);
    let socket = herd.path("daemon.sock");
    let rt = runtime();
    let watch = rt.block_on(async {
        let local = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .unwrap()
            .connect()
            .await
            .expect("the socket answers");
        let tcp = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("the TCP API answers");

        for service in ["", "herd.supervisor.Supervisor", "herd.supervisor.Access"] {
            assert_eq!(
                health(local.clone(), service).await.expect("socket health"),
                ServingStatus::Serving as i32,
                "socket, service {service:?}"
            );
            assert_eq!(
                health(tcp.clone(), service)
                    .await
                    .expect("tcp health, no token"),
                ServingStatus::Serving as i32,
                "tcp, service {service:?}"
            );
        }
        let unknown = health(tcp.clone(), "no.such.Service").await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

        let services = listed(local.clone(), None)
            .await
            .expect("socket reflection");
        for s in [
            "herd.supervisor.Supervisor",
            "herd.supervisor.ClusterAdmin",
            "herd.supervisor.Access",
        ] {
            assert!(services.iter().any(|x| x == s), "{s} in {services:?}");
        }
        let refused = listed(tcp.clone(), None).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        let wrong = listed(tcp.clone(), Some("not-the-token-0123456789"))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
        let remote = listed(tcp.clone(), Some(TOKEN))
            .await
            .expect("tcp reflection");
        assert!(
            remote.iter().any(|x| x == "herd.supervisor.Supervisor"),
            "{remote:?}"
        );
        // A watcher that never hangs up (load balancers watch health).
        HealthClient::new(local)
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health watch")
            .into_inner()
    });
    // The open watch must not keep the daemon from going down (it did: `down` timed out).
    herd.ok(&["down"]);
    drop(watch);
}
