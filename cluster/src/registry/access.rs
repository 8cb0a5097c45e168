//! Who may call and what apps may be told: API tokens (stored only as hashes) and sealed
//! secrets (ciphertexts; the key never leaves the hosts). The same book lives in a standalone
//! daemon's `access.json` and in the cluster's replicated registry, and changes only through
//! [`AccessChange`], applied here without a clock or randomness: time and random values travel
//! in the change itself, so every replica reaches the same book.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// Live and revoked tokens together; more are refused until some are revoked and pruned.
pub const MAX_TOKENS: usize = 10_000;
/// Secrets in one book.
pub const MAX_SECRETS: usize = 10_000;
/// A sealed value (nonce + ciphertext, base64) may not be larger than this.
pub const MAX_SEALED_CHARS: usize = 96 * 1024;
/// Revoked and expired tokens are kept this long after the fact (so a caller hears "revoked"
/// rather than "unknown"), then pruned by the next token creation.
pub const KEEP_DEAD_TOKENS_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// What a caller may do. Ordered: each role may do everything the ones below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API token as stored: never the secret, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (16 hex chars): what `token list` shows and `token revoke` takes.
    pub accessor: String,
    /// Lowercase hex SHA-256 of the whole secret string.
    pub hash: String,
    #[serde(default)]
    pub name: String,
    pub role: Role,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
    /// Who made it (`local`, or the accessor of the admin token used).
    #[serde(default)]
    pub created_by: String,
}

impl TokenRecord {
    /// Why the token no longer opens anything at `now_ms`, if it does not.
    pub fn dead_reason(&self, now_ms: u64) -> Option<&'static str> {
        if self.revoked_ms.is_some() {
            Some("token revoked")
        } else if self.expires_ms.is_some_and(|e| now_ms >= e) {
            Some("token expired")
        } else {
            None
        }
    }

    fn dead_since(&self) -> Option<u64> {
        match (self.revoked_ms, self.expires_ms) {
            (Some(r), Some(e)) => Some(r.min(e)),
            (r, e) => r.or(e),
        }
    }
}

/// One secret as stored: sealed with the hosts' key, never in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Set by `apply`: 1 for the first value, +1 for every new one.
    #[serde(default)]
    pub version: u64,
    pub set_ms: u64,
    /// Fingerprint of the key that sealed it, so a host with another key can say so.
    pub key_id: String,
    /// base64 of nonce || ciphertext (with the tag); the secret's name is the associated data.
    pub sealed: String,
    #[serde(default)]
    pub set_by: String,
}

/// Tokens by hash (the lookup every remote call makes) and secrets by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessBook {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, TokenRecord>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretRecord>,
}

/// A change to the book. Travels in the Raft log as JSON: variants may be added, never changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AccessChange {
    /// Add a token. Refused if its accessor or hash exists or the book is full; prunes tokens
    /// dead for longer than [`KEEP_DEAD_TOKENS_MS`] before `token.created_ms`.
    CreateToken { token: TokenRecord },
    /// Revoke a token by accessor at `at_ms`. Revoking a revoked token changes nothing.
    RevokeToken { accessor: String, at_ms: u64 },
    /// Set a secret's sealed value; the version is the previous one + 1. The same sealed value
    /// again (a retried write) changes nothing.
    PutSecret { name: String, secret: SecretRecord },
    /// Remove a secret; removing a missing one is refused (the caller named the wrong thing).
    DeleteSecret { name: String },
}

/// What applying a change did: `Ok(changed)` or why it was refused.
pub type AccessOutcome = Result<bool, String>;

impl AccessBook {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.secrets.is_empty()
    }

    /// The token whose secret hashes to `hash`.
    pub fn token_by_hash(&self, hash: &str) -> Option<&TokenRecord> {
        self.tokens.get(hash)
    }

    pub fn token_by_accessor(&self, accessor: &str) -> Option<&TokenRecord> {
        self.tokens.values().find(|t| t.accessor == accessor)
    }

    pub fn apply(&mut self, change: &AccessChange) -> AccessOutcome {
        match change {
            AccessChange::CreateToken { token } => self.create_token(token),
            AccessChange::RevokeToken { accessor, at_ms } => {
                let Some(t) = self.tokens.values_mut().find(|t| &t.accessor == accessor) else {
                    return Err(format!(
                        "no token with accessor `{accessor}`; `herd token list` shows them"
                    ));
                };
                if t.revoked_ms.is_some() {
                    return Ok(false);
                }
                t.revoked_ms = Some(*at_ms);
                Ok(true)
            }
            AccessChange::PutSecret { name, secret } => {
                check_secret_name(name)?;
                if secret.sealed.len() > MAX_SEALED_CHARS {
                    return Err(format!(
                        "secret `{name}` is too large ({} sealed bytes, at most {MAX_SEALED_CHARS})",
                        secret.sealed.len()
                    ));
                }
                let previous = self.secrets.get(name);
                if previous.is_some_and(|p| p.sealed == secret.sealed) {
                    return Ok(false);
                }
                if previous.is_none() && self.secrets.len() >= MAX_SECRETS {
                    return Err(format!(
                        "there are {MAX_SECRETS} secrets already; delete some first"
                    ));
                }
                let version = previous.map_or(0, |p| p.version).saturating_add(1);
                let mut stored = secret.clone();
                stored.version = version;
                self.secrets.insert(name.clone(), stored);
                Ok(true)
            }
            AccessChange::DeleteSecret { name } => match self.secrets.remove(name) {
                Some(_) => Ok(true),
                None => Err(format!(
                    "no secret named `{name}`; `herd secret list` shows them"
                )),
            },
        }
    }

    fn create_token(&mut self, token: &TokenRecord) -> AccessOutcome {
        if !is_hex(&token.accessor, 16) || !is_hex(&token.hash, 64) {
            return Err("a token needs a 16-hex-digit accessor and a SHA-256 hash".into());
        }
        if token.name.chars().count() > 128 || token.name.chars().any(char::is_control) {
            return Err("a token name has at most 128 printable characters".into());
        }
        if self.tokens.contains_key(&token.hash)
            || self.token_by_accessor(&token.accessor).is_some()
        {
            return Err(format!("token `{}` exists already", token.accessor));
        }
        let horizon = token.created_ms.saturating_sub(KEEP_DEAD_TOKENS_MS);
        self.tokens
            .retain(|_, t| t.dead_since().is_none_or(|since| since > horizon));
        if self.tokens.len() >= MAX_TOKENS {
            return Err(format!(
                "there are {MAX_TOKENS} tokens already; revoke unused ones (revoked tokens are \
                 forgotten 30 days later)"
            ));
        }
        self.tokens.insert(token.hash.clone(), token.clone());
        Ok(true)
    }
}

/// A secret's name: what `secret:NAME` in an app's env refers to.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid secret name: use 1-128 characters of letters, digits, \
             `_ - . /` (like `db/pass`), not starting or ending with `/`"
        ))
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8, created_ms: u64) -> TokenRecord {
        TokenRecord {
            accessor: format!("{n:016x}"),
            hash: format!("{n:064x}"),
            name: format!("t{n}"),
            role: Role::Viewer,
            created_ms,
            expires_ms: None,
            revoked_ms: None,
            created_by: "local".into(),
        }
    }

    fn secret(sealed: &str) -> SecretRecord {
        SecretRecord {
            version: 99,
            set_ms: 1,
            key_id: "k".into(),
            sealed: sealed.into(),
            set_by: "local".into(),
        }
    }

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn a_token_is_created_once_and_revoked_tokens_say_so() {
        let mut book = AccessBook::default();
        let t = token(1, 1000);
        let create = AccessChange::CreateToken { token: t.clone() };
        assert_eq!(book.apply(&create), Ok(true));
        assert!(book.apply(&create).unwrap_err().contains("exists"));
        assert_eq!(book.token_by_hash(&t.hash).unwrap().dead_reason(2000), None);
        let revoke = AccessChange::RevokeToken {
            accessor: t.accessor.clone(),
            at_ms: 2000,
        };
        assert_eq!(book.apply(&revoke), Ok(true));
        assert_eq!(book.apply(&revoke), Ok(false), "a retry changes nothing");
        assert_eq!(
            book.token_by_hash(&t.hash).unwrap().dead_reason(2001),
            Some("token revoked")
        );
        let unknown = AccessChange::RevokeToken {
            accessor: "ffffffffffffffff".into(),
            at_ms: 1,
        };
        assert!(
            book.apply(&unknown)
                .unwrap_err()
                .contains("herd token list")
        );
    }

    #[test]
    fn an_expired_token_is_dead_from_its_expiry_on() {
        let mut t = token(1, 0);
        t.expires_ms = Some(500);
        assert_eq!(t.dead_reason(499), None);
        assert_eq!(t.dead_reason(500), Some("token expired"));
    }

    #[test]
    fn tokens_dead_for_a_month_are_pruned_by_the_next_creation() {
        let mut book = AccessBook::default();
        let mut old = token(1, 0);
        old.revoked_ms = Some(10);
        let mut recent = token(2, 0);
        recent.revoked_ms = Some(KEEP_DEAD_TOKENS_MS);
        for t in [old.clone(), recent.clone()] {
            book.tokens.insert(t.hash.clone(), t);
        }
        let fresh = token(3, KEEP_DEAD_TOKENS_MS + 20);
        book.apply(&AccessChange::CreateToken { token: fresh })
            .unwrap();
        assert!(!book.tokens.contains_key(&old.hash));
        assert!(book.tokens.contains_key(&recent.hash));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let mut book = AccessBook::default();
        let mut t = token(1, 0);
        t.hash = "not-hex".into();
        assert!(book.apply(&AccessChange::CreateToken { token: t }).is_err());
        let mut t = token(2, 0);
        t.name = "a\nb".into();
        assert!(book.apply(&AccessChange::CreateToken { token: t }).is_err());
    }

    #[test]
    fn a_secret_version_counts_up_and_a_retry_changes_nothing() {
        let mut book = AccessBook::default();
        let put = |s: &str| AccessChange::PutSecret {
            name: "db/pass".into(),
            secret: secret(s),
        };
        assert_eq!(book.apply(&put("a")), Ok(true));
        assert_eq!(
            book.secrets["db/pass"].version, 1,
            "the caller's version is ignored"
        );
        assert_eq!(book.apply(&put("a")), Ok(false));
        assert_eq!(book.apply(&put("b")), Ok(true));
        assert_eq!(book.secrets["db/pass"].version, 2);
        let del = AccessChange::DeleteSecret {
            name: "db/pass".into(),
        };
        assert_eq!(book.apply(&del), Ok(true));
        assert!(book.apply(&del).unwrap_err().contains("herd secret list"));
    }

    #[test]
    fn secret_names_are_checked() {
        for ok in ["db/pass", "API_KEY", "a.b-c"] {
            assert!(check_secret_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "x/", "a//b", "a b", "é", &"x".repeat(129)] {
            assert!(check_secret_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_book_reads_back_from_json_and_an_empty_one_is_absent() {
        let mut book = AccessBook::default();
        book.apply(&AccessChange::CreateToken { token: token(1, 0) })
            .unwrap();
        let json = serde_json::to_string(&book).unwrap();
        assert_eq!(serde_json::from_str::<AccessBook>(&json).unwrap(), book);
        assert_eq!(serde_json::to_string(&AccessBook::default()).unwrap(), "{}");
    }
}
