//! What a node knows of its master: the highest term it has accepted (fencing), when it last
//! heard a heartbeat, and how far the master's registry was at that moment. Shared by the
//! heartbeat service (writer) and the reconcile loop (reader).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::LocalSupervisor;

pub(crate) struct AgentState {
    node_id: u64,
    offline_timeout: Duration,
    started: Instant,
    highest_term: AtomicU64,
    contact: Mutex<Contact>,
    /// Bumped when the loop must look again at once: first contact, a reconnect, a new term.
    wake: watch::Sender<u64>,
    supervisor: RwLock<Option<Arc<dyn LocalSupervisor>>>,
    /// The restart generation each instance was last (re)started for, by the reconcile loop.
    generations: Mutex<HashMap<(String, u32), u64>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Contact {
    last: Option<Instant>,
    term: u64,
    master_index: u64,
}

/// The agent's view of its master at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ContactView {
    /// A heartbeat arrived within `offline_timeout` (or the agent started less than that ago).
    pub connected: bool,
    /// A heartbeat arrived at all since the agent started.
    pub heard: bool,
    /// When `connected` turns false unless another heartbeat arrives.
    pub disconnect_at: Instant,
    /// Until when `on_disconnect = "stop"` instances may keep running without another
    /// heartbeat: their graceful stop begins then, before the lease lapses.
    pub singletons_until: Instant,
    /// The master's applied registry index in the latest heartbeat.
    pub master_index: u64,
}

impl AgentState {
    pub(crate) fn new(node_id: u64, offline_timeout: Duration) -> AgentState {
        AgentState {
            node_id,
            offline_timeout,
            started: Instant::now(),
            highest_term: AtomicU64::new(0),
            contact: Mutex::new(Contact::default()),
            wake: watch::channel(0).0,
            supervisor: RwLock::new(None),
            generations: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Checks and records a heartbeat. Refuses (FailedPrecondition) a term below the highest
    /// accepted one or below `local_term` (this node's Raft term), and a heartbeat meant for
    /// another node id (this address was taken over).
    pub(crate) fn accept(
        &self,
        master_id: u64,
        term: u64,
        node_id: u64,
        master_index: u64,
        local_term: u64,
    ) -> Result<(), Status> {
        if node_id != 0 && node_id != self.node_id {
            return Err(Status::failed_precondition(format!(
                "this address serves node {}, not node {node_id}",
                self.node_id
            )));
        }
        let highest = self
            .highest_term
            .fetch_max(term, Ordering::SeqCst)
            .max(term);
        let floor = highest.max(local_term);
        if term < floor {
            tracing::warn!(
                master_id,
                term,
                highest = floor,
                "refused heartbeat from a stale master"
            );
            return Err(Status::failed_precondition(format!(
                "stale master term {term}: this node has seen term {floor}"
            )));
        }
        let now = Instant::now();
        let wake = {
            let mut c = self.contact.lock().unwrap_or_else(|p| p.into_inner());
            let was_connected = c
                .last
                .is_some_and(|last| now.duration_since(last) <= self.offline_timeout);
            let new_term = c.term != term;
            c.last = Some(now);
            c.master_index = if new_term {
                master_index
            } else {
                c.master_index.max(master_index)
            };
            c.term = term;
            !was_connected || new_term
        };
        if let Some(sup) = self.supervisor() {
            sup.renew_lease(self.lease());
        }
        if wake {
            tracing::info!(master_id, term, "master heartbeat: connected");
            self.wake.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// How long singletons may run after a heartbeat: 7/8 of `offline_timeout`, so the lease
    /// lapses before the master (which counts from the reply, later still) may call this node
    /// offline. The agent begins a graceful stop earlier, at 3/4 (`ContactView::singletons_until`).
    pub(crate) fn lease(&self) -> Duration {
        self.offline_timeout * 7 / 8
    }

    pub(crate) fn highest_term(&self) -> u64 {
        self.highest_term.load(Ordering::SeqCst)
    }

    pub(crate) fn view(&self, now: Instant) -> ContactView {
        let c = *self.contact.lock().unwrap_or_else(|p| p.into_inner());
        let since = c.last.unwrap_or(self.started);
        let disconnect_at = since + self.offline_timeout;
        ContactView {
            connected: now < disconnect_at,
            heard: c.last.is_some(),
            disconnect_at,
            singletons_until: since + self.offline_timeout * 3 / 4,
            master_index: c.master_index,
        }
    }

    pub(crate) fn wake_signal(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    pub(crate) fn set_supervisor(&self, sup: Arc<dyn LocalSupervisor>) {
        *self.supervisor.write().unwrap_or_else(|p| p.into_inner()) = Some(sup);
    }

    pub(crate) fn supervisor(&self) -> Option<Arc<dyn LocalSupervisor>> {
        self.supervisor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn generation(&self, app: &str, instance: u32) -> Option<u64> {
        self.generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(app.to_string(), instance))
            .copied()
    }

    pub(crate) fn set_generation(&self, app: &str, instance: u32, generation: u64) {
        self.generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((app.to_string(), instance), generation);
    }

    /// Forgets instances that are no longer desired.
    pub(crate) fn retain_generations(&self, keep: impl Fn(&str, u32) -> bool) {
        self.generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(app, i), _| keep(app, *i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lower_term_is_refused_after_a_higher_one() {
        let s = AgentState::new(7, Duration::from_secs(90));
        s.accept(1, 5, 7, 10, 0).expect("first master");
        s.accept(2, 6, 7, 12, 0).expect("newer master");
        let err = s
            .accept(1, 5, 7, 13, 0)
            .expect_err("stale master is fenced");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert_eq!(s.highest_term(), 6);
        // The local Raft term fences too: a master behind this node's own term is stale.
        let err = s
            .accept(2, 6, 7, 13, 7)
            .expect_err("behind the local raft term");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        s.accept(2, 6, 7, 14, 6).expect("same term again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_for_another_node_id_is_refused() {
        let s = AgentState::new(7, Duration::from_secs(90));
        let err = s.accept(1, 1, 8, 0, 0).expect_err("wrong node id");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        s.accept(1, 1, 0, 0, 0).expect("id 0 means any");
    }

    #[tokio::test(start_paused = true)]
    async fn contact_lapses_after_the_offline_timeout_and_counts_from_start_first() {
        let timeout = Duration::from_secs(90);
        let s = AgentState::new(1, timeout);
        let v = s.view(Instant::now());
        assert!(
            v.connected && !v.heard,
            "a fresh agent gives its master time"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        s.accept(9, 1, 1, 3, 0).expect("heartbeat");
        tokio::time::advance(Duration::from_secs(89)).await;
        assert!(s.view(Instant::now()).connected);
        tokio::time::advance(Duration::from_secs(2)).await;
        let v = s.view(Instant::now());
        assert!(!v.connected && v.heard);
        assert_eq!(v.master_index, 3);
        let wake = s.wake_signal();
        s.accept(9, 1, 1, 4, 0).expect("master is back");
        assert!(
            wake.has_changed().expect("sender alive"),
            "a reconnect wakes the loop"
        );
    }
}
