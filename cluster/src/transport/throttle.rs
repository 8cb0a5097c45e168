//! Failed-auth backoff and rate-limited refusal logging, per peer (the TCP API's tokens; the
//! cluster port uses only the logging, see `node::serve`).
//!
//! Like OpenSSH's `PerSourcePenalties`: after `FAILS_BEFORE_PENALTY` wrong or missing tokens a
//! peer is refused outright — every call and every new connection, even with the right token,
//! so the penalty cannot be used to keep guessing — for a penalty that doubles with each
//! repeat (1 s up to 5 min) and is forgotten after a quiet spell. Other peers are not
//! affected. A peer is an IPv4 address or an IPv6 /64 (one host's usual allocation).
//!
//! Refusals are logged at most once per peer per minute ("N refusals from IP in the last
//! minute") and at most `MAX_LINES_PER_MINUTE` lines a minute in all, so a flood cannot push
//! the daemon log's history out. The map holds at most `MAX_PEERS` peers; the stalest goes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

const FAILS_BEFORE_PENALTY: u32 = 5;
const FIRST_PENALTY: Duration = Duration::from_secs(1);
const MAX_PENALTY: Duration = Duration::from_secs(300);
/// A peer quiet this long is forgotten (its penalty level too).
const FORGET_AFTER: Duration = Duration::from_secs(900);
const LOG_EVERY: Duration = Duration::from_secs(60);
const MAX_LINES_PER_MINUTE: u32 = 20;
const MAX_PEERS: usize = 4096;

/// Who a limit applies to: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey(IpAddr);

impl PeerKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

#[derive(Debug)]
struct Peer {
    /// Wrong tokens since the last penalty.
    fails: u32,
    /// Penalties so far: the next one lasts `FIRST_PENALTY * 2^strikes`.
    strikes: u32,
    penalty_until: Option<Instant>,
    last_seen: Instant,
    /// Refusals not yet in a log line, and the last reason.
    unlogged: u64,
    reason: String,
    last_logged: Option<Instant>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            fails: 0,
            strikes: 0,
            penalty_until: None,
            last_seen: now,
            unlogged: 0,
            reason: String::new(),
            last_logged: None,
        }
    }

    /// The line that logs this peer's unlogged refusals; counts them as logged.
    fn take_line(&mut self, key: PeerKey, now: Instant) -> LogLine {
        let line = LogLine {
            peer: key.to_string(),
            refusals: self.unlogged,
            reason: self.reason.clone(),
            penalty_s: self
                .penalty_until
                .filter(|u| *u > now)
                .map_or(0, |u| (u - now).as_secs().max(1)),
        };
        self.last_logged = Some(now);
        self.unlogged = 0;
        line
    }
}

#[derive(Debug, Default)]
struct Book {
    peers: HashMap<PeerKey, Peer>,
    /// The global line budget's minute, its spend, and what it had to leave out.
    minute_start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

/// A line the throttle wants in the daemon log.
#[derive(Debug, PartialEq)]
pub struct LogLine {
    pub peer: String,
    pub refusals: u64,
    pub reason: String,
    pub penalty_s: u64,
}

/// What a wrong token led to.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The peer has just entered a penalty: hang up on its connections.
    pub penalty_started: bool,
}

#[derive(Debug)]
pub struct AuthThrottle {
    book: Mutex<Book>,
    /// What is refused, for the log: "API call", "cluster RPC".
    noun: &'static str,
}

impl AuthThrottle {
    pub fn new(noun: &'static str) -> Self {
        Self {
            book: Mutex::default(),
            noun,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `key` is still refused outright, if at all.
    pub fn penalty_left(&self, key: PeerKey, now: Instant) -> Option<Duration> {
        let book = self.book();
        let until = book.peers.get(&key)?.penalty_until?;
        (until > now).then(|| until - now)
    }

    /// A wrong or missing token from `ip`.
    pub fn failed(&self, ip: IpAddr, reason: &str, now: Instant) -> Verdict {
        let (verdict, line) = self.note(ip, reason, now, true);
        self.emit(line);
        verdict
    }

    /// A call or connection refused without looking at a token (cap, penalty).
    pub fn refused(&self, ip: IpAddr, reason: &str, now: Instant) {
        self.emit(self.note(ip, reason, now, false).1);
    }

    fn note(
        &self,
        ip: IpAddr,
        reason: &str,
        now: Instant,
        wrong_token: bool,
    ) -> (Verdict, Option<LogLine>) {
        let key = PeerKey::of(ip);
        let mut book = self.book();
        if !book.peers.contains_key(&key) && book.peers.len() >= MAX_PEERS {
            evict_stalest(&mut book.peers, now);
        }
        let peer = book.peers.entry(key).or_insert_with(|| Peer::new(now));
        peer.last_seen = now;
        peer.unlogged += 1;
        peer.reason = reason.to_string();
        let mut penalty_started = false;
        if wrong_token && peer.penalty_until.is_none_or(|u| u <= now) {
            peer.fails += 1;
            if peer.fails >= FAILS_BEFORE_PENALTY {
                let length = FIRST_PENALTY
                    .saturating_mul(1u32 << peer.strikes.min(16))
                    .min(MAX_PENALTY);
                peer.penalty_until = Some(now + length);
                peer.strikes = peer.strikes.saturating_add(1);
                peer.fails = 0;
                penalty_started = true;
            }
        }
        let due = peer.last_logged.is_none_or(|t| now >= t + LOG_EVERY);
        let line = if due {
            let line = peer.take_line(key, now);
            spend_line(&mut book, now).then_some(line)
        } else {
            None
        };
        (Verdict { penalty_started }, line)
    }

    /// A right token from `ip`: its count of wrong ones starts again (its penalty level stays).
    pub fn succeeded(&self, ip: IpAddr) {
        if let Some(p) = self.book().peers.get_mut(&PeerKey::of(ip)) {
            p.fails = 0;
        }
    }

    /// Run about once a minute: logs the refusals counted since each peer's last line and
    /// forgets quiet peers.
    pub fn flush(&self, now: Instant) -> Vec<LogLine> {
        let mut book = self.book();
        let mut lines = Vec::new();
        let mut budget_left = true;
        let keys: Vec<PeerKey> = book.peers.keys().copied().collect();
        for key in keys {
            let Some(peer) = book.peers.get_mut(&key) else {
                continue;
            };
            let due = peer.unlogged > 0 && peer.last_logged.is_none_or(|t| now >= t + LOG_EVERY);
            if due {
                let line = peer.take_line(key, now);
                budget_left = budget_left && spend_line(&mut book, now);
                if budget_left {
                    lines.push(line);
                }
            }
        }
        book.peers.retain(|_, p| {
            p.unlogged > 0
                || p.penalty_until.is_some_and(|u| u > now)
                || now.saturating_duration_since(p.last_seen) < FORGET_AFTER
        });
        if book.suppressed > 0 && spend_line(&mut book, now) {
            tracing::warn!(
                refusals = book.suppressed,
                what = self.noun,
                "more refusals in the last minute than the log takes; not itemised"
            );
            book.suppressed = 0;
        }
        lines
    }

    #[cfg(test)]
    pub fn peers(&self) -> usize {
        self.book().peers.len()
    }
}

/// Takes one line from the minute's global budget; counts what does not fit.
fn spend_line(book: &mut Book, now: Instant) -> bool {
    if book.minute_start.is_none_or(|s| now >= s + LOG_EVERY) {
        book.minute_start = Some(now);
        book.lines = 0;
    }
    if book.lines < MAX_LINES_PER_MINUTE {
        book.lines += 1;
        true
    } else {
        book.suppressed += 1;
        false
    }
}

fn evict_stalest(peers: &mut HashMap<PeerKey, Peer>, now: Instant) {
    // A peer in a penalty is kept over one that is not, so flooding with new addresses
    // cannot lift a penalty.
    let victim = peers
        .iter()
        .min_by_key(|(_, p)| (p.penalty_until.is_some_and(|u| u > now), p.last_seen))
        .map(|(k, _)| *k);
    if let Some(k) = victim {
        peers.remove(&k);
    }
}

impl AuthThrottle {
    /// Writes a line the throttle let through.
    pub fn emit(&self, line: Option<LogLine>) {
        let Some(l) = line else { return };
        if l.refusals <= 1 {
            tracing::warn!(peer = %l.peer, reason = %l.reason, penalty_s = l.penalty_s, "refused {}", self.noun);
        } else {
            tracing::warn!(
                peer = %l.peer,
                refusals = l.refusals,
                last_reason = %l.reason,
                penalty_s = l.penalty_s,
                what = self.noun,
                "{} refusals from {} in the last minute",
                l.refusals,
                l.peer
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn penalties_start_after_five_wrong_tokens_and_double_up_to_the_cap() {
        let t = AuthThrottle::new("API call");
        let a = ip("192.0.2.7");
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..12 {
            for i in 1..=FAILS_BEFORE_PENALTY {
                let v = t.failed(a, "wrong token", now);
                assert_eq!(v.penalty_started, i == FAILS_BEFORE_PENALTY);
            }
            let left = t.penalty_left(PeerKey::of(a), now).expect("in a penalty");
            lengths.push(left.as_secs());
            // Wrong tokens during the penalty do not count towards the next one.
            assert!(!t.failed(a, "wrong token", now).penalty_started);
            now += left;
            assert!(t.penalty_left(PeerKey::of(a), now).is_none());
        }
        assert_eq!(&lengths[..4], &[1, 2, 4, 8]);
        assert!(lengths.iter().all(|&s| s <= MAX_PENALTY.as_secs()));
        assert_eq!(*lengths.last().unwrap(), MAX_PENALTY.as_secs());
        // Another peer is untouched.
        assert!(t.penalty_left(PeerKey::of(ip("192.0.2.8")), now).is_none());
    }

    #[test]
    fn a_right_token_resets_the_count_of_wrong_ones() {
        let t = AuthThrottle::new("API call");
        let a = ip("192.0.2.7");
        let now = Instant::now();
        for _ in 0..FAILS_BEFORE_PENALTY - 1 {
            t.failed(a, "wrong token", now);
        }
        t.succeeded(a);
        assert!(!t.failed(a, "wrong token", now).penalty_started);
    }

    #[test]
    fn one_line_per_peer_per_minute_with_the_count() {
        let t = AuthThrottle::new("API call");
        let a = ip("192.0.2.7");
        let start = Instant::now();
        let first = t
            .note(a, "wrong token", start, true)
            .1
            .expect("first is logged");
        assert_eq!(first.refusals, 1);
        for i in 1..200 {
            let now = start + Duration::from_millis(i * 100);
            assert_eq!(t.note(a, "wrong token", now, true).1, None, "at {i}");
        }
        let later = start + LOG_EVERY;
        let line = t
            .note(a, "wrong token", later, true)
            .1
            .expect("a minute on");
        assert_eq!(line.refusals, 200);
        assert_eq!(line.peer, "192.0.2.7");
        // What is left is flushed by the periodic tick a minute later.
        t.note(a, "wrong token", later + Duration::from_secs(1), true);
        assert!(t.flush(later + Duration::from_secs(30)).is_empty());
        let flushed = t.flush(later + LOG_EVERY);
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].refusals, 1);
    }

    #[test]
    fn the_log_budget_and_the_map_are_bounded() {
        let t = AuthThrottle::new("API call");
        let now = Instant::now();
        let mut lines = 0;
        for i in 0..(MAX_PEERS as u32 + 500) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if t.note(a, "wrong token", now, true).1.is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, MAX_LINES_PER_MINUTE);
        assert_eq!(t.peers(), MAX_PEERS);
        // Quiet peers are forgotten.
        t.flush(now + LOG_EVERY);
        t.flush(now + FORGET_AFTER + LOG_EVERY);
        assert_eq!(t.peers(), 0);
    }

    #[test]
    fn a_penalised_peer_survives_a_flood_of_new_addresses() {
        let t = AuthThrottle::new("API call");
        let now = Instant::now();
        let bad = ip("192.0.2.7");
        for _ in 0..FAILS_BEFORE_PENALTY {
            t.failed(bad, "wrong token", now);
        }
        for i in 0..(MAX_PEERS as u32 * 2) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.note(a, "wrong token", now + Duration::from_millis(1), true);
        }
        assert!(t.penalty_left(PeerKey::of(bad), now).is_some());
    }

    #[test]
    fn ipv6_peers_are_keyed_by_their_slash_64() {
        assert_eq!(
            PeerKey::of(ip("2001:db8::1")),
            PeerKey::of(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            PeerKey::of(ip("2001:db8::1")),
            PeerKey::of(ip("2001:db8:0:1::1"))
        );
        assert_eq!(
            PeerKey::of(ip("::ffff:192.0.2.1")),
            PeerKey::of(ip("192.0.2.1"))
        );
        assert_eq!(PeerKey::of(ip("2001:db8::1")).to_string(), "2001:db8::/64");
    }
}
