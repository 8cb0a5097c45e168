//! What each call of the TCP API needs: the role table of the README, keyed by gRPC method.
//! A method missing from the table needs admin (deny by default), so a new RPC is closed to
//! viewers and operators until someone decides otherwise here.

use herd_cluster::registry::access::Role;

/// (service, method, the command a user typed, the least role that may call it)
const TABLE: &[(&str, &str, &str, Role)] = &[
    // Reading.
    ("Supervisor", "Ping", "ping", Role::Viewer),
    ("Supervisor", "List", "ps", Role::Viewer),
    ("Supervisor", "Inspect", "inspect", Role::Viewer),
    ("Supervisor", "Logs", "logs", Role::Viewer),
    ("Supervisor", "Metrics", "metrics", Role::Viewer),
    ("Supervisor", "Events", "events", Role::Viewer),
    ("Supervisor", "Graph", "graph", Role::Viewer),
    ("ClusterAdmin", "Status", "cluster status", Role::Viewer),
    ("ClusterAdmin", "Apps", "cluster apps", Role::Viewer),
    ("ClusterAdmin", "Uptime", "cluster uptime", Role::Viewer),
    ("Jobs", "List", "jobs", Role::Viewer),
    ("Jobs", "History", "jobs history", Role::Viewer),
    ("Jobs", "Get", "jobs", Role::Viewer),
    ("Hooks", "List", "hooks", Role::Viewer),
    // Running apps.
    ("Supervisor", "Apply", "start", Role::Operator),
    ("Supervisor", "Start", "start", Role::Operator),
    ("Supervisor", "Stop", "stop", Role::Operator),
    ("Supervisor", "Restart", "restart", Role::Operator),
    ("Supervisor", "Reload", "reload", Role::Operator),
    ("Supervisor", "Scale", "scale", Role::Operator),
    ("Supervisor", "Delete", "delete", Role::Operator),
    ("Supervisor", "Watch", "watch", Role::Operator),
    ("ClusterAdmin", "Deploy", "cluster deploy", Role::Operator),
    (
        "ClusterAdmin",
        "Undeploy",
        "cluster undeploy",
        Role::Operator,
    ),
    ("ClusterAdmin", "Scale", "cluster scale", Role::Operator),
    (
        "ClusterAdmin",
        "RestartApp",
        "cluster restart",
        Role::Operator,
    ),
    ("ClusterAdmin", "Drain", "cluster drain", Role::Operator),
    ("Jobs", "Run", "run", Role::Operator),
    ("Jobs", "Cancel", "jobs cancel", Role::Operator),
    ("Jobs", "Pause", "pause", Role::Operator),
    ("Jobs", "Resume", "resume", Role::Operator),
    // Dead letters carry what failed to reach a hook (its error may quote the receiver).
    ("Hooks", "Dead", "hooks dead", Role::Operator),
    // Running the daemon and the cluster, tokens and secrets.
    ("Supervisor", "Shutdown", "down", Role::Admin),
    ("Supervisor", "ReloadConfig", "reload-config", Role::Admin),
    ("Supervisor", "DashboardLink", "dashboard", Role::Admin),
    ("ClusterAdmin", "StepDown", "cluster step-down", Role::Admin),
    ("ClusterAdmin", "Leave", "cluster leave", Role::Admin),
    ("Access", "CreateToken", "token create", Role::Admin),
    ("Access", "ListTokens", "token list", Role::Admin),
    ("Access", "RevokeToken", "token revoke", Role::Admin),
    ("Access", "PutSecret", "secret put", Role::Admin),
    ("Access", "ListSecrets", "secret list", Role::Admin),
    ("Access", "DeleteSecret", "secret delete", Role::Admin),
    ("Access", "GetSecret", "secret get", Role::Admin),
    // Sends to the outside again, from the daemon's host.
    ("Hooks", "Replay", "hooks replay", Role::Admin),
];

/// The package of the services the table speaks of; other paths are not the API's.
pub const PACKAGE: &str = "herd.supervisor.";

/// The paths of the gRPC reflection service (v1).
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/";

/// What a call to `path` (`/herd.supervisor.Supervisor/Stop`) needs, and the command's name
/// for a refusal. Unknown methods need admin.
pub fn required(path: &str) -> (Role, String) {
    // gRPC server reflection describes the API (`grpcurl list`): reading, like `ps`.
    if path.starts_with(REFLECTION) {
        return (Role::Viewer, "list the API (gRPC reflection)".to_string());
    }
    let found = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(PACKAGE))
        .and_then(|p| p.split_once('/'))
        .and_then(|(service, method)| {
            TABLE
                .iter()
                .find(|(s, m, _, _)| *s == service && *m == method)
        });
    match found {
        Some((_, _, command, role)) => (*role, (*command).to_string()),
        None => (Role::Admin, path.trim_start_matches('/').to_string()),
    }
}

/// Whether `role` may call `path`; the refusal is the one the CLI prints.
pub fn check(role: Role, path: &str) -> Result<(), String> {
    let (needed, command) = required(path);
    if role >= needed {
        Ok(())
    } else {
        Err(format!("permission denied: role {role} may not {command}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(service: &str, method: &str) -> String {
        format!("/{PACKAGE}{service}/{method}")
    }

    #[test]
    fn each_role_gets_exactly_its_rows() {
        for (service, method, _, needed) in TABLE {
            for role in Role::ALL {
                assert_eq!(
                    check(role, &path(service, method)).is_ok(),
                    role >= *needed,
                    "{role} {service}/{method}"
                );
            }
        }
    }

    #[test]
    fn reflection_is_for_viewers_and_any_other_stranger_path_for_admins() {
        let reflect = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert!(check(Role::Viewer, reflect).is_ok());
        assert!(check(Role::Viewer, "/grpc.reflection.v1alpha.ServerReflection/X").is_err());
        assert!(check(Role::Operator, "/grpc.other.Thing/Do").is_err());
    }

    #[test]
    fn the_refusal_names_the_role_and_the_command() {
        assert_eq!(
            check(Role::Viewer, &path("Supervisor", "Restart")).unwrap_err(),
            "permission denied: role viewer may not restart"
        );
        assert_eq!(
            check(Role::Operator, &path("Supervisor", "Shutdown")).unwrap_err(),
            "permission denied: role operator may not down"
        );
    }

    #[test]
    fn an_unknown_method_needs_admin() {
        let p = path("Supervisor", "SomethingNew");
        assert!(check(Role::Operator, &p).is_err());
        assert!(check(Role::Admin, &p).is_ok());
        assert!(check(Role::Operator, "/other.Service/Ping").is_err());
    }

    #[test]
    fn every_rpc_of_the_proto_is_in_the_table() {
        // The services' methods as the generated code names them; a new RPC must be placed.
        let proto = include_str!("../../../proto/proto/supervisor.proto");
        let mut service = "";
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or("");
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap_or("").trim();
                assert!(
                    TABLE
                        .iter()
                        .any(|(s, m, _, _)| *s == service && *m == method),
                    "{service}/{method} has no row in access::policy::TABLE"
                );
            }
        }
    }
}
