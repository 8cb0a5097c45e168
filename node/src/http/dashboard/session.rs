//! Dashboard logins. A browser holds a session id in an HttpOnly, SameSite=Strict cookie; the
//! daemon keeps, per session, what it was granted by and a CSRF token its POSTs must echo.
//!
//! A session made from a token keeps the token (in memory only) and authenticates it again on
//! every request, so revoking or expiring the token ends the session at once and the role is
//! always the token's current one. A session made from a one-time link (`herd dashboard`, asked
//! over the admin socket) is admin for its lifetime.
//!
//! Bounded: at most `MAX_SESSIONS` sessions (the oldest goes first) and `MAX_LINKS` unused
//! links; both expire.

use crate::access::Caller;
use crate::access::tokens::{Authenticator, Refused};
use herd_cluster::registry::access::Role;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The cookie that names a session.
pub const COOKIE: &str = "herd_session";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time link may wait to be opened.
pub const LINK_TTL: Duration = Duration::from_secs(120);
const MAX_SESSIONS: usize = 256;
const MAX_LINKS: usize = 16;
/// `by` of a session opened through a one-time link.
pub const LINK_BY: &str = "dashboard-link";

#[derive(Clone)]
enum Grant {
    /// `authorization: Bearer ...` as typed into the login form.
    Token(Vec<u8>),
    /// A one-time link from the admin socket.
    Link,
}

struct Session {
    grant: Grant,
    csrf: String,
    opened: Instant,
}

/// Who a request's session acts as, and the CSRF token its page carries.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub caller: Caller,
    pub csrf: String,
}

impl Viewer {
    /// Actions (restart, stop, scale, drain) are for operators and admins.
    pub fn may_act(&self) -> bool {
        self.caller.role >= Role::Operator
    }
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    links: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct Logins {
    inner: Mutex<Inner>,
}

fn secret() -> String {
    crate::access::tokens::hex(&rand::random::<[u8; 24]>())
}

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs in with a token typed into the form: the session id, or why the token is refused.
    pub fn login(
        &self,
        auth: &Authenticator,
        token: &str,
        peer: Option<SocketAddr>,
        now: Instant,
    ) -> Result<String, Refused> {
        let header = format!("Bearer {}", token.trim()).into_bytes();
        auth.authenticate_any(Some(&header), peer, crate::supervisor::now_ms())?;
        Ok(self.open(Grant::Token(header), now))
    }

    /// A one-time code for `/login?once=CODE`, good for `LINK_TTL`.
    pub fn link(&self, now: Instant) -> String {
        let mut inner = self.lock();
        inner
            .links
            .retain(|_, at| now.saturating_duration_since(*at) < LINK_TTL);
        if inner.links.len() >= MAX_LINKS
            && let Some(oldest) = inner
                .links
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
        {
            inner.links.remove(&oldest);
        }
        let code = secret();
        inner.links.insert(code.clone(), now);
        code
    }

    /// Opens a session for a one-time code, which is then spent.
    pub fn redeem(&self, code: &str, now: Instant) -> Option<String> {
        let issued = self.lock().links.remove(code)?;
        (now.saturating_duration_since(issued) < LINK_TTL).then(|| self.open(Grant::Link, now))
    }

    fn open(&self, grant: Grant, now: Instant) -> String {
        let mut inner = self.lock();
        inner
            .sessions
            .retain(|_, s| now.saturating_duration_since(s.opened) < SESSION_TTL);
        if inner.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone())
        {
            inner.sessions.remove(&oldest);
        }
        let id = secret();
        inner.sessions.insert(
            id.clone(),
            Session {
                grant,
                csrf: secret(),
                opened: now,
            },
        );
        id
    }

    /// Who session `id` acts as now; `None` for an unknown or expired session or a token
    /// that no longer authenticates (the session is then forgotten).
    pub fn viewer(
        &self,
        auth: &Authenticator,
        id: &str,
        peer: Option<SocketAddr>,
        now: Instant,
    ) -> Option<Viewer> {
        let (grant, csrf) = {
            let mut inner = self.lock();
            let s = inner.sessions.get(id)?;
            if now.saturating_duration_since(s.opened) >= SESSION_TTL {
                inner.sessions.remove(id);
                return None;
            }
            (s.grant.clone(), s.csrf.clone())
        };
        let caller = match grant {
            Grant::Link => Caller {
                role: Role::Admin,
                by: LINK_BY.into(),
                name: String::new(),
                peer,
            },
            Grant::Token(header) => {
                match auth.authenticate_any(Some(&header), peer, crate::supervisor::now_ms()) {
                    Ok(c) => c,
                    Err(_) => {
                        self.lock().sessions.remove(id);
                        return None;
                    }
                }
            }
        };
        Some(Viewer { caller, csrf })
    }

    pub fn logout(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.sessions.len(), inner.links.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::store::AccessStore;
    use std::sync::{Arc, RwLock};

    fn auth(token: Option<&str>) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::standalone(dir.path()).unwrap();
        let expected = token.map(|t| Arc::<[u8]>::from(format!("Bearer {t}").as_bytes()));
        Authenticator::new(Arc::new(RwLock::new(expected)), store)
    }

    #[test]
    fn a_link_opens_one_admin_session_once_and_only_while_fresh() {
        let logins = Logins::default();
        let a = auth(None);
        let t0 = Instant::now();
        let code = logins.link(t0);
        let id = logins.redeem(&code, t0).expect("fresh link");
        assert!(logins.redeem(&code, t0).is_none(), "spent");
        let v = logins.viewer(&a, &id, None, t0).unwrap();
        assert_eq!(v.caller.role, Role::Admin);
        assert_eq!(v.caller.by, LINK_BY);
        assert!(v.may_act());
        let late = logins.link(t0);
        assert!(logins.redeem(&late, t0 + LINK_TTL).is_none(), "expired");
        assert!(logins.viewer(&a, &id, None, t0 + SESSION_TTL).is_none());
        assert!(logins.viewer(&a, "not-a-session", None, t0).is_none());
    }

    #[test]
    fn a_token_session_ends_when_the_token_stops_authenticating() {
        let logins = Logins::default();
        let a = auth(Some("config-token-0123456789abcdef"));
        let t0 = Instant::now();
        assert!(logins.login(&a, "wrong", None, t0).is_err());
        let id = logins
            .login(&a, " config-token-0123456789abcdef\n", None, t0)
            .unwrap();
        assert!(logins.viewer(&a, &id, None, t0).is_some());
        // The config's token replaced: the session made from the old one is over.
        let b = auth(Some("another-token-0123456789abcdef"));
        assert!(logins.viewer(&b, &id, None, t0).is_none());
        assert!(logins.viewer(&a, &id, None, t0).is_none(), "forgotten");
    }

    #[test]
    fn sessions_and_links_are_bounded() {
        let logins = Logins::default();
        let t0 = Instant::now();
        for _ in 0..MAX_SESSIONS + 10 {
            let code = logins.link(t0);
            logins.redeem(&code, t0).unwrap();
        }
        for _ in 0..MAX_LINKS + 10 {
            logins.link(t0);
        }
        assert_eq!(logins.len(), (MAX_SESSIONS, MAX_LINKS));
    }
}
