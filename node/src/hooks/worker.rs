//! One worker per hook: takes its pending deliveries oldest first, one at a time, and tries
//! each until it succeeds or has used `1 + retries` attempts (then it is a dead letter). The
//! attempts made are written back after each failure, so a daemon restart continues the
//! count. A slow hook holds up only its own queue. Delivery is at least once: a daemon killed
//! between a successful attempt and the removal of the file delivers it again.

use super::delivery::{self, Context};
use super::queue::{Delivery, Store};
use super::spec::HookSpec;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, error, info, info_span, warn};

/// A hook's counters, shown by `herd hooks` (since the daemon started, except `pending`).
#[derive(Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    /// Deliveries that became dead letters.
    pub failed: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// On disk now.
    pub pending: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub last_delivered_ms: AtomicU64,
}

/// Runs `hook`'s queue until the task is aborted (the hook was removed or the daemon stops).
/// `queued` brings the ids of new deliveries (already on disk).
pub async fn run(
    store: Store,
    mut spec: watch::Receiver<HookSpec>,
    mut queued: mpsc::UnboundedReceiver<String>,
    stats: std::sync::Arc<Stats>,
    node: String,
) {
    let name = spec.borrow().name.clone();
    let mut ids: BTreeSet<String> = {
        let (s, n) = (store.clone(), name.clone());
        tokio::task::spawn_blocking(move || s.pending(&n))
            .await
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    stats.pending.store(ids.len() as u64, Ordering::Relaxed);
    if !ids.is_empty() {
        info!(hook = %name, pending = ids.len(), "hook: deliveries pending from before");
    }
    loop {
        while let Ok(id) = queued.try_recv() {
            ids.insert(id);
        }
        let Some(id) = ids.first().cloned() else {
            match queued.recv().await {
                Some(id) => {
                    ids.insert(id);
                    continue;
                }
                None => return,
            }
        };
        let current = spec.borrow_and_update().clone();
        let (s, h, i) = (store.clone(), name.clone(), id.clone());
        let loaded = tokio::task::spawn_blocking(move || s.load(&h, &i)).await;
        let mut d = match loaded {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                // Gone (replayed twice, removed by hand) or unreadable: nothing to send.
                warn!(hook = %name, delivery = %id, error = %e, "hook: cannot read a pending delivery; skipping it");
                ids.remove(&id);
                let (s, h, i) = (store.clone(), name.clone(), id.clone());
                let _ = tokio::task::spawn_blocking(move || s.remove(&h, &i)).await;
                stats.pending.store(ids.len() as u64, Ordering::Relaxed);
                continue;
            }
            Err(_) => return,
        };
        match try_once(&current, &mut d, &node, &stats).await {
            Outcome::Delivered => {
                let (s, h, i) = (store.clone(), name.clone(), id.clone());
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.remove(&h, &i)).await {
                    error!(hook = %name, delivery = %id, error = %e, "hook: delivered, but cannot remove it from the queue (it may be sent again)");
                }
                ids.remove(&id);
            }
            Outcome::GiveUp => {
                d.dead_ms = Some(crate::supervisor::now_ms());
                let s = store.clone();
                let dead = d.clone();
                match tokio::task::spawn_blocking(move || s.bury(&dead, true)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        error!(hook = %name, delivery = %id, error = %e, "hook: cannot write the dead letter; it stays pending")
                    }
                    Err(_) => return,
                }
                stats.failed.fetch_add(1, Ordering::Relaxed);
                warn!(hook = %name, delivery = %id, event = %d.event, app = %d.app, attempts = d.attempts, error = d.last_error.as_deref().unwrap_or(""), "hook: delivery failed for good; kept as a dead letter (`herd hooks replay`)");
                ids.remove(&id);
            }
            Outcome::Retry => {
                let s = store.clone();
                let saved = d.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.update(&saved)).await {
                    warn!(hook = %name, delivery = %id, error = %e, "hook: cannot record the attempt");
                }
                let wait = current.backoff(d.attempts);
                // New deliveries keep arriving meanwhile; a changed spec applies at once.
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        id = queued.recv() => match id {
                            Some(id) => { ids.insert(id); }
                            None => return,
                        },
                        r = spec.changed() => {
                            if r.is_err() { return }
                            break;
                        }
                    }
                }
            }
        }
        // What arrived during the attempt counts as pending too (the dispatcher's bound).
        while let Ok(id) = queued.try_recv() {
            ids.insert(id);
        }
        stats.pending.store(ids.len() as u64, Ordering::Relaxed);
    }
}

enum Outcome {
    Delivered,
    Retry,
    GiveUp,
}

async fn try_once(spec: &HookSpec, d: &mut Delivery, node: &str, stats: &Stats) -> Outcome {
    let Ok(target) = spec.target() else {
        // `validate` made sure it parses; a dead letter rather than a panic all the same.
        d.last_error = Some("the hook's target does not parse".into());
        return Outcome::GiveUp;
    };
    d.attempts = d.attempts.saturating_add(1);
    let span = info_span!("hook_delivery", hook = %spec.name, delivery = %d.id, event = %d.event, app = %d.app, attempt = d.attempts);
    let cx = Context {
        node,
        timeout: spec.timeout(),
    };
    let started = std::time::Instant::now();
    let result = delivery::attempt(&target, d, &cx)
        .instrument(span.clone())
        .await;
    let _enter = span.enter();
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(()) => {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            stats
                .last_delivered_ms
                .store(crate::supervisor::now_ms(), Ordering::Relaxed);
            info!(ms, "hook: delivered");
            Outcome::Delivered
        }
        Err(e) => {
            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            let left = spec.retries.saturating_add(1).saturating_sub(d.attempts);
            warn!(ms, error = %e, retries_left = left, "hook: attempt failed");
            d.last_error = Some(e);
            if left == 0 {
                Outcome::GiveUp
            } else {
                Outcome::Retry
            }
        }
    }
}
