//! Who made a call: the socket's local admin, the config's API token, or a token from the
//! book. The guard of the TCP API puts a `Caller` in every request it lets through; a request
//! without one came over the Unix socket (0600: only the daemon's user can reach it).
//!
//! While a call runs, its caller is also held in a task-local, so every event the call causes
//! in that task carries `by` without threading the caller through the supervisor.

use herd_cluster::registry::access::Role;
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// `local` (the socket), `api-token` (the config's token) or a token's accessor.
    pub by: String,
    /// The token's name, when it has one.
    pub name: String,
    pub peer: Option<SocketAddr>,
}

/// `by` of the Unix socket's caller.
pub const LOCAL: &str = "local";
/// `by` of the `[api] token_file` / `HERD_API_TOKEN` token.
pub const CONFIG_TOKEN: &str = "api-token";

impl Caller {
    pub fn local() -> Self {
        Self {
            role: Role::Admin,
            by: LOCAL.into(),
            name: String::new(),
            peer: None,
        }
    }

    /// The caller of a request: the guard's, or the socket's when there is none.
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::local)
    }

    /// Adds `by` (and `by_name`) to an event's fields unless the event names its own cause.
    pub fn stamp(&self, fields: &mut serde_json::Map<String, serde_json::Value>) {
        if fields.contains_key("by") {
            return;
        }
        fields.insert("by".into(), self.by.clone().into());
        if !self.name.is_empty() {
            fields.insert("by_name".into(), self.name.clone().into());
        }
    }
}

tokio::task_local! {
    static CURRENT: Caller;
}

/// Runs `f` as `caller`: events emitted in this task meanwhile carry `by`.
pub async fn acting_as<F: Future>(caller: Caller, f: F) -> F::Output {
    CURRENT.scope(caller, f).await
}

/// The caller of the call this task is running, if any.
pub fn current() -> Option<Caller> {
    CURRENT.try_with(Caller::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_caller_is_known_inside_the_call_only() {
        assert_eq!(current(), None);
        let alice = Caller {
            role: Role::Operator,
            by: "00112233aabbccdd".into(),
            name: "alice".into(),
            peer: None,
        };
        let seen = acting_as(alice.clone(), async { current() }).await;
        assert_eq!(seen, Some(alice.clone()));
        let mut fields = serde_json::Map::new();
        alice.stamp(&mut fields);
        assert_eq!(fields["by"], "00112233aabbccdd");
        assert_eq!(fields["by_name"], "alice");
        let mut own = serde_json::Map::new();
        own.insert("by".into(), "policy".into());
        alice.stamp(&mut own);
        assert_eq!(
            own["by"], "policy",
            "an event that names its cause keeps it"
        );
    }
}
