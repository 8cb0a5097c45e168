//! The Access gRPC service: `herd token ...` and `herd secret ...`. Every method is admin-only
//! on the TCP API (`policy`); the socket is admin. Token secrets are shown once, in the reply
//! to `create`; secret values only to `get`.

use super::caller::Caller;
use super::secrets::Secrets;
use super::tokens::{self, Authenticator};
use crate::supervisor::events::EventLog;
use crate::supervisor::now_ms;
use herd_cluster::registry::access::{AccessChange, Role};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::access_server::Access;
use serde_json::json;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use herd_proto::supervisor::access_server::AccessServer;

/// Longest token lifetime: 100 years, like every other duration a user supplies.
const MAX_TTL_S: u64 = 100 * 365 * 24 * 3600;

pub struct AccessApi {
    auth: Arc<Authenticator>,
    secrets: Arc<Secrets>,
    events: EventLog,
}

impl AccessApi {
    pub fn new(auth: Arc<Authenticator>, secrets: Arc<Secrets>, events: EventLog) -> Self {
        Self {
            auth,
            secrets,
            events,
        }
    }

    /// The audit line of a change: app `-` (it concerns no app), `by` from the caller.
    fn audit(&self, caller: &Caller, event: &str, fields: serde_json::Value) {
        self.events.audit(caller, "-", event, fields);
    }
}

fn reply(value: serde_json::Value) -> Result<Response<pb::JsonReply>, Status> {
    Ok(Response::new(pb::JsonReply {
        json: value.to_string(),
    }))
}

#[tonic::async_trait]
impl Access for AccessApi {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let role = Role::parse(&req.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "role `{}` does not exist: use viewer, operator or admin",
                req.role
            ))
        })?;
        let ttl_s = req.ttl_s.map(|t| t.min(MAX_TTL_S));
        if ttl_s == Some(0) {
            return Err(Status::invalid_argument("--ttl must be longer than 0 s"));
        }
        let now = now_ms();
        let (secret, record) = tokens::mint(
            role,
            &req.name,
            now,
            ttl_s.map(|s| s.saturating_mul(1000)),
            &caller.by,
        );
        let accessor = record.accessor.clone();
        let expires = record.expires_ms;
        self.auth
            .store()
            .change(AccessChange::CreateToken { token: record })
            .await?;
        self.audit(
            &caller,
            "token_created",
            json!({ "accessor": accessor, "name": req.name, "role": role }),
        );
        reply(json!({
            "accessor": accessor,
            "name": req.name,
            "role": role,
            "created_ms": now,
            "expires_ms": expires,
            "secret": secret,
        }))
    }

    async fn list_tokens(
        &self,
        _: Request<pb::ListAccessRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let now = now_ms();
        let mut tokens: Vec<serde_json::Value> = self.auth.store().with_book(|b| {
            b.tokens
                .values()
                .map(|t| {
                    json!({
                        "accessor": t.accessor,
                        "name": t.name,
                        "role": t.role,
                        "created_ms": t.created_ms,
                        "expires_ms": t.expires_ms,
                        "revoked_ms": t.revoked_ms,
                        "created_by": t.created_by,
                        "state": t.dead_reason(now).map_or("active", |r| r.trim_start_matches("token ")),
                        "last_used_ms": self.auth.last_used(&t.accessor),
                    })
                })
                .collect()
        });
        tokens.sort_by_key(|t| t["created_ms"].as_u64());
        reply(json!({ "tokens": tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        let accessor = req.into_inner().name;
        // An unknown accessor is "not found" for scripts (exit code 3), not a refused change;
        // the book's own check below stays the authority.
        let known = self
            .auth
            .store()
            .with_book(|b| b.tokens.values().any(|t| t.accessor == accessor));
        if !known {
            return Err(Status::not_found(format!(
                "no token with accessor `{accessor}`; `herd token list` shows them"
            )));
        }
        let changed = self
            .auth
            .store()
            .change(AccessChange::RevokeToken {
                accessor: accessor.clone(),
                at_ms: now_ms(),
            })
            .await?;
        if changed {
            self.audit(&caller, "token_revoked", json!({ "accessor": accessor }));
        }
        reply(json!({ "revoked": accessor, "changed": changed }))
    }

    async fn put_secret(
        &self,
        req: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let done = self.secrets.put(&req.name, &req.value, &caller.by).await?;
        if done["changed"] == true {
            self.audit(
                &caller,
                "secret_set",
                json!({ "secret": req.name, "version": done["version"] }),
            );
        }
        reply(done)
    }

    async fn list_secrets(
        &self,
        _: Request<pb::ListAccessRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        reply(self.secrets.list())
    }

    async fn delete_secret(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::JsonReply>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        let done = self.secrets.delete(&name).await?;
        self.audit(&caller, "secret_deleted", json!({ "secret": name }));
        reply(done)
    }

    async fn get_secret(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::SecretValue>, Status> {
        let name = req.into_inner().name;
        let (version, value) = self.secrets.get(&name)?;
        Ok(Response::new(pb::SecretValue {
            name,
            version,
            value,
        }))
    }
}
