//! API tokens: minted here (256 random bits, shown once), stored as SHA-256 only, and checked
//! on every TCP call. A token is a random secret, not a password: one fast hash is the right
//! tool (nothing to slow down a guesser of 2^256), and the lookup is by hash, so no secret is
//! ever compared byte by byte.

use super::caller::{CONFIG_TOKEN, Caller};
use super::store::AccessStore;
use herd_cluster::registry::access::{Role, TokenRecord};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

/// Every minted token starts with this, so a leaked one is easy to recognise and grep for.
pub const PREFIX: &str = "herd_";

/// Most last-used times remembered (one per accessor).
const MAX_LAST_USED: usize = 20_000;

pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: its secret (to show once) and its record (to store).
pub fn mint(
    role: Role,
    name: &str,
    now_ms: u64,
    ttl_ms: Option<u64>,
    created_by: &str,
) -> (String, TokenRecord) {
    let secret = format!("{PREFIX}{}", hex(&rand::random::<[u8; 32]>()));
    let record = TokenRecord {
        accessor: hex(&rand::random::<[u8; 8]>()),
        hash: hash(&secret),
        name: name.to_string(),
        role,
        created_ms: now_ms,
        expires_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
        revoked_ms: None,
        created_by: created_by.to_string(),
    };
    (secret, record)
}

/// Why a presented token opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Unknown,
    Expired,
    Revoked,
    /// The API is being turned off by a config reload.
    Off,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::Missing => "token missing: pass --token-file FILE (or HERD_TOKEN_FILE)",
            Refused::Unknown => "token unknown",
            Refused::Expired => "token expired",
            Refused::Revoked => "token revoked",
            Refused::Off => "the TCP API is being turned off by a config reload",
        }
    }
}

/// The config's token (`Bearer ...` bytes) as a config reload sets it; `None`: the API is off.
pub type ConfigToken = Arc<RwLock<Option<Arc<[u8]>>>>;

/// Turns an `authorization` header into a caller.
pub struct Authenticator {
    config_token: ConfigToken,
    store: Arc<AccessStore>,
    last_used: Mutex<HashMap<String, u64>>,
}

impl Authenticator {
    pub fn new(config_token: ConfigToken, store: Arc<AccessStore>) -> Self {
        Self {
            config_token,
            store,
            last_used: Mutex::new(HashMap::new()),
        }
    }

    pub fn config_token(&self) -> &ConfigToken {
        &self.config_token
    }

    pub fn store(&self) -> &Arc<AccessStore> {
        &self.store
    }

    /// The caller behind `header` (the `authorization` value) at `now_ms`.
    pub fn authenticate(
        &self,
        header: Option<&[u8]>,
        peer: Option<SocketAddr>,
        now_ms: u64,
    ) -> Result<Caller, Refused> {
        if self
            .config_token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return Err(Refused::Off);
        }
        self.authenticate_any(header, peer, now_ms)
    }

    /// As `authenticate`, also while the TCP API is off (the dashboard's sign-in: tokens from
    /// the book open it whether or not `[api]` is configured; the config's token only when it
    /// is).
    pub fn authenticate_any(
        &self,
        header: Option<&[u8]>,
        peer: Option<SocketAddr>,
        now_ms: u64,
    ) -> Result<Caller, Refused> {
        let config = self
            .config_token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let header = header.ok_or(Refused::Missing)?;
        if let Some(config) = config
            && herd_cluster::constant_time_eq(header, &config)
        {
            return Ok(Caller {
                role: Role::Admin,
                by: CONFIG_TOKEN.into(),
                name: "[api] token".into(),
                peer,
            });
        }
        let secret = header
            .strip_prefix(b"Bearer ")
            .and_then(|s| std::str::from_utf8(s).ok())
            .ok_or(Refused::Unknown)?;
        let digest = hash(secret);
        let found = self.store.with_book(|b| {
            b.token_by_hash(&digest).map(|t| {
                (
                    t.accessor.clone(),
                    t.name.clone(),
                    t.role,
                    t.dead_reason(now_ms),
                )
            })
        });
        match found {
            None => Err(Refused::Unknown),
            Some((_, _, _, Some("token revoked"))) => Err(Refused::Revoked),
            Some((_, _, _, Some(_))) => Err(Refused::Expired),
            Some((accessor, name, role, None)) => {
                let mut used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
                if used.len() >= MAX_LAST_USED && !used.contains_key(&accessor) {
                    used.clear();
                }
                used.insert(accessor.clone(), now_ms);
                Ok(Caller {
                    role,
                    by: accessor,
                    name,
                    peer,
                })
            }
        }
    }

    /// When this daemon last let `accessor` in (since it started).
    pub fn last_used(&self, accessor: &str) -> Option<u64> {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(accessor)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_cluster::registry::access::AccessChange;

    fn bearer(s: &str) -> Vec<u8> {
        format!("Bearer {s}").into_bytes()
    }

    #[tokio::test]
    async fn tokens_open_as_their_role_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::standalone(dir.path()).unwrap();
        let config: ConfigToken =
            Arc::new(RwLock::new(Some(bearer("config-token-0123456789").into())));
        let auth = Authenticator::new(config.clone(), store.clone());
        let (secret, record) = mint(Role::Viewer, "ci", 1_000, Some(60_000), "local");
        assert!(secret.starts_with(PREFIX) && secret.len() == PREFIX.len() + 64);
        assert_ne!(record.hash, secret, "only the hash is kept");
        store
            .change(AccessChange::CreateToken {
                token: record.clone(),
            })
            .await
            .unwrap();
        let caller = auth
            .authenticate(Some(&bearer(&secret)), None, 2_000)
            .unwrap();
        assert_eq!(
            (caller.role, caller.by.as_str()),
            (Role::Viewer, record.accessor.as_str())
        );
        assert_eq!(auth.last_used(&record.accessor), Some(2_000));
        assert_eq!(
            auth.authenticate(Some(&bearer(&secret)), None, 61_000),
            Err(Refused::Expired)
        );
        store
            .change(AccessChange::RevokeToken {
                accessor: record.accessor.clone(),
                at_ms: 3_000,
            })
            .await
            .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&secret)), None, 4_000),
            Err(Refused::Revoked)
        );
        assert_eq!(
            auth.authenticate(Some(&bearer("herd_nope")), None, 4_000),
            Err(Refused::Unknown)
        );
        assert_eq!(auth.authenticate(None, None, 4_000), Err(Refused::Missing));
        let admin = auth
            .authenticate(Some(&bearer("config-token-0123456789")), None, 4_000)
            .unwrap();
        assert_eq!((admin.role, admin.by.as_str()), (Role::Admin, CONFIG_TOKEN));
        *config.write().unwrap() = None;
        assert_eq!(
            auth.authenticate(Some(&bearer("config-token-0123456789")), None, 4_000),
            Err(Refused::Off)
        );
    }
}
