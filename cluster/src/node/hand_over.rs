//! A leader whose disk refuses its Raft log writes hands leadership to a healthy voter. The log
//! store holds such writes and retries them (`raft::log_store`), so this node acknowledges
//! nothing meanwhile; as leader it would still count on the others for every commit and keep
//! the master duties on a host that cannot save anything. Once it sees the new leader's term,
//! the vote it must save holds its Raft still until the disk takes writes again; then it
//! catches up as a follower.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::shared::Shared;

/// How long one hand-over may take before it is tried again. A transfer fails when the
/// chosen voter cannot confirm it has the whole log within an election timeout (a loaded
/// host), and the old leader cannot see a successful one (its Raft waits on the disk), so
/// it tries again soon rather than after the 5 s of `herd cluster step-down`.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: whenever `refused` holds while this node leads, steps down.
pub(crate) async fn while_writes_refused(
    shared: Arc<Shared>,
    mut refused: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(ATTEMPT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attempts = 0u32;
    loop {
        let is_refused = *refused.borrow_and_update();
        if !is_refused {
            attempts = 0;
        } else if shared.raft.is_leader() {
            if attempts == 0 {
                tracing::warn!("the disk refuses raft log writes: handing leadership over");
            }
            attempts += 1;
            match shared.step_down_local(ATTEMPT).await {
                Ok(_) => tracing::info!("leadership handed over while the disk refuses writes"),
                Err(e) => tracing::debug!(error = %e, attempts, "leadership not handed over yet"),
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            r = refused.changed() => if r.is_err() { return },
            _ = tick.tick(), if is_refused => {}
        }
    }
}
