//! The secret store: values sealed with the hosts' key (`sealing`) and kept in the access book
//! (`access.json` standalone, the replicated registry in a cluster — ciphertexts only). Apps
//! name a secret in their env (`DB_PASS = "secret:db/pass"`); the value is opened when an
//! instance is spawned and exists only in that process's environment (see
//! `supervisor::secret_env`).

use super::sealing::{KeySource, SealKey};
use super::store::AccessStore;
use crate::supervisor::now_ms;
use crate::supervisor::secret_env::{self, SecretSource};
use crate::supervisor::spec::AppSpec;
use herd_cluster::registry::access::{AccessChange, SecretRecord, check_secret_name};
use serde_json::json;
use std::sync::Arc;
use tonic::Status;

/// Largest value `herd secret put` takes (an environment variable, not a file store).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

pub struct Secrets {
    store: Arc<AccessStore>,
    keys: KeySource,
}

impl Secrets {
    pub fn new(store: Arc<AccessStore>, keys: KeySource) -> Self {
        Self { store, keys }
    }

    pub fn store(&self) -> &Arc<AccessStore> {
        &self.store
    }

    /// Seals `value` under `name` and stores it; answers once it is durable. The same value
    /// again changes nothing (and restarts nothing).
    pub async fn put(
        &self,
        name: &str,
        value: &[u8],
        by: &str,
    ) -> Result<serde_json::Value, Status> {
        check_secret_name(name).map_err(Status::invalid_argument)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(Status::invalid_argument(format!(
                "the value of `{name}` is {} bytes; a secret holds at most {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        if value.contains(&0) {
            return Err(Status::invalid_argument(format!(
                "the value of `{name}` holds a NUL byte, which no environment variable can carry"
            )));
        }
        let key = self.keys.key(true).map_err(Status::failed_precondition)?;
        let previous = self.store.with_book(|b| b.secrets.get(name).cloned());
        if let Some(p) = &previous
            && p.key_id == key.id()
            && key.open(name, &p.sealed).is_ok_and(|v| v == value)
        {
            return Ok(json!({ "name": name, "version": p.version, "changed": false }));
        }
        let secret = SecretRecord {
            version: 0,
            set_ms: now_ms(),
            key_id: key.id().to_string(),
            sealed: key.seal(name, value),
            set_by: by.to_string(),
        };
        let changed = self
            .store
            .change(AccessChange::PutSecret {
                name: name.to_string(),
                secret,
            })
            .await?;
        let version = self
            .store
            .with_book(|b| b.secrets.get(name).map_or(0, |s| s.version));
        Ok(json!({ "name": name, "version": version, "changed": changed }))
    }

    /// Names, versions, when and by whom set: never values.
    pub fn list(&self) -> serde_json::Value {
        let secrets: Vec<serde_json::Value> = self.store.with_book(|b| {
            b.secrets
                .iter()
                .map(|(name, s)| {
                    json!({
                        "name": name,
                        "version": s.version,
                        "set_ms": s.set_ms,
                        "set_by": s.set_by,
                        "key_id": s.key_id,
                    })
                })
                .collect()
        });
        json!({ "secrets": secrets })
    }

    pub async fn delete(&self, name: &str) -> Result<serde_json::Value, Status> {
        // Unknown is "not found" (exit code 3), in the book's words; its check stays the
        // authority.
        if self.record(name).is_err() {
            return Err(Status::not_found(format!(
                "no secret named `{name}`; `herd secret list` shows them"
            )));
        }
        self.store
            .change(AccessChange::DeleteSecret {
                name: name.to_string(),
            })
            .await?;
        Ok(json!({ "deleted": name }))
    }

    /// The version and clear value of `name` (admin only: see `policy`).
    pub fn get(&self, name: &str) -> Result<(u64, Vec<u8>), Status> {
        let record = self.record(name).map_err(Status::not_found)?;
        let key = self.keys.key(false).map_err(Status::failed_precondition)?;
        let value = open_record(&key, name, &record).map_err(Status::failed_precondition)?;
        Ok((record.version, value))
    }

    fn record(&self, name: &str) -> Result<SecretRecord, String> {
        self.store
            .with_book(|b| b.secrets.get(name).cloned())
            .ok_or_else(|| {
                format!("secret `{name}` does not exist (herd secret list shows them; herd secret put {name} sets it)")
            })
    }

    /// Refuses a file whose apps name a secret that does not exist or cannot be opened on
    /// this host, naming the app, the variable and the secret.
    pub fn check_apps(&self, specs: &[AppSpec]) -> Result<(), String> {
        for spec in specs {
            for (var, name) in secret_env::references(spec) {
                let opened = self.record(name).and_then(|r| {
                    let key = self.keys.key(false)?;
                    open_record(&key, name, &r).map(drop)
                });
                if let Err(e) = opened {
                    return Err(format!("app `{}`: key `env.{var}`: {e}", spec.name));
                }
            }
        }
        Ok(())
    }

    /// The version of every secret, to tell which ones a change of the book touched.
    pub fn versions(&self) -> std::collections::BTreeMap<String, u64> {
        self.store.with_book(|b| {
            b.secrets
                .iter()
                .map(|(n, s)| (n.clone(), s.version))
                .collect()
        })
    }
}

fn open_record(key: &SealKey, name: &str, record: &SecretRecord) -> Result<Vec<u8>, String> {
    if record.key_id != key.id() {
        return Err(format!(
            "secret `{name}` was sealed with key {} but this host's key is {}: every node needs the same secrets.key (or {})",
            record.key_id,
            key.id(),
            super::sealing::KEY_VAR
        ));
    }
    key.open(name, &record.sealed)
}

impl SecretSource for Secrets {
    fn reveal(&self, name: &str) -> Result<Vec<u8>, String> {
        let record = self.record(name)?;
        let key = self.keys.key(false)?;
        open_record(&key, name, &record)
    }
}
