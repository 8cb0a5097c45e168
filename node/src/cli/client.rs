//! Connecting to the local daemon over its Unix socket.

use crate::home::Home;
use anyhow::Context;
use herd_proto::supervisor::supervisor_client::SupervisorClient;
use tonic::transport::{Channel, Endpoint};

pub type Client = SupervisorClient<Channel>;

#[derive(Debug, thiserror::Error)]
#[error("herd is not running (no daemon answers on {socket}); start it with `herd up`")]
pub struct NotRunning {
    pub socket: String,
}

pub async fn connect(home: &Home) -> anyhow::Result<Client> {
    Ok(SupervisorClient::new(channel(home).await?).max_decoding_message_size(64 * 1024 * 1024))
}

/// A channel to the daemon's socket, for any of its services.
pub async fn channel(home: &Home) -> anyhow::Result<Channel> {
    let socket = home.socket();
    if !socket.exists() {
        return Err(NotRunning {
            socket: socket.display().to_string(),
        }
        .into());
    }
    let endpoint =
        Endpoint::from_shared(format!("unix://{}", socket.display())).context("bad socket path")?;
    match endpoint.connect().await {
        Ok(ch) => Ok(ch),
        Err(_) => Err(NotRunning {
            socket: socket.display().to_string(),
        }
        .into()),
    }
}

/// Turns a gRPC error into the daemon's own message.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}
