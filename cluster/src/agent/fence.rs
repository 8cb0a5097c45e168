//! What a node knows of its master: the highest term it has accepted (fencing), when it last
//! heard a heartbeat, how far the master's registry was at that moment, and the singleton
//! lease. Shared by the heartbeat service (writer) and the reconcile loop (reader).
//!
//! The lease is granted by acknowledgement, not by a heartbeat's arrival. Each reply carries a
//! sequence number and this node remembers when it sent it; the master echoes the latest reply
//! it received in its next heartbeat, and only then does the lease run, from when that reply
//! was *sent*. The master counts a node's silence from when it *received* that reply, which is
//! later, so the lease always lapses before the master may call the node offline — even when a
//! heartbeat reaches this node late: one that sat in a socket while the host was frozen or cut
//! off acknowledges an old reply and grants nothing.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::LocalSupervisor;
use super::heartbeat::Heartbeat;
use super::heartbeat::Refusal;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use crate::NodeId;
use crate::Term;

/// Metadata on a heartbeat refused because the master's term is stale: the highest term this
/// node has seen. The master counts fenced heartbeats by this key, not by the message.
pub(crate) const STALE_TERM: &str = "x-herd-stale-term";

/// The refusal of a heartbeat from a master in `term`, behind the `seen` term, as it crosses
/// gRPC: the message masters read, and the term seen in the `STALE_TERM` metadata key.
pub(crate) fn stale_term(term: Term, seen: Term) -> Status {
    let mut status = Status::failed_precondition(format!(
        "stale master term {term}: this node has seen term {seen}"
    ));
    if let Ok(v) = seen.to_string().parse() {
        status.metadata_mut().insert(STALE_TERM, v);
    }
    status
}

/// The term a heartbeat refusal says this master is behind, if it is a stale-term refusal.
pub(crate) fn refused_as_stale(status: &Status) -> Option<Term> {
    status
        .metadata()
        .get(STALE_TERM)?
        .to_str()
        .ok()?
        .parse()
        .ok()
        .map(Term)
}

pub(crate) struct AgentState {
    node_id: NodeId,
    offline_timeout: Duration,
    started: Instant,
    highest_term: AtomicU64,
    contact: Mutex<Contact>,
    /// Bumped when the loop must look again at once: first contact, a reconnect, a new term.
    wake: watch::Sender<u64>,
    supervisor: RwLock<Option<Arc<dyn LocalSupervisor>>>,
    /// The restart generation each instance was last (re)started for, by the reconcile loop.
    generations: Mutex<HashMap<(String, u32), u64>>,
    /// The master of the latest accepted heartbeat and its address: where a node outside Raft
    /// sends what only the leader serves.
    master: Mutex<Option<(NodeId, String)>>,
}

/// Replies remembered for the master's acknowledgement (one per heartbeat).
const REPLIES_KEPT: usize = 32;

#[derive(Clone, Debug, Default)]
struct Contact {
    last: Option<Instant>,
    term: Term,
    slice_version: u64,
    /// The recent replies (sequence number, when sent), newest last.
    replies: VecDeque<(u64, Instant)>,
    /// When the latest acknowledged reply was sent: the lease runs from there.
    lease_from: Option<Instant>,
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
    /// acknowledgement: their graceful stop begins then, 3/4 into the lease.
    pub singletons_until: Instant,
    /// When the lease runs from (the latest acknowledged reply was sent), if ever granted.
    pub lease_from: Option<Instant>,
    /// The version of this node's slice named by the latest heartbeat (the highest within a term).
    pub slice_version: u64,
}

/// A node's singleton lease for a cluster whose nodes go offline after `offline_timeout`.
pub(crate) fn lease_length(offline_timeout: Duration) -> Duration {
    offline_timeout * 7 / 8
}

impl AgentState {
    pub(crate) fn new(node_id: NodeId, offline_timeout: Duration) -> AgentState {
        AgentState {
            node_id,
            offline_timeout,
            started: crate::clock::now(),
            highest_term: AtomicU64::new(0),
            contact: Mutex::new(Contact::default()),
            wake: watch::channel(0).0,
            supervisor: RwLock::new(None),
            generations: Mutex::new(HashMap::new()),
            master: Mutex::new(None),
        }
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Remembers the master of a heartbeat just accepted.
    pub(crate) fn note_master(&self, id: NodeId, addr: &str) {
        let mut m = self.master.lock().unwrap_or_else(|p| p.into_inner());
        if m.as_ref().is_none_or(|(i, a)| *i != id || a != addr) {
            *m = Some((id, addr.to_string()));
        }
    }

    /// The master of the latest accepted heartbeat, and its address.
    pub(crate) fn master(&self) -> Option<(NodeId, String)> {
        self.master
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How long since the last accepted heartbeat (`None`: none yet).
    pub(crate) fn silent_for(&self) -> Option<Duration> {
        let c = self.contact.lock().unwrap_or_else(|p| p.into_inner());
        c.last.map(|last| last.elapsed())
    }

    /// Checks and records a heartbeat; returns the sequence number for the reply. Refuses a
    /// term below the highest accepted one or below `local_term` (this node's Raft term), and a
    /// heartbeat meant for another node id (this address was taken over). `lease_ack` is the
    /// reply the master last received (0: none).
    pub(crate) fn accept(&self, hb: &Heartbeat, local_term: Term) -> Result<u64, Refusal> {
        let Heartbeat {
            master_id,
            term,
            node_id,
            slice_version,
            lease_ack,
        } = *hb;
        if let Some(asked) = node_id
            && asked != self.node_id
        {
            return Err(Refusal::WrongNode {
                serves: self.node_id,
                asked,
            });
        }
        let highest = Term(
            self.highest_term
                .fetch_max(term.get(), Ordering::SeqCst)
                .max(term.get()),
        );
        let floor = highest.max(local_term);
        if term < floor {
            tracing::warn!(
                master_id = master_id.get(),
                term = term.get(),
                highest = floor.get(),
                "refused heartbeat from a stale master"
            );
            return Err(Refusal::StaleTerm { term, seen: floor });
        }
        let now = crate::clock::now();
        let (seq, connected, granted, newer_slice) = {
            let mut c = self.contact.lock().unwrap_or_else(|p| p.into_inner());
            let was_connected = c
                .last
                .is_some_and(|last| now.duration_since(last) <= self.offline_timeout);
            let new_term = c.term != term;
            c.last = Some(now);
            let before = c.slice_version;
            c.slice_version = if new_term {
                slice_version
            } else {
                c.slice_version.max(slice_version)
            };
            let newer_slice = c.slice_version != before;
            c.term = term;
            let acked = c
                .replies
                .iter()
                .find(|(seq, _)| *seq == lease_ack && lease_ack != 0)
                .map(|(_, sent)| *sent);
            let granted = match acked {
                Some(sent) if c.lease_from.is_none_or(|from| sent > from) => {
                    c.lease_from = Some(sent);
                    true
                }
                _ => false,
            };
            let seq = c.replies.back().map_or(0, |r| r.0) + 1;
            c.replies.push_back((seq, now));
            if c.replies.len() > REPLIES_KEPT {
                c.replies.pop_front();
            }
            (seq, !was_connected || new_term, granted, newer_slice)
        };
        if connected {
            tracing::info!(
                master_id = master_id.get(),
                term = term.get(),
                "master heartbeat: connected"
            );
        }
        if connected || granted || newer_slice {
            self.wake.send_modify(|n| *n += 1);
        }
        Ok(seq)
    }

    /// How long singletons may run from the acknowledged reply: 7/8 of `offline_timeout`, so
    /// the lease lapses before the master (which counts from receiving that reply, later still)
    /// may call this node offline. The agent begins a graceful stop earlier, at 3/4
    /// (`ContactView::singletons_until`).
    pub(crate) fn lease(&self) -> Duration {
        lease_length(self.offline_timeout)
    }

    /// Two heartbeats, the second acknowledging the first reply: contact and a lease.
    #[cfg(test)]
    pub(crate) fn heartbeat_with_lease(&self, term: u64, slice_version: u64) {
        let term = Term(term);
        let hb = |lease_ack| Heartbeat {
            master_id: NodeId(9),
            term,
            node_id: None,
            slice_version,
            lease_ack,
        };
        let seq = self.accept(&hb(0), Term(0)).expect("heartbeat");
        self.accept(&hb(seq), Term(0))
            .expect("acknowledging heartbeat");
    }

    pub(crate) fn highest_term(&self) -> Term {
        Term(self.highest_term.load(Ordering::SeqCst))
    }

    pub(crate) fn view(&self, now: Instant) -> ContactView {
        let c = self.contact.lock().unwrap_or_else(|p| p.into_inner());
        let since = c.last.unwrap_or(self.started);
        let disconnect_at = since + self.offline_timeout;
        ContactView {
            connected: now < disconnect_at,
            heard: c.last.is_some(),
            disconnect_at,
            // Never granted: already over (the instant is in the past for any `now` given).
            singletons_until: c
                .lease_from
                .map_or(self.started, |from| from + self.offline_timeout * 3 / 4),
            lease_from: c.lease_from,
            slice_version: c.slice_version,
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

    fn hb(
        master_id: u64,
        term: u64,
        node_id: u64,
        slice_version: u64,
        lease_ack: u64,
    ) -> Heartbeat {
        Heartbeat {
            master_id: NodeId(master_id),
            term: Term(term),
            node_id: (node_id != 0).then_some(NodeId(node_id)),
            slice_version,
            lease_ack,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_term_is_refused_after_a_higher_one() {
        let s = AgentState::new(NodeId(7), Duration::from_secs(90));
        s.accept(&hb(1, 5, 7, 10, 0), Term(0))
            .expect("first master");
        s.accept(&hb(2, 6, 7, 12, 0), Term(0))
            .expect("newer master");
        let err = s
            .accept(&hb(1, 5, 7, 13, 0), Term(0))
            .expect_err("stale master is fenced");
        assert_eq!(
            err,
            Refusal::StaleTerm {
                term: Term(5),
                seen: Term(6)
            }
        );
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            refused_as_stale(&status),
            Some(Term(6)),
            "typed: the term seen"
        );
        assert_eq!(s.highest_term(), Term(6));
        // The local Raft term fences too: a master behind this node's own term is stale.
        let err = s
            .accept(&hb(2, 6, 7, 13, 0), Term(7))
            .expect_err("behind the local raft term");
        assert_eq!(
            err,
            Refusal::StaleTerm {
                term: Term(6),
                seen: Term(7)
            }
        );
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::FailedPrecondition
        );
        s.accept(&hb(2, 6, 7, 14, 0), Term(6))
            .expect("same term again");
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_runs_from_the_acknowledged_reply_so_a_late_heartbeat_grants_nothing() {
        let timeout = Duration::from_secs(80); // lease 70 s, graceful stop from 60 s
        let s = AgentState::new(NodeId(1), timeout);
        let start = crate::clock::now();
        let first = s.accept(&hb(9, 1, 1, 3, 0), Term(0)).expect("heartbeat");
        assert_eq!(s.view(start).lease_from, None, "no reply acknowledged yet");
        assert!(
            start >= s.view(start).singletons_until,
            "no lease, no singletons"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let second = s
            .accept(&hb(9, 1, 1, 3, first), Term(0))
            .expect("heartbeat");
        let v = s.view(crate::clock::now());
        assert_eq!(
            v.lease_from,
            Some(start),
            "from when the first reply was sent"
        );
        assert_eq!(v.singletons_until, start + Duration::from_secs(60));
        // The host freezes for 100 s; the heartbeat waiting in its socket acknowledges the
        // reply sent before the freeze: the lease it grants is long over.
        tokio::time::advance(Duration::from_secs(100)).await;
        let late = s
            .accept(&hb(9, 1, 1, 3, second), Term(0))
            .expect("late heartbeat");
        let now = crate::clock::now();
        let v = s.view(now);
        assert_eq!(v.lease_from, Some(start + Duration::from_secs(2)));
        assert!(v.singletons_until < now && v.lease_from.unwrap() + s.lease() < now);
        // An unknown or repeated acknowledgement changes nothing; a fresh one renews.
        s.accept(&hb(9, 1, 1, 3, 999), Term(0)).expect("heartbeat");
        s.accept(&hb(9, 1, 1, 3, first), Term(0))
            .expect("heartbeat");
        assert_eq!(s.view(now).lease_from, Some(start + Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        s.accept(&hb(9, 1, 1, 3, late), Term(0)).expect("heartbeat");
        assert_eq!(s.view(crate::clock::now()).lease_from, Some(now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_for_another_node_id_is_refused() {
        let s = AgentState::new(NodeId(7), Duration::from_secs(90));
        let err = s
            .accept(&hb(1, 1, 8, 0, 0), Term(0))
            .expect_err("wrong node id");
        assert_eq!(
            err,
            Refusal::WrongNode {
                serves: NodeId(7),
                asked: NodeId(8)
            }
        );
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::FailedPrecondition
        );
        s.accept(&hb(1, 1, 0, 0, 0), Term(0))
            .expect("id 0 means any");
    }

    #[tokio::test(start_paused = true)]
    async fn contact_lapses_after_the_offline_timeout_and_counts_from_start_first() {
        let timeout = Duration::from_secs(90);
        let s = AgentState::new(NodeId(1), timeout);
        let v = s.view(crate::clock::now());
        assert!(
            v.connected && !v.heard,
            "a fresh agent gives its master time"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        s.accept(&hb(9, 1, 1, 3, 0), Term(0)).expect("heartbeat");
        tokio::time::advance(Duration::from_secs(89)).await;
        assert!(s.view(crate::clock::now()).connected);
        tokio::time::advance(Duration::from_secs(2)).await;
        let v = s.view(crate::clock::now());
        assert!(!v.connected && v.heard);
        assert_eq!(v.slice_version, 3);
        let wake = s.wake_signal();
        s.accept(&hb(9, 1, 1, 4, 0), Term(0))
            .expect("master is back");
        assert!(
            wake.has_changed().expect("sender alive"),
            "a reconnect wakes the loop"
        );
    }
}
