//! herd as a citizen of a systemd host: the daemon's sd_notify messages (`notify`) and the
//! unit that `herd startup` installs (`unit`, rendered from `deploy/herd.service`).

pub mod notify;
pub mod unit;

use crate::home::Home;
use crate::supervisor::Supervisor;
use herd_proto::supervisor as pb;
use notify::Notifier;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Sends `READY=1` once the daemon answers a ping on its own socket — the very call
/// `herd up` waits for — so a unit ordered `After=herd.service` can use the CLI at once.
/// `restore` has run before this starts, so the apps are adopted or started by then.
pub async fn ready_when_serving(notifier: Arc<Notifier>, home: Home, supervisor: Supervisor) {
    let target = crate::cli::client::Target::local(&home);
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(20);
    loop {
        if let Ok(mut c) = crate::cli::client::connect(&target).await
            && c.ping(pb::PingRequest {}).await.is_ok()
        {
            notifier.ready(supervisor.census());
            return;
        }
        tokio::time::sleep(step).await;
        waited += step;
        if waited == Duration::from_secs(10) {
            warn!(socket = %home.socket().display(), "the daemon does not answer on its own socket yet; READY=1 waits for it");
        }
    }
}
