//! Follows the secret store and acts on the apps whose env names a secret that changed: a new
//! version restarts them (so new processes get the new value) or, with
//! `on_secret_change = "signal:SIGHUP"`, signals their running instances. A deleted secret is
//! recorded (running instances keep the value they started with; a new start fails, naming
//! it). A secret that appears (first put, or the cluster's book arriving after a restart)
//! starts the instances of apps that wait for it. Runs on every node, so in a cluster each
//! node acts on its own instances as soon as its replica has the change.

use super::secrets::Secrets;
use crate::supervisor::instance::Status;
use crate::supervisor::{Desired, Supervisor, process, secret_env};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{info, warn};

/// What happened to one secret between two looks at the book.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Appeared,
    Changed,
    Deleted,
}

/// The secrets that differ between `before` and `after` (name → version).
pub fn diff(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Vec<(String, Change)> {
    let mut out = Vec::new();
    for (name, v) in after {
        match before.get(name) {
            None => out.push((name.clone(), Change::Appeared)),
            Some(old) if old != v => out.push((name.clone(), Change::Changed)),
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        out.push((name.clone(), Change::Deleted));
    }
    out
}

pub fn spawn(sup: Supervisor, secrets: Arc<Secrets>) {
    let mut changes = secrets.store().subscribe();
    tokio::spawn(async move {
        let mut known = secrets.versions();
        while changes.changed().await.is_ok() {
            let now = secrets.versions();
            for (name, change) in diff(&known, &now) {
                act(&sup, &secrets, &name, &change, now.get(&name).copied()).await;
            }
            known = now;
        }
    });
}

async fn act(
    sup: &Supervisor,
    secrets: &Secrets,
    secret: &str,
    change: &Change,
    version: Option<u64>,
) {
    let Ok(apps) = sup.list(None) else { return };
    let set_by = secrets
        .store()
        .with_book(|b| b.secrets.get(secret).map(|s| s.set_by.clone()))
        .unwrap_or_default();
    for app in apps
        .iter()
        .filter(|a| secret_env::uses(&a.spec, secret) && a.desired == Desired::Running)
    {
        let name = &app.spec.name;
        match change {
            Change::Deleted => {
                warn!(app = %name, secret, "a secret this app uses was deleted; its next start will fail until it is set again");
                sup.events().emit(
                    name,
                    None,
                    None,
                    "secret_deleted",
                    json!({ "secret": secret }),
                );
            }
            Change::Appeared => {
                // Instances that could not start for want of it get their chance now.
                if app
                    .instances
                    .iter()
                    .any(|i| matches!(i.status, Status::Stopped | Status::Crashed))
                {
                    info!(app = %name, secret, "a secret this app waits for is set: starting it");
                    let _ = sup.start(name, false);
                }
            }
            Change::Changed => {
                let action = match app.spec.secret_change_signal() {
                    Some(sig) => {
                        for pid in app
                            .instances
                            .iter()
                            .filter(|i| i.status != Status::Stopped)
                            .filter_map(|i| i.pid)
                        {
                            if let Err(e) = process::signal_group(pid, sig) {
                                warn!(app = %name, pid, error = %e, "cannot signal for a secret change");
                            }
                        }
                        format!("signal:{}", sig.as_str())
                    }
                    None => "restart".to_string(),
                };
                info!(app = %name, secret, version, action, "secret changed");
                sup.events().emit(
                    name,
                    None,
                    None,
                    "secret_changed",
                    json!({ "secret": secret, "version": version, "action": action, "by": set_by }),
                );
                if action == "restart"
                    && let Err(e) = sup.restart(name).await
                {
                    warn!(app = %name, error = %e, "restart after a secret change failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_what_appeared_changed_and_went() {
        let m = |v: &[(&str, u64)]| -> BTreeMap<String, u64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let d = diff(
            &m(&[("a", 1), ("b", 1), ("c", 2)]),
            &m(&[("a", 1), ("b", 2), ("d", 1)]),
        );
        assert_eq!(
            d,
            [
                ("b".to_string(), Change::Changed),
                ("d".to_string(), Change::Appeared),
                ("c".to_string(), Change::Deleted)
            ]
        );
        assert!(diff(&m(&[("a", 1)]), &m(&[("a", 1)])).is_empty());
    }
}
